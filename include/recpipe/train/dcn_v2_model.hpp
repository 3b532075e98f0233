// SPDX-License-Identifier: Apache-2.0
// recpipe train: a trainable DCN-v2 (cross network, deep network, linear head) over trainable tables.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/cross.hpp>
#include <recpipe/cpu/cross_backward.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/models/dcn_v2.hpp>
#include <recpipe/train/freeze.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/model.hpp>
#include <recpipe/train/parameter.hpp>
#include <recpipe/train/table.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief A trainable DCN-v2 (models::dcn_v2's architecture): x0 = cat(dense, bag_0, ...);
//! cross layers x_{l+1} = x0 * (W_l x_l + b_l) + x_l (full rank, or W_l = up_l down_l);
//! a deep ReLU MLP; a linear head to one logit.
//!
//! **Config.** models::dcn_v2_config. `tables[t].dim` must equal the dim of table t; `rows` is
//! only a record (a dynamic table has no fixed row count; freeze() writes the real one).
//! `sigmoid` applies to the frozen serving model only: forward() always returns logits.
//! **Parameters** (the serving model's state_dict names and shapes): `cross.{l}.weight` [d, d]
//! or `cross.{l}.down.weight` [r, d] and `cross.{l}.up.weight` [d, r], `cross.{l}.bias` [d];
//! `deep.layers.{2i}.weight|bias`; `head.weight` [1, head_in], `head.bias` [1]. Tables are the
//! `embeddings.{t}.weight` of the serving model (trained by their own row optimizers).
//! **Initialisation** (deterministic from `seed`, as tools/reference_models.py's DCNv2): cross
//! weights Xavier-uniform (low rank: nn.Linear's uniform(+-1/sqrt(in))), cross biases
//! uniform(-0.1, 0.1), Linear layers uniform(+-1/sqrt(in)) for weight and bias.
//! **Bad input.** Mismatched shapes or feature counts and ids a fixed table does not hold throw
//! recpipe::error naming the feature. NaN features give NaN logits and gradients: train_step
//! then skips the step (the trainer drops such events before).
//! Not thread-safe: one forward/backward at a time (freeze for serving threads).
//! @code
//! models::dcn_v2_config c{.dense_dim = 0, .tables = {{1000, 16}, {500, 16}}, .cross_layers = 2, .deep = {64, 32}};
//! recpipe::train::dcn_v2_model model(c, {users, items}, /*seed=*/1);
//! recpipe::train::dcn_v2_model::workspace ws;
//! auto logits = model.forward(batch.inputs(), ws);
//! @endcode
class dcn_v2_model {
 public:
  //! Activations of one forward pass, kept for backward; reuse it across steps (no allocation
  //! once it has seen the largest batch).
  struct workspace {
    model_inputs inputs;
    matrix<float> x0;                 // [batch, d]
    cpu::cross_trace cross;
    matrix<float> crossed;            // x_L [batch, d]
    impl::linear_stack::trace deep;
    matrix<float> head_in;            // parallel: [cross | deep]
    matrix<float> logits;             // [batch, 1]
    matrix<float> dhead_in, dx0, dx0_deep, dcrossed;
    std::vector<cpu::sparse_gradient> table_grads;  // per table: unique ids and their gradient rows
    std::vector<float> scores, dlogits;  // the trainer's loss buffers
  };

  dcn_v2_model(models::dcn_v2_config config, std::vector<std::shared_ptr<trainable_table>> tables, std::uint64_t seed)
      : config_(std::move(config)), sparse_(std::move(tables), config_.pooling, "train::dcn_v2_model") {
    config_.validate();
    if (sparse_.size() != config_.tables.size())
      detail::fail("train::dcn_v2_model: the config lists ", config_.tables.size(), " tables but ", sparse_.size(),
                   " were given");
    for (std::size_t t = 0; t < sparse_.size(); ++t)
      if (sparse_.tables()[t]->dim() != config_.tables[t].dim)
        detail::fail("train::dcn_v2_model: table ", t, " has dim ", sparse_.tables()[t]->dim(), " but the config says ",
                     config_.tables[t].dim);
    const std::size_t d = config_.input_dim();
    for (std::size_t l = 0; l < config_.cross_layers; ++l) {
      const std::string base = "cross." + std::to_string(l) + ".";
      cross_layer layer;
      if (config_.rank == 0) {
        layer.weight = parameter(base + "weight", {d, d});
        impl::init_uniform(layer.weight, std::sqrt(6.0f / static_cast<float>(2 * d)), seed);
      } else {
        layer.down = parameter(base + "down.weight", {config_.rank, d});
        layer.up = parameter(base + "up.weight", {d, config_.rank});
        impl::init_uniform(layer.down, 1.0f / std::sqrt(static_cast<float>(d)), seed);
        impl::init_uniform(layer.up, 1.0f / std::sqrt(static_cast<float>(config_.rank)), seed);
      }
      layer.bias = parameter(base + "bias", {d});
      impl::init_uniform(layer.bias, 0.1f, seed);
      cross_.push_back(std::move(layer));
    }
    deep_ = impl::linear_stack("deep.layers.", d, config_.deep, cpu::activation::relu, cpu::activation::relu, seed);
    const std::size_t head_in = config_.head_input_dim();
    head_weight_ = parameter("head.weight", {1, head_in});
    head_bias_ = parameter("head.bias", {1});
    const float bound = 1.0f / std::sqrt(static_cast<float>(head_in));
    impl::init_uniform(head_weight_, bound, seed);
    impl::init_uniform(head_bias_, bound, seed);
  }

