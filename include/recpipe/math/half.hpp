// SPDX-License-Identifier: Apache-2.0
// recpipe math: IEEE binary16 <-> float conversion on raw bit patterns (host and device).
#pragma once

#include <cstdint>
#include <cstring>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace math {

namespace detail {
RECPIPE_HOST_DEVICE inline float bits_to_float(std::uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}
RECPIPE_HOST_DEVICE inline std::uint32_t float_to_bits(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}
}  // namespace detail

//! @brief Converts a binary16 bit pattern to float exactly (subnormals, inf and NaN included).
//! @code
//! float one = recpipe::math::half_to_float(0x3c00);  // 1.0f
//! @endcode
RECPIPE_HOST_DEVICE inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  const std::uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return detail::bits_to_float(sign | 0x7f800000u | (mantissa << 13));  // inf / NaN
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  return detail::bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

//! @brief Rounds a float to the nearest binary16 (ties to even); overflow gives inf, NaN stays NaN.
RECPIPE_HOST_DEVICE inline std::uint16_t float_to_half(float value) {
  const std::uint32_t bits = detail::float_to_bits(value);
  const std::uint16_t sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits >= 0x7f800000u)  // inf or NaN (keep a quiet NaN payload bit)
    return static_cast<std::uint16_t>(sign | 0x7c00u | (abs_bits > 0x7f800000u ? 0x200u : 0u));
  if (abs_bits >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds past 65504
  if (abs_bits < 0x38800000u) {
    // Result is subnormal or zero: scale so that the half ulp (2^-24) becomes 1 and round.
    const float magnitude = detail::bits_to_float(abs_bits) * 16777216.0f;  // * 2^24, exact
    const auto truncated = static_cast<std::uint32_t>(magnitude);
    const float remainder = magnitude - static_cast<float>(truncated);
    std::uint32_t rounded = truncated;
    if (remainder > 0.5f || (remainder == 0.5f && (truncated & 1u))) ++rounded;
    return static_cast<std::uint16_t>(sign | rounded);
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even.
  const std::uint32_t rebased = abs_bits - 0x38000000u;  // exponent -112
  const std::uint32_t dropped = rebased & 0x1fffu;
  std::uint32_t result = rebased >> 13;
  if (dropped > 0x1000u || (dropped == 0x1000u && (result & 1u))) ++result;  // may carry into the exponent: correct
  return static_cast<std::uint16_t>(sign | result);
}

}  // namespace math
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
