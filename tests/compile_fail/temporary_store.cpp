// SPDX-License-Identifier: Apache-2.0
// lookup keeps a reference to its feature store: a temporary store would dangle.
// EXPECT: recpipe: STORE_MUST_OUTLIVE_PIPELINE
// EXPECT_FIRST_ERROR: STORE_MUST_OUTLIVE_PIPELINE
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/stages/lookup.hpp>

int main() {
  using namespace recpipe;
#ifdef RECPIPE_SHOULD_FAIL
  auto stage = lookup(feature_store<col::user_id, col::user_embedding>(8));
#else
  feature_store<col::user_id, col::user_embedding> users(8);
  auto stage = lookup(users);
#endif
  (void)stage;
  return 0;
}
