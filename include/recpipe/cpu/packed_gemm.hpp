// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: nn.Linear weights packed once (at model load) for an AVX-512 GEMM whose
// epilogue (bias, DCN-v2 cross update) runs on the register tile.
//
// Why: in serving the weights never change, yet cblas_sgemm re-packs B on every call and writes C
// to memory, after which the cross epilogue reads it back. Packing once into K-major panels and
// finishing each tile in registers removes both costs; at batch 1 the product is a GEMV over the
// packed panels that streams them from L2 (OpenBLAS's sgemv reads the row-major weight instead).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <utility>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/isa.hpp>
#include <recpipe/cpu/parallel.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! @brief An nn.Linear weight [out, in] repacked for the AVX-512 kernels: panels of 32 output
//! columns, each stored K-major (in x 32 floats, row k holding weight(j, k) for the panel's 32
//! columns j), zero-padded past `rows()`, 64-byte aligned. Immutable once built; move-only.
//!
//! Pack once when a model loads and keep the original weight too: the portable kernels (and
//! cross_network's fallback) read the original layout.
//! @code
//! recpipe::matrix<float> w(256, 512), x(8, 512), y(8, 256);
//! const recpipe::cpu::packed_linear packed(w.view());      // [256, 512], as nn.Linear(512, 256)
//! recpipe::cpu::linear(x.view(), packed, {}, y.view());     // y = x * w^T
//! @endcode
class packed_linear {
 public:
  //! Output columns per panel: two zmm registers, so a 12-row tile keeps 24 accumulators.
  static constexpr std::size_t panel_width = 32;

  packed_linear() = default;
  //! Packs `weight` [out, in] (any stride). @throws recpipe::error on a malformed view.
  explicit packed_linear(matrix_view<const float> weight) : rows_(weight.rows()), cols_(weight.cols()) {
    impl::check_view("cpu::packed_linear", "weight", weight);
    const std::size_t floats = panels() * cols_ * panel_width;
    if (floats == 0) return;
    data_.reset(static_cast<float*>(::operator new[](floats * sizeof(float), std::align_val_t{64})));
    std::memset(data_.get(), 0, floats * sizeof(float));
    // Read the weight row by row (its natural order) and scatter into the panels.
    for (std::size_t j = 0; j < rows_; ++j) {
      float* dst = data_.get() + (j / panel_width) * cols_ * panel_width + j % panel_width;
      const float* src = weight.data() + j * weight.stride();
      for (std::size_t k = 0; k < cols_; ++k) dst[k * panel_width] = src[k];
    }
  }
  packed_linear(packed_linear&&) noexcept = default;
  packed_linear& operator=(packed_linear&&) noexcept = default;

  //! Output features (the weight's rows).
  std::size_t rows() const noexcept { return rows_; }
  //! Input features (the weight's columns).
  std::size_t cols() const noexcept { return cols_; }
  std::size_t panels() const noexcept { return (rows_ + panel_width - 1) / panel_width; }
  //! Panel p: cols() x panel_width floats, K-major.
  const float* panel(std::size_t p) const noexcept { return data_.get() + p * cols_ * panel_width; }
  //! weight(out, in) read back from the packed form.
  float at(std::size_t out, std::size_t in) const noexcept { return panel(out / panel_width)[in * panel_width + out % panel_width]; }
  std::size_t bytes() const noexcept { return panels() * cols_ * panel_width * sizeof(float); }

