// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA kernels behind the device stages that select candidates (top_k, softmax_sample,
// filter_seen, exact retrieval): turning selections into flat positions ("picks") that
// column_residency gathers every per-candidate column by.
#pragma once

#include <recpipe/cuda/detail/config.cuh>

#include <cub/block/block_scan.cuh>

#include <cstddef>
#include <cstdint>

#include <recpipe/core/types.hpp>
#include <recpipe/math/topk.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace kernels {

//! Slot j < kept(r) of request r's top-k (or sample) output becomes the flat candidate position it
//! came from: the (m+1)-th position of the request's segment holding the slot's id with an equal
//! sort key, where m counts the earlier slots of the request with the same id and key (equal keys
//! of one id rank by position on every backend, so this is the position the selection took).
//! kept(r) = min(k, segment size); picks[new_offsets[r] + j]. One thread per slot.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    slots_to_picks_kernel(const float* scores, const id_type* ids, const std::int64_t* offsets, std::uint32_t requests,
                          std::uint32_t k, const id_type* slot_ids, const float* slot_scores,
                          const std::int64_t* new_offsets, std::int64_t* picks) {
  const std::uint64_t slot = static_cast<std::uint64_t>(blockIdx.x) * BlockThreads + threadIdx.x;
  if (slot >= static_cast<std::uint64_t>(requests) * k) return;
  const std::uint64_t r = slot / k, j = slot % k;
  const std::int64_t begin = offsets[r], end = offsets[r + 1];
  if (static_cast<std::int64_t>(j) >= new_offsets[r + 1] - new_offsets[r]) return;
  const id_type id = slot_ids[slot];
  const std::uint32_t key = math::descending_key(slot_scores[slot]);
  std::uint32_t earlier = 0;
  for (std::uint64_t e = slot - j; e < slot; ++e)
    earlier += (slot_ids[e] == id && math::descending_key(slot_scores[e]) == key) ? 1u : 0u;
  std::int64_t found = begin;  // a fallback that keeps the gather in bounds; not reached for valid slots
  for (std::int64_t at = begin; at < end; ++at)
    if (ids[at] == id && math::descending_key(scores[at]) == key) {
      if (earlier == 0) {
        found = at;
        break;
      }
      --earlier;
    }
  picks[new_offsets[r] + static_cast<std::int64_t>(j)] = found;
}

//! filter_seen, pass 1: one block per request. Each candidate is kept when its id is not in the
//! request's history row (a linear scan: histories are short; sorted rows would allow a binary
//! search); a block-wide scan (cub::BlockScan) numbers the kept ones in order, and their flat
//! positions go to sparse_picks[offsets[r] + rank]; kept[r] is the request's count.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    unseen_compact_kernel(const id_type* candidates, const std::int64_t* candidate_offsets, const id_type* history,
                          const std::int64_t* history_offsets, std::int64_t* sparse_picks, std::int64_t* kept) {
  using scan = cub::BlockScan<std::uint32_t, BlockThreads>;
  __shared__ typename scan::TempStorage temp;
  const std::uint32_t r = blockIdx.x;
  const std::int64_t begin = candidate_offsets[r], end = candidate_offsets[r + 1];
  const std::int64_t seen_begin = history_offsets[r], seen_end = history_offsets[r + 1];
  std::int64_t written = 0;
  for (std::int64_t tile = begin; tile < end; tile += BlockThreads) {
    const std::int64_t c = tile + threadIdx.x;
    std::uint32_t keep = 0;
    if (c < end) {
      const id_type id = candidates[c];
      bool seen = false;
      for (std::int64_t h = seen_begin; h < seen_end && !seen; ++h) seen = history[h] == id;
      keep = seen ? 0u : 1u;
    }
    std::uint32_t rank = 0, tile_kept = 0;
    scan(temp).ExclusiveSum(keep, rank, tile_kept);
    if (keep) sparse_picks[begin + written + rank] = c;
    written += tile_kept;
    __syncthreads();  // temp is reused by the next tile's scan
  }
  if (threadIdx.x == 0) kept[r] = written;
}

//! filter_seen, pass 2: request r's kept positions move from their old range to new_offsets[r].
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    pack_picks_kernel(const std::int64_t* sparse_picks, const std::int64_t* candidate_offsets,
                      const std::int64_t* new_offsets, std::int64_t* picks) {
  const std::uint32_t r = blockIdx.x;
  const std::int64_t from = candidate_offsets[r], to = new_offsets[r], count = new_offsets[r + 1] - new_offsets[r];
  for (std::int64_t j = threadIdx.x; j < count; j += BlockThreads) picks[to + j] = sparse_picks[from + j];
}

//! finite[r] = 1 when every value of row r is finite (the CPU retrieve gives a non-finite query no
//! candidates).
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    finite_rows_kernel(const float* rows, std::uint32_t count, std::uint32_t cols, std::uint8_t* finite) {
  const std::uint32_t r = blockIdx.x * BlockThreads + threadIdx.x;
  if (r >= count) return;
  std::uint8_t ok = 1;
  for (std::uint32_t c = 0; c < cols; ++c) ok = ok && isfinite(rows[static_cast<std::uint64_t>(r) * cols + c]);
  finite[r] = ok;
}

}  // namespace kernels
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
