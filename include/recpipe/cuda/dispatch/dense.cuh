// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA dispatch for dense layers and feature crossing: cuBLAS / cuBLASLt GEMMs (row-major
// through the transposed column-major call, bias and ReLU fused into cuBLASLt's epilogue where its
// definition is the CPU's) and the launches of the epilogue / interaction kernels.
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/blas.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/detail/scratch.cuh>
#include <recpipe/cuda/dispatch/offsets.cuh>
#include <recpipe/cuda/kernels/dense.cuh>

#include <cublasLt.h>
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

namespace dense_detail {
// The most workspace a cuBLASLt algorithm may ask for (NVIDIA's advice for Hopper); each call
// takes only what its algorithm needs, from the backend's pool.
inline constexpr std::uint64_t lt_max_workspace_bytes = std::uint64_t{32} << 20;
// A bias pointer below this alignment stays in the recpipe kernel (cuBLASLt reads the bias vector
// with vector loads in some algorithms; the heuristic does not take a bias alignment preference).
inline constexpr std::uint32_t lt_min_bias_alignment = 16;
}  // namespace dense_detail

//! How `act(x W^T + bias)` is split between cuBLASLt's epilogue and recpipe's kernel.
struct epilogue_split {
  cublasLtEpilogue_t lt = CUBLASLT_EPILOGUE_DEFAULT;   //!< what the cuBLASLt matmul applies
  bool kernel_bias = false;                              //!< the kernel adds the bias
  math::activation kernel_act = math::activation::none;  //!< the kernel applies this (none with no bias: no kernel)
  //! Whether a bias_activation launch follows the GEMM.
  constexpr bool needs_kernel() const noexcept { return kernel_bias || kernel_act != math::activation::none; }
};

//! @brief The split for one layer. cuBLASLt fuses the bias (BIAS: D += bias per output feature,
//! after the FP32 accumulation, as cpu::linear adds it) and ReLU (RELU / RELU_BIAS: max(x, 0)).
//! GELU stays in the kernel: cuBLASLt's GELU epilogue is the tanh approximation evaluated its own
//! way (recpipe's `gelu` is the exact erf form; for `gelu_tanh` cuBLASLt's evaluation, possibly a
//! hardware tanh approximation, is not known to match math::activate within the 2e-5 the tests
//! and the pipelines ask for). Sigmoid has no cuBLASLt epilogue. A bias that is not 16-byte
//! aligned, or that cuBLASLt cannot take, stays in the kernel too.
//! @code
//! auto s = split_epilogue(math::activation::relu, true, true);  // lt == RELU_BIAS, no kernel
//! @endcode
constexpr epilogue_split split_epilogue(math::activation act, bool has_bias, bool bias_in_gemm) noexcept {
  epilogue_split s;
  const bool lt_bias = has_bias && bias_in_gemm;
  if (act == math::activation::relu && (lt_bias || !has_bias)) {
    s.lt = has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
    return s;
  }
  s.lt = lt_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  s.kernel_bias = has_bias && !lt_bias;
  s.kernel_act = act;
  return s;
}

namespace dense_detail {
// Builds key's descriptors and asks the heuristic for one algorithm; caches the result (usable or
// not) in `blas`. Any heuristic failure or an empty answer makes the entry unusable: the caller
// then takes the cuBLAS path, which is always correct.
inline cuda::detail::lt_plan& plan_for(const blas_handle& blas, const cuda::detail::lt_plan_key& key,
                                       const float* bias) {
  using cuda::detail::throw_if_cublas_error;
  struct plan_guard {  // destroys the descriptors if anything below throws
    cuda::detail::lt_plan plan;
    bool armed = true;
    ~plan_guard() {
      if (armed) cuda::detail::destroy_plan(plan);
    }
  } guard;
  struct preference_guard {
    cublasLtMatmulPreference_t p = nullptr;
    ~preference_guard() {
      if (p != nullptr) (void)cublasLtMatmulPreferenceDestroy(p);
    }
  } preference;
  cuda::detail::lt_plan& plan = guard.plan;
  const auto set_desc = [&](cublasLtMatmulDescAttributes_t attribute, const void* value, std::size_t bytes) {
    throw_if_cublas_error(cublasLtMatmulDescSetAttribute(plan.desc, attribute, value, bytes), __FILE__, __LINE__);
  };
  throw_if_cublas_error(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), __FILE__, __LINE__);
  const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
  set_desc(CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose));
  set_desc(CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof(keep));
  const auto epilogue = static_cast<cublasLtEpilogue_t>(key.epilogue);
  set_desc(CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue));
  if (key.align_bias != 0) {  // the heuristic reads the pointer's alignment; each call sets its own
    set_desc(CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias));
    const cudaDataType_t bias_type = CUDA_R_32F;
    set_desc(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type));
  }
  // cuBLASLt's A is our B (weights) as column-major [k, n], transposed; its B is our A as [k, m].
  throw_if_cublas_error(cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_32F, key.k, key.n, static_cast<std::int64_t>(key.ldb)),
                        __FILE__, __LINE__);
  throw_if_cublas_error(cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_32F, key.k, key.m, static_cast<std::int64_t>(key.lda)),
                        __FILE__, __LINE__);
  throw_if_cublas_error(cublasLtMatrixLayoutCreate(&plan.c, CUDA_R_32F, key.n, key.m, static_cast<std::int64_t>(key.ldc)),
                        __FILE__, __LINE__);
  throw_if_cublas_error(cublasLtMatmulPreferenceCreate(&preference.p), __FILE__, __LINE__);
  const auto set_pref = [&](cublasLtMatmulPreferenceAttributes_t attribute, const void* value, std::size_t bytes) {
    throw_if_cublas_error(cublasLtMatmulPreferenceSetAttribute(preference.p, attribute, value, bytes), __FILE__,
                          __LINE__);
  };
  const std::uint64_t workspace = lt_max_workspace_bytes;
  set_pref(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace));
  // The default assumes 256-byte aligned matrices; sub-views and padded rows are often less.
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.align_b, sizeof(key.align_b));
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.align_a, sizeof(key.align_a));
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align_c, sizeof(key.align_c));
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align_c, sizeof(key.align_c));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(blas.lt(), plan.desc, plan.a, plan.b, plan.c, plan.c,
                                                               preference.p, 1, &result, &returned);
  if (status == CUBLAS_STATUS_SUCCESS && returned > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    plan.usable = true;
    plan.algo = result.algo;
    plan.workspace_bytes = result.workspaceSize;
  }
  cuda::detail::lt_plan& cached = blas.plans().insert(key, plan);
  guard.armed = false;  // the cache owns the descriptors now
  return cached;
}
}  // namespace dense_detail

