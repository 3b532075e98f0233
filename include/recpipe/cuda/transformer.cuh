// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: LayerNorm, transformer encoder blocks and the session transformer's
// encode (cuBLAS GEMMs, the fused attention kernel, fused bias + residual + LayerNorm epilogues).
#pragma once

#include <recpipe/cuda/attention.cuh>
#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/blas.cuh>
#include <recpipe/cuda/dense.cuh>
#include <recpipe/cuda/detail/checks.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/detail/scratch.cuh>
#include <recpipe/cuda/dispatch/dense.cuh>
#include <recpipe/cuda/kernels/transformer.cuh>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/ragged_view.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/math/activation.hpp>
#include <recpipe/math/transformer.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN

namespace transformer_detail {
inline constexpr std::size_t rows_per_block = dispatch::block_threads / 32;
inline unsigned row_blocks(std::size_t rows) {
  // One warp per row; grid-stride beyond what fills an H200 (132 SMs x 8 resident blocks).
  return static_cast<unsigned>(std::max<std::size_t>(1, std::min<std::size_t>((rows + rows_per_block - 1) / rows_per_block, 132 * 8)));
}

inline cudaError_t launch(const cuda_backend& backend, const kernels::residual_norm_params& p) {
  if (p.rows == 0 || p.e == 0) return cudaSuccess;
  kernels::residual_norm_kernel<dispatch::block_threads>
      <<<row_blocks(p.rows), dispatch::block_threads, 0, backend.stream()>>>(p);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(backend.stream());
  return cudaSuccess;
}

inline const float* data_or_null(device_span<const float> s) { return s.empty() ? nullptr : s.data(); }

inline void check_eps(const char* where, float eps) {
  if (!(eps >= 0.0f) || !std::isfinite(eps)) ::recpipe::detail::fail(where, ": eps must be finite and >= 0 (got ", eps, ")");
}
}  // namespace transformer_detail

//! @brief cpu::layer_norm on the GPU: y[r] = (x[r] - mean) / sqrt(var + eps) * gamma + beta per row
//! (biased variance; gamma / beta may be empty: 1 / 0), one warp per row; the element formula is
//! math::layer_norm_value (the CPU's), the sums are warp reductions (the CPU sums in 16 lanes).
//! y may be x (in place).
//! @return the launch error; never synchronises.
//! @throws recpipe::error for mismatched shapes, null data or a negative eps.
//! @code
//! recpipe::cuda::layer_norm(backend, x, gamma, beta, x, 1e-5f);  // in place
//! @endcode
inline cudaError_t layer_norm(const cuda_backend& backend, matrix_view<const float> x, device_span<const float> gamma,
                              device_span<const float> beta, matrix_view<float> y, float eps = 1e-5f) {
  constexpr const char* where = "cuda::layer_norm";
  cuda::detail::check_device_shape(where, "x", x, x.rows(), x.cols());
  cuda::detail::check_device_bias(where, "gamma", gamma, x.cols());
  cuda::detail::check_device_bias(where, "beta", beta, x.cols());
  cuda::detail::check_device_shape(where, "y", y, x.rows(), x.cols());
  if (!(eps >= 0.0f)) ::recpipe::detail::fail(where, ": eps must be >= 0 (got ", eps, ")");
  if (x.cols() > std::numeric_limits<std::uint32_t>::max()) ::recpipe::detail::fail(where, ": x has too many columns");
  kernels::residual_norm_params p;
  p.src = x.data();
  p.src_stride = cuda::detail::row_stride(x);
  p.norm = y.data();
  p.norm_stride = cuda::detail::row_stride(y);
  p.gamma = transformer_detail::data_or_null(gamma);
  p.beta = transformer_detail::data_or_null(beta);
  p.eps = eps;
  p.rows = x.rows();
  p.e = static_cast<std::uint32_t>(x.cols());
  return transformer_detail::launch(backend, p);
}

//! Device weights of `nn.TransformerEncoderLayer(E, heads, F, dropout=0, activation,
//! batch_first=True, norm_first)` (cpu::transformer_layer_weights' layouts and meaning).
struct transformer_layer_weights {
  mha_weights attention;
  matrix_view<const float> linear1_weight;  //!< [F, E]
  device_span<const float> linear1_bias;    //!< [F] or empty
  matrix_view<const float> linear2_weight;  //!< [E, F]
  device_span<const float> linear2_bias;    //!< [E] or empty
  device_span<const float> norm1_weight, norm1_bias, norm2_weight, norm2_bias;  //!< [E] each, or empty
  float eps = 1e-5f;
  math::activation act = math::activation::relu;
  bool norm_first = false;
};

