// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: dense layers (GEMM, linear + activation, layer norm, residual add, MLP).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/threads.hpp>
#include <recpipe/math/activation.hpp>
#include <recpipe/math/transformer.hpp>

#if defined(RECPIPE_HAS_CBLAS)
#include <cblas.h>
#endif
#include <Eigen/Core>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

using math::activation;

namespace impl {
// Argument checks shared by every CPU kernel header.
template <class T>
void check_view(const char* where, const char* name, const matrix_view<T>& m) {
  if (m.rows() > 1 && m.stride() < m.cols())
    detail::fail(where, ": ", name, " has stride ", m.stride(), " smaller than its ", m.cols(), " columns");
  if (!m.empty() && m.data() == nullptr) detail::fail(where, ": ", name, " is ", m.rows(), " x ", m.cols(), " but has no data");
}
template <class T>
void check_shape(const char* where, const char* name, const matrix_view<T>& m, std::size_t rows, std::size_t cols) {
  check_view(where, name, m);
  if (m.rows() != rows || m.cols() != cols)
    detail::fail(where, ": ", name, " must be ", rows, " x ", cols, " (got ", m.rows(), " x ", m.cols(), ")");
}
inline void check_bias(const char* where, const char* name, std::span<const float> bias, std::size_t size) {
  if (!bias.empty() && bias.size() != size)
    detail::fail(where, ": ", name, " must be empty or hold ", size, " values (got ", bias.size(), ")");
}

// C = alpha A B^T + beta C without checks. OpenBLAS when available (the denominator the
// benchmarks hold us to), else Eigen's own GEMM on zero-copy Maps.
inline void gemm_nt(const float* a, std::size_t lda, const float* b, std::size_t ldb, float* c, std::size_t ldc,
                    std::size_t m, std::size_t n, std::size_t k, float alpha, float beta) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // BLAS rejects k == 0 with some leading dimensions; the product is empty anyway
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  lda = std::max(lda, k);
  ldb = std::max(ldb, k);
  ldc = std::max(ldc, n);
#if defined(RECPIPE_HAS_CBLAS)
  const auto bi = [](std::size_t v) { return static_cast<blasint>(v); };
  if (m == 1)  // one row: a matrix-vector product skips sgemm's packing
    cblas_sgemv(CblasRowMajor, CblasNoTrans, bi(n), bi(k), alpha, b, bi(ldb), a, 1, beta, c, 1);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bi(m), bi(n), bi(k), alpha, a, bi(lda), b, bi(ldb), beta,
                c, bi(ldc));
#else
  using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using stride = Eigen::OuterStride<>;
  const Eigen::Map<const row_major, 0, stride> A(a, static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(k),
                                                 stride(static_cast<Eigen::Index>(lda)));
  const Eigen::Map<const row_major, 0, stride> B(b, static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(k),
                                                 stride(static_cast<Eigen::Index>(ldb)));
  Eigen::Map<row_major, 0, stride> C(c, static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(n),
                                     stride(static_cast<Eigen::Index>(ldc)));
  if (beta == 0.0f) {
    C.noalias() = alpha * A * B.transpose();
  } else {
    C *= beta;
    C.noalias() += alpha * A * B.transpose();
  }
#endif
}

// C [m, n] = alpha op(A) op(B) + beta C without checks, op = transpose when the flag is set:
// op(A) is [m, k] (A stored [k, m] when transposed), op(B) is [k, n] (B stored [n, k] when
// transposed). The backward passes need all four forms (dX = dY W, dW = dY^T X).
inline void gemm(bool trans_a, bool trans_b, const float* a, std::size_t lda, const float* b, std::size_t ldb, float* c,
                 std::size_t ldc, std::size_t m, std::size_t n, std::size_t k, float alpha, float beta) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  lda = std::max(lda, trans_a ? m : k);
  ldb = std::max(ldb, trans_b ? k : n);
  ldc = std::max(ldc, n);
#if defined(RECPIPE_HAS_CBLAS)
  const auto bi = [](std::size_t v) { return static_cast<blasint>(v); };
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, bi(m), bi(n),
              bi(k), alpha, a, bi(lda), b, bi(ldb), beta, c, bi(ldc));
