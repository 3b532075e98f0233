// SPDX-License-Identifier: Apache-2.0
// recpipe train: a trainable DLRM (bottom MLP, embedding bags, dot interaction, top MLP) over trainable tables.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
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
#include <recpipe/models/dlrm.hpp>
#include <recpipe/train/freeze.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/model.hpp>
#include <recpipe/train/parameter.hpp>
#include <recpipe/train/table.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief A trainable DLRM (models::dlrm's architecture, facebookresearch/dlrm's DLRM_Net with
//! the dot interaction): x = bot_l(dense); T = [x, bag_0, ...] (sum pooling); z = pairwise dots
//! of T; logit = top_l(cat(x, z)).
//!
//! **Config.** models::dlrm_config with `top.back() == 1` (one logit). `table_rows` is only a
//! record (freeze() writes the real row counts); every table's dim must equal `embedding_dim`.
//! `final_activation` applies to the frozen serving model only: forward() returns logits (the
//! top MLP's last layer without activation).
//! **Parameters** (DLRM_Net's state_dict names and shapes): `bot_l.{2i}.weight|bias`,
//! `top_l.{2i}.weight|bias`; tables freeze to `emb_l.{t}.weight`.
//! **Initialisation** (deterministic from `seed`): nn.Linear's default, uniform(+-1/sqrt(in))
//! for weight and bias.
//! **Bad input** as dcn_v2_model: shapes and ids throw naming the feature; NaN features give NaN
//! gradients and train_step skips the step.
//! Not thread-safe: one forward/backward at a time (freeze for serving threads).
//! @code
//! models::dlrm_config c{.dense_dim = 4, .embedding_dim = 16, .bottom = {32, 16}, .table_rows = {0, 0},
//!                       .top = {32, 1}};
//! recpipe::train::dlrm_model model(c, {users, items}, /*seed=*/1);
//! @endcode
class dlrm_model {
 public:
  //! Activations of one forward pass, kept for backward.
  struct workspace {
    model_inputs inputs;
    impl::linear_stack::trace bottom, top;
    matrix<float> features;  // [batch, F * d] = [x | bag_0 | ...]
    matrix<float> top_in;    // [batch, d + pairs] = [x | z]
    matrix<float> dtop_in, dfeatures, dbottom;
    std::vector<cpu::sparse_gradient> table_grads;
    std::vector<float> scores, dlogits;
  };

  dlrm_model(models::dlrm_config config, std::vector<std::shared_ptr<trainable_table>> tables, std::uint64_t seed)
      : config_(std::move(config)), sparse_(std::move(tables), cpu::pooling::sum, "train::dlrm_model") {
    config_.validate();
    if (config_.top.back() != 1)
      detail::fail("train::dlrm_model: the top MLP must end in 1 output (one logit), not ", config_.top.back());
    if (sparse_.size() != config_.table_rows.size())
      detail::fail("train::dlrm_model: the config lists ", config_.table_rows.size(), " tables but ", sparse_.size(),
                   " were given");
    for (std::size_t t = 0; t < sparse_.size(); ++t)
      if (sparse_.tables()[t]->dim() != config_.embedding_dim)
        detail::fail("train::dlrm_model: table ", t, " has dim ", sparse_.tables()[t]->dim(), " but embedding_dim is ",
                     config_.embedding_dim);
    bottom_ = impl::linear_stack("bot_l.", config_.dense_dim, config_.bottom, cpu::activation::relu, cpu::activation::relu, seed);
    top_ = impl::linear_stack("top_l.", config_.top_input_dim(), config_.top, cpu::activation::relu, cpu::activation::none, seed);
  }

  const models::dlrm_config& config() const noexcept { return config_; }
  std::size_t dense_dim() const noexcept { return config_.dense_dim; }
  std::size_t num_sparse_features() const noexcept { return sparse_.size(); }
  const std::vector<std::shared_ptr<trainable_table>>& tables() const noexcept { return sparse_.tables(); }

  //! The dense parameters in state_dict order (bot_l, top_l).
  std::vector<parameter*> parameters() {
    std::vector<parameter*> out;
    bottom_.collect(out);
    top_.collect(out);
    return out;
  }
  template <class F>
  void for_each_parameter(F&& f) {
    for (parameter* p : parameters()) f(*p);
  }

