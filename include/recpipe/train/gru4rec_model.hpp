// SPDX-License-Identifier: Apache-2.0
// recpipe train: GRU4Rec (Hidasi et al. 2016 "Session-based recommendations with recurrent neural
// networks"; Hidasi & Karatzoglou 2018 "Recurrent neural networks with top-k gains") trained
// in-process with session-parallel mini-batches.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/ragged_view.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/gru.hpp>
#include <recpipe/cpu/parallel.hpp>
#include <recpipe/models/gru4rec.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/losses.hpp>
#include <recpipe/train/model.hpp>
#include <recpipe/train/parameter.hpp>
#include <recpipe/train/row_init.hpp>
#include <recpipe/train/table.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

namespace impl {
// Portable deterministic draws (splitmix64); std:: distributions differ between standard libraries.
struct gru4rec_rng {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double unit() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(unit() * static_cast<double>(n)) % n; }
};

}  // namespace impl

//! @brief One session-parallel mini-batch: row i is slot `slots[i]`'s transition
//! inputs[i] -> targets[i]. `reset[i]` is 1 when the slot's session starts at this row (its hidden
//! state must be zeroed before the step).
struct session_batch {
  std::vector<std::size_t> slots;
  std::vector<id_type> inputs;
  std::vector<id_type> targets;
  std::vector<char> reset;
  std::size_t size() const noexcept { return inputs.size(); }
  bool empty() const noexcept { return inputs.empty(); }
};

//! @brief GRU4Rec's session-parallel mini-batches (Hidasi et al. 2016, section 3.1.1).
//!
//! `batch_size` slots each hold one session. Every call to next() emits, for every busy slot,
//! the transition (current item -> next item) of its session and advances it; when a session has
//! no transition left its slot takes the next session at once (its next row has reset = 1, so the
//! model zeroes that slot's hidden state). Sessions of fewer than 2 items have no transition and
//! are skipped. Each transition of an epoch is emitted exactly once; when fewer sessions than
//! slots remain, the batches shrink (free slots emit nothing) instead of dropping the tail. Ids
//! are not checked here (the model checks them against its catalog).
//!
//! Sessions are session s = items[offsets[s] .. offsets[s+1]) in time order; the batcher keeps
//! its own copy of both (an id_type per click and per session), so the caller's vectors may go away. With a shuffle seed
//! the session order is a deterministic permutation, drawn again at every restart().
//! @throws recpipe::error for bad offsets or batch_size 0.
//! @code
//! recpipe::train::session_parallel_batches batches(offsets, items, 32, /*shuffle_seed=*/7);
//! recpipe::train::session_batch batch;
//! while (batches.next(batch)) model.train_step(batch, [&](auto p) { adam.step(p); });
//! batches.restart();  // next epoch
//! @endcode
class session_parallel_batches {
 public:
  static constexpr std::size_t none = std::numeric_limits<std::size_t>::max();

  session_parallel_batches(std::span<const id_type> offsets, std::span<const id_type> items, std::size_t batch_size,
                           std::optional<std::uint64_t> shuffle_seed = std::nullopt)
      : offsets_(offsets.begin(), offsets.end()), items_(items.begin(), items.end()), batch_size_(batch_size),
        seed_(shuffle_seed) {
    constexpr const char* where = "train::session_parallel_batches";
    if (batch_size == 0) detail::fail(where, ": batch_size must be at least 1");
    check_offsets<id_type>(where, offsets, items.size(), last_offset::equals_total, "items.size()");
    for (std::size_t s = 0; s + 1 < offsets.size(); ++s)
      if (offsets[s + 1] - offsets[s] >= 2) {
        sessions_.push_back(s);
        transitions_ += static_cast<std::size_t>(offsets[s + 1] - offsets[s]) - 1;
      }
    restart();
  }

  std::size_t num_slots() const noexcept { return batch_size_; }
  //! Sessions with at least one transition (length >= 2).
  std::size_t num_sessions() const noexcept { return sessions_.size(); }
  //! Transitions (rows) in one epoch: the sum of (length - 1) over the sessions.
  std::size_t num_transitions() const noexcept { return transitions_; }

