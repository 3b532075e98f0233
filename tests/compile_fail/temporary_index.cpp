// SPDX-License-Identifier: Apache-2.0
// retrieve keeps a reference to its index: a temporary index would dangle.
// EXPECT: recpipe: INDEX_MUST_OUTLIVE_PIPELINE
// EXPECT_FIRST_ERROR: INDEX_MUST_OUTLIVE_PIPELINE
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/stages/retrieve.hpp>

int main() {
  using namespace recpipe;
#ifdef RECPIPE_SHOULD_FAIL
  auto stage = retrieve(cpu::exact_index(8), 10);
#else
  cpu::exact_index index(8);
  auto stage = retrieve(index, 10);
#endif
  (void)stage;
  return 0;
}
