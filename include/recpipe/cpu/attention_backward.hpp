// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: training forward (with a saved trace) and backward of multi-head
// self-attention and of the transformer encoder layer in cpu/attention.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/attention.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/dense_backward.hpp>
#include <recpipe/cpu/workspace.hpp>
#include <recpipe/cpu/parallel.hpp>
#include <recpipe/math/softmax.hpp>
#include <recpipe/math/vector.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! @brief What the training forward of multi_head_attention() saves for its backward, plus the
//! backward's workspace. Reuse one trace per layer across steps: its buffers grow to the largest
//! batch and are then reused (no steady-state allocation).
//!
//! Rows are *packed*: only the valid positions of each session, session b's item t at row
//! `starts[b] + t` (padding is dropped before the projections, as in the inference kernel).
struct mha_trace {
  std::vector<std::size_t> lengths;       //!< copy of the forward's lengths
  std::vector<std::size_t> starts;        //!< [batch + 1] packed row of each session's first item
  std::vector<std::size_t> prob_offsets;  //!< [batch] offset of session b's probabilities in `probs`
  std::size_t max_len = 0, embedding_dim = 0, num_heads = 0;
  bool causal = false;
  matrix<float> input;    //!< [valid, E] the attended rows of x
  matrix<float> qkv;      //!< [valid, 3E] q (unscaled), k, v
  matrix<float> context;  //!< [valid, E] concatenated heads before the output projection
  //! Attention probabilities: session b, head h, query t, key s at
  //! `prob_offsets[b] + (h * len + t) * len + s` (0 where the causal mask hides s).
  std::vector<float> probs;
  matrix<float> work, d_context, d_qkv;  //!< scratch of the forward / backward

  //! Number of valid (unpadded) rows.
  std::size_t valid_rows() const noexcept { return starts.empty() ? 0 : starts.back(); }
  //! Rows of the padded layout, lengths.size() * max_len.
  std::size_t padded_rows() const noexcept { return lengths.size() * max_len; }
};

//! Gradients of the `mha_weights` parameters; backward *accumulates* (+=) into them. A bias span
//! may be empty to skip that gradient (it must be empty when the weights have no bias).
struct mha_gradients {
  matrix_view<float> in_proj_weight;   //!< [3E, E]
  std::span<float> in_proj_bias;       //!< [3E] or empty
  matrix_view<float> out_proj_weight;  //!< [E, E]
  std::span<float> out_proj_bias;      //!< [E] or empty
};

namespace impl {

// Column sums of a packed [rows, cols] matrix added into `out` (a bias gradient).
inline void add_column_sums(matrix_view<const float> m, std::span<float> out) {
  if (out.empty()) return;
  for (std::size_t r = 0; r < m.rows(); ++r) {
    const float* row = m.data() + r * m.stride();
    for (std::size_t c = 0; c < m.cols(); ++c) out[c] += row[c];
  }
}

// Packed rows of a padded [batch * max_len, E] matrix (valid rows only).
inline void pack_rows(matrix_view<const float> padded, std::span<const std::size_t> lengths, std::size_t max_len,
                      matrix_view<float> packed) {
  std::size_t row = 0;
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t t = 0; t < lengths[b]; ++t, ++row)
      std::copy_n(padded.data() + (b * max_len + t) * padded.stride(), padded.cols(), packed.data() + row * packed.stride());
}

// Padded rows from packed ones; rows past a session's length are written as 0.
inline void unpack_rows(matrix_view<const float> packed, std::span<const std::size_t> lengths, std::size_t max_len,
                        matrix_view<float> padded) {
  std::size_t row = 0;
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t t = 0; t < max_len; ++t) {
      float* dst = padded.data() + (b * max_len + t) * padded.stride();
      if (t < lengths[b])
        std::copy_n(packed.data() + (row++) * packed.stride(), padded.cols(), dst);
      else
        std::fill_n(dst, padded.cols(), 0.0f);
    }
}

