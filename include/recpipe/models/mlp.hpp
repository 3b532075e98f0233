// SPDX-License-Identifier: Apache-2.0
// recpipe models: a multi-layer perceptron loaded from PyTorch weights.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/isa.hpp>
#include <recpipe/cpu/packed_gemm.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/models/parameters.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace models {

//! @brief Shape of an MLP: `dims.size()` linear layers of widths `dims`, `activation` after every
//! layer but the last, `final_activation` after the last.
//!
//! JSON (metadata "recpipe.config"): `{"input_dim": 32, "dims": [64, 32, 8],
//! "activation": "relu", "final_activation": "none"}`; activations are none, relu, gelu,
//! gelu_tanh, sigmoid.
struct mlp_config {
  std::size_t input_dim = 0;
  std::vector<std::size_t> dims;
  cpu::activation activation = cpu::activation::relu;
  cpu::activation final_activation = cpu::activation::none;

  //! Parses and validates a JSON config; throws recpipe::error naming the bad field.
  static mlp_config from_json(const nlohmann::json& j, const char* kind = "mlp") {
    mlp_config c;
    c.input_dim = impl::size_field(j, kind, "input_dim");
    c.dims = impl::sizes_field(j, kind, "dims");
    c.activation = impl::parse_activation(impl::string_field(j, kind, "activation", "relu"), kind);
    c.final_activation = impl::parse_activation(impl::string_field(j, kind, "final_activation", "none"), kind);
    c.validate(kind);
    return c;
  }
  nlohmann::json to_json() const {
    return {{"model", "mlp"}, {"input_dim", input_dim}, {"dims", dims},
            {"activation", impl::activation_name(activation)}, {"final_activation", impl::activation_name(final_activation)}};
  }
  void validate(const char* kind = "mlp") const {
    if (input_dim == 0) detail::fail(kind, ": config: input_dim must be at least 1");
    if (dims.empty()) detail::fail(kind, ": config: dims must name at least one layer");
    for (std::size_t d : dims)
      if (d == 0) detail::fail(kind, ": config: every entry of dims must be at least 1");
  }
};

//! @brief A stack of `nn.Linear` layers, as the reference module
//! `nn.Sequential(Linear, act, Linear, act, ..., Linear[, final act])`.
//!
//! Parameters (state_dict names after the prefix): `layers.{2i}.weight` [dims[i], in_i] and
//! `layers.{2i}.bias` [dims[i]] — the Linear modules sit at even Sequential indices with an
//! activation module (or nn.Identity) between them, as in facebookresearch/dlrm's create_mlp.
//!
//! Shapes: forward(x [batch, input_dim]) -> y [batch, dims.back()].
//! Thread safety: forward is const and may run on many threads at once.
//! @code
//! auto model = recpipe::models::mlp::load("mlp.safetensors");          // config from metadata
//! recpipe::matrix<float> y(x.rows(), model.output_dim());
//! model.forward(x.view(), y.view());
//! @endcode
class mlp {
 public:
  //! Loads weights and config (from the metadata) from a file.
  static mlp load(const std::filesystem::path& path, const load_options& options = {}) {
    return load(open_weights(path), options);
  }
  static mlp load(std::shared_ptr<const io::safetensors_file> file, const load_options& options = {}) {
    const nlohmann::json j = impl::config_from_metadata(*file, "mlp", options.prefix);
    return load(std::move(file), mlp_config::from_json(j), options);
  }
  //! Loads weights for a config given in code.
  static mlp load(std::shared_ptr<const io::safetensors_file> file, const mlp_config& config,
                  const load_options& options = {}) {
    parameter_set params(std::move(file), "mlp", options);
    mlp model = from_parameters(params, "layers.", config);
    model.storage_ = params.finish();
    return model;
  }

