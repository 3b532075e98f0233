// SPDX-License-Identifier: Apache-2.0
// Tests for mlp_scorer: a models::mlp loaded from safetensors scores candidates like a reference.
#include <doctest/doctest.h>

#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/models/mlp.hpp>
#include <recpipe/stages/mlp_scorer.hpp>
#include <recpipe/stages/score.hpp>

#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

using namespace recpipe;

TEST_CASE("mlp_scorer runs [query, item] through the network, per candidate") {
  // A 4 -> 3 (ReLU) -> 1 network with random weights, written and loaded as PyTorch would.
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> w0(3 * 4), b0(3), w1(1 * 3), b1(1);
  for (auto* v : {&w0, &b0, &w1, &b1})
    for (auto& x : *v) x = normal(rng);
  io::safetensors_writer writer;
  writer.add("layers.0.weight", std::span<const float>(w0), {3, 4});
  writer.add("layers.0.bias", std::span<const float>(b0), {3});
  writer.add("layers.2.weight", std::span<const float>(w1), {1, 3});
  writer.add("layers.2.bias", std::span<const float>(b1), {1});
  const auto path = std::filesystem::path(RECPIPE_TEST_BINARY_DIR) / "mlp_scorer_test.safetensors";
  writer.write(path);
  models::mlp_config config;
  config.input_dim = 4;
  config.dims = {3, 1};
  const auto network = models::mlp::load(models::open_weights(path), config);

  batch<col::user_embedding, col::candidates, col::item_embedding> b(2);
  b.get<col::user_embedding>() = matrix<float>({0.5f, -1.0f, 2.0f, 0.25f}, 2, 2);
  b.get<col::candidates>().assign({0, 2, 3}, {7, 8, 9});
  b.get<col::item_embedding>() = matrix<float>({1.0f, 0.0f, -0.5f, 0.3f, 0.2f, 0.9f}, 3, 2);
  const auto out = b >> score(mlp_scorer(network));

  const std::size_t request_of[] = {0, 0, 1};
  for (std::size_t c = 0; c < 3; ++c) {
    const float x[4] = {b.get<col::user_embedding>()(request_of[c], 0), b.get<col::user_embedding>()(request_of[c], 1),
                        b.get<col::item_embedding>()(c, 0), b.get<col::item_embedding>()(c, 1)};
    double y = b1[0];
    for (std::size_t h = 0; h < 3; ++h) {
      double a = b0[h];
      for (std::size_t i = 0; i < 4; ++i) a += double(w0[h * 4 + i]) * x[i];
      y += double(w1[h]) * std::max(a, 0.0);
    }
    CHECK(out.get<col::score>()[c] == doctest::Approx(y).epsilon(1e-5));
  }

  // Widths that do not add up to the network's input are an error naming them.
  batch<col::user_embedding, col::candidates, col::item_embedding> wide(1);
  wide.get<col::user_embedding>() = matrix<float>(1, 3);
  wide.get<col::candidates>().assign({0, 1}, {1});
  wide.get<col::item_embedding>() = matrix<float>(1, 2);
  CHECK_THROWS_WITH_AS(wide >> score(mlp_scorer(network)),
                       "recpipe: mlp_scorer: 'user_embedding' (3) + 'item_embedding' (2) = 5 features but the network's "
                       "input_dim is 4",
                       error);
  // No candidates: nothing to run.
  batch<col::user_embedding, col::candidates, col::item_embedding> none(1);
  none.get<col::user_embedding>() = matrix<float>(1, 2);
  CHECK((none >> score(mlp_scorer(network))).get<col::score>().empty());
}
