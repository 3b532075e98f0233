// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA kernels for dense layers and feature crossing: GEMM epilogues (bias + activation,
// the DCN-v2 cross update), the DLRM dot interaction and the FM second-order term.
#pragma once

#include <recpipe/cuda/detail/config.cuh>

#include <cub/block/block_reduce.cuh>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <recpipe/math/activation.hpp>
#include <recpipe/math/cross.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace kernels {

//! A row-major device matrix as the kernels see it (stride in floats).
struct dense_view {
  float* data = nullptr;
  std::size_t stride = 0;
};
struct const_dense_view {
  const float* data = nullptr;
  std::size_t stride = 0;
};
static_assert(std::is_trivially_copyable_v<dense_view> && std::is_trivially_copyable_v<const_dense_view>);

//! y[r, c] = act(y[r, c] + bias[c]) (bias nullable: act(y[r, c])), the epilogue cpu::linear
//! applies after its product, element by element with the same math::activate. Grid-stride.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    bias_activation_kernel(dense_view y, std::size_t rows, std::size_t cols, const float* bias,
                           math::activation act) {
  const std::size_t total = rows * cols;
  for (std::size_t e = static_cast<std::size_t>(blockIdx.x) * BlockThreads + threadIdx.x; e < total;
       e += static_cast<std::size_t>(gridDim.x) * BlockThreads) {
    const std::size_t r = e / cols, c = e % cols;
    float& v = y.data[r * y.stride + c];
    v = math::activate(act, bias != nullptr ? v + bias[c] : v);
  }
}

//! out[r, c] = x0[r, c] * (projected[r, c] + bias[c]) + xl[r, c] via math::cross_update, the
//! formula of the CPU epilogue. `out` may be `xl` (same element read, then written).
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    cross_epilogue_kernel(const_dense_view x0, const_dense_view projected, const float* bias, const_dense_view xl,
                          dense_view out, std::size_t rows, std::size_t d) {
  const std::size_t total = rows * d;
  for (std::size_t e = static_cast<std::size_t>(blockIdx.x) * BlockThreads + threadIdx.x; e < total;
       e += static_cast<std::size_t>(gridDim.x) * BlockThreads) {
    const std::size_t r = e / d, c = e % d;
    const float p = projected.data[r * projected.stride + c];
    const float a = x0.data[r * x0.stride + c], l = xl.data[r * xl.stride + c];
    out.data[r * out.stride + c] = bias != nullptr ? math::cross_update(a, p + bias[c], l) : math::cross_update(a, p, l);
  }
}

//! DLRM dot interaction, one block per batch row. The row's F vectors are staged in shared
//! memory when `Shared` (F * d floats fit), each warp takes output positions p = warp, warp +
//! warps, ..., finds its pair with math::interaction_pair (the inverse of the CPU's output
//! order), and its lanes split the d products and add them with shuffles.
template <bool Shared, int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    dot_interaction_kernel(const_dense_view features, std::size_t rows, std::uint32_t num_features, std::uint32_t d,
                           bool self_interaction, std::uint32_t pairs, dense_view out) {
  extern __shared__ float staged[];
  const std::size_t b = blockIdx.x;
  if (b >= rows) return;
  const float* row = features.data + b * features.stride;
  if constexpr (Shared) {
    const std::uint32_t width = num_features * d;
    for (std::uint32_t c = threadIdx.x; c < width; c += BlockThreads) staged[c] = row[c];
    __syncthreads();
    row = staged;
  }
  const std::uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  constexpr std::uint32_t warps = BlockThreads / 32;
  for (std::uint32_t p = warp; p < pairs; p += warps) {
    std::size_t i = 0, j = 0;
    math::interaction_pair(p, self_interaction, i, j);
    const float* fi = row + i * d;
    const float* fj = row + j * d;
    float partial = 0.0f;
    for (std::uint32_t c = lane; c < d; c += 32) partial += fi[c] * fj[c];
    for (int offset = 16; offset > 0; offset /= 2) partial += __shfl_xor_sync(0xffffffffu, partial, offset);
    if (lane == 0) out.data[b * out.stride + p] = partial;
  }
}

//! FM second-order term, one block per batch row: each thread sums math::fm_column over its
//! columns, then a block reduction; out[b] = 0.5 * total (cpu::fm_second_order's value).
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    fm_second_order_kernel(const_dense_view features, std::size_t rows, std::uint32_t num_features, std::uint32_t d,
                           float* out) {
  using reduce = cub::BlockReduce<float, BlockThreads>;
  __shared__ typename reduce::TempStorage storage;
  const std::size_t b = blockIdx.x;
  if (b >= rows) return;
  const float* row = features.data + b * features.stride;
  float partial = 0.0f;
  for (std::uint32_t k = threadIdx.x; k < d; k += BlockThreads) partial += math::fm_column(row, num_features, d, k);
  const float total = reduce(storage).Sum(partial);
  if (threadIdx.x == 0) out[b] = 0.5f * total;
}

}  // namespace kernels
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
