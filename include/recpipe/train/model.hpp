// SPDX-License-Identifier: Apache-2.0
// recpipe train: what every trainable model provides, and the parts they share (initialisation,
// the trainable MLP stack, the sparse features over trainable tables, freezing into safetensors).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/dense_backward.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/cpu/embedding_backward.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/math/random.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/parameter.hpp>
#include <recpipe/train/table.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! The dense half of an optimizer step: updates every parameter from its gradient, e.g.
//! `[&](auto params) { adam.step(params); }` with an optimizer of train/optimizers.hpp (or
//! optimizer_step(adam)).
using dense_step_fn = std::function<void(std::span<parameter* const>)>;

//! What one training step did.
struct step_result {
  float loss = 0.0f;         //!< mean binary cross-entropy of the batch (NaN if the batch was empty)
  std::size_t examples = 0;  //!< batch size
  bool skipped = false;      //!< true when a gradient was not finite and no weight was written
};

//! @brief A model train_step and train::trainer can train: a ranking model with one logit per
//! example over model_inputs.
//!
//! - `forward(inputs, ws)` -> logits [batch, 1], keeping in `ws` what backward needs (the inputs
//!   must stay alive and unchanged until backward);
//! - `backward(ws, dlogits)` accumulates dense gradients into the parameters (+=) and leaves the
//!   table gradients in `ws` (nothing is written to a table yet);
//! - `table_gradients_finite(ws)`, `apply_table_gradients(ws)`: the sparse half of the step (the
//!   trainer calls apply only when every gradient is finite);
//! - `parameters()`: the dense parameters, state_dict names and shapes.
template <class M>
concept trainable_model = requires(M& m, const M& cm, typename M::workspace& ws, const model_inputs& in,
                                   matrix_view<const float> d) {
  { m.forward(in, ws) } -> std::convertible_to<matrix_view<const float>>;
  m.backward(ws, d);
  { cm.table_gradients_finite(ws) } -> std::convertible_to<bool>;
  m.apply_table_gradients(ws);
  { m.parameters() } -> std::convertible_to<std::vector<parameter*>>;
  { cm.dense_dim() } -> std::convertible_to<std::size_t>;
  { cm.num_sparse_features() } -> std::convertible_to<std::size_t>;
  requires requires { ws.scores; ws.dlogits; };
};

namespace impl {
// The second half of every training step (train_step, train_step_sampled_softmax): only when the
// loss and every dense and table gradient are finite, the dense optimizer step and then the
// tables' row updates; otherwise nothing is written and the step is marked skipped.
template <class Model, class Workspace>
void apply_if_finite(Model& model, Workspace& ws, std::span<parameter* const> params, const dense_step_fn& dense_step,
                     step_result& result) {
  bool finite = std::isfinite(result.loss) && model.table_gradients_finite(ws);
  for (const parameter* p : params) finite = finite && p->grad_is_finite();
  if (!finite) {
    result.skipped = true;
    return;
  }
  if (dense_step) dense_step(params);
  model.apply_table_gradients(ws);
}

// Checks the dense part of model inputs against the model (the sparse count is checked by the
// features' forward, which names the feature).
inline void check_inputs(const char* kind, const model_inputs& in, std::size_t dense_dim, std::size_t num_sparse) {
  if (dense_dim > 0 && (in.dense.rows() != in.batch || in.dense.cols() != dense_dim))
    detail::fail(kind, ": forward: dense must be ", in.batch, " x ", dense_dim, " (got ", in.dense.rows(), " x ",
                 in.dense.cols(), ")");
  if (dense_dim == 0 && in.dense.cols() != 0)
    detail::fail(kind, ": forward: the model has no dense features but dense has ", in.dense.cols(), " columns");
  if (in.sparse.size() != num_sparse)
    detail::fail(kind, ": forward: the model has ", num_sparse, " sparse features but ", in.sparse.size(),
                 " bag inputs were given");
}

// A per-parameter stream: the name picks the stream, so adding a layer does not change the others.
inline std::uint64_t name_seed(std::uint64_t seed, const std::string& name) {
  std::uint64_t h = 1469598103934665603ull;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return math::mix64(seed ^ h);
}
// PyTorch's nn.Linear default: weight and bias uniform(-1/sqrt(in), 1/sqrt(in)).
inline void init_uniform(parameter& p, float bound, std::uint64_t seed) {
  const std::uint64_t stream = name_seed(seed, p.name);
  for (std::size_t i = 0; i < p.value.size(); ++i) p.value[i] = (2.0f * math::uniform_open01(stream, i) - 1.0f) * bound;
}

//! A stack of nn.Linear layers with activations, as models::mlp (names <prefix>{2i}.weight|bias),
//! trained through cpu::mlp_forward_train / cpu::mlp_backward.
class linear_stack {
 public:
  struct trace {
    cpu::mlp_trace mlp;
    matrix<float> output;  // the last layer's output
  };

  linear_stack() = default;
  linear_stack(const std::string& prefix, std::size_t input_dim, const std::vector<std::size_t>& dims, cpu::activation act,
               cpu::activation final_act, std::uint64_t seed) {
    std::size_t in = input_dim;
    for (std::size_t i = 0; i < dims.size(); ++i) {
      const std::string base = prefix + std::to_string(2 * i);
      parameter w(base + ".weight", {dims[i], in}), b(base + ".bias", {dims[i]});
      const float bound = 1.0f / std::sqrt(static_cast<float>(in));
      init_uniform(w, bound, seed);
      init_uniform(b, bound, seed);
      weights_.push_back(std::move(w));
      biases_.push_back(std::move(b));
      acts_.push_back(i + 1 == dims.size() ? final_act : act);
      in = dims[i];
    }
  }