inline void check_mha_gradients(const char* where, std::size_t e, const mha_weights& w, const mha_gradients& g) {
  check_shape(where, "grads.in_proj_weight", g.in_proj_weight, 3 * e, e);
  check_shape(where, "grads.out_proj_weight", g.out_proj_weight, e, e);
  check_bias(where, "grads.in_proj_bias", g.in_proj_bias, 3 * e);
  check_bias(where, "grads.out_proj_bias", g.out_proj_bias, e);
  if (w.in_proj_bias.empty() && !g.in_proj_bias.empty())
    detail::fail(where, ": grads.in_proj_bias is given but the weights have no in_proj_bias");
  if (w.out_proj_bias.empty() && !g.out_proj_bias.empty())
    detail::fail(where, ": grads.out_proj_bias is given but the weights have no out_proj_bias");
}

// Training forward without argument checks; x is the padded layout, out too (may not overlap x).
inline void mha_train(matrix_view<const float> x, std::span<const std::size_t> lengths, std::size_t max_len,
                      const mha_weights& w, bool causal, matrix_view<float> out, mha_trace& tr) {
  const std::size_t e = x.cols(), heads = w.num_heads, hd = e / heads, batch = lengths.size();
  tr.lengths.assign(lengths.begin(), lengths.end());
  tr.max_len = max_len;
  tr.embedding_dim = e;
  tr.num_heads = heads;
  tr.causal = causal;
  tr.starts.assign(batch + 1, 0);
  tr.prob_offsets.assign(batch, 0);
  std::size_t prob_total = 0, work = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    tr.starts[b + 1] = tr.starts[b] + lengths[b];
    tr.prob_offsets[b] = prob_total;
    prob_total += heads * lengths[b] * lengths[b];
    work += lengths[b] * lengths[b] * e;
  }
  const std::size_t valid = tr.valid_rows();
  tr.input.resize(valid, e);
  tr.qkv.resize(valid, 3 * e);
  tr.context.resize(valid, e);
  tr.probs.assign(prob_total, 0.0f);
  if (valid == 0 || e == 0) {
    for (std::size_t r = 0; r < out.rows(); ++r) std::fill_n(out.data() + r * out.stride(), out.cols(), 0.0f);
    return;
  }
  pack_rows(x, lengths, max_len, tr.input.view());
  linear(tr.input.view(), w.in_proj_weight, w.in_proj_bias, tr.qkv.view());
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::size_t ld = 3 * e;
  const float* qkv = tr.qkv.data();
  float* context = tr.context.data();
  float* probs_all = tr.probs.data();
  parallel_for(batch, work, [&](std::size_t first_session, std::size_t last_session) {
    // Each thread of the parallel region (the caller's too) takes from its own thread's workspace.
    workspace& local = workspace::for_this_thread();
    const workspace::frame frame(local);
    float* query = local.take<float>(std::max<std::size_t>(hd, 1)).data();
    for (std::size_t b = first_session; b < last_session; ++b) {
      const std::size_t len = lengths[b], first = tr.starts[b];
      const float* base = qkv + first * ld;
      for (std::size_t h = 0; h < heads; ++h) {
        const float* keys = base + e + h * hd;
        const float* values = base + 2 * e + h * hd;
        for (std::size_t t = 0; t < len; ++t) {
          for (std::size_t c = 0; c < hd; ++c) query[c] = base[t * ld + h * hd + c] * scale;  // PyTorch scales q
          const std::size_t visible = causal ? t + 1 : len;
          float* p = probs_all + tr.prob_offsets[b] + (h * len + t) * len;
          for (std::size_t s = 0; s < visible; ++s) p[s] = math::dot(query, keys + s * ld, hd);
          math::softmax_inplace(p, visible);
          float* ctx = context + (first + t) * e + h * hd;
          std::fill_n(ctx, hd, 0.0f);
          for (std::size_t s = 0; s < visible; ++s) math::axpy(p[s], values + s * ld, ctx, hd);
        }
      }
    }
  });
  tr.work.resize(valid, e);
  linear(tr.context.view(), w.out_proj_weight, w.out_proj_bias, tr.work.view());
  unpack_rows(tr.work.view(), lengths, max_len, out);
}

