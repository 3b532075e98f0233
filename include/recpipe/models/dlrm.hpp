// SPDX-License-Identifier: Apache-2.0
// recpipe models: DLRM (bottom MLP, embedding bags, dot interaction, top MLP).
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
#include <recpipe/cpu/cross.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/models/mlp.hpp>
#include <recpipe/models/parameters.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace models {

//! @brief Config of a DLRM. JSON: `{"dense_dim": 13, "embedding_dim": 16, "bottom": [64, 16],
//! "table_rows": [1000, 500], "top": [64, 32, 1], "self_interaction": false,
//! "final_activation": "sigmoid"}`. bottom.back() must equal embedding_dim.
struct dlrm_config {
  std::size_t dense_dim = 0;
  std::size_t embedding_dim = 0;
  std::vector<std::size_t> bottom;
  std::vector<std::size_t> table_rows;
  std::vector<std::size_t> top;
  bool self_interaction = false;
  cpu::activation final_activation = cpu::activation::sigmoid;

  static dlrm_config from_json(const nlohmann::json& j) {
    const char* kind = "dlrm";
    dlrm_config c;
    c.dense_dim = impl::size_field(j, kind, "dense_dim");
    c.embedding_dim = impl::size_field(j, kind, "embedding_dim");
    c.bottom = impl::sizes_field(j, kind, "bottom");
    c.table_rows = impl::sizes_field(j, kind, "table_rows");
    c.top = impl::sizes_field(j, kind, "top");
    c.self_interaction = impl::bool_field(j, kind, "self_interaction", false);
    c.final_activation = impl::parse_activation(impl::string_field(j, kind, "final_activation", "sigmoid"), kind);
    c.validate();
    return c;
  }
  nlohmann::json to_json() const {
    return {{"model", "dlrm"}, {"dense_dim", dense_dim}, {"embedding_dim", embedding_dim}, {"bottom", bottom},
            {"table_rows", table_rows}, {"top", top}, {"self_interaction", self_interaction},
            {"final_activation", impl::activation_name(final_activation)}};
  }
  void validate() const {
    if (dense_dim == 0 || embedding_dim == 0) detail::fail("dlrm: config: dense_dim and embedding_dim must be at least 1");
    if (bottom.empty() || top.empty()) detail::fail("dlrm: config: bottom and top need at least one layer each");
    if (bottom.back() != embedding_dim)
      detail::fail("dlrm: config: the bottom MLP ends at ", bottom.back(), " but embedding_dim is ", embedding_dim,
                   " (the interaction needs them equal)");
  }
  //! Features entering the interaction: the bottom output plus one per table.
  std::size_t num_features() const { return table_rows.size() + 1; }
  //! Width of the top MLP input: embedding_dim + number of interaction pairs.
  std::size_t top_input_dim() const { return embedding_dim + cpu::interaction_size(num_features(), self_interaction); }
};

//! @brief DLRM (Naumov et al. 2019) with the dot interaction, as facebookresearch/dlrm's
//! `DLRM_Net` (arch_interaction_op="dot"): x = bot_l(dense); T = [x, bag_0, ..., bag_{n-1}];
//! z = the pairwise dots of T (i > j, plus i == j with self_interaction); out = top_l(cat(x, z)).
//!
//! Parameters (same names as DLRM_Net, so its checkpoints map directly): `bot_l.{2i}.weight|bias`,
//! `emb_l.{t}.weight` [rows_t, embedding_dim] (sum pooling), `top_l.{2i}.weight|bias`. The bottom
//! MLP has ReLU after every layer; the top has ReLU between layers and final_activation last.
//!
//! Shapes: forward(dense [batch, dense_dim], sparse: one cpu::bag_input per table, out [batch, top.back()]).
//! Thread safety: forward is const and may run on many threads at once.
//! @code
//! auto model = recpipe::models::dlrm::load("dlrm.safetensors");
//! recpipe::matrix<float> ctr(batch, 1);
//! model.forward(dense.view(), bags, ctr.view());
//! @endcode
class dlrm {
 public:
  static dlrm load(const std::filesystem::path& path, const load_options& options = {}) {
    return load(open_weights(path), options);
  }
  static dlrm load(std::shared_ptr<const io::safetensors_file> file, const load_options& options = {}) {
    const nlohmann::json j = impl::config_from_metadata(*file, "dlrm", options.prefix);
    return load(std::move(file), dlrm_config::from_json(j), options);
  }
  static dlrm load(std::shared_ptr<const io::safetensors_file> file, const dlrm_config& config,
                   const load_options& options = {}) {
    config.validate();
    parameter_set params(std::move(file), "dlrm", options);
    dlrm model;
    model.config_ = config;
    model.bottom_ = mlp::from_parameters(params, "bot_l.",
                                         {config.dense_dim, config.bottom, cpu::activation::relu, cpu::activation::relu});
    for (std::size_t t = 0; t < config.table_rows.size(); ++t)
      model.tables_.push_back(
          params.embedding("emb_l." + std::to_string(t) + ".weight", config.table_rows[t], config.embedding_dim));
    model.top_ = mlp::from_parameters(params, "top_l.",
                                      {config.top_input_dim(), config.top, cpu::activation::relu, config.final_activation});
    model.storage_ = params.finish();
    return model;
  }

