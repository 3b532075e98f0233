// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: multi-head attention over padded sessions, self-attention or with a
// separate query input (cuBLAS projections and one fused attention kernel per (session, head)).
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/blas.cuh>
#include <recpipe/cuda/dense.cuh>
#include <recpipe/cuda/detail/checks.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/detail/scratch.cuh>
#include <recpipe/cuda/dispatch/dense.cuh>
#include <recpipe/cuda/kernels/attention.cuh>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN

//! Device weights of `nn.MultiheadAttention(E, num_heads, batch_first=True)` (cpu::mha_weights'
//! layouts): in_proj_weight [3E, E], in_proj_bias [3E] or empty, out_proj_weight [E, E],
//! out_proj_bias [E] or empty.
struct mha_weights {
  matrix_view<const float> in_proj_weight;
  device_span<const float> in_proj_bias;
  matrix_view<const float> out_proj_weight;
  device_span<const float> out_proj_bias;
  std::size_t num_heads = 1;
};

namespace attention_detail {
inline constexpr int threads = 256;
inline constexpr std::size_t max_shared_bytes = 48 * 1024;
inline std::size_t shared_bytes(std::size_t max_len, std::size_t head_dim) {
  return (threads / 32) * (max_len + head_dim) * sizeof(float);
}
// The staged kernel also holds the session's keys (pitch head_dim + 1) and values of one head.
inline std::size_t staged_shared_bytes(std::size_t max_len, std::size_t head_dim) {
  return shared_bytes(max_len, head_dim) + max_len * (2 * head_dim + 1) * sizeof(float);
}
}  // namespace attention_detail

