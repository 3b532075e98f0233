// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: nn.Linear + activation and MLP stacks (cuBLASLt GEMM with the bias / ReLU
// fused into its epilogue; other activations in one recpipe epilogue kernel).
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/blas.cuh>
#include <recpipe/cuda/detail/checks.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/detail/scratch.cuh>
#include <recpipe/cuda/dispatch/dense.cuh>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/math/activation.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda::detail {
inline constexpr std::size_t blas_int_max = static_cast<std::size_t>(std::numeric_limits<int>::max());

template <class T>
void check_device_shape(const char* where, const char* name, const matrix_view<T>& m, std::size_t rows,
                        std::size_t cols) {
  check_device_matrix(where, name, m);
  if (m.rows() != rows || m.cols() != cols)
    ::recpipe::detail::fail(where, ": ", name, " is ", m.rows(), " x ", m.cols(), " but must be ", rows, " x ", cols);
  if (m.rows() > blas_int_max || m.cols() > blas_int_max || m.stride() > blas_int_max)
    ::recpipe::detail::fail(where, ": ", name, " is ", m.rows(), " x ", m.cols(), " (stride ", m.stride(),
                            "); cuBLAS takes at most ", blas_int_max, " per dimension");
}

inline void check_device_bias(const char* where, const char* name, device_span<const float> bias, std::size_t size) {
  check_device_span(where, name, bias);
  if (!bias.empty() && bias.size() != size)
    ::recpipe::detail::fail(where, ": ", name, " has ", bias.size(), " entries but must have ", size, " (or none)");
}

// The stride cuBLAS and the kernels use: views with one row may carry any stride.
template <class T>
std::size_t row_stride(const matrix_view<T>& m) {
  return m.rows() > 1 ? m.stride() : m.cols();
}
}  // namespace cuda::detail
RECPIPE_NAMESPACE_END

RECPIPE_CUDA_NAMESPACE_BEGIN

//! One layer of a device MLP: weight [out, in] (PyTorch layout), bias [out] or empty, activation.
struct linear_layer {
  matrix_view<const float> weight;
  device_span<const float> bias;
  math::activation act = math::activation::none;
};

//! @brief cpu::linear on the GPU: y = act(x * weight^T + bias), FP32 in and out, FP32 compute
//! (no TF32), as one cuBLASLt matmul whose epilogue adds the bias and applies ReLU
//! (CUBLASLT_EPILOGUE_BIAS / RELU / RELU_BIAS). GELU (exact or tanh) and sigmoid run in one
//! recpipe kernel after the matmul (math::activate, the CPU's formula: cuBLASLt's GELU is not
//! recpipe's), as does a bias that is not 16-byte aligned. The algorithm comes from cuBLASLt's
//! heuristic once per shape (cached in `blas`); its workspace from the backend's pool. When
//! cuBLASLt has no algorithm for a shape (or `blas.fused_epilogues()` is false, or in == 0) it
//! falls back to cublasSgemm + the recpipe bias/activation kernel. Either way the values are the
//! CPU's up to the GEMM's summation order.
//! @param x [batch, in]; @param weight [out, in]; @param bias [out] or empty; @param y [batch, out],
//! must not overlap x or weight. All device memory, any strides >= the columns.
//! @return the first launch or allocation error; never synchronises.
//! @throws recpipe::error on shape mismatches or null data; cublas_error when cuBLAS(Lt) refuses.
//! @code
//! recpipe::cuda::linear(backend, blas, x, w, b, y, recpipe::math::activation::relu);
//! @endcode
inline cudaError_t linear(const cuda_backend& backend, const blas_handle& blas, matrix_view<const float> x,
                          matrix_view<const float> weight, device_span<const float> bias, matrix_view<float> y,
                          math::activation act = math::activation::none) {
  constexpr const char* where = "cuda::linear";
  cuda::detail::check_device_shape(where, "weight", weight, weight.rows(), weight.cols());
  cuda::detail::check_device_shape(where, "x", x, x.rows(), weight.cols());
  cuda::detail::check_device_shape(where, "y", y, x.rows(), weight.rows());
  cuda::detail::check_device_bias(where, "bias", bias, weight.rows());
  return dispatch::gemm_nt_bias_activation(backend, blas, x.rows(), weight.rows(), weight.cols(), x.data(),
                                           cuda::detail::row_stride(x), weight.data(), cuda::detail::row_stride(weight),
                                           y.data(), cuda::detail::row_stride(y), bias.empty() ? nullptr : bias.data(),
                                           act);
}

//! @brief cpu::mlp on the GPU: x -> act0(x W0^T + b0) -> ... -> y, one `linear` per layer (so a
//! ReLU layer is a single cuBLASLt matmul with a RELU_BIAS epilogue). The hidden activations live
//! in stream-ordered temporaries from the backend's pool.
//! @param layers at least one; layer i's in must equal layer i-1's out. @param y must not overlap x.
//! @return / @throws as linear (the message names the layer).
//! @code
//! std::vector<recpipe::cuda::linear_layer> layers = {{w1, b1, relu}, {w2, b2}};
//! recpipe::cuda::mlp(backend, blas, x, layers, y);
//! @endcode
inline cudaError_t mlp(const cuda_backend& backend, const blas_handle& blas, matrix_view<const float> x,
                       std::span<const linear_layer> layers, matrix_view<float> y) {
  constexpr const char* where = "cuda::mlp";
  if (layers.empty()) ::recpipe::detail::fail(where, ": layers is empty");
  std::size_t width = x.cols(), widest = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].weight.cols() != width)
      ::recpipe::detail::fail(where, ": layers[", i, "].weight is [", layers[i].weight.rows(), ", ",
                              layers[i].weight.cols(), "] but its input has ", width, " columns");
    cuda::detail::check_device_shape(where, "layers[i].weight", layers[i].weight, layers[i].weight.rows(), width);
    cuda::detail::check_device_bias(where, "layers[i].bias", layers[i].bias, layers[i].weight.rows());
    width = layers[i].weight.rows();
    if (i + 1 < layers.size()) widest = std::max(widest, width);
  }
  cuda::detail::check_device_shape(where, "x", x, x.rows(), x.cols());
  cuda::detail::check_device_shape(where, "y", y, x.rows(), width);
  const std::size_t batch = x.rows();
  cuda::detail::scratch scratch(backend);
  float* hidden[2] = {nullptr, nullptr};
  if (layers.size() > 1) {
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&hidden[0], batch * widest));
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&hidden[1], batch * widest));
  }
  matrix_view<const float> input = x;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const bool last = i + 1 == layers.size();
    const matrix_view<float> output = last ? y : matrix_view<float>(hidden[i % 2], batch, layers[i].weight.rows());
    RECPIPE_CUDA_RETURN_IF_ERROR(linear(backend, blas, input, layers[i].weight, layers[i].bias, output, layers[i].act));
    input = output;
  }
  return cudaSuccess;
}

RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
