// SPDX-License-Identifier: Apache-2.0
// recpipe models: GRU4Rec (Hidasi et al. 2016), the serving side: encode a session with a GRU
// over its item embeddings, score the catalog against the output item embeddings.
#pragma once

#include <algorithm>
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
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/gru.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/models/parameters.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace models {

//! @brief Config of a GRU4Rec model. JSON (the `recpipe.config` metadata of its safetensors):
//! `{"model": "gru4rec", "num_items": 5000, "embedding_dim": 64, "hidden_size": 100,
//! "num_layers": 1, "tied": false}`.
//!
//! Items are ids in [0, num_items). Each item has an input embedding of `embedding_dim` values;
//! `num_layers` stacked GRU layers (nn.GRU semantics, the first of input size embedding_dim, the
//! others hidden_size) turn a session into its last hidden state h [hidden_size]; an item's score
//! is <h, output_embedding[item]>. With `tied`, the output embeddings ARE the input embeddings
//! (embedding_dim must equal hidden_size).
struct gru4rec_config {
  std::size_t num_items = 0;
  std::size_t embedding_dim = 64;
  std::size_t hidden_size = 100;
  std::size_t num_layers = 1;
  bool tied = false;

  //! @throws recpipe::error naming the bad field.
  void validate() const {
    const char* kind = "gru4rec: config: ";
    if (num_items == 0 || embedding_dim == 0 || hidden_size == 0 || num_layers == 0)
      detail::fail(kind, "num_items, embedding_dim, hidden_size and num_layers must be at least 1 (got ", num_items, ", ",
                   embedding_dim, ", ", hidden_size, ", ", num_layers, ")");
    if (tied && embedding_dim != hidden_size)
      detail::fail(kind, "tied embeddings need embedding_dim = hidden_size (got ", embedding_dim, " and ", hidden_size, ")");
  }
  static gru4rec_config from_json(const nlohmann::json& j) {
    const char* kind = "gru4rec";
    gru4rec_config c;
    c.num_items = impl::size_field(j, kind, "num_items");
    c.embedding_dim = impl::size_field(j, kind, "embedding_dim");
    c.hidden_size = impl::size_field(j, kind, "hidden_size");
    c.num_layers = impl::size_field(j, kind, "num_layers");
    c.tied = impl::bool_field(j, kind, "tied", false);
    c.validate();
    return c;
  }
  nlohmann::json to_json() const {
    return {{"model", "gru4rec"}, {"num_items", num_items}, {"embedding_dim", embedding_dim}, {"hidden_size", hidden_size},
            {"num_layers", num_layers}, {"tied", tied}};
  }
  //! Input width of GRU layer `layer`.
  std::size_t layer_input(std::size_t layer) const noexcept { return layer == 0 ? embedding_dim : hidden_size; }
};

//! One GRU layer's weights, owned (nn.GRU's weight_ih_l{k} [3H, in], weight_hh_l{k} [3H, H],
//! bias_ih_l{k}, bias_hh_l{k} [3H]).
struct gru_layer {
  matrix<float> weight_ih, weight_hh;
  std::vector<float> bias_ih, bias_hh;
  cpu::gru_weights view() const { return {weight_ih.view(), weight_hh.view(), bias_ih, bias_hh}; }
};

namespace impl {
// GRU4Rec's session encoder over weight views (shared by models::gru4rec and
// train::gru4rec_model, which scores without copying its weights).
template <std::integral Offset>
void gru4rec_encode(const char* where, const gru4rec_config& config, matrix_view<const float> input,
                    std::span<const cpu::gru_weights> layers, ragged_view<const id_type, Offset> sessions,
                    matrix_view<float> out) {
  sessions.check(where, "items.size()");
  const std::span<const Offset> offsets = sessions.offsets();
  const std::span<const id_type> items = sessions.values();
  const std::size_t batch = sessions.rows(), e = config.embedding_dim, h = config.hidden_size;
  if (out.rows() != batch || out.cols() != h)
    detail::fail(where, ": out must be ", batch, " x ", h, " (got ", out.rows(), " x ", out.cols(), ")");
  std::vector<std::size_t> lengths(batch);
  std::size_t longest = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    lengths[b] = sessions.row_size(b);
    longest = std::max(longest, lengths[b]);
  }
  for (std::size_t i = 0; i < items.size(); ++i)
    if (items[i] < 0 || static_cast<std::size_t>(items[i]) >= config.num_items)
      detail::fail(where, ": item id ", items[i], " (items[", i, "]) is outside the catalog [0, ", config.num_items, ")");
  matrix<float> x(batch * longest, e), y;
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t t = 0; t < lengths[b]; ++t) {
      const auto id = static_cast<std::size_t>(items[static_cast<std::size_t>(offsets[b]) + t]);
      std::copy_n(input.data() + id * input.stride(), e, x.data() + (b * longest + t) * e);
    }
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const bool last = l + 1 == layers.size();
    if (!last) y.resize(batch * longest, h);
    cpu::gru_sequence(x.view(), lengths, longest, layers[l], {}, last ? matrix_view<float>{} : y.view(),
                      last ? out : matrix_view<float>{});
    if (!last) std::swap(x, y);
  }
}
}  // namespace impl

