// SPDX-License-Identifier: Apache-2.0
// recpipe train: a trainable two-tower retrieval model (user and item towers over trainable tables).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/math/vector.hpp>
#include <recpipe/models/two_tower.hpp>
#include <recpipe/train/freeze.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/losses.hpp>
#include <recpipe/train/model.hpp>
#include <recpipe/train/parameter.hpp>
#include <recpipe/train/table.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief A trainable two-tower model (models::two_tower's architecture): each tower is
//! x = cat(dense, bags) -> MLP (activation between layers, none after the last) -> optional L2
//! normalisation; score(u, i) = <user(u), item(i)>.
//!
//! **Inputs.** So that train_step and train::trainer can train it pointwise (BCE on
//! logit = score / temperature), one model_inputs holds both sides: dense [batch, user.dense_dim
//! + item.dense_dim] (user columns first) and the user tower's bags followed by the item tower's.
//! For retrieval training with in-batch negatives use train_step_sampled_softmax.
//! **Parameters** (the serving state_dict): `user_tower.mlp.layers.{2i}.weight|bias`,
//! `item_tower.mlp.layers.{2i}.weight|bias`; tables freeze to `<tower>.embeddings.{t}.weight`.
//! **Initialisation**: nn.Linear's default, uniform(+-1/sqrt(in)), from `seed`.
//! `temperature` (> 0) divides the score into the training logit; the frozen model serves the
//! score itself (same ranking).
//! @code
//! recpipe::train::two_tower_model model(config, {user_ids}, {item_ids, genres}, /*seed=*/1, /*temperature=*/0.1f);
//! @endcode
class two_tower_model {
 public:
  //! One tower's activations.
  struct tower_trace {
    matrix<float> x;        // [batch, input_dim]
    impl::linear_stack::trace mlp;
    matrix<float> out;      // [batch, dim] (normalised when the model normalises)
    std::vector<float> norms;
    matrix<float> dout, dx;
  };
  struct workspace {
    model_inputs inputs;
    std::vector<cpu::bag_input> user_bags, item_bags;
    tower_trace user, item;
    matrix<float> logits;
    std::vector<cpu::sparse_gradient> table_grads;  // user tables, then item tables
    std::vector<float> scores, dlogits;
  };

  two_tower_model(models::two_tower_config config, std::vector<std::shared_ptr<trainable_table>> user_tables,
                  std::vector<std::shared_ptr<trainable_table>> item_tables, std::uint64_t seed, float temperature = 1.0f)
      : config_(std::move(config)),
        temperature_(temperature),
        user_(make_tower("user_tower.", config_.user, std::move(user_tables), seed)),
        item_(make_tower("item_tower.", config_.item, std::move(item_tables), seed)) {
    if (config_.user.dims.empty() || config_.item.dims.empty() || config_.user.dims.back() != config_.item.dims.back())
      detail::fail("train::two_tower_model: the towers' last dims must be equal");
    if (!(temperature_ > 0.0f) || !std::isfinite(temperature_))
      detail::fail("train::two_tower_model: temperature must be a finite number > 0 (got ", temperature_, ")");
  }

  const models::two_tower_config& config() const noexcept { return config_; }
  float temperature() const noexcept { return temperature_; }
  std::size_t output_dim() const noexcept { return config_.user.dims.back(); }
  std::size_t dense_dim() const noexcept { return config_.user.dense_dim + config_.item.dense_dim; }
  std::size_t num_sparse_features() const noexcept { return user_.sparse.size() + item_.sparse.size(); }
  std::size_t num_user_features() const noexcept { return user_.sparse.size(); }

  std::vector<parameter*> parameters() {
    std::vector<parameter*> out;
    user_.mlp.collect(out);
    item_.mlp.collect(out);
    return out;
  }
  template <class F>
  void for_each_parameter(F&& f) {
    for (parameter* p : parameters()) f(*p);
  }

  //! Logits [batch, 1] = <user, item> / temperature for paired inputs (see Inputs).
  matrix_view<const float> forward(const model_inputs& in, workspace& ws) const {
    impl::check_inputs("train::two_tower_model", in, dense_dim(), num_sparse_features());
    split(in, ws);
    encode(user_, config_.user, ws.user_bags, user_dense(in), ws.user, in.batch);
    encode(item_, config_.item, ws.item_bags, item_dense(in), ws.item, in.batch);
    ws.logits.resize(in.batch, 1);
    const std::size_t d = output_dim();
    for (std::size_t b = 0; b < in.batch; ++b)
      ws.logits(b, 0) = math::dot(ws.user.out.data() + b * d, ws.item.out.data() + b * d, d) / temperature_;
    return ws.logits.view();
  }

