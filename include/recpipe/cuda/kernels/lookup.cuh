// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA kernels behind cuda::device_feature_table: each key is looked up in the table's
// sorted device ids (cuda::sorted_find, the function the CPU test checks) and its row, or zeros,
// is copied into the output; misses are flagged and, on request, counted.
#pragma once

#include <recpipe/cuda/detail/config.cuh>

#include <cstddef>
#include <cstdint>

#include <recpipe/core/types.hpp>
#include <recpipe/cuda/feature_table_host.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN

namespace kernels {

//! `lanes` threads per key (cuda::lookup_lanes(dim): a power of two, at most 32, so a key's lanes
//! sit in one warp and read the same ids while searching, which the hardware broadcasts). The row
//! of key i goes to out[i * dim, (i + 1) * dim): the table's row, or zeros when the key is absent.
//! flags (optional): 1 for an absent key, else 0. misses (optional): counted, and the smallest
//! position of an absent key kept by atomicMin.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    lookup_rows_kernel(const id_type* keys, std::uint64_t key_count, const id_type* ids, std::uint64_t id_count,
                       const float* rows, std::uint32_t dim, std::uint32_t lanes, float* out, std::uint8_t* flags,
                       lookup_misses* misses) {
  const std::uint64_t thread = static_cast<std::uint64_t>(blockIdx.x) * BlockThreads + threadIdx.x;
  const std::uint64_t key = thread / lanes;
  const std::uint32_t lane = static_cast<std::uint32_t>(thread % lanes);
  if (key >= key_count) return;
  const std::int64_t at = sorted_find(ids, static_cast<std::size_t>(id_count), keys[key]);
  float* destination = out + key * dim;
  if (at >= 0) {
    const float* source = rows + static_cast<std::uint64_t>(at) * dim;
    for (std::uint32_t c = lane; c < dim; c += lanes) destination[c] = source[c];
  } else {
    for (std::uint32_t c = lane; c < dim; c += lanes) destination[c] = 0.0f;
  }
  if (lane != 0) return;
  if (flags != nullptr) flags[key] = at < 0 ? 1 : 0;
  if (misses != nullptr && at < 0) {
    atomicAdd(&misses->count, 1ull);
    atomicMin(&misses->first, static_cast<unsigned long long>(key));
  }
}

//! One thread: the id at the first missing position, so that the host learns it with the counts
//! in one copy.
template <class Id>
__global__ void first_missing_id_kernel(const Id* keys, lookup_misses* misses) {
  if (misses->count > 0) misses->first_id = keys[misses->first];
}

}  // namespace kernels
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
