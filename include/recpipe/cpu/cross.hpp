// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: feature crossing (DCN-v2 cross layers, DLRM dot interaction, FM term).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/packed_gemm.hpp>
#include <recpipe/cpu/detail/interaction_avx512.hpp>
#include <recpipe/cpu/isa.hpp>
#include <recpipe/cpu/parallel.hpp>
#include <recpipe/cpu/workspace.hpp>
#include <recpipe/math/cross.hpp>
#include <recpipe/math/vector.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! One DCN-v2 cross layer's parameters (PyTorch layouts). Full rank: `weight` [d, d]. Low rank
//! (weight empty): `down` [r, d] = nn.Linear(d, r, bias=False).weight and `up` [d, r] =
//! nn.Linear(r, d, bias=False).weight, so W = up * down. `bias` [d] or empty.
//!
//! The optional packed_* pointers hold the same weights packed once (see packed_cross_network,
//! which fills them): cross_network then runs its AVX-512 kernel with the epilogue fused into the
//! GEMM tile. The views stay required: the portable path (and an AVX-512-less CPU) reads them.
struct cross_params {
  matrix_view<const float> weight;
  matrix_view<const float> down;
  matrix_view<const float> up;
  std::span<const float> bias;
  const packed_linear* packed_weight = nullptr;  //!< full rank: `weight` packed, or null
  const packed_linear* packed_down = nullptr;    //!< low rank: `down` packed, or null
  const packed_linear* packed_up = nullptr;      //!< low rank: `up` packed, or null
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
  // A packed form must have its view's shape (its contents are the caller's promise).
  const auto check_packed = [&](const char* name, const packed_linear* packed, matrix_view<const float> view) {
    if (packed && (packed->rows() != view.rows() || packed->cols() != view.cols()))
      detail::fail(where, ": layer ", layer, " ", name, " is ", packed->rows(), " x ", packed->cols(), " but must be ",
                   view.rows(), " x ", view.cols(), " (d = ", d, ")");
  };
  check_packed("packed_weight", p.packed_weight, p.weight);
  check_packed("packed_down", p.packed_down, p.down);
  check_packed("packed_up", p.packed_up, p.up);
}

inline bool cross_is_packed(const cross_params& p) {
  return !p.weight.empty() ? p.packed_weight != nullptr : p.packed_down != nullptr && p.packed_up != nullptr;
}

// One packed layer on `rows` rows, output panels [panel_begin, panel_end) only:
// dst = x0 * (W src + b) + src. Low rank goes through `low` [rows, rank] (the down product must be
// complete before the up product reads it, so the panel-split caller runs the two halves apart:
// phase 1 = down only, phase 2 = up only; phase 0 = both).
// `next` is the layer after this one (or null): its first weights are prefetched during the last panel.
inline const packed_linear* cross_first_packed(const cross_params* p) {
  return p == nullptr ? nullptr : p->packed_weight ? p->packed_weight : p->packed_down;
}
inline void cross_packed_layer(const float* x0, std::size_t ldx0, const float* src, std::size_t lds,
                               const cross_params& p, float* dst, std::size_t ldd, float* low, std::size_t rows,
                               std::size_t panel_begin, std::size_t panel_end, int phase,
                               const cross_params* next = nullptr) {
  packed_gemm_args g;
  g.next = cross_first_packed(next);
  g.m = rows;
  g.bias = p.bias.empty() ? nullptr : p.bias.data();
  g.c = dst;
  g.ldc = ldd;
  g.x0 = x0;
  g.ldx0 = ldx0;
  g.xl = src;
  g.ldxl = lds;
  g.cross = true;
  if (!p.weight.empty()) {
    g.a = src;
    g.lda = lds;
    g.w = p.packed_weight;
    packed_gemm(g, panel_begin, panel_end);
    return;
  }
  const std::size_t rank = p.packed_down->rows();
  if (phase != 2) {
    packed_gemm_args down;
    down.m = rows;
    down.a = src;
    down.lda = lds;
    down.w = p.packed_down;
    down.next = p.packed_up;
    down.c = low;
    down.ldc = rank;
    packed_gemm(down, phase == 1 ? panel_begin : 0, phase == 1 ? panel_end : p.packed_down->panels());
  }
  if (phase != 1) {
    g.a = low;
    g.lda = rank;
    g.w = p.packed_up;
    packed_gemm(g, panel_begin, panel_end);
  }
}