  const models::dcn_v2_config& config() const noexcept { return config_; }
  std::size_t dense_dim() const noexcept { return config_.dense_dim; }
  std::size_t num_sparse_features() const noexcept { return sparse_.size(); }
  const std::vector<std::shared_ptr<trainable_table>>& tables() const noexcept { return sparse_.tables(); }

  //! The dense parameters in state_dict order (cross, deep, head).
  std::vector<parameter*> parameters() {
    std::vector<parameter*> out;
    for (cross_layer& l : cross_) {
      if (config_.rank == 0) {
        out.push_back(&l.weight);
      } else {
        out.push_back(&l.down);
        out.push_back(&l.up);
      }
      out.push_back(&l.bias);
    }
    deep_.collect(out);
    out.push_back(&head_weight_);
    out.push_back(&head_bias_);
    return out;
  }
  //! Calls f(parameter&) for every dense parameter.
  template <class F>
  void for_each_parameter(F&& f) {
    for (parameter* p : parameters()) f(*p);
  }

  //! Logits [batch, 1] (a view into ws). Keeps the activations (and a view of `in`) in ws.
  //! @throws recpipe::error for shapes that do not match the config, bad offsets, bad ids.
  matrix_view<const float> forward(const model_inputs& in, workspace& ws) const {
    const std::size_t batch = in.batch, d = config_.input_dim(), dd = config_.dense_dim;
    impl::check_inputs("train::dcn_v2_model", in, dd, sparse_.size());
    ws.inputs = in;
    ws.x0.resize(batch, d);
    if (dd > 0) models::impl::copy_columns(in.dense, ws.x0.view());
    sparse_.forward(in.sparse, {ws.x0.data() + dd, batch, d - dd, d}, "train::dcn_v2_model");
    // Cross stack (zero layers: x_L = x0).
    ws.crossed.resize(batch, d);
    cpu::cross_network_forward_train(ws.x0.view(), cross_params(), ws.cross, ws.crossed.view());
    const matrix_view<const float> xl = ws.crossed.view();
    ws.logits.resize(batch, 1);
    if (config_.structure == models::dcn_structure::stacked) {
      const matrix_view<const float> h = deep_.forward(xl, ws.deep);
      cpu::linear(h, head_weight_.matrix(), head_bias_.value, ws.logits.view());
    } else {
      const matrix_view<const float> h = deep_.forward(ws.x0.view(), ws.deep);
      const std::size_t width = d + h.cols();
      ws.head_in.resize(batch, width);
      models::impl::copy_columns(xl, ws.head_in.view());
      models::impl::copy_columns(h, {ws.head_in.data() + d, batch, h.cols(), width});
      cpu::linear(ws.head_in.view(), head_weight_.matrix(), head_bias_.value, ws.logits.view());
    }
    return ws.logits.view();
  }

