// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: backward passes of the dense layers in dense.hpp (activations, linear, MLP
// with a training trace, layer norm) and a row softmax with its backward.
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
#include <recpipe/math/activation.hpp>
#include <recpipe/math/softmax.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

namespace impl {
// dz = dy * f'(z) row by row, one loop per activation so each vectorises. out may be dy.
template <class Op>
void rows_backward(matrix_view<const float> z, matrix_view<const float> dy, matrix_view<float> dz, Op op) {
  for (std::size_t r = 0; r < z.rows(); ++r) {
    const float* zr = z.data() + r * z.stride();
    const float* gr = dy.data() + r * dy.stride();
    float* out = dz.data() + r * dz.stride();
    for (std::size_t c = 0; c < z.cols(); ++c) out[c] = op(zr[c], gr[c]);
  }
}

// The derivatives, written as PyTorch's autograd kernels write them (same constants, same order),
// so fp32 results agree to rounding.
inline float gelu_backward(float x, float g) {
  const float cdf = 0.5f * (1.0f + std::erf(x * 0.70710678118654752f));
  const float pdf = 0.39894228040143268f * std::exp(-0.5f * x * x);  // 1 / sqrt(2 pi)
  return g * (cdf + x * pdf);
}
inline float gelu_tanh_backward(float x, float g) {
  constexpr float beta = 0.79788456080286536f, kappa = 0.044715f;  // sqrt(2 / pi)
  const float x_sq = x * x;
  const float t = std::tanh(beta * (x + kappa * x_sq * x));
  const float left = 0.5f * x, right = 1.0f + t;
  return g * (0.5f * right + left * (1.0f - t * t) * beta * (1.0f + 3.0f * kappa * x_sq));
}
}  // namespace impl

//! @brief Backward of an element-wise activation: dz = dy * act'(z), z the pre-activation.
//!
//! relu passes dy where z > 0 (or z is NaN) and gives 0 elsewhere, as torch's threshold_backward;
//! gelu, gelu_tanh and sigmoid use PyTorch's derivative formulas. NaN in dy propagates.
//! @param z   [rows, cols] pre-activation (the input of the activation in the forward pass)
//! @param dy  [rows, cols] gradient of the activation's output
//! @param dz  [rows, cols]; may be dy itself (in place), must not otherwise overlap it.
//! @throws recpipe::error naming the argument whose shape differs from z's.
//! @code
//! recpipe::cpu::activation_backward(recpipe::cpu::activation::relu, z.view(), dy.view(), dy.view());
//! @endcode
inline void activation_backward(activation act, matrix_view<const float> z, matrix_view<const float> dy,
                                matrix_view<float> dz) {
  impl::check_view("cpu::activation_backward", "z", z);
  impl::check_shape("cpu::activation_backward", "dy", dy, z.rows(), z.cols());
  impl::check_shape("cpu::activation_backward", "dz", dz, z.rows(), z.cols());
  switch (act) {
    case activation::none:
      if (dz.data() != dy.data() || dz.stride() != dy.stride())
        impl::rows_backward(z, dy, dz, [](float, float g) { return g; });
      return;
    case activation::relu:
      return impl::rows_backward(z, dy, dz, [](float x, float g) { return x <= 0.0f ? 0.0f : g; });
    case activation::gelu:
      return impl::rows_backward(z, dy, dz, impl::gelu_backward);
    case activation::gelu_tanh:
      return impl::rows_backward(z, dy, dz, impl::gelu_tanh_backward);
    case activation::sigmoid:
      return impl::rows_backward(z, dy, dz, [](float x, float g) {
        const float s = 1.0f / (1.0f + std::exp(-x));  // the forward's formula, recomputed from z
        return g * (1.0f - s) * s;
      });
  }
  detail::fail("cpu::activation_backward: unknown activation ", static_cast<int>(act));
}

