// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: top-k selection with a deterministic order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <limits>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/parallel.hpp>
#include <recpipe/math/topk.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

namespace impl {
struct scored {
  float score;
  id_type id;
};
inline bool better(const scored& a, const scored& b) { return math::ranks_before(a.score, a.id, b.score, b.id); }

// Keeps the best `count` of work[0..size) at its front, sorted.
inline void select_sorted(std::vector<scored>& work, std::size_t size, std::size_t count) {
  const auto first = work.begin();
  if (count < size) std::nth_element(first, first + static_cast<std::ptrdiff_t>(count - 1), first + static_cast<std::ptrdiff_t>(size), better);
  std::sort(first, first + static_cast<std::ptrdiff_t>(count), better);
}

// A starting threshold from a cheap sample: 128 blocks of 16 consecutive scores (one cache line
// each) spread over the input, and the sample's r-th best with r chosen so that several times k
// scores are expected above it. Too high a guess only costs the exact fallback; too low only
// costs candidates. Sorted inputs, which would otherwise raise the threshold every chunk, start
// near their final threshold.
inline float sampled_threshold(std::span<const float> scores, std::size_t count) {
  constexpr std::size_t blocks = 128, width = 16;
  const std::size_t n = scores.size();
  float sample[blocks * width];
  std::size_t size = 0;
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::size_t first = (n - width) / (blocks - 1) * b;
    for (std::size_t l = 0; l < width; ++l)
      if (!std::isnan(scores[first + l])) sample[size++] = scores[first + l];
  }
  const std::size_t rank = std::max<std::size_t>(8, 4 * count * blocks * width / n);  // 1-based
  if (size < rank) return -std::numeric_limits<float>::infinity();
  std::nth_element(sample, sample + (rank - 1), sample + size, [](float a, float b) { return a > b; });
  return sample[rank - 1];
}

// One streaming pass: a candidate buffer of a few times k, a threshold raised to the k-th best
// score whenever the buffer fills, and a 16-wide "any score >= threshold" test that lets the
// common chunk (nothing good enough) cost one vector compare. Returns false when fewer than
// `count` candidates were kept (the caller then takes the exact path, which also orders NaNs).
inline bool top_k_streaming(std::span<const float> scores, std::span<const id_type> ids, std::size_t count,
                            std::vector<scored>& work) {
  const std::size_t n = scores.size(), capacity = std::max<std::size_t>(4 * count, 4096);
  work.resize(capacity + 16);
  std::size_t size = 0;
  float threshold = n >= 65536 ? sampled_threshold(scores, count) : -std::numeric_limits<float>::infinity();
  const float* RECPIPE_RESTRICT p = scores.data();
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    int any = 0;
    for (std::size_t l = 0; l < 16; ++l) any |= p[i + l] >= threshold ? 1 : 0;
    if (RECPIPE_LIKELY(!any)) continue;
    for (std::size_t l = 0; l < 16; ++l)
      if (p[i + l] >= threshold) work[size++] = {p[i + l], ids.empty() ? static_cast<id_type>(i + l) : ids[i + l]};
    if (size >= capacity) {
      const auto first = work.begin();
      std::nth_element(first, first + static_cast<std::ptrdiff_t>(count - 1), first + static_cast<std::ptrdiff_t>(size), better);
      size = count;
      threshold = work[count - 1].score;
      // Ties at the threshold may still win on a smaller id; with positions as ids every later
      // score has a larger id, so only strictly better scores can enter from here on.
      if (ids.empty()) threshold = std::nextafter(threshold, std::numeric_limits<float>::infinity());
    }
  }
  for (; i < n; ++i)
    if (p[i] >= threshold) work[size++] = {p[i], ids.empty() ? static_cast<id_type>(i) : ids[i]};
  if (size < count) return false;
  select_sorted(work, size, count);
  return true;
}
}  // namespace impl

//! @brief The k best entries of `scores`, sorted by score descending, then id ascending.
//!
//! @param scores      n scores; NaN sorts after every number (it never beats -inf) and ties
//!                    between NaNs break by id.
//! @param ids         the id of each score (size n), or empty: the ids are then the positions 0..n-1.
//! @param k           how many to keep, at most n (top_k_at_most() keeps min(k, n) instead).
//!                    k == 0 returns 0.
//! @param out_ids     receives k ids; must hold at least that many.
//! @param out_scores  receives the matching scores; same size rule.
//! @return the number of entries written, k.
//! @throws recpipe::error if k > n, if ids is neither empty nor of size n, or an output is too small.
//!
//! Complexity: O(n + k log k) expected. For k <= n / 8 one streaming pass with a rising
//! threshold (k = 100 of 1e6 reads the scores once); otherwise nth_element on a copy.
//! @code
//! std::vector<recpipe::id_type> ids(10);
//! std::vector<float> best(10);
//! std::size_t got = recpipe::cpu::top_k(scores, {}, 10, ids, best);
//! @endcode
inline std::size_t top_k_at_most(std::span<const float> scores, std::span<const id_type> ids, std::size_t k,
                                 std::span<id_type> out_ids, std::span<float> out_scores);

