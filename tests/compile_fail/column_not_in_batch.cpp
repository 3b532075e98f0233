// SPDX-License-Identifier: Apache-2.0
// Reading a column the batch does not hold.
// EXPECT: recpipe: COLUMN_NOT_IN_BATCH
#include <recpipe/core/batch.hpp>

int main() {
  using namespace recpipe;
  batch<col::user_id, col::candidates> requests(1);
#ifdef RECPIPE_SHOULD_FAIL
  return static_cast<int>(requests.get<col::score>().size());
#else
  return static_cast<int>(requests.get<col::user_id>().size()) - 1;
#endif
}