// Backward without argument checks. d_out and d_x are padded layouts; d_x may alias d_out
// (d_out is fully read before d_x is written).
inline void mha_backward(matrix_view<const float> d_out, const mha_weights& w, mha_trace& tr, matrix_view<float> d_x,
                         const mha_gradients& g) {
  const std::size_t e = tr.embedding_dim, heads = tr.num_heads, hd = e / heads, batch = tr.lengths.size();
  const std::size_t valid = tr.valid_rows(), ld = 3 * e, max_len = tr.max_len;
  const std::span<const std::size_t> lengths(tr.lengths);
  if (valid == 0 || e == 0) {
    for (std::size_t r = 0; r < d_x.rows(); ++r) std::fill_n(d_x.data() + r * d_x.stride(), d_x.cols(), 0.0f);
    return;
  }
  // Output projection: dO (valid rows only; padded outputs are constants).
  tr.work.resize(valid, e);
  pack_rows(d_out, lengths, max_len, tr.work.view());
  const matrix_view<const float> d_o = tr.work.view();
  cpu::gemm(true, false, d_o, tr.context.view(), g.out_proj_weight, 1.0f, 1.0f);
  add_column_sums(d_o, g.out_proj_bias);
  tr.d_context.resize(valid, e);
  cpu::gemm(false, false, d_o, w.out_proj_weight, tr.d_context.view());
  // Per session and head: dV = P^T dC, dP = dC V^T, dS = P * (dP - rowsum(P * dP)), dQ = s dS K,
  // dK = s dS^T Q. Sessions own disjoint rows of dQKV, so they run in parallel.
  tr.d_qkv.resize(valid, ld);
  std::fill(tr.d_qkv.values().begin(), tr.d_qkv.values().end(), 0.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::size_t work = 0;
  for (const std::size_t len : lengths) work += 2 * len * len * e;
  const float* qkv = tr.qkv.data();
  const float* d_context = tr.d_context.data();
  float* d_qkv = tr.d_qkv.data();
  parallel_for(batch, work, [&](std::size_t first_session, std::size_t last_session) {
    // Each thread of the parallel region (the caller's too) takes from its own thread's workspace.
    workspace& local = workspace::for_this_thread();
    const workspace::frame frame(local);
    float* d_scores = local.take<float>(std::max<std::size_t>(max_len, 1)).data();
    for (std::size_t b = first_session; b < last_session; ++b) {
      const std::size_t len = lengths[b], first = tr.starts[b];
      const float* base = qkv + first * ld;
      float* d_base = d_qkv + first * ld;
      for (std::size_t h = 0; h < heads; ++h) {
        const float* queries = base + h * hd;
        const float* keys = base + e + h * hd;
        const float* values = base + 2 * e + h * hd;
        float* d_queries = d_base + h * hd;
        float* d_keys = d_base + e + h * hd;
        float* d_values = d_base + 2 * e + h * hd;
        for (std::size_t t = 0; t < len; ++t) {
          const std::size_t visible = tr.causal ? t + 1 : len;
          const float* p = tr.probs.data() + tr.prob_offsets[b] + (h * len + t) * len;
          const float* dc = d_context + (first + t) * e + h * hd;
          float weighted = 0.0f;
          for (std::size_t s = 0; s < visible; ++s) {
            d_scores[s] = math::dot(dc, values + s * ld, hd);
            weighted += p[s] * d_scores[s];
            math::axpy(p[s], dc, d_values + s * ld, hd);
          }
          float* dq = d_queries + t * ld;
          const float* q = queries + t * ld;
          for (std::size_t s = 0; s < visible; ++s) {
            const float ds = p[s] * (d_scores[s] - weighted) * scale;
            math::axpy(ds, keys + s * ld, dq, hd);
            math::axpy(ds, q, d_keys + s * ld, hd);
          }
        }
      }
    }
  });
  // Input projection.
  const matrix_view<const float> dqkv = tr.d_qkv.view();
  cpu::gemm(true, false, dqkv, tr.input.view(), g.in_proj_weight, 1.0f, 1.0f);
  add_column_sums(dqkv, g.in_proj_bias);
  tr.work.resize(valid, e);  // dO is no longer needed
  cpu::gemm(false, false, dqkv, w.in_proj_weight, tr.work.view());
  unpack_rows(tr.work.view(), lengths, max_len, d_x);
}

}  // namespace impl

