// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: a GRU layer with PyTorch nn.GRU semantics (forward, training trace, and
// backward through time), the recurrent core of GRU4Rec.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/workspace.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! @brief The weights of one GRU layer in PyTorch's layout (`nn.GRU`'s `weight_ih_l0`,
//! `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`): rows are the gates in the order r, z, n.
//!
//! weight_ih [3H, I], weight_hh [3H, H], bias_ih and bias_hh [3H] each, or both empty for a GRU
//! without biases (`nn.GRU(bias=False)`).
struct gru_weights {
  matrix_view<const float> weight_ih;
  matrix_view<const float> weight_hh;
  std::span<const float> bias_ih;
  std::span<const float> bias_hh;

  std::size_t input_size() const noexcept { return weight_ih.cols(); }
  std::size_t hidden_size() const noexcept { return weight_hh.cols(); }
};

//! @brief Where gru_step_backward / gru_sequence_backward ACCUMULATE (+=) the weight gradients,
//! shaped as gru_weights (biases may be empty when the layer has none).
struct gru_gradients {
  matrix_view<float> weight_ih;
  matrix_view<float> weight_hh;
  std::span<float> bias_ih;
  std::span<float> bias_hh;
};

//! @brief What gru_step keeps for its backward: copies of the step's input and previous hidden
//! state, the gate activations r, z, n ([B, 3H]) and W_hn h + b_hn ([B, H]). Self-contained: the
//! caller's buffers may change after the step. Reused across steps without reallocating once it
//! has seen its largest batch.
struct gru_step_trace {
  matrix<float> x;      // [B, I]
  matrix<float> h;      // [B, H]
  matrix<float> gates;  // [B, 3H]: r | z | n
  matrix<float> hn;     // [B, H]
};

//! @brief What gru_sequence keeps for its backward: one step trace per time step over the
//! sequences still running at that step (rows listed in `active[t]`).
struct gru_sequence_trace {
  std::vector<gru_step_trace> steps;
  std::vector<std::vector<std::size_t>> active;
  std::vector<std::size_t> lengths;
  std::size_t max_len = 0;
  std::size_t batch = 0;
};

