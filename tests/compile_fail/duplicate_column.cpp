// SPDX-License-Identifier: Apache-2.0
// A batch type that names one column twice.
// EXPECT: recpipe: DUPLICATE_COLUMN_IN_BATCH
#include <recpipe/core/batch.hpp>

int main() {
  using namespace recpipe;
#ifdef RECPIPE_SHOULD_FAIL
  batch<col::user_id, col::history, col::user_id> requests(1);
#else
  batch<col::user_id, col::history> requests(1);
#endif
  return static_cast<int>(requests.size()) - 1;
}