  //! Accumulates the dense gradients from dlogits [batch, 1]; leaves the table gradients in ws.
  void backward(workspace& ws, matrix_view<const float> dlogits) {
    const std::size_t batch = ws.inputs.batch, d = config_.input_dim();
    if (dlogits.rows() != batch || dlogits.cols() != 1)
      detail::fail("train::dcn_v2_model: backward: dlogits must be ", batch, " x 1 (got ", dlogits.rows(), " x ",
                   dlogits.cols(), "; call forward first)");
    const bool stacked = config_.structure == models::dcn_structure::stacked;
    const matrix_view<const float> head_in =
        stacked ? matrix_view<const float>(ws.deep.output.view()) : matrix_view<const float>(ws.head_in.view());
    // Head: dW += dlogits^T h, db += sum dlogits, dh = dlogits W.
    cpu::gemm(true, false, dlogits, head_in, head_weight_.grad_matrix(), 1.0f, 1.0f);
    for (std::size_t b = 0; b < batch; ++b) head_bias_.grad[0] += dlogits(b, 0);
    ws.dhead_in.resize(batch, head_in.cols());
    cpu::gemm(false, false, dlogits, head_weight_.matrix(), ws.dhead_in.view());
    ws.dx0.resize(batch, d);
    // dL/d x_L: through the deep network (stacked), or the head's first d columns (parallel).
    matrix_view<const float> dcrossed(ws.dhead_in.data(), batch, d, head_in.cols());
    if (stacked) {
      ws.dcrossed.resize(batch, d);
      deep_.backward(ws.deep, ws.dhead_in.view(), ws.dcrossed.view());
      dcrossed = ws.dcrossed.view();
    }
    // Cross stack: dL/d x0 through every layer and the residual chain.
    std::vector<cpu::cross_gradient> grads;
    for (cross_layer& l : cross_) {
      if (config_.rank == 0)
        grads.push_back({l.weight.grad_matrix(), {}, {}, l.bias.grad});
      else
        grads.push_back({{}, l.down.grad_matrix(), l.up.grad_matrix(), l.bias.grad});
    }
    cpu::cross_network_backward(cross_params(), ws.cross, dcrossed, ws.dx0.view(), grads);
    if (!stacked) {  // the deep network reads x0 too
      const std::size_t deep_out = head_in.cols() - d;
      ws.dx0_deep.resize(batch, d);
      deep_.backward(ws.deep, {ws.dhead_in.data() + d, batch, deep_out, head_in.cols()}, ws.dx0_deep.view());
      cpu::add(ws.dx0.view(), ws.dx0_deep.view());
    }
    const std::size_t dd = config_.dense_dim;
    sparse_.backward(ws.inputs.sparse, {ws.dx0.data() + dd, batch, d - dd, d}, ws.table_grads);
  }

  bool table_gradients_finite(const workspace& ws) const { return impl::sparse_features::finite(ws.table_grads); }
  //! One row-optimizer step per table over the rows the last backward touched.
  void apply_table_gradients(workspace& ws) { sparse_.apply(ws.table_grads); }

  //! The immutable serving model with the current weights: models::dcn_v2 loaded from an
  //! in-memory safetensors image (so serving runs its own forward code), plus the id maps of
  //! dynamic tables (see train::frozen). The config's `sigmoid` decides whether it outputs
  //! probabilities or logits.
  frozen<models::dcn_v2> freeze() const {
    io::safetensors_writer w;
    models::dcn_v2_config served = config_;
    frozen<models::dcn_v2> out;
    for (std::size_t t = 0; t < sparse_.size(); ++t) {
      table_export e = export_table(*sparse_.tables()[t]);
      served.tables[t].rows = e.rows.rows();
      w.add("embeddings." + std::to_string(t) + ".weight", e.rows.view());
      out.id_maps.push_back(std::move(e.ids));
    }
    for (const cross_layer& l : cross_) {
      if (config_.rank == 0) {
        add(w, l.weight);
      } else {
        add(w, l.down);
        add(w, l.up);
      }
      add(w, l.bias);
    }
    deep_.write(w);
    add(w, head_weight_);
    add(w, head_bias_);
    w.set_metadata("recpipe.model", "dcn_v2");
    w.set_metadata("recpipe.config", served.to_json().dump());
    out.weights = std::make_shared<const io::safetensors_file>(io::safetensors_file::from_bytes(w.to_bytes(), "<frozen dcn_v2>"));
    out.model = models::dcn_v2::load(out.weights, served);
    return out;
  }

 private:
  struct cross_layer {
    parameter weight, down, up, bias;  // full rank: weight; low rank: down, up (the others stay empty)
  };
  std::vector<cpu::cross_params> cross_params() const {
    std::vector<cpu::cross_params> out;
    for (const cross_layer& l : cross_) {
      cpu::cross_params p;
      if (config_.rank == 0)
        p.weight = l.weight.matrix();
      else {
        p.down = l.down.matrix();
        p.up = l.up.matrix();
      }
      p.bias = l.bias.value;
      out.push_back(p);
    }
    return out;
  }
  static void add(io::safetensors_writer& w, const parameter& p) { w.add(p.name, std::span<const float>(p.value), p.shape); }

  models::dcn_v2_config config_;
  impl::sparse_features sparse_;
  std::vector<cross_layer> cross_;
  impl::linear_stack deep_;
  parameter head_weight_, head_bias_;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
