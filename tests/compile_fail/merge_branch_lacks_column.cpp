// SPDX-License-Identifier: Apache-2.0
// A merge (a + b) whose branches disagree: only the left one looks up item vectors, so merged
// candidates from the right would have none.
// EXPECT_FIRST_ERROR: recpipe: JOIN_BRANCH_LACKS_COLUMN
// EXPECT: recpipe: JOIN_BRANCH_LACKS_COLUMN - both branches of a merge \(a \+ b\) must write col::candidates and the same per-candidate columns
// EXPECT: JOIN_BRANCH_LACKS_COLUMN<recpipe::(v0::)?retrieve_stage<.*>, recpipe::(v0::)?right_branch, recpipe::(v0::)?col::item_embedding>
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/merge.hpp>
#include <recpipe/stages/retrieve.hpp>

#include <vector>

int main() {
  using namespace recpipe;
  cpu::exact_index near(2), popular(2);
  feature_store<col::candidates, col::item_embedding> items(2);
#ifdef RECPIPE_SHOULD_FAIL
  auto both = (retrieve(near, 10) >> lookup(items)) + retrieve(popular, 10);
#else
  auto both = (retrieve(near, 10) >> lookup(items)) + (retrieve(popular, 10) >> lookup(items));
#endif
  auto out = both(make_batch<col::query_vector>(matrix<float>(1, 2)));
  return static_cast<int>(out.size()) - 1;
}