  //! Builds the layers from `params`, names `<sequential_prefix>{2i}.weight|bias` (used by the
  //! composite models for their MLP parts, e.g. "bot_l." in DLRM). The caller keeps the storage.
  static mlp from_parameters(parameter_set& params, const std::string& sequential_prefix, const mlp_config& config) {
    config.validate(params.component().c_str());
    mlp model;
    model.config_ = config;
    std::size_t in = config.input_dim;
    for (std::size_t i = 0; i < config.dims.size(); ++i) {
      const std::string base = sequential_prefix + std::to_string(2 * i);
      const bool last = i + 1 == config.dims.size();
      model.layers_.push_back({params.matrix(base + ".weight", config.dims[i], in), params.vector(base + ".bias", config.dims[i]),
                               last ? config.final_activation : config.activation});
      in = config.dims[i];
    }
    // Pack the weights once here: on AVX-512 CPUs every forward then runs the packed GEMM (no
    // per-call repacking of the weights, as cblas_sgemm does). The packed copy costs as much
    // memory again as the weights; the views stay for the portable path and layers().
    auto packed = std::make_shared<std::vector<cpu::packed_linear>>();
    packed->reserve(model.layers_.size());
    for (const cpu::linear_layer& layer : model.layers_) packed->emplace_back(layer.weight);
    model.packed_ = std::move(packed);
    return model;
  }

  const mlp_config& config() const noexcept { return config_; }
  //! @brief The weights this model was loaded from (shared by its copies; null for a model not
  //! loaded from a file). Loaded weights never change, so this pointer identifies them: the CUDA
  //! backend keys its device copy of the model by it (cuda/model_cache.hpp).
  std::shared_ptr<const parameter_storage> storage() const noexcept { return storage_; }
  std::size_t input_dim() const noexcept { return config_.input_dim; }
  std::size_t output_dim() const noexcept { return config_.dims.back(); }
  //! The layers, as cpu::mlp takes them (views into the mapped weights).
  std::span<const cpu::linear_layer> layers() const noexcept { return layers_; }

  //! @brief y = MLP(x).
  //! @param x  [batch, input_dim] (any stride)
  //! @param y  [batch, output_dim] (any stride; may be a column block of a wider matrix); must not
  //!           overlap x.
  //! @param ws scratch for the hidden activations (see cpu::workspace); the calling thread's by default.
  //! @throws recpipe::error naming the argument whose shape disagrees.
  void forward(matrix_view<const float> x, matrix_view<float> y, cpu::workspace& ws = cpu::workspace::for_this_thread()) const {
    if (x.cols() != input_dim())
      detail::fail("mlp: forward: x has ", x.cols(), " columns but the model's input_dim is ", input_dim());
    if (y.rows() != x.rows() || y.cols() != output_dim())
      detail::fail("mlp: forward: y must be ", x.rows(), " x ", output_dim(), " (got ", y.rows(), " x ", y.cols(), ")");
    const std::size_t floats = cpu::mlp_scratch_size(x.rows(), layers_);
    const cpu::workspace::frame frame(ws);
    const std::span<float> scratch = ws.take<float>(floats);
    if (!packed_ || cpu::active_isa() != cpu::isa::avx512) return cpu::mlp(x, layers_, y, scratch);
    // The packed path: the same ping-pong through scratch as cpu::mlp, bias added in the GEMM's
    // register tile, the activation as a pass over the (cache-resident) output.
    const std::size_t half = scratch.size() / 2;
    matrix_view<const float> input = x;
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const bool last = i + 1 == layers_.size();
      const std::size_t width = layers_[i].weight.rows();
      const matrix_view<float> output = last ? y : matrix_view<float>(scratch.data() + (i % 2) * half, x.rows(), width);
      cpu::linear(input, (*packed_)[i], layers_[i].bias, output);
      cpu::impl::bias_activation(output, nullptr, layers_[i].act);
      input = output;
    }
  }

 private:
  mlp_config config_;
  std::vector<cpu::linear_layer> layers_;
  std::shared_ptr<const std::vector<cpu::packed_linear>> packed_;  // shared: copies of the model reuse it
  std::shared_ptr<const parameter_storage> storage_;  // null when owned by a composite model
};

}  // namespace models
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