//! @brief C[m, n] = epilogue(A[m, k] * B[n, k]^T) as one cuBLASLt matmul (FP32 inputs, FP32
//! compute without TF32: CUBLAS_COMPUTE_32F), with the plan cached in `blas` per shape.
//! `epilogue` is DEFAULT, BIAS, RELU or RELU_BIAS; `bias` [n] for the BIAS forms. Sets `*ran` to
//! false, queuing nothing, when the caller must take the cuBLAS path instead: fused epilogues off,
//! k == 0 (cuBLASLt has no empty product), no algorithm for this shape, or cuBLASLt refusing the
//! matmul (the shape is then remembered as unusable). Workspace comes from the backend's pool.
//! @return an allocation error; @throws cublas_error when cuBLASLt fails otherwise.
inline cudaError_t lt_gemm_nt(const cuda_backend& backend, const blas_handle& blas, std::size_t m, std::size_t n,
                              std::size_t k, const float* a, std::size_t lda, const float* b, std::size_t ldb, float* c,
                              std::size_t ldc, cublasLtEpilogue_t epilogue, const float* bias, bool* ran) {
  *ran = false;
  if (m == 0 || n == 0) {
    *ran = true;
    return cudaSuccess;
  }
  if (!blas.fused_epilogues() || k == 0) return cudaSuccess;
  const bool with_bias = epilogue == CUBLASLT_EPILOGUE_BIAS || epilogue == CUBLASLT_EPILOGUE_RELU_BIAS;
  using cuda::detail::pointer_alignment;
  const cuda::detail::lt_plan_key key{m,
                                      n,
                                      k,
                                      std::max<std::size_t>(lda, k),
                                      std::max<std::size_t>(ldb, k),
                                      std::max<std::size_t>(ldc, n),
                                      static_cast<std::uint32_t>(epilogue),
                                      pointer_alignment(a),
                                      pointer_alignment(b),
                                      pointer_alignment(c),
                                      with_bias ? pointer_alignment(bias) : 0u};
  cuda::detail::lt_plan* plan = blas.plans().find(key);
  if (plan == nullptr) plan = &dense_detail::plan_for(blas, key, bias);
  if (!plan->usable) return cudaSuccess;
  if (with_bias)
    cuda::detail::throw_if_cublas_error(
        cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)), __FILE__,
        __LINE__);
  cuda::detail::scratch scratch(backend);
  unsigned char* workspace = nullptr;
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&workspace, plan->workspace_bytes));
  const float alpha = 1.0f, beta = 0.0f;
  // Column-major view of the row-major call: D^T [n, m] = op_T(B as [k, n]) * (A as [k, m]).
  const cublasStatus_t status =
      cublasLtMatmul(blas.lt(), plan->desc, &alpha, b, plan->a, a, plan->b, &beta, c, plan->c, c, plan->c, &plan->algo,
                     workspace, plan->workspace_bytes, backend.stream());
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) {
    plan->usable = false;  // checked synchronously, nothing queued: the caller runs the cuBLAS path
    return cudaSuccess;
  }
  cuda::detail::throw_if_cublas_error(status, __FILE__, __LINE__);
  *ran = true;
  return cudaSuccess;
}

//! @brief C[m, n] = act(A[m, k] * B[n, k]^T + bias) (bias [n] nullable): one cuBLASLt matmul with
//! the part of the epilogue it can fuse (split_epilogue), then bias_activation for the rest; when
//! cuBLASLt has no algorithm, gemm_nt + bias_activation (the unfused path).
inline cudaError_t gemm_nt_bias_activation(const cuda_backend& backend, const blas_handle& blas, std::size_t m,
                                           std::size_t n, std::size_t k, const float* a, std::size_t lda,
                                           const float* b, std::size_t ldb, float* c, std::size_t ldc,
                                           const float* bias, math::activation act) {
  if (m == 0 || n == 0) return cudaSuccess;
  const bool bias_in_gemm =
      bias != nullptr && cuda::detail::pointer_alignment(bias) >= dense_detail::lt_min_bias_alignment;
  const epilogue_split split = split_epilogue(act, bias != nullptr, bias_in_gemm);
  bool ran = false;
  RECPIPE_CUDA_RETURN_IF_ERROR(lt_gemm_nt(backend, blas, m, n, k, a, lda, b, ldb, c, ldc, split.lt, bias, &ran));
  if (ran)
    return split.needs_kernel()
               ? bias_activation(backend.stream(), {c, ldc}, m, n, split.kernel_bias ? bias : nullptr, split.kernel_act)
               : cudaSuccess;
  gemm_nt(blas, backend.stream(), m, n, k, a, lda, b, ldb, c, ldc);
  return bias_activation(backend.stream(), {c, ldc}, m, n, bias, act);
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