//! @brief Backward of `z = x weight^T + bias` (cpu::linear without its activation; run
//! activation_backward first for one).
//!
//! dx = dz weight (overwritten; skipped when dx is empty), dweight += dz^T x (skipped when
//! dweight is empty, e.g. a frozen layer), dbias += the column sums of dz (skipped when empty).
//! The products run in cpu::gemm (OpenBLAS when available). An empty batch leaves every gradient
//! as it was and writes nothing into dx.
//! @param x        [batch, in], the layer's input in the forward pass
//! @param weight   [out, in]
//! @param dz       [batch, out]
//! @param dx       [batch, in] or empty; must not overlap dz or weight
//! @param dweight  [out, in] or empty
//! @param dbias    [out] or empty
//! @throws recpipe::error naming the argument whose shape disagrees.
//! @code
//! recpipe::cpu::linear_backward(x.view(), w.view(), dz.view(), dx.view(), dw.view(), db);
//! @endcode
inline void linear_backward(matrix_view<const float> x, matrix_view<const float> weight, matrix_view<const float> dz,
                            matrix_view<float> dx, matrix_view<float> dweight, std::span<float> dbias) {
  constexpr const char* where = "cpu::linear_backward";
  impl::check_view(where, "x", x);
  impl::check_view(where, "weight", weight);
  if (weight.cols() != x.cols())
    detail::fail(where, ": weight is [", weight.rows(), ", ", weight.cols(), "] but x has ", x.cols(),
                 " columns (weight must be [out, in])");
  const std::size_t batch = x.rows(), in = x.cols(), out = weight.rows();
  impl::check_shape(where, "dz", dz, batch, out);
  if (!dx.empty()) impl::check_shape(where, "dx", dx, batch, in);
  if (!dweight.empty()) impl::check_shape(where, "dweight", dweight, out, in);
  if (!dbias.empty() && dbias.size() != out)
    detail::fail(where, ": dbias must be empty or hold ", out, " values (got ", dbias.size(), ")");
  if (!dx.empty() && batch != 0 && dx.data() == dz.data())
    detail::fail(where, ": dx must not be dz (dx = dz weight reads dz while writing)");
  if (batch == 0) return;
  if (!dx.empty())
    impl::gemm(false, false, dz.data(), dz.stride(), weight.data(), weight.stride(), dx.data(), dx.stride(), batch, in,
               out, 1.0f, 0.0f);
  if (!dweight.empty())
    impl::gemm(true, false, dz.data(), dz.stride(), x.data(), x.stride(), dweight.data(), dweight.stride(), out, in,
               batch, 1.0f, 1.0f);
  if (!dbias.empty())
    for (std::size_t r = 0; r < batch; ++r) {
      const float* row = dz.data() + r * dz.stride();
      for (std::size_t c = 0; c < out; ++c) dbias[c] += row[c];
    }
}

//! @brief What an MLP's forward pass keeps for its backward pass: each layer's input and
//! pre-activation. Reused across batches: the matrices keep their allocation when a later batch
//! is no larger, so steady-state training does not allocate.
struct mlp_trace {
  std::vector<matrix<float>> inputs;           //!< inputs[i]: layer i's input [batch, in_i] (inputs[0] copies x)
  std::vector<matrix<float>> pre_activations;  //!< z_i = inputs[i] W_i^T + b_i, [batch, out_i]

  //! Rows of the batch the trace holds (0 before the first forward pass).
  std::size_t batch() const { return inputs.empty() ? 0 : inputs[0].rows(); }
};

//! The gradients of one linear layer; both accumulate. Either may be empty (not trained).
struct linear_gradient {
  matrix_view<float> dweight;  //!< [out, in], like the layer's weight
  std::span<float> dbias;      //!< [out]
};

