// SPDX-License-Identifier: Apache-2.0
// train::dlrm_model: state_dict names, serving parity after freeze, finite-difference gradients,
// learning on a synthetic task, bad input.
#include <doctest/doctest.h>

#include <recpipe/train/dense_mlp_model.hpp>
#include <recpipe/train/dlrm_model.hpp>
#include <recpipe/train/dynamic_table.hpp>
#include <recpipe/train/metrics.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/trainer.hpp>

#include "../../common/train_fixtures.hpp"

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <vector>

using namespace recpipe;
using recpipe::testing::random_batch;
using recpipe::testing::simple_table;

namespace {

std::vector<std::shared_ptr<simple_table>> make_tables(const std::vector<std::size_t>& rows, std::size_t dim, float lr = 0.1f) {
  std::vector<std::shared_ptr<simple_table>> t;
  for (std::size_t i = 0; i < rows.size(); ++i) t.push_back(std::make_shared<simple_table>(rows[i], dim, lr, 200 + i));
  return t;
}
std::vector<std::shared_ptr<train::trainable_table>> trainable(const std::vector<std::shared_ptr<simple_table>>& t) {
  return {t.begin(), t.end()};
}

models::dlrm_config tiny_config(bool self_interaction) {
  models::dlrm_config c;
  c.dense_dim = 3;
  c.embedding_dim = 4;
  c.bottom = {5, 4};
  c.table_rows = {7, 5};
  c.top = {6, 1};
  c.self_interaction = self_interaction;
  c.final_activation = cpu::activation::sigmoid;
  return c;
}

}  // namespace

TEST_CASE("dlrm_model: parameters carry DLRM_Net's names and shapes") {
  auto t = make_tables({7, 5}, 4);
  train::dlrm_model m(tiny_config(false), trainable(t), 1);
  std::vector<std::string> names;
  for (auto* p : m.parameters()) names.push_back(p->name);
  CHECK(names == std::vector<std::string>{"bot_l.0.weight", "bot_l.0.bias", "bot_l.2.weight", "bot_l.2.bias",
                                          "top_l.0.weight", "top_l.0.bias", "top_l.2.weight", "top_l.2.bias"});
  CHECK(m.parameters()[4]->shape == std::vector<std::size_t>{6, 4 + 3});  // d + 3 pairs of 3 features
  CHECK(m.parameters()[6]->shape == std::vector<std::size_t>{1, 6});
}

TEST_CASE("dlrm_model: forward equals the frozen serving model's forward") {
  for (bool self : {false, true}) {
    auto t = make_tables({7, 5}, 4);
    train::dlrm_model m(tiny_config(self), trainable(t), 5);
    train::example_batch b = random_batch(9, 3, {7, 5}, 3, true);
    train::dlrm_model::workspace ws;
    auto logits = m.forward(b.inputs(), ws);
    auto frozen = m.freeze();
    matrix<float> served(9, 1);
    frozen.forward(b.inputs(), served.view());
    for (std::size_t i = 0; i < 9; ++i) CHECK(served(i, 0) == doctest::Approx(1.0 / (1.0 + std::exp(-logits(i, 0)))).epsilon(1e-5));
  }
}

TEST_CASE("dlrm_model: backward matches finite differences") {
  for (bool self : {false, true}) {
    CAPTURE(self);
    auto t = make_tables({7, 5}, 4);
    train::dlrm_model m(tiny_config(self), trainable(t), 3);
    train::example_batch b = random_batch(5, 3, {7, 5}, 11, self);
    recpipe::testing::check_model_gradients(m, t, b);
  }
}

TEST_CASE("dlrm_model: learns a synthetic user x item preference (dynamic tables, Adam, row-wise Adagrad)") {
  const std::size_t users = 50, items = 40;
  std::mt19937 gen(9);
  std::vector<int> user_sign(users), item_sign(items);
  for (int& s : user_sign) s = gen() % 2 ? 1 : -1;
  for (int& s : item_sign) s = gen() % 2 ? 1 : -1;
  auto table = [](std::uint64_t seed) {
    return std::make_shared<train::dynamic_table>(train::dynamic_table_config{.dim = 8, .init = {.scale = 0.1f, .seed = seed}},
                                                  std::make_shared<train::rowwise_adagrad>(train::rowwise_adagrad_options{.lr = 0.1}));
  };
  models::dlrm_config c;
  c.dense_dim = 1;
  c.embedding_dim = 8;
  c.bottom = {8};
  c.table_rows = {0, 0};
  c.top = {16, 1};
  train::dlrm_model model(c, {table(1), table(2)}, 1);
  train::adam adam({.lr = 0.01});
  train::dlrm_model::workspace ws;
  auto make = [&](std::size_t n) {
    train::example_batch b(1, 2);
    for (std::size_t e = 0; e < n; ++e) {
      const std::size_t u = gen() % users, i = gen() % items;
      b.begin_example(user_sign[u] == item_sign[i] ? 1.0f : 0.0f);
      b.dense_row()[0] = 1.0f;
      b.add_id(0, static_cast<id_type>(u));
      b.add_id(1, static_cast<id_type>(i));
    }
    return b;
  };
  float first = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    auto b = make(64);
    const auto r = train::train_step(model, ws, b, train::optimizer_step(adam));
    CHECK_FALSE(r.skipped);
    if (step < 20) first += r.loss / 20;
    if (step >= 280) last += r.loss / 20;
  }
  CHECK(last < 0.7f * first);
  auto test = make(2000);
  std::vector<float> scores;
  auto logits = model.forward(test.inputs(), ws);
  for (std::size_t i = 0; i < test.size(); ++i) scores.push_back(logits(i, 0));
  CHECK(train::auc(scores, test.labels()) > 0.85);
}

