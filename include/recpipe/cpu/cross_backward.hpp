// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: backward passes of feature crossing (DCN-v2 cross layers and networks,
// DLRM dot interaction, FM second-order term, row-wise dot product scores).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/cross.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/dense_backward.hpp>
#include <recpipe/cpu/workspace.hpp>
#include <recpipe/math/vector.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

namespace impl {
// The element-wise part shared by both cross layer backwards: du = dout * x0 (into du, [batch, d]
// contiguous), dx0 += dout * u (skipped when dx0 is empty), dbias += column sums of du.
inline void cross_elementwise_backward(matrix_view<const float> x0, matrix_view<const float> u,
                                       matrix_view<const float> dout, matrix_view<float> dx0, float* du,
                                       std::span<float> dbias) {
  const std::size_t batch = x0.rows(), d = x0.cols();
  for (std::size_t r = 0; r < batch; ++r) {
    const float* a = x0.data() + r * x0.stride();
    const float* g = dout.data() + r * dout.stride();
    const float* ur = u.data() + r * u.stride();
    float* dur = du + r * d;
    for (std::size_t c = 0; c < d; ++c) dur[c] = g[c] * a[c];
    if (!dx0.empty()) {
      float* out = dx0.data() + r * dx0.stride();
      for (std::size_t c = 0; c < d; ++c) out[c] += g[c] * ur[c];
    }
    if (!dbias.empty())
      for (std::size_t c = 0; c < d; ++c) dbias[c] += dur[c];
  }
}
inline void check_cross_grads(const char* where, std::size_t batch, std::size_t d, matrix_view<const float> dout,
                              matrix_view<float> dx0, matrix_view<float> dxl, std::span<float> dbias) {
  check_shape(where, "dout", dout, batch, d);
  if (!dx0.empty()) check_shape(where, "dx0", dx0, batch, d);
  if (!dxl.empty()) check_shape(where, "dxl", dxl, batch, d);
  if (!dbias.empty() && dbias.size() != d)
    detail::fail(where, ": dbias must be empty or hold ", d, " values (got ", dbias.size(), ")");
  if (batch != 0 && d != 0 && !dx0.empty() && (dx0.data() == dout.data() || dx0.data() == dxl.data()))
    detail::fail(where, ": dx0 must not be dout or dxl (it accumulates while they are read)");
}
// dxl = dout + (dprojected) B where B is [k, d] stored row-major (dxl may be dout).
inline void cross_input_gradient(matrix_view<const float> dout, const float* dprojected, std::size_t k,
                                 matrix_view<const float> b, matrix_view<float> dxl) {
  const std::size_t batch = dout.rows(), d = dout.cols();
  if (dxl.data() != dout.data())
    for (std::size_t r = 0; r < batch; ++r)
      std::copy_n(dout.data() + r * dout.stride(), d, dxl.data() + r * dxl.stride());
  gemm(false, false, dprojected, k, b.data(), b.stride(), dxl.data(), dxl.stride(), batch, d, k, 1.0f, 1.0f);
}
}  // namespace impl

//! @brief Backward of one full-rank DCN-v2 cross layer, out = x0 * u + xl with the saved
//! projection u = xl weight^T + bias.
//!
//! du = dout * x0; dx0 += dout * u (accumulates: x0 feeds every layer of a stack); dxl = dout +
//! du weight (overwritten); dweight += du^T xl; dbias += column sums of du. Any gradient may be
//! empty (skipped). An empty batch changes nothing.
//! @param x0, xl, u, dout  [batch, d]; @param weight [d, d]
//! @param dx0   [batch, d] or empty; must not be dout or dxl
//! @param dxl   [batch, d] or empty; may be dout itself (in place)
//! @param dweight [d, d] or empty; @param dbias [d] or empty
//! @throws recpipe::error naming the argument whose shape disagrees.
//! @code
//! recpipe::cpu::cross_layer_backward(x0.view(), xl.view(), w.view(), u.view(), dout.view(), dx0.view(),
//!                                    dxl.view(), dw.view(), db);
//! @endcode
inline void cross_layer_backward(matrix_view<const float> x0, matrix_view<const float> xl,
                                 matrix_view<const float> weight, matrix_view<const float> u,
                                 matrix_view<const float> dout, matrix_view<float> dx0, matrix_view<float> dxl,
                                 matrix_view<float> dweight, std::span<float> dbias, workspace& ws = workspace::for_this_thread()) {
  constexpr const char* where = "cpu::cross_layer_backward";
  impl::check_view(where, "x0", x0);
  const std::size_t batch = x0.rows(), d = x0.cols();
  impl::check_shape(where, "xl", xl, batch, d);
  impl::check_shape(where, "weight", weight, d, d);
  impl::check_shape(where, "u", u, batch, d);
  impl::check_cross_grads(where, batch, d, dout, dx0, dxl, dbias);
  if (!dweight.empty()) impl::check_shape(where, "dweight", dweight, d, d);
  if (batch == 0 || d == 0) return;
  const workspace::frame frame(ws);
  float* du = ws.take<float>(batch * d).data();
  impl::cross_elementwise_backward(x0, u, dout, dx0, du, dbias);
  if (!dweight.empty())
    impl::gemm(true, false, du, d, xl.data(), xl.stride(), dweight.data(), dweight.stride(), d, d, batch, 1.0f, 1.0f);
  if (!dxl.empty()) impl::cross_input_gradient(dout, du, d, weight, dxl);
}