namespace attention_detail {
// The host-side checks of both overloads (query_x == x for self-attention).
inline void check(const char* where, matrix_view<const float> query_x, matrix_view<const float> x,
                  device_span<const std::int64_t> lengths, std::size_t max_len, const mha_weights& w,
                  matrix_view<float> out) {
  const std::size_t e = x.cols();
  cuda::detail::check_device_shape(where, "x", x, x.rows(), e);
  if (query_x.data() != x.data() || query_x.stride() != x.stride() || query_x.rows() != x.rows() ||
      query_x.cols() != x.cols())
    cuda::detail::check_device_shape(where, "query_x", query_x, x.rows(), e);
  cuda::detail::check_device_span(where, "lengths", lengths);
  if (x.rows() != lengths.size() * max_len)
    ::recpipe::detail::fail(where, ": x has ", x.rows(), " rows but lengths.size() * max_len = ", lengths.size(), " * ",
                            max_len);
  if (w.num_heads == 0 || e % w.num_heads != 0)
    ::recpipe::detail::fail(where, ": num_heads = ", w.num_heads, " must be >= 1 and divide the embedding width ", e);
  cuda::detail::check_device_shape(where, "in_proj_weight", w.in_proj_weight, 3 * e, e);
  cuda::detail::check_device_bias(where, "in_proj_bias", w.in_proj_bias, 3 * e);
  cuda::detail::check_device_shape(where, "out_proj_weight", w.out_proj_weight, e, e);
  cuda::detail::check_device_bias(where, "out_proj_bias", w.out_proj_bias, e);
  cuda::detail::check_device_shape(where, "out", out, x.rows(), e);
  const std::size_t head_dim = e / w.num_heads;
  if (shared_bytes(max_len, head_dim) > max_shared_bytes)
    ::recpipe::detail::fail(where, ": max_len = ", max_len, " with head width ", head_dim,
                            " needs more shared memory than the kernel's 48 KiB");
  if (lengths.size() > std::numeric_limits<std::int32_t>::max() || w.num_heads > 65535)
    ::recpipe::detail::fail(where, ": ", lengths.size(), " sessions x ", w.num_heads, " heads exceed the grid");
}

// Unchecked: the attention context [rows, E] (stride E) before the output projection. q from
// query_x (the first E rows of in_proj), k and v from x (the other 2E; one GEMM for all three
// when query_x is x), into qkv [rows, 3E], then the fused kernel. Rows past a session's length
// get zero context rows. lengths: device, `sessions` entries, or null (every session max_len).
inline cudaError_t context(const cuda_backend& backend, const blas_handle& blas, matrix_view<const float> query_x,
                           matrix_view<const float> x, const std::int64_t* lengths, std::size_t sessions,
                           std::size_t max_len, const mha_weights& w, bool causal, float* qkv, float* context) {
  const std::size_t e = x.cols(), rows = x.rows(), head_dim = e / w.num_heads;
  const bool separate_query = query_x.data() != x.data() || cuda::detail::row_stride(query_x) != cuda::detail::row_stride(x);
  if (!separate_query) {
    RECPIPE_CUDA_RETURN_IF_ERROR(
        linear(backend, blas, x, w.in_proj_weight, w.in_proj_bias, matrix_view<float>(qkv, rows, 3 * e)));
  } else {
    const auto bias = [&](std::size_t first, std::size_t count) {
      return w.in_proj_bias.empty() ? device_span<const float>() : w.in_proj_bias.subspan(first, count);
    };
    const auto weight_rows = [&](std::size_t first, std::size_t count) {
      return matrix_view<const float>(w.in_proj_weight.data() + first * cuda::detail::row_stride(w.in_proj_weight),
                                      count, e, cuda::detail::row_stride(w.in_proj_weight));
    };
    RECPIPE_CUDA_RETURN_IF_ERROR(
        linear(backend, blas, query_x, weight_rows(0, e), bias(0, e), matrix_view<float>(qkv, rows, e, 3 * e)));
    RECPIPE_CUDA_RETURN_IF_ERROR(linear(backend, blas, x, weight_rows(e, 2 * e), bias(e, 2 * e),
                                        matrix_view<float>(qkv + e, rows, 2 * e, 3 * e)));
  }
  kernels::attention_params p;
  p.qkv = qkv;
  p.qkv_stride = 3 * e;
  p.lengths = lengths;
  p.sessions = static_cast<std::uint32_t>(sessions);
  p.max_len = static_cast<std::uint32_t>(max_len);
  p.e = static_cast<std::uint32_t>(e);
  p.head_dim = static_cast<std::uint32_t>(head_dim);
  p.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  p.causal = causal;
  p.context = context;
  p.context_stride = e;
  const cudaStream_t stream = backend.stream();
  const dim3 grid(p.sessions, static_cast<unsigned>(w.num_heads));
  // K and V staged in shared memory when they fit the device's opt-in limit (227 KiB per block
  // on an H200: sessions of ~430 items at head width 64); else read from global memory / L2.
  const std::size_t staged = staged_shared_bytes(max_len, head_dim);
  int device = 0, optin = 0;
  RECPIPE_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  RECPIPE_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (staged <= static_cast<std::size_t>(optin)) {
    if (staged > max_shared_bytes)
      RECPIPE_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(kernels::attention_kernel<threads, true>,
                                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                        static_cast<int>(staged)));
    kernels::attention_kernel<threads, true><<<grid, threads, staged, stream>>>(p);
  } else {
    kernels::attention_kernel<threads, false><<<grid, threads, shared_bytes(max_len, head_dim), stream>>>(p);
  }
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}

// Unchecked: context, then the output projection into out and a pass zeroing the padded rows.
inline cudaError_t attend(const cuda_backend& backend, const blas_handle& blas, matrix_view<const float> query_x,
                          matrix_view<const float> x, device_span<const std::int64_t> lengths, std::size_t max_len,
                          const mha_weights& w, bool causal, matrix_view<float> out) {
  const std::size_t e = x.cols(), rows = x.rows();
  if (rows == 0 || e == 0) return cudaSuccess;
  cuda::detail::scratch scratch(backend);
  float *qkv = nullptr, *ctx = nullptr;
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&qkv, rows * 3 * e));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&ctx, rows * e));
  RECPIPE_CUDA_RETURN_IF_ERROR(
      context(backend, blas, query_x, x, lengths.data(), lengths.size(), max_len, w, causal, qkv, ctx));
  RECPIPE_CUDA_RETURN_IF_ERROR(
      linear(backend, blas, matrix_view<const float>(ctx, rows, e), w.out_proj_weight, w.out_proj_bias, out));
  const cudaStream_t stream = backend.stream();
  kernels::zero_padding_kernel<dispatch::block_threads>
      <<<dispatch::dense_detail::elementwise_blocks(rows * e), dispatch::block_threads, 0, stream>>>(
          out.data(), cuda::detail::row_stride(out), static_cast<std::uint32_t>(e), lengths.data(),
          static_cast<std::uint32_t>(lengths.size()), static_cast<std::uint32_t>(max_len));
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}
}  // namespace attention_detail

