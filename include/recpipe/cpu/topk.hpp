// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: top-k selection with a deterministic order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! @brief The k best entries of `scores`, sorted by score descending, then id ascending.
//!
//! @param scores      n scores; NaN sorts after every number (it never beats -inf) and ties
//!                    between NaNs break by id.
//! @param ids         the id of each score (size n), or empty: the ids are then the positions 0..n-1.
//! @param k           how many to keep; k > n keeps n. k == 0 returns 0.
//! @param out_ids     receives min(k, n) ids; must hold at least that many.
//! @param out_scores  receives the matching scores; same size rule.
//! @return the number of entries written, min(k, n).
//! @throws recpipe::error if ids is neither empty nor of size n, or an output is too small.
//!
//! Complexity: O(n + k log k) expected.
inline std::size_t top_k(std::span<const float> scores, std::span<const id_type> ids, std::size_t k,
                         std::span<id_type> out_ids, std::span<float> out_scores) {
  const std::size_t n = scores.size();
  if (!ids.empty() && ids.size() != n)
    detail::fail("top_k: ids has ", ids.size(), " entries but scores has ", n);
  const std::size_t count = std::min(k, n);
  if (out_ids.size() < count || out_scores.size() < count)
    detail::fail("top_k: output spans hold ", std::min(out_ids.size(), out_scores.size()),
                 " entries but ", count, " are needed");
  if (count == 0) return 0;

  struct entry {
    float score;
    id_type id;
  };
  // "a before b": larger score first, NaN last, then smaller id.
  const auto better = [](const entry& a, const entry& b) {
    const bool a_nan = std::isnan(a.score), b_nan = std::isnan(b.score);
    if (a_nan != b_nan) return b_nan;
    if (!a_nan && a.score != b.score) return a.score > b.score;
    return a.id < b.id;
  };
  thread_local std::vector<entry> work;  // reused across calls: no allocation once warm
  work.resize(n);
  for (std::size_t i = 0; i < n; ++i)
    work[i] = {scores[i], ids.empty() ? static_cast<id_type>(i) : ids[i]};
  if (count < n)
    std::nth_element(work.begin(), work.begin() + static_cast<std::ptrdiff_t>(count), work.end(), better);
  std::sort(work.begin(), work.begin() + static_cast<std::ptrdiff_t>(count), better);
  for (std::size_t i = 0; i < count; ++i) {
    out_ids[i] = work[i].id;
    out_scores[i] = work[i].score;
  }
  return count;
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