namespace impl {
// torch's sigmoid: 1 / (1 + exp(-x)).
inline float gru_sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

// One row of gate math. gi = x W_ih^T + b_ih, gh = h W_hh^T + b_hh (both [3H], r | z | n):
// r = s(gi_r + gh_r), z = s(gi_z + gh_z), n = tanh(gi_n + r * gh_n), h' = (1 - z) n + z h.
inline void gru_gates_row(const float* gi, const float* gh, const float* h, std::size_t hs, float* gates, float* hn,
                          float* h_out) {
  for (std::size_t j = 0; j < hs; ++j) {
    const float r = gru_sigmoid(gi[j] + gh[j]);
    const float z = gru_sigmoid(gi[hs + j] + gh[hs + j]);
    const float n = std::tanh(gi[2 * hs + j] + r * gh[2 * hs + j]);
    if (gates != nullptr) {
      gates[j] = r;
      gates[hs + j] = z;
      gates[2 * hs + j] = n;
      hn[j] = gh[2 * hs + j];
    }
    h_out[j] = (1.0f - z) * n + z * h[j];
  }
}

// Backward of one row: from dh' and the trace, dgi (d pre-activations of the input side), dgh
// (of the hidden side; differs from dgi in the n block by the factor r) and dh through z.
inline void gru_gates_backward_row(const float* dh_out, const float* gates, const float* hn, const float* h,
                                   std::size_t hs, float* dgi, float* dgh, float* dh_direct) {
  for (std::size_t j = 0; j < hs; ++j) {
    const float r = gates[j], z = gates[hs + j], n = gates[2 * hs + j], g = dh_out[j];
    const float dn = g * (1.0f - z) * (1.0f - n * n);  // d (gi_n + r gh_n)
    const float dz = g * (h[j] - n) * z * (1.0f - z);   // d (gi_z + gh_z)
    const float dr = dn * hn[j] * r * (1.0f - r);       // d (gi_r + gh_r)
    dgi[j] = dr;
    dgi[hs + j] = dz;
    dgi[2 * hs + j] = dn;
    dgh[j] = dr;
    dgh[hs + j] = dz;
    dgh[2 * hs + j] = dn * r;
    dh_direct[j] = g * z;
  }
}

inline void check_gru_weights(const char* where, const gru_weights& w) {
  const std::size_t hs = w.weight_hh.cols();
  if (hs == 0) detail::fail(where, ": weight_hh has 0 columns (hidden size must be > 0)");
  check_shape(where, "weight_hh", w.weight_hh, 3 * hs, hs);
  check_view(where, "weight_ih", w.weight_ih);
  if (w.weight_ih.rows() != 3 * hs)
    detail::fail(where, ": weight_ih must have 3 * hidden = ", 3 * hs, " rows (got ", w.weight_ih.rows(), ")");
  if (w.bias_ih.empty() != w.bias_hh.empty())
    detail::fail(where, ": bias_ih and bias_hh must both be given or both be empty");
  check_bias(where, "bias_ih", w.bias_ih, 3 * hs);
  check_bias(where, "bias_hh", w.bias_hh, 3 * hs);
}

inline void check_gru_gradients(const char* where, const gru_weights& w, const gru_gradients& g) {
  const std::size_t hs = w.hidden_size(), in = w.input_size();
  check_shape(where, "grads.weight_ih", g.weight_ih, 3 * hs, in);
  check_shape(where, "grads.weight_hh", g.weight_hh, 3 * hs, hs);
  if (!w.bias_ih.empty() && (g.bias_ih.size() != 3 * hs || g.bias_hh.size() != 3 * hs))
    detail::fail(where, ": grads.bias_ih and grads.bias_hh must hold ", 3 * hs, " values each (got ", g.bias_ih.size(),
                 " and ", g.bias_hh.size(), ")");
}

// rows of x (stride sx) -> dst (contiguous) for the listed rows.
inline void gather_rows(const float* x, std::size_t sx, std::span<const std::size_t> rows, std::size_t cols, float* dst) {
  for (std::size_t a = 0; a < rows.size(); ++a) std::copy_n(x + rows[a] * sx, cols, dst + a * cols);
}
}  // namespace impl

