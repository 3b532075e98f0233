// SPDX-License-Identifier: Apache-2.0
// ODR check, first translation unit: builds an index and runs a pipeline; main() is here.
#include <recpipe/recpipe.hpp>
#include <recpipe/train.hpp>  // the training umbrella too: its inline functions and statics must link twice

#include <cstdio>
#include <vector>

std::size_t recommend_in_second_unit();  // multiple2.cpp

int main() {
  using namespace recpipe;
  cpu::hnsw_index index(4, metric::inner_product, 16);
  for (id_type i = 0; i < 10; ++i) index.add(i, std::vector<float>{float(i), 1.0f, 0.0f, 0.0f});
  feature_store<col::user_id, col::user_embedding> users(4);
  users.insert(1, {1.0f, 0.0f, 0.0f, 0.0f});
  const auto out = make_batch<col::user_id>(std::vector<id_type>{1}) >>
                   (lookup(users) >> retrieve<col::user_embedding>(index, 3) >> top_k<col::retrieval_score>(2));
  const std::size_t here = out.get<col::candidates>().total(), there = recommend_in_second_unit();
  std::printf("first unit: %zu results, second unit: %zu results\n", here, there);
  return here == 2 && there == 2 ? 0 : 1;
}
