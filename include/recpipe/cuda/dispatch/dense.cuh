// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA dispatch for dense layers and feature crossing: cuBLAS GEMMs (row-major through
// the transposed column-major call) and the launches of the epilogue / interaction kernels.
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/blas.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/dispatch/offsets.cuh>
#include <recpipe/cuda/kernels/dense.cuh>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <recpipe/math/activation.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace dispatch {

namespace dense_detail {
// Enough blocks to fill an H200 (132 SMs x 8 resident 256-thread blocks) for the grid-stride
// element-wise epilogues; fewer when the matrix is small.
inline unsigned elementwise_blocks(std::size_t elements) {
  return static_cast<unsigned>(std::max<std::size_t>(1, std::min<std::size_t>(blocks_for(elements), 132 * 8)));
}
// Largest dynamic shared memory the interaction kernel asks for without an opt-in attribute.
inline constexpr std::size_t interaction_shared_bytes = 48 * 1024;
inline constexpr int interaction_threads = 256;
inline constexpr int fm_threads = 128;
}  // namespace dense_detail

//! C[m, n] = A[m, k] * B[n, k]^T for row-major matrices (strides in floats), i.e. the column-major
//! C^T = op_T(B) * A that cuBLAS computes; plain FP32 (no TF32), so results match the CPU GEMM up
//! to summation order. Binds `blas` to `stream` first. Throws cublas_error on a cuBLAS failure.
inline void gemm_nt(const blas_handle& blas, cudaStream_t stream, std::size_t m, std::size_t n, std::size_t k,
                    const float* a, std::size_t lda, const float* b, std::size_t ldb, float* c, std::size_t ldc) {
  if (m == 0 || n == 0) return;
  cuda::detail::throw_if_cublas_error(cublasSetStream(blas.get(), stream), __FILE__, __LINE__);
  const float alpha = 1.0f, beta = 0.0f;
  // k == 0: cuBLAS scales C by beta (0): the empty product, as cpu::gemm_nt gives.
  cuda::detail::throw_if_cublas_error(
      cublasSgemm(blas.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
                  &alpha, b, static_cast<int>(std::max<std::size_t>(ldb, std::max<std::size_t>(k, 1))), a,
                  static_cast<int>(std::max<std::size_t>(lda, std::max<std::size_t>(k, 1))), &beta, c,
                  static_cast<int>(std::max<std::size_t>(ldc, n))),
      __FILE__, __LINE__);
}

//! Queues y = act(y + bias) (bias nullable). Nothing to do for act none without a bias.
inline cudaError_t bias_activation(cudaStream_t stream, kernels::dense_view y, std::size_t rows, std::size_t cols,
                                   const float* bias, math::activation act) noexcept {
  if (rows == 0 || cols == 0 || (bias == nullptr && act == math::activation::none)) return cudaSuccess;
  kernels::bias_activation_kernel<block_threads>
      <<<dense_detail::elementwise_blocks(rows * cols), block_threads, 0, stream>>>(y, rows, cols, bias, act);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}

//! Queues out = x0 * (projected + bias) + xl element-wise.
inline cudaError_t cross_epilogue(cudaStream_t stream, kernels::const_dense_view x0, kernels::const_dense_view projected,
                                  const float* bias, kernels::const_dense_view xl, kernels::dense_view out,
                                  std::size_t rows, std::size_t d) noexcept {
  if (rows == 0 || d == 0) return cudaSuccess;
  kernels::cross_epilogue_kernel<block_threads>
      <<<dense_detail::elementwise_blocks(rows * d), block_threads, 0, stream>>>(x0, projected, bias, xl, out, rows, d);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}

//! Queues the dot interaction of `rows` rows (one block each; rows < 2^31 checked by the entry).
inline cudaError_t dot_interaction(cudaStream_t stream, kernels::const_dense_view features, std::size_t rows,
                                   std::uint32_t num_features, std::uint32_t d, bool self_interaction,
                                   std::uint32_t pairs, kernels::dense_view out) noexcept {
  if (rows == 0 || pairs == 0) return cudaSuccess;
  constexpr int threads = dense_detail::interaction_threads;
  const std::size_t bytes = static_cast<std::size_t>(num_features) * d * sizeof(float);
  if (bytes <= dense_detail::interaction_shared_bytes)
    kernels::dot_interaction_kernel<true, threads><<<static_cast<unsigned>(rows), threads, bytes, stream>>>(
        features, rows, num_features, d, self_interaction, pairs, out);
  else
    kernels::dot_interaction_kernel<false, threads><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
        features, rows, num_features, d, self_interaction, pairs, out);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}

//! Queues the FM second-order term of `rows` rows into out[rows].
inline cudaError_t fm_second_order(cudaStream_t stream, kernels::const_dense_view features, std::size_t rows,
                                   std::uint32_t num_features, std::uint32_t d, float* out) noexcept {
  if (rows == 0) return cudaSuccess;
  constexpr int threads = dense_detail::fm_threads;
  kernels::fm_second_order_kernel<threads>
      <<<static_cast<unsigned>(rows), threads, 0, stream>>>(features, rows, num_features, d, out);
  RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream);
  return cudaSuccess;
}

}  // namespace dispatch
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