//! @brief Training forward of multi_head_attention(): the same output, plus the trace its
//! backward needs (the attended rows of x, q/k/v, the attention probabilities of every session
//! and head, and the context).
//!
//! Arguments, masks and padding as in multi_head_attention(); padded output rows are 0.
//! The trace keeps copies, so x may change afterwards; it must not be shared between threads.
//! @throws recpipe::error for mismatched shapes, heads not dividing E, or a length above max_len.
//! @code
//! recpipe::cpu::mha_trace trace;
//! recpipe::cpu::multi_head_attention(x.view(), lengths, max_len, w, true, y.view(), trace);
//! recpipe::cpu::multi_head_attention_backward(dy.view(), w, trace, dx.view(), grads);
//! @endcode
inline void multi_head_attention(matrix_view<const float> x, std::span<const std::size_t> lengths, std::size_t max_len,
                                 const mha_weights& w, bool causal, matrix_view<float> out, mha_trace& trace) {
  const char* where = "cpu::multi_head_attention (training)";
  impl::check_sessions(where, x, lengths, max_len);
  impl::check_mha(where, x.cols(), w);
  impl::check_shape(where, "out", out, x.rows(), x.cols());
  impl::mha_train(x, lengths, max_len, w, causal, out, trace);
}

//! @brief Backward of multi-head attention, from the trace of its training forward.
//!
//! @param d_out  [batch * max_len, E] gradient of the loss w.r.t. the forward's output; rows past
//!               a session's length are ignored (those outputs are constant 0).
//! @param w      the same weights as the forward
//! @param trace  from multi_head_attention(..., trace); its workspace is reused
//! @param d_x    same shape as d_out, *overwritten* with dL/dx; padded rows get 0 (masked keys
//!               receive no gradient). May be the same matrix as d_out.
//! @param grads  parameter gradients, *accumulated* (+=)
//! Complexity O(rows E^2 + sum len^2 E), like the forward.
//! @throws recpipe::error when a shape disagrees with the trace or the weights.
//! @code
//! recpipe::cpu::mha_gradients g{d_in_w.view(), d_in_b, d_out_w.view(), d_out_b};
//! recpipe::cpu::multi_head_attention_backward(dy.view(), w, trace, dx.view(), g);
//! @endcode
inline void multi_head_attention_backward(matrix_view<const float> d_out, const mha_weights& w, mha_trace& trace,
                                          matrix_view<float> d_x, const mha_gradients& grads) {
  const char* where = "cpu::multi_head_attention_backward";
  const std::size_t e = trace.embedding_dim;
  impl::check_mha(where, e, w);
  if (w.num_heads != trace.num_heads)
    detail::fail(where, ": weights have ", w.num_heads, " heads but the trace was recorded with ", trace.num_heads);
  impl::check_shape(where, "d_out", d_out, trace.padded_rows(), e);
  impl::check_shape(where, "d_x", d_x, trace.padded_rows(), e);
  impl::check_mha_gradients(where, e, w, grads);
  impl::mha_backward(d_out, w, trace, d_x, grads);
}

//! @brief What the training forward of transformer_encoder_layer() saves for its backward, plus
//! the backward's workspace. All matrices are in the padded layout [batch * max_len, ...]; padded
//! rows hold the values of a zero input row (finite, never read back into valid rows).
struct transformer_layer_trace {
  mha_trace attention;
  bool norm_first = false;
  activation act = activation::relu;
  float eps = 1e-5f;
  matrix<float> input;           //!< x with padded rows set to 0
  matrix<float> attention_in;    //!< pre-norm: LN1(x), the attention's input (post-norm: unused)
  matrix<float> residual1;       //!< post-norm: x + MHA(x), LN1's input; pre-norm: h = x + MHA(LN1(x))
  matrix<float> ffn_in;          //!< post-norm: h = LN1(residual1); pre-norm: LN2(h)
  matrix<float> pre_activation;  //!< [rows, F] linear1's output
  matrix<float> activated;       //!< [rows, F] act(pre_activation)
  matrix<float> residual2;       //!< post-norm: h + FF(h), LN2's input (pre-norm: unused)
  matrix<float> d_a, d_b, d_hidden;  //!< backward workspace

