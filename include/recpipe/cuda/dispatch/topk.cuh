// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA dispatch for top-k: picks the sort strategy, sizes CUB temp storage, launches.
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/detail/scratch.cuh>
#include <recpipe/cuda/dispatch/offsets.cuh>
#include <recpipe/cuda/kernels/topk.cuh>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>
#include <cub/version.cuh>
#if CUB_VERSION >= 300300 && !defined(RECPIPE_CUDA_NO_DEVICE_TOPK)
#define RECPIPE_CUDA_HAS_DEVICE_TOPK 1
#include <cub/device/device_topk.cuh>
#include <cuda/__execution/determinism.h>
#include <cuda/__execution/output_ordering.h>
#include <cuda/__execution/require.h>
#include <cuda/stream_ref>
#endif

#include <cuda_runtime_api.h>

#include <bit>
#include <cstddef>
#include <cstdint>

#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN

//! How cuda::top_k sorts. Every choice gives the same, deterministic result.
enum class top_k_algorithm {
  automatic,             //!< segmented for many short segments, device-wide otherwise
  device_radix_sort,     //!< one cub::DeviceRadixSort over all segments, segment index in the high key bits
  segmented_radix_sort,  //!< cub::DeviceSegmentedRadixSort, one block per segment
  radix_select,          //!< 8-bit histogram passes find each segment's k-th key; only the survivors are sorted
};

namespace dispatch {

//! A validated top-k problem (the public entry checked every size; all fit 32 bits).
struct top_k_problem {
  const float* scores = nullptr;
  std::uint32_t n = 0;
  const id_type* ids = nullptr;
  std::uint32_t ids_period = 0;
  const std::int64_t* offsets = nullptr;  // nullptr: dense rows of `cols` scores
  std::uint32_t num_segments = 0;
  std::uint32_t cols = 0;
  std::uint32_t k = 0;
  id_type* out_ids = nullptr;
  float* out_scores = nullptr;
  top_k_algorithm algorithm = top_k_algorithm::automatic;
};

namespace topk_detail {
// Below this average segment length one CUB block per segment sorts in a few tiles and beats a
// device-wide sort that also has to sort the segment bits.
inline constexpr std::uint32_t segmented_max_average_length = 4096;

// Radix select pays off once a segment is long and k a small part of it.
inline constexpr std::uint32_t select_min_average_length = 4096;
inline constexpr std::uint32_t select_max_k_fraction = 16;  // k <= average length / 16
inline constexpr int select_items_per_thread = 16;

// AIR top-k's plan on the score keys: 4 histogram passes (8 bits each, most significant first)
// find each long segment's k-th key K; every entry with key <= K (all ties at K included) is
// gathered into its segment's range; only those survivors are radix sorted (by score key, then
// id, then position: the order cpu::top_k gives, ties at K resolved by id). Segments of at most k
// entries keep everything. A row of many entries tied at K sorts all of those ties (correct, but
// then as costly as a full sort).
inline cudaError_t radix_select(const cuda_backend& backend, cuda::detail::scratch& scratch,
                                const kernels::top_k_params& p) noexcept {
  const cudaStream_t stream = backend.stream();
  const std::uint32_t n = p.n, segments = p.num_segments;
  kernels::select_state state;
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&state.prefix, segments));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&state.remaining, segments));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&state.count, segments));
  RECPIPE_CUDA_RETURN_IF_ERROR(
      scratch.allocate(&state.histogram, static_cast<std::size_t>(segments) * kernels::select_bins));
  kernels::select_init_kernel<block_threads><<<blocks_for(segments), block_threads, 0, stream>>>(p, state);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  constexpr int items = select_items_per_thread;
  for (int shift = 32 - kernels::select_digit_bits; shift >= 0; shift -= kernels::select_digit_bits) {
    RECPIPE_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
        state.histogram, 0, static_cast<std::size_t>(segments) * kernels::select_bins * sizeof(std::uint32_t), stream));
    kernels::select_histogram_kernel<block_threads, items>
        <<<blocks_for(n, block_threads * items), block_threads, 0, stream>>>(p, state, shift);
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
    kernels::select_digit_kernel<block_threads>
        <<<blocks_for(segments), block_threads, 0, stream>>>(segments, state, shift);
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  }
  std::uint64_t *keys_a = nullptr, *keys_b = nullptr;
  std::uint32_t *values_a = nullptr, *values_b = nullptr;
  std::int32_t* ends = nullptr;
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&keys_a, n));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&keys_b, n));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&values_a, n));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&values_b, n));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&ends, segments));
  const bool explicit_ids = p.ids != nullptr;
  if (explicit_ids)
    kernels::select_gather_kernel<false, block_threads><<<blocks_for(n), block_threads, 0, stream>>>(p, state, keys_a, values_a);
  else
    kernels::select_gather_kernel<true, block_threads><<<blocks_for(n), block_threads, 0, stream>>>(p, state, keys_a, values_a);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  kernels::select_ends_kernel<block_threads><<<blocks_for(segments), block_threads, 0, stream>>>(p, state, ends);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  const auto sort64 = [&](const std::uint64_t* in_keys, std::uint64_t* out_keys, const std::uint32_t* in_values,
                          std::uint32_t* out_values, int end_bit) {
    return scratch.cub_call([&](void* storage, std::size_t& bytes) {
      return cub::DeviceSegmentedRadixSort::SortPairs(storage, bytes, in_keys, out_keys, in_values, out_values,
                                                      static_cast<int>(n), static_cast<int>(segments), p.offsets, ends,
                                                      0, end_bit, stream);
    });
  };
  if (!explicit_ids) {
    // (score key, position in segment): unique, so one pass gives the final order.
    RECPIPE_CUDA_RETURN_IF_ERROR(sort64(keys_a, keys_b, values_a, values_b, 64));
  } else {
    // Position first (undoes the gather's arbitrary order), then id, then score: stable LSD.
    RECPIPE_CUDA_RETURN_IF_ERROR(sort64(keys_a, keys_b, values_a, values_b, 32));
    kernels::survivor_keys_kernel<true, block_threads>
        <<<blocks_for(n), block_threads, 0, stream>>>(p, ends, values_b, keys_a, nullptr);
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
    RECPIPE_CUDA_RETURN_IF_ERROR(sort64(keys_a, keys_b, values_b, values_a, 64));
    std::uint32_t *score_a = nullptr, *score_b = nullptr;
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&score_a, n));
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&score_b, n));
    kernels::survivor_keys_kernel<false, block_threads>
        <<<blocks_for(n), block_threads, 0, stream>>>(p, ends, values_a, nullptr, score_a);
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.cub_call([&](void* storage, std::size_t& bytes) {
      return cub::DeviceSegmentedRadixSort::SortPairs(storage, bytes, score_a, score_b, values_a, values_b,
                                                      static_cast<int>(n), static_cast<int>(segments), p.offsets, ends,
                                                      0, 32, stream);
    }));
  }
  const std::size_t slots = static_cast<std::size_t>(segments) * p.k;
  kernels::gather_top_k_kernel<false, block_threads><<<blocks_for(slots), block_threads, 0, stream>>>(p, values_b);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}

