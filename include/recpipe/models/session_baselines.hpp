// SPDX-License-Identifier: Apache-2.0
// recpipe models: the session-based baselines that the literature finds hard to beat (Ludewig &
// Jannach 2018, "Evaluation of session-based recommendation algorithms"): most popular, item-kNN
// on session co-occurrence, and session-kNN with a position decay (V-SKNN).
//
// All three are fit from a training io::session_log and score every catalog item for a session
// prefix with the shape every next-item model in recpipe shares:
//   void score_session(std::span<const id_type> prefix, std::span<float> scores) const;
// (dense item ids in [0, num_items()), one score per item, higher is better). score_session is
// const and thread-safe: train::evaluate_next_item calls it from several threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/io/sessions.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace models {

namespace baselines_impl {

// Every baseline checks its inputs the same way: one score per item, ids inside the catalog.
inline void check_scoring(std::string_view who, std::span<const id_type> prefix, std::span<float> scores, std::size_t items) {
  if (scores.size() != items)
    detail::fail(who, ": scores has ", scores.size(), " entries but the catalog has ", items, " items");
  for (std::size_t p = 0; p < prefix.size(); ++p)
    if (prefix[p] < 0 || static_cast<std::size_t>(prefix[p]) >= items)
      detail::fail(who, ": prefix[", p, "] = ", prefix[p], " is outside the catalog [0, ", items, ")");
}

// The distinct items of each training session, sorted (binary session vectors).
inline std::vector<std::vector<id_type>> distinct_items(const io::session_log& log) {
  std::vector<std::vector<id_type>> out(log.num_sessions());
  for (std::size_t s = 0; s < log.num_sessions(); ++s) {
    const auto items = log.session(s);
    out[s].assign(items.begin(), items.end());
    std::sort(out[s].begin(), out[s].end());
    out[s].erase(std::unique(out[s].begin(), out[s].end()), out[s].end());
  }
  return out;
}

}  // namespace baselines_impl

//! @brief Most popular: every item scores its number of clicks in the training log, whatever the
//! session. The floor any session model must clear.
//! @code
//! recpipe::models::most_popular pop(split.train);
//! std::vector<float> scores(pop.num_items());
//! pop.score_session(prefix, scores);
//! @endcode
class most_popular {
 public:
  most_popular() = default;
  explicit most_popular(const io::session_log& train) { fit(train); }

  //! Counts clicks per item; the catalog is train.num_items().
  void fit(const io::session_log& train) {
    const auto counts = train.item_counts();
    counts_.assign(counts.begin(), counts.end());
  }
  std::size_t num_items() const noexcept { return counts_.size(); }
  //! scores[i] = clicks on item i in training (the prefix only has its ids checked; an empty
  //! prefix gets the same scores).
  //! @throws recpipe::error when scores.size() != num_items() or a prefix id is outside the catalog.
  void score_session(std::span<const id_type> prefix, std::span<float> scores) const {
    baselines_impl::check_scoring("models::most_popular::score_session", prefix, scores, counts_.size());
    std::copy(counts_.begin(), counts_.end(), scores.begin());
  }

 private:
  std::vector<float> counts_;
};

//! Hyperparameters of item_knn (session-rec's ItemKNN names: n_sims, lmbd, alpha).
struct item_knn_config {
  std::size_t neighbors = 100;  //!< most similar items kept per item (n_sims); 0 keeps all
  double lambda = 20.0;         //!< regularisation of the support (lmbd); 0 with alpha 0.5 is the plain cosine
  double alpha = 0.5;           //!< asymmetry of the normalisation
};

