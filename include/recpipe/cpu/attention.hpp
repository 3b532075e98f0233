// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: multi-head self-attention over padded variable-length sessions, and a
// transformer encoder layer built from it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/detail/attention_avx512.hpp>
#include <recpipe/cpu/isa.hpp>
#include <recpipe/cpu/parallel.hpp>
#include <recpipe/cpu/workspace.hpp>
#include <recpipe/math/softmax.hpp>
#include <recpipe/math/vector.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! Weights of `nn.MultiheadAttention(E, num_heads, batch_first=True)` in PyTorch layout.
struct mha_weights {
  matrix_view<const float> in_proj_weight;   //!< [3E, E]: q, k, v projections stacked
  std::span<const float> in_proj_bias;       //!< [3E] or empty
  matrix_view<const float> out_proj_weight;  //!< [E, E]
  std::span<const float> out_proj_bias;      //!< [E] or empty
  std::size_t num_heads = 1;                 //!< divides E
};

namespace impl {
inline void check_sessions(const char* where, matrix_view<const float> x, std::span<const std::size_t> lengths,
                           std::size_t max_len) {
  check_view(where, "x", x);
  if (x.rows() != lengths.size() * max_len)
    detail::fail(where, ": x has ", x.rows(), " rows but lengths.size() * max_len = ", lengths.size(), " * ", max_len);
  for (std::size_t b = 0; b < lengths.size(); ++b)
    if (lengths[b] > max_len) detail::fail(where, ": lengths[", b, "] = ", lengths[b], " exceeds max_len = ", max_len);
}

inline void check_mha(const char* where, std::size_t e, const mha_weights& w) {
  if (w.num_heads == 0 || e % w.num_heads != 0)
    detail::fail(where, ": num_heads = ", w.num_heads, " must be >= 1 and divide the embedding width ", e);
  check_shape(where, "in_proj_weight", w.in_proj_weight, 3 * e, e);
  check_bias(where, "in_proj_bias", w.in_proj_bias, 3 * e);
  check_shape(where, "out_proj_weight", w.out_proj_weight, e, e);
  check_bias(where, "out_proj_bias", w.out_proj_bias, e);
}

inline void zero_padding(matrix_view<float> out, std::span<const std::size_t> lengths, std::size_t max_len) {
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t t = lengths[b]; t < max_len; ++t) std::fill_n(out.data() + (b * max_len + t) * out.stride(), out.cols(), 0.0f);
}

// The valid rows of x (session b's first lengths[b] rows), contiguous in memory taken from ws
// (in the caller's frame).
inline matrix_view<const float> pack_valid(matrix_view<const float> x, std::span<const std::size_t> lengths,
                                           std::size_t max_len, std::size_t valid, workspace& ws) {
  const std::size_t e = x.cols();
  float* packed = ws.take<float>(valid * e).data();
  std::size_t row = 0;
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t t = 0; t < lengths[b]; ++t, ++row)
      std::copy_n(x.data() + (b * max_len + t) * x.stride(), e, packed + row * e);
  return {packed, valid, e};
}

