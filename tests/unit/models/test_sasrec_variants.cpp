// SPDX-License-Identifier: Apache-2.0
// models::session_transformer's variants for SASRec.pytorch and RecBole checkpoints without
// PyTorch: config validation, the loader's errors for checkpoints that do not match their config,
// and the documented results for padding ids, empty, long and batched sessions. (Parity with the
// reference implementations: sasrec_parity.cpp.)
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <recpipe/core/matrix.hpp>
#include <recpipe/models/session_transformer.hpp>
#include <recpipe/train/session_transformer_model.hpp>

#include "common/tiny_models.hpp"

namespace models = recpipe::models;
namespace io = recpipe::io;
using recpipe::id_type;
using recpipe::matrix;
using recpipe::testing::as_file;
using recpipe::testing::random_session_transformer;
using recpipe::testing::session_transformer_weights;

namespace {

// SASRec.pytorch (2023 code) as convert_sasrec.py configures it: 20 items (0 = padding), width 8.
models::session_transformer_config sasrec_pytorch_config() {
  models::session_transformer_config c = recpipe::testing::tiny_session_config();
  c.max_length = 4;
  c.ffn_dim = 8;
  c.num_layers = 2;
  c.embedding_scale = std::sqrt(8.0f);
  c.eps = 1e-8f;
  c.query_only_norm = true;
  c.padding = models::session_padding::left;
  c.positions = models::position_numbering::window_slot_from_1;
  c.attend_to_padding = true;
  c.padding_id = 0;
  return c;
}

// RecBole's SASRec: input LayerNorm, post-norm, GELU, no final LayerNorm.
models::session_transformer_config recbole_config() {
  models::session_transformer_config c = recpipe::testing::tiny_session_config();
  c.norm_first = false;
  c.activation = recpipe::cpu::activation::gelu;
  c.eps = 1e-12f;
  c.input_norm = true;
  c.final_norm = false;
  c.padding_id = 0;
  return c;
}

matrix<float> encode(const models::session_transformer& model, const std::vector<std::vector<id_type>>& sessions) {
  std::vector<id_type> offsets = {0}, items;
  for (const auto& s : sessions) {
    items.insert(items.end(), s.begin(), s.end());
    offsets.push_back(static_cast<id_type>(items.size()));
  }
  matrix<float> out(sessions.size(), model.embedding_dim());
  model.encode(offsets, items, out.view());
  return out;
}

std::vector<float> row(const matrix<float>& m, std::size_t r) { return {m.row(r).begin(), m.row(r).end()}; }

void check_close(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-5));
}

}  // namespace

TEST_CASE("session_transformer variants: config keys round-trip, the default JSON stays as it was") {
  for (const auto& c : {sasrec_pytorch_config(), recbole_config()}) {
    const auto back = models::session_transformer_config::from_json(c.to_json());
    CHECK(back.to_json() == c.to_json());
    CHECK_FALSE(back.is_default_variant());
  }
  auto timeline = sasrec_pytorch_config();
  timeline.positions = models::position_numbering::window_slot;
  timeline.timeline_mask = true;
  CHECK(models::session_transformer_config::from_json(timeline.to_json()).timeline_mask);
  CHECK(models::session_transformer_config::from_json(timeline.to_json()).position_rows() == 4);
  CHECK(sasrec_pytorch_config().position_rows() == 5);
  const nlohmann::json plain = recpipe::testing::tiny_session_config().to_json();
  CHECK(plain.find("padding") == plain.end());
  CHECK(recpipe::testing::tiny_session_config().is_default_variant());
}

TEST_CASE("session_transformer variants: contradictory or unknown config values are errors") {
  const auto fails = [](auto edit, const char* message) {
    auto c = sasrec_pytorch_config();
    edit(c);
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains(message), recpipe::error);
  };
  fails([](auto& c) { c.norm_first = false; }, "query_only_norm is a pre-norm block");
  fails([](auto& c) { c.padding = models::session_padding::right; }, "positions numbered by window slot need padding");
  fails([](auto& c) { c.positions = models::position_numbering::first_item; }, "attend_to_padding needs padding");
  fails([](auto& c) { c.padding_id = -1; }, "attend_to_padding needs padding_id in [0, num_items = 20)");
  fails([](auto& c) { c.padding_id = 20; }, "padding_id");
  fails([](auto& c) { c.attend_to_padding = false, c.timeline_mask = true; }, "timeline_mask needs attend_to_padding");
  auto j = sasrec_pytorch_config().to_json();
  j["padding"] = "middle";
  CHECK_THROWS_WITH_AS(models::session_transformer_config::from_json(j),
                       "recpipe: session_transformer: config: unknown padding 'middle' (right, left)", recpipe::error);
  j = sasrec_pytorch_config().to_json();
  j["positions"] = "from_one";
  CHECK_THROWS_WITH_AS(models::session_transformer_config::from_json(j), doctest::Contains("unknown positions 'from_one'"),
                       recpipe::error);
  j["positions"] = "window_slot_from_1";
  j["padding_id"] = "0";
  CHECK_THROWS_WITH_AS(models::session_transformer_config::from_json(j), doctest::Contains("'padding_id' must be an integer"),
                       recpipe::error);
}

