// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend, internal: the AVX-512 body of cpu::embedding_bag (fp32, fp16, int8 row-wise).
//
// Included by recpipe/cpu/embedding.hpp only, inside its prologue/epilogue and after
// cpu::storage and impl::bad_id are declared (so it has no prologue of its own). Every function
// here carries RECPIPE_TARGET_AVX512, so it compiles whatever -march the caller uses;
// embedding_bag calls it only when cpu::active_isa() == cpu::isa::avx512.
//
// Why it is faster than the portable body (issue 3):
//  * a bag's sum lives in up to 8 zmm registers (dim <= 128 in one pass) instead of being
//    loaded and stored from `out` once per row, so the only memory traffic is the rows;
//  * int8 codes are widened and converted in registers (vpmovzxbd + vcvtdq2ps + one FMA per 16
//    columns), and the row's bias is summed once per bag as a scalar;
//  * tails (dim not a multiple of 16) use masked loads and stores, which never touch memory
//    outside the row or the output row, so any dim and any out stride work;
//  * rows are prefetched into L2 (prefetcht1) a fixed number of cache lines (not rows) ahead,
//    see impl::prefetch_lines in embedding.hpp for the measurements.
// Ids are checked before their row is read and before it is prefetched: no address outside the
// table is formed. The sum runs over the bag in id order like the portable body and LibTorch.
#pragma once

#if RECPIPE_HAS_AVX512_KERNELS

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports its own _mm512_undefined_ps() (inside vcvtdq2ps/vpmovzxbd/vcvtph2ps) as "may be
// used uninitialized" (GCC bug 105593, fixed in 13); embedding.hpp's epilogue pops this.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

