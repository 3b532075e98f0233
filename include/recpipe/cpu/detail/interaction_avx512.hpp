// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: the AVX-512 body of the DLRM dot interaction (cpu::dot_interaction picks it
// at run time; see cpu/isa.hpp).
//
// Why a register tile: the portable loop computes each <f_i, f_j> as its own dot product and ends
// every one with a 16-lane -> 1 horizontal sum, which costs as much as the 8 FMAs of a 128-wide
// pair. Here a 4 x 4 tile of pairs keeps 16 accumulators in registers (8 loads feed 16 FMAs per
// 16 floats of d) and one transpose-reduce of about 30 shuffles and adds turns the 16
// accumulators into the 16 sums at once, landing them in row order for four masked stores.
#pragma once

#include <algorithm>
#include <cstddef>

#include <recpipe/cpu/isa.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {
namespace impl {
#if RECPIPE_HAS_AVX512_KERNELS
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports its own _mm512_undefined_*() as (maybe) "used uninitialized" once a shuffle is
// inlined here (GCC bug 105593, fixed in 13); the epilogue's pop restores the caller's setting.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

// Lane l of the result is the sum of all lanes of v[order(l)], where order swaps 1<->2, 4<->8,
// 5<->10, 6<->9, 7<->11 and 13<->14 (an involution): the caller passes the accumulators in that
// order so that the sums come out in natural order.
RECPIPE_TARGET_AVX512 inline __m512 reduce16_permuted(const __m512* v) {
  __m512 w[8], u[4], s[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)  // 512 -> 256 bits per vector, two vectors per register
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[i], v[i + 8], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(v[i], v[i + 8], _MM_SHUFFLE(3, 2, 3, 2)));
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)  // 256 -> 128
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[i], w[i + 4], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(w[i], w[i + 4], _MM_SHUFFLE(3, 1, 3, 1)));
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)  // 128 -> 64
    s[i] = _mm512_add_ps(_mm512_shuffle_ps(u[i], u[i + 2], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(u[i], u[i + 2], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_ps(s[0], s[1], _MM_SHUFFLE(2, 0, 2, 0)),  // 64 -> 32
                       _mm512_shuffle_ps(s[0], s[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

//! Rows [first, last) of dot_interaction (arguments already checked): features [batch, f*d] with
//! row stride `stride`, out rows of interaction_size(f, self) floats with stride `out_stride`.
RECPIPE_TARGET_AVX512 inline void dot_interaction_avx512(const float* features, std::size_t stride, std::size_t f,
                                                         std::size_t d, bool self_interaction, float* out,
                                                         std::size_t out_stride, std::size_t first,
                                                         std::size_t last) {
  constexpr int order[16] = {0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15};
  const std::size_t chunks = d / 16, extra = self_interaction ? 1 : 0;
  const __mmask16 tail = static_cast<__mmask16>((1u << (d % 16)) - 1u);
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  for (std::size_t b = first; b < last; ++b) {
    const float* row = features + b * stride;
    float* z = out + b * out_stride;
    // The next sample's f*d floats are pulled into L1 a few lines per tile, so the tiles never
    // wait on L3/DRAM (the hardware streamer loses track of the 8 interleaved feature streams).
    const char* next = b + 1 < last ? reinterpret_cast<const char*>(row + stride) : nullptr;
    const char* next_end = next ? next + f * d * sizeof(float) : nullptr;
    for (std::size_t bi = 0; bi < f; bi += 4) {
      // Rows past the last feature read feature f-1 (valid memory); their sums are never stored.
      const float* fi[4];
      for (std::size_t r = 0; r < 4; ++r) fi[r] = row + std::min(bi + r, f - 1) * d;
      for (std::size_t bj = 0; bj <= bi; bj += 4) {
        const float* fj[4];
        for (std::size_t c = 0; c < 4; ++c) fj[c] = row + std::min(bj + c, f - 1) * d;
        for (int line = 0; line < 8 && next < next_end; ++line, next += 64) _mm_prefetch(next, _MM_HINT_T0);
        __m512 acc[16];
#pragma GCC unroll 16
        for (auto& a : acc) a = _mm512_setzero_ps();
        std::size_t k = 0;
        for (std::size_t chunk = 0; chunk < chunks; ++chunk, k += 16) {
          __m512 xi[4], xj[4];
#pragma GCC unroll 4
          for (int r = 0; r < 4; ++r) xi[r] = _mm512_loadu_ps(fi[r] + k);
#pragma GCC unroll 4
          for (int c = 0; c < 4; ++c) xj[c] = _mm512_loadu_ps(fj[c] + k);
#pragma GCC unroll 4
          for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
            for (int c = 0; c < 4; ++c) acc[r * 4 + c] = _mm512_fmadd_ps(xi[r], xj[c], acc[r * 4 + c]);
        }
        if (tail) {  // masked loads never touch memory past the row's last float
          __m512 xi[4], xj[4];
#pragma GCC unroll 4
          for (int r = 0; r < 4; ++r) xi[r] = _mm512_maskz_loadu_ps(tail, fi[r] + k);
#pragma GCC unroll 4
          for (int c = 0; c < 4; ++c) xj[c] = _mm512_maskz_loadu_ps(tail, fj[c] + k);
#pragma GCC unroll 4
          for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
            for (int c = 0; c < 4; ++c) acc[r * 4 + c] = _mm512_fmadd_ps(xi[r], xj[c], acc[r * 4 + c]);
        }
        __m512 permuted[16];
#pragma GCC unroll 16
        for (int l = 0; l < 16; ++l) permuted[l] = acc[order[l]];
        const __m512 sums = reduce16_permuted(permuted);  // lane r*4+c = <f_{bi+r}, f_{bj+c}>
        for (std::size_t r = 0; r < 4; ++r) {
          const std::size_t i = bi + r, count = i + extra;  // pairs (i, j) with j < count
          if (i >= f) break;
          if (count <= bj) continue;
          const std::size_t n = std::min<std::size_t>(4, count - bj);
          const __m512 row_sums = _mm512_permutexvar_ps(
              _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int>(4 * r))), sums);
          _mm_mask_storeu_ps(z + i * (i - 1 + 2 * extra) / 2 + bj, static_cast<__mmask8>((1u << n) - 1u),
                             _mm512_castps512_ps128(row_sums));
        }
      }
    }
  }
}

#endif  // RECPIPE_HAS_AVX512_KERNELS
}  // namespace impl
}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