  //! Rows of the padded layout.
  std::size_t padded_rows() const noexcept { return attention.padded_rows(); }
};

//! Gradients of `transformer_layer_weights`, *accumulated* (+=) by the backward. A span may be
//! empty to skip that gradient (it must be empty where the weight itself is empty).
struct transformer_layer_gradients {
  mha_gradients attention;
  matrix_view<float> linear1_weight;  //!< [F, E]
  std::span<float> linear1_bias;      //!< [F] or empty
  matrix_view<float> linear2_weight;  //!< [E, F]
  std::span<float> linear2_bias;      //!< [E] or empty
  std::span<float> norm1_weight, norm1_bias, norm2_weight, norm2_bias;  //!< [E] each, or empty
};

namespace impl {
inline std::size_t check_layer(const char* where, std::size_t e, const transformer_layer_weights& w) {
  const std::size_t ff = w.linear1_weight.rows();
  check_mha(where, e, w.attention);
  check_shape(where, "linear1_weight", w.linear1_weight, ff, e);
  check_bias(where, "linear1_bias", w.linear1_bias, ff);
  check_shape(where, "linear2_weight", w.linear2_weight, e, ff);
  check_bias(where, "linear2_bias", w.linear2_bias, e);
  check_bias(where, "norm1_weight", w.norm1_weight, e);
  check_bias(where, "norm1_bias", w.norm1_bias, e);
  check_bias(where, "norm2_weight", w.norm2_weight, e);
  check_bias(where, "norm2_bias", w.norm2_bias, e);
  if (w.act != activation::relu && w.act != activation::gelu)
    detail::fail(where, ": activation must be relu or gelu (as nn.TransformerEncoderLayer)");
  if (!(w.eps >= 0.0f)) detail::fail(where, ": eps must be >= 0 (got ", w.eps, ")");
  return ff;
}

inline void check_gradient_span(const char* where, const char* name, std::span<const float> weight,
                                std::span<float> grad) {
  if (grad.empty()) return;
  if (weight.empty()) detail::fail(where, ": grads.", name, " is given but the weights have no ", name);
  if (grad.size() != weight.size())
    detail::fail(where, ": grads.", name, " must hold ", weight.size(), " values (got ", grad.size(), ")");
}

inline void zero_rows_past(matrix_view<float> m, std::span<const std::size_t> lengths, std::size_t max_len) {
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t t = lengths[b]; t < max_len; ++t)
      std::fill_n(m.data() + (b * max_len + t) * m.stride(), m.cols(), 0.0f);
}

// y += x for two packed matrices of one shape.
inline void add_into(matrix_view<float> y, matrix_view<const float> x) {
  for (std::size_t r = 0; r < y.rows(); ++r) {
    float* out = y.data() + r * y.stride();
    const float* in = x.data() + r * x.stride();
    for (std::size_t c = 0; c < y.cols(); ++c) out[c] += in[c];
  }
}
}  // namespace impl