inline std::size_t top_k(std::span<const float> scores, std::span<const id_type> ids, std::size_t k,
                         std::span<id_type> out_ids, std::span<float> out_scores) {
  if (k > scores.size())
    detail::fail("top_k: k = ", k, " is larger than the ", scores.size(),
                 " scores (top_k_at_most keeps min(k, n) instead)");
  return top_k_at_most(scores, ids, k, out_ids, out_scores);
}

//! @brief top_k() that keeps min(k, n) when k exceeds the n scores: what retrieval and ordering
//! stages need, where a request for more items than a candidate list holds is normal.
//! @return the number of entries written, min(k, n).
//! @throws recpipe::error if ids is neither empty nor of size n, or an output is too small.
//! @code
//! std::size_t got = recpipe::cpu::top_k_at_most(scores, {}, 1000, ids, best);  // got <= scores.size()
//! @endcode
inline std::size_t top_k_at_most(std::span<const float> scores, std::span<const id_type> ids, std::size_t k,
                                 std::span<id_type> out_ids, std::span<float> out_scores) {
  const std::size_t n = scores.size();
  if (!ids.empty() && ids.size() != n)
    detail::fail("top_k: ids has ", ids.size(), " entries but scores has ", n);
  const std::size_t count = std::min(k, n);
  if (out_ids.size() < count || out_scores.size() < count)
    detail::fail("top_k: output spans hold ", std::min(out_ids.size(), out_scores.size()),
                 " entries but ", count, " are needed");
  if (count == 0) return 0;

  thread_local std::vector<impl::scored> work;  // reused across calls: no allocation once warm
  if (n < 4096 || count > n / 8 || !impl::top_k_streaming(scores, ids, count, work)) {
    work.resize(n);
    if (ids.empty())
      for (std::size_t i = 0; i < n; ++i) work[i] = {scores[i], static_cast<id_type>(i)};
    else
      for (std::size_t i = 0; i < n; ++i) work[i] = {scores[i], ids[i]};
    if (count <= 64 && count * 16 <= n)  // a k-heap beats introselect for small k
      std::partial_sort(work.begin(), work.begin() + static_cast<std::ptrdiff_t>(count), work.begin() + static_cast<std::ptrdiff_t>(n), impl::better);
    else
      impl::select_sorted(work, n, count);
  }
  for (std::size_t i = 0; i < count; ++i) {
    out_ids[i] = work[i].id;
    out_scores[i] = work[i].score;
  }
  return count;
}

//! @brief top_k() on every row of `scores` [rows, n]; the ids are column positions.
//! @param out_ids, out_scores  [rows, >= k]; row r receives row r's best, sorted.
//! @return k, the count written per row.
//! @throws recpipe::error if k > n, or an output has the wrong number of rows or too few columns.
//! @code
//! recpipe::cpu::top_k_rows(scores.view(), 10, ids.view(), best.view());
//! @endcode
inline std::size_t top_k_rows(matrix_view<const float> scores, std::size_t k, matrix_view<id_type> out_ids,
                              matrix_view<float> out_scores) {
  if (k > scores.cols())
    detail::fail("top_k_rows: k = ", k, " is larger than the ", scores.cols(), " columns of scores");
  const std::size_t count = k;
  if (scores.rows() > 1 && scores.stride() < scores.cols())
    detail::fail("top_k_rows: scores has stride ", scores.stride(), " smaller than its ", scores.cols(), " columns");
  if (out_ids.rows() != scores.rows() || out_scores.rows() != scores.rows())
    detail::fail("top_k_rows: outputs have ", out_ids.rows(), " and ", out_scores.rows(), " rows but scores has ",
                 scores.rows());
  if (out_ids.cols() < count || out_scores.cols() < count)
    detail::fail("top_k_rows: outputs have ", std::min(out_ids.cols(), out_scores.cols()), " columns but ", count,
                 " are needed");
  impl::parallel_for(scores.rows(), scores.rows() * scores.cols(), [&](std::size_t first, std::size_t last) {
    for (std::size_t r = first; r < last; ++r) top_k_at_most(scores.row(r), {}, k, out_ids.row(r), out_scores.row(r));
  });
  return count;
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