// Unchecked MHA; out must overlap neither input. Queries are projected from `query_x`, keys and
// values from `x` (the same view for self-attention). Padded rows are dropped before the
// projections (with lengths spread over 1..max_len that halves the GEMM work) and restored as
// zeros at the end.
inline void mha(matrix_view<const float> query_x, matrix_view<const float> x, std::span<const std::size_t> lengths,
                std::size_t max_len, const mha_weights& w, bool causal, matrix_view<float> out, workspace& ws) {
  const std::size_t e = x.cols(), rows = x.rows(), heads = w.num_heads, hd = e / heads;
  if (rows == 0 || e == 0) return;
  const workspace::frame frame(ws);
  std::size_t valid = 0;
  for (const std::size_t len : lengths) valid += len;
  const bool padded = valid != rows;
  const bool separate_query = query_x.data() != x.data() || query_x.stride() != x.stride();
  // 1. Valid rows only, contiguous (session b's items start at the running sum of lengths).
  const matrix_view<const float> input = padded ? pack_valid(x, lengths, max_len, valid, ws) : x;
  // 2. One GEMM for q, k and v of every valid row (two when the queries come from another input:
  //    q from query_x with the first E rows of in_proj, k and v from x with the other 2E).
  float* qkv = ws.take<float>(std::max<std::size_t>(valid * 3 * e, 1)).data();
  if (!separate_query) {
    linear(input, w.in_proj_weight, w.in_proj_bias, matrix_view<float>(qkv, valid, 3 * e));
  } else {
    const matrix_view<const float> query_input = padded ? pack_valid(query_x, lengths, max_len, valid, ws) : query_x;
    const auto bias = [&](std::size_t first, std::size_t count) {
      return w.in_proj_bias.empty() ? std::span<const float>() : w.in_proj_bias.subspan(first, count);
    };
    linear(query_input, w.in_proj_weight.middle_rows(0, e), bias(0, e), matrix_view<float>(qkv, valid, e, 3 * e));
    linear(input, w.in_proj_weight.middle_rows(e, 2 * e), bias(e, 2 * e),
           matrix_view<float>(qkv + e, valid, 2 * e, 3 * e));
  }
  // 3. Per session and head: scaled scores over the allowed keys, stable softmax, weighted sum of v.
  float* context = ws.take<float>(valid * e).data();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::size_t ld = 3 * e;
  const std::span<std::size_t> starts = ws.take<std::size_t>(lengths.size() + 1);
  starts[0] = 0;
  for (std::size_t b = 0; b < lengths.size(); ++b) starts[b + 1] = starts[b] + lengths[b];
  std::size_t work = 0;
  for (const std::size_t len : lengths) work += len * len * e;
  [[maybe_unused]] const bool avx512 = active_isa() == isa::avx512 && attention_avx512_supports(hd);
  parallel_for(lengths.size(), work, [&](std::size_t first_session, std::size_t last_session) {
  // Each thread of the parallel region (the caller's too) takes from its own thread's workspace.
  workspace& local = workspace::for_this_thread();
  const workspace::frame local_frame(local);
#if RECPIPE_HAS_AVX512_KERNELS
  if (avx512) {
    float* head_work = local.take<float>(attention_avx512_work_floats(max_len, hd)).data();
    for (std::size_t b = first_session; b < last_session; ++b)
      for (std::size_t h = 0; h < heads; ++h)
        attention_head_avx512(qkv + starts[b] * ld, ld, lengths[b], hd, h * hd, e + h * hd, 2 * e + h * hd, scale,
                              causal, context + starts[b] * e + h * hd, e, head_work);
    return;
  }
#endif
  float* probs = local.take<float>(max_len + hd).data();
  float* query = probs + max_len;
  for (std::size_t b = first_session; b < last_session; ++b) {
    const std::size_t len = lengths[b], first = starts[b];
    const float* base = qkv + first * ld;
    for (std::size_t h = 0; h < heads; ++h) {
      const float* keys = base + e + h * hd;
      const float* values = base + 2 * e + h * hd;
      for (std::size_t t = 0; t < len; ++t) {
        for (std::size_t c = 0; c < hd; ++c) query[c] = base[t * ld + h * hd + c] * scale;  // PyTorch scales q
        const std::size_t visible = causal ? t + 1 : len;
        std::size_t s = 0;
        for (; s + 4 <= visible; s += 4)
          math::dot4(query, keys + s * ld, keys + (s + 1) * ld, keys + (s + 2) * ld, keys + (s + 3) * ld, hd, probs + s);
        for (; s < visible; ++s) probs[s] = math::dot(query, keys + s * ld, hd);
        math::softmax_inplace(probs, visible);
        float* RECPIPE_RESTRICT ctx = context + (first + t) * e + h * hd;
        for (std::size_t c = 0; c < hd; ++c) ctx[c] = probs[0] * values[c];
        for (s = 1; s < visible; ++s) math::axpy(probs[s], values + s * ld, ctx, hd);
      }
    }
  }
  });
  // 4. Output projection, then scatter back to the padded layout with zero padding rows.
  const matrix_view<const float> ctx_view(context, valid, e);
  if (!padded) {
    linear(ctx_view, w.out_proj_weight, w.out_proj_bias, out);
    return;
  }
  float* projected = qkv;  // q, k and v are no longer needed
  linear(ctx_view, w.out_proj_weight, w.out_proj_bias, matrix_view<float>(projected, valid, e));
  std::size_t row = 0;
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t t = 0; t < max_len; ++t) {
      float* dst = out.data() + (b * max_len + t) * out.stride();
      if (t < lengths[b])
        std::copy_n(projected + (row++) * e, e, dst);
      else
        std::fill_n(dst, e, 0.0f);
    }
}
}  // namespace impl

