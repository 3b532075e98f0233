// SPDX-License-Identifier: Apache-2.0
// recpipe io: the element types of the safetensors format and fp16/bf16 conversions.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include <recpipe/math/half.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace io {

//! @brief The tensor element types recpipe reads and writes (a subset of safetensors' list).
//!
//! @code
//! recpipe::io::dtype t = *recpipe::io::parse_dtype("BF16");
//! std::size_t bytes = recpipe::io::dtype_size(t);   // 2
//! @endcode
enum class dtype : std::uint8_t { f32, f16, bf16, i8, i32, i64 };

//! Bytes per element of `type`.
constexpr std::size_t dtype_size(dtype type) noexcept {
  switch (type) {
    case dtype::f32: return 4;
    case dtype::f16: return 2;
    case dtype::bf16: return 2;
    case dtype::i8: return 1;
    case dtype::i32: return 4;
    case dtype::i64: return 8;
  }
  return 0;
}

//! The safetensors spelling of `type` ("F32", "F16", "BF16", "I8", "I32", "I64").
constexpr std::string_view dtype_name(dtype type) noexcept {
  switch (type) {
    case dtype::f32: return "F32";
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
    case dtype::i8: return "I8";
    case dtype::i32: return "I32";
    case dtype::i64: return "I64";
  }
  return "?";
}

//! The dtype spelled `name`, or nullopt for names recpipe does not support (e.g. "F64", "f32").
constexpr std::optional<dtype> parse_dtype(std::string_view name) noexcept {
  for (dtype type : {dtype::f32, dtype::f16, dtype::bf16, dtype::i8, dtype::i32, dtype::i64})
    if (dtype_name(type) == name) return type;
  return std::nullopt;
}

//! The dtype whose elements are stored as C++ type T (float, int8_t, int32_t, int64_t).
//! F16 and BF16 have no native C++ type here; read them with tensor_view::to_float().
template <class T>
inline constexpr std::optional<dtype> dtype_of = std::nullopt;
template <>
inline constexpr std::optional<dtype> dtype_of<float> = dtype::f32;
template <>
inline constexpr std::optional<dtype> dtype_of<std::int8_t> = dtype::i8;
template <>
inline constexpr std::optional<dtype> dtype_of<std::int32_t> = dtype::i32;
template <>
inline constexpr std::optional<dtype> dtype_of<std::int64_t> = dtype::i64;

// fp16 conversions come from the math layer (shared with the fp16 embedding tables).
using math::float_to_half;
using math::half_to_float;

//! bfloat16 bits -> float (exact).
inline float bfloat16_to_float(std::uint16_t bits) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

//! float -> bfloat16 bits, rounding to nearest even; NaN stays NaN.
inline std::uint16_t float_to_bfloat16(float value) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  if (std::isnan(value)) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
  const std::uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

}  // namespace io
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