  //! Starts a new epoch: every slot free, sessions (re)shuffled when a seed was given.
  void restart() {
    order_ = sessions_;
    if (seed_) {
      impl::gru4rec_rng rng{*seed_ + 0x51ed27ull * epoch_};
      for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng.below(i)]);
    }
    ++epoch_;
    next_session_ = 0;
    slot_session_.assign(batch_size_, none);
    slot_pos_.assign(batch_size_, 0);
    for (std::size_t s = 0; s < batch_size_; ++s) take_next(s);
  }

  //! @brief Fills `out` with the next mini-batch (rows in slot order). Returns false, with `out`
  //! empty, when the epoch is over.
  bool next(session_batch& out) {
    out.slots.clear();
    out.inputs.clear();
    out.targets.clear();
    out.reset.clear();
    for (std::size_t s = 0; s < batch_size_; ++s) {
      if (slot_session_[s] == none) continue;
      const std::size_t session = slot_session_[s], pos = slot_pos_[s];
      out.slots.push_back(s);
      out.inputs.push_back(items_[pos]);
      out.targets.push_back(items_[pos + 1]);
      out.reset.push_back(pos == static_cast<std::size_t>(offsets_[session]) ? 1 : 0);
      if (pos + 2 >= static_cast<std::size_t>(offsets_[session + 1]))
        take_next(s);
      else
        slot_pos_[s] = pos + 1;
    }
    return !out.empty();
  }

 private:
  void take_next(std::size_t slot) {
    if (next_session_ >= order_.size()) {
      slot_session_[slot] = none;
      return;
    }
    slot_session_[slot] = order_[next_session_++];
    slot_pos_[slot] = static_cast<std::size_t>(offsets_[slot_session_[slot]]);
  }

  std::vector<id_type> offsets_, items_;
  std::size_t batch_size_;
  std::optional<std::uint64_t> seed_;
  std::vector<std::size_t> sessions_, order_, slot_session_, slot_pos_;
  std::size_t transitions_ = 0, next_session_ = 0, epoch_ = 0;
};

//! The training objective of gru4rec_model.
enum class gru4rec_loss {
  full_softmax,     //!< cross-entropy over the whole catalog (train::softmax_cross_entropy)
  sampled_softmax,  //!< cross-entropy over the in-batch targets plus sampled negatives
  bpr_max,          //!< BPR-max over the in-batch targets plus sampled negatives (Hidasi & Karatzoglou 2018)
};

//! Training options of gru4rec_model.
struct gru4rec_options {
  gru4rec_loss loss = gru4rec_loss::full_softmax;
  //! Extra negatives per step for the sampled losses, shared by every row of the batch and drawn
  //! with probability proportional to count^sample_alpha (set_item_counts; uniform without counts).
  std::size_t num_negatives = 0;
  float sample_alpha = 0.75f;
  //! BPR-max's score regularisation (GRU4Rec's `bpreg`).
  float bpr_max_lambda = 1.0f;
  //! Item embedding rows start uniform in (-embedding_init, embedding_init).
  float embedding_init = 0.1f;
};

namespace impl {
// Gradient rows of a fixed table, one per distinct id, accumulated in first-seen order.
struct row_gradients {
  std::vector<id_type> ids;
  matrix<float> rows;
  std::vector<std::int64_t> index;  // id -> row, -1 when absent