namespace impl {
inline std::size_t check_mlp(const char* where, std::size_t in, std::span<const linear_layer> layers) {
  if (layers.empty()) detail::fail(where, ": layers is empty");
  std::size_t width = in;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    check_view(where, "layers[i].weight", layers[i].weight);
    if (layers[i].weight.cols() != width)
      detail::fail(where, ": layers[", i, "].weight is [", layers[i].weight.rows(), ", ", layers[i].weight.cols(),
                   "] but its input has ", width, " columns");
    check_bias(where, "layers[i].bias", layers[i].bias, layers[i].weight.rows());
    width = layers[i].weight.rows();
  }
  return width;
}
inline void copy_rows(matrix_view<const float> from, matrix_view<float> to) {
  for (std::size_t r = 0; r < from.rows(); ++r)
    std::copy_n(from.data() + r * from.stride(), from.cols(), to.data() + r * to.stride());
}
}  // namespace impl

//! @brief cpu::mlp that also records what mlp_backward needs in `trace` (same y as cpu::mlp).
//!
//! @param x       [batch, layers[0] in]; copied into the trace, so it may change after the call
//! @param layers  at least one; layer i's in must equal layer i-1's out
//! @param trace   overwritten; keep it until mlp_backward
//! @param y       [batch, last out]; may overlap x
//! @throws recpipe::error on an empty stack, a broken chain of widths or a wrong y shape.
//! @code
//! recpipe::cpu::mlp_trace trace;
//! recpipe::cpu::mlp_forward_train(x.view(), layers, trace, y.view());
//! @endcode
inline void mlp_forward_train(matrix_view<const float> x, std::span<const linear_layer> layers, mlp_trace& trace,
                              matrix_view<float> y) {
  constexpr const char* where = "cpu::mlp_forward_train";
  impl::check_view(where, "x", x);
  const std::size_t width = impl::check_mlp(where, x.cols(), layers);
  const std::size_t batch = x.rows();
  impl::check_shape(where, "y", y, batch, width);
  trace.inputs.resize(layers.size());
  trace.pre_activations.resize(layers.size());
  trace.inputs[0].resize(batch, x.cols());
  impl::copy_rows(x, trace.inputs[0].view());
  for (std::size_t i = 0; i < layers.size(); ++i) {
    matrix<float>& z = trace.pre_activations[i];
    z.resize(batch, layers[i].weight.rows());
    linear(trace.inputs[i].view(), layers[i].weight, layers[i].bias, z.view(), activation::none);
    matrix_view<float> output = y;
    if (i + 1 < layers.size()) {
      trace.inputs[i + 1].resize(batch, z.cols());
      output = trace.inputs[i + 1].view();
    }
    impl::copy_rows(z.view(), output);
    impl::bias_activation(output, nullptr, layers[i].act);
  }
}