namespace transformer_detail {
enum class block_kind { post_norm, pre_norm, query_norm };

inline void check_layer(const char* where, matrix_view<const float> x, device_span<const std::int64_t> lengths,
                        std::size_t max_len, const transformer_layer_weights& w, matrix_view<float> out) {
  attention_detail::check(where, x, x, lengths, max_len, w.attention, out);
  const std::size_t e = x.cols(), ff = w.linear1_weight.rows();
  cuda::detail::check_device_shape(where, "linear1_weight", w.linear1_weight, ff, e);
  cuda::detail::check_device_bias(where, "linear1_bias", w.linear1_bias, ff);
  cuda::detail::check_device_shape(where, "linear2_weight", w.linear2_weight, e, ff);
  cuda::detail::check_device_bias(where, "linear2_bias", w.linear2_bias, e);
  cuda::detail::check_device_bias(where, "norm1_weight", w.norm1_weight, e);
  cuda::detail::check_device_bias(where, "norm1_bias", w.norm1_bias, e);
  cuda::detail::check_device_bias(where, "norm2_weight", w.norm2_weight, e);
  cuda::detail::check_device_bias(where, "norm2_bias", w.norm2_bias, e);
  check_eps(where, w.eps);
  if (e > std::numeric_limits<std::uint32_t>::max()) ::recpipe::detail::fail(where, ": x has too many columns");
}

// Device temporaries of one block: a [rows, E], hidden [rows, F], qkv [rows, 3E], ctx [rows, E].
struct block_buffers {
  float* a = nullptr;
  float* hidden = nullptr;
  float* qkv = nullptr;
  float* ctx = nullptr;
};

inline cudaError_t allocate(cuda::detail::scratch& scratch, std::size_t rows, std::size_t e, std::size_t ff,
                            block_buffers& b) {
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&b.a, rows * e));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&b.hidden, rows * std::max<std::size_t>(ff, 1)));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&b.qkv, rows * 3 * e));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&b.ctx, rows * e));
  return cudaSuccess;
}

// Unchecked encoder block, x -> out (out must not overlap x; the buffers neither). `lengths`
// (device, nullable = every row valid) drives the attention masks; `mask` / `mask_lengths` say
// which rows of out end as zeros (the CPU's zero_padding, or the timeline mask). Every step's
// arithmetic follows the CPU block's order:
//   post-norm  a = LN1((ctx Wo^T + bo) + x); out = LN2((act(a W1^T + b1) W2^T + b2) + a)
//   pre-norm   a = LN1(x); out = (ctx(a) Wo^T + bo) + x; a = LN2(out); out = (FF(a) + b2) + out
//   query-norm q = LN1(x); out = LN2((ctx(q; x) Wo^T + bo) + q); out = (FF(out) + b2) + out
// The out-projection and linear2 GEMMs run without their bias: it is added in the fused
// residual + LayerNorm pass (residual_norm_kernel), which also writes the masked rows.
inline cudaError_t block(const cuda_backend& backend, const blas_handle& blas, block_kind kind,
                         matrix_view<const float> x, const std::int64_t* lengths, std::size_t sessions,
                         std::size_t max_len, const transformer_layer_weights& w, bool causal, kernels::row_mask mask,
                         const std::int64_t* mask_lengths, matrix_view<float> out, const block_buffers& buf) {
  const std::size_t rows = x.rows(), e = x.cols(), ff = w.linear1_weight.rows();
  if (rows == 0 || e == 0) return cudaSuccess;
  const matrix_view<float> a(buf.a, rows, e), hidden(buf.hidden, rows, ff), ctx(buf.ctx, rows, e);
  const auto norm_pass = [&](const float* src, std::size_t src_stride, device_span<const float> bias,
                             const float* residual, std::size_t residual_stride, float* sum, std::size_t sum_stride,
                             float* norm, std::size_t norm_stride, device_span<const float> gamma,
                             device_span<const float> beta, kernels::row_mask row_mask) {
    kernels::residual_norm_params p;
    p.src = src;
    p.src_stride = src_stride;
    p.bias = data_or_null(bias);
    p.residual = residual;
    p.residual_stride = residual_stride;
    p.sum = sum;
    p.sum_stride = sum_stride;
    p.norm = norm;
    p.norm_stride = norm_stride;
    p.gamma = data_or_null(gamma);
    p.beta = data_or_null(beta);
    p.eps = w.eps;
    p.rows = rows;
    p.e = static_cast<std::uint32_t>(e);
    p.mask = row_mask;
    p.lengths = mask_lengths;
    p.window = static_cast<std::uint32_t>(max_len);
    return launch(backend, p);
  };
  const std::size_t xs = cuda::detail::row_stride(x), os = cuda::detail::row_stride(out);
  using kernels::row_mask;
  const auto context_of = [&](matrix_view<const float> query_x, matrix_view<const float> kv) {
    return attention_detail::context(backend, blas, query_x, kv, lengths, sessions, max_len, w.attention, causal, buf.qkv,
                                     buf.ctx);
  };
  // The projection GEMMs alone (empty bias, no activation: linear's epilogue does nothing).
  const auto gemm = [&](matrix_view<const float> in, matrix_view<const float> weight, matrix_view<float> y) {
    return linear(backend, blas, in, weight, {}, y);
  };
  switch (kind) {
    case block_kind::post_norm:
      RECPIPE_CUDA_RETURN_IF_ERROR(context_of(x, x));
      RECPIPE_CUDA_RETURN_IF_ERROR(gemm(ctx, w.attention.out_proj_weight, out));
      RECPIPE_CUDA_RETURN_IF_ERROR(norm_pass(out.data(), os, w.attention.out_proj_bias, x.data(), xs, nullptr, 0, a.data(),
                                             e, w.norm1_weight, w.norm1_bias, row_mask::none));
      RECPIPE_CUDA_RETURN_IF_ERROR(linear(backend, blas, a, w.linear1_weight, w.linear1_bias, hidden, w.act));
      RECPIPE_CUDA_RETURN_IF_ERROR(gemm(hidden, w.linear2_weight, out));
      return norm_pass(out.data(), os, w.linear2_bias, a.data(), e, nullptr, 0, out.data(), os, w.norm2_weight,
                       w.norm2_bias, mask);
    case block_kind::pre_norm:
      RECPIPE_CUDA_RETURN_IF_ERROR(norm_pass(x.data(), xs, {}, nullptr, 0, nullptr, 0, a.data(), e, w.norm1_weight,
                                             w.norm1_bias, row_mask::none));
      RECPIPE_CUDA_RETURN_IF_ERROR(context_of(a, a));
      RECPIPE_CUDA_RETURN_IF_ERROR(gemm(ctx, w.attention.out_proj_weight, out));
      RECPIPE_CUDA_RETURN_IF_ERROR(norm_pass(out.data(), os, w.attention.out_proj_bias, x.data(), xs, out.data(), os,
                                             a.data(), e, w.norm2_weight, w.norm2_bias, row_mask::none));
      RECPIPE_CUDA_RETURN_IF_ERROR(linear(backend, blas, a, w.linear1_weight, w.linear1_bias, hidden, w.act));
      RECPIPE_CUDA_RETURN_IF_ERROR(gemm(hidden, w.linear2_weight, a));
      return norm_pass(a.data(), e, w.linear2_bias, out.data(), os, out.data(), os, nullptr, 0, {}, {}, mask);
    case block_kind::query_norm:
    default:
      RECPIPE_CUDA_RETURN_IF_ERROR(norm_pass(x.data(), xs, {}, nullptr, 0, nullptr, 0, a.data(), e, w.norm1_weight,
                                             w.norm1_bias, row_mask::none));
      RECPIPE_CUDA_RETURN_IF_ERROR(context_of(a, x));
      RECPIPE_CUDA_RETURN_IF_ERROR(gemm(ctx, w.attention.out_proj_weight, out));
      RECPIPE_CUDA_RETURN_IF_ERROR(norm_pass(out.data(), os, w.attention.out_proj_bias, a.data(), e, nullptr, 0,
                                             out.data(), os, w.norm2_weight, w.norm2_bias, row_mask::none));
      RECPIPE_CUDA_RETURN_IF_ERROR(linear(backend, blas, out, w.linear1_weight, w.linear1_bias, hidden, w.act));
      RECPIPE_CUDA_RETURN_IF_ERROR(gemm(hidden, w.linear2_weight, a));
      return norm_pass(a.data(), e, w.linear2_bias, out.data(), os, out.data(), os, nullptr, 0, {}, {}, mask);
  }
}

