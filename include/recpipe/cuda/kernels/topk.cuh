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
#include <recpipe/math/random.hpp>
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

// ---- Radix selection (AIR top-k's idea): find each segment's k-th key with 8-bit histogram
// passes over the score keys, keep only the entries at or above it, sort those survivors. ----

//! Per-segment selection state. remaining[s] == 0 marks a segment that keeps every entry
//! (length <= k); otherwise it is the 1-based rank, among the entries whose key matches prefix[s]
//! in the bits decided so far, of the k-th best entry.
struct select_state {
  std::uint32_t* prefix = nullptr;
  std::uint32_t* remaining = nullptr;
  std::uint32_t* histogram = nullptr;  // num_segments x 256
  std::uint32_t* count = nullptr;      // survivors gathered per segment
};
static_assert(std::is_trivially_copyable_v<select_state>);

inline constexpr int select_digit_bits = 8;
inline constexpr std::uint32_t select_bins = 1u << select_digit_bits;

//! The bits above the digit at `shift` (already decided); none for the first digit.
RECPIPE_HOST_DEVICE inline std::uint32_t select_high_mask(int shift) {
  return shift + select_digit_bits >= 32 ? 0u : ~((1u << (shift + select_digit_bits)) - 1u);
}

template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads) select_init_kernel(top_k_params p, select_state state) {
  const std::uint32_t s = blockIdx.x * BlockThreads + threadIdx.x;
  if (s >= p.num_segments) return;
  const auto length = static_cast<std::uint32_t>(p.offsets[s + 1] - p.offsets[s]);
  state.prefix[s] = 0;
  state.remaining[s] = length > p.k ? p.k : 0u;
  state.count[s] = 0;
}

//! Counts, per segment still selecting, the digit at `shift` of every key that matches the
//! segment's prefix. A tile lying inside one segment counts in shared memory and adds its 256
//! bins once (a long row is mostly such tiles); a tile spanning segments adds per entry.
template <int BlockThreads, int ItemsPerThread>
__global__ void __launch_bounds__(BlockThreads)
    select_histogram_kernel(top_k_params p, select_state state, int shift) {
  __shared__ std::uint32_t bins[select_bins];
  __shared__ std::uint32_t tile_segment;
  constexpr std::uint32_t tile = BlockThreads * ItemsPerThread;
  const std::uint32_t first = blockIdx.x * tile;
  if (first >= p.n) return;
  const std::uint32_t last = (p.n - first > tile ? first + tile : p.n) - 1;
  const std::uint32_t mask = select_high_mask(shift);
  if (threadIdx.x == 0) {
    const std::uint32_t a = segment_of(p.offsets, p.num_segments, first);
    const std::uint32_t b = segment_of(p.offsets, p.num_segments, last);
    // Both ends in one segment: so is everything between (offsets are non-decreasing). Both
    // "outside" only counts when they are outside on the same side.
    const bool outside = a == p.num_segments &&
                         (static_cast<std::int64_t>(first) >= p.offsets[p.num_segments] ||
                          static_cast<std::int64_t>(last) < p.offsets[0]);
    tile_segment = a == b && (a < p.num_segments || outside) ? a : 0xffffffffu;
  }
  for (std::uint32_t bin = threadIdx.x; bin < select_bins; bin += BlockThreads) bins[bin] = 0;
  __syncthreads();
  const std::uint32_t single = tile_segment;
  if (single != 0xffffffffu) {
    // Uniform branch: the whole block takes it or not.
    if (single >= p.num_segments || state.remaining[single] == 0) return;
    const std::uint32_t prefix = state.prefix[single] & mask;
    for (std::uint32_t i = first + threadIdx.x; i <= last; i += BlockThreads) {
      const std::uint32_t key = descending_key(p.scores[i]);
      if ((key & mask) == prefix) atomicAdd(&bins[(key >> shift) & (select_bins - 1)], 1u);
    }
    __syncthreads();
    std::uint32_t* out = state.histogram + static_cast<std::size_t>(single) * select_bins;
    for (std::uint32_t bin = threadIdx.x; bin < select_bins; bin += BlockThreads)
      if (bins[bin] != 0) atomicAdd(&out[bin], bins[bin]);
    return;
  }
  for (std::uint32_t i = first + threadIdx.x; i <= last; i += BlockThreads) {
    const std::uint32_t s = segment_of(p.offsets, p.num_segments, i);
    if (s >= p.num_segments || state.remaining[s] == 0) continue;
    const std::uint32_t key = descending_key(p.scores[i]);
    if ((key & mask) == (state.prefix[s] & mask))
      atomicAdd(&state.histogram[static_cast<std::size_t>(s) * select_bins + ((key >> shift) & (select_bins - 1))], 1u);
  }
}

