// SPDX-License-Identifier: Apache-2.0
// recpipe models: DCN-v2 (cross network, stacked or parallel, full or low rank, plus a deep network).
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

//! How the cross and deep networks combine in DCN-v2.
enum class dcn_structure {
  stacked,   //!< head(deep(cross(x0)))
  parallel,  //!< head(cat(cross(x0), deep(x0)))
};

//! @brief Config of a DCN-v2. JSON: `{"dense_dim": 13, "tables": [[1000, 8], [500, 8]],
//! "pooling": "sum", "cross_layers": 3, "rank": 0, "deep": [128, 64], "structure": "stacked",
//! "sigmoid": true}`. rank 0 means full-rank cross layers.
struct dcn_v2_config {
  std::size_t dense_dim = 0;
  std::vector<table_config> tables;
  cpu::pooling pooling = cpu::pooling::sum;
  std::size_t cross_layers = 0;
  std::size_t rank = 0;
  std::vector<std::size_t> deep;
  dcn_structure structure = dcn_structure::stacked;
  bool sigmoid = true;

  static dcn_v2_config from_json(const nlohmann::json& j) {
    const char* kind = "dcn_v2";
    dcn_v2_config c;
    c.dense_dim = impl::size_field(j, kind, "dense_dim");
    c.tables = impl::tables_field(j, kind, "tables");
    c.pooling = impl::parse_pooling(impl::string_field(j, kind, "pooling", "sum"), kind);
    c.cross_layers = impl::size_field(j, kind, "cross_layers");
    c.rank = j.contains("rank") ? impl::size_field(j, kind, "rank") : 0;
    c.deep = impl::sizes_field(j, kind, "deep");
    const std::string structure = impl::string_field(j, kind, "structure", "stacked");
    if (structure != "stacked" && structure != "parallel")
      detail::fail("dcn_v2: config: structure must be 'stacked' or 'parallel' (got '", structure, "')");
    c.structure = structure == "stacked" ? dcn_structure::stacked : dcn_structure::parallel;
    c.sigmoid = impl::bool_field(j, kind, "sigmoid", true);
    c.validate();
    return c;
  }
  nlohmann::json to_json() const {
    return {{"model", "dcn_v2"}, {"dense_dim", dense_dim}, {"tables", impl::tables_json(tables)},
            {"pooling", pooling == cpu::pooling::sum ? "sum" : "mean"}, {"cross_layers", cross_layers}, {"rank", rank},
            {"deep", deep}, {"structure", structure == dcn_structure::stacked ? "stacked" : "parallel"},
            {"sigmoid", sigmoid}};
  }
  void validate() const {
    if (input_dim() == 0) detail::fail("dcn_v2: config: needs dense features or at least one table");
    if (deep.empty()) detail::fail("dcn_v2: config: deep needs at least one layer");
  }
  //! Width of x0: dense_dim + sum of table dims.
  std::size_t input_dim() const {
    std::size_t d = dense_dim;
    for (const table_config& t : tables) d += t.dim;
    return d;
  }
  std::size_t head_input_dim() const {
    return structure == dcn_structure::parallel ? input_dim() + deep.back() : deep.back();
  }
};

//! @brief DCN-v2 (Wang et al. 2021): x0 = cat([dense] + embedding bags); cross layers
//! x_{l+1} = x0 * (W_l x_l + b_l) + x_l (full rank, or W_l = up_l down_l with rank r); a deep
//! ReLU MLP; a linear head to one logit, optionally through a sigmoid.
//!
//! Parameters (reference module `DCNv2` in tools/reference_models.py): `embeddings.{t}.weight`;
//! full rank `cross.{l}.weight` [d, d] and `cross.{l}.bias` [d]; low rank `cross.{l}.down.weight`
//! [r, d], `cross.{l}.up.weight` [d, r] and `cross.{l}.bias` [d]; `deep.layers.{2i}.weight|bias`;
//! `head.weight` [1, head_in], `head.bias` [1].
//!
//! Shapes: forward(dense [batch, dense_dim], sparse: one cpu::bag_input per table, out [batch, 1]).
//! Thread safety: forward is const and may run on many threads at once.
//! @code
//! auto ranker = recpipe::models::dcn_v2::load("dcn.safetensors");
//! recpipe::matrix<float> scores(batch, 1);
//! ranker.forward(dense.view(), bags, scores.view());
//! @endcode
class dcn_v2 {
 public:
  static dcn_v2 load(const std::filesystem::path& path, const load_options& options = {}) {
    return load(open_weights(path), options);
  }
  static dcn_v2 load(std::shared_ptr<const io::safetensors_file> file, const load_options& options = {}) {
    const nlohmann::json j = impl::config_from_metadata(*file, "dcn_v2", options.prefix);
    return load(std::move(file), dcn_v2_config::from_json(j), options);
  }
  static dcn_v2 load(std::shared_ptr<const io::safetensors_file> file, const dcn_v2_config& config,
                     const load_options& options = {}) {
    config.validate();
    parameter_set params(std::move(file), "dcn_v2", options);
    dcn_v2 model;
    model.config_ = config;
    const std::size_t d = config.input_dim();
    for (std::size_t t = 0; t < config.tables.size(); ++t)
      model.tables_.push_back(
          params.embedding("embeddings." + std::to_string(t) + ".weight", config.tables[t].rows, config.tables[t].dim));
    for (std::size_t l = 0; l < config.cross_layers; ++l) {
      const std::string base = "cross." + std::to_string(l) + ".";
      cpu::cross_params layer;
      if (config.rank == 0) {
        layer.weight = params.matrix(base + "weight", d, d);
      } else {
        layer.down = params.matrix(base + "down.weight", config.rank, d);
        layer.up = params.matrix(base + "up.weight", d, config.rank);
      }
      layer.bias = params.vector(base + "bias", d);
      model.cross_.push_back(layer);
    }
    // Pack the cross weights once here, so every forward runs cross_network's fused AVX-512 path
    // (the packed copy costs as much memory again as the cross weights; the views stay for the
    // portable path).
    if (!model.cross_.empty()) model.packed_cross_ = std::make_shared<const cpu::packed_cross_network>(model.cross_);
    const std::size_t deep_in = d;  // stacked: deep reads the cross output; parallel: x0. Both are d wide.
    model.deep_ = mlp::from_parameters(params, "deep.layers.", {deep_in, config.deep, cpu::activation::relu, cpu::activation::relu});
    model.head_weight_ = params.matrix("head.weight", 1, config.head_input_dim());
    model.head_bias_ = params.vector("head.bias", 1);
    model.storage_ = params.finish();
    return model;
  }