inline cudaError_t run_block(const char* where, block_kind kind, const cuda_backend& backend, const blas_handle& blas,
                             matrix_view<const float> x, device_span<const std::int64_t> lengths, std::size_t max_len,
                             const transformer_layer_weights& w, bool causal, matrix_view<float> out) {
  check_layer(where, x, lengths, max_len, w, out);
  if (x.rows() == 0 || x.cols() == 0) return cudaSuccess;
  cuda::detail::scratch scratch(backend);
  block_buffers buf;
  RECPIPE_CUDA_RETURN_IF_ERROR(allocate(scratch, x.rows(), x.cols(), w.linear1_weight.rows(), buf));
  return block(backend, blas, kind, x, lengths.data(), lengths.size(), max_len, w, causal, kernels::row_mask::suffix,
               lengths.data(), out, buf);
}
}  // namespace transformer_detail

//! @brief cpu::transformer_encoder_layer on the GPU (inference, no dropout):
//! post-norm  y = LN2(h + FF(h)), h = LN1(x + MHA(x)); pre-norm  y = h + FF(LN2(h)), h = x + MHA(LN1(x)).
//! Sessions, masks and lengths as cuda::multi_head_attention (device lengths clamped into
//! [0, max_len]); padded output rows are 0. Five GEMMs (in-projection, out-projection, linear1
//! with its fused bias + activation, linear2) around the fused attention kernel; the
//! out-projection's and linear2's bias, the residual add and the LayerNorm run in one pass per
//! residual. Temporaries come from the backend's pool.
//! @param out same shape as x, must not overlap it.
//! @return the first launch or allocation error; never synchronises.
//! @throws recpipe::error naming the weight or argument whose shape disagrees; cublas_error.
//! @code
//! recpipe::cuda::transformer_encoder_layer(backend, blas, x, d_lengths.const_span(), max_len, w, true, y);
//! @endcode
inline cudaError_t transformer_encoder_layer(const cuda_backend& backend, const blas_handle& blas,
                                             matrix_view<const float> x, device_span<const std::int64_t> lengths,
                                             std::size_t max_len, const transformer_layer_weights& w, bool causal,
                                             matrix_view<float> out) {
  using transformer_detail::block_kind;
  return transformer_detail::run_block("cuda::transformer_encoder_layer",
                                       w.norm_first ? block_kind::pre_norm : block_kind::post_norm, backend, blas, x,
                                       lengths, max_len, w, causal, out);
}