TEST_CASE("session_transformer variants: a checkpoint that does not match its config names the tensor and both shapes") {
  const auto c = sasrec_pytorch_config();
  // positions 1..max_length need max_length + 1 rows; a pre-2023 table has max_length
  CHECK_THROWS_WITH_AS(models::session_transformer::load(as_file(session_transformer_weights(c, 4)), c),
                       doctest::Contains("tensor 'position_embedding.weight': shape is [4, 8] but the config needs [5, 8]"),
                       recpipe::io_error);
  auto wide = c;
  wide.ffn_dim = 16;  // the checkpoint's feed-forward is 8 wide
  CHECK_THROWS_WITH_AS(models::session_transformer::load(as_file(session_transformer_weights(c, 5)), wide),
                       doctest::Contains("tensor 'encoder.layers.0.linear1.weight': shape is [8, 8] but the config needs [16, 8]"),
                       recpipe::io_error);
  // RecBole's input LayerNorm missing, or present in a checkpoint whose config does not use it
  auto no_input = recbole_config();
  no_input.input_norm = false;
  CHECK_THROWS_WITH_AS(models::session_transformer::load(as_file(session_transformer_weights(no_input, 4)), recbole_config()),
                       doctest::Contains("tensor 'input_norm.weight': missing"), recpipe::io_error);
  CHECK_THROWS_WITH_AS(models::session_transformer::load(as_file(session_transformer_weights(recbole_config(), 4)), no_input),
                       doctest::Contains("tensor 'input_norm.bias': unexpected tensor"), recpipe::io_error);
  auto with_final = recbole_config();
  with_final.final_norm = true;
  CHECK_THROWS_WITH_AS(models::session_transformer::load(as_file(session_transformer_weights(recbole_config(), 4)), with_final),
                       doctest::Contains("tensor 'final_norm.weight': missing"), recpipe::io_error);
}

TEST_CASE("session_transformer variants: padding ids, empty, long and batched sessions") {
  for (const auto& c : {sasrec_pytorch_config(), recbole_config()}) {
    CAPTURE(c.to_json().dump());
    const auto model = random_session_transformer(c);
    const auto alone = encode(model, {{5, 9, 2}});
    // the padding item is not an item: dropped wherever it appears
    check_close(row(encode(model, {{0, 5, 0, 9, 2, 0}}), 0), row(alone, 0));
    // empty sessions and sessions of only padding encode to zeros
    const auto empty = encode(model, {{}, {0, 0}});
    for (std::size_t r = 0; r < 2; ++r)
      for (float v : empty.row(r)) CHECK(v == 0.0f);
    // a session longer than max_length keeps its last max_length items
    check_close(row(encode(model, {{7, 7, 3, 11, 5, 9, 2, 4}}), 0), row(encode(model, {{5, 9, 2, 4}}), 0));
    // batching: each session as if alone (padded slots of one session never reach another)
    const auto batch = encode(model, {{3}, {5, 9, 2}, {}, {1, 2, 3, 4, 5, 6}, {19}});
    check_close(row(batch, 0), row(encode(model, {{3}}), 0));
    check_close(row(batch, 1), row(alone, 0));
    check_close(row(batch, 3), row(encode(model, {{3, 4, 5, 6}}), 0));
    check_close(row(batch, 4), row(encode(model, {{19}}), 0));
    for (float v : batch.row(2)) CHECK(v == 0.0f);
    for (std::size_t r = 0; r < batch.rows(); ++r)
      for (float v : batch.row(r)) CHECK(std::isfinite(v));
  }
}

TEST_CASE("session_transformer variants: the padded slots take part in attention with attend_to_padding") {
  // The same session gives another vector when the padding item's embedding changes, because
  // SASRec.pytorch lets the padded slots be keys and values (no key-padding mask).
  const auto c = sasrec_pytorch_config();
  const auto model = random_session_transformer(c);
  io::safetensors_writer w = session_transformer_weights(c, 5);
  io::safetensors_writer changed;
  auto items = recpipe::testing::random_values(20 * 8, 1);
  for (std::size_t i = 0; i < 8; ++i) items[i] += 1.0f;  // row 0, the padding item
  changed.add("item_embedding.weight", std::span<const float>(items), {20, 8});
  const auto bytes_file = as_file(w);
  for (const auto& t : bytes_file->tensors())
    if (t.name != "item_embedding.weight") {
      const auto values = t.to_float();
      changed.add(std::string(t.name), std::span<const float>(values), std::vector<std::size_t>(t.shape.begin(), t.shape.end()));
    }
  const auto other = models::session_transformer::load(as_file(changed), c);
  const auto a = encode(model, {{5, 9}}), b = encode(other, {{5, 9}});
  bool differs = false;
  for (std::size_t i = 0; i < 8; ++i) differs = differs || a(0, i) != b(0, i);
  CHECK(differs);
  // a full window has no padded slot, so there the padding row does not matter
  check_close(row(encode(model, {{5, 9, 2, 4}}), 0), row(encode(other, {{5, 9, 2, 4}}), 0));
}

TEST_CASE("session_transformer variants: the trainable model refuses them") {
  CHECK_THROWS_WITH_AS(recpipe::train::session_transformer_model{sasrec_pytorch_config()},
                       doctest::Contains("trains only the default session transformer"), recpipe::error);
  CHECK_NOTHROW(recpipe::train::session_transformer_model{recpipe::testing::tiny_session_config()});
}
