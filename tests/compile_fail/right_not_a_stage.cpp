// SPDX-License-Identifier: Apache-2.0
// Composing a stage with something that is not a stage (a factory named without its call).
// EXPECT: recpipe: RIGHT_OF_SHIFT_IS_NOT_A_STAGE
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/order.hpp>

int main() {
  using namespace recpipe;
#ifdef RECPIPE_SHOULD_FAIL
  auto pipeline = filter_seen() >> 10;
#else
  auto pipeline = filter_seen() >> top_k(10);
#endif
  (void)pipeline;
  return 0;
}
