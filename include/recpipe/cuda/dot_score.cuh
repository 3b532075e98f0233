// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: dot-product scores of ragged candidate lists against per-request queries.
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/detail/checks.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/dispatch/dot_score.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <limits>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN

//! @brief out[c] = <queries[request(c)], items[candidates[c]]> for ragged candidate lists:
//! request r owns candidates [offsets[r], offsets[r+1]).
//!
//! Each lane runs math::dot, the functor the CPU backend uses, on a slice of the row, and the
//! slices are added with shuffles, so results match a CPU math::dot up to summation order.
//! Device data the host cannot check gets a defined result: offsets are clamped into
//! [0, candidates.size()] and made non-decreasing (running maximum); a candidate outside every
//! request, or whose item id is outside [0, items.rows()), scores NaN (and so sorts last in top_k).
//!
//! @param queries     [num_requests, dim] device matrix, any stride >= dim.
//! @param items       [num_items, dim] device matrix, any stride >= dim.
//! @param candidates  device item ids (rows of `items`), grouped by request.
//! @param offsets     num_requests + 1 device offsets into candidates.
//! @param out         candidates.size() device scores.
//! @return the launch's cudaError_t; never synchronises.
//! @throws recpipe::error on dimension or size mismatches or null data, before touching the device.
//! @code
//! // 2 requests with 3 and 2 candidates
//! RECPIPE_CUDA_TRY(recpipe::cuda::dot_scores(backend, recpipe::matrix_view<const float>(d_q.data(), 2, 64),
//!     recpipe::matrix_view<const float>(d_items.data(), num_items, 64), d_candidates.const_span(),
//!     d_offsets.const_span(), d_scores.span()));   // offsets {0, 3, 5}
//! @endcode
inline cudaError_t dot_scores(const cuda_backend& backend, matrix_view<const float> queries,
                              matrix_view<const float> items, device_span<const id_type> candidates,
                              device_span<const std::int64_t> offsets, device_span<float> out) {
  constexpr const char* where = "cuda::dot_scores";
  cuda::detail::check_device_matrix(where, "queries", queries);
  cuda::detail::check_device_matrix(where, "items", items);
  cuda::detail::check_device_span(where, "candidates", candidates);
  cuda::detail::check_device_span(where, "offsets", offsets);
  cuda::detail::check_device_span(where, "out", out);
  constexpr std::size_t int_max = static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max());
  if (queries.cols() != items.cols())
    ::recpipe::detail::fail(where, ": queries have dimension ", queries.cols(), " but items have ", items.cols());
  if (queries.cols() > int_max) ::recpipe::detail::fail(where, ": dimension ", queries.cols(), " is larger than ", int_max);
  if (queries.rows() >= int_max)
    ::recpipe::detail::fail(where, ": ", queries.rows(), " requests; at most ", int_max - 1, " are supported");
  if (candidates.size() > int_max)
    ::recpipe::detail::fail(where, ": ", candidates.size(), " candidates; at most ", int_max, " are supported");
  if (offsets.size() != queries.rows() + 1)
    ::recpipe::detail::fail(where, ": offsets has ", offsets.size(), " entries for ", queries.rows(),
                            " requests (need ", queries.rows() + 1, ")");
  if (out.size() != candidates.size())
    ::recpipe::detail::fail(where, ": out has ", out.size(), " entries for ", candidates.size(), " candidates");
  kernels::dot_score_params p;
  p.queries = queries.data();
  p.query_stride = queries.rows() > 1 ? queries.stride() : queries.cols();
  p.num_requests = static_cast<std::uint32_t>(queries.rows());
  p.items = items.data();
  p.item_stride = items.rows() > 1 ? items.stride() : items.cols();
  p.num_items = items.rows();
  p.dim = static_cast<std::uint32_t>(queries.cols());
  p.candidates = candidates.data();
  p.num_candidates = static_cast<std::uint32_t>(candidates.size());
  p.out = out.data();
  return dispatch::dot_scores(backend, p, offsets.data());
}

RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