#if defined(RECPIPE_CUDA_HAS_DEVICE_TOPK)
// One row, ids = positions: unique 64-bit keys (ascending score key, then ~position) make
// DeviceTopK's unordered selection deterministic; a radix sort of the k survivors orders them.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    unique_score_keys_kernel(const float* scores, std::uint32_t n, std::uint64_t* keys) {
  const std::uint32_t i = blockIdx.x * BlockThreads + threadIdx.x;
  if (i < n)
    keys[i] = (static_cast<std::uint64_t>(~kernels::descending_key(scores[i])) << 32) | static_cast<std::uint32_t>(~i);
}
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    decode_unique_keys_kernel(const float* scores, const std::uint64_t* sorted, std::uint32_t k, id_type* out_ids,
                              float* out_scores) {
  const std::uint32_t j = blockIdx.x * BlockThreads + threadIdx.x;
  if (j >= k) return;
  const std::uint32_t position = ~static_cast<std::uint32_t>(sorted[j]);
  out_ids[j] = static_cast<id_type>(position);
  out_scores[j] = scores[position];
}

inline cudaError_t device_topk_single_row(const cuda_backend& backend, const top_k_problem& p) noexcept {
  const cudaStream_t stream = backend.stream();
  cuda::detail::scratch scratch(backend);
  std::uint64_t *keys = nullptr, *selected = nullptr, *sorted = nullptr;
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&keys, p.n));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&selected, p.k));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&sorted, p.k));
  unique_score_keys_kernel<block_threads><<<blocks_for(p.n), block_threads, 0, stream>>>(p.scores, p.n, keys);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  const auto env = ::cuda::std::execution::env{
      ::cuda::stream_ref{stream},
      ::cuda::execution::require(::cuda::execution::determinism::not_guaranteed,
                                 ::cuda::execution::output_ordering::unsorted)};
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.cub_call([&](void* storage, std::size_t& bytes) {
    return cub::DeviceTopK::MaxKeys(storage, bytes, keys, selected, p.n, p.k, env);
  }));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.cub_call([&](void* storage, std::size_t& bytes) {
    return cub::DeviceRadixSort::SortKeysDescending(storage, bytes, selected, sorted, p.k, 0, 64, stream);
  }));
  decode_unique_keys_kernel<block_threads>
      <<<blocks_for(p.k), block_threads, 0, stream>>>(p.scores, sorted, p.k, p.out_ids, p.out_scores);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}
