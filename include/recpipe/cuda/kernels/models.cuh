// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA kernels: the glue of the device models (cuda/models.cuh) that no library call does:
// [request row | candidate row] pairs for an MLP scorer, L2-normalised tower rows, row-wise dot
// products of two towers' outputs, and NaN inputs kept NaN in the outputs.
#pragma once

#include <recpipe/cuda/detail/config.cuh>

#include <cstddef>
#include <cstdint>

#include <recpipe/math/vector.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace kernels {

//! One block per request r: row c of `out` [candidates, q_cols + i_cols] (dense) becomes
//! [queries row r | items row c] for every candidate c in [offsets[r], offsets[r + 1]).
//! Offsets are the host's row partition (valid, non-decreasing), uploaded by the residency table.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    pair_concat_kernel(const float* queries, std::size_t q_cols, std::size_t q_stride, const float* items,
                       std::size_t i_cols, std::size_t i_stride, const std::int64_t* offsets, float* out) {
  const std::size_t r = blockIdx.x;
  const auto begin = static_cast<std::size_t>(offsets[r]), end = static_cast<std::size_t>(offsets[r + 1]);
  const std::size_t width = q_cols + i_cols;
  const std::size_t count = (end - begin) * width;
  const float* query = queries + r * q_stride;
  for (std::size_t i = threadIdx.x; i < count; i += BlockThreads) {
    const std::size_t c = begin + i / width, j = i % width;
    out[c * width + j] = j < q_cols ? query[j] : items[c * i_stride + (j - q_cols)];
  }
}

//! One thread per row: row *= math::inverse_l2_norm(math::dot(row, row)), the CPU tower's
//! formula in the CPU's summation order.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    l2_normalize_rows_kernel(float* rows, std::size_t count, std::size_t cols, std::size_t stride) {
  const std::size_t r = static_cast<std::size_t>(blockIdx.x) * BlockThreads + threadIdx.x;
  if (r >= count) return;
  float* row = rows + r * stride;
  const float inverse = math::inverse_l2_norm(math::dot(row, row, cols));
  for (std::size_t c = 0; c < cols; ++c) row[c] *= inverse;
}

//! One thread per row: out[r] = math::dot(a row r, b row r) (models::two_tower::forward's
//! formula and summation order).
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    row_dot_kernel(const float* a, std::size_t a_stride, const float* b, std::size_t b_stride, std::size_t count,
                   std::size_t cols, float* out, std::size_t out_stride) {
  const std::size_t r = static_cast<std::size_t>(blockIdx.x) * BlockThreads + threadIdx.x;
  if (r >= count) return;
  out[r * out_stride] = math::dot(a + r * a_stride, b + r * b_stride, cols);
}

//! One thread per row: when row r of `in` [rows, cols] holds a NaN, row r of `out` [rows, out_cols]
//! becomes NaN. The CPU models' ReLU keeps NaN (math::activate), so on the CPU a NaN input gives a
//! NaN output; cuBLASLt's fused ReLU epilogue is max(x, 0) and may map it to 0. Run after a device
//! forward, this gives the CPU's result for NaN inputs whichever the epilogue does.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    nan_rows_kernel(const float* in, std::size_t rows, std::size_t cols, std::size_t stride, float* out,
                    std::size_t out_cols, std::size_t out_stride) {
  const std::size_t r = static_cast<std::size_t>(blockIdx.x) * BlockThreads + threadIdx.x;
  if (r >= rows) return;
  const float* row = in + r * stride;
  bool nan = false;
  for (std::size_t c = 0; c < cols && !nan; ++c) nan = row[c] != row[c];
  if (!nan) return;
  const float q = __int_as_float(0x7fc00000);
  for (std::size_t c = 0; c < out_cols; ++c) out[r * out_stride + c] = q;
}

}  // namespace kernels
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