//! @brief One GRU time step over a batch, exactly as `torch.nn.GRUCell` / one step of `nn.GRU`:
//!   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
//!   z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
//!   n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
//!   h' = (1 - z) * n + z * h
//! The two products run as cpu::gemm (OpenBLAS), the gate math row by row.
//!
//! @param x      [B, I]
//! @param h      [B, H], the previous hidden state (zeros at the start of a sequence)
//! @param h_out  [B, H]; may be the same memory as h (h is read into the trace / a scratch
//!               before h_out is written), must not overlap x.
//! @param trace  when not null, filled for gru_step_backward.
//! @param ws     scratch for the gate products (see cpu::workspace); the calling thread's by default.
//! NaN or inf in x, h or the weights propagates into h_out (no check, no error), as in PyTorch.
//! B = 0 does nothing.
//! @throws recpipe::error naming the argument whose shape disagrees.
//! @code
//! recpipe::cpu::gru_weights w{w_ih.view(), w_hh.view(), b_ih, b_hh};
//! recpipe::cpu::gru_step_trace trace;
//! recpipe::cpu::gru_step(x.view(), h.view(), w, h_next.view(), &trace);
//! @endcode
inline void gru_step(matrix_view<const float> x, matrix_view<const float> h, const gru_weights& w, matrix_view<float> h_out,
                     gru_step_trace* trace = nullptr, workspace& ws = workspace::for_this_thread()) {
  constexpr const char* where = "cpu::gru_step";
  impl::check_gru_weights(where, w);
  const std::size_t hs = w.hidden_size(), in = w.input_size(), batch = x.rows();
  impl::check_shape(where, "x", x, batch, in);
  impl::check_shape(where, "h", h, batch, hs);
  impl::check_shape(where, "h_out", h_out, batch, hs);
  if (trace != nullptr) {
    trace->x.resize(batch, in);
    trace->h.resize(batch, hs);
    trace->gates.resize(batch, 3 * hs);
    trace->hn.resize(batch, hs);
  }
  if (batch == 0) return;
  const workspace::frame frame(ws);
  // h may alias h_out: keep a contiguous copy of it (the trace's when there is one).
  float* h_copy = trace != nullptr ? trace->h.data() : ws.take<float>(batch * hs).data();
  for (std::size_t b = 0; b < batch; ++b) std::copy_n(h.data() + b * h.stride(), hs, h_copy + b * hs);
  if (trace != nullptr)
    for (std::size_t b = 0; b < batch; ++b) std::copy_n(x.data() + b * x.stride(), in, trace->x.data() + b * in);
  float* gi = ws.take<float>(batch * 3 * hs).data();
  float* gh = ws.take<float>(batch * 3 * hs).data();
  impl::gemm(false, true, x.data(), x.stride(), w.weight_ih.data(), w.weight_ih.stride(), gi, 3 * hs, batch, 3 * hs, in,
             1.0f, 0.0f);
  impl::gemm(false, true, h_copy, hs, w.weight_hh.data(), w.weight_hh.stride(), gh, 3 * hs, batch, 3 * hs, hs, 1.0f,
             0.0f);
  for (std::size_t b = 0; b < batch; ++b) {
    float* gi_row = gi + b * 3 * hs;
    float* gh_row = gh + b * 3 * hs;
    if (!w.bias_ih.empty())
      for (std::size_t j = 0; j < 3 * hs; ++j) {
        gi_row[j] += w.bias_ih[j];
        gh_row[j] += w.bias_hh[j];
      }
    impl::gru_gates_row(gi_row, gh_row, h_copy + b * hs, hs, trace ? trace->gates.data() + b * 3 * hs : nullptr,
                        trace ? trace->hn.data() + b * hs : nullptr, h_out.data() + b * h_out.stride());
  }
}