//! @brief Backward of one low-rank cross layer, out = x0 * u + xl with the saved v = xl down^T
//! [batch, r] and u = v up^T + bias [batch, d] (TorchRec LowRankCrossNet).
//!
//! du = dout * x0; dx0 += dout * u; dup += du^T v; dv = du up; ddown += dv^T xl; dxl = dout +
//! dv down (overwritten); dbias += column sums of du. Any gradient may be empty (skipped).
//! @param down [r, d]; @param up [d, r]; @param ddown [r, d] or empty; @param dup [d, r] or empty
//! @param dxl  may be dout itself (in place); @param dx0 must not be dout or dxl
//! @throws recpipe::error naming the argument whose shape disagrees.
//! @code
//! recpipe::cpu::cross_layer_low_rank_backward(x0.view(), xl.view(), down.view(), up.view(), v.view(), u.view(),
//!                                             dout.view(), dx0.view(), dxl.view(), ddown.view(), dup.view(), db);
//! @endcode
inline void cross_layer_low_rank_backward(matrix_view<const float> x0, matrix_view<const float> xl,
                                          matrix_view<const float> down, matrix_view<const float> up,
                                          matrix_view<const float> v, matrix_view<const float> u,
                                          matrix_view<const float> dout, matrix_view<float> dx0,
                                          matrix_view<float> dxl, matrix_view<float> ddown, matrix_view<float> dup,
                                          std::span<float> dbias, workspace& ws = workspace::for_this_thread()) {
  constexpr const char* where = "cpu::cross_layer_low_rank_backward";
  impl::check_view(where, "x0", x0);
  const std::size_t batch = x0.rows(), d = x0.cols(), rank = down.rows();
  impl::check_shape(where, "xl", xl, batch, d);
  impl::check_shape(where, "down", down, rank, d);
  impl::check_shape(where, "up", up, d, rank);
  impl::check_shape(where, "v", v, batch, rank);
  impl::check_shape(where, "u", u, batch, d);
  impl::check_cross_grads(where, batch, d, dout, dx0, dxl, dbias);
  if (!ddown.empty()) impl::check_shape(where, "ddown", ddown, rank, d);
  if (!dup.empty()) impl::check_shape(where, "dup", dup, d, rank);
  if (batch == 0 || d == 0) return;
  const workspace::frame frame(ws);
  float* du = ws.take<float>(batch * d).data();
  float* dv = ws.take<float>(batch * rank).data();
  impl::cross_elementwise_backward(x0, u, dout, dx0, du, dbias);
  if (!dup.empty())
    impl::gemm(true, false, du, d, v.data(), v.stride(), dup.data(), dup.stride(), d, rank, batch, 1.0f, 1.0f);
  if (rank == 0) {  // W = up down is zero: xl reaches out only through the residual
    if (!dxl.empty() && dxl.data() != dout.data())
      for (std::size_t r = 0; r < batch; ++r)
        std::copy_n(dout.data() + r * dout.stride(), d, dxl.data() + r * dxl.stride());
    return;
  }
  impl::gemm(false, false, du, d, up.data(), up.stride(), dv, rank, batch, rank, d, 1.0f, 0.0f);
  if (!ddown.empty())
    impl::gemm(true, false, dv, rank, xl.data(), xl.stride(), ddown.data(), ddown.stride(), rank, d, batch, 1.0f,
               1.0f);
  if (!dxl.empty()) impl::cross_input_gradient(dout, dv, rank, down, dxl);
}

