// SPDX-License-Identifier: Apache-2.0
// Shared fixture: random weights written as safetensors, a tiny session transformer, and random
// weights plus named config variants for any session transformer.
#pragma once

#include <recpipe/io/safetensors.hpp>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/models/session_transformer.hpp>

#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace recpipe::testing {

inline std::vector<float> random_values(std::size_t n, std::uint32_t seed, float scale = 0.5f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// Adds a random F32 tensor and returns its values.
inline std::vector<float> add_random(io::safetensors_writer& w, const std::string& name, std::vector<std::size_t> shape,
                              std::uint32_t seed) {
  std::size_t n = 1;
  for (std::size_t s : shape) n *= s;
  auto values = random_values(n, seed);
  w.add(name, std::span<const float>(values), std::move(shape));
  return values;
}

inline std::shared_ptr<const io::safetensors_file> as_file(const io::safetensors_writer& w, const char* label = "test.safetensors") {
  return std::make_shared<const io::safetensors_file>(io::safetensors_file::from_bytes(w.to_bytes(), label));
}

// A one-layer, two-head session transformer over 20 items with embeddings of width 8.
inline models::session_transformer_config tiny_session_config() {
  models::session_transformer_config c;
  c.num_items = 20;
  c.embedding_dim = 8;
  c.max_length = 4;
  c.num_heads = 2;
  c.ffn_dim = 16;
  c.num_layers = 1;
  return c;
}
inline io::safetensors_writer tiny_session_weights() {
  io::safetensors_writer w;
  add_random(w, "item_embedding.weight", {20, 8}, 1);
  add_random(w, "position_embedding.weight", {4, 8}, 2);
  const std::string b = "encoder.layers.0.";
  add_random(w, b + "self_attn.in_proj_weight", {24, 8}, 3);
  add_random(w, b + "self_attn.in_proj_bias", {24}, 4);
  add_random(w, b + "self_attn.out_proj.weight", {8, 8}, 5);
  add_random(w, b + "self_attn.out_proj.bias", {8}, 6);
  add_random(w, b + "linear1.weight", {16, 8}, 7);
  add_random(w, b + "linear1.bias", {16}, 8);
  add_random(w, b + "linear2.weight", {8, 16}, 9);
  add_random(w, b + "linear2.bias", {8}, 10);
  for (const char* n : {"norm1", "norm2"}) {
    add_random(w, b + n + ".weight", {8}, 11);
    add_random(w, b + n + ".bias", {8}, 12);
  }
  add_random(w, "final_norm.weight", {8}, 13);
  add_random(w, "final_norm.bias", {8}, 14);
  return w;
}

// Random weights for `c`: every tensor models::session_transformer loads for that config, with
// `position_rows` position embeddings (c.position_rows() loads; another count tests the loader).
inline io::safetensors_writer session_transformer_weights(const models::session_transformer_config& c,
                                                          std::size_t position_rows) {
  io::safetensors_writer w;
  const std::size_t e = c.embedding_dim, f = c.ffn_dim;
  add_random(w, "item_embedding.weight", {c.num_items, e}, 1);
  add_random(w, "position_embedding.weight", {position_rows, e}, 2);
  if (c.input_norm) {
    add_random(w, "input_norm.weight", {e}, 3);
    add_random(w, "input_norm.bias", {e}, 4);
  }
  for (std::size_t i = 0; i < c.num_layers; ++i) {
    const std::string b = "encoder.layers." + std::to_string(i) + ".";
    const auto seed = static_cast<std::uint32_t>(10 + 20 * i);
    add_random(w, b + "self_attn.in_proj_weight", {3 * e, e}, seed + 1);
    add_random(w, b + "self_attn.in_proj_bias", {3 * e}, seed + 2);
    add_random(w, b + "self_attn.out_proj.weight", {e, e}, seed + 3);
    add_random(w, b + "self_attn.out_proj.bias", {e}, seed + 4);
    add_random(w, b + "linear1.weight", {f, e}, seed + 5);
    add_random(w, b + "linear1.bias", {f}, seed + 6);
    add_random(w, b + "linear2.weight", {e, f}, seed + 7);
    add_random(w, b + "linear2.bias", {e}, seed + 8);
    for (const char* n : {"norm1", "norm2"}) {
      add_random(w, b + n + ".weight", {e}, seed + 9);
      add_random(w, b + n + ".bias", {e}, seed + 10);
    }
  }
  if (c.final_norm) {
    add_random(w, "final_norm.weight", {e}, 90);
    add_random(w, "final_norm.bias", {e}, 91);
  }
  return w;
}

// A session transformer with random weights for `c`.
inline models::session_transformer random_session_transformer(const models::session_transformer_config& c) {
  return models::session_transformer::load(as_file(session_transformer_weights(c, c.position_rows())), c);
}

//! A session_transformer config variant with its name (what the GPU encode test and the host
//! emulation compare with the CPU model: recpipe pre/post-norm, RecBole, SASRec.pytorch with and
//! without the timeline mask, left padding with window-slot positions).
struct named_session_config {
  std::string name;
  models::session_transformer_config config;
};

inline std::vector<named_session_config> session_transformer_variants() {
  models::session_transformer_config base;
  base.num_items = 500;
  base.embedding_dim = 64;
  base.max_length = 200;
  base.num_heads = 2;
  base.ffn_dim = 128;
  base.num_layers = 2;
  std::vector<named_session_config> out;
  out.push_back({"recpipe pre-norm", base});
  auto post = base;
  post.norm_first = false;
  post.activation = recpipe::cpu::activation::gelu;
  post.num_heads = 4;
  out.push_back({"post-norm gelu 4 heads", post});
  auto recbole = post;  // RecBole: input norm, no final norm, padding id 0
  recbole.num_heads = 2;
  recbole.eps = 1e-12f;
  recbole.input_norm = true;
  recbole.final_norm = false;
  recbole.padding_id = 0;
  out.push_back({"RecBole", recbole});
  auto sasrec = base;  // SASRec.pytorch: query-norm blocks in a full left-padded window
  sasrec.max_length = 50;
  sasrec.num_heads = 1;
  sasrec.embedding_scale = 8.0f;
  sasrec.eps = 1e-8f;
  sasrec.query_only_norm = true;
  sasrec.padding = models::session_padding::left;
  sasrec.positions = models::position_numbering::window_slot_from_1;
  sasrec.attend_to_padding = true;
  sasrec.padding_id = 0;
  out.push_back({"SASRec.pytorch", sasrec});
  auto timeline = sasrec;
  timeline.timeline_mask = true;
  timeline.positions = models::position_numbering::window_slot;
  out.push_back({"SASRec.pytorch timeline mask", timeline});
  auto left = base;  // left padding, window-slot positions, ragged window
  left.padding = models::session_padding::left;
  left.positions = models::position_numbering::window_slot;
  left.embedding_scale = 2.0f;
  out.push_back({"left padding window slots", left});
  return out;
}

}  // namespace recpipe::testing
