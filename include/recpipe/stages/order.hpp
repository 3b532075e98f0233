// SPDX-License-Identifier: Apache-2.0
// recpipe stages: top_k and softmax_sample - the final ordering of candidates.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/pipeline.hpp>
#include <recpipe/detail/meta.hpp>
#include <recpipe/detail/name.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

namespace detail {
inline constexpr std::string_view top_k_prefix = "top_k";
inline constexpr std::string_view softmax_sample_prefix = "softmax_sample";
}  // namespace detail

//! The description of top_k: keep the k best candidates by `Score`.
template <column Score>
struct top_k_stage : stage<top_k_stage<Score>> {
  static_assert(Score::shape == column_shape::per_candidate,
                "recpipe: ORDER_COLUMN_NOT_PER_CANDIDATE - ordering stages rank by a per_candidate column");
  using reads = columns<col::candidates, Score>;
  using writes = columns<>;
  static constexpr std::string_view name = detail::stage_name_v<&detail::top_k_prefix, &Score::name>;

  explicit top_k_stage(std::size_t k) : k_(k) {
    if (k == 0) detail::fail("top_k: k must be at least 1 (got 0)");
  }
  std::size_t k() const { return k_; }

 private:
  std::size_t k_;
};

//! @brief Keeps each request's k best candidates, ordered by score descending, then item id
//! ascending (deterministic). NaN scores rank after every number. Fewer than k candidates keeps
//! them all; every per-candidate column is reordered alike.
//! @throws recpipe::error when k == 0.
//!
//! @code
//! auto best_ten = recpipe::top_k(10);                                  // by col::score
//! auto by_similarity = recpipe::top_k<recpipe::col::retrieval_score>(10);
//! @endcode
template <column Score = col::score>
top_k_stage<Score> top_k(std::size_t k) {
  return top_k_stage<Score>(k);
}

//! The description of softmax_sample: sample k candidates without replacement.
template <column Score>
struct softmax_sample_stage : stage<softmax_sample_stage<Score>> {
  static_assert(Score::shape == column_shape::per_candidate,
                "recpipe: ORDER_COLUMN_NOT_PER_CANDIDATE - ordering stages rank by a per_candidate column");
  using reads = columns<col::candidates, Score>;
  using writes = columns<>;
  static constexpr std::string_view name = detail::stage_name_v<&detail::softmax_sample_prefix, &Score::name>;

  softmax_sample_stage(std::size_t k, float temperature, std::uint64_t seed)
      : k_(k), temperature_(temperature), seed_(seed) {
    if (k == 0) detail::fail("softmax_sample: k must be at least 1 (got 0)");
    if (!(temperature >= 0.0f) || std::isinf(temperature))
      detail::fail("softmax_sample: temperature must be finite and >= 0 (got ", temperature, ")");
  }
  std::size_t k() const { return k_; }
  float temperature() const { return temperature_; }
  std::uint64_t seed() const { return seed_; }

 private:
  std::size_t k_;
  float temperature_;
  std::uint64_t seed_;
};

//! @brief Samples k candidates per request without replacement, with probability proportional
//! to exp(score / temperature) (Plackett-Luce), and orders them in sampling order.
//!
//! Gumbel top-k: each candidate's key is score / temperature + Gumbel noise, computed in double
//! precision without exponentials, so it never overflows; the k largest keys win. The noise of an
//! item depends only on (seed, request, item id), so results are reproducible and independent of
//! candidate order. The request part is `col::request_seed` when the batch has it (vary it per call
//! for fresh samples), else `col::user_id`, else the request's position in the batch.
//! temperature == 0 is exactly top_k; as temperature -> 0 the sample converges to the top_k order.
//! NaN scores are never sampled before a number. Every per-candidate column is reordered alike.
//! @throws recpipe::error when k == 0 or temperature is negative, NaN or infinite.
//!
//! @code
//! auto explore = recpipe::softmax_sample(10, 0.5f, /*seed=*/42);
//! @endcode
template <column Score = col::score>
softmax_sample_stage<Score> softmax_sample(std::size_t k, float temperature, std::uint64_t seed = 0x5eed) {
  return softmax_sample_stage<Score>(k, temperature, seed);
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
#include <recpipe/cpu/stages/order.hpp>
