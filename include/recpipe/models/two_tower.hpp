// SPDX-License-Identifier: Apache-2.0
// recpipe models: a two-tower retrieval model (user and item towers over embedding bags).
#pragma once

#include <algorithm>
#include <cmath>
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
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/math/vector.hpp>
#include <recpipe/models/mlp.hpp>
#include <recpipe/models/parameters.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace models {

//! @brief One tower: x = cat([dense] + embedding bags) -> MLP -> optional L2 normalisation.
//! JSON: `{"dense_dim": 8, "tables": [[1000, 16], [500, 8]], "pooling": "mean", "dims": [64, 32],
//! "activation": "relu"}` (the MLP has `activation` between layers and none after the last).
struct tower_config {
  std::size_t dense_dim = 0;
  std::vector<table_config> tables;
  cpu::pooling pooling = cpu::pooling::mean;
  std::vector<std::size_t> dims;
  cpu::activation activation = cpu::activation::relu;

  static tower_config from_json(const nlohmann::json& j, const char* kind = "two_tower") {
    tower_config c;
    c.dense_dim = impl::size_field(j, kind, "dense_dim");
    c.tables = impl::tables_field(j, kind, "tables");
    c.pooling = impl::parse_pooling(impl::string_field(j, kind, "pooling", "mean"), kind);
    c.dims = impl::sizes_field(j, kind, "dims");
    c.activation = impl::parse_activation(impl::string_field(j, kind, "activation", "relu"), kind);
    return c;
  }
  nlohmann::json to_json() const {
    return {{"dense_dim", dense_dim}, {"tables", impl::tables_json(tables)},
            {"pooling", pooling == cpu::pooling::sum ? "sum" : "mean"}, {"dims", dims},
            {"activation", impl::activation_name(activation)}};
  }
  //! Width of the MLP input: dense_dim + sum of table dims.
  std::size_t input_dim() const {
    std::size_t d = dense_dim;
    for (const table_config& t : tables) d += t.dim;
    return d;
  }
};

//! @brief Config of a two_tower: both towers and whether their outputs are L2-normalised
//! (then the score is a cosine similarity). JSON: `{"user": {...}, "item": {...}, "normalize": true}`.
struct two_tower_config {
  tower_config user, item;
  bool normalize = true;

  static two_tower_config from_json(const nlohmann::json& j) {
    two_tower_config c;
    c.user = tower_config::from_json(impl::field(j, "two_tower", "user"));
    c.item = tower_config::from_json(impl::field(j, "two_tower", "item"));
    c.normalize = impl::bool_field(j, "two_tower", "normalize", true);
    if (c.user.dims.empty() || c.item.dims.empty() || c.user.dims.back() != c.item.dims.back())
      detail::fail("two_tower: config: the towers' last dims must be equal (user ",
                   c.user.dims.empty() ? 0 : c.user.dims.back(), ", item ", c.item.dims.empty() ? 0 : c.item.dims.back(), ")");
    return c;
  }
  nlohmann::json to_json() const {
    return {{"model", "two_tower"}, {"user", user.to_json()}, {"item", item.to_json()}, {"normalize", normalize}};
  }
};

//! @brief One tower of a two_tower model (reference module `Tower` in tools/reference_models.py).
//!
//! Parameters (after the tower's prefix, e.g. "user_tower."): `embeddings.{t}.weight`
//! [rows_t, dim_t] (nn.EmbeddingBag) and `mlp.layers.{2i}.weight|bias`.
//!
//! Shapes: encode(dense [batch, dense_dim], sparse: one cpu::bag_input per table (offsets with
//! batch or batch + 1 entries, as nn.EmbeddingBag), out [batch, output_dim]).
//! With dense_dim == 0 pass an empty matrix_view for dense.
class tower {
 public:
  static tower from_parameters(parameter_set& params, const std::string& prefix, const tower_config& config,
                               bool normalize) {
    const char* kind = params.component().c_str();
    if (config.dims.empty()) detail::fail(kind, ": config: a tower needs at least one MLP layer");
    tower t;
    t.config_ = config;
    t.normalize_ = normalize;
    for (std::size_t i = 0; i < config.tables.size(); ++i)
      t.tables_.push_back(params.embedding(prefix + "embeddings." + std::to_string(i) + ".weight", config.tables[i].rows,
                                           config.tables[i].dim));
    t.mlp_ = mlp::from_parameters(params, prefix + "mlp.layers.",
                                  {config.input_dim(), config.dims, config.activation, cpu::activation::none});
    return t;
  }

  const tower_config& config() const noexcept { return config_; }
  std::size_t output_dim() const noexcept { return config_.dims.back(); }
  std::size_t num_sparse_features() const noexcept { return tables_.size(); }
  std::span<const cpu::embedding_table_view> tables() const noexcept { return tables_; }
  //! The tower's MLP, and whether its outputs are L2-normalised (what cuda::device_two_tower copies).
  const mlp& network() const noexcept { return mlp_; }
  bool normalized() const noexcept { return normalize_; }

