// SPDX-License-Identifier: Apache-2.0
// recpipe math: small vector primitives (dot, axpy) written so compilers vectorise them.
#pragma once

#include <cmath>
#include <cstddef>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace math {

//! Number of independent partial sums in dot(): without -ffast-math a compiler may not reorder a
//! single float sum, but it does vectorise this many independent lanes (one AVX-512 register).
inline constexpr std::size_t dot_lanes = 16;

//! @brief sum_i a[i] * b[i] in float, with dot_lanes partial sums (deterministic order).
//! @code
//! float s = recpipe::math::dot(a.data(), b.data(), a.size());
//! @endcode
RECPIPE_HOST_DEVICE inline float dot(const float* RECPIPE_RESTRICT a, const float* RECPIPE_RESTRICT b, std::size_t n) {
  float lanes[dot_lanes] = {};
  const std::size_t full = n - n % dot_lanes;
  for (std::size_t i = 0; i < full; i += dot_lanes)
    for (std::size_t l = 0; l < dot_lanes; ++l) lanes[l] += a[i + l] * b[i + l];
  float tail = 0.0f;
  for (std::size_t i = full; i < n; ++i) tail += a[i] * b[i];
  // Pairwise fold keeps the rounding error of long dots low.
  for (std::size_t width = dot_lanes / 2; width > 0; width /= 2)
    for (std::size_t l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0] + tail;
}

//! @brief 1 / max(sqrt(squared_norm), 1e-12): the factor torch.nn.functional.normalize (and
//! models::two_tower's L2-normalised towers, on the CPU and the GPU) scales a row by.
//! @code
//! const float inverse = recpipe::math::inverse_l2_norm(recpipe::math::dot(row, row, n));
//! @endcode
RECPIPE_HOST_DEVICE inline float inverse_l2_norm(float squared_norm) {
  const float norm = std::sqrt(squared_norm);
  return 1.0f / (norm < 1e-12f ? 1e-12f : norm);  // std::max(norm, 1e-12f): a NaN norm stays NaN
}

//! @brief y[i] += alpha * x[i].
RECPIPE_HOST_DEVICE inline void axpy(float alpha, const float* RECPIPE_RESTRICT x, float* RECPIPE_RESTRICT y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

//! @brief Four dots of `a` against b0..b3 at once: one load of `a` feeds four products, which is
//! what makes the DLRM interaction and attention scores compute-bound instead of load-bound.
RECPIPE_HOST_DEVICE inline void dot4(const float* RECPIPE_RESTRICT a, const float* RECPIPE_RESTRICT b0,
                                     const float* RECPIPE_RESTRICT b1, const float* RECPIPE_RESTRICT b2,
                                     const float* RECPIPE_RESTRICT b3, std::size_t n, float* out) {
  constexpr std::size_t lanes = 16;
  float s0[lanes] = {}, s1[lanes] = {}, s2[lanes] = {}, s3[lanes] = {};
  const std::size_t full = n - n % lanes;
  for (std::size_t i = 0; i < full; i += lanes)
    for (std::size_t l = 0; l < lanes; ++l) {
      const float v = a[i + l];
      s0[l] += v * b0[i + l];
      s1[l] += v * b1[i + l];
      s2[l] += v * b2[i + l];
      s3[l] += v * b3[i + l];
    }
  float t0 = 0.0f, t1 = 0.0f, t2 = 0.0f, t3 = 0.0f;
  for (std::size_t i = full; i < n; ++i) {
    t0 += a[i] * b0[i];
    t1 += a[i] * b1[i];
    t2 += a[i] * b2[i];
    t3 += a[i] * b3[i];
  }
  for (std::size_t width = lanes / 2; width > 0; width /= 2)
    for (std::size_t l = 0; l < width; ++l) {
      s0[l] += s0[l + width];
      s1[l] += s1[l + width];
      s2[l] += s2[l + width];
      s3[l] += s3[l + width];
    }
  out[0] = s0[0] + t0;
  out[1] = s1[0] + t1;
  out[2] = s2[0] + t2;
  out[3] = s3[0] + t3;
}

}  // namespace math
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