// cross_network on packed layers. Layers ping-pong between out and a scratch block, arranged so
// the last lands in out: a layer's output then never overwrites the x_l that later tiles of the
// same layer still read, so the epilogue can write straight from the register tile.
inline void cross_network_packed(matrix_view<const float> x0, std::span<const cross_params> layers,
                                 matrix_view<float> out, workspace& ws) {
  const std::size_t batch = x0.rows(), d = x0.cols(), count = layers.size();
  std::size_t max_rank = 1;
  for (const cross_params& p : layers)
    if (p.weight.empty()) max_rank = std::max(max_rank, p.packed_down->rows());
  const std::size_t threads = thread_pool::instance().size();
  const std::size_t flops = batch * d * d * count;
  const auto to_out = [&](std::size_t l) { return (count - 1 - l) % 2 == 0; };
  if (threads == 1 || batch >= 2 * packed_max_rows * threads) {
    // Enough rows: each thread takes whole rows through every layer (no barrier between layers),
    // 256 rows at a time so x0, x_l and the next x_l stay in L2.
    parallel_for(batch, flops, [&](std::size_t first, std::size_t last) {
      // A worker thread takes from its own workspace (the caller's belongs to the caller's thread).
      workspace& local = workspace::for_this_thread();
      const workspace::frame frame(local);
      const std::size_t block_rows = std::min(cross_block_rows, last - first);
      float* tmp = local.take<float>(block_rows * d).data();
      float* low = local.take<float>(block_rows * max_rank).data();
      for (std::size_t begin = first; begin < last; begin += cross_block_rows) {
        const std::size_t rows = std::min(cross_block_rows, last - begin);
        const float* x0b = x0.data() + begin * x0.stride();
        float* outb = out.data() + begin * out.stride();
        const float* src = x0b;
        std::size_t lds = x0.stride();
        for (std::size_t l = 0; l < count; ++l) {
          float* dst = to_out(l) ? outb : tmp;
          const std::size_t ldd = to_out(l) ? out.stride() : d;
          const std::size_t panels = (d + packed_linear::panel_width - 1) / packed_linear::panel_width;
          cross_packed_layer(x0b, x0.stride(), src, lds, layers[l], dst, ldd, low, rows, 0, panels, 0,
                             l + 1 < count ? &layers[l + 1] : nullptr);
          src = dst;
          lds = ldd;
        }
      }
    });
    return;
  }
  // Few rows and several threads: split each layer's output panels instead (a barrier per layer;
  // each thread then reads only its share of the weights).
  const workspace::frame frame(ws);
  float* tmp = ws.take<float>(batch * d).data();
  float* low = ws.take<float>(batch * max_rank).data();
  const float* src = x0.data();
  std::size_t lds = x0.stride();
  for (std::size_t l = 0; l < count; ++l) {
    const cross_params& p = layers[l];
    float* dst = to_out(l) ? out.data() : tmp;
    const std::size_t ldd = to_out(l) ? out.stride() : d;
    const auto run = [&](const packed_linear& w, int phase) {
      parallel_for(w.panels(), batch * w.rows() * w.cols(), [&](std::size_t first, std::size_t last) {
        cross_packed_layer(x0.data(), x0.stride(), src, lds, p, dst, ldd, low, batch, first, last, phase);
      });
    };
    if (!p.weight.empty()) {
      run(*p.packed_weight, 0);
    } else {
      run(*p.packed_down, 1);
      run(*p.packed_up, 2);
    }
    src = dst;
    lds = ldd;
  }
}

