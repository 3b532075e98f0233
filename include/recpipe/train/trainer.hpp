// SPDX-License-Identifier: Apache-2.0
// recpipe train: a streaming trainer (events in, mini-batch steps out, on its own thread) and one training step.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/train/csv_source.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/losses.hpp>
#include <recpipe/train/metrics.hpp>
#include <recpipe/train/model.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/parameter.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! A dense_step_fn that runs `optimizer.step` (the optimizer must outlive it). A learning rate of
//! 0 is a valid step that changes nothing; a NaN or negative one is refused by the optimizer's
//! constructor and set_lr (recpipe::error), so it never reaches a weight.
//! @code
//! recpipe::train::adam adam({.lr = 1e-3});
//! auto step = recpipe::train::optimizer_step(adam);
//! @endcode
inline dense_step_fn optimizer_step(dense_optimizer& optimizer) {
  return [&optimizer](std::span<parameter* const> params) { optimizer.step(params); };
}

//! @brief One training step of a ranking model on a labelled batch: zero grads, forward, mean
//! binary cross-entropy with logits, backward, then, only if every dense and table gradient is
//! finite, the dense optimizer step and the table rows' optimizer step. A step with a non-finite
//! gradient writes nothing (result.skipped) so no NaN reaches a weight or a table.
//!
//! `logits_out`, when given, receives the batch's logits (before the update) for metrics.
//! An empty batch does nothing (loss NaN, not skipped). Labels must be in [0, 1] (the trainer
//! drops events whose label is not); dense_step may be empty (dense weights frozen).
//! @throws recpipe::error if the batch does not match the model (dense width, feature count).
//! @code
//! recpipe::train::mlp_model::workspace ws;
//! auto r = recpipe::train::train_step(model, ws, batch, [&](auto p) { adam.step(p); });
//! @endcode
template <trainable_model Model>
step_result train_step(Model& model, typename Model::workspace& ws, example_batch& batch, const dense_step_fn& dense_step,
                       std::vector<float>* logits_out = nullptr) {
  step_result result;
  result.examples = batch.size();
  if (batch.empty()) {
    result.loss = std::numeric_limits<float>::quiet_NaN();
    if (logits_out) logits_out->clear();
    return result;
  }
  const std::vector<parameter*> params = model.parameters();
  for (parameter* p : params) p->zero_grad();
  const matrix_view<const float> logits = model.forward(batch.inputs(), ws);
  std::vector<float>& scores = ws.scores;
  scores.resize(batch.size());
  for (std::size_t b = 0; b < batch.size(); ++b) scores[b] = logits(b, 0);
  if (logits_out) logits_out->assign(scores.begin(), scores.end());
  std::vector<float>& dlogits = ws.dlogits;
  dlogits.resize(batch.size());
  result.loss = bce_with_logits(scores, batch.labels(), dlogits);
  model.backward(ws, matrix_view<const float>(dlogits.data(), batch.size(), 1));
  impl::apply_if_finite(model, ws, params, dense_step, result);
  return result;
}

//! How the trainer reports progress.
enum class progress_mode {
  automatic,  //!< in place ('\r') when the stream is a terminal, else one line every `progress_seconds`
  lines,      //!< one line every `progress_seconds`
  off
};

//! Options of a train::trainer.
struct trainer_options {
  std::size_t batch_size = 256;
  progress_mode progress = progress_mode::automatic;
  double progress_seconds = 10.0;     //!< line interval when not in place (in place: 4 updates/s)
  std::FILE* progress_stream = stderr;
  std::size_t auc_window = 10000;     //!< running AUC over the last this many training predictions
  double loss_decay = 0.98;           //!< running loss: exponential moving average per step
  std::string label = "train";        //!< prefix of the progress line
};

//! The shape of a trainer's example_batch when its step is the caller's (see trainer's second
//! constructor): dense columns and sparse features per example.
struct batch_shape {
  std::size_t dense_dim = 0;
  std::size_t num_sparse = 0;
};

//! Counters and running metrics of a trainer (a consistent copy).
struct trainer_stats {
  std::uint64_t events = 0;          //!< events read from the source (valid and bad)
  std::uint64_t examples = 0;        //!< valid events trained on (in a step that was not skipped, or skipped)
  std::uint64_t bad_events = 0;      //!< events dropped: label not in [0, 1], non-finite feature, featurizer threw
  std::uint64_t out_of_order = 0;    //!< events whose timestamp is below an earlier one (still trained, in arrival order)
  std::uint64_t steps = 0;           //!< optimizer steps taken
  std::uint64_t skipped_steps = 0;   //!< steps skipped for a non-finite gradient (no weight written)
  double running_loss = std::numeric_limits<double>::quiet_NaN();  //!< EMA of the batch loss
  double running_auc = std::numeric_limits<double>::quiet_NaN();   //!< AUC of the last auc_window predictions
  double events_per_second = 0.0;    //!< since start (or the first train_on)
  double seconds = 0.0;
};

