// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: how cold_start runs.
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/cpu/stages/filter.hpp>
#include <recpipe/stages/cold_start.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

template <class Flag, class Score, class Ref>
struct stage_impl<cold_start_stage<Flag, Score, Ref>, cpu_backend> {
  template <class Batch>
  static auto run(const cold_start_stage<Flag, Score, Ref>& stage, Batch&& batch, cpu_backend&) {
    using batch_type = std::remove_cvref_t<Batch>;
    detail::check_stage_input(batch, "cold_start");
    const auto& flags = batch.template get<Flag>();
    if (std::none_of(flags.begin(), flags.end(), [](auto flag) { return flag != 0; }))
      return std::forward<Batch>(batch);  // nobody is cold: leave every column as it is

    const popular_items& popular = stage.popular();
    const auto& candidates = batch.template get<col::candidates>();
    const std::size_t n = batch.size();
    std::vector<std::size_t> offsets(n + 1, 0);
    std::vector<std::size_t> picks;
    std::vector<id_type> fresh;
    std::vector<float> fresh_scores;  // the count of each new item, written into Score below
    picks.reserve(candidates.total());
    fresh.reserve(candidates.total());
    thread_local std::vector<id_type> seen;
    for (std::size_t r = 0; r < n; ++r) {
      if (flags[r] == 0) {
        for (std::size_t at = candidates.offsets()[r]; at < candidates.offsets()[r + 1]; ++at) {
          picks.push_back(at);
          fresh.push_back(0);
          fresh_scores.push_back(0.0f);
        }
      } else {
        seen.clear();
        if constexpr (batch_type::template contains<col::history>) {
          const auto row = batch.template get<col::history>().row(r);
          seen.assign(row.begin(), row.end());
          std::sort(seen.begin(), seen.end());
        }
        std::size_t taken = 0;
        for (std::size_t i = 0; i < popular.size() && taken < stage.k(); ++i) {
          const id_type item = popular.ids()[i];
          if (std::binary_search(seen.begin(), seen.end(), item)) continue;
          picks.push_back(batch_type::new_candidate);
          fresh.push_back(item);
          fresh_scores.push_back(popular.counts()[i]);
          ++taken;
        }
      }
      offsets[r + 1] = picks.size();
    }
    batch.replace_candidates(std::move(offsets), picks, fresh);
    auto& scores = batch.template get<Score>();
    for (std::size_t i = 0; i < picks.size(); ++i)
      if (picks[i] == batch_type::new_candidate) scores[i] = fresh_scores[i];
    return std::forward<Batch>(batch);
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
