// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: how diversify, cap, pin, filter_in and filter_out run.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/cpu/stages/filter.hpp>
#include <recpipe/math/topk.hpp>
#include <recpipe/stages/rules.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

//! MMR's order: the larger value first, NaN after every number; equal values fall back to
//! top_k's order (score descending, id ascending, NaN last), so the first pick of lambda == 0 is
//! the best-scored candidate and lambda == 1 is exactly top_k.
inline bool mmr_before(double value_a, float score_a, id_type id_a, double value_b, float score_b, id_type id_b) {
  const bool a_nan = std::isnan(value_a), b_nan = std::isnan(value_b);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && value_a != value_b) return value_a > value_b;
  return math::ranks_before(score_a, id_a, score_b, id_b);
}

}  // namespace detail

template <class Score, class Vector>
struct stage_impl<diversify_stage<Score, Vector>, cpu_backend> {
  template <class Batch>
  static auto run(const diversify_stage<Score, Vector>& stage, Batch&& batch, cpu_backend&) {
    detail::check_stage_input(batch, "diversify");
    const auto& candidates = batch.template get<col::candidates>();
    const auto& ids = candidates.values();
    const auto& scores = batch.template get<Score>();
    const auto& vectors = batch.template get<Vector>();
    const std::size_t n = batch.size(), d = vectors.cols();
    const double lambda = stage.lambda();
    const bool needs_similarity = lambda < 1.0;
    // Per request scratch, reused across runs: unit vectors, max similarity so far, chosen flags.
    thread_local std::vector<double> unit, max_similarity;
    thread_local std::vector<char> has_direction, chosen;
    std::vector<std::size_t> offsets(n + 1, 0);
    std::vector<std::size_t> picks;
    picks.reserve(std::min(candidates.total(), n * stage.k()));
    for (std::size_t r = 0; r < n; ++r) {
      const std::size_t begin = candidates.offsets()[r], count = candidates.row_size(r);
      const std::size_t keep = std::min(stage.k(), count);
      chosen.assign(count, 0);
      max_similarity.assign(count, 0.0);
      if (needs_similarity) {
        unit.assign(count * d, 0.0);
        has_direction.assign(count, 0);
        for (std::size_t i = 0; i < count; ++i) {
          const auto v = vectors.row(begin + i);
          double norm2 = 0.0;
          for (const float x : v) norm2 += static_cast<double>(x) * x;
          if (!(norm2 > 0.0) || !std::isfinite(norm2)) continue;  // zero, NaN or inf: no direction
          const double inverse = 1.0 / std::sqrt(norm2);
          for (std::size_t j = 0; j < d; ++j) unit[i * d + j] = v[j] * inverse;
          has_direction[i] = 1;
        }
      }
      for (std::size_t step = 0; step < keep; ++step) {
        std::size_t best = count;
        double best_value = 0.0;
        for (std::size_t i = 0; i < count; ++i) {
          if (chosen[i]) continue;
          const float s = scores[begin + i];
          // lambda * score, except that a NaN score stays NaN (ranked last) and lambda == 0
          // ignores an infinite score instead of making 0 * inf = NaN.
          const double relevance = std::isnan(s) ? static_cast<double>(s) : (lambda == 0.0 ? 0.0 : lambda * s);
          const double value = relevance - (1.0 - lambda) * max_similarity[i];
          if (best == count ||
              detail::mmr_before(value, s, ids[begin + i], best_value, scores[begin + best], ids[begin + best])) {
            best = i;
            best_value = value;
          }
        }
        chosen[best] = 1;
        picks.push_back(begin + best);
        if (!needs_similarity || step + 1 == keep) continue;
        // The max similarity of every remaining candidate to the chosen set, updated with `best`.
        for (std::size_t i = 0; i < count; ++i) {
          if (chosen[i]) continue;
          double similarity = 0.0;
          if (has_direction[i] && has_direction[best]) {
            const double* a = unit.data() + i * d;
            const double* b = unit.data() + best * d;
            for (std::size_t j = 0; j < d; ++j) similarity += a[j] * b[j];
          }
          max_similarity[i] = step == 0 ? similarity : std::max(max_similarity[i], similarity);
        }
      }
      offsets[r + 1] = picks.size();
    }
    batch.select_candidates(std::move(offsets), picks);
    return std::forward<Batch>(batch);
  }
};