//! @brief cpu::query_norm_encoder_layer on the GPU (the SASRec.pytorch block):
//! q = LN1(x); h = q + MHA(query q, keys and values x); z = LN2(h); y = z + FF(z). `w.norm_first`
//! is ignored. Everything else as transformer_encoder_layer.
//! @code
//! recpipe::cuda::query_norm_encoder_layer(backend, blas, x, d_lengths.const_span(), max_len, w, true, y);
//! @endcode
inline cudaError_t query_norm_encoder_layer(const cuda_backend& backend, const blas_handle& blas,
                                            matrix_view<const float> x, device_span<const std::int64_t> lengths,
                                            std::size_t max_len, const transformer_layer_weights& w, bool causal,
                                            matrix_view<float> out) {
  return transformer_detail::run_block("cuda::query_norm_encoder_layer", transformer_detail::block_kind::query_norm,
                                       backend, blas, x, lengths, max_len, w, causal, out);
}

//! What cuda::session_transformer needs of models::session_transformer_config (the same fields,
//! meaning and defaults; `cuda/session_transformer.cuh` converts a CPU model's).
struct session_transformer_spec {
  std::size_t num_items = 0;
  std::size_t embedding_dim = 0;
  std::size_t max_length = 0;
  std::size_t num_heads = 1;
  std::size_t ffn_dim = 0;
  std::size_t num_layers = 0;
  math::activation activation = math::activation::relu;
  bool norm_first = true;
  float embedding_scale = 1.0f;
  float eps = 1e-5f;
  bool query_only_norm = false;
  bool input_norm = false;
  bool final_norm = true;
  bool left_padding = false;  //!< models::session_padding::left
  math::position_rule positions = math::position_rule::first_item;
  bool attend_to_padding = false;
  bool timeline_mask = false;
  id_type padding_id = -1;

  //! Rows of the position embedding table.
  std::size_t position_rows() const noexcept {
    return positions == math::position_rule::window_slot_from_1 ? max_length + 1 : max_length;
  }
};

//! Host weights of one encoder block, PyTorch layout (views; copied by the constructor).
struct session_transformer_host_layer {
  matrix_view<const float> in_proj_weight;  //!< [3E, E]
  std::span<const float> in_proj_bias;      //!< [3E] or empty
  matrix_view<const float> out_proj_weight;  //!< [E, E]
  std::span<const float> out_proj_bias;      //!< [E] or empty
  matrix_view<const float> linear1_weight;   //!< [F, E]
  std::span<const float> linear1_bias;       //!< [F] or empty
  matrix_view<const float> linear2_weight;   //!< [E, F]
  std::span<const float> linear2_bias;       //!< [E] or empty
  std::span<const float> norm1_weight, norm1_bias, norm2_weight, norm2_bias;  //!< [E] each, or empty
};

//! Host weights of a session transformer (models::session_transformer's parameters).
struct session_transformer_host_weights {
  matrix_view<const float> item_embedding;      //!< [num_items, E]
  matrix_view<const float> position_embedding;  //!< [spec.position_rows(), E]
  std::span<const float> input_norm_weight, input_norm_bias;  //!< [E] each, or empty
  std::span<const float> final_norm_weight, final_norm_bias;  //!< [E] each, or empty
  std::vector<session_transformer_host_layer> layers;         //!< spec.num_layers blocks
};

