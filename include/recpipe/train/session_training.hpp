// SPDX-License-Identifier: Apache-2.0
// recpipe train: the epoch loop that trains a session transformer on click sessions (next-item
// prediction), its batched next-item evaluation, and popularity sampling for sampled softmax.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <iomanip>
#include <limits>
#include <memory>
#include <ostream>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/ragged_view.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/io/sessions.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/parameter.hpp>
#include <recpipe/train/session_transformer_model.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief Click sessions in compressed form: session s is items[offsets[s] .. offsets[s + 1]),
//! in time order, item ids dense in [0, num_items) (the training catalog).
//! @code
//! recpipe::train::session_list s;
//! s.add(std::vector<recpipe::id_type>{4, 9, 9, 2});
//! @endcode
struct session_list {
  std::vector<id_type> offsets{0};
  std::vector<id_type> items;

  std::size_t size() const noexcept { return offsets.size() - 1; }
  std::size_t clicks() const noexcept { return items.size(); }
  std::span<const id_type> session(std::size_t s) const {
    return std::span<const id_type>(items).subspan(static_cast<std::size_t>(offsets[s]),
                                                   static_cast<std::size_t>(offsets[s + 1] - offsets[s]));
  }
  session_list() = default;
  //! The sessions of an io::session_log (same layout: offsets and dense items).
  explicit session_list(const io::session_log& log) : offsets(log.offsets), items(log.items) {}
  void add(std::span<const id_type> session_items) {
    items.insert(items.end(), session_items.begin(), session_items.end());
    offsets.push_back(static_cast<id_type>(items.size()));
  }
  //! @throws recpipe::error for offsets that do not describe items or an id outside [0, num_items).
  void validate(std::size_t num_items, const char* where) const {
    std::string label = where;  // appended, not operator+: GCC 12 -O2 warns falsely (-Warray-bounds) on the latter
    label += ": sessions";
    check_offsets<id_type>(label, offsets, items.size(), last_offset::equals_total, "items.size()");
    for (std::size_t i = 0; i < items.size(); ++i)
      if (items[i] < 0 || static_cast<std::size_t>(items[i]) >= num_items)
        detail::fail(where, ": sessions: item ", items[i], " (click ", i, ") is outside the catalog [0, ", num_items, ")");
  }
};

//! Recall@k and MRR@k of next-item prediction, and how many predictions they average.
struct next_item_metrics {
  double recall = 0.0;
  double mrr = 0.0;
  std::size_t predictions = 0;
};

