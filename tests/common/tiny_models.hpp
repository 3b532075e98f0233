// SPDX-License-Identifier: Apache-2.0
// Shared fixture: random weights written as safetensors, and a tiny session transformer.
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

}  // namespace recpipe::testing