// One layer on rows [0, rows) of a block; out may be xl.
inline void cross_block(const float* x0, std::size_t x0_stride, const float* xl, std::size_t xl_stride,
                        const cross_params& p, float* out, std::size_t out_stride, std::size_t rows, std::size_t d,
                        workspace& ws) {
  const workspace::frame frame(ws);
  float* projected = ws.take<float>(rows * d).data();
  if (!p.weight.empty()) {
    gemm_nt(xl, xl_stride, p.weight.data(), p.weight.stride(), projected, d, rows, d, d, 1.0f, 0.0f);
  } else {
    const std::size_t rank = p.down.rows();
    float* low = ws.take<float>(rows * rank).data();
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
//! When every layer carries its packed weights (packed_cross_network) and cpu::active_isa() is
//! avx512, runs the packed AVX-512 GEMM with the cross update fused into its register tile,
//! splitting rows (or, for small batches, output columns) over cpu::set_num_threads threads.
//! Otherwise runs in blocks of 256 rows through every layer, so each block's activations stay in
//! cache, with the products in OpenBLAS sgemm.
//! @param x0   [batch, d]
//! @param out  [batch, d]; must not overlap x0 (x0 is read by every layer).
//! @param ws   scratch for the layers' products (see cpu::workspace); the calling thread's by default.
//! @throws recpipe::error naming the layer and argument whose shape disagrees, or if out is x0.
//! @code
//! std::vector<recpipe::cpu::cross_params> layers = {{w0.view(), {}, {}, b0}, {w1.view(), {}, {}, b1}};
//! recpipe::cpu::cross_network(x0.view(), layers, out.view());
//! @endcode
inline void cross_network(matrix_view<const float> x0, std::span<const cross_params> layers, matrix_view<float> out,
                          workspace& ws = workspace::for_this_thread()) {
  impl::check_view("cpu::cross_network", "x0", x0);
  const std::size_t batch = x0.rows(), d = x0.cols();
  impl::check_shape("cpu::cross_network", "out", out, batch, d);
  for (std::size_t l = 0; l < layers.size(); ++l) impl::check_cross("cpu::cross_network", d, layers[l], l);
  if (batch != 0 && d != 0 && out.data() == x0.data() && !layers.empty())
    detail::fail("cpu::cross_network: out must not be x0 (every layer reads x0)");
  if (batch != 0 && d != 0 && !layers.empty() && active_isa() == isa::avx512 &&
      std::all_of(layers.begin(), layers.end(), impl::cross_is_packed))
    return impl::cross_network_packed(x0, layers, out, ws);
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
    impl::cross_block(x0_block, x0.stride(), x0_block, x0.stride(), layers[0], out_block, out.stride(), rows, d, ws);
    for (std::size_t l = 1; l < layers.size(); ++l)
      impl::cross_block(x0_block, x0.stride(), out_block, out.stride(), layers[l], out_block, out.stride(), rows, d, ws);
  }
}

//! @brief Packed copies of a cross stack's weights (packed_linear, built once, e.g. at model load)
//! and the cross_params that point at them, for cross_network's fused AVX-512 path. Keeps only
//! views of the original weights and biases: they must outlive this object. Move-only (the
//! params point into it; a move keeps those addresses).
//! @throws recpipe::error (constructor) naming the layer and argument whose shape disagrees.
//! @code
//! std::vector<recpipe::cpu::cross_params> layers = {{w0.view(), {}, {}, b0}, {w1.view(), {}, {}, b1}};
//! const recpipe::cpu::packed_cross_network packed(layers);  // once
//! recpipe::cpu::cross_network(x0.view(), packed.layers(), out.view());
//! @endcode
class packed_cross_network {
 public:
  packed_cross_network() = default;
  explicit packed_cross_network(std::span<const cross_params> layers) : layers_(layers.begin(), layers.end()) {
    const std::size_t d = layers.empty() ? 0 : (!layers[0].weight.empty() ? layers[0].weight.cols() : layers[0].down.cols());
    packed_.reserve(2 * layers.size());  // no reallocation: layers_ keeps pointers into packed_
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      cross_params& p = layers_[l];
      p.packed_weight = p.packed_down = p.packed_up = nullptr;
      impl::check_cross("cpu::packed_cross_network", d, p, l);
      if (!p.weight.empty()) {
        p.packed_weight = &packed_.emplace_back(p.weight);
      } else {
        p.packed_down = &packed_.emplace_back(p.down);
        p.packed_up = &packed_.emplace_back(p.up);
      }
    }
  }
  packed_cross_network(const packed_cross_network&) = delete;
  packed_cross_network& operator=(const packed_cross_network&) = delete;
  packed_cross_network(packed_cross_network&&) noexcept = default;
  packed_cross_network& operator=(packed_cross_network&&) noexcept = default;

  //! The layers with their packed_* pointers set; pass to cross_network.
  std::span<const cross_params> layers() const noexcept { return layers_; }
  //! Memory held by the packed weights.
  std::size_t bytes() const noexcept {
    std::size_t total = 0;
    for (const packed_linear& w : packed_) total += w.bytes();
    return total;
  }

 private:
  std::vector<packed_linear> packed_;
  std::vector<cross_params> layers_;
};