TEST_CASE("dlrm_model: bad input") {
  auto t = make_tables({7, 5}, 4);
  SUBCASE("the top MLP must end in one logit") {
    auto c = tiny_config(false);
    c.top = {6, 2};
    CHECK_THROWS_WITH_AS(train::dlrm_model(c, trainable(t), 1), doctest::Contains("one logit"), error);
  }
  SUBCASE("a table of another dim") {
    auto c = tiny_config(false);
    auto wrong = make_tables({7, 5}, 3);
    CHECK_THROWS_WITH_AS(train::dlrm_model(c, trainable(wrong), 1), doctest::Contains("table 0 has dim 3"), error);
  }
  SUBCASE("NaN dense feature: the step is skipped and nothing is written") {
    train::dlrm_model m(tiny_config(false), trainable(t), 1);
    train::dlrm_model::workspace ws;
    train::example_batch b = random_batch(4, 3, {7, 5}, 1);
    b.dense_row()[0] = std::numeric_limits<float>::infinity();
    const auto before = m.parameters()[0]->value;
    const auto rows = t[0]->values().values();
    train::sgd opt({.lr = 0.1});
    CHECK(train::train_step(m, ws, b, train::optimizer_step(opt)).skipped);
    CHECK(m.parameters()[0]->value == before);
    CHECK(t[0]->values().values() == rows);
  }
  SUBCASE("a negative id names the feature") {
    train::dlrm_model m(tiny_config(false), trainable(t), 1);
    train::dlrm_model::workspace ws;
    train::example_batch b = random_batch(2, 3, {7, 5}, 1);
    b.add_id(0, -1);
    CHECK_THROWS_WITH_AS(m.forward(b.inputs(), ws), doctest::Contains("sparse feature 0"), error);
  }
}

TEST_CASE("dense_mlp_model: models::mlp's names, frozen parity, gradients, bad input") {
  models::mlp_config c;
  c.input_dim = 3;
  c.dims = {5, 4, 1};
  c.final_activation = cpu::activation::sigmoid;
  train::dense_mlp_model m(c, 2);
  std::vector<std::string> names;
  for (auto* p : m.parameters()) names.push_back(p->name);
  CHECK(names == std::vector<std::string>{"layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias",
                                          "layers.4.weight", "layers.4.bias"});
  train::example_batch b = random_batch(6, 3, {}, 5);
  train::dense_mlp_model::workspace ws;
  auto logits = m.forward(b.inputs(), ws);
  auto frozen = m.freeze();
  matrix<float> served(6, 1);
  frozen.forward(b.inputs(), served.view());
  for (std::size_t i = 0; i < 6; ++i) CHECK(served(i, 0) == doctest::Approx(1.0 / (1.0 + std::exp(-logits(i, 0)))).epsilon(1e-5));
  recpipe::testing::check_model_gradients(m, {}, b);
  c.dims = {5, 2};
  CHECK_THROWS_WITH_AS(train::dense_mlp_model(c, 1), doctest::Contains("one logit"), error);
  train::example_batch wrong = random_batch(2, 4, {}, 5);
  CHECK_THROWS_WITH_AS(m.forward(wrong.inputs(), ws), doctest::Contains("dense must be 2 x 3"), error);
  // A trainer learns y = [x0 > 0] with it.
  train::adam adam({.lr = 0.01});
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  float first = 0, last = 0;
  for (int step = 0; step < 200; ++step) {
    train::example_batch batch(3, 0);
    for (int e = 0; e < 32; ++e) {
      const float x0 = u(gen);
      batch.begin_example(x0 > 0 ? 1.0f : 0.0f);
      batch.dense_row()[0] = x0;
      batch.dense_row()[1] = u(gen);
      batch.dense_row()[2] = u(gen);
    }
    const float loss = train::train_step(m, ws, batch, train::optimizer_step(adam)).loss;
    if (step < 10) first += loss / 10;
    if (step >= 190) last += loss / 10;
  }
  CHECK(last < 0.5f * first);
}
