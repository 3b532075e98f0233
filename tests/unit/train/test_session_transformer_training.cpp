// SPDX-License-Identifier: Apache-2.0
// recpipe tests: train/session_transformer_model.hpp: names and shapes of the serving model,
// deterministic init, gradients against finite differences, freeze() parity with
// models::session_transformer, and a synthetic next-item task on which the loss falls.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <recpipe/models/session_transformer.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/session_transformer_model.hpp>
#include "../../common/learning_fixtures.hpp"

namespace train = recpipe::train;
namespace models = recpipe::models;
using recpipe::id_type;
using recpipe::matrix;

using recpipe::testing::perturb;

namespace {

models::session_transformer_config small_config(bool norm_first, recpipe::cpu::activation act, std::size_t layers = 2) {
  models::session_transformer_config c;
  c.num_items = 23;
  c.embedding_dim = 8;
  c.max_length = 6;
  c.num_heads = 2;
  c.ffn_dim = 12;
  c.num_layers = layers;
  c.activation = act;
  c.norm_first = norm_first;
  c.embedding_scale = norm_first ? 1.0f : std::sqrt(8.0f);
  return c;
}

struct sessions {
  std::vector<id_type> offsets{0}, items;
  void add(std::vector<id_type> s) {
    items.insert(items.end(), s.begin(), s.end());
    offsets.push_back(static_cast<id_type>(items.size()));
  }
};

// Ragged sessions: an empty one, one longer than max_length (6), lengths 1 to 9.
sessions random_sessions(std::mt19937& rng, std::size_t num_items) {
  sessions s;
  std::uniform_int_distribution<id_type> item(0, static_cast<id_type>(num_items) - 1);
  for (std::size_t len : {3u, 0u, 9u, 1u, 6u, 4u}) {
    std::vector<id_type> v(len);
    for (auto& x : v) x = item(rng);
    s.add(v);
  }
  return s;
}

}  // namespace

TEST_CASE("session_transformer_model has the serving model's parameter names and shapes, and a seeded init") {
  const auto config = small_config(true, recpipe::cpu::activation::relu);
  train::session_transformer_model model(config, 7);
  std::vector<std::string> names;
  model.for_each_parameter([&](train::parameter& p) { names.push_back(p.name); });
  REQUIRE(names.size() == 2 + 2 * 12 + 2);
  CHECK(names.front() == "item_embedding.weight");
  CHECK(names[1] == "position_embedding.weight");
  CHECK(names[2] == "encoder.layers.0.self_attn.in_proj_weight");
  CHECK(names[14] == "encoder.layers.1.self_attn.in_proj_weight");
  CHECK(names.back() == "final_norm.bias");
  CHECK(model.find("item_embedding.weight")->shape == std::vector<std::size_t>{23, 8});
  CHECK(model.find("position_embedding.weight")->shape == std::vector<std::size_t>{6, 8});
  CHECK(model.find("encoder.layers.1.linear1.weight")->shape == std::vector<std::size_t>{12, 8});
  CHECK(model.find("encoder.layers.1.linear2.weight")->shape == std::vector<std::size_t>{8, 12});
  CHECK(model.find("nope") == nullptr);
  CHECK(model.parameters().size() == names.size());
  // Same seed, same weights; another seed, other weights; norms start at 1.
  train::session_transformer_model same(config, 7), other(config, 8);
  CHECK(same.find("encoder.layers.0.linear1.weight")->value == model.find("encoder.layers.0.linear1.weight")->value);
  CHECK(same.find("item_embedding.weight")->value == model.find("item_embedding.weight")->value);
  CHECK(other.find("item_embedding.weight")->value != model.find("item_embedding.weight")->value);
  for (float v : model.find("final_norm.weight")->value) CHECK(v == 1.0f);
  // The snapshot holds exactly these tensors plus the metadata the loader reads.
  const auto file = recpipe::io::safetensors_file::from_bytes(model.to_safetensors().to_bytes());
  CHECK(file.metadata_value("recpipe.model") == std::optional<std::string>("session_transformer"));
  for (const auto& name : names) CHECK(file.find(name) != nullptr);
}