  void reset(std::size_t num_items, std::size_t dim) {
    if (index.size() != num_items) index.assign(num_items, -1);
    for (id_type id : ids) index[static_cast<std::size_t>(id)] = -1;
    ids.clear();
    rows.resize(0, dim);
  }
  void add(id_type id, const float* g) {
    std::int64_t& at = index[static_cast<std::size_t>(id)];
    const std::size_t dim = rows.cols();
    if (at < 0) {
      at = static_cast<std::int64_t>(ids.size());
      ids.push_back(id);
      rows.values().resize(ids.size() * dim, 0.0f);
      rows.resize(ids.size(), dim);
    }
    float* row = rows.data() + static_cast<std::size_t>(at) * dim;
    for (std::size_t c = 0; c < dim; ++c) row[c] += g[c];
  }
  // Every row 0 .. num_items - 1 in id order (a dense gradient, e.g. the full softmax's output
  // table), zeroed: write rows directly, add() still works.
  void set_dense(std::size_t num_items, std::size_t dim) {
    reset(num_items, dim);
    ids.resize(num_items);
    for (std::size_t i = 0; i < num_items; ++i) {
      ids[i] = static_cast<id_type>(i);
      index[i] = static_cast<std::int64_t>(i);
    }
    rows.resize(num_items, dim);
  }
  bool finite() const {
    for (float v : rows.values())
      if (!std::isfinite(v)) return false;
    return true;
  }
};

// train::softmax_cross_entropy on row blocks in recpipe's thread pool (cpu::set_num_threads): a
// catalog-wide softmax is as much work as the products around it. Each block's mean is rescaled to
// the batch mean (the loss and dlogits equal the one-call result up to rounding).
inline float parallel_softmax_cross_entropy(matrix_view<const float> logits, std::span<const id_type> targets,
                                            matrix_view<float> dlogits) {
  const std::size_t rows = logits.rows(), cols = logits.cols();
  constexpr std::size_t block = 8;
  const std::size_t blocks = (rows + block - 1) / block;
  if (blocks <= 1 || targets.size() != rows) return train::softmax_cross_entropy(logits, targets, dlogits);
  std::vector<double> losses(blocks, 0.0);
  cpu::impl::parallel_for(blocks, rows * cols * 8, [&](std::size_t begin, std::size_t end) {
    for (std::size_t k = begin; k < end; ++k) {
      const std::size_t first = k * block, count = std::min(block, rows - first);
      const matrix_view<float> d = dlogits.middle_rows(first, count);
      losses[k] = train::softmax_cross_entropy(logits.middle_rows(first, count), targets.subspan(first, count), d);
      const float scale = static_cast<float>(count) / static_cast<float>(rows);
      for (std::size_t r = 0; r < count; ++r)
        for (float& v : d.row(r)) v *= scale;
      losses[k] *= static_cast<double>(count) / static_cast<double>(rows);
    }
  });
  double total = 0.0;
  for (double l : losses) total += l;
  return static_cast<float>(total);
}

// BPR-max (Hidasi & Karatzoglou 2018, eq. 10 with score regularisation) over a [B, C] logit matrix
// whose positive of row b is column b; -inf logits are masked out. Per row, with s_j the softmax
// of the negatives' scores and sg_j = sigmoid(x_b - x_j):
//   L_b = -log sum_j s_j sg_j + lambda sum_j s_j x_j^2
// Returns the mean over rows and writes dL/dlogits (rows without a negative: loss 0, grad 0).
inline double bpr_max_rows(matrix_view<const float> logits, matrix_view<float> dlogits, float lambda, std::size_t first,
                           std::size_t last, double inv) {
  const std::size_t cols = logits.cols();
  constexpr float masked = -std::numeric_limits<float>::infinity();
  double total = 0.0;
  std::vector<double> s(cols), sg(cols);
  for (std::size_t b = first; b < last; ++b) {
    const std::span<const float> x = logits.row(b);
    const std::span<float> d = dlogits.row(b);
    std::fill(d.begin(), d.end(), 0.0f);
    const double pos = x[b];
    double peak = -std::numeric_limits<double>::infinity();
    for (std::size_t j = 0; j < cols; ++j)
      if (j != b && x[j] != masked) peak = std::max(peak, static_cast<double>(x[j]));
    if (peak == -std::numeric_limits<double>::infinity()) continue;  // no negative: loss 0, grad 0
    double z = 0.0;
    for (std::size_t j = 0; j < cols; ++j) {
      s[j] = j != b && x[j] != masked ? std::exp(static_cast<double>(x[j]) - peak) : 0.0;
      z += s[j];
    }
    double a = 0.0, q = 0.0, dpos = 0.0;
    for (std::size_t j = 0; j < cols; ++j) {
      if (j == b || x[j] == masked) continue;
      s[j] /= z;
      sg[j] = train::impl::sigmoid(pos - x[j]);
      a += s[j] * sg[j];
      q += s[j] * static_cast<double>(x[j]) * x[j];
      dpos += s[j] * sg[j] * (1.0 - sg[j]);
    }
    total += -std::log(a) + lambda * q;
    for (std::size_t j = 0; j < cols; ++j) {
      if (j == b || x[j] == masked) continue;
      const double xj = x[j];
      const double g = -s[j] * (sg[j] * sg[j] - a) / a + lambda * s[j] * (xj * xj - q + 2.0 * xj);
      d[j] = static_cast<float>(g * inv);
    }
    d[b] = static_cast<float>(-dpos / a * inv);
  }
  return total;
}

inline float bpr_max(matrix_view<const float> logits, matrix_view<float> dlogits, float lambda) {
  const std::size_t rows = logits.rows();
  if (rows == 0) return 0.0f;
  const double inv = 1.0 / static_cast<double>(rows);
  // rows are independent: blocks of rows in recpipe's thread pool (cpu::set_num_threads)
  constexpr std::size_t block = 8;
  const std::size_t blocks = (rows + block - 1) / block;
  std::vector<double> totals(blocks, 0.0);
  cpu::impl::parallel_for(blocks, rows * logits.cols() * 16, [&](std::size_t begin, std::size_t end) {
    for (std::size_t k = begin; k < end; ++k)
      totals[k] = bpr_max_rows(logits, dlogits, lambda, k * block, std::min(rows, (k + 1) * block), inv);
  });
  double total = 0.0;
  for (double t : totals) total += t;
  return static_cast<float>(total * inv);
}
}  // namespace impl