//! @brief The next-item protocol of train::evaluate_next_item (next_item_eval.hpp, default
//! optimistic ties) for a session transformer, batched: for prefix items[0..t]
//! (t + 1 < length) the target is items[t + 1]; its rank is 1 + the number of items scored
//! strictly higher; Recall@k counts ranks <= k, MRR@k averages 1 / rank for ranks <= k (0 else).
//! Prefixes longer than max_length keep their last max_length items, as serving does. Batched:
//! one forward yields every prefix of a session at once (the mask is causal), so this costs
//! about one training forward plus a [prefixes, num_items] product.
//! Sessions of one item (or none) give no prediction; metrics over no prediction are 0.
//! @throws recpipe::error for an id outside the model's catalog or k = 0.
//! @code
//! auto m = recpipe::train::evaluate_next_item_batched(model, test_sessions, 20);
//! std::cout << m.recall << ' ' << m.mrr << '\n';
//! @endcode
inline next_item_metrics evaluate_next_item_batched(session_transformer_model& model, const session_list& sessions,
                                            std::size_t k = 20, std::size_t batch_sessions = 256) {
  const char* where = "train::evaluate_next_item_batched";
  const std::size_t n = model.config().num_items, e = model.config().embedding_dim, len = model.config().max_length;
  if (k == 0) detail::fail(where, ": k must be at least 1");
  sessions.validate(n, where);
  batch_sessions = std::max<std::size_t>(batch_sessions, 1);
  // Sequences to encode, and for each the (position in it, target) pairs to score.
  std::vector<id_type> offsets{0}, items, targets;
  std::vector<std::size_t> positions;      // position inside its sequence
  std::vector<std::size_t> owners;         // which sequence of the batch
  double recall = 0.0, mrr = 0.0;
  std::size_t predictions = 0;
  matrix<float> queries, scores;
  const parameter* table = model.find("item_embedding.weight");
  const auto flush = [&] {
    if (offsets.size() > 1 && !positions.empty()) {
      model.forward(offsets, items);
      // forward() kept every sequence whole (none is longer than max_length here).
      const std::size_t padded = model.padded_length();
      const matrix_view<const float> hidden = model.hidden();
      const std::size_t rows = positions.size();
      queries.resize(rows, e);
      for (std::size_t r = 0; r < rows; ++r)
        std::copy_n(hidden.data() + (owners[r] * padded + positions[r]) * hidden.stride(), e, queries.data() + r * e);
      scores.resize(rows, n);
      cpu::gemm_nt(queries.view(), matrix_view<const float>(table->value.data(), n, e), scores.view());
      for (std::size_t r = 0; r < rows; ++r) {
        const float* row = scores.data() + r * n;
        const float target_score = row[static_cast<std::size_t>(targets[r])];
        std::size_t higher = 0;
        for (std::size_t i = 0; i < n; ++i) higher += row[i] > target_score;
        // A NaN target score ranks last (it is never > anything, but nothing should beat it).
        if (std::isnan(target_score)) higher = n;
        const std::size_t rank = higher + 1;
        if (rank <= k) {
          recall += 1.0;
          mrr += 1.0 / static_cast<double>(rank);
        }
        ++predictions;
      }
    }
    offsets.assign(1, 0);
    items.clear();
    targets.clear();
    positions.clear();
    owners.clear();
  };
  const auto add_sequence = [&](std::span<const id_type> seq) {
    items.insert(items.end(), seq.begin(), seq.end());
    offsets.push_back(static_cast<id_type>(items.size()));
    return offsets.size() - 2;
  };
  for (std::size_t s = 0; s < sessions.size(); ++s) {
    const std::span<const id_type> session = sessions.session(s);
    if (session.size() < 2) continue;
    // Prefixes ending at t < max_length: one sequence, its first max_length items.
    const std::size_t head = std::min(session.size() - 1, len);
    const std::size_t owner = add_sequence(session.first(head));
    for (std::size_t t = 0; t < head; ++t) {
      positions.push_back(t);
      owners.push_back(owner);
      targets.push_back(session[t + 1]);
    }
    // Longer prefixes: the last max_length items of each (rare: sessions are short).
    for (std::size_t t = len; t + 1 < session.size(); ++t) {
      const std::size_t o = add_sequence(session.subspan(t + 1 - len, len));
      positions.push_back(len - 1);
      owners.push_back(o);
      targets.push_back(session[t + 1]);
    }
    if (offsets.size() - 1 >= batch_sessions) flush();
  }
  flush();
  if (predictions == 0) return {};
  return {recall / static_cast<double>(predictions), mrr / static_cast<double>(predictions), predictions};
}

//! Which next-item objective session_trainer minimises.
enum class next_item_objective {
  full_softmax,     //!< cross-entropy over the whole catalog (exact; O(N) per position)
  sampled_softmax,  //!< K popularity-sampled negatives shared by the batch, log-Q corrected
};

//! Options of train::session_trainer.
struct session_training_options {
  std::size_t batch_size = 128;  //!< sessions per step (each contributes its last max_length items)
  std::size_t epochs = 10;
  next_item_objective objective = next_item_objective::full_softmax;
  std::size_t num_negatives = 1024;  //!< sampled_softmax: negatives per step (drawn with replacement)
  double sampling_exponent = 1.0;    //!< sampled_softmax: q(i) proportional to (clicks(i) + 1)^exponent
  //! Threads of one step: the batch is split over this many model replicas, one per thread, and
  //! their gradients summed (1: the calling thread only; the BLAS may still use its own threads,
  //! see cpu::set_num_threads; with a split, set those to 1).
  std::size_t threads = 1;
  bool shuffle = true;
  std::uint64_t seed = 1;
  std::size_t eval_k = 20;                //!< k of the validation Recall@k / MRR@k
  std::ostream* progress = nullptr;       //!< one line per epoch when set
};

//! What one epoch did.
struct session_epoch_stats {
  std::size_t epoch = 0;       //!< 1-based
  double loss = 0.0;           //!< mean loss of the epoch's steps (weighted by positions)
  double seconds = 0.0;        //!< training time (validation excluded), wall clock
  double cpu_seconds = 0.0;    //!< processor time of the whole process over the same span (std::clock)
  std::size_t positions = 0;   //!< labelled positions trained on
  std::size_t steps = 0;
  std::size_t skipped = 0;     //!< steps whose gradient was not finite (nothing written)
  bool validated = false;
  next_item_metrics validation;
};