TEST_CASE("freeze() gives a serving model whose encode and scores equal the trainable forward") {
  std::mt19937 rng(41);
  for (bool norm_first : {true, false})
    for (auto act : {recpipe::cpu::activation::relu, recpipe::cpu::activation::gelu}) {
      CAPTURE(norm_first);
      train::session_transformer_model model(small_config(norm_first, act), 3);
      perturb(model, rng);
      const sessions s = random_sessions(rng, 23);
      model.forward(s.offsets, s.items);
      const std::size_t batch = s.offsets.size() - 1;
      CHECK(model.padded_length() == 6);
      CHECK(model.lengths()[2] == 6);  // 9 items, the last 6 kept
      matrix<float> mine(batch, 8), served(batch, 8), scores(batch, 23), my_scores(batch, 23);
      model.session_vectors(mine.view());
      const models::session_transformer serving = model.freeze();
      serving.encode(s.offsets, s.items, served.view());
      serving.score_all_items(served.view(), scores.view());
      recpipe::cpu::gemm_nt(mine.view(), model.find("item_embedding.weight")->matrix(), my_scores.view());
      double worst = 0, worst_score = 0, peak = 0;
      for (std::size_t i = 0; i < mine.size(); ++i) {
        worst = std::max(worst, static_cast<double>(std::fabs(mine.values()[i] - served.values()[i])));
        peak = std::max(peak, static_cast<double>(std::fabs(served.values()[i])));
      }
      for (std::size_t i = 0; i < scores.size(); ++i)
        worst_score = std::max(worst_score, static_cast<double>(std::fabs(scores.values()[i] - my_scores.values()[i])));
      CHECK(peak > 0.1);
      CHECK(worst <= 1e-5);
      CHECK(worst_score <= 1e-5);
      for (float v : served.row(1)) CHECK(v == 0.0f);  // the empty session
    }
}

