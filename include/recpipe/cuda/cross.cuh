// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: feature crossing (DCN-v2 cross layers, DLRM dot interaction, FM term).
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/blas.cuh>
#include <recpipe/cuda/dense.cuh>
#include <recpipe/cuda/detail/checks.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/detail/scratch.cuh>
#include <recpipe/cuda/dispatch/dense.cuh>

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/math/cross.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN

//! One DCN-v2 cross layer on the device, the layouts of cpu::cross_params: full rank `weight`
//! [d, d]; low rank (weight empty) `down` [r, d] and `up` [d, r] (W = up * down); `bias` [d] or empty.
struct cross_params {
  matrix_view<const float> weight;
  matrix_view<const float> down;
  matrix_view<const float> up;
  device_span<const float> bias;
};

namespace cross_detail {
inline void check_layer(const char* where, std::size_t d, const cross_params& p, std::size_t layer) {
  if (!p.weight.empty() || (p.down.empty() && p.up.empty())) {
    cuda::detail::check_device_matrix(where, "weight", p.weight);
    if (p.weight.rows() != d || p.weight.cols() != d)
      ::recpipe::detail::fail(where, ": layer ", layer, " weight must be ", d, " x ", d, " (got ", p.weight.rows(),
                              " x ", p.weight.cols(), ")");
  } else {
    cuda::detail::check_device_matrix(where, "down", p.down);
    cuda::detail::check_device_matrix(where, "up", p.up);
    if (p.down.cols() != d || p.up.rows() != d || p.up.cols() != p.down.rows())
      ::recpipe::detail::fail(where, ": layer ", layer, " low rank needs down [r, ", d, "] and up [", d,
                              ", r] (got down ", p.down.rows(), " x ", p.down.cols(), ", up ", p.up.rows(), " x ",
                              p.up.cols(), ")");
  }
  cuda::detail::check_device_bias(where, "bias", p.bias, d);
}

// One layer: out = x0 * (W xl + b) + xl, with `projected` [rows, d] and `low` [rows, r] scratch.
// The bias rides in the (last) GEMM's cuBLASLt epilogue when it can (16-byte aligned, a cuBLASLt
// algorithm for the shape), so the recpipe kernel reads no bias; else the kernel adds it.
inline cudaError_t layer(const cuda_backend& backend, const blas_handle& blas, matrix_view<const float> x0,
                         matrix_view<const float> xl, const cross_params& p, matrix_view<float> out,
                         float* projected, float* low) {
  const std::size_t rows = x0.rows(), d = x0.cols();
  const cudaStream_t stream = backend.stream();
  using cuda::detail::row_stride;
  const float* bias = p.bias.empty() ? nullptr : p.bias.data();
  const bool fold = bias != nullptr && cuda::detail::pointer_alignment(bias) >= dispatch::dense_detail::lt_min_bias_alignment;
  const cublasLtEpilogue_t epilogue = fold ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  bool ran = false;
  const auto gemm = [&](std::size_t n, std::size_t k, const float* a, std::size_t lda, const float* b, std::size_t ldb,
                        float* c, cublasLtEpilogue_t e) -> cudaError_t {
    RECPIPE_CUDA_RETURN_IF_ERROR(dispatch::lt_gemm_nt(backend, blas, rows, n, k, a, lda, b, ldb, c, n, e,
                                                      e == CUBLASLT_EPILOGUE_BIAS ? bias : nullptr, &ran));
    if (!ran) dispatch::gemm_nt(blas, stream, rows, n, k, a, lda, b, ldb, c, n);
    return cudaSuccess;
  };
  if (!p.weight.empty()) {
    RECPIPE_CUDA_RETURN_IF_ERROR(gemm(d, d, xl.data(), row_stride(xl), p.weight.data(), row_stride(p.weight), projected,
                                      epilogue));
  } else {
    const std::size_t rank = p.down.rows();
    RECPIPE_CUDA_RETURN_IF_ERROR(
        gemm(rank, d, xl.data(), row_stride(xl), p.down.data(), row_stride(p.down), low, CUBLASLT_EPILOGUE_DEFAULT));
    RECPIPE_CUDA_RETURN_IF_ERROR(gemm(d, rank, low, rank, p.up.data(), row_stride(p.up), projected, epilogue));
  }
  // `ran` is the last GEMM's: whether its epilogue added the bias.
  const float* kernel_bias = fold && ran ? nullptr : bias;
  return dispatch::cross_epilogue(stream, {x0.data(), row_stride(x0)}, {projected, d}, kernel_bias,
                                  {xl.data(), row_stride(xl)}, {out.data(), row_stride(out)}, rows, d);
}
}  // namespace cross_detail

