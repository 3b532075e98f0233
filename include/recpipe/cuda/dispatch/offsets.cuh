// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA dispatch: turn caller offsets (unchecked device data) into safe segment bounds.
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/detail/scratch.cuh>
#include <recpipe/cuda/kernels/offsets.cuh>

#include <cub/device/device_scan.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace dispatch {

inline constexpr int block_threads = 256;
inline unsigned blocks_for(std::size_t items, int per_block = block_threads) {
  return static_cast<unsigned>((items + static_cast<std::size_t>(per_block) - 1) / static_cast<std::size_t>(per_block));
}

struct max_op {
  __host__ __device__ std::int32_t operator()(std::int32_t a, std::int32_t b) const { return a > b ? a : b; }
};

//! Writes `count` sanitised offsets into `out` (from `scratch`): each input clamped into [0, n],
//! then replaced by the running maximum. The host cannot read device offsets without a sync, so
//! instead every value gets a defined meaning: disjoint, ordered segments, a decreasing offset
//! giving empty ones.
inline cudaError_t sanitize_offsets(const cuda_backend& backend, cuda::detail::scratch& scratch,
                                    const std::int64_t* offsets, std::uint32_t count, std::uint32_t n,
                                    std::int32_t** out) noexcept {
  const cudaStream_t stream = backend.stream();
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(out, count));
  std::int32_t* sanitized = *out;
  kernels::clamp_offsets_kernel<block_threads>
      <<<blocks_for(count), block_threads, 0, stream>>>(offsets, count, n, sanitized);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return scratch.cub_call([&](void* storage, std::size_t& bytes) {
    return cub::DeviceScan::InclusiveScan(storage, bytes, sanitized, sanitized, max_op{}, static_cast<int>(count),
                                          stream);
  });
}

}  // namespace dispatch
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