//! @brief Training forward of transformer_encoder_layer(): the same output (no dropout), plus
//! the trace transformer_encoder_layer_backward() needs.
//!
//! Arguments, masks and padding as in transformer_encoder_layer(); padded output rows are 0 and
//! the content of padded input rows is ignored (NaN there never reaches an output or a gradient).
//! @throws recpipe::error naming the weight or argument whose shape disagrees.
//! @code
//! recpipe::cpu::transformer_layer_trace trace;
//! recpipe::cpu::transformer_encoder_layer(x.view(), lengths, max_len, w, true, y.view(), trace);
//! @endcode
inline void transformer_encoder_layer(matrix_view<const float> x, std::span<const std::size_t> lengths,
                                      std::size_t max_len, const transformer_layer_weights& w, bool causal,
                                      matrix_view<float> out, transformer_layer_trace& tr) {
  const char* where = "cpu::transformer_encoder_layer (training)";
  impl::check_sessions(where, x, lengths, max_len);
  const std::size_t e = x.cols(), rows = x.rows();
  const std::size_t ff = impl::check_layer(where, e, w);
  impl::check_shape(where, "out", out, rows, e);
  tr.norm_first = w.norm_first;
  tr.act = w.act;
  tr.eps = w.eps;
  tr.input.resize(rows, e);
  for (std::size_t r = 0; r < rows; ++r) std::copy_n(x.data() + r * x.stride(), e, tr.input.data() + r * e);
  impl::zero_rows_past(tr.input.view(), lengths, max_len);
  tr.residual1.resize(rows, e);
  tr.ffn_in.resize(rows, e);
  tr.pre_activation.resize(rows, ff);
  tr.activated.resize(rows, ff);
  const matrix_view<const float> input = tr.input.view();
  if (!w.norm_first) {
    // residual1 = x + MHA(x); h = LN1(residual1); residual2 = h + FF(h); y = LN2(residual2)
    impl::mha_train(input, lengths, max_len, w.attention, causal, tr.residual1.view(), tr.attention);
    add(tr.residual1.view(), input);
    layer_norm(tr.residual1.view(), w.norm1_weight, w.norm1_bias, tr.ffn_in.view(), w.eps);
  } else {
    // h = x + MHA(LN1(x)); y = h + FF(LN2(h))
    tr.attention_in.resize(rows, e);
    layer_norm(input, w.norm1_weight, w.norm1_bias, tr.attention_in.view(), w.eps);
    impl::mha_train(tr.attention_in.view(), lengths, max_len, w.attention, causal, tr.residual1.view(), tr.attention);
    add(tr.residual1.view(), input);
    layer_norm(tr.residual1.view(), w.norm2_weight, w.norm2_bias, tr.ffn_in.view(), w.eps);
  }
  linear(tr.ffn_in.view(), w.linear1_weight, w.linear1_bias, tr.pre_activation.view());
  std::copy(tr.pre_activation.values().begin(), tr.pre_activation.values().end(), tr.activated.values().begin());
  apply_activation(tr.activated.view(), w.act);
  if (!w.norm_first) {
    tr.residual2.resize(rows, e);
    linear(tr.activated.view(), w.linear2_weight, w.linear2_bias, tr.residual2.view());
    add(tr.residual2.view(), tr.ffn_in.view());
    layer_norm(tr.residual2.view(), w.norm2_weight, w.norm2_bias, out, w.eps);
  } else {
    linear(tr.activated.view(), w.linear2_weight, w.linear2_bias, out);
    add(out, tr.residual1.view());
  }
  impl::zero_padding(out, lengths, max_len);
}

