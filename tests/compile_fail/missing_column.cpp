// SPDX-License-Identifier: Apache-2.0
// A stage that reads a column nothing provides: filter_seen needs col::history.
// EXPECT: recpipe: STAGE_READS_MISSING_COLUMN
// EXPECT: STAGE_READS_MISSING_COLUMN<recpipe::(v0::)?filter_seen_stage<recpipe::(v0::)?col::history>, recpipe::(v0::)?col::history>
#include <recpipe/core/batch.hpp>
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/retrieve.hpp>

#include <vector>

int main() {
  using namespace recpipe;
  cpu::exact_index index(4);
  feature_store<col::user_id, col::user_embedding> users(4);
  feature_store<col::user_id, col::history> histories;
#ifdef RECPIPE_SHOULD_FAIL
  auto pipeline = lookup(users) >> retrieve<col::user_embedding>(index, 10) >> filter_seen();
#else
  auto pipeline = lookup(users) >> lookup(histories) >> retrieve<col::user_embedding>(index, 10) >> filter_seen();
#endif
  auto out = pipeline.run(make_batch<col::user_id>(std::vector<id_type>{1}));
  return static_cast<int>(out.size()) - 1;
}
