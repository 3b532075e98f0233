// SPDX-License-Identifier: Apache-2.0
// recpipe math: numerically stable in-place softmax on a raw row.
#pragma once

#include <cmath>
#include <cstddef>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace math {

//! @brief In-place softmax of x[0..n): subtracts the maximum first so exp never overflows.
//! An empty row is left alone; a row whose maximum is -inf (everything masked) becomes zeros.
//! @code
//! float row[3] = {1, 2, 3};
//! recpipe::math::softmax_inplace(row, 3);
//! @endcode
RECPIPE_HOST_DEVICE inline void softmax_inplace(float* x, std::size_t n) {
  if (n == 0) return;
  float peak = x[0];
  for (std::size_t i = 1; i < n; ++i) peak = x[i] > peak ? x[i] : peak;
  if (std::isinf(peak) && peak < 0.0f) {
    for (std::size_t i = 0; i < n; ++i) x[i] = 0.0f;
    return;
  }
  float total = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - peak);
    total += x[i];
  }
  const float inverse = 1.0f / total;
  for (std::size_t i = 0; i < n; ++i) x[i] *= inverse;
}

}  // namespace math
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
