// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: how retrieve runs.
#pragma once

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

template <class Index, class Query, class Ref>
struct stage_impl<retrieve_stage<Index, Query, Ref>, cpu_backend> {
  template <class Batch>
  static auto run(const retrieve_stage<Index, Query, Ref>& stage, Batch&& batch, cpu_backend&) {
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
    if constexpr (requires(matrix_view<id_type> out_ids, matrix_view<float> out_scores) {
                    index.search_batch(queries.view(), k, out_ids, out_scores);
                  }) {
      if (all_finite && n > 0) {  // one call for the batch: exact search does it as one GEMM
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
