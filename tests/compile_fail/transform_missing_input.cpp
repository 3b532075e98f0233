// SPDX-License-Identifier: Apache-2.0
// A transform op reads a column the requests and the earlier stages do not provide: normalizing
// `price` before anything looked it up.
// EXPECT: recpipe: STAGE_READS_MISSING_COLUMN
// EXPECT: STAGE_READS_MISSING_COLUMN<recpipe::(v0::)?transform_stage<.*normalize_op<price, price_z>.*>, price>
// EXPECT_FIRST_ERROR: static assertion failed: recpipe: STAGE_READS_MISSING_COLUMN
#include <recpipe/stages/transform.hpp>

#include <vector>

RECPIPE_COLUMN(price, per_request, float);
RECPIPE_COLUMN(price_z, per_request, float);
RECPIPE_COLUMN(user_bucket, per_request, recpipe::id_type);

int main() {
  using namespace recpipe;
  const auto features =
      transform(ops::hash_bucket<col::user_id, user_bucket>(100)) >> transform(ops::normalize<price, price_z>(10.0, 2.0));
#ifdef RECPIPE_SHOULD_FAIL
  auto requests = make_batch<col::user_id>(std::vector<id_type>{1});
#else
  auto requests = make_batch<col::user_id, price>(std::vector<id_type>{1}, std::vector<float>{12.0f});
#endif
  auto out = features.run(std::move(requests));
  return static_cast<int>(out.size()) - 1;
}