  std::size_t size() const noexcept { return weights_.size(); }
  std::size_t output_dim() const noexcept { return weights_.empty() ? 0 : weights_.back().shape[0]; }
  void collect(std::vector<parameter*>& out) {
    for (std::size_t i = 0; i < weights_.size(); ++i) {
      out.push_back(&weights_[i]);
      out.push_back(&biases_[i]);
    }
  }
  void write(io::safetensors_writer& w) const {
    for (std::size_t i = 0; i < weights_.size(); ++i) {
      w.add(weights_[i].name, std::span<const float>(weights_[i].value), weights_[i].shape);
      w.add(biases_[i].name, std::span<const float>(biases_[i].value), biases_[i].shape);
    }
  }
  std::vector<cpu::linear_layer> layers() const {
    std::vector<cpu::linear_layer> out;
    for (std::size_t i = 0; i < weights_.size(); ++i) out.push_back({weights_[i].matrix(), biases_[i].value, acts_[i]});
    return out;
  }

  //! y = stack(x); returns a view of the output (owned by t).
  matrix_view<const float> forward(matrix_view<const float> x, trace& t) const {
    t.output.resize(x.rows(), output_dim());
    cpu::mlp_forward_train(x, layers(), t.mlp, t.output.view());
    return t.output.view();
  }
  //! Accumulates weight/bias grads; writes dL/dx into dx when dx is not empty (overwrites).
  void backward(const trace& t, matrix_view<const float> dy, matrix_view<float> dx) {
    std::vector<cpu::linear_gradient> grads;
    for (std::size_t i = 0; i < weights_.size(); ++i) grads.push_back({weights_[i].grad_matrix(), biases_[i].grad});
    cpu::mlp_backward(layers(), t.mlp, dy, dx, grads);
  }

  std::vector<parameter> weights_, biases_;
  std::vector<cpu::activation> acts_;
};

//! The sparse features of a model: one trainable table per feature, pooled side by side.
class sparse_features {
 public:
  sparse_features() = default;
  sparse_features(std::vector<std::shared_ptr<trainable_table>> tables, cpu::pooling mode, const char* kind)
      : tables_(std::move(tables)), mode_(mode) {
    for (std::size_t t = 0; t < tables_.size(); ++t) {
      if (!tables_[t]) detail::fail(kind, ": table ", t, " is null");
      total_dim_ += tables_[t]->dim();
    }
  }
  std::size_t size() const noexcept { return tables_.size(); }
  std::size_t total_dim() const noexcept { return total_dim_; }
  cpu::pooling mode() const noexcept { return mode_; }
  const std::vector<std::shared_ptr<trainable_table>>& tables() const noexcept { return tables_; }

  //! Pools every feature into its columns of out [batch, total_dim] (out may be a column block).
  void forward(std::span<const cpu::bag_input> sparse, matrix_view<float> out, const char* kind) const {
    if (sparse.size() != tables_.size())
      detail::fail(kind, ": forward: the model has ", tables_.size(), " sparse features but ", sparse.size(),
                   " bag inputs were given");
    std::size_t column = 0;
    for (std::size_t t = 0; t < tables_.size(); ++t) {
      const std::size_t d = tables_[t]->dim();
      try {
        tables_[t]->pool(sparse[t].ids, sparse[t].offsets, sparse[t].weights, mode_,
                         {out.data() + column, out.rows(), d, out.stride()});
      } catch (const error& e) {
        detail::fail(kind, ": forward: sparse feature ", t, ": ", std::string_view(e.what()).substr(9));
      }
      column += d;
    }
  }

  //! From dL/d pooled [batch, total_dim], the gradient rows of every table (one per unique id).
  void backward(std::span<const cpu::bag_input> sparse, matrix_view<const float> dpooled,
                std::vector<cpu::sparse_gradient>& grads) const {
    grads.resize(tables_.size());
    std::size_t column = 0;
    for (std::size_t t = 0; t < tables_.size(); ++t) {
      const std::size_t d = tables_[t]->dim();
      cpu::embedding_bag_backward(sparse[t].ids, sparse[t].offsets, sparse[t].weights, mode_,
                                  {dpooled.data() + column, dpooled.rows(), d, dpooled.stride()}, grads[t]);
      column += d;
    }
  }

  static bool finite(const std::vector<cpu::sparse_gradient>& grads) {
    for (const cpu::sparse_gradient& g : grads)
      for (float v : g.rows.values())
        if (!std::isfinite(v)) return false;
    return true;
  }
  void apply(std::span<const cpu::sparse_gradient> grads) const {
    for (std::size_t t = 0; t < tables_.size() && t < grads.size(); ++t) {
      tables_[t]->optimizer().begin_step();
      tables_[t]->apply(grads[t].ids, grads[t].rows.view());
    }
  }

 private:
  std::vector<std::shared_ptr<trainable_table>> tables_;
  cpu::pooling mode_ = cpu::pooling::sum;
  std::size_t total_dim_ = 0;
};

}  // namespace impl
}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