//! @brief One full-rank DCN-v2 cross layer: out = x0 * (xl * weight^T + bias) + xl.
//! @param weight [d, d] (nn.Linear layout); @param bias [d] or empty; @param out [batch, d], may be xl.
//! @param ws scratch (see cpu::workspace); the calling thread's by default.
//! @code
//! recpipe::cpu::cross_layer(x0.view(), xl.view(), w.view(), b, xl.view());  // in place
//! @endcode
inline void cross_layer(matrix_view<const float> x0, matrix_view<const float> xl, matrix_view<const float> weight,
                        std::span<const float> bias, matrix_view<float> out,
                        workspace& ws = workspace::for_this_thread()) {
  impl::check_view("cpu::cross_layer", "x0", x0);
  impl::check_shape("cpu::cross_layer", "xl", xl, x0.rows(), x0.cols());
  impl::check_shape("cpu::cross_layer", "out", out, x0.rows(), x0.cols());
  const cross_params p{weight, {}, {}, bias};
  impl::check_cross("cpu::cross_layer", x0.cols(), p, 0);
  for (std::size_t first = 0; first < x0.rows(); first += impl::cross_block_rows) {
    const std::size_t rows = std::min(impl::cross_block_rows, x0.rows() - first);
    impl::cross_block(x0.data() + first * x0.stride(), x0.stride(), xl.data() + first * xl.stride(), xl.stride(), p,
                      out.data() + first * out.stride(), out.stride(), rows, x0.cols(), ws);
  }
}

//! @brief One low-rank cross layer (TorchRec LowRankCrossNet): out = x0 * (up(down(xl)) + bias) + xl.
//! @param down [r, d]; @param up [d, r]; @param out may be xl; @param ws scratch (cpu::workspace).
//! @code
//! recpipe::cpu::cross_layer_low_rank(x0.view(), xl.view(), v.view(), u.view(), b, out.view());
//! @endcode
inline void cross_layer_low_rank(matrix_view<const float> x0, matrix_view<const float> xl,
                                 matrix_view<const float> down, matrix_view<const float> up,
                                 std::span<const float> bias, matrix_view<float> out,
                                 workspace& ws = workspace::for_this_thread()) {
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
                      out.data() + first * out.stride(), out.stride(), rows, x0.cols(), ws);
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
  // Each thread of the parallel region (the caller's too) takes from its own thread's workspace.
  workspace& ws = workspace::for_this_thread();
  const workspace::frame frame(ws);
  float* total = ws.take<float>(d).data();
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
