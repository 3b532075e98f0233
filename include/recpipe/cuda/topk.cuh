// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: batched top-k per segment or per row, ordered exactly like cpu::top_k.
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/detail/checks.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/dispatch/topk.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <limits>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN

namespace checks {
inline void check_top_k_common(const char* where, std::size_t n, std::size_t ids, std::size_t segments, std::size_t k,
                               std::size_t out_ids, std::size_t out_scores) {
  constexpr std::size_t int_max = static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max());
  if (n > int_max) ::recpipe::detail::fail(where, ": scores has ", n, " entries; at most ", int_max, " are supported");
  if (segments >= int_max) ::recpipe::detail::fail(where, ": ", segments, " segments; at most ", int_max - 1, " are supported");
  if (k > int_max) ::recpipe::detail::fail(where, ": k = ", k, " is larger than the supported ", int_max);
  // 256 slots per block and a grid of at most 2^31 - 1 blocks.
  if (segments != 0 && k > (int_max * std::size_t{256}) / segments)
    ::recpipe::detail::fail(where, ": ", segments, " segments x k = ", k, " results overflow the supported output size");
  const std::size_t slots = segments * k;
  if (out_ids < slots || out_scores < slots)
    ::recpipe::detail::fail(where, ": out_ids holds ", out_ids, " and out_scores ", out_scores, " entries but ", segments,
                            " segments x k = ", k, " need ", slots);
  (void)ids;
}
}  // namespace checks

//! @brief The k best entries of every segment of `scores`, each sorted by score descending, NaN
//! last, then id ascending: exactly what cpu::top_k returns for the segment, slot by slot.
//!
//! Segment s is scores[offsets[s], offsets[s+1]). Offsets that are not non-decreasing values in
//! [0, n] are made so on the device (each is clamped into [0, n], then replaced by the running
//! maximum), so any offsets give disjoint segments and a memory-safe, documented result; a
//! decreasing offset yields empty segments.
//!
//! Segment s writes out_ids/out_scores[s*k, s*k + k): its min(k, length) best entries, then
//! id -1 and score NaN in the unused slots (like FAISS/hnswlib's "no result").
//!
//! @param backend     stream and memory pool; the call only enqueues work on its stream.
//! @param scores      n device scores (n < 2^31).
//! @param ids         empty (the id of an entry is its position in its segment, as cpu::top_k
//!                    with empty ids) or n device ids; any int64 value orders correctly.
//! @param offsets     num_segments + 1 device offsets (at least one entry).
//! @param k           results per segment; k == 0 does nothing; k larger than a segment pads.
//! @param out_ids     at least num_segments * k device ids.
//! @param out_scores  at least num_segments * k device scores.
//! @param algorithm   sort strategy (every choice gives identical results).
//! @return the first CUDA error of the enqueued work (asynchronous faults show up at the next
//!         synchronisation, e.g. cuda_backend::synchronize()).
//! @throws recpipe::error on a size mismatch or null data, before touching the device.
//!
//! Complexity: one or two stable radix sorts of n (key, position) pairs (the second only with
//! explicit ids), O(n) temporary device memory from the backend's pool. With CCCL >= 3.3 a
//! single dense row without ids uses cub::DeviceTopK instead (see top_k_rows).
//! @code
//! recpipe::cuda::cuda_backend backend;
//! // two candidate lists of 3 and 2 items, best 2 of each
//! auto d_scores = recpipe::cuda::to_device(backend, std::span<const float>(scores));    // 5 scores
//! auto d_offsets = recpipe::cuda::to_device(backend, std::span<const std::int64_t>(offsets)); // {0, 3, 5}
//! recpipe::cuda::device_buffer<recpipe::id_type> d_ids(backend, 4);
//! recpipe::cuda::device_buffer<float> d_best(backend, 4);
//! RECPIPE_CUDA_TRY(recpipe::cuda::top_k(backend, d_scores.const_span(), {}, d_offsets.const_span(), 2,
//!                                       d_ids.span(), d_best.span()));
//! std::vector<recpipe::id_type> ids = recpipe::cuda::to_host(backend, d_ids.const_span());
//! @endcode
inline cudaError_t top_k(const cuda_backend& backend, device_span<const float> scores, device_span<const id_type> ids,
                         device_span<const std::int64_t> offsets, std::size_t k, device_span<id_type> out_ids,
                         device_span<float> out_scores, top_k_algorithm algorithm = top_k_algorithm::automatic) {
  constexpr const char* where = "cuda::top_k";
  cuda::detail::check_device_span(where, "scores", scores);
  cuda::detail::check_device_span(where, "ids", ids);
  cuda::detail::check_device_span(where, "offsets", offsets);
  cuda::detail::check_device_span(where, "out_ids", out_ids);
  cuda::detail::check_device_span(where, "out_scores", out_scores);
  if (!ids.empty() && ids.size() != scores.size())
    ::recpipe::detail::fail(where, ": ids has ", ids.size(), " entries but scores has ", scores.size(),
                            " (ids must be empty or match)");
  if (offsets.empty())
    ::recpipe::detail::fail(where, ": offsets is empty; it needs num_segments + 1 entries (at least 1)");
  const std::size_t segments = offsets.size() - 1;
  checks::check_top_k_common(where, scores.size(), ids.size(), segments, k, out_ids.size(), out_scores.size());
  dispatch::top_k_problem problem;
  problem.scores = scores.data();
  problem.n = static_cast<std::uint32_t>(scores.size());
  problem.ids = ids.empty() ? nullptr : ids.data();
  problem.offsets = offsets.data();
  problem.num_segments = static_cast<std::uint32_t>(segments);
  problem.k = static_cast<std::uint32_t>(k);
  problem.out_ids = out_ids.data();
  problem.out_scores = out_scores.data();
  problem.algorithm = algorithm;
  return dispatch::top_k(backend, problem);
}