#else
  using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using stride = Eigen::OuterStride<>;
  const auto ix = [](std::size_t v) { return static_cast<Eigen::Index>(v); };
  const Eigen::Map<const row_major, 0, stride> A(a, ix(trans_a ? k : m), ix(trans_a ? m : k), stride(ix(lda)));
  const Eigen::Map<const row_major, 0, stride> B(b, ix(trans_b ? n : k), ix(trans_b ? k : n), stride(ix(ldb)));
  Eigen::Map<row_major, 0, stride> C(c, ix(m), ix(n), stride(ix(ldc)));
  if (beta == 0.0f) C.setZero();
  else C *= beta;
  if (trans_a && trans_b) C.noalias() += alpha * A.transpose() * B.transpose();
  else if (trans_a) C.noalias() += alpha * A.transpose() * B;
  else if (trans_b) C.noalias() += alpha * A * B.transpose();
  else C.noalias() += alpha * A * B;
#endif
}

// y[r][c] = act(y[r][c] + bias[c]); one loop per activation so each vectorises.
template <class Op>
void rows_epilogue(matrix_view<float> y, const float* bias, Op op) {
  for (std::size_t r = 0; r < y.rows(); ++r) {
    float* RECPIPE_RESTRICT row = y.data() + r * y.stride();
    if (bias)
      for (std::size_t c = 0; c < y.cols(); ++c) row[c] = op(row[c] + bias[c]);
    else
      for (std::size_t c = 0; c < y.cols(); ++c) row[c] = op(row[c]);
  }
}
inline void bias_activation(matrix_view<float> y, const float* bias, activation act) {
  switch (act) {
    case activation::none:
      if (bias) rows_epilogue(y, bias, [](float v) { return v; });
      return;
    case activation::relu:
      return rows_epilogue(y, bias, [](float v) { return v < 0.0f ? 0.0f : v; });
    case activation::gelu:
      return rows_epilogue(y, bias, [](float v) { return math::activate(activation::gelu, v); });
    case activation::gelu_tanh:
      return rows_epilogue(y, bias, [](float v) { return math::activate(activation::gelu_tanh, v); });
    case activation::sigmoid:
      return rows_epilogue(y, bias, [](float v) { return math::activate(activation::sigmoid, v); });
  }
  detail::fail("cpu::linear: unknown activation ", static_cast<int>(act));
}

// Sum of n floats with independent lanes (vectorises without -ffast-math).
inline float sum(const float* RECPIPE_RESTRICT x, std::size_t n) {
  constexpr std::size_t lanes = 16;
  float acc[lanes] = {};
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes)
    for (std::size_t l = 0; l < lanes; ++l) acc[l] += x[i + l];
  float tail = 0.0f;
  for (; i < n; ++i) tail += x[i];
  for (std::size_t width = lanes / 2; width > 0; width /= 2)
    for (std::size_t l = 0; l < width; ++l) acc[l] += acc[l + width];
  return acc[0] + tail;
}
inline float sum_squared_deviation(const float* RECPIPE_RESTRICT x, std::size_t n, float mean) {
  constexpr std::size_t lanes = 16;
  float acc[lanes] = {};
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes)
    for (std::size_t l = 0; l < lanes; ++l) {
      const float d = x[i + l] - mean;
      acc[l] += d * d;
    }
  float tail = 0.0f;
  for (; i < n; ++i) tail += (x[i] - mean) * (x[i] - mean);
  for (std::size_t width = lanes / 2; width > 0; width /= 2)
    for (std::size_t l = 0; l < width; ++l) acc[l] += acc[l + width];
  return acc[0] + tail;
}
}  // namespace impl

//! @brief C = alpha * A * B^T + beta * C, with B given as [n, k] (the nn.Linear weight layout).
//!
//! @param a  [m, k]; @param b  [n, k]; @param c  [m, n], must not overlap a or b.
//! With beta == 0, C is overwritten (NaNs in it do not propagate), as in BLAS.
//! Uses OpenBLAS `cblas_sgemm` (`cblas_sgemv` for m == 1) when RECPIPE_HAS_CBLAS, else Eigen.
//! @throws recpipe::error on mismatched shapes or a stride smaller than the columns.
//! @code
//! recpipe::cpu::gemm_nt(x.view(), weight.view(), y.view());  // y = x W^T
//! @endcode
inline void gemm_nt(matrix_view<const float> a, matrix_view<const float> b, matrix_view<float> c, float alpha = 1.0f,
                    float beta = 0.0f) {
  impl::check_view("cpu::gemm_nt", "a", a);
  impl::check_view("cpu::gemm_nt", "b", b);
  if (a.cols() != b.cols())
    detail::fail("cpu::gemm_nt: a has ", a.cols(), " columns but b has ", b.cols(), " (both must be k)");
  impl::check_shape("cpu::gemm_nt", "c", c, a.rows(), b.rows());
  impl::gemm_nt(a.data(), a.stride(), b.data(), b.stride(), c.data(), c.stride(), a.rows(), b.rows(), a.cols(), alpha,
                beta);
}