//! @brief Multi-head self-attention over a batch of padded sessions, as
//! `nn.MultiheadAttention(E, heads, batch_first=True)(x, x, x, key_padding_mask, attn_mask)`.
//!
//! @param x        [lengths.size() * max_len, E]: session b's item t is row b * max_len + t.
//! @param lengths  valid prefix of each session, each <= max_len; keys at t >= lengths[b] are masked.
//! @param causal   when true, item t attends only to items 0..t.
//! @param out      same shape as x, must not overlap it. Rows past a session's length are written
//!                 as 0 (PyTorch leaves them unspecified); a session of length 0 gives all zeros.
//! Scores are scaled by 1/sqrt(E / heads); the softmax subtracts the row maximum, so it never
//! overflows. Complexity O(rows E^2 + sum len^2 E).
//! @param ws       scratch (see cpu::workspace); the calling thread's by default.
//! @throws recpipe::error for mismatched shapes, heads not dividing E, or a length above max_len.
//! @code
//! recpipe::cpu::mha_weights w{in_w.view(), in_b, out_w.view(), out_b, 2};
//! recpipe::cpu::multi_head_attention(x.view(), lengths, 50, w, true, y.view());
//! @endcode
inline void multi_head_attention(matrix_view<const float> x, std::span<const std::size_t> lengths, std::size_t max_len,
                                 const mha_weights& w, bool causal, matrix_view<float> out,
                                 workspace& ws = workspace::for_this_thread()) {
  impl::check_sessions("cpu::multi_head_attention", x, lengths, max_len);
  impl::check_mha("cpu::multi_head_attention", x.cols(), w);
  impl::check_shape("cpu::multi_head_attention", "out", out, x.rows(), x.cols());
  impl::mha(x, x, lengths, max_len, w, causal, out, ws);
}

//! @brief Multi-head attention whose queries come from another input than its keys and values,
//! as `nn.MultiheadAttention(E, heads, batch_first=True)(query_x, x, x, key_padding_mask,
//! attn_mask)` with both inputs laid out as the same sessions (SASRec.pytorch feeds the
//! layer-normed sequence as the query and the un-normed one as keys and values).
//!
//! @param query_x  same shape as x: row b * max_len + t is the query of session b's item t.
//! Everything else as in the self-attention overload above (masks, padded rows written as 0);
//! out must overlap neither input. Calling it with query_x == x gives the self-attention result.
//! @throws recpipe::error for mismatched shapes (naming the argument), heads not dividing E, or a
//!         length above max_len.
//! @code
//! recpipe::cpu::multi_head_attention(normed.view(), x.view(), lengths, 50, w, true, y.view());
//! @endcode
inline void multi_head_attention(matrix_view<const float> query_x, matrix_view<const float> x,
                                 std::span<const std::size_t> lengths, std::size_t max_len, const mha_weights& w,
                                 bool causal, matrix_view<float> out, workspace& ws = workspace::for_this_thread()) {
  impl::check_sessions("cpu::multi_head_attention", x, lengths, max_len);
  impl::check_shape("cpu::multi_head_attention", "query_x", query_x, x.rows(), x.cols());
  impl::check_mha("cpu::multi_head_attention", x.cols(), w);
  impl::check_shape("cpu::multi_head_attention", "out", out, x.rows(), x.cols());
  impl::mha(query_x, x, lengths, max_len, w, causal, out, ws);
}

//! Weights of `nn.TransformerEncoderLayer(E, heads, F, dropout=0, activation, batch_first=True,
//! norm_first)` in PyTorch layout.
struct transformer_layer_weights {
  mha_weights attention;
  matrix_view<const float> linear1_weight;  //!< [F, E]
  std::span<const float> linear1_bias;      //!< [F] or empty
  matrix_view<const float> linear2_weight;  //!< [E, F]
  std::span<const float> linear2_bias;      //!< [E] or empty
  std::span<const float> norm1_weight, norm1_bias, norm2_weight, norm2_bias;  //!< [E] each, or empty
  float eps = 1e-5f;
  activation act = activation::relu;  //!< relu or gelu, as the PyTorch layer's `activation`
  bool norm_first = false;
};

namespace impl {
// The shape checks every encoder layer variant runs on its input, weights and output.
inline void check_layer_weights(const char* where, matrix_view<const float> x, std::span<const std::size_t> lengths,
                                std::size_t max_len, const transformer_layer_weights& w, matrix_view<float> out) {
  impl::check_sessions(where, x, lengths, max_len);
  const std::size_t e = x.cols(), ff = w.linear1_weight.rows();
  impl::check_mha(where, e, w.attention);
  impl::check_shape(where, "linear1_weight", w.linear1_weight, ff, e);
  impl::check_bias(where, "linear1_bias", w.linear1_bias, ff);
  impl::check_shape(where, "linear2_weight", w.linear2_weight, e, ff);
  impl::check_bias(where, "linear2_bias", w.linear2_bias, e);
  impl::check_bias(where, "norm1_weight", w.norm1_weight, e);
  impl::check_bias(where, "norm1_bias", w.norm1_bias, e);
  impl::check_bias(where, "norm2_weight", w.norm2_weight, e);
  impl::check_bias(where, "norm2_bias", w.norm2_bias, e);
  impl::check_shape(where, "out", out, x.rows(), e);
}
}  // namespace impl

