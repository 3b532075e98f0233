// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: feature crossing (DCN-v2 cross layers, DLRM dot interaction, FM term).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/detail/interaction_avx512.hpp>
#include <recpipe/cpu/isa.hpp>
#include <recpipe/cpu/parallel.hpp>
#include <recpipe/math/cross.hpp>
#include <recpipe/math/vector.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! One DCN-v2 cross layer's parameters (PyTorch layouts). Full rank: `weight` [d, d]. Low rank
//! (weight empty): `down` [r, d] = nn.Linear(d, r, bias=False).weight and `up` [d, r] =
//! nn.Linear(r, d, bias=False).weight, so W = up * down. `bias` [d] or empty.
struct cross_params {
  matrix_view<const float> weight;
  matrix_view<const float> down;
  matrix_view<const float> up;
  std::span<const float> bias;
};

namespace impl {
// Rows per block: the GEMM result of one block (block x d floats) stays in L2 for the epilogue,
// and a stack of layers runs block by block so x0 and xl stay cache-resident between layers.
inline constexpr std::size_t cross_block_rows = 256;


inline void check_cross(const char* where, std::size_t d, const cross_params& p, std::size_t layer) {
  if (!p.weight.empty() || (p.down.empty() && p.up.empty())) {
    check_view(where, "weight", p.weight);
    if (p.weight.rows() != d || p.weight.cols() != d)
      detail::fail(where, ": layer ", layer, " weight must be ", d, " x ", d, " (got ", p.weight.rows(), " x ",
                   p.weight.cols(), ")");
  } else {
    check_view(where, "down", p.down);
    check_view(where, "up", p.up);
    if (p.down.cols() != d || p.up.rows() != d || p.up.cols() != p.down.rows())
      detail::fail(where, ": layer ", layer, " low rank needs down [r, ", d, "] and up [", d, ", r] (got down ",
                   p.down.rows(), " x ", p.down.cols(), ", up ", p.up.rows(), " x ", p.up.cols(), ")");
  }
  check_bias(where, "bias", p.bias, d);
}

// One layer on rows [0, rows) of a block; out may be xl.
inline void cross_block(const float* x0, std::size_t x0_stride, const float* xl, std::size_t xl_stride,
                        const cross_params& p, float* out, std::size_t out_stride, std::size_t rows, std::size_t d) {
  float* projected = scratch(0, rows * d);
  if (!p.weight.empty()) {
    gemm_nt(xl, xl_stride, p.weight.data(), p.weight.stride(), projected, d, rows, d, d, 1.0f, 0.0f);
  } else {
    const std::size_t rank = p.down.rows();
    float* low = scratch(1, rows * rank);
    gemm_nt(xl, xl_stride, p.down.data(), p.down.stride(), low, rank, rows, rank, d, 1.0f, 0.0f);
    gemm_nt(low, rank, p.up.data(), p.up.stride(), projected, d, rows, d, rank, 1.0f, 0.0f);
  }
  const float* bias = p.bias.empty() ? nullptr : p.bias.data();
  for (std::size_t r = 0; r < rows; ++r)
    math::cross_epilogue(x0 + r * x0_stride, projected + r * d, bias, xl + r * xl_stride, out + r * out_stride, d);
}
}  // namespace impl

