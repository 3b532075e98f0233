// SPDX-License-Identifier: Apache-2.0
// recpipe train: the trainable twin of models::session_transformer (SASRec-style next-item model).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/ragged_view.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/attention_backward.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/dense_backward.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/models/session_transformer.hpp>
#include <recpipe/train/losses.hpp>
#include <recpipe/train/parameter.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

namespace impl {
// Portable deterministic draws (std:: distributions differ between standard libraries).
struct init_rng {
  std::uint64_t state;
  std::uint64_t next() {  // splitmix64
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double unit() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  float uniform(float bound) { return static_cast<float>((2.0 * unit() - 1.0) * bound); }
  float normal(float std) {  // Box-Muller
    const double u1 = 1.0 - unit(), u2 = unit();
    return static_cast<float>(std * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
};
}  // namespace impl

//! @brief A trainable SASRec-style session transformer: the parameters of
//! models::session_transformer as train::parameter's (same names, shapes and config), a training
//! forward over a batch of sessions, full-softmax next-item loss against the tied item
//! embeddings, backward into every parameter, and freeze() into the serving model.
//!
//! Forward (exactly the serving model's): h = item_embedding[items] * embedding_scale +
//! position_embedding[0..len); N transformer encoder layers with a causal mask; final LayerNorm
//! on every position. The hidden state at position t is the query after items 0..t; its scores
//! are <h_t, item_embedding[i]> for every item i (models::session_transformer::score_all_items on
//! the last position). Sessions longer than max_length keep their last max_length items.
//!
//! Parameters (order of parameters() / for_each_parameter): `item_embedding.weight` [N, E],
//! `position_embedding.weight` [max_length, E], per layer i `encoder.layers.{i}.self_attn.
//! in_proj_weight|in_proj_bias|out_proj.weight|out_proj.bias`, `...linear1.weight|bias`,
//! `...linear2.weight|bias`, `...norm1.weight|bias`, `...norm2.weight|bias`, then
//! `final_norm.weight|bias`. Initialisation is deterministic from the seed and follows PyTorch's
//! modules: embeddings N(0, embedding_std), in_proj xavier-uniform, Linear weights and linear
//! biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), attention biases 0, norms 1 and 0.
//!
//! Non-finite weights give a non-finite loss and gradients (nothing is written to the weights
//! here); check them with train::all_finite / dense_optimizer::step_if_finite before a step.
//! Not thread-safe: one trainer thread owns a model (freeze() gives an independent serving copy).
//! @code
//! recpipe::train::session_transformer_model model(config, 42);
//! recpipe::train::adam opt({.lr = 1e-3});
//! auto targets = recpipe::train::session_transformer_model::next_item_targets(offsets, items);
//! model.zero_grad();
//! float loss = model.next_item_loss(offsets, items, targets);  // forward + backward
//! opt.step(model.parameters());
//! recpipe::models::session_transformer serving = model.freeze();
//! @endcode
class session_transformer_model {
 public:
  static constexpr std::size_t params_per_layer = 12;

  //! @throws recpipe::error when the config is invalid (models::session_transformer_config::validate) or
  //!         is not the default variant (session_transformer_config::is_default_variant).
  explicit session_transformer_model(const models::session_transformer_config& config, std::uint64_t seed = 0,
                                     float embedding_std = 0.1f)
      : config_(config) {
    config_.validate();
    if (!config_.is_default_variant())
      detail::fail("train::session_transformer_model: trains only the default session transformer (none of the "
                   "variant keys of models::session_transformer_config, e.g. query_only_norm or padding = left)");
    if (!(embedding_std >= 0.0f) || !std::isfinite(embedding_std))
      detail::fail("train::session_transformer_model: embedding_std must be finite and >= 0 (got ", embedding_std, ")");
    const std::size_t n = config_.num_items, e = config_.embedding_dim, f = config_.ffn_dim;
    impl::init_rng rng{seed};
    const auto add = [&](std::string name, std::vector<std::size_t> shape) -> parameter& {
      params_.emplace_back(std::move(name), std::move(shape));
      return params_.back();
    };
    const auto fill_uniform = [&](parameter& p, float bound) {
      for (float& v : p.value) v = rng.uniform(bound);
    };
    params_.reserve(2 + config_.num_layers * params_per_layer + 2);
    for (float& v : add("item_embedding.weight", {n, e}).value) v = rng.normal(embedding_std);
    for (float& v : add("position_embedding.weight", {config_.max_length, e}).value) v = rng.normal(embedding_std);
    const float in_bound = 1.0f / std::sqrt(static_cast<float>(e)), ff_bound = 1.0f / std::sqrt(static_cast<float>(f));
    for (std::size_t i = 0; i < config_.num_layers; ++i) {
      const std::string base = "encoder.layers." + std::to_string(i) + ".";
      fill_uniform(add(base + "self_attn.in_proj_weight", {3 * e, e}), std::sqrt(6.0f / static_cast<float>(4 * e)));
      add(base + "self_attn.in_proj_bias", {3 * e});
      fill_uniform(add(base + "self_attn.out_proj.weight", {e, e}), in_bound);
      add(base + "self_attn.out_proj.bias", {e});
      fill_uniform(add(base + "linear1.weight", {f, e}), in_bound);
      fill_uniform(add(base + "linear1.bias", {f}), in_bound);
      fill_uniform(add(base + "linear2.weight", {e, f}), ff_bound);
      fill_uniform(add(base + "linear2.bias", {e}), ff_bound);
      std::fill_n(add(base + "norm1.weight", {e}).value.begin(), e, 1.0f);
      add(base + "norm1.bias", {e});
      std::fill_n(add(base + "norm2.weight", {e}).value.begin(), e, 1.0f);
      add(base + "norm2.bias", {e});
    }
    std::fill_n(add("final_norm.weight", {e}).value.begin(), e, 1.0f);
    add("final_norm.bias", {e});
    traces_.resize(config_.num_layers);
    embedding_std_ = embedding_std;
  }

  //! @brief Grows the catalog by `count` items (ids num_items .. num_items + count - 1): new rows
  //! of item_embedding drawn N(0, embedding_std) from `seed` (deterministic), gradients 0. For
  //! items that appear after training: continued training on the click stream then learns
  //! their rows. Optimizer state sized for the old catalog no longer fits: continue with a fresh
  //! optimizer (dense_optimizer checks the sizes and says so).
  //! @code
  //! model.add_items(10, 7);  // ids n .. n + 9
  //! recpipe::train::adam fresh({.lr = 1e-3});
  //! @endcode
  void add_items(std::size_t count, std::uint64_t seed) {
    if (count == 0) return;
    parameter& table = params_[0];
    const std::size_t e = config_.embedding_dim, old = config_.num_items;
    impl::init_rng rng{seed ^ (0x51ED27ull * (old + 1))};
    table.value.reserve((old + count) * e);
    for (std::size_t i = 0; i < count * e; ++i) table.value.push_back(rng.normal(embedding_std_));
    table.grad.resize((old + count) * e, 0.0f);
    table.shape[0] = old + count;
    config_.num_items = old + count;
    forward_done_ = false;
  }

  const models::session_transformer_config& config() const noexcept { return config_; }

  //! Calls f(parameter&) for every parameter, in the order documented above.
  template <class F>
  void for_each_parameter(F&& f) {
    for (parameter& p : params_) f(p);
  }
  template <class F>
  void for_each_parameter(F&& f) const {
    for (const parameter& p : params_) f(p);
  }
  //! Pointers to every parameter (what train::dense_optimizer::step takes); stable for the
  //! model's lifetime.
  std::vector<parameter*> parameters() {
    std::vector<parameter*> out;
    for (parameter& p : params_) out.push_back(&p);
    return out;
  }
  //! The parameter named `name`, or nullptr.
  parameter* find(const std::string& name) {
    for (parameter& p : params_)
      if (p.name == name) return &p;
    return nullptr;
  }
  void zero_grad() noexcept {
    for (parameter& p : params_) p.zero_grad();
  }

  //! @brief Training forward over ragged sessions, as models::session_transformer::encode takes
  //! them, keeping every position: afterwards hidden() holds the final-norm hidden state of each
  //! position and backward() may be called (once per forward).
  //! @param offsets  batch + 1 non-decreasing entries, offsets[0] = 0, offsets[batch] = items.size()
  //! @param items    item ids in [0, num_items), sessions concatenated in time order
  //! @throws recpipe::error for bad offsets or an id outside [0, num_items) (naming its position).
  void forward(std::span<const id_type> offsets, std::span<const id_type> items) {
    check_sessions("forward", offsets, items);
    const std::size_t e = config_.embedding_dim, batch = offsets.size() - 1;
    lengths_.resize(batch);
    windows_.resize(batch);
    longest_ = 0;
    for (std::size_t b = 0; b < batch; ++b) {
      const auto end = static_cast<std::size_t>(offsets[b + 1]);
      lengths_[b] = std::min(end - static_cast<std::size_t>(offsets[b]), config_.max_length);
      windows_[b] = end - lengths_[b];  // first item of the kept window
      longest_ = std::max(longest_, lengths_[b]);
    }
    items_.assign(items.begin(), items.end());
    const std::size_t rows = batch * longest_;
    x_.resize(rows, e);
    std::fill(x_.values().begin(), x_.values().end(), 0.0f);
    const parameter& table = params_[0];
    const parameter& positions = params_[1];
    for (std::size_t b = 0; b < batch; ++b)
      for (std::size_t t = 0; t < lengths_[b]; ++t) {
        const float* item = table.value.data() + static_cast<std::size_t>(items[windows_[b] + t]) * e;
        const float* position = positions.value.data() + t * e;
        float* row = x_.data() + (b * longest_ + t) * e;
        for (std::size_t c = 0; c < e; ++c) row[c] = item[c] * config_.embedding_scale + position[c];
      }
    y_.resize(rows, e);
    for (std::size_t i = 0; i < config_.num_layers; ++i) {
      cpu::transformer_encoder_layer(x_.view(), lengths_, longest_, layer_weights(i), true, y_.view(), traces_[i]);
      std::swap(x_, y_);
    }
    // x_ is the last layer's output (final LayerNorm's input), hidden_ the model's output.
    hidden_.resize(rows, e);
    if (rows != 0) cpu::layer_norm(x_.view(), params_[final_index()].value, params_[final_index() + 1].value, hidden_.view(), config_.eps);
    cpu::impl::zero_padding(hidden_.view(), lengths_, longest_);
    forward_done_ = true;
  }

  //! Hidden states of the last forward: [batch * padded_length(), E], session b's position t at row
  //! b * padded_length() + t (t < length(b)); padded rows are 0.
  matrix_view<const float> hidden() const noexcept { return hidden_.view(); }
  //! Longest kept session of the last forward (the padded length).
  std::size_t padded_length() const noexcept { return longest_; }
  //! Kept length of each session of the last forward (at most max_length).
  std::span<const std::size_t> lengths() const noexcept { return lengths_; }

  //! @brief The session vectors of the last forward, out[b] = hidden state at session b's last
  //! item (0 for an empty session): what models::session_transformer::encode returns.
  //! @param out  [batch, E]
  void session_vectors(matrix_view<float> out) const {
    const std::size_t e = config_.embedding_dim, batch = lengths_.size();
    if (out.rows() != batch || out.cols() != e)
      detail::fail("train::session_transformer_model: session_vectors: out must be ", batch, " x ", e, " (got ",
                   out.rows(), " x ", out.cols(), ")");
    for (std::size_t b = 0; b < batch; ++b) {
      float* row = out.data() + b * out.stride();
      if (lengths_[b] == 0)
        std::fill_n(row, e, 0.0f);
      else
        std::copy_n(hidden_.data() + (b * longest_ + lengths_[b] - 1) * e, e, row);
    }
  }

  //! @brief Backward of the last forward: accumulates (+=) into every parameter's grad from
  //! d_hidden = dL/d hidden() (same shape; padded rows are ignored). The item embeddings get the
  //! gradient of their use as inputs here (scores' share comes from next_item_loss).
  //! @throws recpipe::error without a preceding forward or for a wrong shape.
  void backward(matrix_view<const float> d_hidden) {
    const char* where = "train::session_transformer_model: backward";
    if (!forward_done_) detail::fail(where, ": call forward() first (once per backward)");
    const std::size_t e = config_.embedding_dim, rows = hidden_.rows();
    if (d_hidden.rows() != rows || d_hidden.cols() != e)
      detail::fail(where, ": d_hidden must be ", rows, " x ", e, " (got ", d_hidden.rows(), " x ", d_hidden.cols(), ")");
    forward_done_ = false;
    if (rows == 0) return;
    d_.resize(rows, e);
    for (std::size_t r = 0; r < rows; ++r) std::copy_n(d_hidden.data() + r * d_hidden.stride(), e, d_.data() + r * e);
    cpu::impl::zero_rows_past(d_.view(), lengths_, longest_);
    parameter& final_weight = params_[final_index()];
    parameter& final_bias = params_[final_index() + 1];
    cpu::layer_norm_backward(x_.view(), final_weight.value, d_.view(), d_.view(), final_weight.grad, final_bias.grad,
                             config_.eps);
    for (std::size_t i = config_.num_layers; i-- > 0;)
      cpu::transformer_encoder_layer_backward(d_.view(), layer_weights(i), traces_[i], d_.view(), layer_gradients(i));
    parameter& table = params_[0];
    parameter& positions = params_[1];
    for (std::size_t b = 0; b < lengths_.size(); ++b)
      for (std::size_t t = 0; t < lengths_[b]; ++t) {
        const float* g = d_.data() + (b * longest_ + t) * e;
        float* item = table.grad.data() + static_cast<std::size_t>(items_[windows_[b] + t]) * e;
        float* position = positions.grad.data() + t * e;
        for (std::size_t c = 0; c < e; ++c) {
          item[c] += g[c] * config_.embedding_scale;
          position[c] += g[c];
        }
      }
  }

  //! @brief Next-item targets for `items`: targets[i] = items[i + 1] when item i + 1 is in the
  //! same session, else -1 (the last item of a session has no target).
  //! @throws recpipe::error for offsets that do not describe `items` (as forward()).
  static std::vector<id_type> next_item_targets(std::span<const id_type> offsets, std::span<const id_type> items) {
    const char* where = "train::session_transformer_model: next_item_targets";
    check_offsets<id_type>(where, offsets, items.size(), last_offset::equals_total, "items.size()");
    std::vector<id_type> targets(items.size(), -1);
    for (std::size_t b = 0; b + 1 < offsets.size(); ++b)
      for (auto i = offsets[b]; i + 1 < offsets[b + 1]; ++i)
        targets[static_cast<std::size_t>(i)] = items[static_cast<std::size_t>(i + 1)];
    return targets;
  }

  //! @brief One training pass of the full-softmax next-item objective: forward, logits of every
  //! labelled position against every item (tied item embeddings), mean cross-entropy
  //! (train::softmax_cross_entropy), and backward into every parameter (grads accumulate; zero
  //! them before). Returns the mean loss over the labelled positions (0 when there are none).
  //! @param targets  one per item (aligned with `items`): the id that should follow item i, or a
  //!                 negative value for none. Items cut off by max_length are not labelled.
  //! Memory: logits are made `loss_chunk_rows` positions at a time ([chunk, num_items] floats).
  //! @throws recpipe::error for bad sessions or a target >= num_items (naming its position).
  float next_item_loss(std::span<const id_type> offsets, std::span<const id_type> items, std::span<const id_type> targets) {
    const char* where = "train::session_transformer_model: next_item_loss";
    check_sessions("next_item_loss", offsets, items);
    if (targets.size() != items.size())
      detail::fail(where, ": targets has ", targets.size(), " entries but there are ", items.size(), " items");
    for (std::size_t i = 0; i < targets.size(); ++i)
      if (targets[i] >= static_cast<id_type>(config_.num_items))
        detail::fail(where, ": targets[", i, "] = ", targets[i], " is outside [0, ", config_.num_items, ")");
    forward(offsets, items);
    const std::size_t e = config_.embedding_dim, n = config_.num_items;
    collect_labelled(targets);
    d_hidden_.resize(hidden_.rows(), e);
    std::fill(d_hidden_.values().begin(), d_hidden_.values().end(), 0.0f);
    const std::size_t total = labelled_rows_.size();
    double loss = 0.0;
    parameter& table = params_[0];
    const matrix_view<const float> items_view(table.value.data(), n, e);
    const matrix_view<float> items_grad(table.grad.data(), n, e);
    const std::size_t chunk = std::max<std::size_t>(loss_chunk_rows, 1);
    for (std::size_t first = 0; first < total; first += chunk) {
      const std::size_t count = std::min(chunk, total - first);
      queries_.resize(count, e);
      d_queries_.resize(count, e);
      logits_.resize(count, n);
      d_logits_.resize(count, n);
      for (std::size_t r = 0; r < count; ++r)
        std::copy_n(hidden_.data() + labelled_rows_[first + r] * e, e, queries_.data() + r * e);
      cpu::gemm_nt(queries_.view(), items_view, logits_.view());
      // The loss is the mean over all labelled positions: each chunk's mean weighs count / total.
      const float weight = static_cast<float>(count) / static_cast<float>(total);
      loss += static_cast<double>(softmax_cross_entropy(
                  logits_.view(), std::span<const id_type>(labelled_targets_).subspan(first, count), d_logits_.view())) *
              weight;
      const float grad_weight = weight * loss_scale;
      for (float& v : d_logits_.values()) v *= grad_weight;
      cpu::gemm(true, false, d_logits_.view(), queries_.view(), items_grad, 1.0f, 1.0f);  // tied scores
      cpu::gemm(false, false, d_logits_.view(), items_view, d_queries_.view());
      for (std::size_t r = 0; r < count; ++r)
        std::copy_n(d_queries_.data() + r * e, e, d_hidden_.data() + labelled_rows_[first + r] * e);
    }
    backward(d_hidden_.view());
    return static_cast<float>(loss);
  }

  //! Positions per logits block in next_item_loss (memory: loss_chunk_rows * num_items floats).
  std::size_t loss_chunk_rows = 256;
  //! next_item_loss and next_item_loss_sampled multiply the gradients (not the returned loss) by
  //! this: a batch computed in pieces weighs each piece by its share of the positions
  //! (train::session_trainer), so the accumulated gradient is that of the whole batch's mean.
  float loss_scale = 1.0f;

  //! @brief The sampled-softmax version of next_item_loss for large catalogs: every labelled
  //! position scores its target and `negatives` (ids shared by the whole batch, e.g. drawn from
  //! the item popularity by train::session_trainer), with the log-Q correction (Yi et al. 2019):
  //! s(p, j) = <h_p, item_j> - log_q[j] for the target and for every negative; a negative equal
  //! to the position's target (an accidental hit) is left out of that position's softmax.
  //! loss = mean over labelled positions of [logsumexp_j s(p, j) - s(p, target_p)]; backward into
  //! every parameter as next_item_loss (grads accumulate). Cost O(P K E) for P positions and K
  //! negatives instead of O(P N E).
  //! @param negatives  K item ids in [0, num_items) (duplicates are allowed and each counts once
  //!                   per draw, as in sampled softmax with replacement)
  //! @param log_q      num_items values: the log of each item's sampling probability (any
  //!                   constant offset cancels); empty for no correction
  //! @throws recpipe::error as next_item_loss, for a negative id outside the catalog, or a
  //!                   log_q of the wrong size.
  //! @code
  //! float loss = model.next_item_loss_sampled(offsets, items, targets, negative_ids, log_q);
  //! @endcode
  float next_item_loss_sampled(std::span<const id_type> offsets, std::span<const id_type> items,
                               std::span<const id_type> targets, std::span<const id_type> negatives,
                               std::span<const float> log_q) {
    const char* where = "train::session_transformer_model: next_item_loss_sampled";
    check_sessions("next_item_loss_sampled", offsets, items);
    const std::size_t e = config_.embedding_dim, n = config_.num_items, k = negatives.size();
    if (targets.size() != items.size())
      detail::fail(where, ": targets has ", targets.size(), " entries but there are ", items.size(), " items");
    for (std::size_t i = 0; i < targets.size(); ++i)
      if (targets[i] >= static_cast<id_type>(n))
        detail::fail(where, ": targets[", i, "] = ", targets[i], " is outside [0, ", n, ")");
    for (std::size_t j = 0; j < k; ++j)
      if (negatives[j] < 0 || negatives[j] >= static_cast<id_type>(n))
        detail::fail(where, ": negatives[", j, "] = ", negatives[j], " is outside [0, ", n, ")");
    if (!log_q.empty() && log_q.size() != n)
      detail::fail(where, ": log_q has ", log_q.size(), " values but there are ", n, " items (or pass it empty)");
    forward(offsets, items);
    collect_labelled(targets);
    d_hidden_.resize(hidden_.rows(), e);
    std::fill(d_hidden_.values().begin(), d_hidden_.values().end(), 0.0f);
    const std::size_t total = labelled_rows_.size();
    parameter& table = params_[0];
    const auto lq = [&](id_type id) { return log_q.empty() ? 0.0f : log_q[static_cast<std::size_t>(id)]; };
    // Gather the negatives' rows once: [K, E].
    negatives_.resize(k, e);
    for (std::size_t j = 0; j < k; ++j)
      std::copy_n(table.value.data() + static_cast<std::size_t>(negatives[j]) * e, e, negatives_.data() + j * e);
    d_negatives_.resize(k, e);
    std::fill(d_negatives_.values().begin(), d_negatives_.values().end(), 0.0f);
    double loss = 0.0;
    const std::size_t chunk = std::max<std::size_t>(loss_chunk_rows, 1);
    const float inv_total = total == 0 ? 0.0f : loss_scale / static_cast<float>(total);
    for (std::size_t first = 0; first < total; first += chunk) {
      const std::size_t count = std::min(chunk, total - first);
      queries_.resize(count, e);
      d_queries_.resize(count, e);
      logits_.resize(count, k);
      for (std::size_t r = 0; r < count; ++r)
        std::copy_n(hidden_.data() + labelled_rows_[first + r] * e, e, queries_.data() + r * e);
      if (k != 0) cpu::gemm_nt(queries_.view(), negatives_.view(), logits_.view());
      positive_grad_.assign(count, 0.0f);
      for (std::size_t r = 0; r < count; ++r) {
        const id_type target = labelled_targets_[first + r];
        const float* q = queries_.data() + r * e;
        const float* p = table.value.data() + static_cast<std::size_t>(target) * e;
        double dot = 0.0;
        for (std::size_t c = 0; c < e; ++c) dot += static_cast<double>(q[c]) * p[c];
        const double positive = dot - lq(target);
        float* row = logits_.data() + r * k;
        double peak = positive;
        for (std::size_t j = 0; j < k; ++j) {
          if (negatives[j] == target) continue;  // accidental hit
          row[j] -= lq(negatives[j]);
          peak = std::max(peak, static_cast<double>(row[j]));
        }
        double sum = std::exp(positive - peak);
        for (std::size_t j = 0; j < k; ++j)
          if (negatives[j] != target) sum += std::exp(static_cast<double>(row[j]) - peak);
        const double log_z = peak + std::log(sum);
        loss += log_z - positive;
        // d s(p, j) = softmax_j / total (the positive also - 1 / total); masked negatives get 0.
        for (std::size_t j = 0; j < k; ++j)
          row[j] = negatives[j] == target ? 0.0f : static_cast<float>(std::exp(static_cast<double>(row[j]) - log_z)) * inv_total;
        positive_grad_[r] = static_cast<float>((std::exp(positive - log_z) - 1.0) * inv_total);
      }
      // logits_ now holds d loss / d <q, negative>.
      if (k != 0) {
        cpu::gemm(false, false, logits_.view(), negatives_.view(), d_queries_.view());
        cpu::gemm(true, false, logits_.view(), queries_.view(), d_negatives_.view(), 1.0f, 1.0f);
      } else {
        std::fill(d_queries_.values().begin(), d_queries_.values().end(), 0.0f);
      }
      for (std::size_t r = 0; r < count; ++r) {
        const float g = positive_grad_[r];
        const float* q = queries_.data() + r * e;
        const std::size_t target = static_cast<std::size_t>(labelled_targets_[first + r]);
        const float* p = table.value.data() + target * e;
        float* dp = table.grad.data() + target * e;
        float* dq = d_queries_.data() + r * e;
        for (std::size_t c = 0; c < e; ++c) {
          dq[c] += g * p[c];
          dp[c] += g * q[c];
        }
        std::copy_n(dq, e, d_hidden_.data() + labelled_rows_[first + r] * e);
      }
    }
    for (std::size_t j = 0; j < k; ++j) {
      float* dst = table.grad.data() + static_cast<std::size_t>(negatives[j]) * e;
      const float* src = d_negatives_.data() + j * e;
      for (std::size_t c = 0; c < e; ++c) dst[c] += src[c];
    }
    backward(d_hidden_.view());
    return total == 0 ? 0.0f : static_cast<float>(loss / static_cast<double>(total));
  }

  //! @brief Inference for one session (the next-item evaluator's interface): scores[i] =
  //! <h_last, item_embedding[i]> for every item i, where h_last is the hidden state after the
  //! last item of `prefix` (its last max_length items are kept), i.e.
  //! models::session_transformer::score_all_items of freeze(). An empty prefix gives all 0.
  //! Uses the training workspace: not while a forward awaits its backward, not concurrently.
  //! @param scores  num_items values (overwritten)
  //! @throws recpipe::error for an id outside [0, num_items) or a wrong scores size.
  //! @code
  //! std::vector<float> scores(model.config().num_items);
  //! model.score_session(std::vector<recpipe::id_type>{3, 17, 4}, scores);
  //! @endcode
  void score_session(std::span<const id_type> prefix, std::span<float> scores) {
    const std::size_t e = config_.embedding_dim, n = config_.num_items;
    if (scores.size() != n)
      detail::fail("train::session_transformer_model: score_session: scores has ", scores.size(), " values but there are ",
                   n, " items");
    std::fill(scores.begin(), scores.end(), 0.0f);
    if (prefix.empty()) return;
    const std::size_t keep = std::min(prefix.size(), config_.max_length);
    const std::span<const id_type> window = prefix.subspan(prefix.size() - keep);
    const id_type offsets[2] = {0, static_cast<id_type>(keep)};
    check_sessions("score_session", offsets, window);
    forward(offsets, window);
    forward_done_ = false;  // nothing to back-propagate
    const matrix_view<const float> last(hidden_.data() + (keep - 1) * e, 1, e);
    cpu::gemm_nt(last, matrix_view<const float>(params_[0].value.data(), n, e), matrix_view<float>(scores.data(), 1, n));
  }

  //! @brief The parameters as a safetensors image the serving model loads: tensors named as
  //! above, metadata `recpipe.model` = "session_transformer" and `recpipe.config` = the config.
  //! @code
  //! model.to_safetensors().write("sasrec.safetensors");
  //! @endcode
  io::safetensors_writer to_safetensors() const {
    io::safetensors_writer out;
    out.set_metadata("recpipe.model", "session_transformer");
    out.set_metadata("recpipe.config", config_.to_json().dump());
    for (const parameter& p : params_) out.add(p.name, std::span<const float>(p.value), p.shape);
    return out;
  }

  //! @brief A serving copy of the current weights (independent of later training): its encode /
  //! score_all_items equal session_vectors() / the scores of this model's forward.
  models::session_transformer freeze() const {
    auto file = std::make_shared<const io::safetensors_file>(
        io::safetensors_file::from_bytes(to_safetensors().to_bytes(), "train::session_transformer_model snapshot"));
    return models::session_transformer::load(std::move(file));
  }

 private:
  std::size_t final_index() const noexcept { return 2 + config_.num_layers * params_per_layer; }

  cpu::transformer_layer_weights layer_weights(std::size_t i) const {
    const std::size_t e = config_.embedding_dim, f = config_.ffn_dim;
    const parameter* p = params_.data() + 2 + i * params_per_layer;
    cpu::transformer_layer_weights w;
    w.attention.in_proj_weight = {p[0].value.data(), 3 * e, e};
    w.attention.in_proj_bias = p[1].value;
    w.attention.out_proj_weight = {p[2].value.data(), e, e};
    w.attention.out_proj_bias = p[3].value;
    w.attention.num_heads = config_.num_heads;
    w.linear1_weight = {p[4].value.data(), f, e};
    w.linear1_bias = p[5].value;
    w.linear2_weight = {p[6].value.data(), e, f};
    w.linear2_bias = p[7].value;
    w.norm1_weight = p[8].value;
    w.norm1_bias = p[9].value;
    w.norm2_weight = p[10].value;
    w.norm2_bias = p[11].value;
    w.eps = config_.eps;
    w.act = config_.activation;
    w.norm_first = config_.norm_first;
    return w;
  }

  cpu::transformer_layer_gradients layer_gradients(std::size_t i) {
    const std::size_t e = config_.embedding_dim, f = config_.ffn_dim;
    parameter* p = params_.data() + 2 + i * params_per_layer;
    return {{{p[0].grad.data(), 3 * e, e}, p[1].grad, {p[2].grad.data(), e, e}, p[3].grad},
            {p[4].grad.data(), f, e},
            p[5].grad,
            {p[6].grad.data(), e, f},
            p[7].grad,
            p[8].grad,
            p[9].grad,
            p[10].grad,
            p[11].grad};
  }

  // Labelled positions of the last forward: (padded row, target) for every kept item with one.
  void collect_labelled(std::span<const id_type> targets) {
    labelled_rows_.clear();
    labelled_targets_.clear();
    for (std::size_t b = 0; b < lengths_.size(); ++b)
      for (std::size_t t = 0; t < lengths_[b]; ++t) {
        const id_type target = targets[windows_[b] + t];
        if (target < 0) continue;
        labelled_rows_.push_back(b * longest_ + t);
        labelled_targets_.push_back(target);
      }
  }

  void check_sessions(const char* what, std::span<const id_type> offsets, std::span<const id_type> items) const {
    const char* kind = "train::session_transformer_model: ";
    std::string where = kind;  // appended, not operator+: GCC 12 -O2 warns falsely (-Warray-bounds) on the latter
    where += what;
    check_offsets<id_type>(where, offsets, items.size(), last_offset::equals_total, "items.size()");
    for (std::size_t i = 0; i < items.size(); ++i)
      if (items[i] < 0 || static_cast<std::size_t>(items[i]) >= config_.num_items)
        detail::fail(kind, what, ": items[", i, "] = ", items[i], " is outside [0, ", config_.num_items, ")");
  }

  models::session_transformer_config config_;
  float embedding_std_ = 0.1f;
  std::vector<parameter> params_;
  std::vector<cpu::transformer_layer_trace> traces_;
  // Last forward: kept lengths, first kept item of each session, the items, padded length.
  std::vector<std::size_t> lengths_, windows_;
  std::vector<id_type> items_;
  std::size_t longest_ = 0;
  bool forward_done_ = false;
  matrix<float> x_, y_, hidden_, d_, d_hidden_, queries_, d_queries_, logits_, d_logits_, negatives_, d_negatives_;
  std::vector<float> positive_grad_;
  std::vector<std::size_t> labelled_rows_;
  std::vector<id_type> labelled_targets_;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
