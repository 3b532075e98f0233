// SPDX-License-Identifier: Apache-2.0
// Shared fixture for the train tests that check a model learns: the small retrieval two-tower and
// the small session transformer they train, so each learning test builds the same model.
#pragma once

#include <recpipe/models/session_transformer.hpp>
#include <recpipe/models/two_tower.hpp>
#include <recpipe/train/dynamic_table.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/session_transformer_model.hpp>
#include <recpipe/train/two_tower_model.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>

namespace recpipe::testing {

// A two-tower over one user-id and one item-id dynamic table (dim 8, row-wise Adagrad lr 0.2):
// user tower 16 -> 8, item tower 8, normalised, temperature 0.1, seed 5.
inline train::two_tower_model small_retrieval_two_tower() {
  const auto table = [](std::uint64_t seed) {
    return std::make_shared<train::dynamic_table>(train::dynamic_table_config{.dim = 8, .init = {.scale = 0.1f, .seed = seed}},
                                                  std::make_shared<train::rowwise_adagrad>(train::rowwise_adagrad_options{.lr = 0.2}));
  };
  models::two_tower_config c;
  c.user.tables = {{0, 8}};
  c.user.dims = {16, 8};
  c.item.tables = {{0, 8}};
  c.item.dims = {8};
  c.normalize = true;
  return train::two_tower_model(c, {table(1)}, {table(2)}, 5, 0.1f);
}

// A one-layer, two-head session transformer of width 16 over `items` items, sessions up to 8.
inline models::session_transformer_config small_session_config(std::size_t items = 20) {
  models::session_transformer_config c;
  c.num_items = items;
  c.embedding_dim = 16;
  c.max_length = 8;
  c.num_heads = 2;
  c.ffn_dim = 32;
  c.num_layers = 1;
  return c;
}

//! Moves every weight of `m` by up to +-0.2, away from the init (norms at exactly 1 and biases at
//! 0 would hide wiring mistakes that swap them).
inline void perturb(train::session_transformer_model& m, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-0.2f, 0.2f);
  m.for_each_parameter([&](train::parameter& p) {
    for (float& v : p.value) v += d(rng);
  });
}

}  // namespace recpipe::testing