//! @brief Item-kNN on session co-occurrence, as the item-kNN baseline of GRU4Rec and session-rec:
//! sim(i, j) = |S_i n S_j| / ((|S_i| + lambda)^alpha (|S_j| + lambda)^(1 - alpha)) where S_i is
//! the set of training sessions that contain i (each session counts once, however often it
//! clicks i). With lambda = 0, alpha = 0.5 this is the cosine of binary session vectors. An item
//! is not its own neighbour (sim(i, i) = 0). The `neighbors` most similar items of each item are
//! kept (ties: smaller id first).
//! A prefix is scored by its LAST item only: scores[j] = sim(last, j), 0 for the rest; an empty
//! prefix scores 0 everywhere.
//! Fit: O(sum over items i of the clicks in sessions containing i); memory O(items * neighbors).
//! @code
//! recpipe::models::item_knn knn(split.train, {.neighbors = 100, .lambda = 20, .alpha = 0.5});
//! @endcode
class item_knn {
 public:
  item_knn() = default;
  explicit item_knn(const io::session_log& train, const item_knn_config& config = {}) { fit(train, config); }

  //! @throws recpipe::error when lambda < 0 or alpha is outside [0, 1].
  void fit(const io::session_log& train, const item_knn_config& config = {}) {
    if (!(config.lambda >= 0.0) || !std::isfinite(config.lambda))
      detail::fail("models::item_knn: lambda must be a finite number >= 0 (got ", config.lambda, ")");
    if (!(config.alpha >= 0.0 && config.alpha <= 1.0))
      detail::fail("models::item_knn: alpha must be in [0, 1] (got ", config.alpha, ")");
    config_ = config;
    items_ = train.num_items();
    const auto sessions = baselines_impl::distinct_items(train);
    // Sessions of each item (the transpose).
    std::vector<std::vector<std::uint32_t>> sessions_of(items_);
    for (std::size_t s = 0; s < sessions.size(); ++s)
      for (id_type i : sessions[s]) sessions_of[static_cast<std::size_t>(i)].push_back(static_cast<std::uint32_t>(s));
    offsets_.assign(1, 0);
    neighbors_.clear();
    similarities_.clear();
    std::vector<std::uint32_t> co(items_, 0);
    std::vector<id_type> touched;
    std::vector<std::pair<float, id_type>> row;
    for (std::size_t i = 0; i < items_; ++i) {
      touched.clear();
      for (std::uint32_t s : sessions_of[i])
        for (id_type j : sessions[s])
          if (co[static_cast<std::size_t>(j)]++ == 0) touched.push_back(j);
      row.clear();
      const double support_i = static_cast<double>(sessions_of[i].size());
      for (id_type j : touched) {
        const std::size_t ju = static_cast<std::size_t>(j);
        if (ju != i) {
          const double support_j = static_cast<double>(sessions_of[ju].size());
          const double denominator =
              std::pow(support_i + config.lambda, config.alpha) * std::pow(support_j + config.lambda, 1.0 - config.alpha);
          row.emplace_back(static_cast<float>(co[ju] / denominator), j);
        }
        co[ju] = 0;
      }
      const auto better = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
      if (config.neighbors && row.size() > config.neighbors) {
        std::partial_sort(row.begin(), row.begin() + static_cast<std::ptrdiff_t>(config.neighbors), row.end(), better);
        row.resize(config.neighbors);
      } else {
        std::sort(row.begin(), row.end(), better);
      }
      for (const auto& [sim, j] : row) {
        neighbors_.push_back(j);
        similarities_.push_back(sim);
      }
      offsets_.push_back(neighbors_.size());
    }
  }

  std::size_t num_items() const noexcept { return items_; }
  const item_knn_config& config() const noexcept { return config_; }
  //! The kept neighbours of item i, most similar first, and their similarities.
  std::span<const id_type> neighbors(id_type i) const {
    check_item(i);
    return std::span<const id_type>(neighbors_).subspan(offsets_[static_cast<std::size_t>(i)], row_size(i));
  }
  std::span<const float> similarities(id_type i) const {
    check_item(i);
    return std::span<const float>(similarities_).subspan(offsets_[static_cast<std::size_t>(i)], row_size(i));
  }
  //! sim(i, j) (0 when j is not among i's kept neighbours).
  float similarity(id_type i, id_type j) const {
    const auto n = neighbors(i);
    const auto s = similarities(i);
    for (std::size_t k = 0; k < n.size(); ++k)
      if (n[k] == j) return s[k];
    return 0.0f;
  }