//! @brief What a cross stack's forward pass keeps for its backward pass. Reused across batches
//! (the matrices keep their allocation when a later batch is no larger).
struct cross_trace {
  std::vector<matrix<float>> inputs;       //!< x_l, the input of layer l [batch, d] (inputs[0] copies x0)
  std::vector<matrix<float>> projections;  //!< u_l = W_l x_l + b_l [batch, d]
  std::vector<matrix<float>> low;          //!< v_l = x_l down_l^T [batch, r] (low-rank layers; else empty)

  //! Rows of the batch the trace holds (0 before the first forward pass).
  std::size_t batch() const { return inputs.empty() ? 0 : inputs[0].rows(); }
};

//! The gradients of one cross layer; all accumulate, any may be empty (not trained). Full rank
//! uses dweight [d, d]; low rank uses ddown [r, d] and dup [d, r].
struct cross_gradient {
  matrix_view<float> dweight;
  matrix_view<float> ddown;
  matrix_view<float> dup;
  std::span<float> dbias;
};

//! @brief cpu::cross_network that also records what cross_network_backward needs (x_l, u_l and,
//! for low-rank layers, v_l). Same result as cross_network up to rounding (cross_network may
//! run a packed kernel whose sums are ordered differently); the packed_* pointers are ignored.
//! @param x0     [batch, d]; copied into the trace
//! @param trace  overwritten; keep it until cross_network_backward
//! @param out    [batch, d]; may overlap x0
//! @throws recpipe::error naming the layer and argument whose shape disagrees.
//! @code
//! recpipe::cpu::cross_trace trace;
//! recpipe::cpu::cross_network_forward_train(x0.view(), layers, trace, out.view());
//! @endcode
inline void cross_network_forward_train(matrix_view<const float> x0, std::span<const cross_params> layers,
                                        cross_trace& trace, matrix_view<float> out) {
  constexpr const char* where = "cpu::cross_network_forward_train";
  impl::check_view(where, "x0", x0);
  const std::size_t batch = x0.rows(), d = x0.cols(), count = layers.size();
  impl::check_shape(where, "out", out, batch, d);
  for (std::size_t l = 0; l < count; ++l) impl::check_cross(where, d, layers[l], l);
  trace.inputs.resize(count + 1);  // inputs[count] holds the output until it is copied to out
  trace.projections.resize(count);
  trace.low.resize(count);
  trace.inputs[0].resize(batch, d);
  impl::copy_rows(x0, trace.inputs[0].view());
  const matrix_view<const float> first = trace.inputs[0].view();
  for (std::size_t l = 0; l < count; ++l) {
    const cross_params& p = layers[l];
    const matrix_view<const float> xl = trace.inputs[l].view();
    matrix<float>& u = trace.projections[l];
    u.resize(batch, d);
    if (!p.weight.empty()) {
      trace.low[l].resize(0, 0);
      linear(xl, p.weight, p.bias, u.view());
    } else {
      matrix<float>& v = trace.low[l];
      v.resize(batch, p.down.rows());
      linear(xl, p.down, {}, v.view());
      linear(v.view(), p.up, p.bias, u.view());
    }
    matrix<float>& next = trace.inputs[l + 1];
    next.resize(batch, d);
    for (std::size_t r = 0; r < batch; ++r)
      math::cross_epilogue(first.data() + r * d, u.data() + r * d, nullptr, xl.data() + r * d, next.data() + r * d, d);
  }
  impl::copy_rows(trace.inputs[count].view(), out);
}