//! @brief cpu::cross_network on the GPU: x_{l+1} = x0 * (W_l x_l + b_l) + x_l from x_0 = x0; out
//! receives the last x_l. Per layer: FP32 cuBLASLt matmul(s) (two for low rank, through [batch, r];
//! cublasSgemm where cuBLASLt has no algorithm) into a pooled temporary, the bias added by the
//! (last) matmul's epilogue, then one element-wise recpipe kernel x0 * p + x_l (math::cross_update,
//! the CPU formula; the Hadamard product with x0 cannot be a cuBLASLt epilogue) that writes out in
//! place. Full- and low-rank layers may be mixed.
//! @param x0 [batch, d]; @param out [batch, d], must not overlap x0. Device memory.
//! @return the first launch or allocation error; never synchronises.
//! @throws recpipe::error naming the layer and argument whose shape disagrees, or if out is x0;
//!         cublas_error when cuBLAS refuses.
//! @code
//! std::vector<recpipe::cuda::cross_params> layers = {{w0, {}, {}, b0}, {{}, v1, u1, b1}};
//! recpipe::cuda::cross_network(backend, blas, x0, layers, out);
//! @endcode
inline cudaError_t cross_network(const cuda_backend& backend, const blas_handle& blas, matrix_view<const float> x0,
                                 std::span<const cross_params> layers, matrix_view<float> out) {
  constexpr const char* where = "cuda::cross_network";
  cuda::detail::check_device_shape(where, "x0", x0, x0.rows(), x0.cols());
  const std::size_t batch = x0.rows(), d = x0.cols();
  cuda::detail::check_device_shape(where, "out", out, batch, d);
  std::size_t max_rank = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    cross_detail::check_layer(where, d, layers[l], l);
    if (layers[l].weight.empty()) max_rank = std::max(max_rank, layers[l].down.rows());
  }
  if (batch == 0 || d == 0) return cudaSuccess;
  if (out.data() == x0.data() && !layers.empty())
    ::recpipe::detail::fail(where, ": out must not be x0 (every layer reads x0)");
  const cudaStream_t stream = backend.stream();
  if (layers.empty())
    return cudaMemcpy2DAsync(out.data(), cuda::detail::row_stride(out) * sizeof(float), x0.data(),
                             cuda::detail::row_stride(x0) * sizeof(float), d * sizeof(float), batch,
                             cudaMemcpyDeviceToDevice, stream);
  cuda::detail::scratch scratch(backend);
  float *projected = nullptr, *low = nullptr;
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&projected, batch * d));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&low, batch * max_rank));
  // Layer 0 reads x0 as x_l; later layers update out in place (each element read before written).
  RECPIPE_CUDA_RETURN_IF_ERROR(cross_detail::layer(backend, blas, x0, x0, layers[0], out, projected, low));
  for (std::size_t l = 1; l < layers.size(); ++l)
    RECPIPE_CUDA_RETURN_IF_ERROR(cross_detail::layer(backend, blas, x0, out, layers[l], out, projected, low));
  return cudaSuccess;
}

//! @brief cpu::cross_layer on the GPU: out = x0 * (xl * weight^T + bias) + xl; out may be xl.
//! @code
//! recpipe::cuda::cross_layer(backend, blas, x0, xl, w, b, xl_out);
//! @endcode
inline cudaError_t cross_layer(const cuda_backend& backend, const blas_handle& blas, matrix_view<const float> x0,
                               matrix_view<const float> xl, matrix_view<const float> weight,
                               device_span<const float> bias, matrix_view<float> out) {
  constexpr const char* where = "cuda::cross_layer";
  cuda::detail::check_device_shape(where, "x0", x0, x0.rows(), x0.cols());
  cuda::detail::check_device_shape(where, "xl", xl, x0.rows(), x0.cols());
  cuda::detail::check_device_shape(where, "out", out, x0.rows(), x0.cols());
  const cross_params p{weight, {}, {}, bias};
  cross_detail::check_layer(where, x0.cols(), p, 0);
  if (x0.rows() == 0 || x0.cols() == 0) return cudaSuccess;
  cuda::detail::scratch scratch(backend);
  float* projected = nullptr;
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&projected, x0.rows() * x0.cols()));
  return cross_detail::layer(backend, blas, x0, xl, p, out, projected, nullptr);
}

