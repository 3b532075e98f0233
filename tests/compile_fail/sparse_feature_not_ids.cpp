// SPDX-License-Identifier: Apache-2.0
// A sparse (embedding-bag) feature over a column of float vectors: it has no ids to look up.
// EXPECT: recpipe: SPARSE_FEATURE_NEEDS_AN_ID_COLUMN
#include <recpipe/train/features.hpp>

int main() {
  using namespace recpipe;
#ifdef RECPIPE_SHOULD_FAIL
  using spec = train::features<train::sparse<col::candidates>, train::sparse<col::item_features>>;
#else
  using spec = train::features<train::sparse<col::candidates>, train::dense<col::item_features>>;
#endif
  batch<col::candidates, col::item_features> b(1);
  b.get<col::candidates>().assign({0, 1}, {3});
  b.get<col::item_features>() = matrix<float>(1, 2);
  train::example_batch scratch;
  return static_cast<int>(train::build_inputs(spec{}, b, scratch).batch) - 1;
}
