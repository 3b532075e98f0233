// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: softmax sampling without replacement (Gumbel top-k), seeded.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/topk.hpp>
#include <recpipe/math/random.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! @brief Draws k items without replacement with probabilities softmax(logits / temperature)
//! (Plackett-Luce), by the Gumbel top-k trick: the k largest logit / temperature + Gumbel noise.
//!
//! The noise for position i is math::gumbel(seed, i): the same (logits, seed) gives the same draw
//! on every thread and backend; different seeds give independent draws.
//! @param logits       n unnormalised log-probabilities; NaN and -inf are never drawn.
//! @param ids          id of each logit (size n), or empty for positions.
//! @param temperature  finite and > 0; small values approach top_k(), large ones uniform sampling.
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
  if (!(temperature > 0.0f) || !std::isfinite(temperature))
    detail::fail("cpu::sample_without_replacement: temperature must be finite and > 0 (got ", temperature, ")");
  if (!ids.empty() && ids.size() != n)
    detail::fail("cpu::sample_without_replacement: ids has ", ids.size(), " entries but logits has ", n);
  if (out_ids.size() < std::min(k, n) || out_scores.size() < std::min(k, n))
    detail::fail("cpu::sample_without_replacement: outputs hold ", std::min(out_ids.size(), out_scores.size()),
                 " entries but ", std::min(k, n), " are needed");
  thread_local std::vector<float> keys;
  thread_local std::vector<id_type> positions;
  thread_local std::vector<float> kept;
  keys.resize(n);
  std::size_t drawable = 0;
  const float inverse = 1.0f / temperature;
  for (std::size_t i = 0; i < n; ++i) {
    const float logit = logits[i];
    const bool ok = !std::isnan(logit) && logit != -std::numeric_limits<float>::infinity();
    drawable += ok ? 1 : 0;
    keys[i] = ok ? logit * inverse + math::gumbel(seed, i) : std::numeric_limits<float>::quiet_NaN();  // NaN: last
  }
  const std::size_t count = std::min(k, drawable);
  positions.resize(count);
  kept.resize(count);
  top_k(keys, {}, count, positions, kept);
  for (std::size_t i = 0; i < count; ++i) {
    const auto p = static_cast<std::size_t>(positions[i]);
    out_ids[i] = ids.empty() ? positions[i] : ids[p];
    out_scores[i] = logits[p];
  }
  return count;
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
