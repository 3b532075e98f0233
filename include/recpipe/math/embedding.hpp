// SPDX-License-Identifier: Apache-2.0
// recpipe math: per-row accumulate and quantize functors for fp32, fp16 and int8 row-wise tables.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <recpipe/math/half.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace math {

//! Bytes after the codes of an int8 row-wise row: a float scale then a float bias (FBGEMM's
//! "byte rowwise" layout, so tables converted by FBGEMM/TorchRec load unchanged).
inline constexpr std::size_t int8_row_tail_bytes = 2 * sizeof(float);

//! @brief acc[c] += weight * row[c] for c < dim.
//! @code
//! recpipe::math::accumulate_row(row, 1.0f, acc, 64);
//! @endcode
RECPIPE_HOST_DEVICE inline void accumulate_row(const float* RECPIPE_RESTRICT row, float weight,
                                               float* RECPIPE_RESTRICT acc, std::size_t dim) {
  for (std::size_t c = 0; c < dim; ++c) acc[c] += weight * row[c];
}

//! @brief acc[c] += weight * half_to_float(row[c]).
RECPIPE_HOST_DEVICE inline void accumulate_row(const std::uint16_t* RECPIPE_RESTRICT row, float weight,
                                               float* RECPIPE_RESTRICT acc, std::size_t dim) {
  for (std::size_t c = 0; c < dim; ++c) acc[c] += weight * half_to_float(row[c]);
}

//! @brief The scale and bias stored after the `dim` codes of an int8 row-wise row (the tail may
//! be unaligned, so it is copied out).
RECPIPE_HOST_DEVICE inline void int8_row_scale_bias(const std::uint8_t* row, std::size_t dim, float& scale,
                                                    float& bias) {
  float scale_bias[2];
  std::memcpy(scale_bias, row + dim, sizeof scale_bias);
  scale = scale_bias[0];
  bias = scale_bias[1];
}

//! @brief One weighted int8 row-wise value: weighted_scale * code + weighted_bias, where
//! weighted_scale = weight * scale and weighted_bias = weight * bias. The CPU bag and the CUDA
//! bag kernel add exactly this per element.
RECPIPE_HOST_DEVICE inline float int8_term(float weighted_scale, float weighted_bias, std::uint8_t code) {
  return weighted_scale * static_cast<float>(code) + weighted_bias;
}

//! @brief acc[c] += weight * (code[c] * scale + bias), with scale and bias read from the row tail.
RECPIPE_HOST_DEVICE inline void accumulate_row_int8(const std::uint8_t* RECPIPE_RESTRICT row, float weight,
                                                    float* RECPIPE_RESTRICT acc, std::size_t dim) {
  float scale = 0.0f, bias = 0.0f;
  int8_row_scale_bias(row, dim, scale, bias);
  const float a = weight * scale, b = weight * bias;
  for (std::size_t c = 0; c < dim; ++c) acc[c] += int8_term(a, b, row[c]);
}

//! @brief Quantizes `dim` floats into one int8 row-wise row (dim codes + scale + bias):
//! scale = (max - min) / 255, bias = min, code = round((x - min) / scale). A constant row gets
//! scale 0 and decodes exactly. Values must be finite (the caller checks).
RECPIPE_HOST_DEVICE inline void quantize_row_int8(const float* RECPIPE_RESTRICT values, std::size_t dim,
                                                  std::uint8_t* RECPIPE_RESTRICT row) {
  float lo = dim ? values[0] : 0.0f, hi = lo;
  for (std::size_t c = 1; c < dim; ++c) {
    lo = values[c] < lo ? values[c] : lo;
    hi = values[c] > hi ? values[c] : hi;
  }
  const float scale = (hi - lo) / 255.0f;
  const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
  for (std::size_t c = 0; c < dim; ++c) {
    float code = std::nearbyint((values[c] - lo) * inverse);
    code = code < 0.0f ? 0.0f : (code > 255.0f ? 255.0f : code);
    row[c] = static_cast<std::uint8_t>(code);
  }
  const float scale_bias[2] = {scale, lo};
  std::memcpy(row + dim, scale_bias, sizeof scale_bias);
}

}  // namespace math
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
