// SPDX-License-Identifier: Apache-2.0
// recpipe models: a SASRec-style session transformer (causal self-attention over item sequences).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
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
#include <recpipe/core/ragged_view.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/attention.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/math/transformer.hpp>
#include <recpipe/models/parameters.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace models {

//! Where a session's items sit in the model's window (see session_transformer_config::padding).
enum class session_padding {
  right,  //!< item k of the kept window at slot k (RecBole, Transformers4Rec, recpipe's default)
  left,   //!< a fixed window of max_length slots, the last item in the last slot (SASRec.pytorch)
};

//! How position embeddings are numbered (see session_transformer_config::positions).
enum class position_numbering {
  first_item,          //!< item k of the kept window gets position k (0 .. len-1); table [max_length, E]
  window_slot,         //!< the window slot 0 .. max_length-1, padded slots too; table [max_length, E]
  window_slot_from_1,  //!< the window slot + 1 (1 .. max_length), padded slots 0; table [max_length + 1, E]
};

//! The math:: rule the kernels share (same enumerators and values as position_numbering).
constexpr math::position_rule to_position_rule(position_numbering p) noexcept { return static_cast<math::position_rule>(p); }
static_assert(static_cast<int>(position_numbering::first_item) == static_cast<int>(math::position_rule::first_item) &&
              static_cast<int>(position_numbering::window_slot) == static_cast<int>(math::position_rule::window_slot) &&
              static_cast<int>(position_numbering::window_slot_from_1) ==
                  static_cast<int>(math::position_rule::window_slot_from_1));