//! @brief Backward of gru_step (one step of backpropagation through time).
//!
//! @param dh_out  [B, H], dL/dh' (may be the same memory as dh)
//! @param trace   the trace filled by the forward step
//! @param dx      [B, I], OVERWRITTEN with dL/dx; a default-constructed view skips it
//! @param dh      [B, H], OVERWRITTEN with dL/dh (the gradient flowing to the previous step);
//!                a default-constructed view skips it
//! @param grads   weight gradients, ACCUMULATED (+=)
//! @param ws      scratch for the gate gradients (see cpu::workspace)
//! @throws recpipe::error on mismatched shapes (the trace's batch sets B).
//! @code
//! recpipe::cpu::gru_step_backward(dh_next.view(), w, trace, dx.view(), dh.view(), grads);
//! @endcode
inline void gru_step_backward(matrix_view<const float> dh_out, const gru_weights& w, const gru_step_trace& trace,
                              matrix_view<float> dx, matrix_view<float> dh, const gru_gradients& grads,
                              workspace& ws = workspace::for_this_thread()) {
  constexpr const char* where = "cpu::gru_step_backward";
  impl::check_gru_weights(where, w);
  impl::check_gru_gradients(where, w, grads);
  const std::size_t hs = w.hidden_size(), in = w.input_size(), batch = trace.gates.rows();
  if (trace.gates.cols() != 3 * hs || trace.x.rows() != batch || trace.x.cols() != in || trace.h.rows() != batch)
    detail::fail(where, ": the trace does not match these weights (call gru_step with a trace first)");
  impl::check_shape(where, "dh_out", dh_out, batch, hs);
  const bool want_dx = !(dx.rows() == 0 && dx.data() == nullptr), want_dh = !(dh.rows() == 0 && dh.data() == nullptr);
  if (want_dx) impl::check_shape(where, "dx", dx, batch, in);
  if (want_dh) impl::check_shape(where, "dh", dh, batch, hs);
  if (batch == 0) return;
  const workspace::frame frame(ws);
  float* dgi = ws.take<float>(batch * 3 * hs).data();
  float* dgh = ws.take<float>(batch * 3 * hs).data();
  float* dh_direct = ws.take<float>(batch * hs).data();
  for (std::size_t b = 0; b < batch; ++b)
    impl::gru_gates_backward_row(dh_out.data() + b * dh_out.stride(), trace.gates.data() + b * 3 * hs,
                                 trace.hn.data() + b * hs, trace.h.data() + b * hs, hs, dgi + b * 3 * hs,
                                 dgh + b * 3 * hs, dh_direct + b * hs);
  // dW_ih += dgi^T x, dW_hh += dgh^T h
  impl::gemm(true, false, dgi, 3 * hs, trace.x.data(), in, grads.weight_ih.data(), grads.weight_ih.stride(), 3 * hs, in,
             batch, 1.0f, 1.0f);
  impl::gemm(true, false, dgh, 3 * hs, trace.h.data(), hs, grads.weight_hh.data(), grads.weight_hh.stride(), 3 * hs, hs,
             batch, 1.0f, 1.0f);
  if (!grads.bias_ih.empty() && !w.bias_ih.empty())
    for (std::size_t b = 0; b < batch; ++b)
      for (std::size_t j = 0; j < 3 * hs; ++j) {
        grads.bias_ih[j] += dgi[b * 3 * hs + j];
        grads.bias_hh[j] += dgh[b * 3 * hs + j];
      }
  if (want_dx)
    impl::gemm(false, false, dgi, 3 * hs, w.weight_ih.data(), w.weight_ih.stride(), dx.data(), dx.stride(), batch, in,
               3 * hs, 1.0f, 0.0f);
  if (want_dh) {
    impl::gemm(false, false, dgh, 3 * hs, w.weight_hh.data(), w.weight_hh.stride(), dh.data(), dh.stride(), batch, hs,
               3 * hs, 1.0f, 0.0f);
    for (std::size_t b = 0; b < batch; ++b)
      for (std::size_t j = 0; j < hs; ++j) dh(b, j) += dh_direct[b * hs + j];
  }
}