//! @brief Trains a session_transformer_model on next-item prediction over click sessions:
//! mini-batches of `batch_size` sessions (shuffled each epoch, seeded), each session's last
//! max_length items, every position predicting the next item, full or sampled softmax, a
//! dense optimizer step (Adam in the examples) only when every gradient is finite, and an
//! optional validation Recall@k / MRR@k after each epoch with a progress line:
//! `epoch 3/10  loss 5.812  2.41 s  21.6k positions/s  valid Recall@20 0.4912 MRR@20 0.2011`.
//! Each step cuts its batch into pieces of sessions of similar length (padding to the longest
//! session of a forward would otherwise dominate: short sessions with a few long ones), and with
//! options.threads > 1 shares the pieces out over that many replicas of the model (weights copied
//! in before the step); every piece's gradient is weighted by its share of the positions, so the
//! update is the whole batch's, the same for any thread count up to float rounding.
//! The model and optimizer must outlive the trainer; not thread-safe itself.
//! @code
//! recpipe::train::session_transformer_model model(config, 42);
//! recpipe::train::adam opt({.lr = 1e-3});
//! recpipe::train::session_trainer trainer(model, opt, {.batch_size = 128, .epochs = 5, .progress = &std::cout});
//! trainer.fit(train_sessions, &valid_sessions);
//! @endcode
class session_trainer {
 public:
  session_trainer(session_transformer_model& model, dense_optimizer& optimizer, session_training_options options = {})
      : model_(&model), optimizer_(&optimizer), options_(options), rng_{options.seed} {
    const char* where = "train::session_trainer";
    if (options_.batch_size == 0) detail::fail(where, ": batch_size must be at least 1");
    if (options_.threads == 0) detail::fail(where, ": threads must be at least 1");
    if (options_.eval_k == 0) detail::fail(where, ": eval_k must be at least 1");
    if (options_.objective == next_item_objective::sampled_softmax && options_.num_negatives == 0)
      detail::fail(where, ": sampled_softmax needs num_negatives >= 1");
    if (!std::isfinite(options_.sampling_exponent) || options_.sampling_exponent < 0.0)
      detail::fail(where, ": sampling_exponent must be finite and >= 0 (got ", options_.sampling_exponent, ")");
    params_ = model_->parameters();
    for (std::size_t r = 1; r < options_.threads; ++r) replicas_.push_back(std::make_unique<session_transformer_model>(*model_));
    set_item_counts({});
  }

  const session_training_options& options() const noexcept { return options_; }