//! @brief A streaming trainer: pulls events from a source, turns each into a labelled example
//! with the user's featurizer, and every `batch_size` examples runs one training step. By default
//! (a trainable_model and a dense_step_fn) the step is train_step (zero grads, forward,
//! BCE-with-logits loss, backward, finite check, dense and table optimizer steps).
//!
//! **Pluggable step.** The second constructor takes any `step_fn` (`step_result(example_batch&,
//! std::vector<float>& scores)`) and the batch_shape it needs, for models and losses train_step
//! does not cover: the two-tower's train_step_sampled_softmax, or the session transformer's
//! next_item_loss with a session as one bag of item ids. The step reports the batch loss,
//! `examples` (the batch size) and `skipped`; it may fill `scores` with one score per example
//! for the running AUC against the batch's labels (left empty: no AUC). The step must write no
//! weight when a gradient is not finite (dense_optimizer::step_if_finite). An error it throws ends
//! the thread (join() rethrows it), so event-level checks (ids in range, empty sessions) belong
//! in the featurizer, where a recpipe::error only drops the event as bad.
//!
//! **Sources.** Any callable returning std::optional<Event> (std::nullopt = end of stream), e.g. a
//! generator, a queue pop, or train::csv_source (a file replay). A source that blocks waiting for
//! events delays stop() until it returns.
//! **Featurizer.** `void(const Event&, example_batch&)`: calls `begin_example(label)` once and
//! fills the dense row and bags. An event whose label is not in [0, 1], whose dense features or
//! bag weights are not finite, or whose featurizer throws recpipe::error is dropped and counted
//! in bad_events (never trained on). A featurizer that begins no example drops the event
//! silently (not counted as bad).
//! **Timestamps** (optional `timestamp_fn`): events are processed in arrival order; one whose
//! timestamp is below the largest seen so far is counted in out_of_order.
//! **Threads.** start() runs the loop on one thread of its own (the step itself uses the
//! kernels' thread pool, cpu::set_num_threads); stop() asks it to finish after the current step
//! (the partial batch is trained first); join() waits and rethrows an error from the thread.
//! run() is the same loop on the calling thread; train_on() one synchronous step. Use
//! with_model() to read or freeze the model while the thread runs (it waits between steps).
//! **Progress** (stderr by default): "<label>: 12.3k events, 4.1k ev/s, loss 0.5312, auc 0.7125,
//! 48 steps (0 skipped), 0 bad" in place on a terminal, else a line every progress_seconds, and a
//! last line when the stream ends.
//! @code
//! recpipe::train::trainer<recpipe::train::mlp_model, rating> t(model, [&](auto p) { adam.step(p); },
//!     [](const rating& r, recpipe::train::example_batch& b) {
//!       b.begin_example(r.stars >= 4 ? 1.0f : 0.0f); b.add_id(0, r.user); b.add_id(1, r.item); });
//! t.start(recpipe::train::csv_source<rating>("ratings.csv", parse));
//! t.join();
//! // A custom step: the session transformer, one session (a bag of item ids) per example.
//! recpipe::train::trainer<recpipe::train::session_transformer_model, session> s(model, {0, 1},
//!     [&](recpipe::train::example_batch& b, std::vector<float>&) { return my_next_item_step(b); },
//!     [](const session& e, recpipe::train::example_batch& b) {
//!       b.begin_example(0.0f); for (auto i : e.items) b.add_id(0, i); });
//! @endcode
template <class Model, class Event>
class trainer {
 public:
  using source_fn = std::function<std::optional<Event>()>;
  using featurize_fn = std::function<void(const Event&, example_batch&)>;
  using timestamp_fn = std::function<std::int64_t(const Event&)>;
  //! One training step on a full (or, at the end, partial) non-empty batch; see the class doc.
  using step_fn = std::function<step_result(example_batch& batch, std::vector<float>& scores)>;

  //! The default step: train_step(model, ws, batch, dense_step) with BCE on one logit per example.
  trainer(Model& model, dense_step_fn dense_step, featurize_fn featurize, trainer_options options = {},
          timestamp_fn timestamp = {})
    requires trainable_model<Model>
      : trainer(model, batch_shape{model.dense_dim(), model.num_sparse_features()},
                default_step(model, std::move(dense_step)), std::move(featurize), std::move(options),
                std::move(timestamp)) {}

