// SPDX-License-Identifier: Apache-2.0
// unroll copies the request's user features to the candidates, but no lookup provides them.
// EXPECT: recpipe: STAGE_READS_MISSING_COLUMN
// EXPECT: STAGE_READS_MISSING_COLUMN<recpipe::(v0::)?unroll_stage<.*, recpipe::(v0::)?col::user_features>
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/unroll.hpp>

#include <vector>

int main() {
  using namespace recpipe;
  cpu::exact_index index(4);
  feature_store<col::user_id, col::user_embedding> users(4);
  feature_store<col::user_id, col::user_features> features(4);
#ifdef RECPIPE_SHOULD_FAIL
  auto pipeline = lookup(users) >> retrieve<col::user_embedding>(index, 10) >> unroll(4);
#else
  auto pipeline = lookup(users) >> lookup(features) >> retrieve<col::user_embedding>(index, 10) >> unroll(4);
#endif
  auto out = pipeline.run(make_batch<col::user_id>(std::vector<id_type>{1}));
  return static_cast<int>(out.size()) - 1;
}