  //! Backward of forward(): accumulates dense gradients, leaves table gradients in ws.
  void backward(workspace& ws, matrix_view<const float> dlogits) {
    const std::size_t batch = ws.inputs.batch, d = output_dim();
    if (dlogits.rows() != batch || dlogits.cols() != 1 || ws.user.out.rows() != batch)
      detail::fail("train::two_tower_model: backward: dlogits must be ", batch, " x 1 (got ", dlogits.rows(), " x ",
                   dlogits.cols(), "; call forward first)");
    ws.user.dout.resize(batch, d);
    ws.item.dout.resize(batch, d);
    for (std::size_t b = 0; b < batch; ++b) {
      const float g = dlogits(b, 0) / temperature_;
      for (std::size_t c = 0; c < d; ++c) {
        ws.user.dout(b, c) = g * ws.item.out(b, c);
        ws.item.dout(b, c) = g * ws.user.out(b, c);
      }
    }
    backward_towers(ws);
  }

  //! @brief Retrieval training loss and backward on a batch of positive (user, item) pairs, after
  //! forward(): train::sampled_softmax over in-batch negatives with log-Q correction (temperature
  //! = the model's). item_ids[b] identifies row b's item (accidental hits are masked); log_q may
  //! be empty. Returns the loss; gradients as backward().
  float backward_sampled_softmax(workspace& ws, std::span<const id_type> item_ids, std::span<const float> log_q) {
    const std::size_t batch = ws.inputs.batch, d = output_dim();
    ws.user.dout.resize(batch, d);
    ws.item.dout.resize(batch, d);
    const float loss = sampled_softmax(ws.user.out.view(), ws.item.out.view(), item_ids, log_q, ws.user.dout.view(),
                                       ws.item.dout.view(), temperature_);
    backward_towers(ws);
    return loss;
  }

  bool table_gradients_finite(const workspace& ws) const { return impl::sparse_features::finite(ws.table_grads); }
  void apply_table_gradients(workspace& ws) {
    const std::span<const cpu::sparse_gradient> all = ws.table_grads;
    user_.sparse.apply(all.first(user_.sparse.size()));
    item_.sparse.apply(all.subspan(user_.sparse.size()));
  }

  //! The immutable serving models::two_tower with the current weights, plus id maps for dynamic
  //! tables: id_maps lists the user tower's features, then the item tower's (the order of
  //! model_inputs here). frozen::forward takes the same combined inputs; to encode one side,
  //! map ids with frozen::map_ids(feature, ids) (item feature t is num_user_features() + t).
  frozen<models::two_tower> freeze() const {
    io::safetensors_writer w;
    models::two_tower_config served = config_;
    frozen<models::two_tower> out;
    export_tower(user_, "user_tower.", served.user, w, out);
    export_tower(item_, "item_tower.", served.item, w, out);
    w.set_metadata("recpipe.model", "two_tower");
    w.set_metadata("recpipe.config", served.to_json().dump());
    out.weights =
        std::make_shared<const io::safetensors_file>(io::safetensors_file::from_bytes(w.to_bytes(), "<frozen two_tower>"));
    out.model = models::two_tower::load(out.weights, served);
    return out;
  }

 private:
  struct tower_parts {
    impl::sparse_features sparse;
    impl::linear_stack mlp;
  };

  static tower_parts make_tower(const std::string& prefix, const models::tower_config& c,
                                std::vector<std::shared_ptr<trainable_table>> tables, std::uint64_t seed) {
    if (c.dims.empty()) detail::fail("train::two_tower_model: ", prefix, " needs at least one MLP layer");
    if (tables.size() != c.tables.size())
      detail::fail("train::two_tower_model: ", prefix, " config lists ", c.tables.size(), " tables but ", tables.size(),
                   " were given");
    for (std::size_t t = 0; t < tables.size(); ++t)
      if (tables[t] && tables[t]->dim() != c.tables[t].dim)
        detail::fail("train::two_tower_model: ", prefix, " table ", t, " has dim ", tables[t]->dim(), " but the config says ",
                     c.tables[t].dim);
    tower_parts parts{impl::sparse_features(std::move(tables), c.pooling, "train::two_tower_model"),
                      impl::linear_stack(prefix + "mlp.layers.", c.input_dim(), c.dims, c.activation, cpu::activation::none, seed)};
    return parts;
  }

  matrix_view<const float> user_dense(const model_inputs& in) const {
    return {in.dense.data(), in.batch, config_.user.dense_dim, in.dense.stride()};
  }
  matrix_view<const float> item_dense(const model_inputs& in) const {
    return {in.dense.data() == nullptr ? nullptr : in.dense.data() + config_.user.dense_dim, in.batch,
            config_.item.dense_dim, in.dense.stride()};
  }
  void split(const model_inputs& in, workspace& ws) const {
    ws.inputs = in;
    const std::size_t nu = user_.sparse.size();
    ws.user_bags.assign(in.sparse.begin(), in.sparse.begin() + static_cast<std::ptrdiff_t>(nu));
    ws.item_bags.assign(in.sparse.begin() + static_cast<std::ptrdiff_t>(nu), in.sparse.end());
  }

