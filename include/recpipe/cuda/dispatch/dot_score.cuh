// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA dispatch for dot-product candidate scoring: lane-group size, offsets, launch.
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/detail/scratch.cuh>
#include <recpipe/cuda/dispatch/offsets.cuh>
#include <recpipe/cuda/kernels/dot_score.cuh>

#include <cuda_runtime_api.h>

#include <cstdint>

#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace dispatch {

namespace dot_detail {
template <int GroupLanes>
cudaError_t launch(kernels::dot_score_params p, cudaStream_t stream) noexcept {
  p.chunk = (p.dim + GroupLanes - 1) / GroupLanes;
  constexpr int candidates_per_block = block_threads / GroupLanes;
  kernels::dot_score_kernel<GroupLanes, block_threads>
      <<<blocks_for(p.num_candidates, candidates_per_block), block_threads, 0, stream>>>(p);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}
}  // namespace dot_detail

//! Queues the scoring; never throws or synchronises. Arguments were validated by the entry;
//! `offsets` are the caller's (unchecked) device offsets.
inline cudaError_t dot_scores(const cuda_backend& backend, kernels::dot_score_params p,
                              const std::int64_t* offsets) noexcept {
  if (p.num_candidates == 0) return cudaSuccess;
  cuda::detail::scratch scratch(backend);
  std::int32_t* sanitized = nullptr;
  RECPIPE_CUDA_RETURN_IF_ERROR(
      sanitize_offsets(backend, scratch, offsets, p.num_requests + 1, p.num_candidates, &sanitized));
  p.offsets = sanitized;
  // About four columns per lane: a 16-byte slice per lane keeps a group's row read coalesced
  // while short rows (dim 32-64) still fill a warp with 2-4 candidates.
  const std::uint32_t quads = (p.dim + 3) / 4;
  if (quads >= 32) return dot_detail::launch<32>(p, backend.stream());
  if (quads >= 16) return dot_detail::launch<16>(p, backend.stream());
  if (quads >= 8) return dot_detail::launch<8>(p, backend.stream());
  if (quads >= 4) return dot_detail::launch<4>(p, backend.stream());
  return dot_detail::launch<2>(p, backend.stream());
}

}  // namespace dispatch
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