template <class Category, class Score>
struct stage_impl<cap_stage<Category, Score>, cpu_backend> {
  template <class Batch>
  static auto run(const cap_stage<Category, Score>& stage, Batch&& batch, cpu_backend&) {
    constexpr bool ranked = !std::is_same_v<Score, current_order>;
    detail::check_stage_input(batch, "cap");
    const auto& candidates = batch.template get<col::candidates>();
    const auto& ids = candidates.values();
    const auto& categories = batch.template get<Category>();
    const std::size_t n = batch.size();
    thread_local std::vector<std::size_t> order;
    thread_local std::unordered_map<typename Category::value_type, std::size_t> taken;
    std::vector<std::size_t> offsets(n + 1, 0);
    std::vector<std::size_t> picks;
    picks.reserve(candidates.total());
    for (std::size_t r = 0; r < n; ++r) {
      const std::size_t begin = candidates.offsets()[r], end = candidates.offsets()[r + 1];
      order.resize(end - begin);
      for (std::size_t at = begin; at < end; ++at) order[at - begin] = at;
      if constexpr (ranked) {
        const auto& scores = batch.template get<Score>();
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
          return math::ranks_before(scores[a], ids[a], scores[b], ids[b]);
        });
      }
      taken.clear();
      for (const std::size_t at : order)
        if (++taken[categories[at]] <= stage.n()) picks.push_back(at);
      offsets[r + 1] = picks.size();
    }
    batch.select_candidates(std::move(offsets), picks);
    return std::forward<Batch>(batch);
  }
};

template <>
struct stage_impl<pin_stage, cpu_backend> {
  template <class Batch>
  static auto run(const pin_stage& stage, Batch&& batch, cpu_backend&) {
    detail::check_stage_input(batch, "pin");
    const auto& candidates = batch.template get<col::candidates>();
    const auto& ids = candidates.values();
    const auto& pins = stage.pins();
    const std::size_t n = batch.size();
    constexpr std::size_t free_slot = std::numeric_limits<std::size_t>::max();
    thread_local std::vector<std::size_t> slots;  // slot -> flat position
    thread_local std::vector<char> placed;        // per candidate of the row: already pinned
    std::vector<std::size_t> offsets(n + 1, 0);
    std::vector<std::size_t> picks;
    picks.reserve(candidates.total());
    bool moved = false;
    for (std::size_t r = 0; r < n; ++r) {
      const std::size_t begin = candidates.offsets()[r], count = candidates.row_size(r);
      slots.assign(count, free_slot);
      placed.assign(count, 0);
      for (std::size_t p = 0; p < pins.size() && count > 0; ++p) {
        bool repeated = false;  // a second pin of the same item is ignored
        for (std::size_t q = 0; q < p && !repeated; ++q) repeated = pins[q].item == pins[p].item;
        if (repeated) continue;
        std::size_t found = count;
        for (std::size_t i = 0; i < count && found == count; ++i)
          if (ids[begin + i] == pins[p].item) found = i;
        if (found == count) continue;  // absent or filtered out: nothing to pin in this request
        std::size_t target = std::min(pins[p].position, count - 1);
        if (slots[target] != free_slot) {  // held by an earlier pin: the next free slot after, else before
          std::size_t after = target;
          while (after < count && slots[after] != free_slot) ++after;
          if (after < count) {
            target = after;
          } else {
            while (slots[target] != free_slot) --target;  // a free slot exists: fewer pins than slots
          }
        }
        slots[target] = begin + found;
        placed[found] = 1;
        moved = true;
      }
      std::size_t next = 0;  // the unpinned candidates fill the free slots in their order
      for (std::size_t s = 0; s < count; ++s) {
        if (slots[s] == free_slot) {
          while (placed[next]) ++next;
          slots[s] = begin + next++;
        }
        picks.push_back(slots[s]);
      }
      offsets[r + 1] = picks.size();
    }
    if (moved) batch.select_candidates(std::move(offsets), picks);
    return std::forward<Batch>(batch);
  }
};

template <class Set, bool Keep, class Ref>
struct stage_impl<set_filter_stage<Set, Keep, Ref>, cpu_backend> {
  template <class Batch>
  static auto run(const set_filter_stage<Set, Keep, Ref>& stage, Batch&& batch, cpu_backend&) {
    detail::check_stage_input(batch, Keep ? "filter_in" : "filter_out");
    const Set& set = stage.set();
    const auto& ids = batch.template get<col::candidates>().values();
    detail::keep_candidates(batch, [&](std::size_t, std::size_t at) { return static_cast<bool>(set.contains(ids[at])) == Keep; });
    return std::forward<Batch>(batch);
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
