// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: how filter_seen and filter run.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/detail/meta.hpp>
#include <recpipe/stages/filter.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

//! Checks that every column of the batch has one entry per request (per-request columns) or per
//! candidate (per-candidate columns), naming the stage otherwise. A pipeline validates its requests
//! before the first stage, but a batch handed to a stage directly (`batch >> stage`) is not, and
//! the candidate stages index columns by request and by candidate position. Cost: O(columns).
template <class Batch>
void check_stage_input(const Batch& batch, std::string_view stage_name) {
  const std::size_t n = batch.size(), candidates = batch.candidate_count();
  const auto check = [&]<class C>(const C*) {
    const auto& storage = batch.template get<C>();
    std::size_t have = 0, want = n;
    if constexpr (C::shape == column_shape::per_request || C::shape == column_shape::per_candidate)
      have = storage.size();
    else
      have = storage.rows();
    if constexpr (is_per_candidate_v<C>) want = candidates;
    if (have != want)
      detail::fail(stage_name, ": column '", C::name, "' has ", have, is_per_candidate_v<C> ? " entries" : " rows",
                   " but the batch has ", want, is_per_candidate_v<C> ? " candidates" : " requests");
  };
  [&]<class... Cs>(type_list<Cs...>) { (check(static_cast<const Cs*>(nullptr)), ...); }(typename Batch::column_list{});
}

//! Keeps candidate c of request r when keep(r, c_flat_position) is true; compacts every
//! per-candidate column of the batch.
template <class Batch, class Keep>
void keep_candidates(Batch& batch, Keep&& keep) {
  const auto& candidates = batch.template get<col::candidates>();
  const std::size_t n = batch.size();
  std::vector<std::size_t> offsets(n + 1, 0);
  std::vector<std::size_t> picks;
  picks.reserve(candidates.total());
  for (std::size_t r = 0; r < n; ++r) {
    for (std::size_t at = candidates.offsets()[r]; at < candidates.offsets()[r + 1]; ++at)
      if (keep(r, at)) picks.push_back(at);
    offsets[r + 1] = picks.size();
  }
  if (picks.size() == candidates.total()) return;  // nothing dropped: keep the columns as they are
  batch.select_candidates(std::move(offsets), picks);
}

}  // namespace detail

template <class History>
struct stage_impl<filter_seen_stage<History>, cpu_backend> {
  template <class Batch>
  static auto run(const filter_seen_stage<History>&, Batch&& batch, cpu_backend&) {
    detail::check_stage_input(batch, "filter_seen");
    const auto& history = batch.template get<History>();
    const auto& ids = batch.template get<col::candidates>().values();
    thread_local std::vector<id_type> seen;  // this request's history, sorted; reused across runs
    std::size_t sorted_for = static_cast<std::size_t>(-1);
    detail::keep_candidates(batch, [&](std::size_t request, std::size_t at) {
      if (request != sorted_for) {
        const auto row = history.row(request);
        seen.assign(row.begin(), row.end());
        std::sort(seen.begin(), seen.end());
        sorted_for = request;
      }
      return !std::binary_search(seen.begin(), seen.end(), ids[at]);
    });
    return std::forward<Batch>(batch);
  }
};

template <class Predicate, class ExtraReads>
struct stage_impl<filter_stage<Predicate, ExtraReads>, cpu_backend> {
  template <class Batch>
  static auto run(const filter_stage<Predicate, ExtraReads>& stage, Batch&& batch, cpu_backend&) {
    using batch_type = std::remove_cvref_t<Batch>;
    detail::check_stage_input(batch, "filter");
    const Predicate& keep = stage.predicate();
    const auto& ids = batch.template get<col::candidates>().values();
    const batch_type& view = batch;
    detail::keep_candidates(batch, [&](std::size_t request, std::size_t at) -> bool {
      if constexpr (std::is_invocable_r_v<bool, const Predicate&, id_type>)
        return keep(ids[at]);
      else if constexpr (std::is_invocable_r_v<bool, const Predicate&, std::size_t, id_type>)
        return keep(request, ids[at]);
      else if constexpr (std::is_invocable_r_v<bool, const Predicate&, const batch_type&, std::size_t, id_type>)
        return keep(view, request, ids[at]);
      else {
        static_assert(detail::always_false<Predicate>,
                      "recpipe: FILTER_PREDICATE_SIGNATURE - filter's predicate must be callable as keep(item), "
                      "keep(request, item) or keep(batch, request, item) and return bool");
        return true;
      }
    });
    return std::forward<Batch>(batch);
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