#endif
}  // namespace topk_detail

//! Queues the whole top-k on the backend's stream. Never throws, never synchronises.
inline cudaError_t top_k(const cuda_backend& backend, const top_k_problem& problem) noexcept {
  if (problem.num_segments == 0 || problem.k == 0) return cudaSuccess;
  const cudaStream_t stream = backend.stream();

#if defined(RECPIPE_CUDA_HAS_DEVICE_TOPK)
  if (problem.offsets == nullptr && problem.num_segments == 1 && problem.ids == nullptr &&
      problem.k < problem.n && problem.algorithm == top_k_algorithm::automatic)
    return topk_detail::device_topk_single_row(backend, problem);
#endif

  cuda::detail::scratch scratch(backend);
  kernels::top_k_params p;
  p.scores = problem.scores;
  p.ids = problem.ids;
  p.ids_period = problem.ids_period;
  p.n = problem.n;
  p.num_segments = problem.num_segments;
  p.k = problem.k;
  p.out_ids = problem.out_ids;
  p.out_scores = problem.out_scores;

  // 1. Sanitised offsets: clamp into [0, n], then a running maximum, so any input yields
  //    disjoint, ordered segments (a decreasing offset just makes a segment empty).
  std::int32_t* offsets = nullptr;
  const std::uint32_t offset_count = problem.num_segments + 1;
  if (problem.offsets != nullptr) {
    RECPIPE_CUDA_RETURN_IF_ERROR(sanitize_offsets(backend, scratch, problem.offsets, offset_count, problem.n, &offsets));
  } else {
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&offsets, offset_count));
    kernels::row_offsets_kernel<block_threads>
        <<<blocks_for(offset_count), block_threads, 0, stream>>>(offset_count, problem.cols, offsets);
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  }
  p.offsets = offsets;

  const std::size_t slots = static_cast<std::size_t>(problem.num_segments) * problem.k;
  if (problem.n == 0) {  // every segment is empty: only padding to write
    kernels::gather_top_k_kernel<false, block_threads><<<blocks_for(slots), block_threads, 0, stream>>>(p, nullptr);
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
    return cudaSuccess;
  }

  const std::uint32_t average = problem.n / problem.num_segments;
  if (problem.algorithm == top_k_algorithm::radix_select ||
      (problem.algorithm == top_k_algorithm::automatic && average >= topk_detail::select_min_average_length &&
       problem.k <= average / topk_detail::select_max_k_fraction))
    return topk_detail::radix_select(backend, scratch, p);

  bool segmented = problem.algorithm == top_k_algorithm::segmented_radix_sort;
  if (problem.algorithm == top_k_algorithm::automatic)
    segmented = problem.num_segments > 1 && problem.n / problem.num_segments <= topk_detail::segmented_max_average_length;

  const std::uint32_t n = problem.n;
  std::uint32_t *values_a = nullptr, *values_b = nullptr;
  std::uint64_t *keys_a = nullptr, *keys_b = nullptr;
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&values_a, n));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&values_b, n));
  const bool wide_keys = !segmented || problem.ids != nullptr;
  if (wide_keys) {
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&keys_a, n));
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&keys_b, n));
  }

  // 2. With explicit ids, a first stable pass orders every position by id, so that the score
  //    pass (also stable) leaves equal scores in id order. Without ids the positions already are
  //    in id order.
  const std::uint32_t* positions = nullptr;
  if (problem.ids != nullptr) {
    kernels::id_keys_kernel<block_threads><<<blocks_for(n), block_threads, 0, stream>>>(p, keys_a, values_a);
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
    if (segmented) {
      RECPIPE_CUDA_RETURN_IF_ERROR(scratch.cub_call([&](void* storage, std::size_t& bytes) {
        return cub::DeviceSegmentedRadixSort::SortPairs(storage, bytes, keys_a, keys_b, values_a, values_b,
                                                        static_cast<int>(n), static_cast<int>(problem.num_segments),
                                                        offsets, offsets + 1, 0, 64, stream);
      }));
    } else {
      RECPIPE_CUDA_RETURN_IF_ERROR(scratch.cub_call([&](void* storage, std::size_t& bytes) {
        return cub::DeviceRadixSort::SortPairs(storage, bytes, keys_a, keys_b, values_a, values_b, n, 0, 64, stream);
      }));
    }
    positions = values_b;
  }

  // 3. The score pass, then 4. the first min(k, length) entries of each segment.
  if (segmented) {
    std::uint32_t *score_keys_a = nullptr, *score_keys_b = nullptr;
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&score_keys_a, n));
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&score_keys_b, n));
    kernels::score_keys_kernel<false, block_threads>
        <<<blocks_for(n), block_threads, 0, stream>>>(p, positions, nullptr, score_keys_a, values_a);
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.cub_call([&](void* storage, std::size_t& bytes) {
      return cub::DeviceSegmentedRadixSort::SortPairs(storage, bytes, score_keys_a, score_keys_b, values_a, values_b,
                                                      static_cast<int>(n), static_cast<int>(problem.num_segments),
                                                      offsets, offsets + 1, 0, 32, stream);
    }));
    kernels::gather_top_k_kernel<false, block_threads><<<blocks_for(slots), block_threads, 0, stream>>>(p, values_b);
  } else {
    kernels::score_keys_kernel<true, block_threads>
        <<<blocks_for(n), block_threads, 0, stream>>>(p, positions, keys_a, nullptr, values_a);
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
    // Only the bits that can be set: 32 score bits plus enough for segment indices 0..S.
    const int end_bit = 32 + static_cast<int>(std::bit_width(problem.num_segments));
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.cub_call([&](void* storage, std::size_t& bytes) {
      return cub::DeviceRadixSort::SortPairs(storage, bytes, keys_a, keys_b, values_a, values_b, n, 0, end_bit, stream);
    }));
    kernels::gather_top_k_kernel<true, block_threads><<<blocks_for(slots), block_threads, 0, stream>>>(p, values_b);
  }
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}

