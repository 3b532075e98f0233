// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA kernels: score ragged candidates against their request's query vector (dot product).
#pragma once

#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/kernels/offsets.cuh>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <recpipe/core/types.hpp>
#include <recpipe/math/vector.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace kernels {

struct dot_score_params {
  const float* queries = nullptr;
  std::size_t query_stride = 0;
  std::uint32_t num_requests = 0;
  const float* items = nullptr;
  std::size_t item_stride = 0;
  std::size_t num_items = 0;
  std::uint32_t dim = 0;
  const id_type* candidates = nullptr;  // item row of each candidate
  std::uint32_t num_candidates = 0;
  const std::int32_t* offsets = nullptr;  // sanitised, num_requests + 1
  float* out = nullptr;                   // num_candidates
  std::uint32_t chunk = 0;                // columns per lane
};
static_assert(std::is_trivially_copyable_v<dot_score_params>);

//! Groups of GroupLanes lanes score one candidate each: lane l takes the contiguous columns
//! [l * chunk, (l + 1) * chunk), so a group reads a row as one coalesced sweep, and runs
//! math::dot (the CPU's functor) on its slice; shuffles add the slices. The request of a candidate
//! comes from a binary search in the sanitised offsets; a candidate outside every request, or
//! naming an item outside [0, num_items), scores NaN.
template <int GroupLanes, int BlockThreads>
__global__ void __launch_bounds__(BlockThreads) dot_score_kernel(dot_score_params p) {
  static_assert(GroupLanes >= 1 && GroupLanes <= 32 && (GroupLanes & (GroupLanes - 1)) == 0);
  const std::size_t thread = static_cast<std::size_t>(blockIdx.x) * BlockThreads + threadIdx.x;
  const std::size_t candidate = thread / GroupLanes;
  const std::uint32_t lane = threadIdx.x % GroupLanes;
  // Whole groups leave together, so the shuffles below always see full groups.
  if (candidate >= p.num_candidates) return;
  const auto c = static_cast<std::uint32_t>(candidate);
  const std::uint32_t request = segment_of(p.offsets, p.num_requests, c);
  const id_type item = p.candidates[c];
  const bool valid = request < p.num_requests && static_cast<std::uint64_t>(item) < p.num_items;
  float partial = 0.0f;
  if (valid) {
    const std::uint32_t first = lane * p.chunk;
    if (first < p.dim) {
      const std::uint32_t count = p.dim - first < p.chunk ? p.dim - first : p.chunk;
      partial = math::dot(p.queries + static_cast<std::size_t>(request) * p.query_stride + first,
                          p.items + static_cast<std::size_t>(item) * p.item_stride + first, count);
    }
  }
  // Mask of this group's lanes only: groups of one warp may have left at different times.
  const unsigned warp_lane = threadIdx.x % 32;
  const unsigned group_mask =
      (GroupLanes == 32 ? 0xffffffffu : ((1u << GroupLanes) - 1u)) << (warp_lane / GroupLanes * GroupLanes);
#pragma unroll
  for (int offset = GroupLanes / 2; offset > 0; offset /= 2)
    partial += __shfl_xor_sync(group_mask, partial, offset, GroupLanes);
  if (lane == 0) p.out[c] = valid ? partial : __int_as_float(0x7fc00000);
}

}  // namespace kernels
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