  //! @brief out = tower(dense, sparse), one row per example; L2-normalised rows when the model
  //! normalises (x / max(||x||, 1e-12), as torch.nn.functional.normalize).
  //! `ws`: scratch for the tower's input and hidden layers (see cpu::workspace).
  //! @throws recpipe::error for shape mismatches, bad offsets or ids outside a table.
  void encode(matrix_view<const float> dense, std::span<const cpu::bag_input> sparse, matrix_view<float> out,
              cpu::workspace& ws = cpu::workspace::for_this_thread()) const {
    const std::size_t batch = out.rows();
    impl::check_batch_inputs("two_tower: encode", dense, config_.dense_dim, tables_.size(), sparse.size(), batch);
    if (out.cols() != output_dim())
      detail::fail("two_tower: encode: out has ", out.cols(), " columns but the tower outputs ", output_dim());
    const std::size_t width = config_.input_dim();
    const cpu::workspace::frame frame(ws);
    const matrix_view<float> x(ws.take<float>(batch * width).data(), batch, width);
    if (config_.dense_dim > 0) impl::copy_columns(dense, x);
    cpu::embedding_bags(tables_, sparse, config_.pooling,
                        {x.data() + config_.dense_dim, batch, width - config_.dense_dim, width});
    mlp_.forward(x, out, ws);
    if (normalize_) {
      for (std::size_t r = 0; r < batch; ++r) {
        float* row = out.data() + r * out.stride();
        const float inverse = math::inverse_l2_norm(math::dot(row, row, out.cols()));
        for (std::size_t c = 0; c < out.cols(); ++c) row[c] *= inverse;
      }
    }
  }

 private:
  tower_config config_;
  bool normalize_ = true;
  std::vector<cpu::embedding_table_view> tables_;
  mlp mlp_;
};

//! @brief Two-tower retrieval model: score(u, i) = <user_tower(u), item_tower(i)>.
//!
//! Reference module `TwoTower` in tools/reference_models.py; parameters `user_tower.*` and
//! `item_tower.*` (see tower). The user tower is what an `encode` stage runs to build a query
//! vector; the item tower builds the vectors an ANN index holds.
//!
//! Shapes: encode_users / encode_items as tower::encode, out [batch, output_dim];
//! forward(user inputs, item inputs, out [batch, 1]) scores the pairs row by row.
//! Thread safety: every method is const and may run on many threads at once.
//! @code
//! auto model = recpipe::models::two_tower::load("two_tower.safetensors");
//! std::vector<recpipe::cpu::bag_input> sparse = {{ids0, offsets0}, {ids1, offsets1}};
//! recpipe::matrix<float> query(batch, model.output_dim());
//! model.encode_users(dense.view(), sparse, query.view());
//! @endcode
class two_tower {
 public:
  static two_tower load(const std::filesystem::path& path, const load_options& options = {}) {
    return load(open_weights(path), options);
  }
  static two_tower load(std::shared_ptr<const io::safetensors_file> file, const load_options& options = {}) {
    const nlohmann::json j = impl::config_from_metadata(*file, "two_tower", options.prefix);
    return load(std::move(file), two_tower_config::from_json(j), options);
  }
  static two_tower load(std::shared_ptr<const io::safetensors_file> file, const two_tower_config& config,
                        const load_options& options = {}) {
    if (config.user.dims.empty() || config.item.dims.empty() || config.user.dims.back() != config.item.dims.back())
      detail::fail("two_tower: config: the towers' last dims must be equal");
    parameter_set params(std::move(file), "two_tower", options);
    two_tower model;
    model.config_ = config;
    model.user_ = tower::from_parameters(params, "user_tower.", config.user, config.normalize);
    model.item_ = tower::from_parameters(params, "item_tower.", config.item, config.normalize);
    model.storage_ = params.finish();
    return model;
  }

  const two_tower_config& config() const noexcept { return config_; }
  //! @brief The weights this model was loaded from (shared by its copies; null for a model not
  //! loaded from a file). Loaded weights never change, so this pointer identifies them: the CUDA
  //! backend keys its device copy of the model by it (cuda/model_cache.hpp).
  std::shared_ptr<const parameter_storage> storage() const noexcept { return storage_; }
  std::size_t output_dim() const noexcept { return user_.output_dim(); }
  const tower& user_tower() const noexcept { return user_; }
  const tower& item_tower() const noexcept { return item_; }

  //! User vectors: out [batch, output_dim].
  void encode_users(matrix_view<const float> dense, std::span<const cpu::bag_input> sparse, matrix_view<float> out,
                    cpu::workspace& ws = cpu::workspace::for_this_thread()) const {
    user_.encode(dense, sparse, out, ws);
  }
  //! Item vectors: out [batch, output_dim].
  void encode_items(matrix_view<const float> dense, std::span<const cpu::bag_input> sparse, matrix_view<float> out,
                    cpu::workspace& ws = cpu::workspace::for_this_thread()) const {
    item_.encode(dense, sparse, out, ws);
  }
  //! @brief out[b] = <user b, item b> for paired inputs; out [batch, 1].
  void forward(matrix_view<const float> user_dense, std::span<const cpu::bag_input> user_sparse,
               matrix_view<const float> item_dense, std::span<const cpu::bag_input> item_sparse,
               matrix_view<float> out, cpu::workspace& ws = cpu::workspace::for_this_thread()) const {
    const std::size_t batch = out.rows(), d = output_dim();
    if (out.cols() != 1) detail::fail("two_tower: forward: out must have 1 column (got ", out.cols(), ")");
    const cpu::workspace::frame frame(ws);
    const matrix_view<float> users(ws.take<float>(batch * d).data(), batch, d);
    const matrix_view<float> items(ws.take<float>(batch * d).data(), batch, d);
    encode_users(user_dense, user_sparse, users, ws);
    encode_items(item_dense, item_sparse, items, ws);
    for (std::size_t b = 0; b < batch; ++b) out(b, 0) = math::dot(users.data() + b * d, items.data() + b * d, d);
  }

 private:
  two_tower_config config_;
  tower user_, item_;
  std::shared_ptr<const parameter_storage> storage_;
};

}  // namespace models
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