//! @brief models::session_transformer's encode on the GPU: the weights live in device memory
//! (one buffer from the backend's pool, copied once by the constructor), and encode runs the
//! embedding gather (item row * scale + position row, input LayerNorm, timeline mask: one
//! kernel), every encoder block (cuBLAS GEMMs, the fused attention kernel, fused bias + residual
//! + LayerNorm passes) and the gather of each session's last row with the final LayerNorm (one
//! kernel). Every config variant of the CPU model is supported (pre/post-norm, the query-only
//! norm block, input / final norm, left padding, window-slot positions, attend_to_padding,
//! timeline_mask, padding_id) and gives the CPU model's output up to summation order (cuBLAS
//! vs OpenBLAS, warp vs 16-lane sums).
//!
//! The backend must outlive the model (its pool holds the weights); a model is used from one
//! thread at a time with its backend (cuBLAS handles and streams are not thread-safe).
//! @code
//! recpipe::cuda::cuda_backend backend;
//! recpipe::cuda::blas_handle blas;
//! auto gpu = recpipe::cuda::to_device(backend, cpu_model);  // cuda/session_transformer.cuh
//! recpipe::cuda::device_buffer<float> out(backend, batch * gpu.embedding_dim());
//! RECPIPE_CUDA_TRY(gpu.encode(backend, blas, offsets, items, {out.data(), batch, gpu.embedding_dim()}));
//! @endcode
class session_transformer {
 public:
  //! Copies the weights to the device (queued on the backend's stream; no synchronisation).
  //! @throws recpipe::error naming the weight whose shape disagrees with `spec`, or a spec the
  //!         CPU model rejects; cuda_error when the allocation or copy fails.
  session_transformer(const cuda_backend& backend, const session_transformer_spec& spec,
                      const session_transformer_host_weights& weights)
      : spec_(spec) {
    constexpr const char* where = "cuda::session_transformer";
    validate(where, spec);
    const std::size_t e = spec.embedding_dim, f = spec.ffn_dim;
    if (weights.layers.size() != spec.num_layers)
      ::recpipe::detail::fail(where, ": ", weights.layers.size(), " layers of weights for num_layers = ", spec.num_layers);
    // Pack every tensor into one host vector (rows contiguous), then one copy.
    std::vector<float> host;
    std::vector<std::pair<std::size_t, std::size_t>> places;  // (offset, size) in order of packing
    const auto pack_matrix = [&](const char* name, matrix_view<const float> m, std::size_t rows, std::size_t cols) {
      if (m.rows() != rows || m.cols() != cols)
        ::recpipe::detail::fail(where, ": ", name, " is ", m.rows(), " x ", m.cols(), " but must be ", rows, " x ", cols);
      if (!m.empty() && m.data() == nullptr) ::recpipe::detail::fail(where, ": ", name, " has no data");
      if (m.rows() > 1 && m.stride() < m.cols())
        ::recpipe::detail::fail(where, ": ", name, " has stride ", m.stride(), " smaller than its ", m.cols(), " columns");
      places.emplace_back(host.size(), rows * cols);
      for (std::size_t r = 0; r < rows; ++r) host.insert(host.end(), m.data() + r * m.stride(), m.data() + r * m.stride() + cols);
    };
    const auto pack_vector = [&](const char* name, std::span<const float> v, std::size_t size, bool optional) {
      if (!(v.size() == size || (optional && v.empty())))
        ::recpipe::detail::fail(where, ": ", name, " has ", v.size(), " entries but must have ", size,
                                optional ? " (or none)" : "");
      places.emplace_back(host.size(), v.size());
      host.insert(host.end(), v.begin(), v.end());
    };
    pack_matrix("item_embedding", weights.item_embedding, spec.num_items, e);
    pack_matrix("position_embedding", weights.position_embedding, spec.position_rows(), e);
    pack_vector("input_norm_weight", weights.input_norm_weight, spec.input_norm ? e : 0, spec.input_norm);
    pack_vector("input_norm_bias", weights.input_norm_bias, spec.input_norm ? e : 0, spec.input_norm);
    pack_vector("final_norm_weight", weights.final_norm_weight, spec.final_norm ? e : 0, spec.final_norm);
    pack_vector("final_norm_bias", weights.final_norm_bias, spec.final_norm ? e : 0, spec.final_norm);
    for (const session_transformer_host_layer& l : weights.layers) {
      pack_matrix("layers[i].in_proj_weight", l.in_proj_weight, 3 * e, e);
      pack_vector("layers[i].in_proj_bias", l.in_proj_bias, 3 * e, true);
      pack_matrix("layers[i].out_proj_weight", l.out_proj_weight, e, e);
      pack_vector("layers[i].out_proj_bias", l.out_proj_bias, e, true);
      pack_matrix("layers[i].linear1_weight", l.linear1_weight, f, e);
      pack_vector("layers[i].linear1_bias", l.linear1_bias, f, true);
      pack_matrix("layers[i].linear2_weight", l.linear2_weight, e, f);
      pack_vector("layers[i].linear2_bias", l.linear2_bias, e, true);
      pack_vector("layers[i].norm1_weight", l.norm1_weight, e, true);
      pack_vector("layers[i].norm1_bias", l.norm1_bias, e, true);
      pack_vector("layers[i].norm2_weight", l.norm2_weight, e, true);
      pack_vector("layers[i].norm2_bias", l.norm2_bias, e, true);
    }
    storage_ = to_device(backend, std::span<const float>(host));
    std::size_t next = 0;
    const auto matrix_at = [&](std::size_t cols) {
      const auto [offset, size] = places[next++];
      return matrix_view<const float>(storage_.data() + offset, cols == 0 ? 0 : size / cols, cols);
    };
    const auto vector_at = [&]() {
      const auto [offset, size] = places[next++];
      return device_span<const float>(size == 0 ? nullptr : storage_.data() + offset, size);
    };
    items_ = matrix_at(e);
    positions_ = matrix_at(e);
    input_weight_ = vector_at();
    input_bias_ = vector_at();
    final_weight_ = vector_at();
    final_bias_ = vector_at();
    for (std::size_t i = 0; i < spec.num_layers; ++i) {
      transformer_layer_weights w;
      w.attention.in_proj_weight = matrix_at(e);
      w.attention.in_proj_bias = vector_at();
      w.attention.out_proj_weight = matrix_at(e);
      w.attention.out_proj_bias = vector_at();
      w.attention.num_heads = spec.num_heads;
      w.linear1_weight = matrix_at(e);
      w.linear1_bias = vector_at();
      w.linear2_weight = matrix_at(f);
      w.linear2_bias = vector_at();
      w.norm1_weight = vector_at();
      w.norm1_bias = vector_at();
      w.norm2_weight = vector_at();
      w.norm2_bias = vector_at();
      w.eps = spec.eps;
      w.act = spec.activation;
      w.norm_first = spec.norm_first;
      layers_.push_back(w);
    }
  }