//! @brief Backward of an MLP through the trace of mlp_forward_train: grads[i] accumulates layer
//! i's weight and bias gradients; dx (the input gradient) is overwritten, or skipped when empty.
//!
//! @param layers  the same layers (same weights) as the forward pass
//! @param trace   filled by mlp_forward_train on this batch
//! @param dy      [batch, last out], gradient of the MLP's output
//! @param dx      [batch, layers[0] in] or empty
//! @param grads   one per layer
//! @param ws      scratch for the gradients between layers (see cpu::workspace)
//! @throws recpipe::error if the layers, trace, grads or a gradient shape disagree.
//! @code
//! std::vector<recpipe::cpu::linear_gradient> grads = {{dw1.view(), db1}, {dw2.view(), db2}};
//! recpipe::cpu::mlp_backward(layers, trace, dy.view(), {}, grads);
//! @endcode
inline void mlp_backward(std::span<const linear_layer> layers, const mlp_trace& trace, matrix_view<const float> dy,
                         matrix_view<float> dx, std::span<const linear_gradient> grads, workspace& ws = workspace::for_this_thread()) {
  constexpr const char* where = "cpu::mlp_backward";
  if (layers.empty()) detail::fail(where, ": layers is empty");
  if (trace.inputs.size() != layers.size() || trace.pre_activations.size() != layers.size())
    detail::fail(where, ": the trace holds ", trace.inputs.size(), " layers but ", layers.size(),
                 " are given (run mlp_forward_train with the same layers first)");
  if (grads.size() != layers.size())
    detail::fail(where, ": grads has ", grads.size(), " entries for ", layers.size(), " layers");
  const std::size_t width = impl::check_mlp(where, trace.inputs[0].cols(), layers);
  const std::size_t batch = trace.batch();
  for (std::size_t i = 0; i < layers.size(); ++i)
    if (trace.inputs[i].rows() != batch || trace.pre_activations[i].rows() != batch ||
        trace.pre_activations[i].cols() != layers[i].weight.rows())
      detail::fail(where, ": the trace of layer ", i, " does not match the layers (run mlp_forward_train first)");
  impl::check_shape(where, "dy", dy, batch, width);
  if (!dx.empty()) impl::check_shape(where, "dx", dx, batch, trace.inputs[0].cols());
  if (batch == 0) return;
  std::size_t widest = 0;
  for (const linear_layer& l : layers) widest = std::max({widest, l.weight.rows(), l.weight.cols()});
  // Two ping-pong buffers: `held` is the one the upstream gradient lives in (-1: the caller's dy).
  // A layer's dz is made in place there (or, from dy, in buffer 0); its dx goes to the other one.
  const workspace::frame frame(ws);
  float* buffers[2] = {ws.take<float>(batch * widest).data(), ws.take<float>(batch * widest).data()};
  matrix_view<const float> upstream = dy;
  int held = -1;
  for (std::size_t k = layers.size(); k-- > 0;) {
    const linear_layer& layer = layers[k];
    const std::size_t out = layer.weight.rows(), in = layer.weight.cols();
    matrix_view<const float> dz = upstream;
    if (layer.act != activation::none) {
      if (held < 0) held = 0;
      const matrix_view<float> target(buffers[held], batch, out);
      activation_backward(layer.act, trace.pre_activations[k].view(), upstream, target);
      dz = target;
    }
    if (k == 0) {
      linear_backward(trace.inputs[0].view(), layer.weight, dz, dx, grads[0].dweight, grads[0].dbias);
      break;
    }
    held = held == 0 ? 1 : 0;
    const matrix_view<float> dinput(buffers[held], batch, in);
    linear_backward(trace.inputs[k].view(), layer.weight, dz, dinput, grads[k].dweight, grads[k].dbias);
    upstream = dinput;
  }
}