//! @brief A trainable GRU4Rec: item input embeddings -> `num_layers` GRU layers -> scores
//! <h, output_embedding[item]> (models::gru4rec's forward), trained on next-item prediction with
//! session-parallel mini-batches (session_parallel_batches).
//!
//! **Training** (as the reference GRU4Rec): each slot of the batcher keeps its hidden state
//! between steps; a step runs ONE GRU step per row from that state (zeroed where the batch says
//! reset), scores the targets, and backpropagates through that step only (truncated BPTT of 1:
//! the incoming state is a constant). Losses (gru4rec_options::loss):
//! - full_softmax: mean cross-entropy over the whole catalog (train::softmax_cross_entropy);
//! - sampled_softmax: cross-entropy over the candidates = the batch's targets (row b's positive is
//!   column b, the other rows' targets its in-batch negatives) plus `num_negatives` items drawn by
//!   popularity^alpha and shared by the batch; a candidate with the row's own target id
//!   (accidental hit) is masked out;
//! - bpr_max: BPR-max with score regularisation over the same candidates.
//! **Parameters**: the GRU layers as train::parameter's named like nn.GRU (`gru.weight_ih_l{k}`,
//! `gru.weight_hh_l{k}`, `gru.bias_ih_l{k}`, `gru.bias_hh_l{k}`), initialised U(+-1/sqrt(H)) as
//! PyTorch does, updated by the dense step given to train_step (e.g. train::adagrad / adam); the
//! item embeddings as train::fixed_table's ("item_embedding", "output_embedding"; one table when
//! tied) with row optimizers, updated lazily on the rows a step touched (every row under
//! full_softmax, whose output gradient is dense).
//! **Bad input**: ids outside [0, num_items) in a batch or in negatives are a recpipe::error naming
//! the id (before anything changes); a step whose loss or any gradient is not finite writes no
//! weight, keeps the slots' previous hidden states, and is counted (skipped_steps()); a slot whose
//! new hidden state is not finite is reset to zero.
//! **Threads**: the products (embeddings x GRU weights, hidden x output embeddings and their
//! gradients) are cpu::gemm, i.e. OpenBLAS with the threads of cpu::set_num_threads; the
//! catalog-wide softmax and BPR-max run in blocks of rows on recpipe's pool (same count). The
//! table row updates (fixed_table::apply) are serial. Measured on the YOOCHOOSE 100k sample
//! (2,933 items, 1,660 steps of batch 32, H = 100) on the shared 2-core dev machine under a load
//! of 5-9: one epoch takes 4.0-4.3 s CPU with 1 thread (full softmax; 5.4 s with BPR-max and
//! 2,048 negatives), and 2 threads were NOT faster there (OpenBLAS's spinning workers compete with
//! the other processes for the 2 cores); measure on an idle machine before choosing 2.
//! Not thread-safe: one thread trains; freeze() gives an independent serving model.
//! @code
//! recpipe::train::gru4rec_model model({.num_items = n, .embedding_dim = 64, .hidden_size = 100},
//!     {.loss = recpipe::train::gru4rec_loss::bpr_max, .num_negatives = 2048},
//!     std::make_shared<recpipe::train::adagrad_rows>(recpipe::train::adagrad_rows_options{.lr = 0.05}),
//!     std::make_shared<recpipe::train::adagrad_rows>(recpipe::train::adagrad_rows_options{.lr = 0.05}), 42);
//! model.set_item_counts(recpipe::train::gru4rec_model::item_counts(items, n));
//! recpipe::train::adagrad opt({.lr = 0.05});
//! recpipe::train::session_parallel_batches batches(offsets, items, 32, 7);
//! recpipe::train::session_batch batch;
//! while (batches.next(batch)) model.train_step(batch, [&](auto p) { opt.step(p); });
//! recpipe::models::gru4rec serving = model.freeze();
//! @endcode
class gru4rec_model {
 public:
  //! @param input_optimizer   row optimizer of the input item embeddings
  //! @param output_optimizer  row optimizer of the output item embeddings (ignored, may be null,
  //!                          when tied)
  //! @throws recpipe::error for an invalid config or options, or a null optimizer.
  gru4rec_model(models::gru4rec_config config, gru4rec_options options, std::shared_ptr<row_optimizer> input_optimizer,
                std::shared_ptr<row_optimizer> output_optimizer, std::uint64_t seed = 0)
      : config_(config), options_(options), rng_{seed ^ 0xC0FFEEull} {
    constexpr const char* kind = "train::gru4rec_model";
    config_.validate();
    if (!(options_.sample_alpha >= 0.0f) || !std::isfinite(options_.sample_alpha))
      detail::fail(kind, ": sample_alpha must be finite and >= 0 (got ", options_.sample_alpha, ")");
    if (!(options_.bpr_max_lambda >= 0.0f) || !std::isfinite(options_.bpr_max_lambda))
      detail::fail(kind, ": bpr_max_lambda must be finite and >= 0 (got ", options_.bpr_max_lambda, ")");
    if (!(options_.embedding_init >= 0.0f) || !std::isfinite(options_.embedding_init))
      detail::fail(kind, ": embedding_init must be finite and >= 0 (got ", options_.embedding_init, ")");
    if (!input_optimizer || (!config_.tied && !output_optimizer))
      detail::fail(kind, ": the row optimizer of ", !input_optimizer ? "the input" : "the output", " embeddings is null");
    const std::size_t n = config_.num_items, h = config_.hidden_size;
    input_ = std::make_shared<fixed_table>(
        fixed_table::config{n, config_.embedding_dim, {row_init::distribution::uniform, options_.embedding_init, seed},
                            "item_embedding"},
        std::move(input_optimizer));
    output_ = config_.tied ? input_
                           : std::make_shared<fixed_table>(
                                 fixed_table::config{n, h, {row_init::distribution::uniform, options_.embedding_init, seed + 1},
                                                     "output_embedding"},
                                 std::move(output_optimizer));
    const float bound = 1.0f / std::sqrt(static_cast<float>(h));
    params_.reserve(4 * config_.num_layers);
    for (std::size_t l = 0; l < config_.num_layers; ++l) {
      const std::string k = std::to_string(l);
      params_.emplace_back("gru.weight_ih_l" + k, std::vector<std::size_t>{3 * h, config_.layer_input(l)});
      params_.emplace_back("gru.weight_hh_l" + k, std::vector<std::size_t>{3 * h, h});
      params_.emplace_back("gru.bias_ih_l" + k, std::vector<std::size_t>{3 * h});
      params_.emplace_back("gru.bias_hh_l" + k, std::vector<std::size_t>{3 * h});
    }
    for (parameter& p : params_) impl::init_uniform(p, bound, seed);
    states_.resize(config_.num_layers);
    traces_.resize(config_.num_layers);
    outs_.resize(config_.num_layers);
  }