  const dlrm_config& config() const noexcept { return config_; }
  //! @brief The weights this model was loaded from (shared by its copies; null for a model not
  //! loaded from a file). Loaded weights never change, so this pointer identifies them: the CUDA
  //! backend keys its device copy of the model by it (cuda/model_cache.hpp).
  std::shared_ptr<const parameter_storage> storage() const noexcept { return storage_; }
  std::size_t output_dim() const noexcept { return config_.top.back(); }
  std::size_t num_sparse_features() const noexcept { return tables_.size(); }
  //! The parts, as views into the loaded weights (what cuda::device_dlrm copies to the device).
  const mlp& bottom() const noexcept { return bottom_; }
  const mlp& top() const noexcept { return top_; }
  std::span<const cpu::embedding_table_view> tables() const noexcept { return tables_; }

  //! @brief out = DLRM(dense, sparse).
  //! @param dense   [batch, dense_dim]
  //! @param sparse  one bag input per table; offsets with batch or batch + 1 entries; ids in [0, rows_t)
  //! @param out     [batch, output_dim]
  //! @param ws      scratch for the activations (see cpu::workspace); the calling thread's by default.
  //! @throws recpipe::error for shape mismatches, bad offsets or out-of-range ids (naming the feature).
  void forward(matrix_view<const float> dense, std::span<const cpu::bag_input> sparse, matrix_view<float> out,
               cpu::workspace& ws = cpu::workspace::for_this_thread()) const {
    const std::size_t batch = out.rows(), d = config_.embedding_dim, f = config_.num_features();
    impl::check_batch_inputs("dlrm: forward", dense, config_.dense_dim, tables_.size(), sparse.size(), batch);
    if (out.cols() != output_dim())
      detail::fail("dlrm: forward: out has ", out.cols(), " columns but the model outputs ", output_dim());
    // features [batch, f * d] = [x | bag_0 | ... ]: the layout dot_interaction reads.
    const cpu::workspace::frame frame(ws);
    const matrix_view<float> features(ws.take<float>(batch * f * d).data(), batch, f * d);
    bottom_.forward(dense, {features.data(), batch, d, f * d}, ws);
    cpu::embedding_bags(tables_, sparse, cpu::pooling::sum, {features.data() + d, batch, (f - 1) * d, f * d});
    // top input [batch, d + pairs] = cat(x, z)
    const std::size_t width = config_.top_input_dim();
    const matrix_view<float> top_in(ws.take<float>(batch * width).data(), batch, width);
    impl::copy_columns({features.data(), batch, d, f * d}, top_in);
    cpu::dot_interaction(features, f, config_.self_interaction, {top_in.data() + d, batch, width - d, width});
    top_.forward(top_in, out, ws);
  }

 private:
  dlrm_config config_;
  mlp bottom_, top_;
  std::vector<cpu::embedding_table_view> tables_;
  std::shared_ptr<const parameter_storage> storage_;
};

}  // namespace models
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