RECPIPE_NAMESPACE_BEGIN
namespace cpu {
namespace impl {
namespace avx512 {

#define RECPIPE_EMB_INLINE RECPIPE_TARGET_AVX512 __attribute__((always_inline)) inline

//! Columns [c, c + 16) of a row decoded to float, lanes outside `mask` zero and not read.
//! For int8 this is the raw code (scale and bias are applied by the caller).
template <storage Type>
RECPIPE_EMB_INLINE __m512 load16(const std::byte* row, std::size_t c, __mmask16 mask) {
  if constexpr (Type == storage::fp32) {
    return _mm512_maskz_loadu_ps(mask, reinterpret_cast<const float*>(row) + c);
  } else if constexpr (Type == storage::fp16) {
    const __m256i h = _mm256_maskz_loadu_epi16(mask, reinterpret_cast<const std::uint16_t*>(row) + c);
    return _mm512_cvtph_ps(h);
  } else {
    const __m128i codes = _mm_maskz_loadu_epi8(mask, reinterpret_cast<const std::uint8_t*>(row) + c);
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(codes));
  }
}

//! Lanes of the 16-column group starting at column c that lie inside [0, dim).
RECPIPE_EMB_INLINE __mmask16 lane_mask(std::size_t c, std::size_t dim) {
  if (c >= dim) return 0;
  const std::size_t left = dim - c;
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

//! Everything a bag pass needs, gathered once per call.
struct bag_args {
  const std::byte* table;
  std::size_t rows, dim, row_bytes;
  const id_type* ids;
  std::size_t n;  // ids.size()
  const id_type* offsets;
  std::size_t offsets_size;
  const float* weights;  // null: all 1
  bool mean;
  float* out;
  std::size_t out_stride;
  std::size_t prefetch_ids;  // ids ahead to prefetch (0: none)
};

//! Prefetches every cache line of row `id` (skipped when id is out of range, so no address
//! outside the table is ever formed).
template <int Locality>  // __builtin_prefetch locality: 3 prefetcht0 (L1), 2 prefetcht1 (L2)
RECPIPE_EMB_INLINE void prefetch_row(const bag_args& a, id_type id) {
  if (static_cast<std::uint64_t>(id) >= a.rows) return;
  const auto first = reinterpret_cast<std::uintptr_t>(a.table + static_cast<std::size_t>(id) * a.row_bytes);
  const std::uintptr_t last = (first + a.row_bytes - 1) & ~std::uintptr_t{63};
  for (std::uintptr_t line = first & ~std::uintptr_t{63}; line <= last; line += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(line), 0, Locality);
}

//! Bag b, columns [col, col + 16 * NV) (masked to dim): the sums stay in NV zmm registers
//! for the whole bag. Only the pass with col == 0 prefetches (a later column pass over the same
//! bag finds its rows in L1/L2).
template <storage Type, int NV, class P>
RECPIPE_EMB_INLINE void bag_columns(const bag_args& a, std::size_t b, std::size_t col) {
  __mmask16 mask[NV];
  for (int v = 0; v < NV; ++v) mask[v] = lane_mask(col + 16 * static_cast<std::size_t>(v), a.dim);
  const bool prefetch = col == 0 && a.prefetch_ids != 0;
  const auto begin = static_cast<std::size_t>(a.offsets[b]);
  const std::size_t end = b + 1 < a.offsets_size ? static_cast<std::size_t>(a.offsets[b + 1]) : a.n;
  __m512 acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = _mm512_setzero_ps();
  float bias = 0.0f;  // int8: sum of weight * bias over the bag, added once
  for (std::size_t i = begin; i < end; ++i) {
    if (prefetch && i + a.prefetch_ids < a.n) prefetch_row<P::far_locality>(a, a.ids[i + a.prefetch_ids]);
    if constexpr (P::near != 0)
      if (prefetch && i + P::near < a.n) prefetch_row<3>(a, a.ids[i + P::near]);
    const id_type id = a.ids[i];
    if (RECPIPE_UNLIKELY(static_cast<std::uint64_t>(id) >= a.rows)) bad_id("cpu::embedding_bag", i, id, a.rows);
    const float w = a.weights ? a.weights[i] : 1.0f;
    const std::byte* row = a.table + static_cast<std::size_t>(id) * a.row_bytes;
    float scale = w;
    if constexpr (Type == storage::int8_rowwise) {
      float scale_bias[2];
      std::memcpy(scale_bias, row + a.dim, sizeof scale_bias);  // the tail may be unaligned
      scale = w * scale_bias[0];
      bias += w * scale_bias[1];
    }
    const __m512 s = _mm512_set1_ps(scale);
    for (int v = 0; v < NV; ++v)
      acc[v] = _mm512_fmadd_ps(load16<Type>(row, col + 16 * static_cast<std::size_t>(v), mask[v]), s, acc[v]);
  }
  if constexpr (Type == storage::int8_rowwise) {
    const __m512 sum_bias = _mm512_set1_ps(bias);
    for (int v = 0; v < NV; ++v) acc[v] = _mm512_add_ps(acc[v], sum_bias);
  }
  if (a.mean && end > begin) {
    const __m512 inverse = _mm512_set1_ps(1.0f / static_cast<float>(end - begin));
    for (int v = 0; v < NV; ++v) acc[v] = _mm512_mul_ps(acc[v], inverse);
  }
  float* o = a.out + b * a.out_stride + col;
  for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(o + 16 * v, mask[v], acc[v]);
}

//! Bags [first, last), each in one pass of NV registers (NV = ceil(dim / 16) <= 8), or for
//! dim > 128 in passes of 128 columns (the last one masked), bag by bag so its rows stay cached.
template <storage Type, int NV, class P>
RECPIPE_TARGET_AVX512 inline void bag_range(const bag_args& a, std::size_t first, std::size_t last) {
  for (std::size_t b = first; b < last; ++b)
    for (std::size_t col = 0; col < a.dim; col += 16 * NV) bag_columns<Type, NV, P>(a, b, col);
}

//! Prefetch policy (a template parameter so that tuning runs can compare variants in one
//! process): far_locality for the prefetch a.prefetch_ids ahead, plus optionally a second
//! prefetcht0 `near` ids ahead. Adding a near L1 prefetch measured slower (1.15x instead of
//! 1.45x over the portable body cold, and slower hot), prefetcht2 like prefetcht1 but a bit slower.
struct default_prefetch {
  static constexpr int far_locality = 2;  // prefetcht1
  static constexpr std::size_t near = 0;
};

//! Bags [first, last) over all columns (dim >= 1).
template <storage Type, class P = default_prefetch>
RECPIPE_TARGET_AVX512 inline void bags(const bag_args& a, std::size_t first, std::size_t last) {
  switch ((a.dim + 15) / 16) {
    case 1: return bag_range<Type, 1, P>(a, first, last);
    case 2: return bag_range<Type, 2, P>(a, first, last);
    case 3: return bag_range<Type, 3, P>(a, first, last);
    case 4: return bag_range<Type, 4, P>(a, first, last);
    case 5: return bag_range<Type, 5, P>(a, first, last);
    case 6: return bag_range<Type, 6, P>(a, first, last);
    case 7: return bag_range<Type, 7, P>(a, first, last);
    default: return bag_range<Type, 8, P>(a, first, last);
  }
}

#undef RECPIPE_EMB_INLINE

}  // namespace avx512
}  // namespace impl
}  // namespace cpu
RECPIPE_NAMESPACE_END

#endif  // RECPIPE_HAS_AVX512_KERNELS