TEST_CASE("session_transformer_model gradients match finite differences of the next-item loss") {
  std::mt19937 rng(42);
  for (bool norm_first : {true, false}) {
    CAPTURE(norm_first);
    train::session_transformer_model model(small_config(norm_first, recpipe::cpu::activation::gelu), 5);
    perturb(model, rng);
    model.loss_chunk_rows = 4;  // several logits blocks
    const sessions s = random_sessions(rng, 23);
    const auto targets = train::session_transformer_model::next_item_targets(s.offsets, s.items);
    model.zero_grad();
    const float loss = model.next_item_loss(s.offsets, s.items, targets);
    CHECK(loss > 0.0f);
    // Differences on a copy: each loss evaluation accumulates gradients into the model it runs on.
    train::session_transformer_model probe = model;
    // Float central differences on the entries with the largest gradients of every parameter
    // (the layers are checked in double elsewhere; this checks the model's wiring: embeddings
    // as inputs and tied scores, positions, truncation, final norm, chunked loss).
    model.for_each_parameter([&](train::parameter& p) {
      CAPTURE(p.name);
      std::vector<std::size_t> order(p.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::partial_sort(order.begin(), order.begin() + 3, order.end(),
                        [&](std::size_t a, std::size_t b) { return std::fabs(p.grad[a]) > std::fabs(p.grad[b]); });
      const float peak = std::fabs(p.grad[order[0]]);
      CHECK(peak > 0.0f);
      for (std::size_t k = 0; k < 3; ++k) {
        const std::size_t i = order[k];
        train::parameter& q = *probe.find(p.name);
        const float saved = q.value[i], h = 1e-2f;
        q.value[i] = saved + h;
        const double plus = probe.next_item_loss(s.offsets, s.items, targets);
        q.value[i] = saved - h;
        const double minus = probe.next_item_loss(s.offsets, s.items, targets);
        q.value[i] = saved;
        const double numeric = (plus - minus) / (2.0 * h);
        CAPTURE(numeric);
        CHECK(std::fabs(numeric - p.grad[i]) <= 2e-2 * peak + 1e-4);
      }
    });
  }
}

TEST_CASE("session_transformer_model learns a synthetic next-item task (i is followed by i + 1 mod N)") {
  const models::session_transformer_config c = recpipe::testing::small_session_config(20);
  train::session_transformer_model model(c, 11);
  train::adam opt({.lr = 1e-2});
  std::mt19937 rng(43);
  std::uniform_int_distribution<id_type> start(0, 19);
  std::uniform_int_distribution<int> length(2, 10);
  const auto batch = [&] {
    sessions s;
    for (int b = 0; b < 16; ++b) {
      std::vector<id_type> v(static_cast<std::size_t>(length(rng)));
      id_type item = start(rng);
      for (auto& x : v) x = (item++) % 20;
      s.add(v);
    }
    return s;
  };
  std::vector<float> losses;
  const auto params = model.parameters();
  for (int step = 0; step < 60; ++step) {
    const sessions s = batch();
    model.zero_grad();
    losses.push_back(model.next_item_loss(s.offsets, s.items, train::session_transformer_model::next_item_targets(s.offsets, s.items)));
    REQUIRE(opt.step_if_finite(params));
  }
  MESSAGE("loss: first ", losses.front(), ", last ", losses.back());
  CHECK(losses.front() > 2.5f);  // ~log(20) at the start
  CHECK(losses.back() < 0.3f * losses.front());
  // The frozen serving model ranks the true next item first for fresh sessions.
  const sessions test = batch();
  const models::session_transformer serving = model.freeze();
  const std::size_t b = test.offsets.size() - 1;
  matrix<float> encoded(b, 16), scores(b, 20);
  serving.encode(test.offsets, test.items, encoded.view());
  serving.score_all_items(encoded.view(), scores.view());
  int correct = 0;
  for (std::size_t r = 0; r < b; ++r) {
    const auto row = scores.row(r);
    const auto best = std::max_element(row.begin(), row.end()) - row.begin();
    correct += best == (test.items[static_cast<std::size_t>(test.offsets[r + 1] - 1)] + 1) % 20;
  }
  CHECK(correct >= 14);
}

TEST_CASE("session_transformer_model: empty batches and bad input") {
  train::session_transformer_model model(small_config(true, recpipe::cpu::activation::relu, 1), 1);
  SUBCASE("an empty batch and empty sessions give loss 0 and no gradient") {
    model.zero_grad();
    CHECK(model.next_item_loss(std::vector<id_type>{0}, {}, {}) == 0.0f);
    CHECK(model.next_item_loss(std::vector<id_type>{0, 0, 0}, {}, {}) == 0.0f);
    const std::vector<id_type> offsets = {0, 1}, items = {4};  // one item: nothing to predict
    CHECK(model.next_item_loss(offsets, items, train::session_transformer_model::next_item_targets(offsets, items)) == 0.0f);
    model.for_each_parameter([](train::parameter& p) {
      for (float g : p.grad) CHECK(g == 0.0f);
    });
  }
  SUBCASE("bad sessions, ids and targets name the problem") {
    const std::vector<id_type> items = {1, 2, 3}, targets = {2, 3, -1};
    CHECK_THROWS_WITH_AS(model.forward(std::vector<id_type>{0, 2}, items), doctest::Contains("must equal items.size() = 3"),
                         recpipe::error);
    CHECK_THROWS_WITH_AS(model.forward(std::vector<id_type>{0, 2, 1, 3}, items), doctest::Contains("must not decrease"),
                         recpipe::error);
    CHECK_THROWS_WITH_AS(model.forward(std::vector<id_type>{}, items), doctest::Contains("rows + 1 entries"), recpipe::error);
    CHECK_THROWS_WITH_AS(model.forward(std::vector<id_type>{0, 3}, std::vector<id_type>{1, 23, 2}),
                         doctest::Contains("items[1] = 23 is outside [0, 23)"), recpipe::error);
    CHECK_THROWS_WITH_AS(model.forward(std::vector<id_type>{0, 3}, std::vector<id_type>{1, -4, 2}),
                         doctest::Contains("items[1] = -4"), recpipe::error);
    CHECK_THROWS_WITH_AS(model.next_item_loss(std::vector<id_type>{0, 3}, items, std::vector<id_type>{2, 99, -1}),
                         doctest::Contains("targets[1] = 99"), recpipe::error);
    CHECK_THROWS_WITH_AS(model.next_item_loss(std::vector<id_type>{0, 3}, items, std::vector<id_type>{2}),
                         doctest::Contains("targets has 1 entries"), recpipe::error);
    CHECK_THROWS_WITH_AS(train::session_transformer_model::next_item_targets(std::vector<id_type>{0, 5}, items),
                         doctest::Contains("offsets[1] = 5 must equal items.size() = 3"), recpipe::error);
  }
  SUBCASE("backward needs a forward and the hidden shape") {
    matrix<float> d(3, 8);
    CHECK_THROWS_WITH_AS(model.backward(d.view()), doctest::Contains("call forward() first"), recpipe::error);
    model.forward(std::vector<id_type>{0, 3}, std::vector<id_type>{1, 2, 3});
    matrix<float> wrong(2, 8);
    CHECK_THROWS_WITH_AS(model.backward(wrong.view()), doctest::Contains("d_hidden must be 3 x 8"), recpipe::error);
    CHECK_NOTHROW(model.backward(d.view()));
  }
  SUBCASE("a bad config is rejected") {
    auto c = small_config(true, recpipe::cpu::activation::relu);
    c.num_heads = 3;
    CHECK_THROWS_AS(train::session_transformer_model(c, 1), recpipe::error);
    CHECK_THROWS_WITH_AS(train::session_transformer_model(small_config(true, recpipe::cpu::activation::relu), 1, NAN),
                         doctest::Contains("embedding_std"), recpipe::error);
  }
}
