// SPDX-License-Identifier: Apache-2.0
// recpipe train: the next-item evaluation protocol of session-based recommendation (GRU4Rec,
// session-rec): for every prefix of every test session, score the catalog and rank the next
// click; Recall@k (HR@k) and MRR@k over the next items seen in training.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <mutex>
#include <ostream>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/io/sessions.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! A next-item model: `model.score_session(prefix, scores)` writes one score per catalog item
//! (higher is better) for a session prefix of dense item ids. It must be callable from several
//! threads at once (const and without shared scratch), or be evaluated with threads = 1.
template <class Model>
concept session_scorer = requires(const Model& m, std::span<const id_type> prefix, std::span<float> scores) {
  m.score_session(prefix, scores);
};

//! A plain callable `fn(prefix, scores)` (a lambda, a std::function) works too.
template <class Fn>
concept session_scoring_function = std::invocable<const Fn&, std::span<const id_type>, std::span<float>>;

//! How the rank of the target counts items with the same score.
enum class rank_ties {
  optimistic,   //!< rank = 1 + items scoring strictly higher (GRU4Rec's evaluation; the default)
  expected,     //!< the expectation under a uniformly random order of the tied items (what
                //!< session-rec's tiny random noise on the scores measures, without the noise)
  pessimistic,  //!< rank = 1 + items scoring higher or equal
};

//! Where a target lands among the scores: `higher` items score strictly more, `tied` other items
//! score the same; `nan` when the target's own score is NaN (it then ranks last: a miss at every
//! cutoff). A NaN score of another item is never higher nor tied, so NaN items rank below all others.
struct target_rank {
  std::size_t higher = 0;
  std::size_t tied = 0;
  bool nan = false;

  //! The rank under `ties` (1 is the best; num_items for a NaN target).
  double rank(rank_ties ties, std::size_t num_items) const {
    if (nan) return static_cast<double>(num_items);
    switch (ties) {
      case rank_ties::pessimistic: return static_cast<double>(higher + tied + 1);
      case rank_ties::expected: return static_cast<double>(higher) + 1.0 + static_cast<double>(tied) / 2.0;
      default: return static_cast<double>(higher + 1);
    }
  }
  //! 1 when the target is within the top `cutoff` (the probability of that under `expected`).
  double hit(std::size_t cutoff, rank_ties ties) const {
    if (nan) return 0.0;
    if (ties == rank_ties::expected) {
      const std::size_t last = std::min(cutoff, higher + tied + 1);
      return last > higher ? static_cast<double>(last - higher) / static_cast<double>(tied + 1) : 0.0;
    }
    const std::size_t r = ties == rank_ties::pessimistic ? higher + tied + 1 : higher + 1;
    return r <= cutoff ? 1.0 : 0.0;
  }
  //! 1 / rank when the rank is within `cutoff`, else 0 (the expectation under `expected`).
  double reciprocal_rank(std::size_t cutoff, rank_ties ties) const {
    if (nan) return 0.0;
    if (ties == rank_ties::expected) {
      const std::size_t last = std::min(cutoff, higher + tied + 1);
      double sum = 0;
      for (std::size_t r = higher + 1; r <= last; ++r) sum += 1.0 / static_cast<double>(r);
      return sum / static_cast<double>(tied + 1);
    }
    const std::size_t r = ties == rank_ties::pessimistic ? higher + tied + 1 : higher + 1;
    return r <= cutoff ? 1.0 / static_cast<double>(r) : 0.0;
  }
};

//! @brief Counts the items scoring strictly higher than, and equal to, scores[target].
//! @throws recpipe::error when target is outside [0, scores.size()).
//! @code
//! auto r = recpipe::train::rank_of(std::vector<float>{0.5f, 2.f, 0.5f, 1.f}, 0);  // higher 2, tied 1
//! @endcode
inline target_rank rank_of(std::span<const float> scores, id_type target) {
  if (target < 0 || static_cast<std::size_t>(target) >= scores.size())
    detail::fail("train::rank_of: target ", target, " is outside [0, ", scores.size(), ")");
  target_rank out;
  const float t = scores[static_cast<std::size_t>(target)];
  if (std::isnan(t)) {
    out.nan = true;
    return out;
  }
  for (std::size_t i = 0; i < scores.size(); ++i) {
    out.higher += scores[i] > t;
    out.tied += scores[i] == t;
  }
  --out.tied;  // the target itself
  return out;
}

//! Options of evaluate_next_item.
struct next_item_eval_options {
  std::vector<std::size_t> cutoffs{20};  //!< k of Recall@k and MRR@k (each >= 1)
  std::size_t max_sessions = 0;          //!< evaluate only the first max_sessions test sessions; 0 = all
  std::size_t threads = 0;               //!< threads calling score_session; 0 = std::thread::hardware_concurrency()
  rank_ties ties = rank_ties::optimistic;
};