//! Queues a Gumbel-top-k draw per segment: keys math::sampling_key (64-bit radix keys), ties by
//! id, then position. Stable segmented radix sorts: by id first (explicit ids only), then by key;
//! every candidate is sorted (no selection for 64-bit keys yet). Never throws or synchronises.
inline cudaError_t softmax_sample(const cuda_backend& backend, const top_k_problem& problem,
                                  const kernels::sampling_params& sampling) noexcept {
  if (problem.num_segments == 0 || problem.k == 0) return cudaSuccess;
  const cudaStream_t stream = backend.stream();
  cuda::detail::scratch scratch(backend);
  kernels::top_k_params p;
  p.scores = problem.scores;
  p.ids = problem.ids;
  p.ids_period = problem.ids_period;
  p.n = problem.n;
  p.num_segments = problem.num_segments;
  p.k = problem.k;
  p.out_ids = problem.out_ids;
  p.out_scores = problem.out_scores;
  std::int32_t* offsets = nullptr;
  RECPIPE_CUDA_RETURN_IF_ERROR(
      sanitize_offsets(backend, scratch, problem.offsets, problem.num_segments + 1, problem.n, &offsets));
  p.offsets = offsets;
  const std::size_t slots = static_cast<std::size_t>(problem.num_segments) * problem.k;
  if (problem.n == 0) {
    kernels::gather_top_k_kernel<false, block_threads><<<blocks_for(slots), block_threads, 0, stream>>>(p, nullptr);
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
    return cudaSuccess;
  }
  const std::uint32_t n = problem.n;
  std::uint64_t *keys_a = nullptr, *keys_b = nullptr;
  std::uint32_t *values_a = nullptr, *values_b = nullptr;
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&keys_a, n));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&keys_b, n));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&values_a, n));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&values_b, n));
  const auto sort = [&](const std::uint64_t* in_keys, const std::uint32_t* in_values) {
    return scratch.cub_call([&](void* storage, std::size_t& bytes) {
      return cub::DeviceSegmentedRadixSort::SortPairs(storage, bytes, in_keys, keys_b, in_values, values_b,
                                                      static_cast<int>(n), static_cast<int>(problem.num_segments),
                                                      offsets, offsets + 1, 0, 64, stream);
    });
  };
  const std::uint32_t* positions = nullptr;
  if (p.ids != nullptr) {
    kernels::id_keys_kernel<block_threads><<<blocks_for(n), block_threads, 0, stream>>>(p, keys_a, values_a);
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
    RECPIPE_CUDA_RETURN_IF_ERROR(sort(keys_a, values_a));
    positions = values_b;
  }
  // values_b may be `positions`: the key kernel reads it into values_a first.
  kernels::sampling_keys_kernel<block_threads>
      <<<blocks_for(n), block_threads, 0, stream>>>(p, sampling, positions, keys_a, values_a);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  RECPIPE_CUDA_RETURN_IF_ERROR(sort(keys_a, values_a));
  kernels::gather_top_k_kernel<false, block_threads><<<blocks_for(slots), block_threads, 0, stream>>>(p, values_b);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}

}  // namespace dispatch
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
