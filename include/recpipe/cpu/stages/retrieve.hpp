// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: how retrieve runs.
#pragma once

#include <algorithm>
#include <cmath>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/stages/retrieve.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

namespace detail {

// The ids of request r in every column of `Lists` (per-request id lists), sorted, into `out`.
template <class Batch, class... Lists>
void gather_excluded([[maybe_unused]] const Batch& batch, [[maybe_unused]] std::size_t r, std::vector<id_type>& out,
                     type_list<Lists...>) {
  out.clear();
  (
      [&] {
        const auto row = batch.template get<Lists>().row(r);
        out.insert(out.end(), row.begin(), row.end());
      }(),
      ...);
  std::sort(out.begin(), out.end());
}

// One request's filtered retrieval into ids/scores[0, k): the best k eligible items, or all of
// them when fewer exist. An index with search_filtered filters inside its search; any other is
// over-fetched (k + excluded, then doubling) until k are eligible or the whole index was fetched.
template <class Index, class Allowed>
std::size_t retrieve_eligible(const Index& index, std::span<const float> query, std::size_t k, std::size_t excluded,
                              const Allowed& allowed, id_type* ids, float* scores) {
  if constexpr (requires { index.search_filtered(query, k, allowed, std::span<id_type>(ids, k), std::span<float>(scores, k)); }) {
    return index.search_filtered(query, k, allowed, std::span<id_type>(ids, k), std::span<float>(scores, k));
  } else {
    thread_local std::vector<id_type> fetched_ids;
    thread_local std::vector<float> fetched_scores;
    // An index without size() (a user's own) is fetched until a search returns fewer than asked.
    std::size_t size = static_cast<std::size_t>(-1);
    if constexpr (requires { index.size(); }) size = index.size();
    std::size_t want = std::min(size, k + excluded);
    while (true) {
      fetched_ids.resize(want);
      fetched_scores.resize(want);
      // An index may claim more results than asked for: never read past what was asked.
      const std::size_t found =
          std::min(want, index.search(query, want, std::span<id_type>(fetched_ids), std::span<float>(fetched_scores)));
      std::size_t kept = 0;
      for (std::size_t i = 0; i < found && kept < k; ++i) {
        if (fetched_ids[i] < 0 || !allowed(fetched_ids[i])) continue;
        ids[kept] = fetched_ids[i];
        scores[kept] = fetched_scores[i];
        ++kept;
      }
      if (kept == k || want >= size || found < want) return kept;
      want = want > size / 2 ? size : 2 * want;
    }
  }
}

}  // namespace detail

template <class Index, class Query, class Ref, class Excluded>
struct stage_impl<retrieve_stage<Index, Query, Ref, Excluded>, cpu_backend> {
  template <class Batch>
  static auto run(const retrieve_stage<Index, Query, Ref, Excluded>& stage, Batch&& batch, cpu_backend&) {
    // READ THIS IF YOUR COMPILE BREAKS HERE: replacing the candidates would leave the earlier
    // per-candidate columns describing items that are gone.
    static_assert(!std::remove_cvref_t<Batch>::template contains<col::candidates>,
                  "recpipe: CANDIDATES_ALREADY_PRESENT - retrieve runs on a batch without col::candidates; "
                  "merge several sources in one custom stage");
    const auto& queries = batch.template get<Query>();
    const Index& index = stage.index();
    const std::size_t n = batch.size();
    if (n > 0 && queries.cols() != index.dim())
      detail::fail("retrieve: query column '", Query::name, "' has width ", queries.cols(), " but the index has dim ",
                   index.dim());
    const std::size_t k = stage.k();

    std::vector<std::size_t> offsets(n + 1, 0);
    std::vector<id_type> ids(n * k);
    std::vector<float> scores(n * k);
    std::vector<char> finite(n, 1);
    bool all_finite = true;
    for (std::size_t r = 0; r < n; ++r) {
      for (const float x : queries.row(r)) finite[r] = finite[r] && std::isfinite(x);
      all_finite = all_finite && finite[r];
    }
    std::size_t written = 0;
    bool searched = false;
    const auto keep_valid = [&](std::size_t from, std::size_t found) {
      // Keep only valid ids even if an index misbehaves (hnswlib pads with garbage when it finds fewer).
      for (std::size_t i = 0; i < found && i < k; ++i) {
        if (ids[from + i] < 0) continue;
        ids[written] = ids[from + i];
        scores[written] = scores[from + i];
        ++written;
      }
    };
    const bool filters = stage.filters();
    if (filters) {
      // Per request: the excluded ids (sorted) and the predicate decide eligibility; refilled to k.
      thread_local std::vector<id_type> excluded;
      const auto& predicate = stage.allowed();
      for (std::size_t r = 0; r < n; ++r) {
        if (finite[r]) {
          detail::gather_excluded(batch, r, excluded, Excluded{});
          const auto allowed = [&](id_type id) {
            return !std::binary_search(excluded.begin(), excluded.end(), id) && (!predicate || predicate(id));
          };
          const std::size_t found =
              detail::retrieve_eligible(index, queries.row(r), k, excluded.size(), allowed, ids.data() + r * k, scores.data() + r * k);
          keep_valid(r * k, found);
        }
        offsets[r + 1] = written;
      }
      searched = true;
    }
    if constexpr (requires(matrix_view<id_type> out_ids, matrix_view<float> out_scores) {
                    index.search_batch(queries.view(), k, out_ids, out_scores);
                  }) {
      if (!filters && all_finite && n > 0) {  // one call for the batch: exact search does it as one GEMM
        const std::size_t found = index.search_batch(queries.view(), k, matrix_view<id_type>(ids.data(), n, k),
                                                     matrix_view<float>(scores.data(), n, k));
        for (std::size_t r = 0; r < n; ++r) {
          keep_valid(r * k, found);
          offsets[r + 1] = written;
        }
        searched = true;
      }
    }
    if (!searched) {
      for (std::size_t r = 0; r < n; ++r) {
        if (finite[r])
          keep_valid(r * k, index.search(queries.row(r), k, std::span<id_type>(ids.data() + r * k, k),
                                         std::span<float>(scores.data() + r * k, k)));
        offsets[r + 1] = written;
      }
    }
    ids.resize(written);
    scores.resize(written);
    ragged<id_type> candidates;
    candidates.assign(std::move(offsets), std::move(ids), col::candidates::name);
    return std::forward<Batch>(batch)
        .template with<col::candidates>(std::move(candidates))
        .template with<col::retrieval_score>(std::move(scores));
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