//! @brief Backward of a cross stack through the trace of cross_network_forward_train:
//! grads[l] accumulates layer l's parameter gradients; dx0 (the gradient of x0, which reaches
//! the output through every layer and the residual chain) is overwritten, or skipped when empty.
//! @param dout   [batch, d]
//! @param dx0    [batch, d] or empty; must not overlap dout
//! @param grads  one per layer
//! @throws recpipe::error if the layers, trace, grads or a gradient shape disagree.
//! @code
//! std::vector<recpipe::cpu::cross_gradient> grads = {{dw0.view(), {}, {}, db0}};
//! recpipe::cpu::cross_network_backward(layers, trace, dout.view(), dx0.view(), grads);
//! @endcode
inline void cross_network_backward(std::span<const cross_params> layers, const cross_trace& trace,
                                   matrix_view<const float> dout, matrix_view<float> dx0,
                                   std::span<const cross_gradient> grads, workspace& ws = workspace::for_this_thread()) {
  constexpr const char* where = "cpu::cross_network_backward";
  const std::size_t count = layers.size();
  if (trace.inputs.size() != count + 1 || trace.projections.size() != count)
    detail::fail(where, ": the trace holds ", trace.projections.size(), " layers but ", count,
                 " are given (run cross_network_forward_train with the same layers first)");
  if (grads.size() != count) detail::fail(where, ": grads has ", grads.size(), " entries for ", count, " layers");
  const std::size_t batch = trace.batch(), d = trace.inputs[0].cols();
  for (std::size_t l = 0; l < count; ++l) impl::check_cross(where, d, layers[l], l);
  impl::check_shape(where, "dout", dout, batch, d);
  if (!dx0.empty()) impl::check_shape(where, "dx0", dx0, batch, d);
  if (batch == 0 || d == 0) return;
  if (!dx0.empty() && dx0.data() == dout.data()) detail::fail(where, ": dx0 must not be dout");
  // g: the gradient of the current x_l, updated in place layer by layer; dx0 collects the x0 terms.
  const workspace::frame frame(ws);
  float* g = ws.take<float>(batch * d).data();
  const matrix_view<float> gview(g, batch, d);
  impl::copy_rows(dout, gview);
  if (!dx0.empty())
    for (std::size_t r = 0; r < batch; ++r) std::fill_n(dx0.data() + r * dx0.stride(), d, 0.0f);
  const matrix_view<const float> x0 = trace.inputs[0].view();
  for (std::size_t l = count; l-- > 0;) {
    const cross_params& p = layers[l];
    const bool need_dxl = l > 0 || !dx0.empty();
    const matrix_view<float> dxl = need_dxl ? gview : matrix_view<float>();
    if (!p.weight.empty())
      cross_layer_backward(x0, trace.inputs[l].view(), p.weight, trace.projections[l].view(), gview, dx0, dxl,
                           grads[l].dweight, grads[l].dbias, ws);
    else
      cross_layer_low_rank_backward(x0, trace.inputs[l].view(), p.down, p.up, trace.low[l].view(),
                                    trace.projections[l].view(), gview, dx0, dxl, grads[l].ddown, grads[l].dup,
                                    grads[l].dbias, ws);
  }
  if (!dx0.empty()) add(dx0, gview);  // x_0 is x0: its own gradient joins the x0 terms
}

//! @brief Backward of cpu::dot_interaction: with z_p = <f_i, f_j> for the p-th pair (the forward's
//! order), df_i += dz_p f_j and df_j += dz_p f_i (2 dz_p f_i on the diagonal); dfeatures is
//! overwritten.
//! @param features   [batch, F*d], the forward input
//! @param dz         [batch, interaction_size(F, self_interaction)]; a strided sub-view is fine
//! @param dfeatures  [batch, F*d]; must not overlap features or dz
//! @throws recpipe::error if the column counts disagree with num_features.
//! @code
//! recpipe::cpu::dot_interaction_backward(feats.view(), 27, false, dz.view(), dfeats.view());
//! @endcode
inline void dot_interaction_backward(matrix_view<const float> features, std::size_t num_features,
                                     bool self_interaction, matrix_view<const float> dz,
                                     matrix_view<float> dfeatures) {
  constexpr const char* where = "cpu::dot_interaction_backward";
  impl::check_view(where, "features", features);
  if (num_features == 0 || features.cols() % num_features != 0)
    detail::fail(where, ": features has ", features.cols(), " columns, not a multiple of num_features = ",
                 num_features);
  const std::size_t f = num_features, d = features.cols() / f, batch = features.rows();
  impl::check_shape(where, "dz", dz, batch, interaction_size(f, self_interaction));
  impl::check_shape(where, "dfeatures", dfeatures, batch, features.cols());
  const std::size_t extra = self_interaction ? 1 : 0;
  for (std::size_t b = 0; b < batch; ++b) {
    const float* row = features.data() + b * features.stride();
    const float* g = dz.data() + b * dz.stride();
    float* out = dfeatures.data() + b * dfeatures.stride();
    std::fill_n(out, f * d, 0.0f);
    for (std::size_t i = 0; i < f; ++i)
      for (std::size_t j = 0; j < i + extra; ++j, ++g) {
        math::axpy(*g, row + j * d, out + i * d, d);
        math::axpy(*g, row + i * d, out + j * d, d);  // i == j: the second half of 2 dz f_i
      }
  }
}

