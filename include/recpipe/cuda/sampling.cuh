// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: softmax sampling without replacement (Gumbel top-k) per segment.
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/detail/checks.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/dispatch/topk.cuh>
#include <recpipe/cuda/topk.cuh>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN

//! @brief The softmax_sample stage on the GPU: per segment (request), k candidates drawn without
//! replacement with probabilities softmax(scores / temperature), as the k largest
//! math::sampling_key(score, temperature, math::sampling_stream(seed, request key), id), ties by
//! smaller id: the CPU stage's rule, so both backends draw the same items for the same seed (up
//! to the last ulp of the device's double log, which can only swap keys equal to ~1e-15).
//! temperature 0 is a plain top-k (the same order as top_k).
//!
//! Segments, ids, padding (-1 / NaN) and the offset rules are those of top_k; out_scores gets the
//! drawn candidates' scores (not their keys). NaN scores rank last and -inf after every finite
//! key, as in the CPU stage (which keeps them; cpu::sample_without_replacement drops them).
//! @param request_keys empty (request key = segment index, the CPU stage without request_seed /
//!        user_id columns) or one device key per segment (the request_seed or user id).
//! @param temperature finite and >= 0.
//! @return / @throws as top_k (and for a bad temperature or request_keys size).
//! Complexity: stable segmented radix sorts of all n (64-bit key, position) pairs, two with
//! explicit ids (no radix selection for the 64-bit sampling keys yet).
//! @code
//! RECPIPE_CUDA_TRY(recpipe::cuda::softmax_sample(backend, d_scores, d_ids, d_offsets, {}, 10, 0.7f, 42,
//!                                                d_out_ids.span(), d_out_scores.span()));
//! @endcode
inline cudaError_t softmax_sample(const cuda_backend& backend, device_span<const float> scores,
                                  device_span<const id_type> ids, device_span<const std::int64_t> offsets,
                                  device_span<const std::uint64_t> request_keys, std::size_t k, float temperature,
                                  std::uint64_t seed, device_span<id_type> out_ids, device_span<float> out_scores) {
  constexpr const char* where = "cuda::softmax_sample";
  cuda::detail::check_device_span(where, "scores", scores);
  cuda::detail::check_device_span(where, "ids", ids);
  cuda::detail::check_device_span(where, "offsets", offsets);
  cuda::detail::check_device_span(where, "request_keys", request_keys);
  cuda::detail::check_device_span(where, "out_ids", out_ids);
  cuda::detail::check_device_span(where, "out_scores", out_scores);
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    ::recpipe::detail::fail(where, ": temperature must be finite and >= 0 (got ", temperature, ")");
  if (!ids.empty() && ids.size() != scores.size())
    ::recpipe::detail::fail(where, ": ids has ", ids.size(), " entries but scores has ", scores.size(),
                            " (ids must be empty or match)");
  if (offsets.empty())
    ::recpipe::detail::fail(where, ": offsets is empty; it needs num_segments + 1 entries (at least 1)");
  const std::size_t segments = offsets.size() - 1;
  if (!request_keys.empty() && request_keys.size() != segments)
    ::recpipe::detail::fail(where, ": request_keys has ", request_keys.size(), " entries for ", segments,
                            " segments (need 0 or ", segments, ")");
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
  kernels::sampling_params sampling;
  sampling.request_keys = request_keys.empty() ? nullptr : request_keys.data();
  sampling.seed = seed;
  sampling.temperature = temperature;
  return dispatch::softmax_sample(backend, problem, sampling);
}

RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