//! @brief cpu::cross_layer_low_rank on the GPU: out = x0 * (up(down(xl)) + bias) + xl; out may be xl.
//! @param down [r, d]; @param up [d, r].
//! @code
//! recpipe::cuda::cross_layer_low_rank(backend, blas, x0, xl, v, u, b, out);
//! @endcode
inline cudaError_t cross_layer_low_rank(const cuda_backend& backend, const blas_handle& blas,
                                        matrix_view<const float> x0, matrix_view<const float> xl,
                                        matrix_view<const float> down, matrix_view<const float> up,
                                        device_span<const float> bias, matrix_view<float> out) {
  constexpr const char* where = "cuda::cross_layer_low_rank";
  cuda::detail::check_device_shape(where, "x0", x0, x0.rows(), x0.cols());
  cuda::detail::check_device_shape(where, "xl", xl, x0.rows(), x0.cols());
  cuda::detail::check_device_shape(where, "out", out, x0.rows(), x0.cols());
  if (down.empty() || up.empty())
    ::recpipe::detail::fail(where, ": down and up must not be empty (got down ", down.rows(), " x ", down.cols(),
                            ", up ", up.rows(), " x ", up.cols(), ")");
  const cross_params p{{}, down, up, bias};
  cross_detail::check_layer(where, x0.cols(), p, 0);
  if (x0.rows() == 0 || x0.cols() == 0) return cudaSuccess;
  cuda::detail::scratch scratch(backend);
  float *projected = nullptr, *low = nullptr;
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&projected, x0.rows() * x0.cols()));
  RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&low, x0.rows() * down.rows()));
  return cross_detail::layer(backend, blas, x0, xl, p, out, projected, low);
}

namespace cross_detail {
inline std::size_t check_features(const char* where, matrix_view<const float> features, std::size_t num_features) {
  cuda::detail::check_device_matrix(where, "features", features);
  if (num_features == 0 || features.cols() % num_features != 0)
    ::recpipe::detail::fail(where, ": features has ", features.cols(), " columns, not a multiple of num_features = ",
                            num_features);
  constexpr auto int_max = static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max());
  if (features.rows() > int_max || features.cols() > int_max)
    ::recpipe::detail::fail(where, ": features is ", features.rows(), " x ", features.cols(), "; at most ", int_max,
                            " rows and columns are supported");
  return features.cols() / num_features;
}
}  // namespace cross_detail

//! @brief cpu::dot_interaction on the GPU: each row of features [batch, F*d] holds F vectors;
//! out[b] gets <f_i, f_j> for i in 0..F-1, j < i (j <= i with self_interaction), in
//! math::interaction_index order. One block per row, the row staged in shared memory (when F*d
//! floats fit in 48 KiB), one warp per output pair: the lower-triangle gather is fused, no F x F
//! matrix is written.
//! @param out [batch, interaction_size(F, self)] device view; a strided sub-view may sit next to
//!        the dense features (DLRM's cat([x, Z])).
//! @throws recpipe::error as cpu::dot_interaction.
//! @code
//! recpipe::cuda::dot_interaction(backend, feats, 27, false, z);  // z: [batch, 351]
//! @endcode
inline cudaError_t dot_interaction(const cuda_backend& backend, matrix_view<const float> features,
                                   std::size_t num_features, bool self_interaction, matrix_view<float> out) {
  constexpr const char* where = "cuda::dot_interaction";
  const std::size_t d = cross_detail::check_features(where, features, num_features);
  const std::size_t f = num_features;
  const std::size_t pairs = self_interaction ? f * (f + 1) / 2 : f * (f - 1) / 2;
  cuda::detail::check_device_matrix(where, "out", out);
  if (out.rows() != features.rows() || out.cols() != pairs)
    ::recpipe::detail::fail(where, ": out is ", out.rows(), " x ", out.cols(), " but must be ", features.rows(), " x ",
                            pairs);
  return dispatch::dot_interaction(backend.stream(), {features.data(), cuda::detail::row_stride(features)},
                                   features.rows(), static_cast<std::uint32_t>(f), static_cast<std::uint32_t>(d),
                                   self_interaction, static_cast<std::uint32_t>(pairs),
                                   {out.data(), cuda::detail::row_stride(out)});
}

//! @brief cpu::fm_second_order on the GPU: out[b] = 0.5 * sum_k ((sum_f v_fk)^2 - sum_f v_fk^2)
//! over the F vectors of d floats in row b of features [batch, F*d]; one block per row, each
//! thread summing math::fm_column over its columns.
//! @param out [batch] device floats.
//! @code
//! recpipe::cuda::fm_second_order(backend, emb, 26, d_scores.span());
//! @endcode
inline cudaError_t fm_second_order(const cuda_backend& backend, matrix_view<const float> features,
                                   std::size_t num_features, device_span<float> out) {
  constexpr const char* where = "cuda::fm_second_order";
  const std::size_t d = cross_detail::check_features(where, features, num_features);
  cuda::detail::check_device_span(where, "out", out);
  if (out.size() != features.rows())
    ::recpipe::detail::fail(where, ": out holds ", out.size(), " values for ", features.rows(), " rows");
  return dispatch::fm_second_order(backend.stream(), {features.data(), cuda::detail::row_stride(features)},
                                   features.rows(), static_cast<std::uint32_t>(num_features),
                                   static_cast<std::uint32_t>(d), out.data());
}

RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