  const session_transformer_spec& spec() const noexcept { return spec_; }
  std::size_t embedding_dim() const noexcept { return spec_.embedding_dim; }
  std::size_t num_items() const noexcept { return spec_.num_items; }
  //! The device item embedding table [num_items, E].
  matrix_view<const float> item_embeddings() const noexcept { return items_; }
  //! The device weights of each block.
  std::span<const transformer_layer_weights> layers() const noexcept { return layers_; }

  //! @brief Session vectors from host ragged sessions, as models::session_transformer::encode:
  //! out[b] = the final hidden state at session b's last item (zeros for an empty session).
  //! The host drops padding_id items, keeps each session's last max_length, lays the ids out in
  //! the CPU model's window (window_layout: the longest kept session's length, or max_length
  //! slots with attend_to_padding) and copies them and the lengths to the device in one copy;
  //! then encode_padded's kernels.
  //! @param offsets batch + 1 non-decreasing entries, offsets[0] = 0, offsets[batch] = items.size()
  //! @param items item ids in [0, num_items), sessions concatenated in time order (host memory)
  //! @param out device [batch, embedding_dim]
  //! @return the first launch or allocation error; never synchronises.
  //! @throws recpipe::error for bad offsets, an id outside [0, num_items) (naming its position), a
  //!         wrong out shape (the CPU model's checks), or a window too long for the attention
  //!         kernel's shared memory; cublas_error when cuBLAS refuses.
  //! @code
  //! RECPIPE_CUDA_TRY(gpu.encode(backend, blas, offsets, items, out));
  //! @endcode
  cudaError_t encode(const cuda_backend& backend, const blas_handle& blas, std::span<const id_type> offsets,
                     std::span<const id_type> items, matrix_view<float> out) const {
    return encode(backend, blas, ragged_view<const id_type, id_type>(offsets, items), out);
  }
  //! The same over a ragged_view with any offset type.
  template <std::integral Offset>
  cudaError_t encode(const cuda_backend& backend, const blas_handle& blas, ragged_view<const id_type, Offset> sessions,
                     matrix_view<float> out) const {
    constexpr const char* where = "cuda::session_transformer: encode";
    const std::size_t e = spec_.embedding_dim;
    sessions.check(where, "items.size()");
    const std::span<const id_type> items = sessions.values();
    const std::size_t batch = sessions.rows();
    cuda::detail::check_device_matrix(where, "out", out);
    if (out.rows() != batch || out.cols() != e)
      ::recpipe::detail::fail(where, ": out must be ", batch, " x ", e, " (got ", out.rows(), " x ", out.cols(), ")");
    for (std::size_t i = 0; i < items.size(); ++i)
      if (items[i] < 0 || static_cast<std::size_t>(items[i]) >= spec_.num_items)
        ::recpipe::detail::fail(where, ": items[", i, "] = ", items[i], " is outside [0, ", spec_.num_items, ")");
    if (batch == 0) return cudaSuccess;
    std::vector<std::int64_t> host;
    const std::size_t window = window_layout(spec_, sessions, host);
    if (window == 0) return zero_rows(backend, out);
    check_window(where, window);
    cuda::detail::scratch scratch(backend);
    std::int64_t* device = nullptr;
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&device, host.size()));
    // Pageable source: the driver stages it before cudaMemcpyAsync returns.
    RECPIPE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device, host.data(), host.size() * sizeof(std::int64_t),
                                                 cudaMemcpyHostToDevice, backend.stream()));
    return run(backend, blas, device, device + batch * window, batch, window, out);
  }

  //! @brief The host half of encode: lays ragged sessions out in the CPU model's window, as
  //! encode_padded takes them. Each session drops its padding_id items and keeps its last
  //! max_length; the window is the longest kept session (max_length with attend_to_padding, the
  //! items then in the last slots and padding_id before them); unused slots hold padding_id.
  //! @param out  resized to sessions * window + sessions: the slots [sessions * window], then the
  //!             kept lengths [sessions]
  //! @return the window (0 when every kept session is empty); ids are not checked here.
  //! @code
  //! std::vector<std::int64_t> host;
  //! std::size_t window = recpipe::cuda::session_transformer::window_layout(gpu.spec(), sessions, host);
  //! @endcode
  template <std::integral Offset>
  static std::size_t window_layout(const session_transformer_spec& spec, ragged_view<const id_type, Offset> sessions,
                                   std::vector<std::int64_t>& out) {
    const std::span<const Offset> offsets = sessions.offsets();
    const std::span<const id_type> items = sessions.values();
    const std::size_t batch = sessions.rows();
    const auto kept = [&](id_type item) { return spec.padding_id < 0 || item != spec.padding_id; };
    // Pass 1: each session's kept length (counted from its end, at most max_length).
    out.assign(batch, 0);
    std::size_t longest = 0;
    for (std::size_t b = 0; b < batch; ++b) {
      std::size_t len = 0;
      for (auto i = static_cast<std::size_t>(offsets[b + 1]); i > static_cast<std::size_t>(offsets[b]) && len < spec.max_length; --i)
        len += kept(items[i - 1]) ? 1 : 0;
      out[b] = static_cast<std::int64_t>(len);
      longest = std::max(longest, len);
    }
    const std::size_t window = longest == 0 ? 0 : (spec.attend_to_padding ? spec.max_length : longest);
    // Pass 2: the slots, filled from each session's last kept item backwards; lengths after them.
    std::vector<std::int64_t> lengths(out.begin(), out.end());
    out.assign(batch * window + batch, spec.padding_id);
    for (std::size_t b = 0; b < batch; ++b) {
      const auto len = static_cast<std::size_t>(lengths[b]);
      std::size_t slot = b * window + (spec.attend_to_padding ? window : len);
      for (auto i = static_cast<std::size_t>(offsets[b + 1]); slot > b * window + (spec.attend_to_padding ? window - len : 0); --i)
        if (kept(items[i - 1])) out[--slot] = items[i - 1];
      out[batch * window + b] = lengths[b];
    }
    return window;
  }

  //! @brief encode over sessions already laid out on the device in the CPU model's window:
  //! session b's slot s at slots[b * window + s]; `lengths[b]` kept items (clamped into [0,
  //! window] on the device). Right padding (the default): item k in slot k, slots past the length
  //! ignored. attend_to_padding: window must be max_length, the items in the last `length` slots
  //! (the slots before them are taken as padding_id whatever they hold). The host does not see
  //! the ids: one outside [0, num_items) embeds as a zero item row (the host encode throws).
  //! @param slots device [lengths.size() * window] item ids; @param lengths device, one per session
  //! @param out device [lengths.size(), embedding_dim]
  //! @return the first launch or allocation error; never synchronises.
  //! @throws recpipe::error for mismatched sizes, a window above max_length (or not max_length
  //!         with attend_to_padding) or too long for the attention kernel; cublas_error.
  //! @code
  //! RECPIPE_CUDA_TRY(gpu.encode_padded(backend, blas, d_slots.const_span(), d_lengths.const_span(), 50, out));
  //! @endcode
  cudaError_t encode_padded(const cuda_backend& backend, const blas_handle& blas, device_span<const id_type> slots,
                            device_span<const std::int64_t> lengths, std::size_t window, matrix_view<float> out) const {
    constexpr const char* where = "cuda::session_transformer: encode_padded";
    cuda::detail::check_device_span(where, "slots", slots);
    cuda::detail::check_device_span(where, "lengths", lengths);
    cuda::detail::check_device_matrix(where, "out", out);
    const std::size_t batch = lengths.size();
    if (slots.size() != batch * window)
      ::recpipe::detail::fail(where, ": slots has ", slots.size(), " entries but lengths.size() * window = ", batch, " * ",
                              window);
    if (out.rows() != batch || out.cols() != spec_.embedding_dim)
      ::recpipe::detail::fail(where, ": out must be ", batch, " x ", spec_.embedding_dim, " (got ", out.rows(), " x ",
                              out.cols(), ")");
    if (window > spec_.max_length || (spec_.attend_to_padding && window != spec_.max_length))
      ::recpipe::detail::fail(where, ": window = ", window, " must be ",
                              spec_.attend_to_padding ? "max_length = " : "at most max_length = ", spec_.max_length);
    check_window(where, window);
    if (batch == 0) return cudaSuccess;
    if (window == 0) return zero_rows(backend, out);
    return run(backend, blas, slots.data(), lengths.data(), batch, window, out);
  }

 private:
  static void validate(const char* where, const session_transformer_spec& s) {
    if (s.num_items == 0 || s.embedding_dim == 0 || s.max_length == 0 || s.ffn_dim == 0)
      ::recpipe::detail::fail(where, ": num_items, embedding_dim, max_length and ffn_dim must be at least 1");
    if (s.num_heads == 0 || s.embedding_dim % s.num_heads != 0)
      ::recpipe::detail::fail(where, ": num_heads = ", s.num_heads, " must be at least 1 and divide embedding_dim = ",
                              s.embedding_dim);
    if (!(s.eps >= 0.0f) || !std::isfinite(s.eps) || !std::isfinite(s.embedding_scale))
      ::recpipe::detail::fail(where, ": eps must be finite and >= 0, and embedding_scale finite");
    if (s.query_only_norm && !s.norm_first)
      ::recpipe::detail::fail(where, ": query_only_norm is a pre-norm block: it needs norm_first = true");
    if (s.positions != math::position_rule::first_item && !s.left_padding)
      ::recpipe::detail::fail(where, ": positions numbered by window slot need left padding");
    if (s.attend_to_padding &&
        (!s.left_padding || s.positions == math::position_rule::first_item || s.padding_id < 0 ||
         static_cast<std::size_t>(s.padding_id) >= s.num_items))
      ::recpipe::detail::fail(where, ": attend_to_padding needs left padding, window-slot positions and padding_id in [0, ",
                              s.num_items, ")");
    if (s.timeline_mask && !s.attend_to_padding) ::recpipe::detail::fail(where, ": timeline_mask needs attend_to_padding");
    if (s.padding_id < -1 || (s.padding_id >= 0 && static_cast<std::size_t>(s.padding_id) >= s.num_items))
      ::recpipe::detail::fail(where, ": padding_id = ", s.padding_id, " must be -1 (none) or in [0, ", s.num_items, ")");
    if (s.embedding_dim > std::numeric_limits<std::uint32_t>::max() || s.max_length > std::numeric_limits<std::uint32_t>::max())
      ::recpipe::detail::fail(where, ": embedding_dim and max_length must fit 32 bits");
  }

  void check_window(const char* where, std::size_t window) const {
    if (attention_detail::shared_bytes(window, spec_.embedding_dim / spec_.num_heads) > attention_detail::max_shared_bytes)
      ::recpipe::detail::fail(where, ": a window of ", window, " slots with head width ", spec_.embedding_dim / spec_.num_heads,
                              " needs more shared memory than the attention kernel's 48 KiB");
  }

  static cudaError_t zero_rows(const cuda_backend& backend, matrix_view<float> out) {
    if (out.empty()) return cudaSuccess;
    return cudaMemset2DAsync(out.data(), cuda::detail::row_stride(out) * sizeof(float), 0, out.cols() * sizeof(float),
                             out.rows(), backend.stream());
  }

  // slots [batch * window], lengths [batch] (kept lengths): both device.
  cudaError_t run(const cuda_backend& backend, const blas_handle& blas, const std::int64_t* slots,
                  const std::int64_t* lengths, std::size_t batch, std::size_t window, matrix_view<float> out) const {
    if (batch > std::numeric_limits<std::int32_t>::max())
      ::recpipe::detail::fail("cuda::session_transformer: encode: ", batch, " sessions exceed the grid");
    const std::size_t e = spec_.embedding_dim, rows = batch * window;
    const bool full = spec_.attend_to_padding;
    cuda::detail::scratch scratch(backend);
    float *x = nullptr, *y = nullptr;
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&x, rows * e));
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&y, rows * e));
    transformer_detail::block_buffers buf;
    RECPIPE_CUDA_RETURN_IF_ERROR(transformer_detail::allocate(scratch, rows, e, spec_.ffn_dim, buf));
    kernels::embed_params p;
    p.slots = slots;
    p.lengths = lengths;
    p.sessions = static_cast<std::uint32_t>(batch);
    p.window = static_cast<std::uint32_t>(window);
    p.max_length = static_cast<std::uint32_t>(spec_.max_length);
    p.full_window = full;
    p.left = spec_.left_padding;
    p.positions = spec_.positions;
    p.items = items_.data();
    p.items_stride = e;
    p.num_items = spec_.num_items;
    p.padding_id = spec_.padding_id;
    p.positions_table = positions_.data();
    p.positions_stride = e;
    p.scale = spec_.embedding_scale;
    p.norm_gamma = transformer_detail::data_or_null(input_weight_);
    p.norm_beta = transformer_detail::data_or_null(input_bias_);
    p.input_norm = spec_.input_norm;
    p.timeline_mask = spec_.timeline_mask;
    p.eps = spec_.eps;
    p.out = x;
    p.out_stride = e;
    p.e = static_cast<std::uint32_t>(e);
    const cudaStream_t stream = backend.stream();
    kernels::embed_kernel<dispatch::block_threads>
        <<<transformer_detail::row_blocks(rows), dispatch::block_threads, 0, stream>>>(p);
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
    // The attention sees every slot of a full window (lengths null); the end of each block zeroes
    // the rows past a session (right padding) or, with the timeline mask, the padding slots.
    const std::int64_t* attention_lengths = full ? nullptr : lengths;
    const kernels::row_mask mask =
        full ? (spec_.timeline_mask ? kernels::row_mask::prefix : kernels::row_mask::none) : kernels::row_mask::suffix;
    using transformer_detail::block_kind;
    const block_kind kind = spec_.query_only_norm ? block_kind::query_norm
                            : spec_.norm_first    ? block_kind::pre_norm
                                                  : block_kind::post_norm;
    for (const transformer_layer_weights& w : layers_) {
      RECPIPE_CUDA_RETURN_IF_ERROR(transformer_detail::block(backend, blas, kind, matrix_view<const float>(x, rows, e),
                                                             attention_lengths, batch, window, w, true, mask, lengths,
                                                             matrix_view<float>(y, rows, e), buf));
      std::swap(x, y);
    }
    kernels::last_row_kernel<dispatch::block_threads><<<transformer_detail::row_blocks(batch), dispatch::block_threads, 0, stream>>>(
        x, e, lengths, static_cast<std::uint32_t>(batch), static_cast<std::uint32_t>(window), full,
        transformer_detail::data_or_null(final_weight_), transformer_detail::data_or_null(final_bias_), spec_.final_norm,
        spec_.eps, out.data(), cuda::detail::row_stride(out), static_cast<std::uint32_t>(e));
    RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
    return cudaSuccess;
  }

  session_transformer_spec spec_;
  device_buffer<float> storage_;
  matrix_view<const float> items_, positions_;
  device_span<const float> input_weight_, input_bias_, final_weight_, final_bias_;
  std::vector<transformer_layer_weights> layers_;
};

RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
