// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA dispatch for embedding-bag pooling: vector width, lane grouping, launch.
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/dispatch/offsets.cuh>
#include <recpipe/cuda/kernels/embedding_bag.cuh>

#include <cuda_runtime_api.h>

#include <bit>
#include <cstdint>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace dispatch {

namespace bag_detail {
// Two rows of 4 register chunks per lane cover dim <= 512 (Vec 4) in one pass over the ids;
// four rows in flight per lane group was the sweet spot for latency hiding on Hopper-class HBM.
inline constexpr int chunks = 4;
inline constexpr int unroll = 4;

template <int Vec>
cudaError_t launch(kernels::embedding_bag_params p, cudaStream_t stream) noexcept {
  // Enough lanes for one slice each (up to a warp), so small rows share the warp.
  const std::uint32_t slices = (p.dim + Vec - 1) / Vec;
  p.lanes_per_row = slices >= 32 ? 32u : std::bit_ceil(slices == 0 ? 1u : slices);
  constexpr int warps_per_block = block_threads / 32;
  kernels::embedding_bag_kernel<Vec, chunks, unroll, block_threads>
      <<<blocks_for(p.batch, warps_per_block), block_threads, 0, stream>>>(p);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}

inline bool aligned(const void* pointer, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(pointer) % bytes == 0;
}
}  // namespace bag_detail

//! Queues the pooling; never throws or synchronises. `p` was validated by the public entry.
inline cudaError_t embedding_bag(const cuda_backend& backend, const kernels::embedding_bag_params& p) noexcept {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  const cudaStream_t stream = backend.stream();
  // The widest vector load every row start and every output row start allows.
  const auto fits = [&](std::uint32_t vec) {
    return p.dim % vec == 0 && p.table_stride % vec == 0 && p.out_stride % vec == 0 &&
           bag_detail::aligned(p.table, vec * sizeof(float)) && bag_detail::aligned(p.out, vec * sizeof(float));
  };
  if (fits(4)) return bag_detail::launch<4>(p, stream);
  if (fits(2)) return bag_detail::launch<2>(p, stream);
  return bag_detail::launch<1>(p, stream);
}

//! Queues the multi-table pooling (at most max_tables_per_launch tables; the entry splits).
inline cudaError_t embedding_bags(const cuda_backend& backend, const kernels::multi_bag_params& p) noexcept {
  if (p.batch == 0 || p.num_tables == 0) return cudaSuccess;
  const cudaStream_t stream = backend.stream();
  constexpr int warps_per_block = block_threads / 32;
  const std::size_t warps = static_cast<std::size_t>(p.batch) * p.num_tables;
  kernels::multi_table_bag_kernel<4, block_threads><<<blocks_for(warps, warps_per_block), block_threads, 0, stream>>>(p);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}

}  // namespace dispatch
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
