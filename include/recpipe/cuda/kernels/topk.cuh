// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA kernels for top-k: offset sanitising, radix-sort key building, result gathering.
#pragma once

#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/kernels/offsets.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <recpipe/core/types.hpp>
#include <recpipe/math/topk.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace kernels {

//! The score's radix key: ascending key order = score descending, every NaN last, -0.0 == +0.0
//! (the same functor the CPU radix paths use, so both backends tie identically).
using math::descending_key;

//! Radix key of a signed 64-bit id for an ascending sort (flip the sign bit).
RECPIPE_HOST_DEVICE inline std::uint64_t ascending_id_key(id_type id) {
  return static_cast<std::uint64_t>(id) ^ (std::uint64_t{1} << 63);
}

//! Arguments shared by the top-k kernels. Offsets are already sanitised: non-decreasing, in [0, n].
struct top_k_params {
  const float* scores = nullptr;     // n scores
  const id_type* ids = nullptr;      // nullptr: ids are positions within the segment
  std::uint32_t ids_period = 0;      // 0: ids[global position]; else ids[position % period]
  std::uint32_t n = 0;
  const std::int32_t* offsets = nullptr;  // num_segments + 1 sanitised offsets
  std::uint32_t num_segments = 0;
  std::uint32_t k = 0;
  id_type* out_ids = nullptr;        // num_segments * k
  float* out_scores = nullptr;       // num_segments * k
};
static_assert(std::is_trivially_copyable_v<top_k_params>);

//! out[i] = i * cols for dense rows.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    row_offsets_kernel(std::uint32_t count, std::uint32_t cols, std::int32_t* out) {
  const std::uint32_t i = blockIdx.x * BlockThreads + threadIdx.x;
  if (i < count) out[i] = static_cast<std::int32_t>(i * cols);
}

//! Sort keys for the score pass. With SegmentBits == true (one device-wide sort) the key is
//! (segment << 32 | score key), so one stable radix sort orders by segment, then score, then the
//! order the values arrived in; positions that belong to no segment sort after every segment.
//! Without it (segmented sort) the key is the score key alone. `positions` (nullable: identity)
//! says which score each slot refers to, so the pass can follow an earlier sort by id.
template <bool SegmentBits, int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    score_keys_kernel(top_k_params p, const std::uint32_t* positions, std::uint64_t* keys64, std::uint32_t* keys32,
                      std::uint32_t* values) {
  const std::uint32_t j = blockIdx.x * BlockThreads + threadIdx.x;
  if (j >= p.n) return;
  // Segmented sorts leave slots outside every segment unwritten: never trust them as indices.
  std::uint32_t position = positions != nullptr ? positions[j] : j;
  if (position >= p.n) position = j;
  const std::uint32_t key = descending_key(p.scores[position]);
  if constexpr (SegmentBits) {
    const std::uint32_t segment = segment_of(p.offsets, p.num_segments, position);
    keys64[j] = (static_cast<std::uint64_t>(segment) << 32) | (segment == p.num_segments ? 0xffffffffu : key);
  } else {
    keys32[j] = key;
  }
  values[j] = position;
}

__device__ inline id_type id_at(const top_k_params& p, std::uint32_t position) {
  return p.ids_period == 0 ? p.ids[position] : p.ids[position % p.ids_period];
}

//! Sort keys for the id pass (run first, so the stable score pass breaks ties by id).
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    id_keys_kernel(top_k_params p, std::uint64_t* keys, std::uint32_t* values) {
  const std::uint32_t i = blockIdx.x * BlockThreads + threadIdx.x;
  if (i >= p.n) return;
  keys[i] = ascending_id_key(id_at(p, i));
  values[i] = i;
}

//! Writes slot j of segment s: the j-th sorted entry when j < min(k, length), else id -1 and
//! score NaN. `sorted` holds global positions. A segmented sort leaves segment s at offsets[s];
//! the device-wide sort packs the segments from 0, so segment s starts at offsets[s] - offsets[0].
template <bool DeviceWide, int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    gather_top_k_kernel(top_k_params p, const std::uint32_t* sorted) {
  const std::size_t slot = static_cast<std::size_t>(blockIdx.x) * BlockThreads + threadIdx.x;
  const std::size_t total = static_cast<std::size_t>(p.num_segments) * p.k;
  if (slot >= total) return;
  const std::uint32_t s = static_cast<std::uint32_t>(slot / p.k);
  const std::uint32_t j = static_cast<std::uint32_t>(slot % p.k);
  const std::int32_t begin = p.offsets[s], end = p.offsets[s + 1];
  const std::int32_t base = DeviceWide ? p.offsets[0] : 0;
  if (static_cast<std::int64_t>(j) >= static_cast<std::int64_t>(end) - begin) {
    p.out_ids[slot] = -1;
    p.out_scores[slot] = __int_as_float(0x7fc00000);  // quiet NaN
    return;
  }
  std::uint32_t position = sorted[begin - base + static_cast<std::int32_t>(j)];
  if (position >= p.n) position = static_cast<std::uint32_t>(begin) + j;  // unreachable for sane sorts
  p.out_ids[slot] = p.ids == nullptr ? static_cast<id_type>(position - static_cast<std::uint32_t>(begin)) : id_at(p, position);
  p.out_scores[slot] = p.scores[position];
}

}  // namespace kernels
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