//! @brief Top-k of every row of a dense, row-major [rows, cols] device score matrix (e.g. a
//! batch of requests scored against the same item set), ordered like cpu::top_k per row.
//!
//! @param scores  rows * cols device scores, row-major, no padding.
//! @param ids     empty (ids are column indices) or cols device ids shared by every row.
//! @param out_ids, out_scores  at least rows * k entries; row r fills [r*k, r*k + k), padded with
//!                id -1 / score NaN when k > cols.
//! @return / @throws as top_k.
//!
//! With CCCL >= 3.3 (CUB_VERSION >= 300300), a single row without ids uses cub::DeviceTopK on
//! unique (score, position) keys, then sorts the k winners; older CCCL (CUDA 13.0 ships 3.0.1)
//! always sorts.
//! @code
//! // 64 requests x 100000 items, best 100 per request
//! RECPIPE_CUDA_TRY(recpipe::cuda::top_k_rows(backend, d_scores.const_span(), 64, 100000, d_item_ids.const_span(),
//!                                            100, d_ids.span(), d_best.span()));
//! @endcode
inline cudaError_t top_k_rows(const cuda_backend& backend, device_span<const float> scores, std::size_t rows,
                              std::size_t cols, device_span<const id_type> ids, std::size_t k,
                              device_span<id_type> out_ids, device_span<float> out_scores,
                              top_k_algorithm algorithm = top_k_algorithm::automatic) {
  constexpr const char* where = "cuda::top_k_rows";
  cuda::detail::check_device_span(where, "scores", scores);
  cuda::detail::check_device_span(where, "ids", ids);
  cuda::detail::check_device_span(where, "out_ids", out_ids);
  cuda::detail::check_device_span(where, "out_scores", out_scores);
  if (cols != 0 && rows > std::numeric_limits<std::size_t>::max() / cols)
    ::recpipe::detail::fail(where, ": rows = ", rows, " x cols = ", cols, " overflows");
  if (scores.size() != rows * cols)
    ::recpipe::detail::fail(where, ": scores has ", scores.size(), " entries but rows = ", rows, " x cols = ", cols,
                            " needs ", rows * cols);
  if (!ids.empty() && ids.size() != cols)
    ::recpipe::detail::fail(where, ": ids has ", ids.size(), " entries but there are ", cols,
                            " columns (ids must be empty or one per column)");
  checks::check_top_k_common(where, scores.size(), ids.size(), rows, k, out_ids.size(), out_scores.size());
  dispatch::top_k_problem problem;
  problem.scores = scores.data();
  problem.n = static_cast<std::uint32_t>(scores.size());
  problem.ids = ids.empty() ? nullptr : ids.data();
  problem.ids_period = static_cast<std::uint32_t>(cols);
  problem.num_segments = static_cast<std::uint32_t>(rows);
  problem.cols = static_cast<std::uint32_t>(cols);
  problem.k = static_cast<std::uint32_t>(k);
  problem.out_ids = out_ids.data();
  problem.out_scores = out_scores.data();
  problem.algorithm = algorithm;
  return dispatch::top_k(backend, problem);
}

RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
