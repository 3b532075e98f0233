// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: softmax sampling without replacement (Gumbel top-k), seeded.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/math/random.hpp>
#include <recpipe/math/topk.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! @brief Draws k items without replacement with probabilities softmax(logits / temperature)
//! (Plackett-Luce), by the Gumbel top-k trick: the k largest math::sampling_key values
//! (logit / temperature + Gumbel noise), ties by smaller id.
//!
//! The noise of an item is keyed by its id (ids[i], or i when ids is empty) in the stream
//! math::sampling_stream(seed, 0): the same (logits, ids, seed) gives the same draw on every
//! thread and backend, wherever the items sit in the list, and it is the draw the softmax_sample
//! stage makes for a request whose key is 0 (math::sampling_key is the one rule of both, and of
//! cuda::softmax_sample). Different seeds give independent draws.
//! @param logits       n unnormalised log-probabilities; NaN and -inf are never drawn.
//! @param ids          id of each logit (size n), or empty for positions.
//! @param temperature  finite and >= 0; 0 is a plain top-k of the drawable logits, small values
//!                     approach it, large ones uniform sampling.
//! @param out_ids      receives the drawn ids in draw order (first draw first).
//! @param out_scores   receives the logits of the drawn ids.
//! @return min(k, number of drawable logits).
//! @throws recpipe::error for a bad temperature, ids of the wrong size, or short outputs
//!         (they must hold min(k, n)).
//! @code
//! std::size_t got = recpipe::cpu::sample_without_replacement(logits, {}, 5, 0.7f, 42, ids, picked);
//! @endcode
inline std::size_t sample_without_replacement(std::span<const float> logits, std::span<const id_type> ids,
                                              std::size_t k, float temperature, std::uint64_t seed,
                                              std::span<id_type> out_ids, std::span<float> out_scores) {
  const std::size_t n = logits.size();
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    detail::fail("cpu::sample_without_replacement: temperature must be finite and >= 0 (got ", temperature, ")");
  if (!ids.empty() && ids.size() != n)
    detail::fail("cpu::sample_without_replacement: ids has ", ids.size(), " entries but logits has ", n);
  if (out_ids.size() < std::min(k, n) || out_scores.size() < std::min(k, n))
    detail::fail("cpu::sample_without_replacement: outputs hold ", std::min(out_ids.size(), out_scores.size()),
                 " entries but ", std::min(k, n), " are needed");
  struct entry {
    double key;
    id_type id;
    std::size_t position;
  };
  thread_local std::vector<entry> drawable;  // reused: no allocation once warm
  drawable.clear();
  const std::uint64_t stream = math::sampling_stream(seed, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const float logit = logits[i];
    if (std::isnan(logit) || logit == -std::numeric_limits<float>::infinity()) continue;  // never drawn
    const id_type id = ids.empty() ? static_cast<id_type>(i) : ids[i];
    drawable.push_back({math::sampling_key(logit, temperature, stream, id), id, i});
  }
  const std::size_t count = std::min(k, drawable.size());
  const auto better = [](const entry& a, const entry& b) { return math::ranks_before(a.key, a.id, b.key, b.id); };
  const auto middle = drawable.begin() + static_cast<std::ptrdiff_t>(count);
  if (count < drawable.size()) std::nth_element(drawable.begin(), middle, drawable.end(), better);
  std::sort(drawable.begin(), middle, better);
  for (std::size_t i = 0; i < count; ++i) {
    out_ids[i] = drawable[i].id;
    out_scores[i] = logits[drawable[i].position];
  }
  return count;
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
