// SPDX-License-Identifier: Apache-2.0
// recpipe train: a trainable dense MLP with one logit (models::mlp's parameters), e.g. a scorer over precomputed features.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/models/mlp.hpp>
#include <recpipe/train/freeze.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/model.hpp>
#include <recpipe/train/parameter.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief A trainable models::mlp over dense features only: `layers.{2i}.weight|bias`, the
//! serving model's names and shapes, `activation` between layers; the last layer must have one
//! output (the logit). `final_activation` applies to the frozen model only (forward() returns
//! logits). For embeddings plus dense features use train::mlp_model.
//!
//! Inputs: model_inputs with dense [batch, input_dim] and no sparse features. Initialisation:
//! nn.Linear's uniform(+-1/sqrt(in)) from `seed`. Not thread-safe (freeze for serving threads).
//! @code
//! recpipe::train::dense_mlp_model model({.input_dim = 32, .dims = {64, 1}}, /*seed=*/1);
//! @endcode
class dense_mlp_model {
 public:
  struct workspace {
    model_inputs inputs;
    impl::linear_stack::trace mlp;
    std::vector<cpu::sparse_gradient> table_grads;  // always empty
    std::vector<float> scores, dlogits;
  };

  dense_mlp_model(models::mlp_config config, std::uint64_t seed) : config_(std::move(config)) {
    config_.validate("train::dense_mlp_model");
    if (config_.dims.back() != 1)
      detail::fail("train::dense_mlp_model: the last layer must have 1 output (one logit), not ", config_.dims.back());
    mlp_ = impl::linear_stack("layers.", config_.input_dim, config_.dims, config_.activation, cpu::activation::none, seed);
  }

  const models::mlp_config& config() const noexcept { return config_; }
  std::size_t dense_dim() const noexcept { return config_.input_dim; }
  std::size_t num_sparse_features() const noexcept { return 0; }
  std::vector<parameter*> parameters() {
    std::vector<parameter*> out;
    mlp_.collect(out);
    return out;
  }
  template <class F>
  void for_each_parameter(F&& f) {
    for (parameter* p : parameters()) f(*p);
  }

  //! Logits [batch, 1] (a view into ws).
  matrix_view<const float> forward(const model_inputs& in, workspace& ws) const {
    impl::check_inputs("train::dense_mlp_model", in, config_.input_dim, 0);
    ws.inputs = in;
    return mlp_.forward(in.dense, ws.mlp);
  }
  void backward(workspace& ws, matrix_view<const float> dlogits) {
    if (dlogits.rows() != ws.inputs.batch || dlogits.cols() != 1 || ws.mlp.output.rows() != ws.inputs.batch)
      detail::fail("train::dense_mlp_model: backward: dlogits must be ", ws.inputs.batch, " x 1 (got ", dlogits.rows(),
                   " x ", dlogits.cols(), "; call forward first)");
    mlp_.backward(ws.mlp, dlogits, {});
  }
  bool table_gradients_finite(const workspace&) const { return true; }
  void apply_table_gradients(workspace&) {}

  //! The serving models::mlp (in-memory safetensors) with the current weights; it outputs
  //! final_activation(logit).
  frozen<models::mlp> freeze() const {
    io::safetensors_writer w;
    mlp_.write(w);
    w.set_metadata("recpipe.model", "mlp");
    w.set_metadata("recpipe.config", config_.to_json().dump());
    frozen<models::mlp> out;
    out.weights = std::make_shared<const io::safetensors_file>(io::safetensors_file::from_bytes(w.to_bytes(), "<frozen mlp>"));
    out.model = models::mlp::load(out.weights, config_);
    return out;
  }

 private:
  models::mlp_config config_;
  impl::linear_stack mlp_;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