 private:
  struct aligned_delete {
    void operator()(float* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::unique_ptr<float[], aligned_delete> data_;
  std::size_t rows_ = 0, cols_ = 0;
};

namespace impl {

// One packed product C[m, n] = A[m, k] * W^T (W packed), finished by an epilogue on the tile:
// store: C = acc + bias; cross: C = x0 * (acc + bias) + xl (DCN-v2). C must not overlap A; for
// cross it may equal neither x0 nor xl's rows that later tiles still read (the callers ping-pong).
struct packed_gemm_args {
  const float* a = nullptr;
  std::size_t lda = 0;
  const packed_linear* w = nullptr;
  float* c = nullptr;
  std::size_t ldc = 0;
  const float* bias = nullptr;  // [n] or null
  const float* x0 = nullptr;    // cross epilogue only
  std::size_t ldx0 = 0;
  const float* xl = nullptr;
  std::size_t ldxl = 0;
  std::size_t m = 0;
  bool cross = false;
  const packed_linear* next = nullptr;  // the weights the caller multiplies next (prefetched), or null
};

// Largest row tile: 12 rows x 2 zmm = 24 accumulators, plus 2 for the panel row and room for the
// broadcast; B traffic per FMA is the lowest of the 24-accumulator shapes (12x32, 8x48, 6x64).
inline constexpr std::size_t packed_max_rows = 12;

// Portable body, in the same tile order as the AVX-512 one; loops over the 32 panel columns
// vectorise with whatever -march the caller has.
inline void packed_gemm_portable(const packed_gemm_args& g, std::size_t panel_begin, std::size_t panel_end) {
  constexpr std::size_t pw = packed_linear::panel_width;
  const std::size_t k = g.w->cols(), n = g.w->rows();
  for (std::size_t r = 0; r < g.m; ++r) {
    const float* a = g.a + r * g.lda;
    for (std::size_t p = panel_begin; p < panel_end; ++p) {
      float acc[pw] = {};
      const float* b = g.w->panel(p);
      for (std::size_t kk = 0; kk < k; ++kk)
        for (std::size_t j = 0; j < pw; ++j) acc[j] += a[kk] * b[kk * pw + j];
      const std::size_t col = p * pw, valid = std::min(pw, n - col);
      float* c = g.c + r * g.ldc + col;
      for (std::size_t j = 0; j < valid; ++j) {
        float y = acc[j] + (g.bias ? g.bias[col + j] : 0.0f);
        if (g.cross) y = g.x0[r * g.ldx0 + col + j] * y + g.xl[r * g.ldxl + col + j];
        c[j] = y;
      }
    }
  }
}

#if RECPIPE_HAS_AVX512_KERNELS
struct packed_tile_args {
  const float* a;
  std::size_t lda;
  const float* b;  // the panel: k x 32
  std::size_t k;
  float* c;  // every pointer below is already at the panel's first column
  std::size_t ldc;
  const float* bias;
  const float* x0;
  std::size_t ldx0;
  const float* xl;
  std::size_t ldxl;
  unsigned valid;  // columns of this panel inside n (1..32)
  const char* prefetch;        // lines [0, prefetch_lines) from here go to L2 during the k loop
  std::size_t prefetch_lines;
};

// MR rows x NV zmm of the panel. KS independent accumulator sets split k when the tile is too small
// to hide the FMA latency (4 cycles, 2 ports: 8 FMAs in flight); at MR == 1 this is a GEMV that
// streams the panel, limited by L2 bandwidth instead of the dependency chain.
template <int MR, int NV, bool CROSS>
RECPIPE_TARGET_AVX512 inline void packed_tile(const packed_tile_args& t) {
  constexpr int KS = MR * NV >= 8 ? 1 : (MR * NV >= 4 ? 2 : 4);
  constexpr std::size_t pw = packed_linear::panel_width;
  __m512 acc[KS][MR][NV];
#pragma GCC unroll 4
  for (int s = 0; s < KS; ++s)
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[s][r][v] = _mm512_setzero_ps();
  const float* a = t.a;
  const std::size_t lda = t.lda;
  const float* b = t.b;
  std::size_t kk = 0;
  for (; kk + KS <= t.k; kk += KS) {
    // One line of the next panel per step: the weights stream from L3 while this one computes.
    if (kk < t.prefetch_lines) _mm_prefetch(t.prefetch + kk * 64, _MM_HINT_T1);
#pragma GCC unroll 4
    for (int s = 0; s < KS; ++s) {
      __m512 bv[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + (kk + static_cast<std::size_t>(s)) * pw + 16 * v);
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(a[static_cast<std::size_t>(r) * lda + kk + static_cast<std::size_t>(s)]);
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[s][r][v] = _mm512_fmadd_ps(av, bv[v], acc[s][r][v]);
      }
    }
  }
  for (; kk < t.k; ++kk) {
    __m512 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + kk * pw + 16 * v);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[static_cast<std::size_t>(r) * lda + kk]);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[0][r][v] = _mm512_fmadd_ps(av, bv[v], acc[0][r][v]);
    }
  }