  void encode(const tower_parts& t, const models::tower_config& c, std::span<const cpu::bag_input> bags,
              matrix_view<const float> dense, tower_trace& tr, std::size_t batch) const {
    const std::size_t width = c.input_dim();
    tr.x.resize(batch, width);
    if (c.dense_dim > 0) models::impl::copy_columns(dense, tr.x.view());
    t.sparse.forward(bags, {tr.x.data() + c.dense_dim, batch, width - c.dense_dim, width}, "train::two_tower_model");
    const matrix_view<const float> h = t.mlp.forward(tr.x.view(), tr.mlp);
    tr.out.resize(batch, h.cols());
    tr.norms.assign(batch, 1.0f);
    for (std::size_t b = 0; b < batch; ++b) {
      const float* row = h.data() + b * h.stride();
      float* out = tr.out.data() + b * h.cols();
      if (config_.normalize) {
        // As torch.nn.functional.normalize: x / max(||x||, 1e-12).
        tr.norms[b] = std::max(std::sqrt(math::dot(row, row, h.cols())), 1e-12f);
        for (std::size_t c2 = 0; c2 < h.cols(); ++c2) out[c2] = row[c2] / tr.norms[b];
      } else {
        std::copy_n(row, h.cols(), out);
      }
    }
  }

  void backward_tower(tower_parts& t, const models::tower_config& c, std::span<const cpu::bag_input> bags,
                      tower_trace& tr, std::size_t first_grad, std::vector<cpu::sparse_gradient>& grads) {
    const std::size_t batch = tr.out.rows(), d = tr.out.cols();
    if (config_.normalize) {
      // y = h / n: dh = (dy - y <dy, y>) / n (n > 1e-12; at the clamp y = h / 1e-12 and dh = dy / 1e-12).
      for (std::size_t b = 0; b < batch; ++b) {
        float* g = tr.dout.data() + b * d;
        const float* y = tr.out.data() + b * d;
        const float projection = tr.norms[b] > 1e-12f ? math::dot(g, y, d) : 0.0f;
        for (std::size_t k = 0; k < d; ++k) g[k] = (g[k] - y[k] * projection) / tr.norms[b];
      }
    }
    const std::size_t width = c.input_dim();
    tr.dx.resize(batch, width);
    t.mlp.backward(tr.mlp, tr.dout.view(), tr.dx.view());
    std::vector<cpu::sparse_gradient> mine;
    t.sparse.backward(bags, {tr.dx.data() + c.dense_dim, batch, width - c.dense_dim, width}, mine);
    for (std::size_t k = 0; k < mine.size(); ++k) grads[first_grad + k] = std::move(mine[k]);
  }
  void backward_towers(workspace& ws) {
    ws.table_grads.resize(num_sparse_features());
    backward_tower(user_, config_.user, ws.user_bags, ws.user, 0, ws.table_grads);
    backward_tower(item_, config_.item, ws.item_bags, ws.item, user_.sparse.size(), ws.table_grads);
  }

  static void export_tower(const tower_parts& t, const std::string& prefix, models::tower_config& served,
                           io::safetensors_writer& w, frozen<models::two_tower>& out) {
    for (std::size_t k = 0; k < t.sparse.size(); ++k) {
      table_export e = export_table(*t.sparse.tables()[k]);
      served.tables[k].rows = e.rows.rows();
      w.add(prefix + "embeddings." + std::to_string(k) + ".weight", e.rows.view());
      out.id_maps.push_back(std::move(e.ids));
    }
    t.mlp.write(w);
  }

  models::two_tower_config config_;
  float temperature_;
  tower_parts user_, item_;
};

//! @brief One retrieval training step of a two_tower_model on a batch of positive pairs: zero
//! grads, forward, sampled softmax with in-batch negatives (log-Q corrected; item_ids for
//! accidental hits), backward, and only if every gradient is finite the dense and table steps.
//! Labels of the batch are ignored. An empty batch does nothing (loss NaN).
//! @code
//! auto r = recpipe::train::train_step_sampled_softmax(model, ws, pairs, item_ids, log_q, step);
//! @endcode
inline step_result train_step_sampled_softmax(two_tower_model& model, two_tower_model::workspace& ws,
                                              example_batch& batch, std::span<const id_type> item_ids,
                                              std::span<const float> log_q, const dense_step_fn& dense_step) {
  step_result result;
  result.examples = batch.size();
  if (batch.empty()) {
    result.loss = std::numeric_limits<float>::quiet_NaN();
    return result;
  }
  const std::vector<parameter*> params = model.parameters();
  for (parameter* p : params) p->zero_grad();
  model.forward(batch.inputs(), ws);
  result.loss = model.backward_sampled_softmax(ws, item_ids, log_q);
  impl::apply_if_finite(model, ws, params, dense_step, result);
  return result;
}

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