//! @brief A GRU over a batch of right-padded sequences, as `nn.GRU(batch_first=True)` over
//! `pack_padded_sequence(x, lengths, enforce_sorted=False)`: sequence b is rows b * max_len + t of
//! x for t < lengths[b]; its hidden state stops at its own last step.
//!
//! @param x        [B * max_len, I] (padded rows are not read)
//! @param lengths  [B], each <= max_len; a 0-length sequence keeps h0 as its last state
//! @param h0       [B, H] initial hidden state, or a default-constructed view for zeros
//! @param outputs  [B * max_len, H] every hidden state (padded rows written 0), or a
//!                 default-constructed view to skip
//! @param h_last   [B, H] each sequence's last hidden state (h_n), or a default view to skip
//! @param trace    when not null, filled for gru_sequence_backward
//! @param ws       scratch for the state and the per-step gathers (see cpu::workspace)
//! NaN input propagates into the later states of its own sequence only (no error).
//! @throws recpipe::error naming the argument whose shape disagrees or a length > max_len.
//! @code
//! std::vector<std::size_t> lengths{3, 1};
//! recpipe::cpu::gru_sequence(x.view(), lengths, 3, w, {}, out.view(), last.view());
//! @endcode
inline void gru_sequence(matrix_view<const float> x, std::span<const std::size_t> lengths, std::size_t max_len,
                         const gru_weights& w, matrix_view<const float> h0, matrix_view<float> outputs,
                         matrix_view<float> h_last, gru_sequence_trace* trace = nullptr, workspace& ws = workspace::for_this_thread()) {
  constexpr const char* where = "cpu::gru_sequence";
  impl::check_gru_weights(where, w);
  const std::size_t hs = w.hidden_size(), in = w.input_size(), batch = lengths.size();
  impl::check_shape(where, "x", x, batch * max_len, in);
  for (std::size_t b = 0; b < batch; ++b)
    if (lengths[b] > max_len) detail::fail(where, ": lengths[", b, "] = ", lengths[b], " exceeds max_len = ", max_len);
  const bool has_h0 = !(h0.rows() == 0 && h0.data() == nullptr);
  if (has_h0) impl::check_shape(where, "h0", h0, batch, hs);
  const bool want_out = !(outputs.rows() == 0 && outputs.data() == nullptr);
  const bool want_last = !(h_last.rows() == 0 && h_last.data() == nullptr);
  if (want_out) impl::check_shape(where, "outputs", outputs, batch * max_len, hs);
  if (want_last) impl::check_shape(where, "h_last", h_last, batch, hs);
  const workspace::frame frame(ws);
  const std::span<float> state = ws.take<float>(batch * hs);
  std::fill(state.begin(), state.end(), 0.0f);
  if (has_h0)
    for (std::size_t b = 0; b < batch; ++b) std::copy_n(h0.data() + b * h0.stride(), hs, state.data() + b * hs);
  if (want_out)
    for (std::size_t r = 0; r < batch * max_len; ++r) std::fill_n(outputs.data() + r * outputs.stride(), hs, 0.0f);
  if (trace != nullptr) {
    trace->steps.resize(max_len);
    trace->active.resize(max_len);
    trace->lengths.assign(lengths.begin(), lengths.end());
    trace->max_len = max_len;
    trace->batch = batch;
  }
  // Sized for the whole batch once; each step uses its first `a` rows.
  const std::span<std::size_t> all_active = ws.take<std::size_t>(batch), all_x_rows = ws.take<std::size_t>(batch);
  float* xs = ws.take<float>(batch * in).data();
  float* hs_in = ws.take<float>(batch * hs).data();
  float* hs_out = ws.take<float>(batch * hs).data();
  for (std::size_t t = 0; t < max_len; ++t) {
    std::size_t a = 0;
    for (std::size_t b = 0; b < batch; ++b)
      if (lengths[b] > t) {
        all_active[a] = b;
        all_x_rows[a++] = b * max_len + t;
      }
    const std::span<const std::size_t> active_rows = all_active.first(a), x_rows = all_x_rows.first(a);
    impl::gather_rows(x.data(), x.stride(), x_rows, in, xs);
    impl::gather_rows(state.data(), hs, active_rows, hs, hs_in);
    gru_step({xs, a, in}, {hs_in, a, hs}, w, {hs_out, a, hs}, trace != nullptr ? &trace->steps[t] : nullptr, ws);
    if (trace != nullptr) trace->active[t].assign(active_rows.begin(), active_rows.end());
    for (std::size_t k = 0; k < a; ++k) {
      std::copy_n(hs_out + k * hs, hs, state.data() + active_rows[k] * hs);
      if (want_out) std::copy_n(hs_out + k * hs, hs, outputs.data() + x_rows[k] * outputs.stride());
    }
  }
  if (want_last)
    for (std::size_t b = 0; b < batch; ++b) std::copy_n(state.data() + b * hs, hs, h_last.data() + b * h_last.stride());
}