  //! scores[j] = sim(last item of prefix, j); 0 for items that are not its neighbours and for an
  //! empty prefix. @throws recpipe::error when scores.size() != num_items() or a prefix id is
  //! outside the catalog.
  void score_session(std::span<const id_type> prefix, std::span<float> scores) const {
    baselines_impl::check_scoring("models::item_knn::score_session", prefix, scores, items_);
    std::fill(scores.begin(), scores.end(), 0.0f);
    if (prefix.empty()) return;
    const auto n = neighbors(prefix.back());
    const auto s = similarities(prefix.back());
    for (std::size_t k = 0; k < n.size(); ++k) scores[static_cast<std::size_t>(n[k])] = s[k];
  }

 private:
  void check_item(id_type i) const {
    if (i < 0 || static_cast<std::size_t>(i) >= items_)
      detail::fail("models::item_knn: item ", i, " is outside the catalog [0, ", items_, ")");
  }
  std::size_t row_size(id_type i) const {
    return offsets_[static_cast<std::size_t>(i) + 1] - offsets_[static_cast<std::size_t>(i)];
  }

  item_knn_config config_;
  std::size_t items_ = 0;
  std::vector<std::size_t> offsets_{0};
  std::vector<id_type> neighbors_;
  std::vector<float> similarities_;
};

//! Weight of the item at position p (1 = first) of a prefix of length n in V-SKNN's session vector.
enum class vsknn_weighting {
  linear,     //!< p / n: the last item 1, earlier ones decay linearly (the V-SKNN of the paper)
  same,       //!< 1 for every item (S-KNN with dot-product similarity)
  div,        //!< 1 / (n - p + 1): 1, 1/2, 1/3, ... from the last item back
  quadratic,  //!< (p / n)^2
};

//! Hyperparameters of vsknn (session-rec's VMContextKNN names).
struct vsknn_config {
  std::size_t k = 100;              //!< nearest neighbour sessions that vote
  std::size_t sample_size = 500;    //!< candidate sessions: the most recent ones sharing an item with the prefix; 0 = all
  vsknn_weighting weighting = vsknn_weighting::linear;
};

//! @brief V-SKNN (vector multiplication session-kNN, Ludewig & Jannach 2018). The prefix is a
//! real-valued vector over items, item at position p weighted by `weighting` (a repeated item
//! keeps the weight of its latest position); a training session is a binary vector. Candidates
//! are the `sample_size` most recent training sessions (by their last click) that contain any
//! prefix item; similarity = dot product of the two vectors; the k most similar candidates are
//! the neighbours (ties: the more recent first). scores[i] = sum of the similarities of the
//! neighbours that contain i, 0 for other items and for an empty prefix.
//! Cost per call: O(candidates * prefix * log session length + k * session length + items).
//! @code
//! recpipe::models::vsknn knn(split.train, {.k = 100, .sample_size = 500});
//! @endcode
class vsknn {
 public:
  vsknn() = default;
  explicit vsknn(const io::session_log& train, const vsknn_config& config = {}) { fit(train, config); }

  //! @throws recpipe::error when k is 0.
  void fit(const io::session_log& train, const vsknn_config& config = {}) {
    if (config.k == 0) detail::fail("models::vsknn: k must be at least 1");
    config_ = config;
    items_ = train.num_items();
    // Renumber sessions by their last click (ties: log order), so "more recent" = larger index.
    std::vector<std::size_t> by_end(train.num_sessions());
    for (std::size_t s = 0; s < by_end.size(); ++s) by_end[s] = s;
    std::stable_sort(by_end.begin(), by_end.end(),
                     [&](std::size_t a, std::size_t b) { return train.end_time(a) < train.end_time(b); });
    auto distinct = baselines_impl::distinct_items(train);
    sessions_.resize(distinct.size());
    for (std::size_t r = 0; r < by_end.size(); ++r) sessions_[r] = std::move(distinct[by_end[r]]);
    sessions_of_.assign(items_, {});
    for (std::size_t r = 0; r < sessions_.size(); ++r)
      for (id_type i : sessions_[r]) sessions_of_[static_cast<std::size_t>(i)].push_back(static_cast<std::uint32_t>(r));
  }