  const models::gru4rec_config& config() const noexcept { return config_; }
  const gru4rec_options& options() const noexcept { return options_; }
  std::size_t num_items() const noexcept { return config_.num_items; }

  //! The GRU weights (what the dense step updates), in nn.GRU's order per layer.
  std::vector<parameter*> parameters() {
    std::vector<parameter*> out;
    for (parameter& p : params_) out.push_back(&p);
    return out;
  }
  template <class F>
  void for_each_parameter(F&& f) {
    for (parameter& p : params_) f(p);
  }
  void zero_grad() noexcept {
    for (parameter& p : params_) p.zero_grad();
  }
  //! The input item embeddings [num_items, embedding_dim].
  fixed_table& input_table() noexcept { return *input_; }
  const fixed_table& input_table() const noexcept { return *input_; }
  //! The output item embeddings [num_items, hidden_size] (the input table when tied).
  fixed_table& output_table() noexcept { return *output_; }
  const fixed_table& output_table() const noexcept { return *output_; }

  //! @brief Clicks per item over `items` (ids outside [0, num_items) are an error naming them):
  //! the popularity set_item_counts takes.
  static std::vector<double> item_counts(std::span<const id_type> items, std::size_t num_items) {
    std::vector<double> counts(num_items, 0.0);
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (items[i] < 0 || static_cast<std::size_t>(items[i]) >= num_items)
        detail::fail("train::gru4rec_model: item_counts: item id ", items[i], " (items[", i, "]) is outside [0, ",
                     num_items, ")");
      counts[static_cast<std::size_t>(items[i])] += 1.0;
    }
    return counts;
  }

  //! @brief Sets the popularity the sampled negatives follow: P(i) proportional to
  //! counts[i]^sample_alpha. Without it (or when every count is 0) negatives are uniform.
  //! @throws recpipe::error if counts does not have num_items values or one is negative / not finite.
  void set_item_counts(std::span<const double> counts) {
    if (counts.size() != config_.num_items)
      detail::fail("train::gru4rec_model: set_item_counts: ", counts.size(), " counts for ", config_.num_items, " items");
    cdf_.resize(counts.size());
    double total = 0.0;
    for (std::size_t i = 0; i < counts.size(); ++i) {
      if (!(counts[i] >= 0.0) || !std::isfinite(counts[i]))
        detail::fail("train::gru4rec_model: set_item_counts: counts[", i, "] = ", counts[i], " must be finite and >= 0");
      total += counts[i] > 0.0 ? std::pow(counts[i], static_cast<double>(options_.sample_alpha)) : 0.0;
      cdf_[i] = total;
    }
    if (total <= 0.0) cdf_.clear();
  }

  //! `count` item ids drawn (with replacement) from the sampling distribution.
  std::vector<id_type> sample_negatives(std::size_t count) {
    std::vector<id_type> out(count);
    for (id_type& id : out) {
      if (cdf_.empty()) {
        id = static_cast<id_type>(rng_.below(config_.num_items));
      } else {
        const double u = rng_.unit() * cdf_.back();
        const auto at = std::upper_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin();
        id = static_cast<id_type>(std::min<std::size_t>(static_cast<std::size_t>(at), cdf_.size() - 1));
      }
    }
    return out;
  }

  //! Zeroes the hidden state of every slot (e.g. at the start of an epoch).
  void reset_state() {
    for (matrix<float>& s : states_) std::fill(s.values().begin(), s.values().end(), 0.0f);
  }
  //! The hidden state of `slot` in the last layer (zeros for a slot never seen), for tests.
  std::vector<float> slot_state(std::size_t slot) const {
    const matrix<float>& s = states_.back();
    if (slot >= s.rows()) return std::vector<float>(config_.hidden_size, 0.0f);
    return {s.row(slot).begin(), s.row(slot).end()};
  }

  //! @brief Forward and backward of one session-parallel step WITHOUT updating anything but the
  //! gradients: the GRU parameters' grads accumulate (+=), the tables' gradient rows are left in
  //! table_gradients() (overwritten), and the new hidden states are kept for
  //! commit_state(). `negatives` are the extra sampled negatives (ignored by full_softmax).
  //! Returns the mean loss over the batch (0 for an empty batch).
  //! @throws recpipe::error for inconsistent batch vectors or an id outside [0, num_items).
  float forward_backward(const session_batch& batch, std::span<const id_type> negatives) {
    constexpr const char* where = "train::gru4rec_model: forward_backward";
    const std::size_t rows = batch.size(), n = config_.num_items, e = config_.embedding_dim, h = config_.hidden_size;
    if (batch.targets.size() != rows || batch.slots.size() != rows || batch.reset.size() != rows)
      detail::fail(where, ": the batch has ", rows, " inputs but ", batch.targets.size(), " targets, ", batch.slots.size(),
                   " slots and ", batch.reset.size(), " reset flags");
    check_ids(where, "inputs", batch.inputs);
    check_ids(where, "targets", batch.targets);
    const bool full = options_.loss == gru4rec_loss::full_softmax;
    if (!full) check_ids(where, "negatives", negatives);
    std::size_t max_slot = 0;
    for (std::size_t s : batch.slots) max_slot = std::max(max_slot, s);
    if (max_slot > (std::size_t{1} << 24))
      detail::fail(where, ": slot ", max_slot, " is implausibly large (slots are 0 .. batch size - 1)");
    seen_.assign(rows == 0 ? 0 : max_slot + 1, 0);
    for (std::size_t s : batch.slots)
      if (seen_[s]++) detail::fail(where, ": slot ", s, " appears twice in the batch");
    ws_.input.reset(n, config_.embedding_dim);
    ws_.output.reset(n, h);
    pending_ = false;
    if (rows == 0) return 0.0f;
    for (matrix<float>& s : states_)
      if (s.rows() <= max_slot) {
        const std::size_t old = s.rows();
        s.values().resize((max_slot + 1) * h, 0.0f);
        s.resize(max_slot + 1, h);
        std::fill(s.values().begin() + static_cast<std::ptrdiff_t>(old * h), s.values().end(), 0.0f);
      }
    // forward: one GRU step per layer from each slot's state
    x_.resize(rows, e);
    const matrix_view<const float> in_w = input_->weights();
    for (std::size_t r = 0; r < rows; ++r)
      std::copy_n(in_w.data() + static_cast<std::size_t>(batch.inputs[r]) * in_w.stride(), e, x_.data() + r * e);
    h_prev_.resize(rows, h);
    for (std::size_t l = 0; l < config_.num_layers; ++l) {
      for (std::size_t r = 0; r < rows; ++r) {
        float* dst = h_prev_.data() + r * h;
        if (batch.reset[r]) std::fill_n(dst, h, 0.0f);
        else std::copy_n(states_[l].data() + batch.slots[r] * h, h, dst);
      }
      outs_[l].resize(rows, h);
      cpu::gru_step(l == 0 ? x_.view() : matrix_view<const float>(outs_[l - 1].view()), h_prev_.view(), layer(l),
                    outs_[l].view(), &traces_[l]);
    }
    const matrix_view<const float> top = outs_.back().view();
    // scores and loss
    dtop_.resize(rows, h);
    float loss = 0.0f;
    const matrix_view<const float> out_w = output_->weights();
    if (full) {
      logits_.resize(rows, n);
      dlogits_.resize(rows, n);
      cpu::gemm(false, true, top, out_w, logits_.view());
      loss = impl::parallel_softmax_cross_entropy(logits_.view(), batch.targets, dlogits_.view());
      cpu::gemm(false, false, dlogits_.view(), out_w, dtop_.view());
      ws_.output.set_dense(n, h);
      cpu::gemm(true, false, dlogits_.view(), top, ws_.output.rows.view());
    } else {
      const std::size_t c = rows + negatives.size();
      cand_ids_.assign(batch.targets.begin(), batch.targets.end());
      cand_ids_.insert(cand_ids_.end(), negatives.begin(), negatives.end());
      cand_.resize(c, h);
      for (std::size_t j = 0; j < c; ++j)
        std::copy_n(out_w.data() + static_cast<std::size_t>(cand_ids_[j]) * out_w.stride(), h, cand_.data() + j * h);
      logits_.resize(rows, c);
      dlogits_.resize(rows, c);
      cpu::gemm(false, true, top, cand_.view(), logits_.view());
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t j = 0; j < c; ++j)
          if (j != r && cand_ids_[j] == batch.targets[r]) logits_(r, j) = -std::numeric_limits<float>::infinity();
      if (options_.loss == gru4rec_loss::bpr_max) {
        loss = impl::bpr_max(logits_.view(), dlogits_.view(), options_.bpr_max_lambda);
      } else {
        column_targets_.resize(rows);
        for (std::size_t r = 0; r < rows; ++r) column_targets_[r] = static_cast<id_type>(r);
        loss = impl::parallel_softmax_cross_entropy(logits_.view(), column_targets_, dlogits_.view());
      }
      cpu::gemm(false, false, dlogits_.view(), cand_.view(), dtop_.view());
      dcand_.resize(c, h);
      cpu::gemm(true, false, dlogits_.view(), top, dcand_.view());
      for (std::size_t j = 0; j < c; ++j) ws_.output.add(cand_ids_[j], dcand_.data() + j * h);
    }
    // backward through this step of every layer (the incoming state is a constant)
    for (std::size_t l = config_.num_layers; l-- > 0;) {
      dx_.resize(rows, config_.layer_input(l));
      cpu::gru_step_backward(dtop_.view(), layer(l), traces_[l], dx_.view(), {}, layer_grads(l));
      if (l > 0) std::swap(dx_, dtop_);
    }
    for (std::size_t r = 0; r < rows; ++r) ws_.input.add(batch.inputs[r], dx_.data() + r * e);
    if (config_.tied)  // one table: merge the output rows into the input's
      for (std::size_t i = 0; i < ws_.output.ids.size(); ++i)
        ws_.input.add(ws_.output.ids[i], ws_.output.rows.data() + i * h);
    pending_slots_.assign(batch.slots.begin(), batch.slots.end());
    pending_ = true;
    return loss;
  }

  //! The table gradients of a forward_backward (what train::impl::apply_if_finite checks and
  //! applies): input rows (the tied table's, input and output uses summed) and output rows.
  struct workspace {
    impl::row_gradients input, output;
  };
  //! Table gradient rows of the last forward_backward.
  const workspace& table_gradients() const noexcept { return ws_; }

  //! True when every table gradient row in ws is finite.
  bool table_gradients_finite(const workspace& ws) const {
    return ws.input.finite() && (config_.tied || ws.output.finite());
  }
  //! Hands the table gradients in ws to the tables' row optimizers (one begin_step per table).
  void apply_table_gradients(workspace& ws) {
    input_->optimizer().begin_step();
    input_->apply(ws.input.ids, ws.input.rows.view());
    if (!config_.tied) {
      output_->optimizer().begin_step();
      output_->apply(ws.output.ids, ws.output.rows.view());
    }
  }

  //! @brief Stores the new hidden states of the last forward_backward in their slots (a state
  //! that is not finite is stored as zeros).
  void commit_state() {
    if (!pending_) return;
    const std::size_t h = config_.hidden_size;
    for (std::size_t l = 0; l < config_.num_layers; ++l)
      for (std::size_t r = 0; r < pending_slots_.size(); ++r) {
        const float* src = outs_[l].data() + r * h;
        float* dst = states_[l].data() + pending_slots_[r] * h;
        bool finite = true;
        for (std::size_t c = 0; c < h; ++c) finite = finite && std::isfinite(src[c]);
        if (finite) std::copy_n(src, h, dst);
        else std::fill_n(dst, h, 0.0f);
      }
    pending_ = false;
  }

  //! @brief One training step: zero the GRU grads, draw the negatives, forward_backward, and
  //! only when the loss and every gradient are finite the dense step (GRU weights) and the
  //! tables' row updates, then the slots' new hidden states. A non-finite step writes nothing
  //! and counts in skipped_steps(). An empty batch does nothing (loss NaN, as train_step).
  //! @throws recpipe::error as forward_backward (nothing is changed then).
  step_result train_step(const session_batch& batch, const dense_step_fn& dense_step) {
    step_result result;
    result.examples = batch.size();
    if (batch.empty()) {
      result.loss = std::numeric_limits<float>::quiet_NaN();
      return result;
    }
    zero_grad();
    const std::vector<id_type> negatives =
        options_.loss == gru4rec_loss::full_softmax ? std::vector<id_type>{} : sample_negatives(options_.num_negatives);
    result.loss = forward_backward(batch, negatives);
    const std::vector<parameter*> params = parameters();
    impl::apply_if_finite(*this, ws_, params, dense_step, result);
    if (result.skipped) {
      ++skipped_steps_;
      pending_ = false;
    } else {
      commit_state();
    }
    return result;
  }

  //! Steps train_step skipped because the loss or a gradient was not finite.
  std::size_t skipped_steps() const noexcept { return skipped_steps_; }

  //! @brief Next-item scores after a session prefix with the current weights (as
  //! models::gru4rec::score_session; an empty prefix scores every item 0).
  //! @throws recpipe::error for an id outside [0, num_items) (naming it) or scores not num_items.
  void score_session(std::span<const id_type> items, std::span<float> scores) const {
    if (scores.size() != config_.num_items)
      detail::fail("train::gru4rec_model: score_session: scores has ", scores.size(), " values but the catalog has ",
                   config_.num_items);
    const id_type offsets[2] = {0, static_cast<id_type>(items.size())};
    std::vector<float> hidden(config_.hidden_size);
    encode(offsets, items, {hidden.data(), 1, hidden.size()});
    cpu::gemm_nt({hidden.data(), 1, hidden.size()}, output_->weights(), {scores.data(), 1, scores.size()});
  }
  //! @brief Session vectors with the current weights (as models::gru4rec::encode).
  void encode(std::span<const id_type> offsets, std::span<const id_type> items, matrix_view<float> out) const {
    std::vector<cpu::gru_weights> views;
    for (std::size_t l = 0; l < config_.num_layers; ++l) views.push_back(layer(l));
    models::impl::gru4rec_encode("train::gru4rec_model: encode", config_, input_->weights(), views,
                                 ragged_view<const id_type, id_type>(offsets, items), out);
  }

  //! @brief A serving copy of the current weights, independent of later training.
  models::gru4rec freeze() const {
    const auto copy = [](matrix_view<const float> m) {
      matrix<float> out(m.rows(), m.cols());
      for (std::size_t r = 0; r < m.rows(); ++r) std::copy_n(m.data() + r * m.stride(), m.cols(), out.data() + r * m.cols());
      return out;
    };
    std::vector<models::gru_layer> layers(config_.num_layers);
    for (std::size_t l = 0; l < config_.num_layers; ++l) {
      const parameter* p = params_.data() + 4 * l;
      layers[l].weight_ih = copy(p[0].matrix());
      layers[l].weight_hh = copy(p[1].matrix());
      layers[l].bias_ih = p[2].value;
      layers[l].bias_hh = p[3].value;
    }
    return models::gru4rec(config_, copy(input_->weights()), std::move(layers),
                           config_.tied ? matrix<float>() : copy(output_->weights()));
  }

 private:
  cpu::gru_weights layer(std::size_t l) const {
    const parameter* p = params_.data() + 4 * l;
    return {p[0].matrix(), p[1].matrix(), p[2].value, p[3].value};
  }
  cpu::gru_gradients layer_grads(std::size_t l) {
    parameter* p = params_.data() + 4 * l;
    return {p[0].grad_matrix(), p[1].grad_matrix(), p[2].grad, p[3].grad};
  }
  void check_ids(const char* where, const char* what, std::span<const id_type> ids) const {
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || static_cast<std::size_t>(ids[i]) >= config_.num_items)
        detail::fail(where, ": item id ", ids[i], " (", what, "[", i, "]) is outside the catalog [0, ", config_.num_items,
                     ")");
  }

  models::gru4rec_config config_;
  gru4rec_options options_;
  std::shared_ptr<fixed_table> input_, output_;
  std::vector<parameter> params_;
  impl::gru4rec_rng rng_;
  std::vector<double> cdf_;
  std::vector<matrix<float>> states_, outs_;  // per layer: [slots, H] carried state; [rows, H] this step's output
  std::vector<cpu::gru_step_trace> traces_;
  matrix<float> x_, h_prev_, dtop_, dx_, logits_, dlogits_, cand_, dcand_;
  std::vector<id_type> cand_ids_, column_targets_;
  std::vector<std::size_t> pending_slots_;
  workspace ws_;
  std::vector<char> seen_;
  bool pending_ = false;
  std::size_t skipped_steps_ = 0;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