//! @brief C = alpha * op(A) * op(B) + beta * C, op(X) = X^T where the flag is set: the general
//! product the backward passes use (dX = dY W is gemm(false, false), dW += dY^T X is
//! gemm(true, false, ..., 1, 1)).
//!
//! @param a  op(a) is [m, k]: a is [m, k], or [k, m] with trans_a
//! @param b  op(b) is [k, n]: b is [k, n], or [n, k] with trans_b
//! @param c  [m, n]; must not overlap a or b. With beta == 0, C is overwritten.
//! @throws recpipe::error on mismatched shapes.
//! @code
//! recpipe::cpu::gemm(true, false, dy.view(), x.view(), dw.view(), 1.0f, 1.0f);  // dW += dY^T X
//! @endcode
inline void gemm(bool trans_a, bool trans_b, matrix_view<const float> a, matrix_view<const float> b,
                 matrix_view<float> c, float alpha = 1.0f, float beta = 0.0f) {
  impl::check_view("cpu::gemm", "a", a);
  impl::check_view("cpu::gemm", "b", b);
  const std::size_t m = trans_a ? a.cols() : a.rows(), k = trans_a ? a.rows() : a.cols();
  const std::size_t kb = trans_b ? b.cols() : b.rows(), n = trans_b ? b.rows() : b.cols();
  if (k != kb) detail::fail("cpu::gemm: op(a) is ", m, " x ", k, " but op(b) is ", kb, " x ", n, " (inner sizes differ)");
  impl::check_shape("cpu::gemm", "c", c, m, n);
  impl::gemm(trans_a, trans_b, a.data(), a.stride(), b.data(), b.stride(), c.data(), c.stride(), m, n, k, alpha, beta);
}

//! @brief A PyTorch `nn.Linear` followed by an activation: y = act(x * weight^T + bias).
//!
//! @param x       [batch, in]
//! @param weight  [out, in] (PyTorch layout)
//! @param bias    [out], or empty for no bias
//! @param y       [batch, out]; must not overlap x or weight
//! @param act     epilogue applied in the same pass as the bias
//! @throws recpipe::error naming the argument whose shape disagrees.
//! @code
//! recpipe::cpu::linear(x.view(), w.view(), b, y.view(), recpipe::cpu::activation::relu);
//! @endcode
inline void linear(matrix_view<const float> x, matrix_view<const float> weight, std::span<const float> bias,
                   matrix_view<float> y, activation act = activation::none) {
  impl::check_view("cpu::linear", "x", x);
  impl::check_view("cpu::linear", "weight", weight);
  if (weight.cols() != x.cols())
    detail::fail("cpu::linear: weight is [", weight.rows(), ", ", weight.cols(), "] but x has ", x.cols(),
                 " columns (weight must be [out, in])");
  impl::check_bias("cpu::linear", "bias", bias, weight.rows());
  impl::check_shape("cpu::linear", "y", y, x.rows(), weight.rows());
  impl::gemm_nt(x.data(), x.stride(), weight.data(), weight.stride(), y.data(), y.stride(), x.rows(), weight.rows(),
                x.cols(), 1.0f, 0.0f);
  impl::bias_activation(y, bias.empty() ? nullptr : bias.data(), act);
}

//! @brief Applies `act` to every element of y in place.
//! @code
//! recpipe::cpu::apply_activation(y.view(), recpipe::cpu::activation::sigmoid);
//! @endcode
inline void apply_activation(matrix_view<float> y, activation act) {
  impl::check_view("cpu::apply_activation", "y", y);
  impl::bias_activation(y, nullptr, act);
}