//! @brief Backward of cpu::fm_second_order: d out_b / d v_f = (sum_g v_g) - v_f, so
//! dfeatures[b, f] = dout[b] * (sum_g v_g - v_f) (overwritten).
//! @param features   [batch, F*d]; @param dout [batch]
//! @param dfeatures  [batch, F*d]; must not overlap features
//! @throws recpipe::error on mismatched sizes.
//! @code
//! recpipe::cpu::fm_second_order_backward(emb.view(), 26, dscores, demb.view());
//! @endcode
inline void fm_second_order_backward(matrix_view<const float> features, std::size_t num_features,
                                     std::span<const float> dout, matrix_view<float> dfeatures,
                                     workspace& ws = workspace::for_this_thread()) {
  constexpr const char* where = "cpu::fm_second_order_backward";
  impl::check_view(where, "features", features);
  if (num_features == 0 || features.cols() % num_features != 0)
    detail::fail(where, ": features has ", features.cols(), " columns, not a multiple of num_features = ",
                 num_features);
  const std::size_t f = num_features, d = features.cols() / f, batch = features.rows();
  if (dout.size() != batch) detail::fail(where, ": dout holds ", dout.size(), " values for ", batch, " rows");
  impl::check_shape(where, "dfeatures", dfeatures, batch, features.cols());
  const workspace::frame frame(ws);
  float* total = ws.take<float>(d).data();
  for (std::size_t b = 0; b < batch; ++b) {
    const float* row = features.data() + b * features.stride();
    float* out = dfeatures.data() + b * dfeatures.stride();
    std::fill_n(total, d, 0.0f);
    for (std::size_t i = 0; i < f; ++i) math::axpy(1.0f, row + i * d, total, d);
    for (std::size_t i = 0; i < f; ++i)
      for (std::size_t c = 0; c < d; ++c) out[i * d + c] = dout[b] * (total[c] - row[i * d + c]);
  }
}

//! @brief Row-wise dot products s_b = <query_b, item_b> (a two-tower score).
//! @param query, item  [batch, d]; @param out [batch]
//! @code
//! recpipe::cpu::dot_rows(users.view(), items.view(), scores);
//! @endcode
inline void dot_rows(matrix_view<const float> query, matrix_view<const float> item, std::span<float> out) {
  impl::check_view("cpu::dot_rows", "query", query);
  impl::check_shape("cpu::dot_rows", "item", item, query.rows(), query.cols());
  if (out.size() != query.rows())
    detail::fail("cpu::dot_rows: out holds ", out.size(), " values for ", query.rows(), " rows");
  for (std::size_t b = 0; b < query.rows(); ++b)
    out[b] = math::dot(query.data() + b * query.stride(), item.data() + b * item.stride(), query.cols());
}

//! @brief Backward of dot_rows: dquery_b = ds_b item_b, ditem_b = ds_b query_b (overwritten;
//! either may be empty to skip it).
//! @param dscore  [batch]; @param dquery, ditem [batch, d] or empty; must not overlap the inputs
//! @throws recpipe::error on mismatched sizes.
//! @code
//! recpipe::cpu::dot_rows_backward(users.view(), items.view(), dscores, dusers.view(), ditems.view());
//! @endcode
inline void dot_rows_backward(matrix_view<const float> query, matrix_view<const float> item,
                              std::span<const float> dscore, matrix_view<float> dquery, matrix_view<float> ditem) {
  constexpr const char* where = "cpu::dot_rows_backward";
  impl::check_view(where, "query", query);
  const std::size_t batch = query.rows(), d = query.cols();
  impl::check_shape(where, "item", item, batch, d);
  if (dscore.size() != batch) detail::fail(where, ": dscore holds ", dscore.size(), " values for ", batch, " rows");
  if (!dquery.empty()) impl::check_shape(where, "dquery", dquery, batch, d);
  if (!ditem.empty()) impl::check_shape(where, "ditem", ditem, batch, d);
  for (std::size_t b = 0; b < batch; ++b) {
    const float* q = query.data() + b * query.stride();
    const float* it = item.data() + b * item.stride();
    if (!dquery.empty())
      for (std::size_t c = 0; c < d; ++c) dquery(b, c) = dscore[b] * it[c];
    if (!ditem.empty())
      for (std::size_t c = 0; c < d; ++c) ditem(b, c) = dscore[b] * q[c];
  }
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