//! @brief One transformer encoder layer (inference; no dropout):
//! post-norm  y = LN2(h + FF(h)), h = LN1(x + MHA(x));
//! pre-norm   y = h + FF(LN2(h)), h = x + MHA(LN1(x)); FF(z) = linear2(act(linear1(z))).
//! Sessions, masks and padding as in multi_head_attention(); padded output rows are 0.
//! @param out same shape as x, must not overlap it.
//! @param ws  scratch (see cpu::workspace); the calling thread's by default.
//! @throws recpipe::error naming the weight or argument whose shape disagrees.
//! @code
//! recpipe::cpu::transformer_encoder_layer(x.view(), lengths, max_len, weights, true, y.view());
//! @endcode

inline void transformer_encoder_layer(matrix_view<const float> x, std::span<const std::size_t> lengths,
                                      std::size_t max_len, const transformer_layer_weights& w, bool causal,
                                      matrix_view<float> out, workspace& ws = workspace::for_this_thread()) {
  impl::check_layer_weights("cpu::transformer_encoder_layer", x, lengths, max_len, w, out);
  const std::size_t e = x.cols(), rows = x.rows(), ff = w.linear1_weight.rows();
  if (rows == 0 || e == 0) return;
  const workspace::frame frame(ws);
  const matrix_view<float> a(ws.take<float>(rows * e).data(), rows, e);
  const matrix_view<float> hidden(ws.take<float>(rows * std::max<std::size_t>(ff, 1)).data(), rows, ff);
  if (!w.norm_first) {
    impl::mha(x, x, lengths, max_len, w.attention, causal, a, ws);
    add(a, x);
    layer_norm(a, w.norm1_weight, w.norm1_bias, a, w.eps);
    linear(a, w.linear1_weight, w.linear1_bias, hidden, w.act);
    linear(hidden, w.linear2_weight, w.linear2_bias, out);
    add(out, a);
    layer_norm(out, w.norm2_weight, w.norm2_bias, out, w.eps);
  } else {
    layer_norm(x, w.norm1_weight, w.norm1_bias, a, w.eps);
    impl::mha(a, a, lengths, max_len, w.attention, causal, out, ws);
    add(out, x);
    layer_norm(out, w.norm2_weight, w.norm2_bias, a, w.eps);
    linear(a, w.linear1_weight, w.linear1_bias, hidden, w.act);
    linear(hidden, w.linear2_weight, w.linear2_bias, a);
    add(out, a);
  }
  impl::zero_padding(out, lengths, max_len);
}

//! @brief The SASRec.pytorch block (Kang & McAuley's SASRec as ported by pmixer; inference, no
//! dropout), where only the attention's query is layer-normed:
//!   q = LN1(x);  h = q + MHA(query q, keys and values x);  z = LN2(h);  y = z + FF(z),
//! FF(z) = linear2(act(linear1(z))) (its two Conv1d(kernel 1) layers are linear layers).
//! `w.norm_first` is ignored. Sessions, masks and padding as in multi_head_attention(); padded
//! output rows are 0.
//! @param out same shape as x, must not overlap it.
//! @param ws  scratch (see cpu::workspace); the calling thread's by default.
//! @throws recpipe::error naming the weight or argument whose shape disagrees.
//! @code
//! recpipe::cpu::query_norm_encoder_layer(x.view(), lengths, max_len, weights, true, y.view());
//! @endcode
inline void query_norm_encoder_layer(matrix_view<const float> x, std::span<const std::size_t> lengths,
                                     std::size_t max_len, const transformer_layer_weights& w, bool causal,
                                     matrix_view<float> out, workspace& ws = workspace::for_this_thread()) {
  impl::check_layer_weights("cpu::query_norm_encoder_layer", x, lengths, max_len, w, out);
  const std::size_t e = x.cols(), rows = x.rows(), ff = w.linear1_weight.rows();
  if (rows == 0 || e == 0) return;
  const workspace::frame frame(ws);
  const matrix_view<float> q(ws.take<float>(rows * e).data(), rows, e);
  const matrix_view<float> hidden(ws.take<float>(rows * std::max<std::size_t>(ff, 1)).data(), rows, ff);
  layer_norm(x, w.norm1_weight, w.norm1_bias, q, w.eps);
  impl::mha(q, x, lengths, max_len, w.attention, causal, out, ws);
  add(out, q);
  layer_norm(out, w.norm2_weight, w.norm2_bias, out, w.eps);  // z, in place
  linear(out, w.linear1_weight, w.linear1_bias, hidden, w.act);
  linear(hidden, w.linear2_weight, w.linear2_bias, q);  // q is free again
  add(out, q);
  impl::zero_padding(out, lengths, max_len);
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
