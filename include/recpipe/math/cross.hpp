// SPDX-License-Identifier: Apache-2.0
// recpipe math: the element-wise epilogue of a DCN-v2 cross layer.
#pragma once

#include <cmath>
#include <cstddef>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace math {

//! @brief One element of a DCN-v2 cross update: x0 * projected + xl, where projected is
//! (W x_l)[c] + b[c] (or (W x_l)[c] without a bias). The CPU epilogue and the CUDA epilogue
//! kernel both compute each element with this, so the CPU tests check the GPU's formula.
//! @code
//! float y = recpipe::math::cross_update(x0, wx + b, xl);
//! @endcode
RECPIPE_HOST_DEVICE inline float cross_update(float x0, float projected, float xl) { return x0 * projected + xl; }

//! @brief out[c] = x0[c] * (projected[c] + bias[c]) + xl[c]: DCN-v2's x0 * (W xl + b) + xl once
//! W xl is known. `bias` may be null. `out` may equal `xl` (each element is read before written).
//! @code
//! recpipe::math::cross_epilogue(x0, wx, bias, xl, out, d);
//! @endcode
RECPIPE_HOST_DEVICE inline void cross_epilogue(const float* x0, const float* projected, const float* bias,
                                               const float* xl, float* out, std::size_t d) {
  if (bias)
    for (std::size_t c = 0; c < d; ++c) out[c] = cross_update(x0[c], projected[c] + bias[c], xl[c]);
  else
    for (std::size_t c = 0; c < d; ++c) out[c] = cross_update(x0[c], projected[c], xl[c]);
}

//! @brief Position of the pair (i, j), j < i (j <= i with self_interaction), in the DLRM dot
//! interaction's output row: pairs are listed row by row of the lower triangle, as PyTorch-DLRM's
//! tril indices (i = 0 contributes nothing without self interaction).
//! @code
//! std::size_t at = recpipe::math::interaction_index(3, 1, false);  // 4
//! @endcode
RECPIPE_HOST_DEVICE constexpr std::size_t interaction_index(std::size_t i, std::size_t j, bool self_interaction) {
  return (self_interaction ? i * (i + 1) / 2 : i * (i - (i > 0)) / 2) + j;
}

//! @brief The inverse of interaction_index: the pair (i, j) written at position `index` of an
//! interaction row. The CUDA dot-interaction kernel gives each thread an output position and
//! finds its pair with this (integer-exact: the square-root guess is corrected both ways).
//! @code
//! std::size_t i, j;
//! recpipe::math::interaction_pair(4, false, i, j);  // i = 3, j = 1
//! @endcode
RECPIPE_HOST_DEVICE inline void interaction_pair(std::size_t index, bool self_interaction, std::size_t& i,
                                                 std::size_t& j) {
  // Row i starts at start(i) = i(i+1)/2 (self) or i(i-1)/2; find the last row starting <= index.
  const double root = std::sqrt(8.0 * static_cast<double>(index) + 1.0);
  std::size_t row = static_cast<std::size_t>(self_interaction ? (root - 1.0) / 2.0 : (root + 1.0) / 2.0);
  const auto start = [self_interaction](std::size_t r) {
    return self_interaction ? r * (r + 1) / 2 : r * (r - (r > 0)) / 2;
  };
  while (row > 0 && start(row) > index) --row;
  while (start(row + 1) <= index) ++row;  // without self interaction row 0 is empty: start(1) == start(0)
  i = row;
  j = index - start(row);
}

//! @brief One column's share of the factorization-machine second-order term: with
//! s = sum_f v_f[k] and q = sum_f v_f[k]^2 over the F vectors of `row` (F*d floats, vector f at
//! row + f*d), returns s*s - q. The term of a row is 0.5 * the sum of this over k < d. The CUDA
//! FM kernel gives each thread columns and sums these.
//! @code
//! float part = recpipe::math::fm_column(row, 26, 16, 3);
//! @endcode
RECPIPE_HOST_DEVICE inline float fm_column(const float* row, std::size_t num_features, std::size_t d, std::size_t k) {
  float sum = 0.0f, squares = 0.0f;
  for (std::size_t f = 0; f < num_features; ++f) {
    const float v = row[f * d + k];
    sum += v;
    squares += v * v;
  }
  return sum * sum - squares;
}

}  // namespace math
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