  const dcn_v2_config& config() const noexcept { return config_; }
  //! @brief The weights this model was loaded from (shared by its copies; null for a model not
  //! loaded from a file). Loaded weights never change, so this pointer identifies them: the CUDA
  //! backend keys its device copy of the model by it (cuda/model_cache.hpp).
  std::shared_ptr<const parameter_storage> storage() const noexcept { return storage_; }
  std::size_t output_dim() const noexcept { return 1; }
  std::size_t num_sparse_features() const noexcept { return tables_.size(); }
  //! The parts, as views into the loaded weights (what cuda::device_dcn_v2 copies to the device):
  //! the embedding tables, the cross layers (cpu::cross_params layouts), the deep MLP and the head.
  std::span<const cpu::embedding_table_view> tables() const noexcept { return tables_; }
  std::span<const cpu::cross_params> cross() const noexcept { return cross_; }
  const mlp& deep() const noexcept { return deep_; }
  matrix_view<const float> head_weight() const noexcept { return head_weight_; }
  std::span<const float> head_bias() const noexcept { return head_bias_; }

  //! @brief out = DCN-v2(dense, sparse): a probability with `sigmoid`, else a logit.
  //! @param dense   [batch, dense_dim] (an empty view when dense_dim == 0)
  //! @param sparse  one bag input per table (offsets with batch or batch + 1 entries)
  //! @param out     [batch, 1]
  //! @param ws      scratch for the activations (see cpu::workspace); the calling thread's by default.
  //! @throws recpipe::error for shape mismatches, bad offsets or out-of-range ids (naming the feature).
  void forward(matrix_view<const float> dense, std::span<const cpu::bag_input> sparse, matrix_view<float> out,
               cpu::workspace& ws = cpu::workspace::for_this_thread()) const {
    const std::size_t batch = out.rows(), d = config_.input_dim();
    impl::check_batch_inputs("dcn_v2: forward", dense, config_.dense_dim, tables_.size(), sparse.size(), batch);
    if (out.cols() != 1) detail::fail("dcn_v2: forward: out must have 1 column (got ", out.cols(), ")");
    const cpu::workspace::frame frame(ws);
    const matrix_view<float> x0(ws.take<float>(batch * d).data(), batch, d);
    if (config_.dense_dim > 0) impl::copy_columns(dense, x0);
    cpu::embedding_bags(tables_, sparse, config_.pooling, {x0.data() + config_.dense_dim, batch, d - config_.dense_dim, d});

    const std::size_t deep_out = config_.deep.back();
    const cpu::activation head_act = config_.sigmoid ? cpu::activation::sigmoid : cpu::activation::none;
    if (config_.structure == dcn_structure::stacked) {
      const matrix_view<float> crossed(ws.take<float>(batch * d).data(), batch, d);
      cpu::cross_network(x0, cross_layers(), crossed, ws);
      const matrix_view<float> hidden(ws.take<float>(batch * deep_out).data(), batch, deep_out);
      deep_.forward(crossed, hidden, ws);
      cpu::linear(hidden, head_weight_, head_bias_, out, head_act);
    } else {
      // [cross(x0) | deep(x0)] side by side, so the head is one product.
      const std::size_t width = d + deep_out;
      const matrix_view<float> both(ws.take<float>(batch * width).data(), batch, width);
      cpu::cross_network(x0, cross_layers(), {both.data(), batch, d, width}, ws);
      deep_.forward(x0, {both.data() + d, batch, deep_out, width}, ws);
      cpu::linear(both, head_weight_, head_bias_, out, head_act);
    }
  }

 private:
  std::span<const cpu::cross_params> cross_layers() const {
    return packed_cross_ ? packed_cross_->layers() : std::span<const cpu::cross_params>(cross_);
  }

  dcn_v2_config config_;
  std::vector<cpu::embedding_table_view> tables_;
  std::vector<cpu::cross_params> cross_;
  std::shared_ptr<const cpu::packed_cross_network> packed_cross_;  // shared: copies of the model reuse it
  mlp deep_;
  matrix_view<const float> head_weight_;
  std::span<const float> head_bias_;
  std::shared_ptr<const parameter_storage> storage_;
};

}  // namespace models
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