//! @brief Backpropagation through time for gru_sequence.
//!
//! @param d_outputs  [B * max_len, H] dL/d outputs (padded rows ignored), or a default view for 0
//! @param d_h_last   [B, H] dL/d h_last, or a default view for 0
//! @param dx         [B * max_len, I], OVERWRITTEN (padded rows 0), or a default view to skip
//! @param dh0        [B, H], OVERWRITTEN with dL/d h0, or a default view to skip
//! @param grads      weight gradients, ACCUMULATED (+=)
//! @param ws         scratch for the state gradient and the per-step rows (see cpu::workspace)
//! @throws recpipe::error on mismatched shapes or a trace from another batch.
//! @code
//! recpipe::cpu::gru_sequence_backward(d_out.view(), {}, w, trace, dx.view(), {}, grads);
//! @endcode
inline void gru_sequence_backward(matrix_view<const float> d_outputs, matrix_view<const float> d_h_last,
                                  const gru_weights& w, const gru_sequence_trace& trace, matrix_view<float> dx,
                                  matrix_view<float> dh0, const gru_gradients& grads,
                                  workspace& ws = workspace::for_this_thread()) {
  constexpr const char* where = "cpu::gru_sequence_backward";
  impl::check_gru_weights(where, w);
  impl::check_gru_gradients(where, w, grads);
  const std::size_t hs = w.hidden_size(), in = w.input_size(), batch = trace.batch, max_len = trace.max_len;
  if (trace.steps.size() != max_len || trace.lengths.size() != batch)
    detail::fail(where, ": the trace is incomplete (call gru_sequence with a trace first)");
  const bool has_dout = !(d_outputs.rows() == 0 && d_outputs.data() == nullptr);
  const bool has_dlast = !(d_h_last.rows() == 0 && d_h_last.data() == nullptr);
  const bool want_dx = !(dx.rows() == 0 && dx.data() == nullptr), want_dh0 = !(dh0.rows() == 0 && dh0.data() == nullptr);
  if (has_dout) impl::check_shape(where, "d_outputs", d_outputs, batch * max_len, hs);
  if (has_dlast) impl::check_shape(where, "d_h_last", d_h_last, batch, hs);
  if (want_dx) impl::check_shape(where, "dx", dx, batch * max_len, in);
  if (want_dh0) impl::check_shape(where, "dh0", dh0, batch, hs);
  const workspace::frame frame(ws);
  const std::span<float> dstate = ws.take<float>(batch * hs);
  std::fill(dstate.begin(), dstate.end(), 0.0f);
  if (has_dlast)
    for (std::size_t b = 0; b < batch; ++b) std::copy_n(d_h_last.data() + b * d_h_last.stride(), hs, dstate.data() + b * hs);
  if (want_dx)
    for (std::size_t r = 0; r < batch * max_len; ++r) std::fill_n(dx.data() + r * dx.stride(), in, 0.0f);
  float* dh_step = ws.take<float>(batch * hs).data();  // each step uses its first `a` rows
  float* dx_step = ws.take<float>(batch * in).data();
  for (std::size_t t = max_len; t-- > 0;) {
    const std::vector<std::size_t>& active = trace.active[t];
    const std::size_t a = active.size();
    if (a > batch) detail::fail(where, ": the trace is inconsistent (step ", t, " has ", a, " rows for a batch of ", batch, ")");
    for (std::size_t k = 0; k < a; ++k) {
      const std::size_t b = active[k];
      float* g = dh_step + k * hs;
      std::copy_n(dstate.data() + b * hs, hs, g);
      if (has_dout) {
        const float* d = d_outputs.data() + (b * max_len + t) * d_outputs.stride();
        for (std::size_t j = 0; j < hs; ++j) g[j] += d[j];
      }
    }
    const matrix_view<float> dxv = want_dx ? matrix_view<float>{dx_step, a, in} : matrix_view<float>{};
    gru_step_backward({dh_step, a, hs}, w, trace.steps[t], dxv, {dh_step, a, hs}, grads, ws);
    for (std::size_t k = 0; k < a; ++k) {
      const std::size_t b = active[k];
      std::copy_n(dh_step + k * hs, hs, dstate.data() + b * hs);
      if (want_dx) std::copy_n(dx_step + k * in, in, dx.data() + (b * max_len + t) * dx.stride());
    }
  }
  if (want_dh0)
    for (std::size_t b = 0; b < batch; ++b) std::copy_n(dstate.data() + b * hs, hs, dh0.data() + b * dh0.stride());
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