  //! Logits [batch, 1] (a view into ws); keeps the activations (and a view of `in`) in ws.
  matrix_view<const float> forward(const model_inputs& in, workspace& ws) const {
    const std::size_t batch = in.batch, d = config_.embedding_dim, f = config_.num_features();
    impl::check_inputs("train::dlrm_model", in, config_.dense_dim, sparse_.size());
    ws.inputs = in;
    ws.features.resize(batch, f * d);
    const matrix_view<const float> x = bottom_.forward(in.dense, ws.bottom);
    models::impl::copy_columns(x, ws.features.view());
    sparse_.forward(in.sparse, {ws.features.data() + d, batch, (f - 1) * d, f * d}, "train::dlrm_model");
    const std::size_t width = config_.top_input_dim();
    ws.top_in.resize(batch, width);
    models::impl::copy_columns(x, ws.top_in.view());
    cpu::dot_interaction(ws.features.view(), f, config_.self_interaction, {ws.top_in.data() + d, batch, width - d, width});
    return top_.forward(ws.top_in.view(), ws.top);
  }

  //! Accumulates the dense gradients from dlogits [batch, 1]; leaves the table gradients in ws.
  void backward(workspace& ws, matrix_view<const float> dlogits) {
    const std::size_t batch = ws.inputs.batch, d = config_.embedding_dim, f = config_.num_features();
    if (dlogits.rows() != batch || dlogits.cols() != 1 || ws.top_in.rows() != batch)
      detail::fail("train::dlrm_model: backward: dlogits must be ", batch, " x 1 (got ", dlogits.rows(), " x ",
                   dlogits.cols(), "; call forward first)");
    const std::size_t width = config_.top_input_dim();
    ws.dtop_in.resize(batch, width);
    top_.backward(ws.top, dlogits, ws.dtop_in.view());
    ws.dfeatures.resize(batch, f * d);
    cpu::dot_interaction_backward(ws.features.view(), f, config_.self_interaction,
                                  {ws.dtop_in.data() + d, batch, width - d, width}, ws.dfeatures.view());
    // x reaches the top MLP directly and through the interaction.
    ws.dbottom.resize(batch, d);
    for (std::size_t r = 0; r < batch; ++r)
      for (std::size_t c = 0; c < d; ++c) ws.dbottom(r, c) = ws.dfeatures(r, c) + ws.dtop_in(r, c);
    bottom_.backward(ws.bottom, ws.dbottom.view(), {});
    sparse_.backward(ws.inputs.sparse, {ws.dfeatures.data() + d, batch, (f - 1) * d, f * d}, ws.table_grads);
  }

  bool table_gradients_finite(const workspace& ws) const { return impl::sparse_features::finite(ws.table_grads); }
  void apply_table_gradients(workspace& ws) { sparse_.apply(ws.table_grads); }

  //! The immutable serving models::dlrm with the current weights (in-memory safetensors), plus
  //! the id maps of dynamic tables (see train::frozen). Outputs final_activation(logit).
  frozen<models::dlrm> freeze() const {
    io::safetensors_writer w;
    models::dlrm_config served = config_;
    frozen<models::dlrm> out;
    for (std::size_t t = 0; t < sparse_.size(); ++t) {
      table_export e = export_table(*sparse_.tables()[t]);
      served.table_rows[t] = e.rows.rows();
      w.add("emb_l." + std::to_string(t) + ".weight", e.rows.view());
      out.id_maps.push_back(std::move(e.ids));
    }
    bottom_.write(w);
    top_.write(w);
    w.set_metadata("recpipe.model", "dlrm");
    w.set_metadata("recpipe.config", served.to_json().dump());
    out.weights = std::make_shared<const io::safetensors_file>(io::safetensors_file::from_bytes(w.to_bytes(), "<frozen dlrm>"));
    out.model = models::dlrm::load(out.weights, served);
    return out;
  }

 private:
  models::dlrm_config config_;
  impl::sparse_features sparse_;
  impl::linear_stack bottom_, top_;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