//! Per segment: the digit holding the remaining-th matching key becomes part of the prefix, and
//! remaining becomes the rank inside that digit's bucket.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    select_digit_kernel(std::uint32_t num_segments, select_state state, int shift) {
  const std::uint32_t s = blockIdx.x * BlockThreads + threadIdx.x;
  if (s >= num_segments) return;
  const std::uint32_t rank = state.remaining[s];
  if (rank == 0) return;
  const std::uint32_t* bins = state.histogram + static_cast<std::size_t>(s) * select_bins;
  std::uint32_t before = 0;
  for (std::uint32_t digit = 0; digit < select_bins; ++digit) {
    const std::uint32_t here = bins[digit];
    if (before + here >= rank) {
      state.prefix[s] |= digit << shift;
      state.remaining[s] = rank - before;
      return;
    }
    before += here;
  }
}

//! Gathers every entry whose key is at or before its segment's k-th key (all of a segment that
//! keeps everything) into the segment's own range of the survivor arrays: slot offsets[s] + c for
//! the c-th survivor found. With `PositionKeys` the key is (score key << 32 | position in
//! segment), unique, so one sort orders the survivors exactly; otherwise the key is the position
//! (a deterministic start for the id and score passes that follow).
template <bool PositionKeys, int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    select_gather_kernel(top_k_params p, select_state state, std::uint64_t* keys, std::uint32_t* values) {
  const std::uint32_t i = blockIdx.x * BlockThreads + threadIdx.x;
  if (i >= p.n) return;
  const std::uint32_t s = segment_of(p.offsets, p.num_segments, i);
  if (s >= p.num_segments) return;
  const std::uint32_t key = descending_key(p.scores[i]);
  const std::uint32_t threshold = state.remaining[s] == 0 ? 0xffffffffu : state.prefix[s];
  if (key > threshold) return;
  const std::uint32_t begin = static_cast<std::uint32_t>(p.offsets[s]);
  const std::uint32_t slot = begin + atomicAdd(&state.count[s], 1u);
  keys[slot] = PositionKeys ? (static_cast<std::uint64_t>(key) << 32) | (i - begin) : (i - begin);
  values[slot] = i;
}

//! ends[s] = offsets[s] + survivors of s: the segments the survivor sorts see.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    select_ends_kernel(top_k_params p, select_state state, std::int32_t* ends) {
  const std::uint32_t s = blockIdx.x * BlockThreads + threadIdx.x;
  if (s < p.num_segments) ends[s] = p.offsets[s] + static_cast<std::int32_t>(state.count[s]);
}

//! Re-keys the survivors (in slot order, by their carried positions) for the next stable pass:
//! the 64-bit id key (IdPass) or the 32-bit score key. Slots outside every survivor range are
//! left alone (the segmented sorts never read them).
template <bool IdPass, int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    survivor_keys_kernel(top_k_params p, const std::int32_t* ends, const std::uint32_t* values, std::uint64_t* keys64,
                         std::uint32_t* keys32) {
  const std::uint32_t j = blockIdx.x * BlockThreads + threadIdx.x;
  if (j >= p.n) return;
  const std::uint32_t s = segment_of(p.offsets, p.num_segments, j);
  if (s >= p.num_segments || static_cast<std::int64_t>(j) >= ends[s]) return;
  const std::uint32_t position = values[j];
  if (position >= p.n) return;  // unreachable: survivors carry valid positions
  if constexpr (IdPass) keys64[j] = ascending_id_key(id_at(p, position));
  else keys32[j] = descending_key(p.scores[position]);
}

// ---- Gumbel-top-k sampling keys ----

//! What a softmax_sample call adds to top_k_params.
struct sampling_params {
  const std::uint64_t* request_keys = nullptr;  // one per segment; nullptr: the segment index
  std::uint64_t seed = 0;
  float temperature = 0.0f;  // 0: the score itself (plain top-k)
};
static_assert(std::is_trivially_copyable_v<sampling_params>);

//! 64-bit radix keys of math::sampling_key (ascending key = descending sampling key, NaN last)
//! for the positions in `positions` (nullable: identity; after the id pass: id order). The id of
//! an entry is its explicit id or its position in its segment, as top_k's. Positions outside
//! every segment get the largest key (the segmented sort never reads them anyway).
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    sampling_keys_kernel(top_k_params p, sampling_params s, const std::uint32_t* positions, std::uint64_t* keys,
                         std::uint32_t* values) {
  const std::uint32_t j = blockIdx.x * BlockThreads + threadIdx.x;
  if (j >= p.n) return;
  std::uint32_t position = positions != nullptr ? positions[j] : j;
  if (position >= p.n) position = j;  // segmented sorts leave gaps between segments unwritten
  values[j] = position;
  const std::uint32_t segment = segment_of(p.offsets, p.num_segments, position);
  if (segment >= p.num_segments) {
    keys[j] = ~std::uint64_t{0};
    return;
  }
  const id_type id = p.ids != nullptr ? id_at(p, position)
                                      : static_cast<id_type>(position - static_cast<std::uint32_t>(p.offsets[segment]));
  const std::uint64_t request_key = s.request_keys != nullptr ? s.request_keys[segment] : segment;
  const std::uint64_t stream = math::sampling_stream(s.seed, request_key);
  keys[j] = math::descending_key(math::sampling_key(p.scores[position], s.temperature, stream, id));
}

}  // namespace kernels
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
