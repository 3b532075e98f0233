// SPDX-License-Identifier: Apache-2.0
// A store keyed by candidates must hold a per-candidate column.
// EXPECT: recpipe: LOOKUP_SHAPE_MISMATCH
#include <recpipe/cpu/feature_store.hpp>

int main() {
  using namespace recpipe;
#ifdef RECPIPE_SHOULD_FAIL
  feature_store<col::candidates, col::user_embedding> items(4);
#else
  feature_store<col::candidates, col::item_embedding> items(4);
#endif
  return static_cast<int>(items.size());
}