#pragma GCC unroll 4
  for (int s = 1; s < KS; ++s)
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[0][r][v] = _mm512_add_ps(acc[0][r][v], acc[s][r][v]);
  // Epilogue on the registers; masked loads and stores cover a partial last panel (and never
  // fault past it).
  __mmask16 mask[NV];
  __m512 bias[NV];
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) {
    const unsigned left = t.valid > 16u * v ? t.valid - 16u * v : 0u;
    mask[v] = static_cast<__mmask16>(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
    bias[v] = t.bias ? _mm512_maskz_loadu_ps(mask[v], t.bias + 16 * v) : _mm512_setzero_ps();
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    const std::size_t row = static_cast<std::size_t>(r);
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      __m512 y = _mm512_add_ps(acc[0][r][v], bias[v]);
      if constexpr (CROSS)
        y = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask[v], t.x0 + row * t.ldx0 + 16 * v), y,
                            _mm512_maskz_loadu_ps(mask[v], t.xl + row * t.ldxl + 16 * v));
      _mm512_mask_storeu_ps(t.c + row * t.ldc + 16 * v, mask[v], y);
    }
  }
}

using packed_tile_fn = void (*)(const packed_tile_args&);

template <int MR>
RECPIPE_TARGET_AVX512 inline packed_tile_fn packed_tile_for(bool two, bool cross) {
  if (two) return cross ? &packed_tile<MR, 2, true> : &packed_tile<MR, 2, false>;
  return cross ? &packed_tile<MR, 1, true> : &packed_tile<MR, 1, false>;
}

RECPIPE_TARGET_AVX512 inline packed_tile_fn packed_tile_lookup(std::size_t rows, bool two, bool cross) {
  switch (rows) {
    case 1: return packed_tile_for<1>(two, cross);
    case 2: return packed_tile_for<2>(two, cross);
    case 3: return packed_tile_for<3>(two, cross);
    case 4: return packed_tile_for<4>(two, cross);
    case 5: return packed_tile_for<5>(two, cross);
    case 6: return packed_tile_for<6>(two, cross);
    case 7: return packed_tile_for<7>(two, cross);
    case 8: return packed_tile_for<8>(two, cross);
    case 9: return packed_tile_for<9>(two, cross);
    case 10: return packed_tile_for<10>(two, cross);
    case 11: return packed_tile_for<11>(two, cross);
    default: return packed_tile_for<12>(two, cross);
  }
}

// Panels outer, row tiles inner: each panel (k x 32 floats, 64 KiB at k = 512) comes from L3 once
// per call and then from L1/L2 for every row tile, so the weight stream is spread evenly over the
// computation (the hardware prefetcher hides it) instead of stalling the first tile of a layer,
// and the weight never has to fit in L2 whole. Tiles are balanced (64 rows run as
// 11,11,11,11,10,10, not 12 x 5 + 4) so no tile is mostly empty.
RECPIPE_TARGET_AVX512 inline void packed_gemm_avx512(const packed_gemm_args& g, std::size_t panel_begin,
                                                     std::size_t panel_end) {
  constexpr std::size_t pw = packed_linear::panel_width;
  const std::size_t n = g.w->rows(), k = g.w->cols();
  const std::size_t tiles = (g.m + packed_max_rows - 1) / packed_max_rows;
  packed_tile_args a{};
  a.lda = g.lda;
  a.k = k;
  a.ldc = g.ldc;
  a.ldx0 = g.ldx0;
  a.ldxl = g.ldxl;
  for (std::size_t p = panel_begin; p < panel_end; ++p) {
    const std::size_t col = p * pw, valid = std::min(pw, n - col);
    a.b = g.w->panel(p);
    a.valid = static_cast<unsigned>(valid);
    a.bias = g.bias ? g.bias + col : nullptr;
    // While this panel computes, pull the next one (or the next product's first) towards L2,
    // spread over the row tiles: the first tile of a panel then no longer waits on L3.
    const float* upcoming = p + 1 < panel_end ? g.w->panel(p + 1) : g.next && g.next->panels() ? g.next->panel(0) : nullptr;
    const std::size_t upcoming_lines = upcoming ? (p + 1 < panel_end ? k : g.next->cols()) * pw * sizeof(float) / 64 : 0;
    const std::size_t lines_per_tile = (upcoming_lines + tiles - 1) / tiles;
    std::size_t row = 0;
    for (std::size_t t = 0; t < tiles; ++t) {
      const std::size_t rows = g.m / tiles + (t < g.m % tiles ? 1 : 0);
      const std::size_t first_line = std::min(upcoming_lines, t * lines_per_tile);
      a.prefetch = upcoming ? reinterpret_cast<const char*>(upcoming) + first_line * 64 : nullptr;
      a.prefetch_lines = std::min(lines_per_tile, upcoming_lines - first_line);
      a.a = g.a + row * g.lda;
      a.c = g.c + row * g.ldc + col;
      a.x0 = g.cross ? g.x0 + row * g.ldx0 + col : nullptr;
      a.xl = g.cross ? g.xl + row * g.ldxl + col : nullptr;
      packed_tile_lookup(rows, valid > 16, g.cross)(a);
      row += rows;
    }
  }
}
#endif