//! @brief Layer normalisation per row, as `nn.LayerNorm(cols, eps)`: (x - mean) / sqrt(var + eps)
//! * gamma + beta with the biased variance.
//! @param gamma, beta  [cols] each, or both empty for no affine transform.
//! @param y  same shape as x; may be x itself (in place), must not otherwise overlap it.
//! @code
//! recpipe::cpu::layer_norm(x.view(), gamma, beta, x.view());  // in place
//! @endcode
inline void layer_norm(matrix_view<const float> x, std::span<const float> gamma, std::span<const float> beta,
                       matrix_view<float> y, float eps = 1e-5f) {
  impl::check_view("cpu::layer_norm", "x", x);
  impl::check_bias("cpu::layer_norm", "gamma", gamma, x.cols());
  impl::check_bias("cpu::layer_norm", "beta", beta, x.cols());
  impl::check_shape("cpu::layer_norm", "y", y, x.rows(), x.cols());
  if (!(eps >= 0.0f)) detail::fail("cpu::layer_norm: eps must be >= 0 (got ", eps, ")");
  const std::size_t n = x.cols();
  if (n == 0) return;
  for (std::size_t r = 0; r < x.rows(); ++r) {
    const float* in = x.data() + r * x.stride();
    float* out = y.data() + r * y.stride();
    const float mean = impl::sum(in, n) / static_cast<float>(n);
    const float variance = impl::sum_squared_deviation(in, n, mean) / static_cast<float>(n);
    const float inv_std = math::layer_norm_inv_std(variance, eps);  // the formulas the CUDA kernels run
    if (gamma.empty() && beta.empty()) {
      for (std::size_t c = 0; c < n; ++c) out[c] = math::layer_norm_value(in[c], mean, inv_std);
    } else {
      for (std::size_t c = 0; c < n; ++c)
        out[c] = math::layer_norm_value(in[c], mean, inv_std, gamma.empty() ? 1.0f : gamma[c], beta.empty() ? 0.0f : beta[c]);
    }
  }
}

//! @brief y += x element-wise (a residual connection).
//! @code
//! recpipe::cpu::add(hidden.view(), input.view());
//! @endcode
inline void add(matrix_view<float> y, matrix_view<const float> x) {
  impl::check_view("cpu::add", "x", x);
  impl::check_shape("cpu::add", "y", y, x.rows(), x.cols());
  for (std::size_t r = 0; r < y.rows(); ++r) {
    float* out = y.data() + r * y.stride();
    const float* in = x.data() + r * x.stride();
    for (std::size_t c = 0; c < y.cols(); ++c) out[c] += in[c];
  }
}

//! One layer of an MLP: weight [out, in] (PyTorch layout), bias [out] or empty, activation.
struct linear_layer {
  matrix_view<const float> weight;
  std::span<const float> bias;
  activation act = activation::none;
};

//! @brief Floats of scratch that mlp() needs: two ping-pong buffers of batch x widest hidden layer.
inline std::size_t mlp_scratch_size(std::size_t batch, std::span<const linear_layer> layers) {
  std::size_t widest = 0;
  for (std::size_t i = 0; i + 1 < layers.size(); ++i) widest = std::max(widest, layers[i].weight.rows());
  return 2 * batch * widest;
}

//! @brief Runs linear layers in order: x -> act0(x W0^T + b0) -> ... -> y.
//!
//! @param x        [batch, layers[0] in]
//! @param layers   at least one; layer i's in must equal layer i-1's out
//! @param y        [batch, last out]; must not overlap x
//! @param scratch  at least mlp_scratch_size(batch, layers) floats (holds the hidden activations)
//! @throws recpipe::error on an empty stack, a broken chain of widths, or short scratch.
//! @code
//! std::vector<recpipe::cpu::linear_layer> layers = {{w1.view(), b1, relu}, {w2.view(), b2}};
//! std::vector<float> scratch(recpipe::cpu::mlp_scratch_size(batch, layers));
//! recpipe::cpu::mlp(x.view(), layers, y.view(), scratch);
//! @endcode
inline void mlp(matrix_view<const float> x, std::span<const linear_layer> layers, matrix_view<float> y,
                std::span<float> scratch) {
  if (layers.empty()) detail::fail("cpu::mlp: layers is empty");
  std::size_t width = x.cols();
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].weight.cols() != width)
      detail::fail("cpu::mlp: layers[", i, "].weight is [", layers[i].weight.rows(), ", ", layers[i].weight.cols(),
                   "] but its input has ", width, " columns");
    width = layers[i].weight.rows();
  }
  const std::size_t batch = x.rows();
  if (scratch.size() < mlp_scratch_size(batch, layers))
    detail::fail("cpu::mlp: scratch holds ", scratch.size(), " floats but ", mlp_scratch_size(batch, layers),
                 " are needed (see mlp_scratch_size)");
  impl::check_shape("cpu::mlp", "y", y, batch, width);
  const std::size_t half = scratch.size() / 2;
  matrix_view<const float> input = x;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const bool last = i + 1 == layers.size();
    matrix_view<float> output =
        last ? y : matrix_view<float>(scratch.data() + (i % 2) * half, batch, layers[i].weight.rows());
    linear(input, layers[i].weight, layers[i].bias, output, layers[i].act);
    input = output;
  }
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