//! @brief A stack of DCN-v2 cross layers: x_{l+1} = x0 * (W_l x_l + b_l) + x_l, starting from
//! x_0 = x0; out receives the last x_l. Full-rank and low-rank layers may be mixed.
//!
//! Runs in blocks of 256 rows through every layer, so each block's activations stay in cache;
//! the products go to OpenBLAS sgemm (see cpu::set_num_threads).
//! @param x0   [batch, d]
//! @param out  [batch, d]; must not overlap x0 (x0 is read by every layer).
//! @throws recpipe::error naming the layer and argument whose shape disagrees, or if out is x0.
//! @code
//! std::vector<recpipe::cpu::cross_params> layers = {{w0.view(), {}, {}, b0}, {w1.view(), {}, {}, b1}};
//! recpipe::cpu::cross_network(x0.view(), layers, out.view());
//! @endcode
inline void cross_network(matrix_view<const float> x0, std::span<const cross_params> layers, matrix_view<float> out) {
  impl::check_view("cpu::cross_network", "x0", x0);
  const std::size_t batch = x0.rows(), d = x0.cols();
  impl::check_shape("cpu::cross_network", "out", out, batch, d);
  for (std::size_t l = 0; l < layers.size(); ++l) impl::check_cross("cpu::cross_network", d, layers[l], l);
  if (batch != 0 && d != 0 && out.data() == x0.data() && !layers.empty())
    detail::fail("cpu::cross_network: out must not be x0 (every layer reads x0)");
  for (std::size_t first = 0; first < batch; first += impl::cross_block_rows) {
    const std::size_t rows = std::min(impl::cross_block_rows, batch - first);
    const float* x0_block = x0.data() + first * x0.stride();
    float* out_block = out.data() + first * out.stride();
    if (layers.empty()) {
      if (out_block != x0_block)
        for (std::size_t r = 0; r < rows; ++r) std::copy_n(x0_block + r * x0.stride(), d, out_block + r * out.stride());
      continue;
    }
    // Layer 0 reads x0 as x_l; later layers update out in place (every element is read before written).
    impl::cross_block(x0_block, x0.stride(), x0_block, x0.stride(), layers[0], out_block, out.stride(), rows, d);
    for (std::size_t l = 1; l < layers.size(); ++l)
      impl::cross_block(x0_block, x0.stride(), out_block, out.stride(), layers[l], out_block, out.stride(), rows, d);
  }
}

//! @brief One full-rank DCN-v2 cross layer: out = x0 * (xl * weight^T + bias) + xl.
//! @param weight [d, d] (nn.Linear layout); @param bias [d] or empty; @param out [batch, d], may be xl.
//! @code
//! recpipe::cpu::cross_layer(x0.view(), xl.view(), w.view(), b, xl.view());  // in place
//! @endcode
inline void cross_layer(matrix_view<const float> x0, matrix_view<const float> xl, matrix_view<const float> weight,
                        std::span<const float> bias, matrix_view<float> out) {
  impl::check_view("cpu::cross_layer", "x0", x0);
  impl::check_shape("cpu::cross_layer", "xl", xl, x0.rows(), x0.cols());
  impl::check_shape("cpu::cross_layer", "out", out, x0.rows(), x0.cols());
  const cross_params p{weight, {}, {}, bias};
  impl::check_cross("cpu::cross_layer", x0.cols(), p, 0);
  for (std::size_t first = 0; first < x0.rows(); first += impl::cross_block_rows) {
    const std::size_t rows = std::min(impl::cross_block_rows, x0.rows() - first);
    impl::cross_block(x0.data() + first * x0.stride(), x0.stride(), xl.data() + first * xl.stride(), xl.stride(), p,
                      out.data() + first * out.stride(), out.stride(), rows, x0.cols());
  }
}

//! @brief One low-rank cross layer (TorchRec LowRankCrossNet): out = x0 * (up(down(xl)) + bias) + xl.
//! @param down [r, d]; @param up [d, r]; @param out may be xl.
//! @code
//! recpipe::cpu::cross_layer_low_rank(x0.view(), xl.view(), v.view(), u.view(), b, out.view());
//! @endcode
inline void cross_layer_low_rank(matrix_view<const float> x0, matrix_view<const float> xl,
                                 matrix_view<const float> down, matrix_view<const float> up,
                                 std::span<const float> bias, matrix_view<float> out) {
  impl::check_view("cpu::cross_layer_low_rank", "x0", x0);
  impl::check_shape("cpu::cross_layer_low_rank", "xl", xl, x0.rows(), x0.cols());
  impl::check_shape("cpu::cross_layer_low_rank", "out", out, x0.rows(), x0.cols());
  if (down.empty() || up.empty())
    detail::fail("cpu::cross_layer_low_rank: down and up must not be empty (got down ", down.rows(), " x ",
                 down.cols(), ", up ", up.rows(), " x ", up.cols(), ")");
  const cross_params p{{}, down, up, bias};
  impl::check_cross("cpu::cross_layer_low_rank", x0.cols(), p, 0);
  for (std::size_t first = 0; first < x0.rows(); first += impl::cross_block_rows) {
    const std::size_t rows = std::min(impl::cross_block_rows, x0.rows() - first);
    impl::cross_block(x0.data() + first * x0.stride(), x0.stride(), xl.data() + first * xl.stride(), xl.stride(), p,
                      out.data() + first * out.stride(), out.stride(), rows, x0.cols());
  }
}

