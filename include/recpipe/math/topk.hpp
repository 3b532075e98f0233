// SPDX-License-Identifier: Apache-2.0
// recpipe math: the total order of top-k results (score desc, NaN last, then id asc).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace math {

//! @brief True when (score a, id a) ranks before (score b, id b): larger score first, every NaN
//! after every number (NaN never beats -inf), then smaller id. A strict weak order, so std::sort
//! and std::nth_element may use it. Both backends and every ordering stage sort with this, which
//! is what makes their results comparable element by element. `Score` is float, or double for
//! the sampling keys of softmax_sample.
//! @code
//! bool first = recpipe::math::ranks_before(2.0f, 7, 1.0f, 3);  // true
//! @endcode
template <class Score>
RECPIPE_HOST_DEVICE constexpr bool ranks_before(Score score_a, std::int64_t id_a, Score score_b, std::int64_t id_b) {
  const bool a_nan = score_a != score_a, b_nan = score_b != score_b;  // isnan, constexpr and device-safe
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && score_a != score_b) return score_a > score_b;
  return id_a < id_b;
}

//! @brief Maps a float to an unsigned key whose ascending order is the float's descending order,
//! with every NaN mapped to the largest key (last) and -0.0 equal to +0.0. Radix selection
//! (CPU and CUDA) works on these keys.
RECPIPE_HOST_DEVICE inline std::uint32_t descending_key(float score) {
  if (std::isnan(score)) return 0xffffffffu;
  if (score == 0.0f) score = 0.0f;  // fold -0.0 into +0.0: they compare equal
  std::uint32_t bits;
  std::memcpy(&bits, &score, sizeof bits);
  const std::uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return ~ascending;  // never 0xffffffff: that would need the bits of a NaN
}

//! @brief descending_key for double keys (the sampling keys): ascending 64-bit key order is the
//! double's descending order, every NaN last (the largest key), -0.0 equal to +0.0.
RECPIPE_HOST_DEVICE inline std::uint64_t descending_key(double score) {
  if (std::isnan(score)) return ~std::uint64_t{0};
  if (score == 0.0) score = 0.0;
  std::uint64_t bits;
  std::memcpy(&bits, &score, sizeof bits);
  const std::uint64_t sign = std::uint64_t{1} << 63;
  const std::uint64_t ascending = (bits & sign) ? ~bits : (bits | sign);
  return ~ascending;
}

}  // namespace math
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