  //! A custom step on batches of `shape` (any model; e.g. a sampled-softmax or next-item step).
  trainer(Model& model, batch_shape shape, step_fn step, featurize_fn featurize, trainer_options options = {},
          timestamp_fn timestamp = {})
      : model_(model),
        step_(std::move(step)),
        featurize_(std::move(featurize)),
        timestamp_(std::move(timestamp)),
        options_(std::move(options)),
        batch_(shape.dense_dim, shape.num_sparse),
        auc_(options_.auc_window == 0 ? 1 : options_.auc_window) {
    if (!step_) detail::fail("train::trainer: no step given");
    if (!featurize_) detail::fail("train::trainer: no featurizer given");
    if (options_.batch_size == 0) detail::fail("train::trainer: batch_size must be at least 1");
    if (!(options_.loss_decay >= 0.0 && options_.loss_decay < 1.0))
      detail::fail("train::trainer: loss_decay must be in [0, 1) (got ", options_.loss_decay, ")");
  }
  trainer(const trainer&) = delete;
  trainer& operator=(const trainer&) = delete;
  ~trainer() {
    stop();
    if (thread_.joinable()) thread_.join();
  }

  //! Starts the training thread on `source`; throws if one is already running.
  void start(source_fn source) {
    if (thread_.joinable()) detail::fail("train::trainer: start: already running (join() it first)");
    if (!source) detail::fail("train::trainer: start: no source given");
    stop_.store(false);
    error_ = nullptr;
    thread_ = std::thread([this, source = std::move(source)]() mutable {
      try {
        loop(source);
      } catch (...) {
        error_ = std::current_exception();
      }
    });
  }
  //! Asks the thread to stop after the current step (the partial batch is trained first).
  void stop() noexcept { stop_.store(true); }
  //! Waits for the thread; rethrows the exception that ended it, if any.
  void join() {
    if (thread_.joinable()) thread_.join();
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }
  //! True while the thread runs.
  bool running() const noexcept { return running_.load(); }

  //! Trains on `source` on the calling thread until it ends (or stop()).
  void run(source_fn source) {
    if (thread_.joinable()) detail::fail("train::trainer: run: the training thread is running");
    stop_.store(false);
    loop(source);
  }

  //! One synchronous step on a batch the caller built (labels in [0, 1]); counts it in stats().
  step_result train_on(example_batch& batch) {
    std::lock_guard lock(model_mutex_);
    start_clock();
    return step(batch);
  }

  //! Adds one event to the pending batch (the trainer's own featurizer and checks) and trains
  //! when the batch is full; returns true when a step ran. For callers that push events.
  bool push(const Event& event) {
    std::lock_guard lock(model_mutex_);
    start_clock();
    add_event(event);
    if (batch_.size() < options_.batch_size) return false;
    step(batch_);
    batch_.clear();
    return true;
  }
  //! Trains on the pending events now (a partial batch); returns true when a step ran.
  bool flush() {
    std::lock_guard lock(model_mutex_);
    if (batch_.empty()) return false;
    step(batch_);
    batch_.clear();
    return true;
  }

  //! Runs f(model) between steps (the training thread waits meanwhile): read weights, freeze.
  template <class F>
  decltype(auto) with_model(F&& f) {
    std::lock_guard lock(model_mutex_);
    return std::forward<F>(f)(model_);
  }

  trainer_stats stats() const {
    std::lock_guard lock(stats_mutex_);
    trainer_stats s = stats_;
    s.running_auc = auc_.value();  // sorts the window: once per call, not per step
    s.seconds = seconds();
    s.events_per_second = s.seconds > 0 ? static_cast<double>(s.events) / s.seconds : 0.0;
    return s;
  }
  const trainer_options& options() const noexcept { return options_; }

  //! The progress line for `s` (what the trainer prints).
  std::string progress_line(const trainer_stats& s) const {
    char text[256];
    std::snprintf(text, sizeof text, "%s: %s events, %s ev/s, loss %.4f, auc %.4f, %llu steps (%llu skipped), %llu bad",
                  options_.label.c_str(), human(static_cast<double>(s.events)).c_str(), human(s.events_per_second).c_str(),
                  s.running_loss, s.running_auc, static_cast<unsigned long long>(s.steps),
                  static_cast<unsigned long long>(s.skipped_steps), static_cast<unsigned long long>(s.bad_events));
    return text;
  }

 private:
  using clock = std::chrono::steady_clock;

  // The workspace lives in the step (shared_ptr: std::function needs a copyable callable).
  static step_fn default_step(Model& model, dense_step_fn dense_step) {
    return [&model, dense_step = std::move(dense_step), ws = std::make_shared<typename Model::workspace>()](
               example_batch& batch, std::vector<float>& scores) {
      return train_step(model, *ws, batch, dense_step, &scores);
    };
  }