// Dispatch on the active isa; panels [panel_begin, panel_end) of every row.
inline void packed_gemm(const packed_gemm_args& g, std::size_t panel_begin, std::size_t panel_end) {
  if (g.m == 0 || panel_begin >= panel_end) return;
#if RECPIPE_HAS_AVX512_KERNELS
  if (active_isa() == isa::avx512) return packed_gemm_avx512(g, panel_begin, panel_end);
#endif
  packed_gemm_portable(g, panel_begin, panel_end);
}

// Threads: rows when there are enough for every thread to fill 12-row tiles, else output panels.
inline void packed_gemm_parallel(const packed_gemm_args& g) {
  const std::size_t panels = g.w->panels();
  const std::size_t work = g.m * g.w->rows() * g.w->cols();
  const std::size_t threads = thread_pool::instance().size();
  if (g.m >= 2 * packed_max_rows * threads) {
    parallel_for(g.m, work, [&](std::size_t first, std::size_t last) {
      packed_gemm_args part = g;
      part.m = last - first;
      part.a += first * g.lda;
      part.c += first * g.ldc;
      if (g.cross) {
        part.x0 += first * g.ldx0;
        part.xl += first * g.ldxl;
      }
      packed_gemm(part, 0, panels);
    });
  } else {
    parallel_for(panels, work, [&](std::size_t first, std::size_t last) { packed_gemm(g, first, last); });
  }
}

}  // namespace impl

//! @brief y = x * W^T + bias with W packed (nn.Linear without activation), on the AVX-512 kernel
//! when cpu::active_isa() is avx512, else on portable loops over the same packed panels.
//! @param x  [batch, w.cols()]; @param bias [w.rows()] or empty; @param y [batch, w.rows()], must
//! not overlap x.
//! @throws recpipe::error naming the argument whose shape disagrees.
//! @code
//! recpipe::cpu::linear(x.view(), packed, bias, y.view());
//! @endcode
inline void linear(matrix_view<const float> x, const packed_linear& w, std::span<const float> bias,
                   matrix_view<float> y) {
  impl::check_view("cpu::linear", "x", x);
  if (x.cols() != w.cols())
    detail::fail("cpu::linear: packed weight is [", w.rows(), ", ", w.cols(), "] but x has ", x.cols(),
                 " columns (weight must be [out, in])");
  impl::check_bias("cpu::linear", "bias", bias, w.rows());
  impl::check_shape("cpu::linear", "y", y, x.rows(), w.rows());
  if (x.rows() == 0 || w.rows() == 0) return;
  impl::packed_gemm_args g;
  g.a = x.data();
  g.lda = x.stride();
  g.w = &w;
  g.c = y.data();
  g.ldc = y.stride();
  g.bias = bias.empty() ? nullptr : bias.data();
  g.m = x.rows();
  impl::packed_gemm_parallel(g);
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
