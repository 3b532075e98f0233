// SPDX-License-Identifier: Apache-2.0
// A pipeline applied to something that is not a batch of requests.
// EXPECT: recpipe: STAGE_CANNOT_CONSUME_INPUT
#include <recpipe/core/batch.hpp>
#include <recpipe/stages/order.hpp>

#include <vector>

int main() {
  using namespace recpipe;
  std::vector<id_type> user_ids{1, 2};
#ifdef RECPIPE_SHOULD_FAIL
  auto out = user_ids >> top_k(3);
#else
  auto out = make_batch<col::candidates, col::score>(ragged<id_type>({0, 1, 1}, {5}), std::vector<float>{1.0f}) >> top_k(3);
#endif
  (void)out;
  return 0;
}