  void loop(source_fn& source) {
    running_.store(true);
    struct reset {
      std::atomic<bool>& flag;
      ~reset() { flag.store(false); }
    } guard{running_};
    {
      std::lock_guard lock(model_mutex_);
      start_clock();
    }
    in_place_ = options_.progress == progress_mode::automatic && options_.progress_stream != nullptr &&
                ::isatty(::fileno(options_.progress_stream)) == 1;
    last_report_ = clock::now();
    while (!stop_.load()) {
      std::optional<Event> event = source();
      if (!event) break;
      std::lock_guard lock(model_mutex_);
      add_event(*event);
      if (batch_.size() >= options_.batch_size) {
        step(batch_);
        batch_.clear();
        maybe_report(false);
      }
    }
    {
      std::lock_guard lock(model_mutex_);
      if (!batch_.empty()) {
        step(batch_);
        batch_.clear();
      }
    }
    maybe_report(true);
  }

  void add_event(const Event& event) {
    const std::size_t before = batch_.size();
    bool bad = false;
    try {
      featurize_(event, batch_);
      if (batch_.size() > before + 1)
        detail::fail("train::trainer: the featurizer began ", batch_.size() - before, " examples for one event (at most 1)");
      bad = batch_.size() == before + 1 && !batch_.last_is_valid();
    } catch (const error&) {
      bad = true;
    }
    std::lock_guard lock(stats_mutex_);
    ++stats_.events;
    if (bad) {
      while (batch_.size() > before) batch_.drop_last();
      ++stats_.bad_events;
      return;
    }
    if (timestamp_) {
      const std::int64_t t = timestamp_(event);
      if (seen_timestamp_ && t < max_timestamp_) ++stats_.out_of_order;
      if (!seen_timestamp_ || t > max_timestamp_) max_timestamp_ = t;
      seen_timestamp_ = true;
    }
  }

  step_result step(example_batch& batch) {
    logits_.clear();
    const step_result r = step_(batch, logits_);
    std::lock_guard lock(stats_mutex_);
    stats_.examples += r.examples;
    if (r.examples == 0) return r;
    if (r.skipped) {
      ++stats_.skipped_steps;
      return r;
    }
    ++stats_.steps;
    stats_.running_loss = std::isnan(stats_.running_loss)
                              ? r.loss
                              : options_.loss_decay * stats_.running_loss + (1.0 - options_.loss_decay) * r.loss;
    if (!logits_.empty() && logits_.size() == batch.size()) auc_.add(logits_, batch.labels());
    return r;
  }

  void maybe_report(bool last) {
    if (options_.progress == progress_mode::off || options_.progress_stream == nullptr) return;
    const auto now = clock::now();
    const double since = std::chrono::duration<double>(now - last_report_).count();
    if (!last && since < (in_place_ ? 0.25 : options_.progress_seconds)) return;
    last_report_ = now;
    const std::string line = progress_line(stats());
    if (in_place_)
      std::fprintf(options_.progress_stream, "\r%s\033[K%s", line.c_str(), last ? "\n" : "");
    else
      std::fprintf(options_.progress_stream, "%s\n", line.c_str());
    std::fflush(options_.progress_stream);
  }

  // The first start: start_time_ is written before the release store and read only after an
  // acquire load, so stats() on another thread never races with it.
  void start_clock() {
    if (clock_started_.load(std::memory_order_acquire)) return;
    start_time_ = clock::now();
    clock_started_.store(true, std::memory_order_release);
  }
  double seconds() const {
    if (!clock_started_.load(std::memory_order_acquire)) return 0.0;
    return std::chrono::duration<double>(clock::now() - start_time_).count();
  }
  static std::string human(double v) {
    char text[32];
    if (v >= 1e6)
      std::snprintf(text, sizeof text, "%.2fM", v / 1e6);
    else if (v >= 1e4)
      std::snprintf(text, sizeof text, "%.1fk", v / 1e3);
    else
      std::snprintf(text, sizeof text, "%.0f", v);
    return text;
  }

  Model& model_;
  step_fn step_;
  featurize_fn featurize_;
  timestamp_fn timestamp_;
  trainer_options options_;
  example_batch batch_;
  std::vector<float> logits_;
  running_auc auc_;  // guarded by stats_mutex_

  std::thread thread_;
  std::atomic<bool> stop_{false}, running_{false};
  std::exception_ptr error_;
  std::mutex model_mutex_;
  mutable std::mutex stats_mutex_;
  trainer_stats stats_;
  bool seen_timestamp_ = false;
  std::int64_t max_timestamp_ = 0;
  std::atomic<bool> clock_started_{false};
  clock::time_point start_time_, last_report_;
  bool in_place_ = false;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