  //! @brief Click counts per item for the sampling distribution of sampled_softmax (empty:
  //! uniform). fit() sets them from its training sessions; set them yourself before step().
  void set_item_counts(std::span<const std::size_t> counts) {
    const std::size_t n = model_->config().num_items;
    if (!counts.empty() && counts.size() != n)
      detail::fail("train::session_trainer: set_item_counts: ", counts.size(), " counts for ", n, " items");
    cumulative_.resize(n);
    log_q_.resize(n);
    double total = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const double w = std::pow(static_cast<double>(counts.empty() ? 0 : counts[i]) + 1.0, options_.sampling_exponent);
      total += w;
      cumulative_[i] = total;
      log_q_[i] = static_cast<float>(std::log(w));
    }
    const float log_total = static_cast<float>(std::log(total));
    for (float& v : log_q_) v -= log_total;
  }

  //! @brief One optimizer step on `sessions` (all of them are the batch): zero the gradients,
  //! the configured loss with backward (split over the replicas), and the optimizer step if every
  //! gradient is finite. Returns {mean loss, labelled positions}; a step without a labelled
  //! position does nothing. This is also the incremental-training entry: feed it new sessions.
  //! @throws recpipe::error for ids outside the catalog (nothing is written).
  std::pair<double, std::size_t> step(const session_list& sessions) {
    sessions.validate(model_->config().num_items, "train::session_trainer: step");
    const std::size_t len = model_->config().max_length;
    const auto kept = [&](std::size_t s) {
      return std::min(static_cast<std::size_t>(sessions.offsets[s + 1] - sessions.offsets[s]), len);
    };
    // Pieces of sessions of similar length: the encoder pads every session of a forward to the
    // longest, and a random batch of short sessions with a few long ones would be mostly padding
    // (about 6x on YOOCHOOSE). Sessions sorted by kept length are cut where the padding would
    // pass a quarter; each piece's gradient is weighted by its share of the positions, so the
    // sum is the gradient of the whole batch's mean loss.
    std::vector<std::size_t> order;
    order.reserve(sessions.size());
    for (std::size_t s = 0; s < sessions.size(); ++s)
      if (kept(s) >= 2) order.push_back(s);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return kept(a) < kept(b); });
    struct piece {
      session_list sessions;
      std::size_t positions = 0, area = 0;
    };
    std::vector<piece> pieces;
    std::size_t real = 0, total = 0;
    for (std::size_t s : order) {
      const std::size_t k = kept(s);
      if (pieces.empty() || (pieces.back().sessions.size() >= min_piece_sessions &&
                             4 * k * (pieces.back().sessions.size() + 1) > 5 * (real + k))) {
        pieces.emplace_back();
        real = 0;
      }
      piece& p = pieces.back();
      p.sessions.add(sessions.session(s));
      p.positions += k - 1;
      real += k;
      p.area = k * p.sessions.size();
      total += k - 1;
    }
    if (total == 0) return {0.0, 0};
    // Pieces to threads: longest work first, each to the least loaded thread.
    const std::size_t parts = std::min(options_.threads, pieces.size());
    std::vector<std::vector<std::size_t>> assigned(parts);
    {
      std::vector<std::size_t> by_area(pieces.size()), load(parts, 0);
      for (std::size_t i = 0; i < by_area.size(); ++i) by_area[i] = i;
      std::stable_sort(by_area.begin(), by_area.end(), [&](std::size_t a, std::size_t b) { return pieces[a].area > pieces[b].area; });
      for (std::size_t i : by_area) {
        const std::size_t t = static_cast<std::size_t>(std::min_element(load.begin(), load.end()) - load.begin());
        assigned[t].push_back(i);
        load[t] += pieces[i].area;
      }
    }
    draw_negatives();
    std::vector<double> losses(parts, 0.0);
    const auto run = [&](std::size_t p) {
      session_transformer_model& m = p == 0 ? *model_ : *replicas_[p - 1];
      if (p != 0) copy_weights(*model_, m);
      m.zero_grad();
      for (std::size_t i : assigned[p]) {
        const piece& pc = pieces[i];
        const auto targets = session_transformer_model::next_item_targets(pc.sessions.offsets, pc.sessions.items);
        m.loss_scale = static_cast<float>(pc.positions) / static_cast<float>(total);
        const float loss = options_.objective == next_item_objective::full_softmax
                               ? m.next_item_loss(pc.sessions.offsets, pc.sessions.items, targets)
                               : m.next_item_loss_sampled(pc.sessions.offsets, pc.sessions.items, targets, negatives_, log_q_);
        losses[p] += static_cast<double>(loss) * static_cast<double>(pc.positions);
      }
      m.loss_scale = 1.0f;
    };
    if (parts == 1) {
      run(0);
    } else {
      std::vector<std::thread> workers;
      for (std::size_t p = 1; p < parts; ++p) workers.emplace_back(run, p);
      run(0);
      for (auto& w : workers) w.join();
      for (std::size_t p = 1; p < parts; ++p) {
        const std::vector<parameter*> replica = replicas_[p - 1]->parameters();
        for (std::size_t i = 0; i < params_.size(); ++i) {
          std::vector<float>& dst = params_[i]->grad;
          const std::vector<float>& src = replica[i]->grad;
          for (std::size_t j = 0; j < src.size(); ++j) dst[j] += src[j];
        }
      }
    }
    double loss = 0.0;
    for (double l : losses) loss += l;
    loss /= static_cast<double>(total);
    if (!optimizer_->step_if_finite(params_)) {
      ++skipped_;
      return {std::numeric_limits<double>::quiet_NaN(), total};
    }
    return {loss, total};
  }

  //! Smallest piece a batch is cut into (see step()); fewer sessions per forward cost overhead.
  std::size_t min_piece_sessions = 8;

  //! @brief One epoch over `train` (shuffled when options.shuffle), then validation on `valid`
  //! when given; prints the progress line when options.progress is set.
  session_epoch_stats run_epoch(const session_list& train, const session_list* valid = nullptr) {
    session_epoch_stats stats;
    stats.epoch = ++epoch_;
    const std::size_t skipped_before = skipped_;
    std::vector<std::size_t> order(train.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    if (options_.shuffle)
      for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng_.next() % i]);
    const auto start = std::chrono::steady_clock::now();
    const std::clock_t cpu_start = std::clock();
    double weighted = 0.0;
    session_list batch;
    for (std::size_t first = 0; first < order.size(); first += options_.batch_size) {
      batch.offsets.assign(1, 0);
      batch.items.clear();
      for (std::size_t i = first; i < std::min(order.size(), first + options_.batch_size); ++i) batch.add(train.session(order[i]));
      const auto [loss, positions] = step(batch);
      ++stats.steps;
      if (positions == 0 || !std::isfinite(loss)) continue;
      weighted += loss * static_cast<double>(positions);
      stats.positions += positions;
    }
    stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    stats.cpu_seconds = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
    stats.loss = stats.positions == 0 ? 0.0 : weighted / static_cast<double>(stats.positions);
    stats.skipped = skipped_ - skipped_before;
    if (valid != nullptr) {
      stats.validation = evaluate_next_item_batched(*model_, *valid, options_.eval_k);
      stats.validated = true;
    }
    if (options_.progress != nullptr) *options_.progress << format(stats) << std::endl;
    return stats;
  }

  //! @brief options.epochs epochs (item counts for sampling taken from `train`); one stats entry
  //! per epoch.
  std::vector<session_epoch_stats> fit(const session_list& train, const session_list* valid = nullptr) {
    train.validate(model_->config().num_items, "train::session_trainer: fit");
    std::vector<std::size_t> counts(model_->config().num_items, 0);
    for (id_type i : train.items) ++counts[static_cast<std::size_t>(i)];
    set_item_counts(counts);
    std::vector<session_epoch_stats> out;
    for (std::size_t e = 0; e < options_.epochs; ++e) out.push_back(run_epoch(train, valid));
    return out;
  }

  //! Steps skipped so far for a non-finite gradient.
  std::size_t skipped() const noexcept { return skipped_; }

  //! The progress line of one epoch.
  std::string format(const session_epoch_stats& s) const {
    std::ostringstream line;
    line << "epoch " << s.epoch << '/' << options_.epochs << std::fixed << std::setprecision(4) << "  loss " << s.loss
         << std::setprecision(2) << "  " << s.seconds << " s (cpu " << s.cpu_seconds << " s)  " << std::setprecision(1)
         << (s.seconds > 0 ? static_cast<double>(s.positions) / s.seconds / 1000.0 : 0.0) << "k positions/s";
    if (s.skipped != 0) line << "  skipped " << s.skipped;
    if (s.validated)
      line << std::setprecision(4) << "  valid Recall@" << options_.eval_k << ' ' << s.validation.recall << " MRR@"
           << options_.eval_k << ' ' << s.validation.mrr;
    return line.str();
  }

 private:
  static void copy_weights(session_transformer_model& from, session_transformer_model& to) {
    std::vector<parameter*> src = from.parameters(), dst = to.parameters();
    for (std::size_t i = 0; i < src.size(); ++i) std::copy(src[i]->value.begin(), src[i]->value.end(), dst[i]->value.begin());
  }

  void draw_negatives() {
    negatives_.clear();
    if (options_.objective != next_item_objective::sampled_softmax || cumulative_.empty()) return;
    const double total = cumulative_.back();
    for (std::size_t j = 0; j < options_.num_negatives; ++j) {
      const double u = rng_.unit() * total;
      const auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), u);
      negatives_.push_back(static_cast<id_type>(std::min<std::size_t>(static_cast<std::size_t>(it - cumulative_.begin()),
                                                                      cumulative_.size() - 1)));
    }
  }

  session_transformer_model* model_;
  dense_optimizer* optimizer_;
  session_training_options options_;
  impl::init_rng rng_;
  std::vector<parameter*> params_;
  std::vector<std::unique_ptr<session_transformer_model>> replicas_;
  std::vector<double> cumulative_;
  std::vector<float> log_q_;
  std::vector<id_type> negatives_;
  std::size_t epoch_ = 0, skipped_ = 0;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