//! @brief cpu::multi_head_attention (self-attention) on the GPU: x [sessions * max_len, E], session
//! b's item t at row b * max_len + t; keys at t >= lengths[b] are masked; with `causal` item t
//! attends to 0..t only; padded output rows are 0. Steps: the in-projection as one FP32 cuBLAS
//! GEMM over all rows (padding included: rows are independent), one fused kernel per (session,
//! head) - q * 1/sqrt(E / heads), scores with math::dot, the row softmax in shared memory (max,
//! exp, sum; all -inf gives zeros), the weighted sum of v in key order - then the out-projection
//! GEMM and a pass that zeroes the padded rows. The kernel stages the session's keys and values
//! of its head in shared memory when they fit the device's opt-in limit (else reads them from
//! global memory / L2).
//! @param lengths device, one per session; unchecked device data, so each is clamped into
//!        [0, max_len] (the CPU entry throws instead).
//! @param out same shape as x, must not overlap it.
//! @return the first launch or allocation error; never synchronises.
//! @throws recpipe::error for mismatched shapes, heads not dividing E, or a session too long for
//!         the kernel's shared memory ((8 warps) x (max_len + E / heads) floats <= 48 KiB, so
//!         max_len <= 1400 at head width 64); cublas_error when cuBLAS refuses.
//! @code
//! recpipe::cuda::multi_head_attention(backend, blas, x, d_lengths.const_span(), 50, w, true, y);
//! @endcode
inline cudaError_t multi_head_attention(const cuda_backend& backend, const blas_handle& blas, matrix_view<const float> x,
                                        device_span<const std::int64_t> lengths, std::size_t max_len,
                                        const mha_weights& w, bool causal, matrix_view<float> out) {
  attention_detail::check("cuda::multi_head_attention", x, x, lengths, max_len, w, out);
  return attention_detail::attend(backend, blas, x, x, lengths, max_len, w, causal, out);
}

//! @brief cpu::multi_head_attention's separate-query overload on the GPU: queries projected from
//! `query_x` (in_proj rows 0..E), keys and values from `x` (rows E..3E), as
//! `nn.MultiheadAttention(query_x, x, x, key_padding_mask, attn_mask)` with both inputs laid out
//! as the same padded sessions (SASRec.pytorch's block: q = LayerNorm(x), k = v = x). Two GEMMs
//! for the projections (one when query_x is x), then the same fused kernel, out-projection and
//! padded-row pass as the self-attention overload.
//! @param query_x same shape as x; row b * max_len + t is the query of session b's item t.
//! Everything else as the self-attention overload (masks, lengths clamped, padded rows 0); out
//! must overlap neither input.
//! @return the first launch or allocation error; never synchronises.
//! @throws recpipe::error for mismatched shapes (naming the argument), heads not dividing E, or
//!         a session too long for the kernel's shared memory; cublas_error when cuBLAS refuses.
//! @code
//! recpipe::cuda::multi_head_attention(backend, blas, normed, x, d_lengths.const_span(), 50, w, true, y);
//! @endcode
inline cudaError_t multi_head_attention(const cuda_backend& backend, const blas_handle& blas,
                                        matrix_view<const float> query_x, matrix_view<const float> x,
                                        device_span<const std::int64_t> lengths, std::size_t max_len,
                                        const mha_weights& w, bool causal, matrix_view<float> out) {
  attention_detail::check("cuda::multi_head_attention", query_x, x, lengths, max_len, w, out);
  return attention_detail::attend(backend, blas, query_x, x, lengths, max_len, w, causal, out);
}

RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
