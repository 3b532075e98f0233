// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: how top_k and softmax_sample run.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/cpu/stages/filter.hpp>
#include <recpipe/math/random.hpp>
#include <recpipe/math/topk.hpp>
#include <recpipe/stages/order.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

//! For each request, the flat positions of its `k` best candidates by (key desc, id asc), and
//! the batch reduced to them in that order. `key(position)` gives a candidate's ranking key.
template <class Batch, class KeyOf>
void keep_best_candidates(Batch& batch, std::size_t k, KeyOf&& key_of) {
  using key_type = decltype(key_of(std::size_t{}));
  const auto& candidates = batch.template get<col::candidates>();
  const auto& ids = candidates.values();
  const std::size_t n = batch.size();
  struct entry {
    key_type key;
    id_type id;
    std::size_t position;
  };
  thread_local std::vector<entry> row;  // reused across runs: no allocation once warm
  std::vector<std::size_t> offsets(n + 1, 0);
  std::vector<std::size_t> picks;
  picks.reserve(std::min(candidates.total(), n * k));
  const auto better = [](const entry& a, const entry& b) { return math::ranks_before(a.key, a.id, b.key, b.id); };
  for (std::size_t r = 0; r < n; ++r) {
    const std::size_t begin = candidates.offsets()[r], end = candidates.offsets()[r + 1];
    row.clear();
    for (std::size_t at = begin; at < end; ++at) row.push_back({key_of(at), ids[at], at});
    const std::size_t keep = std::min(k, row.size());
    const auto middle = row.begin() + static_cast<std::ptrdiff_t>(keep);
    if (keep < row.size()) std::nth_element(row.begin(), middle, row.end(), better);
    std::sort(row.begin(), middle, better);
    for (std::size_t i = 0; i < keep; ++i) picks.push_back(row[i].position);
    offsets[r + 1] = picks.size();
  }
  batch.select_candidates(std::move(offsets), picks);
}

}  // namespace detail

template <class Score>
struct stage_impl<top_k_stage<Score>, cpu_backend> {
  template <class Batch>
  static auto run(const top_k_stage<Score>& stage, Batch&& batch, cpu_backend&) {
    detail::check_stage_input(batch, "top_k");
    const auto& scores = batch.template get<Score>();
    detail::keep_best_candidates(batch, stage.k(), [&](std::size_t at) { return scores[at]; });
    return std::forward<Batch>(batch);
  }
};

template <class Score>
struct stage_impl<softmax_sample_stage<Score>, cpu_backend> {
  template <class Batch>
  static auto run(const softmax_sample_stage<Score>& stage, Batch&& batch, cpu_backend&) {
    using batch_type = std::remove_cvref_t<Batch>;
    detail::check_stage_input(batch, "softmax_sample");
    const auto& scores = batch.template get<Score>();
    const auto& candidates = batch.template get<col::candidates>();
    // The request each flat candidate position belongs to, and that request's random stream.
    std::vector<std::uint64_t> stream_of_request(batch.size());
    for (std::size_t r = 0; r < batch.size(); ++r) {
      std::uint64_t request_key = r;
      if constexpr (batch_type::template contains<col::request_seed>)
        request_key = batch.template get<col::request_seed>()[r];
      else if constexpr (batch_type::template contains<col::user_id>)
        request_key = static_cast<std::uint64_t>(batch.template get<col::user_id>()[r]);
      stream_of_request[r] = math::sampling_stream(stage.seed(), request_key);
    }
    const float temperature = stage.temperature();
    std::size_t request = 0;
    // math::sampling_key: the one Gumbel-top-k rule (temperature 0: the score, a plain top-k).
    detail::keep_best_candidates(batch, stage.k(), [&](std::size_t at) {
      while (at >= candidates.offsets()[request + 1]) ++request;  // positions arrive in order
      return math::sampling_key(scores[at], temperature, stream_of_request[request], candidates.values()[at]);
    });
    return std::forward<Batch>(batch);
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
