// SPDX-License-Identifier: Apache-2.0
// The scorer reads item vectors, but no lookup of the item store precedes it.
// EXPECT: recpipe: STAGE_READS_MISSING_COLUMN
// EXPECT: STAGE_READS_MISSING_COLUMN<recpipe::(v0::)?score_stage<.*, recpipe::(v0::)?col::item_embedding>
#include <recpipe/core/batch.hpp>
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/score.hpp>

#include <vector>

int main() {
  using namespace recpipe;
  cpu::exact_index index(4);
  feature_store<col::user_id, col::user_embedding> users(4);
  feature_store<col::candidates, col::item_embedding> items(4);
#ifdef RECPIPE_SHOULD_FAIL
  auto pipeline = lookup(users) >> retrieve<col::user_embedding>(index, 10) >> score(dot_product_scorer<>{}) >> top_k(5);
#else
  auto pipeline = lookup(users) >> retrieve<col::user_embedding>(index, 10) >> lookup(items) >>
                  score(dot_product_scorer<>{}) >> top_k(5);
#endif
  auto out = pipeline.run(make_batch<col::user_id>(std::vector<id_type>{1}));
  return static_cast<int>(out.size()) - 1;
}