//! Recall@k and MRR@k with their sums.
struct next_item_metric {
  std::size_t cutoff = 0;
  double hits = 0;               //!< predictions with rank <= cutoff
  double reciprocal_ranks = 0;   //!< sum of 1/rank over those
  double recall = 0;             //!< hits / predictions (HR@k)
  double mrr = 0;                //!< reciprocal_ranks / predictions
};

//! What evaluate_next_item measured.
struct next_item_result {
  std::size_t sessions = 0;           //!< test sessions evaluated
  std::size_t predictions = 0;        //!< prefixes scored (targets inside the catalog)
  std::size_t unknown_targets = 0;    //!< next items outside [0, num_items): not evaluated
  std::size_t unknown_in_prefix = 0;  //!< prefix clicks outside the catalog, left out of the prefix
  std::size_t nan_targets = 0;        //!< predictions whose target scored NaN (counted as misses)
  double mean_rank = 0;               //!< mean rank under the options' ties (no cutoff)
  std::vector<next_item_metric> metrics;  //!< one per cutoff, in the options' order
  double seconds = 0;                 //!< wall time of the evaluation
  std::size_t threads = 0;            //!< threads used

  //! The metrics at `cutoff`. @throws recpipe::error when that cutoff was not evaluated.
  const next_item_metric& at(std::size_t cutoff) const {
    for (const auto& m : metrics)
      if (m.cutoff == cutoff) return m;
    detail::fail("train::next_item_result: cutoff ", cutoff, " was not evaluated");
  }
  double recall(std::size_t cutoff = 20) const { return at(cutoff).recall; }
  double mrr(std::size_t cutoff = 20) const { return at(cutoff).mrr; }
};

namespace next_item_impl {

template <class Model>
void score(const Model& model, std::span<const id_type> prefix, std::span<float> scores) {
  if constexpr (session_scorer<Model>) model.score_session(prefix, scores);
  else model(prefix, scores);
}

struct accumulator {
  std::size_t sessions = 0, predictions = 0, unknown_targets = 0, unknown_in_prefix = 0, nan_targets = 0;
  double rank_sum = 0;
  std::vector<double> hits, reciprocal_ranks;
};

}  // namespace next_item_impl

//! @brief The next-item protocol: for every test session s (the first max_sessions) and every
//! t in 1 .. len(s) - 1, the model scores the prefix s[0..t) and the target s[t] is ranked among
//! all `num_items` scores (see rank_ties and target_rank: ties count as the options say, the
//! default being rank = 1 + items scoring strictly higher; a NaN target score ranks last).
//! Recall@k = hits / predictions, MRR@k = sum of 1/rank for rank <= k over predictions.
//! Only targets seen in training count: a target outside [0, num_items) is skipped (counted in
//! unknown_targets) and such prefix clicks are left out of the prefix the model sees (counted in
//! unknown_in_prefix); a test log made over the training vocabulary (io::session_split) has
//! none. Sessions of 0 or 1 click give no predictions. The model is called from `threads`
//! threads at once (sessions are shared out in blocks), each with its own scores buffer; metrics
//! do not depend on the thread count.
//! @tparam Model  a session_scorer (score_session member) or a callable fn(prefix, scores)
//! @throws recpipe::error when num_items is 0, a cutoff is 0, or whatever the model throws
//!         (rethrown on the calling thread).
//! @code
//! auto split = recpipe::io::read_session_rec_folder(dir);
//! recpipe::models::vsknn knn(split.train);
//! auto r = recpipe::train::evaluate_next_item(knn, split.test, split.num_items(), {.cutoffs = {5, 20}});
//! std::printf("Recall@20 %.4f MRR@20 %.4f\n", r.recall(20), r.mrr(20));
//! @endcode
template <class Model>
  requires session_scorer<Model> || session_scoring_function<Model>
