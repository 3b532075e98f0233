// SPDX-License-Identifier: Apache-2.0
// ODR check, second translation unit: the same headers, the same templates instantiated again.
#include <recpipe/recpipe.hpp>
#include <recpipe/train.hpp>  // the training umbrella too: its inline functions and statics must link twice

#include <vector>

std::size_t recommend_in_second_unit() {
  using namespace recpipe;
  cpu::hnsw_index index(4, metric::inner_product, 16);
  for (id_type i = 0; i < 10; ++i) index.add(i, std::vector<float>{float(i), 1.0f, 0.0f, 0.0f});
  cpu::exact_index exact(4);
  exact.add(7, std::vector<float>{1.0f, 0.0f, 0.0f, 0.0f});
  feature_store<col::user_id, col::user_embedding> users(4);
  users.insert(1, {1.0f, 0.0f, 0.0f, 0.0f});
  const auto out = make_batch<col::user_id>(std::vector<id_type>{1}) >>
                   (lookup(users) >> retrieve<col::user_embedding>(index, 3) >> top_k<col::retrieval_score>(2));
  return out.get<col::candidates>().total();
}