//! @brief Layer-norm backward matching cpu::layer_norm (biased variance, statistics recomputed
//! from x): dx overwritten, dgamma += sum over rows of dy * x_hat, dbeta += column sums of dy.
//!
//! @param x       [rows, cols], the forward input
//! @param gamma   [cols], or empty for no affine transform (gamma = 1)
//! @param dy      [rows, cols]
//! @param dx      [rows, cols] or empty (skipped); may be dy itself, must not otherwise overlap dy or x
//! @param dgamma  [cols] or empty (skipped)
//! @param dbeta   [cols] or empty (skipped)
//! @param ws      scratch for one normalised row (see cpu::workspace)
//! @throws recpipe::error naming the argument whose shape disagrees, or for eps < 0.
//! @code
//! recpipe::cpu::layer_norm_backward(x.view(), gamma, dy.view(), dx.view(), dgamma, dbeta);
//! @endcode
inline void layer_norm_backward(matrix_view<const float> x, std::span<const float> gamma, matrix_view<const float> dy,
                                matrix_view<float> dx, std::span<float> dgamma, std::span<float> dbeta,
                                float eps = 1e-5f, workspace& ws = workspace::for_this_thread()) {
  constexpr const char* where = "cpu::layer_norm_backward";
  impl::check_view(where, "x", x);
  const std::size_t rows = x.rows(), n = x.cols();
  impl::check_bias(where, "gamma", gamma, n);
  impl::check_shape(where, "dy", dy, rows, n);
  if (!dx.empty()) impl::check_shape(where, "dx", dx, rows, n);
  if (!dgamma.empty() && dgamma.size() != n)
    detail::fail(where, ": dgamma must be empty or hold ", n, " values (got ", dgamma.size(), ")");
  if (!dbeta.empty() && dbeta.size() != n)
    detail::fail(where, ": dbeta must be empty or hold ", n, " values (got ", dbeta.size(), ")");
  if (!(eps >= 0.0f)) detail::fail(where, ": eps must be >= 0 (got ", eps, ")");
  if (n == 0) return;
  const workspace::frame frame(ws);
  float* x_hat = ws.take<float>(n).data();
  for (std::size_t r = 0; r < rows; ++r) {
    const float* in = x.data() + r * x.stride();
    const float* g = dy.data() + r * dy.stride();
    const float mean = impl::sum(in, n) / static_cast<float>(n);
    const float variance = impl::sum_squared_deviation(in, n, mean) / static_cast<float>(n);
    const float inv_std = 1.0f / std::sqrt(variance + eps);
    float sum_g = 0.0f, sum_g_xhat = 0.0f;  // of dx_hat = dy * gamma
    for (std::size_t c = 0; c < n; ++c) {
      x_hat[c] = (in[c] - mean) * inv_std;
      const float gx = g[c] * (gamma.empty() ? 1.0f : gamma[c]);
      sum_g += gx;
      sum_g_xhat += gx * x_hat[c];
      if (!dgamma.empty()) dgamma[c] += g[c] * x_hat[c];
      if (!dbeta.empty()) dbeta[c] += g[c];
    }
    if (dx.empty()) continue;
    const float mean_g = sum_g / static_cast<float>(n), mean_g_xhat = sum_g_xhat / static_cast<float>(n);
    float* out = dx.data() + r * dx.stride();
    for (std::size_t c = 0; c < n; ++c)
      out[c] = inv_std * (g[c] * (gamma.empty() ? 1.0f : gamma[c]) - mean_g - x_hat[c] * mean_g_xhat);
  }
}

//! @brief Row-wise softmax, as `torch.softmax(x, dim=-1)`: the maximum is subtracted first; a row
//! whose entries are all -inf (fully masked) becomes zeros (math::softmax_inplace).
//! @param y  same shape as x; may be x itself (in place).
//! @code
//! recpipe::cpu::softmax(logits.view(), probabilities.view());
//! @endcode
inline void softmax(matrix_view<const float> x, matrix_view<float> y) {
  impl::check_view("cpu::softmax", "x", x);
  impl::check_shape("cpu::softmax", "y", y, x.rows(), x.cols());
  for (std::size_t r = 0; r < x.rows(); ++r) {
    float* out = y.data() + r * y.stride();
    const float* in = x.data() + r * x.stride();
    if (out != in) std::copy_n(in, x.cols(), out);
    math::softmax_inplace(out, x.cols());
  }
}

//! @brief Backward of a row softmax from its output: dx = y * (dy - <dy, y>) per row.
//! @param y   [rows, cols], the softmax output
//! @param dy  [rows, cols]
//! @param dx  [rows, cols]; may be dy itself (in place), must not otherwise overlap dy.
//! @throws recpipe::error naming the argument whose shape differs from y's.
//! @code
//! recpipe::cpu::softmax_backward(probabilities.view(), dy.view(), dy.view());
//! @endcode
inline void softmax_backward(matrix_view<const float> y, matrix_view<const float> dy, matrix_view<float> dx) {
  impl::check_view("cpu::softmax_backward", "y", y);
  impl::check_shape("cpu::softmax_backward", "dy", dy, y.rows(), y.cols());
  impl::check_shape("cpu::softmax_backward", "dx", dx, y.rows(), y.cols());
  for (std::size_t r = 0; r < y.rows(); ++r) {
    const float* p = y.data() + r * y.stride();
    const float* g = dy.data() + r * dy.stride();
    float* out = dx.data() + r * dx.stride();
    float dot = 0.0f;
    for (std::size_t c = 0; c < y.cols(); ++c) dot += p[c] * g[c];
    for (std::size_t c = 0; c < y.cols(); ++c) out[c] = p[c] * (g[c] - dot);
  }
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