//! @brief Backward of one transformer encoder layer from the trace of its training forward.
//!
//! @param d_out  [batch * max_len, E] gradient w.r.t. the layer's output; padded rows are ignored
//! @param w      the same weights as the forward
//! @param trace  from transformer_encoder_layer(..., trace); its workspace is reused
//! @param d_x    same shape, *overwritten* with dL/dx (0 on padded rows); may be d_out itself
//! @param grads  parameter gradients, *accumulated* (+=); empty spans are skipped
//! Products run in cpu::gemm (through cpu::linear_backward); layer norm and activation use
//! cpu::layer_norm_backward and cpu::activation_backward.
//! @throws recpipe::error when a shape disagrees with the trace or the weights.
//! @code
//! recpipe::cpu::transformer_encoder_layer_backward(dy.view(), w, trace, dx.view(), grads);
//! @endcode
inline void transformer_encoder_layer_backward(matrix_view<const float> d_out, const transformer_layer_weights& w,
                                               transformer_layer_trace& tr, matrix_view<float> d_x,
                                               const transformer_layer_gradients& g) {
  const char* where = "cpu::transformer_encoder_layer_backward";
  const std::size_t e = tr.attention.embedding_dim, rows = tr.padded_rows();
  const std::size_t ff = impl::check_layer(where, e, w);
  if (w.attention.num_heads != tr.attention.num_heads || w.norm_first != tr.norm_first || w.act != tr.act ||
      ff != tr.pre_activation.cols() || tr.input.rows() != rows)
    detail::fail(where, ": the weights (heads, norm_first, activation, ffn width) differ from the recorded forward's");
  impl::check_shape(where, "d_out", d_out, rows, e);
  impl::check_shape(where, "d_x", d_x, rows, e);
  impl::check_mha_gradients(where, e, w.attention, g.attention);
  if (!g.linear1_weight.empty()) impl::check_shape(where, "grads.linear1_weight", g.linear1_weight, ff, e);
  if (!g.linear2_weight.empty()) impl::check_shape(where, "grads.linear2_weight", g.linear2_weight, e, ff);
  impl::check_gradient_span(where, "linear1_bias", w.linear1_bias, g.linear1_bias);
  impl::check_gradient_span(where, "linear2_bias", w.linear2_bias, g.linear2_bias);
  impl::check_gradient_span(where, "norm1_weight", w.norm1_weight, g.norm1_weight);
  impl::check_gradient_span(where, "norm1_bias", w.norm1_bias, g.norm1_bias);
  impl::check_gradient_span(where, "norm2_weight", w.norm2_weight, g.norm2_weight);
  impl::check_gradient_span(where, "norm2_bias", w.norm2_bias, g.norm2_bias);
  if (rows == 0 || e == 0) return;
  const std::span<const std::size_t> lengths(tr.attention.lengths);
  const std::size_t max_len = tr.attention.max_len;
  // d_a: the gradient flowing down the residual stream; padded rows start (and stay) at 0.
  tr.d_a.resize(rows, e);
  tr.d_b.resize(rows, e);
  tr.d_hidden.resize(rows, ff);
  const matrix_view<float> d_a = tr.d_a.view(), d_b = tr.d_b.view(), d_hidden = tr.d_hidden.view();
  for (std::size_t r = 0; r < rows; ++r) std::copy_n(d_out.data() + r * d_out.stride(), e, d_a.data() + r * e);
  impl::zero_rows_past(d_a, lengths, max_len);
  if (!w.norm_first) {
    // d residual2 = LN2'(d_out); FF; d h = d residual2 + FF'(...); d residual1 = LN1'(d h)
    layer_norm_backward(tr.residual2.view(), w.norm2_weight, d_a, d_a, g.norm2_weight, g.norm2_bias, w.eps);
    linear_backward(tr.activated.view(), w.linear2_weight, d_a, d_hidden, g.linear2_weight, g.linear2_bias);
    activation_backward(w.act, tr.pre_activation.view(), d_hidden, d_hidden);
    linear_backward(tr.ffn_in.view(), w.linear1_weight, d_hidden, d_b, g.linear1_weight, g.linear1_bias);
    impl::add_into(d_a, d_b);
    layer_norm_backward(tr.residual1.view(), w.norm1_weight, d_a, d_a, g.norm1_weight, g.norm1_bias, w.eps);
    // x feeds both the residual and the attention.
    impl::mha_backward(d_a, w.attention, tr.attention, d_b, g.attention);
    impl::add_into(d_b, d_a);
  } else {
    // d h = d_out + LN2'(FF'(d_out)); d x = d h + LN1'(MHA'(d h))
    linear_backward(tr.activated.view(), w.linear2_weight, d_a, d_hidden, g.linear2_weight, g.linear2_bias);
    activation_backward(w.act, tr.pre_activation.view(), d_hidden, d_hidden);
    linear_backward(tr.ffn_in.view(), w.linear1_weight, d_hidden, d_b, g.linear1_weight, g.linear1_bias);
    layer_norm_backward(tr.residual1.view(), w.norm2_weight, d_b, d_b, g.norm2_weight, g.norm2_bias, w.eps);
    impl::add_into(d_a, d_b);
    impl::mha_backward(d_a, w.attention, tr.attention, d_b, g.attention);
    layer_norm_backward(tr.input.view(), w.norm1_weight, d_b, d_b, g.norm1_weight, g.norm1_bias, w.eps);
    impl::add_into(d_b, d_a);
  }
  impl::zero_rows_past(d_b, lengths, max_len);
  for (std::size_t r = 0; r < rows; ++r) std::copy_n(d_b.data() + r * e, e, d_x.data() + r * d_x.stride());
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