  std::size_t num_items() const noexcept { return items_; }
  const vsknn_config& config() const noexcept { return config_; }

  //! Weight of position p (1-based) in a prefix of length n.
  static double weight(vsknn_weighting w, std::size_t p, std::size_t n) {
    const double x = static_cast<double>(p) / static_cast<double>(n);
    switch (w) {
      case vsknn_weighting::same: return 1.0;
      case vsknn_weighting::div: return 1.0 / static_cast<double>(n - p + 1);
      case vsknn_weighting::quadratic: return x * x;
      default: return x;
    }
  }

  //! The neighbours of a prefix: (similarity, training session rank by recency), best first.
  //! @throws recpipe::error when a prefix id is outside the catalog.
  std::vector<std::pair<double, std::uint32_t>> neighbours(std::span<const id_type> prefix) const {
    for (std::size_t p = 0; p < prefix.size(); ++p)
      if (prefix[p] < 0 || static_cast<std::size_t>(prefix[p]) >= items_)
        detail::fail("models::vsknn: prefix[", p, "] = ", prefix[p], " is outside the catalog [0, ", items_, ")");
    std::vector<std::pair<double, std::uint32_t>> out;
    if (prefix.empty()) return out;
    // Session vector: (item, weight of its latest position), sorted by item.
    std::vector<std::pair<id_type, double>> query;
    for (std::size_t p = 0; p < prefix.size(); ++p) query.emplace_back(prefix[p], weight(config_.weighting, p + 1, prefix.size()));
    std::stable_sort(query.begin(), query.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::pair<id_type, double>> unique_query;
    for (const auto& q : query) {
      if (!unique_query.empty() && unique_query.back().first == q.first) unique_query.back().second = q.second;  // later position wins
      else unique_query.push_back(q);
    }
    std::vector<std::uint32_t> candidates;
    for (const auto& [item, w] : unique_query) {
      // Lists ascend by recency, and the sample_size most recent sessions of the union are among
      // the sample_size most recent of each list: only those are needed (a popular item of a
      // full-size log is in hundreds of thousands of sessions).
      const auto& list = sessions_of_[static_cast<std::size_t>(item)];
      const std::size_t take = config_.sample_size ? std::min(config_.sample_size, list.size()) : list.size();
      candidates.insert(candidates.end(), list.end() - static_cast<std::ptrdiff_t>(take), list.end());
    }
    std::sort(candidates.begin(), candidates.end(), std::greater<>());
    candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
    if (config_.sample_size && candidates.size() > config_.sample_size) candidates.resize(config_.sample_size);
    out.reserve(candidates.size());
    for (std::uint32_t c : candidates) {
      const auto& items = sessions_[c];
      double sim = 0;
      for (const auto& [item, w] : unique_query)
        if (std::binary_search(items.begin(), items.end(), item)) sim += w;
      out.emplace_back(sim, c);
    }
    const auto better = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second > b.second); };
    if (out.size() > config_.k) {
      std::partial_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(config_.k), out.end(), better);
      out.resize(config_.k);
    } else {
      std::sort(out.begin(), out.end(), better);
    }
    return out;
  }

  //! scores[i] = sum of neighbour similarities over the neighbours containing i.
  //! @throws recpipe::error when scores.size() != num_items() or a prefix id is outside the catalog.
  void score_session(std::span<const id_type> prefix, std::span<float> scores) const {
    baselines_impl::check_scoring("models::vsknn::score_session", prefix, scores, items_);
    std::fill(scores.begin(), scores.end(), 0.0f);
    for (const auto& [sim, s] : neighbours(prefix))
      for (id_type i : sessions_[s]) scores[static_cast<std::size_t>(i)] += static_cast<float>(sim);
  }

 private:
  vsknn_config config_;
  std::size_t items_ = 0;
  std::vector<std::vector<id_type>> sessions_;                // distinct items per session, by recency
  std::vector<std::vector<std::uint32_t>> sessions_of_;       // item -> sessions (ascending recency)
};

}  // namespace models
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