next_item_result evaluate_next_item(const Model& model, const io::session_log& test, std::size_t num_items,
                                    const next_item_eval_options& options = {}) {
  if (num_items == 0) detail::fail("train::evaluate_next_item: num_items must be at least 1");
  for (std::size_t k : options.cutoffs)
    if (k == 0) detail::fail("train::evaluate_next_item: cutoffs must be at least 1 (got 0)");
  const auto start = std::chrono::steady_clock::now();
  const std::size_t sessions =
      options.max_sessions ? std::min(options.max_sessions, test.num_sessions()) : test.num_sessions();
  std::size_t threads = options.threads ? options.threads : std::max<unsigned>(1, std::thread::hardware_concurrency());
  threads = std::max<std::size_t>(1, std::min(threads, sessions));
  const std::size_t cutoffs = options.cutoffs.size();

  std::vector<next_item_impl::accumulator> partial(threads);
  std::atomic<std::size_t> next_block{0};
  constexpr std::size_t block = 16;
  std::mutex error_mutex;
  std::exception_ptr error;
  std::atomic<bool> failed{false};

  const auto work = [&](std::size_t thread) {
    auto& acc = partial[thread];
    acc.hits.assign(cutoffs, 0.0);
    acc.reciprocal_ranks.assign(cutoffs, 0.0);
    std::vector<float> scores(num_items);
    std::vector<id_type> prefix;
    try {
      for (;;) {
        const std::size_t first = next_block.fetch_add(block);
        if (first >= sessions || failed.load()) break;
        for (std::size_t s = first; s < std::min(sessions, first + block); ++s) {
          ++acc.sessions;
          const auto items = test.session(s);
          prefix.clear();
          for (std::size_t t = 0; t + 1 < items.size(); ++t) {
            const id_type clicked = items[t];
            if (clicked >= 0 && static_cast<std::size_t>(clicked) < num_items) prefix.push_back(clicked);
            else ++acc.unknown_in_prefix;
            const id_type target = items[t + 1];
            if (target < 0 || static_cast<std::size_t>(target) >= num_items) {
              ++acc.unknown_targets;
              continue;
            }
            next_item_impl::score(model, std::span<const id_type>(prefix), std::span<float>(scores));
            const target_rank r = rank_of(scores, target);
            ++acc.predictions;
            acc.nan_targets += r.nan;
            acc.rank_sum += r.rank(options.ties, num_items);
            for (std::size_t c = 0; c < cutoffs; ++c) {
              acc.hits[c] += r.hit(options.cutoffs[c], options.ties);
              acc.reciprocal_ranks[c] += r.reciprocal_rank(options.cutoffs[c], options.ties);
            }
          }
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      failed.store(true);
    }
  };
  if (threads == 1) {
    work(0);
  } else {
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(work, t);
    work(0);
    for (auto& th : pool) th.join();
  }
  if (error) std::rethrow_exception(error);

  next_item_result out;
  out.threads = threads;
  std::vector<double> hits(cutoffs, 0.0), rr(cutoffs, 0.0);
  double rank_sum = 0;
  for (const auto& acc : partial) {  // summed in thread order; counts are exact, sums of doubles near-exact
    out.sessions += acc.sessions;
    out.predictions += acc.predictions;
    out.unknown_targets += acc.unknown_targets;
    out.unknown_in_prefix += acc.unknown_in_prefix;
    out.nan_targets += acc.nan_targets;
    rank_sum += acc.rank_sum;
    for (std::size_t c = 0; c < cutoffs && c < acc.hits.size(); ++c) {
      hits[c] += acc.hits[c];
      rr[c] += acc.reciprocal_ranks[c];
    }
  }
  const double n = out.predictions ? static_cast<double>(out.predictions) : 1.0;
  out.mean_rank = out.predictions ? rank_sum / n : 0.0;
  for (std::size_t c = 0; c < cutoffs; ++c)
    out.metrics.push_back({options.cutoffs[c], hits[c], rr[c], hits[c] / n, rr[c] / n});
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

//! One row of a results table: a model, its hyperparameters, fit time and evaluation.
struct next_item_row {
  std::string model;
  std::string params;  //!< hyperparameters, printed under the table
  double fit_seconds = 0;
  next_item_result result;
};

//! @brief Prints `model | Recall@k | MRR@k | fit s | eval s` as a Markdown table, then one line
//! per model with its hyperparameters.
//! @throws recpipe::error when a row did not evaluate `cutoff`.
//! @code
//! recpipe::train::print_next_item_table(std::cout, rows, 20);
//! @endcode
inline void print_next_item_table(std::ostream& out, std::span<const next_item_row> rows, std::size_t cutoff = 20) {
  std::size_t width = 5;
  for (const auto& r : rows) width = std::max(width, r.model.size());
  const auto pad = [&](const std::string& s) { return s + std::string(width - s.size(), ' '); };
  char buffer[160];
  out << "| " << pad("model") << " | Recall@" << cutoff << " | MRR@" << cutoff << " | fit s  | eval s |\n";
  out << "|-" << std::string(width, '-') << "-|-----------|--------|--------|--------|\n";
  for (const auto& r : rows) {
    const auto& m = r.result.at(cutoff);
    std::snprintf(buffer, sizeof buffer, " | %9.4f | %6.4f | %6.2f | %6.2f |\n", m.recall, m.mrr, r.fit_seconds, r.result.seconds);
    out << "| " << pad(r.model) << buffer;
  }
  for (const auto& r : rows)
    if (!r.params.empty()) out << "  " << r.model << ": " << r.params << "\n";
}

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