//! @brief Output width of the DLRM dot interaction of F features: F(F-1)/2, or F(F+1)/2 with the
//! diagonal (self interaction).
inline std::size_t interaction_size(std::size_t num_features, bool self_interaction) {
  return self_interaction ? num_features * (num_features + 1) / 2 : num_features * (num_features - (num_features > 0)) / 2;
}

//! @brief DLRM pairwise dot interaction. Each row of `features` holds F vectors of d floats
//! (features [batch, F*d]); out[b] gets <f_i, f_j> for i in 0..F-1, j in 0..i-1 (0..i with
//! self_interaction), in that order: PyTorch-DLRM's `Z[:, li, lj]` with its tril indices.
//! @param out [batch, interaction_size(F, self_interaction)]; a strided sub-view lets it sit next
//! to the dense features, as DLRM's cat([x, Zflat]) does.
//! @throws recpipe::error if features.cols() is not a multiple of num_features, or out's shape is wrong.
//! @code
//! recpipe::cpu::dot_interaction(feats.view(), 27, false, z.view());   // z: [batch, 351]
//! @endcode
inline void dot_interaction(matrix_view<const float> features, std::size_t num_features, bool self_interaction,
                            matrix_view<float> out) {
  impl::check_view("cpu::dot_interaction", "features", features);
  if (num_features == 0 || features.cols() % num_features != 0)
    detail::fail("cpu::dot_interaction: features has ", features.cols(), " columns, not a multiple of num_features = ",
                 num_features);
  const std::size_t f = num_features, d = features.cols() / f;
  impl::check_shape("cpu::dot_interaction", "out", out, features.rows(), interaction_size(f, self_interaction));
  const std::size_t extra = self_interaction ? 1 : 0;
  [[maybe_unused]] const bool avx512 = active_isa() == isa::avx512;
  impl::parallel_for(features.rows(), features.rows() * f * f * d / 2, [&](std::size_t first, std::size_t last) {
#if RECPIPE_HAS_AVX512_KERNELS
  if (avx512)
    return impl::dot_interaction_avx512(features.data(), features.stride(), f, d, self_interaction, out.data(),
                                        out.stride(), first, last);
#endif
  for (std::size_t b = first; b < last; ++b) {
    const float* row = features.data() + b * features.stride();
    float* z = out.data() + b * out.stride();
    for (std::size_t i = 0; i < f; ++i) {
      const float* fi = row + i * d;
      const std::size_t count = i + extra;  // j in [0, count)
      std::size_t j = 0;
      for (; j + 4 <= count; j += 4)
        math::dot4(fi, row + j * d, row + (j + 1) * d, row + (j + 2) * d, row + (j + 3) * d, d, z + j);
      for (; j < count; ++j) z[j] = math::dot(fi, row + j * d, d);
      z += count;
    }
  }
  });
}

//! @brief Factorization-machine second-order term per row: 0.5 * sum_k ((sum_f v_fk)^2 - sum_f v_fk^2)
//! over the F vectors of d floats in each row of features [batch, F*d].
//! @param out [batch]
//! @code
//! recpipe::cpu::fm_second_order(emb.view(), 26, scores);
//! @endcode
inline void fm_second_order(matrix_view<const float> features, std::size_t num_features, std::span<float> out) {
  impl::check_view("cpu::fm_second_order", "features", features);
  if (num_features == 0 || features.cols() % num_features != 0)
    detail::fail("cpu::fm_second_order: features has ", features.cols(), " columns, not a multiple of num_features = ",
                 num_features);
  if (out.size() != features.rows())
    detail::fail("cpu::fm_second_order: out holds ", out.size(), " values for ", features.rows(), " rows");
  const std::size_t f = num_features, d = features.cols() / f;
  impl::parallel_for(features.rows(), features.rows() * f * d * 2, [&](std::size_t first, std::size_t last) {
  float* total = impl::scratch(2, d);  // per thread
  for (std::size_t b = first; b < last; ++b) {
    const float* row = features.data() + b * features.stride();
    std::fill_n(total, d, 0.0f);
    float squares = 0.0f;
    for (std::size_t i = 0; i < f; ++i) {
      math::axpy(1.0f, row + i * d, total, d);
      squares += math::dot(row + i * d, row + i * d, d);
    }
    out[b] = 0.5f * (math::dot(total, total, d) - squares);
  }
  });
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
