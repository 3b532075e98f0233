// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA kernels shared by ragged operations: offset clamping and segment lookup.
#pragma once

#include <recpipe/cuda/detail/config.cuh>

#include <cstdint>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace kernels {

//! out[i] = clamp(offsets[i], 0, n); a running maximum (CUB scan) then makes them non-decreasing.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    clamp_offsets_kernel(const std::int64_t* offsets, std::uint32_t count, std::int64_t n, std::int32_t* out) {
  const std::uint32_t i = blockIdx.x * BlockThreads + threadIdx.x;
  if (i >= count) return;
  const std::int64_t v = offsets[i];
  out[i] = static_cast<std::int32_t>(v < 0 ? 0 : (v > n ? n : v));
}

//! Segment of position i in non-decreasing offsets[0..num_segments]: the last s with
//! offsets[s] <= i, or num_segments when i lies before offsets[0] or at/after
//! offsets[num_segments] (such positions belong to no segment).
__device__ inline std::uint32_t segment_of(const std::int32_t* offsets, std::uint32_t num_segments, std::uint32_t i) {
  const auto position = static_cast<std::int64_t>(i);
  if (position < offsets[0] || position >= offsets[num_segments]) return num_segments;
  std::uint32_t lo = 0, hi = num_segments;  // offsets[lo] <= i < offsets[hi]
  while (hi - lo > 1) {
    const std::uint32_t mid = lo + (hi - lo) / 2;
    if (offsets[mid] <= position) lo = mid;
    else hi = mid;
  }
  return lo;
}

}  // namespace kernels
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
