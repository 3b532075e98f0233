// SPDX-License-Identifier: Apache-2.0
// recpipe models: a SASRec-style session transformer (causal self-attention over item sequences).
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
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/attention.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/models/parameters.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace models {

//! @brief Config of a session_transformer. JSON: `{"num_items": 5000, "embedding_dim": 64,
//! "max_length": 200, "num_heads": 2, "ffn_dim": 128, "num_layers": 2, "activation": "relu",
//! "norm_first": true, "embedding_scale": 1.0, "eps": 1e-5}`. SASRec scales the item
//! embeddings by sqrt(embedding_dim); Transformers4Rec does not (scale 1).
struct session_transformer_config {
  std::size_t num_items = 0;
  std::size_t embedding_dim = 0;
  std::size_t max_length = 0;
  std::size_t num_heads = 1;
  std::size_t ffn_dim = 0;
  std::size_t num_layers = 0;
  cpu::activation activation = cpu::activation::relu;
  bool norm_first = true;
  float embedding_scale = 1.0f;
  float eps = 1e-5f;

  static session_transformer_config from_json(const nlohmann::json& j) {
    const char* kind = "session_transformer";
    session_transformer_config c;
    c.num_items = impl::size_field(j, kind, "num_items");
    c.embedding_dim = impl::size_field(j, kind, "embedding_dim");
    c.max_length = impl::size_field(j, kind, "max_length");
    c.num_heads = impl::size_field(j, kind, "num_heads");
    c.ffn_dim = impl::size_field(j, kind, "ffn_dim");
    c.num_layers = impl::size_field(j, kind, "num_layers");
    c.activation = impl::parse_activation(impl::string_field(j, kind, "activation", "relu"), kind);
    c.norm_first = impl::bool_field(j, kind, "norm_first", true);
    c.embedding_scale = impl::float_field(j, kind, "embedding_scale", 1.0f);
    c.eps = impl::float_field(j, kind, "eps", 1e-5f);
    c.validate();
    return c;
  }
  nlohmann::json to_json() const {
    return {{"model", "session_transformer"}, {"num_items", num_items}, {"embedding_dim", embedding_dim},
            {"max_length", max_length}, {"num_heads", num_heads}, {"ffn_dim", ffn_dim}, {"num_layers", num_layers},
            {"activation", impl::activation_name(activation)}, {"norm_first", norm_first},
            {"embedding_scale", embedding_scale}, {"eps", eps}};
  }
  void validate() const {
    const char* kind = "session_transformer: config: ";
    if (num_items == 0 || embedding_dim == 0 || max_length == 0 || ffn_dim == 0)
      detail::fail(kind, "num_items, embedding_dim, max_length and ffn_dim must be at least 1");
    if (num_heads == 0 || embedding_dim % num_heads != 0)
      detail::fail(kind, "num_heads = ", num_heads, " must be at least 1 and divide embedding_dim = ", embedding_dim);
    if (activation != cpu::activation::relu && activation != cpu::activation::gelu)
      detail::fail(kind, "activation must be relu or gelu (as nn.TransformerEncoderLayer)");
    if (!(eps >= 0.0f) || !std::isfinite(embedding_scale)) detail::fail(kind, "eps must be >= 0 and embedding_scale finite");
  }
};

//! @brief Session-based recommender in the SASRec / Transformers4Rec style:
//! h = item_embedding[items] * embedding_scale + position_embedding[0..len); N blocks of
//! `nn.TransformerEncoderLayer` with a causal mask (pre- or post-norm, dropout off); a final
//! LayerNorm. The session vector is the hidden state at the session's last item; it serves as
//! a retrieval query or is scored against every item embedding (tied weights).
//!
//! Parameters (reference module `SessionTransformer` in tools/reference_models.py):
//! `item_embedding.weight` [num_items, E], `position_embedding.weight` [max_length, E],
//! `encoder.layers.{i}.self_attn.in_proj_weight` [3E, E], `...self_attn.in_proj_bias` [3E],
//! `...self_attn.out_proj.weight` [E, E], `...self_attn.out_proj.bias` [E],
//! `...linear1.weight` [F, E], `...linear1.bias` [F], `...linear2.weight` [E, F],
//! `...linear2.bias` [E], `...norm1.weight|bias`, `...norm2.weight|bias` [E],
//! `final_norm.weight|bias` [E].
//!
//! Inputs are ragged: session b is items[offsets[b] .. offsets[b+1]) in time order. A session
//! longer than max_length keeps its last max_length items (positions restart at 0); an empty
//! session encodes to a zero vector.
//! Thread safety: every method is const and may run on many threads at once.
//! @code
//! auto model = recpipe::models::session_transformer::load("sasrec.safetensors");
//! std::vector<recpipe::id_type> offsets = {0, 3, 5}, items = {12, 7, 99, 4, 4};  // 2 sessions
//! recpipe::matrix<float> query(2, model.embedding_dim()), scores(2, model.num_items());
//! model.encode(offsets, items, query.view());
//! model.score_all_items(query.view(), scores.view());
//! @endcode
class session_transformer {
 public:
  static session_transformer load(const std::filesystem::path& path, const load_options& options = {}) {
    return load(open_weights(path), options);
  }
  static session_transformer load(std::shared_ptr<const io::safetensors_file> file, const load_options& options = {}) {
    const nlohmann::json j = impl::config_from_metadata(*file, "session_transformer", options.prefix);
    return load(std::move(file), session_transformer_config::from_json(j), options);
  }
  static session_transformer load(std::shared_ptr<const io::safetensors_file> file,
                                  const session_transformer_config& config, const load_options& options = {}) {
    config.validate();
    parameter_set params(std::move(file), "session_transformer", options);
    session_transformer model;
    model.config_ = config;
    const std::size_t e = config.embedding_dim, f = config.ffn_dim;
    model.items_ = params.matrix("item_embedding.weight", config.num_items, e);
    model.positions_ = params.matrix("position_embedding.weight", config.max_length, e);
    for (std::size_t i = 0; i < config.num_layers; ++i) {
      const std::string base = "encoder.layers." + std::to_string(i) + ".";
      cpu::transformer_layer_weights w;
      w.attention.in_proj_weight = params.matrix(base + "self_attn.in_proj_weight", 3 * e, e);
      w.attention.in_proj_bias = params.vector(base + "self_attn.in_proj_bias", 3 * e);
      w.attention.out_proj_weight = params.matrix(base + "self_attn.out_proj.weight", e, e);
      w.attention.out_proj_bias = params.vector(base + "self_attn.out_proj.bias", e);
      w.attention.num_heads = config.num_heads;
      w.linear1_weight = params.matrix(base + "linear1.weight", f, e);
      w.linear1_bias = params.vector(base + "linear1.bias", f);
      w.linear2_weight = params.matrix(base + "linear2.weight", e, f);
      w.linear2_bias = params.vector(base + "linear2.bias", e);
      w.norm1_weight = params.vector(base + "norm1.weight", e);
      w.norm1_bias = params.vector(base + "norm1.bias", e);
      w.norm2_weight = params.vector(base + "norm2.weight", e);
      w.norm2_bias = params.vector(base + "norm2.bias", e);
      w.eps = config.eps;
      w.act = config.activation;
      w.norm_first = config.norm_first;
      model.layers_.push_back(w);
    }
    model.final_weight_ = params.vector("final_norm.weight", e);
    model.final_bias_ = params.vector("final_norm.bias", e);
    model.storage_ = params.finish();
    return model;
  }

  const session_transformer_config& config() const noexcept { return config_; }
  std::size_t embedding_dim() const noexcept { return config_.embedding_dim; }
  std::size_t num_items() const noexcept { return config_.num_items; }
  //! The item embedding table [num_items, E] (the vectors score_all_items compares against,
  //! and what an ANN index over items can be built from).
  matrix_view<const float> item_embeddings() const noexcept { return items_; }

  //! @brief Session vectors: out[b] = final hidden state at session b's last item.
  //! @param offsets  batch + 1 non-decreasing entries, offsets[0] = 0, offsets[batch] = items.size()
  //! @param items    item ids in [0, num_items), sessions concatenated in time order
  //! @param out      [batch, embedding_dim]
  //! @throws recpipe::error for bad offsets, an id outside [0, num_items) (naming its position)
  //!         or a wrong out shape.
  //! Complexity: O(sum len * E * (E + F) + sum len^2 * E) per layer.
  void encode(std::span<const id_type> offsets, std::span<const id_type> items, matrix_view<float> out) const {
    const std::size_t e = config_.embedding_dim;
    if (offsets.empty()) detail::fail("session_transformer: encode: offsets must have batch + 1 entries (got 0)");
    const std::size_t batch = offsets.size() - 1;
    if (out.rows() != batch || out.cols() != e)
      detail::fail("session_transformer: encode: out must be ", batch, " x ", e, " (got ", out.rows(), " x ", out.cols(), ")");
    if (offsets[0] != 0) detail::fail("session_transformer: encode: offsets[0] must be 0 (got ", offsets[0], ")");
    if (offsets[batch] != static_cast<id_type>(items.size()))
      detail::fail("session_transformer: encode: offsets[", batch, "] = ", offsets[batch], " must equal items.size() = ",
                   items.size());
    for (std::size_t b = 0; b < batch; ++b)
      if (offsets[b + 1] < offsets[b])
        detail::fail("session_transformer: encode: offsets must not decrease (offsets[", b + 1, "] = ", offsets[b + 1],
                     " < offsets[", b, "] = ", offsets[b], ")");
    for (std::size_t i = 0; i < items.size(); ++i)
      if (items[i] < 0 || static_cast<std::size_t>(items[i]) >= config_.num_items)
        detail::fail("session_transformer: encode: items[", i, "] = ", items[i], " is outside [0, ", config_.num_items, ")");

    thread_local std::vector<std::size_t> lengths;
    lengths.resize(batch);
    std::size_t longest = 0;
    for (std::size_t b = 0; b < batch; ++b) {
      lengths[b] = std::min(static_cast<std::size_t>(offsets[b + 1] - offsets[b]), config_.max_length);
      longest = std::max(longest, lengths[b]);
    }
    if (longest == 0) {
      for (std::size_t b = 0; b < batch; ++b) std::fill_n(out.data() + b * out.stride(), e, 0.0f);
      return;
    }

    // x [batch * longest, E], session b at rows b * longest + t; padded rows are zero.
    const std::size_t rows = batch * longest;
    matrix_view<float> x(impl::scratch(impl::slot_sequence, rows * e), rows, e);
    matrix_view<float> y(impl::scratch(impl::slot_sequence_2, rows * e), rows, e);
    const auto table = cpu::embedding_table_view::fp32(items_);
    for (std::size_t b = 0; b < batch; ++b) {
      const std::size_t len = lengths[b];
      const auto end = static_cast<std::size_t>(offsets[b + 1]);
      const matrix_view<float> session = x.middle_rows(b * longest, len);
      cpu::embedding_lookup(table, items.subspan(end - len, len), session);
      if (config_.embedding_scale != 1.0f)
        for (std::size_t t = 0; t < len; ++t)
          for (float& v : session.row(t)) v *= config_.embedding_scale;
      cpu::add(session, positions_.middle_rows(0, len));
      std::fill_n(x.data() + (b * longest + len) * e, (longest - len) * e, 0.0f);
    }
    for (const cpu::transformer_layer_weights& layer : layers_) {
      cpu::transformer_encoder_layer(x, {lengths.data(), batch}, longest, layer, true, y);
      std::swap(x, y);
    }
    // The final LayerNorm is per row, so it runs on the gathered last positions only.
    for (std::size_t b = 0; b < batch; ++b) {
      float* row = out.data() + b * out.stride();
      if (lengths[b] == 0)
        std::fill_n(row, e, 0.0f);
      else
        std::copy_n(x.data() + (b * longest + lengths[b] - 1) * e, e, row);
    }
    cpu::layer_norm(out, final_weight_, final_bias_, out, config_.eps);
    for (std::size_t b = 0; b < batch; ++b)
      if (lengths[b] == 0) std::fill_n(out.data() + b * out.stride(), e, 0.0f);
  }

  //! @brief scores[b][i] = <encoded[b], item_embedding[i]> for every item.
  //! @param encoded  [batch, embedding_dim] (from encode)
  //! @param scores   [batch, num_items]
  //! @throws recpipe::error on shape mismatches.
  void score_all_items(matrix_view<const float> encoded, matrix_view<float> scores) const {
    if (encoded.cols() != config_.embedding_dim)
      detail::fail("session_transformer: score_all_items: encoded has ", encoded.cols(), " columns, not ", config_.embedding_dim);
    if (scores.rows() != encoded.rows() || scores.cols() != config_.num_items)
      detail::fail("session_transformer: score_all_items: scores must be ", encoded.rows(), " x ", config_.num_items,
                   " (got ", scores.rows(), " x ", scores.cols(), ")");
    cpu::gemm_nt(encoded, items_, scores);
  }

 private:
  session_transformer_config config_;
  matrix_view<const float> items_, positions_;
  std::vector<cpu::transformer_layer_weights> layers_;
  std::span<const float> final_weight_, final_bias_;
  std::shared_ptr<const parameter_storage> storage_;
};

}  // namespace models
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