//! @brief Config of a session_transformer. JSON: `{"num_items": 5000, "embedding_dim": 64,
//! "max_length": 200, "num_heads": 2, "ffn_dim": 128, "num_layers": 2, "activation": "relu",
//! "norm_first": true, "embedding_scale": 1.0, "eps": 1e-5}`. SASRec scales the item
//! embeddings by sqrt(embedding_dim); Transformers4Rec does not (scale 1).
//!
//! Optional keys for checkpoints of other implementations (tools/convert_sasrec.py writes them;
//! docs/sasrec-checkpoints.md), each defaulting to recpipe's own model:
//! - `"query_only_norm"` (false): the SASRec.pytorch block, cpu::query_norm_encoder_layer (only
//!   the attention's query is layer-normed; needs norm_first = true, of which it is a variant).
//! - `"input_norm"` (false): LayerNorm (`input_norm.weight|bias`) on the embedded sequence
//!   before the first layer (RecBole).
//! - `"final_norm"` (true): the LayerNorm `final_norm.weight|bias` on the output (RecBole has none).
//! - `"padding"` ("right" | "left"): see session_padding.
//! - `"positions"` ("first_item" | "window_slot" | "window_slot_from_1"): see position_numbering;
//!   the window_slot numberings need padding = "left".
//! - `"attend_to_padding"` (false): with left padding, every session fills the whole window of
//!   max_length slots, the padded slots holding item `padding_id`, and the padded slots take part
//!   in attention as queries, keys and values (a causal mask, no key-padding mask), exactly as
//!   SASRec.pytorch runs. Costs max_length rows per session however short it is.
//! - `"timeline_mask"` (false): with attend_to_padding, zero the padded slots after the
//!   embedding and after every layer (SASRec.pytorch before 2023).
//! - `"padding_id"` (-1 = none): the padding item (0 in both reference implementations).
//!   Occurrences of it in a session are dropped before encoding: it is not an item.
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
  bool query_only_norm = false;
  bool input_norm = false;
  bool final_norm = true;
  session_padding padding = session_padding::right;
  position_numbering positions = position_numbering::first_item;
  bool attend_to_padding = false;
  bool timeline_mask = false;
  id_type padding_id = -1;

  //! Rows of position_embedding.weight this config needs.
  std::size_t position_rows() const noexcept {
    return positions == position_numbering::window_slot_from_1 ? max_length + 1 : max_length;
  }
  //! True when every variant key has its default: the model recpipe trains
  //! (train::session_transformer_model supports only this one).
  bool is_default_variant() const noexcept {
    return !query_only_norm && !input_norm && final_norm && padding == session_padding::right &&
           positions == position_numbering::first_item && !attend_to_padding && !timeline_mask && padding_id < 0;
  }

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
    c.query_only_norm = impl::bool_field(j, kind, "query_only_norm", false);
    c.input_norm = impl::bool_field(j, kind, "input_norm", false);
    c.final_norm = impl::bool_field(j, kind, "final_norm", true);
    const std::string padding = impl::string_field(j, kind, "padding", "right");
    if (padding == "right")
      c.padding = session_padding::right;
    else if (padding == "left")
      c.padding = session_padding::left;
    else
      detail::fail(kind, ": config: unknown padding '", padding, "' (right, left)");
    const std::string positions = impl::string_field(j, kind, "positions", "first_item");
    if (positions == "first_item")
      c.positions = position_numbering::first_item;
    else if (positions == "window_slot")
      c.positions = position_numbering::window_slot;
    else if (positions == "window_slot_from_1")
      c.positions = position_numbering::window_slot_from_1;
    else
      detail::fail(kind, ": config: unknown positions '", positions, "' (first_item, window_slot, window_slot_from_1)");
    c.attend_to_padding = impl::bool_field(j, kind, "attend_to_padding", false);
    c.timeline_mask = impl::bool_field(j, kind, "timeline_mask", false);
    if (const auto it = j.find("padding_id"); it != j.end()) {
      if (!it->is_number_integer()) detail::fail(kind, ": config: field 'padding_id' must be an integer (-1 for none)");
      c.padding_id = it->get<id_type>();
    }
    c.validate();
    return c;
  }
  nlohmann::json to_json() const {
    nlohmann::json j = {{"model", "session_transformer"}, {"num_items", num_items}, {"embedding_dim", embedding_dim},
                        {"max_length", max_length}, {"num_heads", num_heads}, {"ffn_dim", ffn_dim},
                        {"num_layers", num_layers}, {"activation", impl::activation_name(activation)},
                        {"norm_first", norm_first}, {"embedding_scale", embedding_scale}, {"eps", eps}};
    if (!is_default_variant()) {  // only then, so the default model's JSON stays as it was
      static constexpr const char* position_names[] = {"first_item", "window_slot", "window_slot_from_1"};
      j["query_only_norm"] = query_only_norm;
      j["input_norm"] = input_norm;
      j["final_norm"] = final_norm;
      j["padding"] = padding == session_padding::left ? "left" : "right";
      j["positions"] = position_names[static_cast<int>(positions)];
      j["attend_to_padding"] = attend_to_padding;
      j["timeline_mask"] = timeline_mask;
      j["padding_id"] = padding_id;
    }
    return j;
  }
  void validate() const {
    const char* kind = "session_transformer: config: ";
    if (num_items == 0 || embedding_dim == 0 || max_length == 0 || ffn_dim == 0)
      detail::fail(kind, "num_items, embedding_dim, max_length and ffn_dim must be at least 1");
    if (num_heads == 0 || embedding_dim % num_heads != 0)
      detail::fail(kind, "num_heads = ", num_heads, " must be at least 1 and divide embedding_dim = ", embedding_dim);
    if (activation != cpu::activation::relu && activation != cpu::activation::gelu)
      detail::fail(kind, "activation must be relu or gelu (as nn.TransformerEncoderLayer)");
    if (!(eps >= 0.0f) || !std::isfinite(eps) || !std::isfinite(embedding_scale))
      detail::fail(kind, "eps must be finite and >= 0, and embedding_scale finite");
    if (query_only_norm && !norm_first)
      detail::fail(kind, "query_only_norm is a pre-norm block: it needs norm_first = true");
    if (positions != position_numbering::first_item && padding != session_padding::left)
      detail::fail(kind, "positions numbered by window slot need padding = \"left\"");
    if (attend_to_padding && (padding != session_padding::left || positions == position_numbering::first_item))
      detail::fail(kind, "attend_to_padding needs padding = \"left\" and positions numbered by window slot");
    if (attend_to_padding && (padding_id < 0 || static_cast<std::size_t>(padding_id) >= num_items))
      detail::fail(kind, "attend_to_padding needs padding_id in [0, num_items = ", num_items, ") (got ", padding_id, ")");
    if (timeline_mask && !attend_to_padding) detail::fail(kind, "timeline_mask needs attend_to_padding = true");
    if (padding_id < -1 || (padding_id >= 0 && static_cast<std::size_t>(padding_id) >= num_items))
      detail::fail(kind, "padding_id = ", padding_id, " must be -1 (none) or in [0, num_items = ", num_items, ")");
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
//! With the config's variant keys (session_transformer_config): `input_norm.weight|bias` [E]
//! when input_norm; no `final_norm.*` when final_norm is false; position_embedding.weight has
//! [max_length + 1, E] rows with positions = window_slot_from_1.
//!
//! Variants (tools/convert_sasrec.py writes the configs; docs/sasrec-checkpoints.md):
//! - recpipe / Transformers4Rec (the defaults): right padding, positions from the first item,
//!   pre- or post-norm nn.TransformerEncoderLayer blocks, final LayerNorm.
//! - RecBole SASRec: `input_norm` (LayerNorm + dropout on the embeddings), post-norm blocks
//!   (norm_first = false), GELU, eps 1e-12, `final_norm = false`; right padding, output at the
//!   last real item.
//! - SASRec.pytorch: `padding = left`, `attend_to_padding` (a fixed window of max_length slots,
//!   padded slots are item 0 and take part in attention), positions by window slot,
//!   `query_only_norm` blocks (cpu::query_norm_encoder_layer), embedding_scale sqrt(E), eps 1e-8,
//!   final LayerNorm, `timeline_mask` for the pre-2023 code.
//!
//! Inputs are ragged: session b is items[offsets[b] .. offsets[b+1]) in time order. A session
//! longer than max_length keeps its last max_length items (positions restart at 0); an empty
//! session encodes to a zero vector. With a padding_id, occurrences of it are dropped first (a
//! session of only padding is empty).
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
    model.positions_ = params.matrix("position_embedding.weight", config.position_rows(), e);
    if (config.input_norm) {
      model.input_weight_ = params.vector("input_norm.weight", e);
      model.input_bias_ = params.vector("input_norm.bias", e);
    }
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
    if (config.final_norm) {
      model.final_weight_ = params.vector("final_norm.weight", e);
      model.final_bias_ = params.vector("final_norm.bias", e);
    }
    model.storage_ = params.finish();
    return model;
  }

  const session_transformer_config& config() const noexcept { return config_; }
  //! @brief The weights this model was loaded from (shared by its copies; null for a model not
  //! loaded from a file). Loaded weights never change, so this pointer identifies them: the CUDA
  //! backend keys its device copy of the model by it (cuda/model_cache.hpp).
  std::shared_ptr<const parameter_storage> storage() const noexcept { return storage_; }
  std::size_t embedding_dim() const noexcept { return config_.embedding_dim; }
  std::size_t num_items() const noexcept { return config_.num_items; }
  //! The item embedding table [num_items, E] (the vectors score_all_items compares against,
  //! and what an ANN index over items can be built from).
  matrix_view<const float> item_embeddings() const noexcept { return items_; }
  //! The position embedding table [config().position_rows(), E].
  matrix_view<const float> position_embeddings() const noexcept { return positions_; }
  //! The encoder blocks' weights, in order (views into this model's storage).
  std::span<const cpu::transformer_layer_weights> layers() const noexcept { return layers_; }
  //! input_norm.weight / .bias (empty without config().input_norm).
  std::span<const float> input_norm_weight() const noexcept { return input_weight_; }
  std::span<const float> input_norm_bias() const noexcept { return input_bias_; }
  //! final_norm.weight / .bias (empty when config().final_norm is false).
  std::span<const float> final_norm_weight() const noexcept { return final_weight_; }
  std::span<const float> final_norm_bias() const noexcept { return final_bias_; }

  //! @brief Session vectors: out[b] = final hidden state at session b's last item.
  //! @param offsets  batch + 1 non-decreasing entries, offsets[0] = 0, offsets[batch] = items.size()
  //! @param items    item ids in [0, num_items), sessions concatenated in time order
  //! @param out      [batch, embedding_dim]
  //! @throws recpipe::error for bad offsets, an id outside [0, num_items) (naming its position)
  //!         or a wrong out shape.
  //! Complexity: O(sum len * E * (E + F) + sum len^2 * E) per layer; with attend_to_padding
  //! every session costs its full window, len = max_length.
  //! `ws`: scratch for the activations (see cpu::workspace); the calling thread's by default.
  void encode(std::span<const id_type> offsets, std::span<const id_type> items, matrix_view<float> out,
              cpu::workspace& ws = cpu::workspace::for_this_thread()) const {
    encode(ragged_view<const id_type, id_type>(offsets, items), out, ws);
  }
  //! The same over a ragged_view with any offset type (a ragged column's view(): no copy).
  template <std::integral Offset>
  void encode(ragged_view<const id_type, Offset> sessions, matrix_view<float> out, cpu::workspace& ws = cpu::workspace::for_this_thread()) const {
    const std::size_t e = config_.embedding_dim;
    sessions.check("session_transformer: encode", "items.size()");
    const std::span<const Offset> offsets = sessions.offsets();
    const std::span<const id_type> items = sessions.values();
    const std::size_t batch = sessions.rows();
    if (out.rows() != batch || out.cols() != e)
      detail::fail("session_transformer: encode: out must be ", batch, " x ", e, " (got ", out.rows(), " x ", out.cols(), ")");
    for (std::size_t i = 0; i < items.size(); ++i)
      if (items[i] < 0 || static_cast<std::size_t>(items[i]) >= config_.num_items)
        detail::fail("session_transformer: encode: items[", i, "] = ", items[i], " is outside [0, ", config_.num_items, ")");

    // Sessions with the padding item dropped (it is not an item), then their last max_length items.
    const cpu::workspace::frame frame(ws);
    std::span<const id_type> kept_items = items;
    std::span<const Offset> kept_offsets = offsets;
    if (config_.padding_id >= 0 && std::find(items.begin(), items.end(), config_.padding_id) != items.end()) {
      const std::span<id_type> filtered_items = ws.take<id_type>(items.size());
      const std::span<Offset> filtered_offsets = ws.take<Offset>(batch + 1);
      std::size_t kept = 0;
      filtered_offsets[0] = 0;
      for (std::size_t b = 0; b < batch; ++b) {
        for (auto i = static_cast<std::size_t>(offsets[b]); i < static_cast<std::size_t>(offsets[b + 1]); ++i)
          if (items[i] != config_.padding_id) filtered_items[kept++] = items[i];
        filtered_offsets[b + 1] = static_cast<Offset>(kept);
      }
      kept_items = filtered_items.first(kept);
      kept_offsets = filtered_offsets;
    }

    const std::span<std::size_t> lengths = ws.take<std::size_t>(batch);
    std::size_t longest = 0;
    for (std::size_t b = 0; b < batch; ++b) {
      lengths[b] = std::min(static_cast<std::size_t>(kept_offsets[b + 1] - kept_offsets[b]), config_.max_length);
      longest = std::max(longest, lengths[b]);
    }
    if (longest == 0) {
      for (std::size_t b = 0; b < batch; ++b) std::fill_n(out.data() + b * out.stride(), e, 0.0f);
      return;
    }

    // x [batch * window, E], session b's slot s at row b * window + s. Without attend_to_padding
    // the window is the longest kept session, session b's items in slots 0 .. len-1 and zero rows
    // after them that the kernels mask out. With it, the window is max_length slots, all valid
    // for the kernels, the items in the last len slots and padding_id before them.
    const bool full_window = config_.attend_to_padding;
    const std::size_t window = full_window ? config_.max_length : longest;
    const std::size_t rows = batch * window;
    matrix_view<float> x(ws.take<float>(rows * e).data(), rows, e);
    matrix_view<float> y(ws.take<float>(rows * e).data(), rows, e);
    const auto table = cpu::embedding_table_view::fp32(items_);
    const bool left = config_.padding == session_padding::left;
    for (std::size_t b = 0; b < batch; ++b) {
      const std::size_t len = lengths[b];
      const auto end = static_cast<std::size_t>(kept_offsets[b + 1]);
      const std::size_t first_slot = full_window ? window - len : 0;
      const matrix_view<float> session = x.middle_rows(b * window + first_slot, len);
      cpu::embedding_lookup(table, kept_items.subspan(end - len, len), session);
      if (full_window)
        for (std::size_t s = 0; s < first_slot; ++s)
          std::copy_n(items_.data() + static_cast<std::size_t>(config_.padding_id) * items_.stride(), e,
                      x.data() + (b * window + s) * e);
      const std::size_t filled = full_window ? window : len;
      const matrix_view<float> slots = x.middle_rows(b * window, filled);
      if (config_.embedding_scale != 1.0f)
        for (std::size_t s = 0; s < filled; ++s)
          for (float& v : slots.row(s)) v *= config_.embedding_scale;
      // Slot s of `filled` holds item k = s - first_slot (s < first_slot: padding).
      // In a left-padded window of max_length, item k of len sits in slot max_length - len + k.
      for (std::size_t s = 0; s < filled; ++s) {
        const std::size_t position =
            math::session_position(to_position_rule(config_.positions), left, config_.max_length, filled, first_slot, s);
        const float* p = positions_.data() + position * positions_.stride();
        float* row = slots.data() + s * e;
        for (std::size_t c = 0; c < e; ++c) row[c] += p[c];
      }
      if (!full_window) std::fill_n(x.data() + (b * window + len) * e, (window - len) * e, 0.0f);
    }
    // The kernels' view of the sessions: all max_length slots valid, or the ragged lengths.
    std::span<const std::size_t> valid = lengths;
    if (full_window) {
      const std::span<std::size_t> kernel_lengths = ws.take<std::size_t>(batch);
      std::fill(kernel_lengths.begin(), kernel_lengths.end(), window);
      valid = kernel_lengths;
    }
    const auto apply_timeline_mask = [&](matrix_view<float> h) {
      if (!config_.timeline_mask) return;
      for (std::size_t b = 0; b < batch; ++b) std::fill_n(h.data() + b * window * e, (window - lengths[b]) * e, 0.0f);
    };
    if (config_.input_norm) cpu::layer_norm(x, input_weight_, input_bias_, x, config_.eps);
    apply_timeline_mask(x);
    for (const cpu::transformer_layer_weights& layer : layers_) {
      if (config_.query_only_norm)
        cpu::query_norm_encoder_layer(x, valid, window, layer, true, y, ws);
      else
        cpu::transformer_encoder_layer(x, valid, window, layer, true, y, ws);
      std::swap(x, y);
      apply_timeline_mask(x);
    }
    // The final LayerNorm is per row, so it runs on the gathered last positions only.
    for (std::size_t b = 0; b < batch; ++b) {
      float* row = out.data() + b * out.stride();
      if (lengths[b] == 0)
        std::fill_n(row, e, 0.0f);
      else
        std::copy_n(x.data() + (b * window + (full_window ? window : lengths[b]) - 1) * e, e, row);
    }
    if (config_.final_norm) cpu::layer_norm(out, final_weight_, final_bias_, out, config_.eps);
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
  std::span<const float> input_weight_, input_bias_, final_weight_, final_bias_;
  std::shared_ptr<const parameter_storage> storage_;
};

}  // namespace models
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
