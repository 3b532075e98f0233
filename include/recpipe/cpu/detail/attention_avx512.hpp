// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: the AVX-512 body of one (session, head) of multi-head attention
// (cpu::multi_head_attention picks it at run time; see cpu/isa.hpp).
//
// Why this shape: head dims are short (32-64 floats), so computing each score as its own dot
// product spends as much on the final 16 -> 1 horizontal sum as on the products. Here the
// head's keys are transposed once into [hd, len] and four queries at a time are broadcast
// against 16 keys per register, so scores come out 16 at a time with no horizontal sums; the
// softmax uses a vectorised exp, and the weighted sum of values runs four queries together so
// each value row loaded feeds four independent accumulator chains.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include <recpipe/cpu/isa.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {
namespace impl {
//! Floats of per-thread work space attention_head_avx512 needs for sessions of up to max_len.
inline std::size_t attention_avx512_work_floats(std::size_t max_len, std::size_t hd) {
  const std::size_t padded = (max_len + 15) / 16 * 16;
  return hd * padded + 4 * padded + 4 * hd;
}

//! Whether the AVX-512 body handles this head width (whole registers only).
inline bool attention_avx512_supports(std::size_t hd) { return hd != 0 && hd % 16 == 0; }

#if RECPIPE_HAS_AVX512_KERNELS
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports its own _mm512_undefined_*() as (maybe) "used uninitialized" once some
// intrinsics are inlined (GCC bug 105593, fixed in 13); the epilogue's pop restores the setting.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

//! exp(x) for x <= 0 (softmax after subtracting the row maximum): Cephes' expf polynomial after
//! the usual x = n ln2 + r reduction, then scalef for 2^n; relative error about 2 ulp. Values
//! below -104 give 0 (as expf underflows); NaN stays NaN.
RECPIPE_TARGET_AVX512 inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);  // max(a, NaN) returns the NaN operand
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

//! In-place softmax of row[0..visible), and zeros in row[visible..width) (width a multiple of
//! 16 and >= visible), matching math::softmax_inplace: a row whose maximum is -inf becomes zeros.
RECPIPE_TARGET_AVX512 inline void softmax_row_avx512(float* row, std::size_t visible, std::size_t width) {
  const auto mask_at = [](std::size_t begin, std::size_t end) -> __mmask16 {
    if (end <= begin) return 0;
    return end - begin >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (end - begin)) - 1u);
  };
  __m512 peak = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (std::size_t s = 0; s < visible; s += 16)
    peak = _mm512_mask_max_ps(peak, mask_at(s, visible), peak, _mm512_loadu_ps(row + s));
  const float top = _mm512_reduce_max_ps(peak);
  if (std::isinf(top) && top < 0.0f) {
    for (std::size_t s = 0; s < width; s += 16) _mm512_storeu_ps(row + s, _mm512_setzero_ps());
    return;
  }
  const __m512 shift = _mm512_set1_ps(top);
  __m512 total = _mm512_setzero_ps();
  for (std::size_t s = 0; s < width; s += 16) {
    const __mmask16 m = mask_at(s, visible);
    const __m512 e = _mm512_maskz_mov_ps(m, exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + s), shift)));
    total = _mm512_add_ps(total, e);
    _mm512_storeu_ps(row + s, e);
  }
  const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(total));
  for (std::size_t s = 0; s < visible; s += 16) _mm512_storeu_ps(row + s, _mm512_mul_ps(_mm512_loadu_ps(row + s), inverse));
}

//! One session and head. `base` points at the session's first qkv row (row stride ld); the head's
//! q, k and v start at columns q_at, k_at and v_at. Writes context rows [len, hd] at `context`
//! (row stride context_ld). `work` holds attention_avx512_work_floats(len, hd) floats.
RECPIPE_TARGET_AVX512 inline void attention_head_avx512(const float* base, std::size_t ld, std::size_t len,
                                                        std::size_t hd, std::size_t q_at, std::size_t k_at,
                                                        std::size_t v_at, float scale, bool causal,
                                                        float* context, std::size_t context_ld, float* work) {
  const std::size_t padded = (len + 15) / 16 * 16;
  float* keys_t = work;                     // [hd, padded], the head's keys transposed, zero padded
  float* probs = keys_t + hd * padded;      // [4, padded], one row per query of the block
  float* queries = probs + 4 * padded;      // [4, hd], scaled queries of the block
  for (std::size_t c = 0; c < hd; ++c) {
    float* dst = keys_t + c * padded;
    for (std::size_t s = 0; s < len; ++s) dst[s] = base[s * ld + k_at + c];
    for (std::size_t s = len; s < padded; ++s) dst[s] = 0.0f;
  }
  for (std::size_t t0 = 0; t0 < len; t0 += 4) {
    const std::size_t rows = std::min<std::size_t>(4, len - t0);
    const std::size_t widest = causal ? t0 + rows : len;  // keys any query of the block sees
    const std::size_t width = (widest + 15) / 16 * 16;
    for (std::size_t r = 0; r < 4; ++r) {  // rows past the session repeat its last query, unused
      const float* q = base + std::min(t0 + r, len - 1) * ld + q_at;
      for (std::size_t c = 0; c < hd; ++c) queries[r * hd + c] = q[c] * scale;  // PyTorch scales q
    }
    // Scores: 16 keys per register, 4 queries x 2 partial sums = 8 independent FMA chains.
    for (std::size_t s = 0; s < width; s += 16) {
      __m512 acc[8];
#pragma GCC unroll 8
      for (auto& a : acc) a = _mm512_setzero_ps();
      for (std::size_t c = 0; c < hd; c += 2) {
        const __m512 k0 = _mm512_loadu_ps(keys_t + c * padded + s);
        const __m512 k1 = _mm512_loadu_ps(keys_t + (c + 1) * padded + s);
#pragma GCC unroll 4
        for (std::size_t r = 0; r < 4; ++r) {
          acc[2 * r] = _mm512_fmadd_ps(_mm512_set1_ps(queries[r * hd + c]), k0, acc[2 * r]);
          acc[2 * r + 1] = _mm512_fmadd_ps(_mm512_set1_ps(queries[r * hd + c + 1]), k1, acc[2 * r + 1]);
        }
      }
#pragma GCC unroll 4
      for (std::size_t r = 0; r < 4; ++r) _mm512_storeu_ps(probs + r * padded + s, _mm512_add_ps(acc[2 * r], acc[2 * r + 1]));
    }
    for (std::size_t r = 0; r < 4; ++r) softmax_row_avx512(probs + r * padded, causal ? std::min(t0 + r + 1, widest) : len, width);
    // Context: sum over keys of p[r][s] * v[s], 16 columns per register; keys past a query's
    // causal limit carry p = 0, so the four rows share one loop.
    for (std::size_t c = 0; c < hd; c += 16) {
      __m512 acc[4];
#pragma GCC unroll 4
      for (auto& a : acc) a = _mm512_setzero_ps();
      for (std::size_t s = 0; s < widest; ++s) {
        const __m512 v = _mm512_loadu_ps(base + s * ld + v_at + c);
#pragma GCC unroll 4
        for (std::size_t r = 0; r < 4; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(probs[r * padded + s]), v, acc[r]);
      }
      for (std::size_t r = 0; r < rows; ++r) _mm512_storeu_ps(context + (t0 + r) * context_ld + c, acc[r]);
    }
  }
}

#endif  // RECPIPE_HAS_AVX512_KERNELS
}  // namespace impl
}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