//! @brief A frozen GRU4Rec for serving: immutable copies of the weights; every method is const
//! and may run on many threads at once.
//!
//! Made by train::gru4rec_model::freeze(), or from weights directly. It satisfies the
//! `session_model` concept of stages/session_encoder.hpp, so `encode(session_encoder(model))`
//! turns a request's session into its last hidden state for `retrieve` over an index built from
//! item_embeddings().
//!
//! Bad input: an empty session encodes to the zero vector (the GRU's initial state), so every
//! score is 0; an id outside [0, num_items) is a recpipe::error naming it (session_encoder drops
//! unknown ids before calling encode; the evaluation harness must map ids to the catalog).
//! NaN weights give NaN vectors and scores (no check).
//! @code
//! recpipe::models::gru4rec serving = trained.freeze();
//! std::vector<float> scores(serving.num_items());
//! serving.score_session(session_items, scores);  // next-item scores after this prefix
//! @endcode
class gru4rec {
 public:
  //! @throws recpipe::error when a shape disagrees with the config (naming it).
  gru4rec(gru4rec_config config, matrix<float> input_embedding, std::vector<gru_layer> layers,
          matrix<float> output_embedding)
      : config_(config), input_(std::move(input_embedding)), layers_(std::move(layers)), output_(std::move(output_embedding)) {
    config_.validate();
    const char* kind = "gru4rec: ";
    const std::size_t n = config_.num_items, h = config_.hidden_size;
    if (input_.rows() != n || input_.cols() != config_.embedding_dim)
      detail::fail(kind, "input_embedding must be ", n, " x ", config_.embedding_dim, " (got ", input_.rows(), " x ",
                   input_.cols(), ")");
    if (layers_.size() != config_.num_layers)
      detail::fail(kind, "the config has ", config_.num_layers, " layers but ", layers_.size(), " were given");
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const gru_layer& g = layers_[l];
      const std::size_t in = config_.layer_input(l);
      if (g.weight_ih.rows() != 3 * h || g.weight_ih.cols() != in || g.weight_hh.rows() != 3 * h ||
          g.weight_hh.cols() != h || (!g.bias_ih.empty() && g.bias_ih.size() != 3 * h) ||
          g.bias_ih.size() != g.bias_hh.size())
        detail::fail(kind, "layer ", l, " must have weight_ih ", 3 * h, " x ", in, ", weight_hh ", 3 * h, " x ", h,
                     " and biases of ", 3 * h, " (got weight_ih ", g.weight_ih.rows(), " x ", g.weight_ih.cols(),
                     ", weight_hh ", g.weight_hh.rows(), " x ", g.weight_hh.cols(), ")");
    }
    if (!config_.tied && (output_.rows() != n || output_.cols() != h))
      detail::fail(kind, "output_embedding must be ", n, " x ", h, " (got ", output_.rows(), " x ", output_.cols(), ")");
    if (config_.tied && !output_.empty())
      detail::fail(kind, "a tied model takes an empty output_embedding (it uses the input embedding)");
  }

  //! @brief Loads a checkpoint written by to_safetensors() (or by a PyTorch GRU4Rec with these
  //! names: `item_embedding.weight` [N, E], `gru.weight_ih_l{k}` [3H, in], `gru.weight_hh_l{k}`
  //! [3H, H], `gru.bias_ih_l{k}`, `gru.bias_hh_l{k}` [3H] (nn.GRU's state_dict under `gru.`),
  //! `output_embedding.weight` [N, H] unless tied), the config from its metadata or given.
  //! @throws recpipe::io_error naming the tensor for a missing tensor, a shape that does not match
  //!         the config, non-finite values or an unused tensor (see models::load_options).
  //! @code
  //! auto model = recpipe::models::gru4rec::load("gru4rec.safetensors");
  //! @endcode
  static gru4rec load(const std::filesystem::path& path, const load_options& options = {}) {
    return load(open_weights(path), options);
  }
  static gru4rec load(std::shared_ptr<const io::safetensors_file> file, const load_options& options = {}) {
    if (!file) detail::fail("gru4rec: no safetensors file given");
    const nlohmann::json j = impl::config_from_metadata(*file, "gru4rec", options.prefix);
    return load(std::move(file), gru4rec_config::from_json(j), options);
  }
  static gru4rec load(std::shared_ptr<const io::safetensors_file> file, const gru4rec_config& config,
                      const load_options& options = {}) {
    config.validate();
    parameter_set params(std::move(file), "gru4rec", options);
    const std::size_t n = config.num_items, e = config.embedding_dim, h = config.hidden_size;
    const auto copy = [](matrix_view<const float> m) {
      matrix<float> out(m.rows(), m.cols());
      for (std::size_t r = 0; r < m.rows(); ++r) std::copy_n(m.data() + r * m.stride(), m.cols(), out.data() + r * m.cols());
      return out;
    };
    const auto vec = [](std::span<const float> v) { return std::vector<float>(v.begin(), v.end()); };
    matrix<float> input = copy(params.matrix("item_embedding.weight", n, e));
    std::vector<gru_layer> layers(config.num_layers);
    for (std::size_t l = 0; l < config.num_layers; ++l) {
      const std::string k = std::to_string(l);
      layers[l].weight_ih = copy(params.matrix("gru.weight_ih_l" + k, 3 * h, config.layer_input(l)));
      layers[l].weight_hh = copy(params.matrix("gru.weight_hh_l" + k, 3 * h, h));
      layers[l].bias_ih = vec(params.vector("gru.bias_ih_l" + k, 3 * h));
      layers[l].bias_hh = vec(params.vector("gru.bias_hh_l" + k, 3 * h));
    }
    matrix<float> output = config.tied ? matrix<float>() : copy(params.matrix("output_embedding.weight", n, h));
    params.finish();
    return gru4rec(config, std::move(input), std::move(layers), std::move(output));
  }

  //! @brief The weights under the names load() reads, with the config in the metadata.
  //! @code
  //! model.to_safetensors().write("gru4rec.safetensors");
  //! @endcode
  io::safetensors_writer to_safetensors() const {
    io::safetensors_writer out;
    out.set_metadata("recpipe.model", "gru4rec");
    out.set_metadata("recpipe.config", config_.to_json().dump());
    out.add("item_embedding.weight", input_.view());
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const std::string k = std::to_string(l);
      out.add("gru.weight_ih_l" + k, layers_[l].weight_ih.view());
      out.add("gru.weight_hh_l" + k, layers_[l].weight_hh.view());
      out.add("gru.bias_ih_l" + k, std::span<const float>(layers_[l].bias_ih), {layers_[l].bias_ih.size()});
      out.add("gru.bias_hh_l" + k, std::span<const float>(layers_[l].bias_hh), {layers_[l].bias_hh.size()});
    }
    if (!config_.tied) out.add("output_embedding.weight", output_.view());
    return out;
  }

  const gru4rec_config& config() const noexcept { return config_; }
  std::size_t num_items() const noexcept { return config_.num_items; }
  //! The session vector's width (hidden_size): what session_encoder's output has.
  std::size_t embedding_dim() const noexcept { return config_.hidden_size; }
  //! The output item vectors [num_items, hidden_size] that scores compare against (the input
  //! embeddings when tied): build a retrieval index from these.
  matrix_view<const float> item_embeddings() const noexcept { return config_.tied ? input_.view() : output_.view(); }
  matrix_view<const float> input_embeddings() const noexcept { return input_.view(); }
  const std::vector<gru_layer>& layers() const noexcept { return layers_; }

  //! @brief Session vectors: out[b] = the last layer's hidden state after session b's last item
  //! (the zero vector for an empty session).
  //! @param offsets  batch + 1 non-decreasing entries, offsets[0] = 0, offsets[batch] = items.size()
  //! @param items    item ids in [0, num_items), sessions concatenated in time order
  //! @param out      [batch, hidden_size]
  //! @throws recpipe::error for bad offsets, an id outside [0, num_items) (naming it and its
  //!         position) or a wrong out shape.
  void encode(std::span<const id_type> offsets, std::span<const id_type> items, matrix_view<float> out) const {
    encode(ragged_view<const id_type, id_type>(offsets, items), out);
  }
  //! The same over a ragged_view with any offset type (a ragged column's view(): no copy).
  template <std::integral Offset>
  void encode(ragged_view<const id_type, Offset> sessions, matrix_view<float> out) const {
    std::vector<cpu::gru_weights> views;
    for (const gru_layer& g : layers_) views.push_back(g.view());
    impl::gru4rec_encode("gru4rec: encode", config_, input_.view(), views, sessions, out);
  }

  //! @brief scores[b][i] = <encoded[b], item_embeddings()[i]> for every item.
  //! @throws recpipe::error on shape mismatches.
  void score_all_items(matrix_view<const float> encoded, matrix_view<float> scores) const {
    if (encoded.cols() != config_.hidden_size)
      detail::fail("gru4rec: score_all_items: encoded has ", encoded.cols(), " columns, not ", config_.hidden_size);
    if (scores.rows() != encoded.rows() || scores.cols() != config_.num_items)
      detail::fail("gru4rec: score_all_items: scores must be ", encoded.rows(), " x ", config_.num_items, " (got ",
                   scores.rows(), " x ", scores.cols(), ")");
    cpu::gemm_nt(encoded, item_embeddings(), scores);
  }

  //! @brief Next-item scores after a session prefix: scores[i] = <h, item_embeddings()[i]>, h the
  //! hidden state after `items` (an empty prefix gives h = 0, so every score is 0).
  //! @param scores  num_items values
  //! @throws recpipe::error for an id outside [0, num_items) or a wrong scores size.
  void score_session(std::span<const id_type> items, std::span<float> scores) const {
    if (scores.size() != config_.num_items)
      detail::fail("gru4rec: score_session: scores has ", scores.size(), " values but the catalog has ", config_.num_items);
    const id_type offsets[2] = {0, static_cast<id_type>(items.size())};
    std::vector<float> h(config_.hidden_size);
    encode(offsets, items, {h.data(), 1, h.size()});
    score_all_items({h.data(), 1, h.size()}, {scores.data(), 1, scores.size()});
  }

 private:
  gru4rec_config config_;
  matrix<float> input_;
  std::vector<gru_layer> layers_;
  matrix<float> output_;
};

}  // namespace models
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
