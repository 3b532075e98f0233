// SPDX-License-Identifier: Apache-2.0
// train::dcn_v2_model and train::mlp_model: serving parity after freeze, finite-difference
// gradients, learning on a synthetic task, bad input.
#include <doctest/doctest.h>

#include <recpipe/train/dcn_v2_model.hpp>
#include <recpipe/train/metrics.hpp>
#include <recpipe/train/mlp_model.hpp>
#include <recpipe/train/dynamic_table.hpp>
#include <recpipe/train/fixed_table.hpp>
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

struct tiny {
  std::vector<std::shared_ptr<simple_table>> tables;
  std::vector<std::shared_ptr<train::trainable_table>> as_trainable() const {
    return {tables.begin(), tables.end()};
  }
};

tiny make_tables(const std::vector<std::size_t>& rows, std::size_t dim, float lr = 0.1f) {
  tiny t;
  for (std::size_t i = 0; i < rows.size(); ++i) t.tables.push_back(std::make_shared<simple_table>(rows[i], dim, lr, 100 + i));
  return t;
}

models::dcn_v2_config tiny_config(std::size_t cross, std::size_t rank, models::dcn_structure s, cpu::pooling p) {
  models::dcn_v2_config c;
  c.dense_dim = 3;
  c.tables = {{7, 4}, {5, 4}};
  c.pooling = p;
  c.cross_layers = cross;
  c.rank = rank;
  c.deep = {6, 5};
  c.structure = s;
  c.sigmoid = false;
  return c;
}

void check_gradients(const models::dcn_v2_config& c, bool weighted) {
  tiny t = make_tables({7, 5}, 4);
  train::dcn_v2_model m(c, t.as_trainable(), 3);
  train::example_batch b = random_batch(5, 3, {7, 5}, 11, weighted);
  recpipe::testing::check_model_gradients(m, t.tables, b);
}

}  // namespace

TEST_CASE("dcn_v2_model: parameters carry the serving model's names and shapes") {
  tiny t = make_tables({7, 5}, 4);
  train::dcn_v2_model full(tiny_config(2, 0, models::dcn_structure::stacked, cpu::pooling::sum), t.as_trainable(), 1);
  std::vector<std::string> names;
  for (auto* p : full.parameters()) names.push_back(p->name);
  CHECK(names == std::vector<std::string>{"cross.0.weight", "cross.0.bias", "cross.1.weight", "cross.1.bias",
                                          "deep.layers.0.weight", "deep.layers.0.bias", "deep.layers.2.weight",
                                          "deep.layers.2.bias", "head.weight", "head.bias"});
  CHECK(full.parameters()[0]->shape == std::vector<std::size_t>{11, 11});
  train::dcn_v2_model low(tiny_config(1, 3, models::dcn_structure::parallel, cpu::pooling::sum), t.as_trainable(), 1);
  CHECK(low.parameters()[0]->name == "cross.0.down.weight");
  CHECK(low.parameters()[0]->shape == std::vector<std::size_t>{3, 11});
  CHECK(low.parameters()[1]->shape == std::vector<std::size_t>{11, 3});
  CHECK(low.parameters().back()->shape == std::vector<std::size_t>{1});
  CHECK(low.parameters()[low.parameters().size() - 2]->shape == std::vector<std::size_t>{1, 11 + 5});
  // Deterministic: same seed, same weights; another seed, others.
  train::dcn_v2_model again(tiny_config(2, 0, models::dcn_structure::stacked, cpu::pooling::sum), t.as_trainable(), 1);
  train::dcn_v2_model other(tiny_config(2, 0, models::dcn_structure::stacked, cpu::pooling::sum), t.as_trainable(), 2);
  CHECK(again.parameters()[4]->value == full.parameters()[4]->value);
  CHECK(other.parameters()[4]->value != full.parameters()[4]->value);
  // PyTorch's Linear bound 1/sqrt(in).
  for (float w : full.parameters()[4]->value) CHECK(std::fabs(w) <= 1.0f / std::sqrt(11.0f));
}

TEST_CASE("dcn_v2_model: forward equals the frozen serving model's forward") {
  for (auto s : {models::dcn_structure::stacked, models::dcn_structure::parallel})
    for (std::size_t rank : {std::size_t{0}, std::size_t{2}})
      for (auto p : {cpu::pooling::sum, cpu::pooling::mean}) {
        CAPTURE(rank);
        tiny t = make_tables({7, 5}, 4);
        auto c = tiny_config(2, rank, s, p);
        c.sigmoid = true;
        train::dcn_v2_model m(c, t.as_trainable(), 5);
        train::example_batch b = random_batch(9, 3, {7, 5}, 3, true);
        train::dcn_v2_model::workspace ws;
        auto logits = m.forward(b.inputs(), ws);
        auto frozen = m.freeze();
        matrix<float> served(9, 1);
        frozen.forward(b.inputs(), served.view());
        for (std::size_t i = 0; i < 9; ++i) CHECK(served(i, 0) == doctest::Approx(1.0 / (1.0 + std::exp(-logits(i, 0)))).epsilon(1e-5));
      }
}

TEST_CASE("dcn_v2_model: backward matches finite differences (full and low rank, stacked and parallel)") {
  SUBCASE("stacked full rank, sum") { check_gradients(tiny_config(2, 0, models::dcn_structure::stacked, cpu::pooling::sum), false); }
  SUBCASE("parallel full rank, mean, weighted") { check_gradients(tiny_config(2, 0, models::dcn_structure::parallel, cpu::pooling::mean), true); }
  SUBCASE("stacked low rank") { check_gradients(tiny_config(2, 3, models::dcn_structure::stacked, cpu::pooling::sum), true); }
  SUBCASE("parallel low rank") { check_gradients(tiny_config(1, 2, models::dcn_structure::parallel, cpu::pooling::sum), false); }
  SUBCASE("no cross layers (mlp_model)") { check_gradients(tiny_config(0, 0, models::dcn_structure::stacked, cpu::pooling::sum), false); }
}

TEST_CASE("mlp_model: learns a synthetic user x item preference") {
  // label = 1 when the user's and the item's hidden signs agree: learnable from ids alone.
  const std::size_t users = 50, items = 40;
  std::mt19937 gen(9);
  std::vector<int> user_sign(users), item_sign(items);
  for (int& s : user_sign) s = gen() % 2 ? 1 : -1;
  for (int& s : item_sign) s = gen() % 2 ? 1 : -1;
  tiny t = make_tables({users, items}, 8, 5.0f);
  train::mlp_model_config c;
  c.tables = {{users, 8}, {items, 8}};
  c.hidden = {16, 8};
  train::mlp_model model(c, t.as_trainable(), 1);
  train::dcn_v2_model::workspace ws;
  auto sgd = [](std::span<train::parameter* const> ps) {
    for (auto* p : ps)
      for (std::size_t i = 0; i < p->size(); ++i) p->value[i] -= 0.5f * p->grad[i];
  };
  auto make = [&](std::size_t n) {
    train::example_batch b(0, 2);
    for (std::size_t e = 0; e < n; ++e) {
      const std::size_t u = gen() % users, i = gen() % items;
      b.begin_example(user_sign[u] == item_sign[i] ? 1.0f : 0.0f);
      b.add_id(0, static_cast<id_type>(u));
      b.add_id(1, static_cast<id_type>(i));
    }
    return b;
  };
  float first = 0, last = 0;
  for (int step = 0; step < 400; ++step) {
    auto b = make(64);
    const auto r = train::train_step(model, ws, b, sgd);
    CHECK_FALSE(r.skipped);
    if (step < 20) first += r.loss / 20;
    if (step >= 380) last += r.loss / 20;
  }
  CHECK(last < 0.7f * first);
  auto test = make(2000);
  std::vector<float> scores;
  auto logits = model.forward(test.inputs(), ws);
  for (std::size_t i = 0; i < test.size(); ++i) scores.push_back(logits(i, 0));
  CHECK(train::auc(scores, test.labels()) > 0.9);
  // The frozen model agrees with the trained weights.
  auto frozen = model.freeze();
  matrix<float> served(test.size(), 1);
  frozen.forward(test.inputs(), served.view());
  for (std::size_t i = 0; i < 20; ++i) CHECK(served(i, 0) == doctest::Approx(1.0 / (1.0 + std::exp(-scores[i]))).epsilon(1e-5));
}

TEST_CASE("dcn_v2_model: bad input") {
  tiny t = make_tables({7, 5}, 4);
  train::dcn_v2_model m(tiny_config(1, 0, models::dcn_structure::stacked, cpu::pooling::sum), t.as_trainable(), 1);
  train::dcn_v2_model::workspace ws;
  auto noop = [](std::span<train::parameter* const>) {};

  SUBCASE("NaN dense feature: the step is skipped and nothing is written") {
    train::example_batch b = random_batch(4, 3, {7, 5}, 1);
    b.dense_row()[1] = std::numeric_limits<float>::quiet_NaN();
    const auto before = m.parameters()[0]->value;
    const auto rows_before = t.tables[0]->values().values();
    auto sgd = [](std::span<train::parameter* const> ps) {
      for (auto* p : ps)
        for (std::size_t i = 0; i < p->size(); ++i) p->value[i] -= 0.1f * p->grad[i];
    };
    const auto r = train::train_step(m, ws, b, sgd);
    CHECK(r.skipped);
    CHECK(m.parameters()[0]->value == before);
    CHECK(t.tables[0]->values().values() == rows_before);
  }
  SUBCASE("NaN label throws (the trainer drops such events first)") {
    train::example_batch b = random_batch(4, 3, {7, 5}, 1);
    b.label() = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH_AS(train::train_step(m, ws, b, noop), doctest::Contains("label 3"), error);
  }
  SUBCASE("empty batch: nothing happens") {
    train::example_batch b(3, 2);
    const auto r = train::train_step(m, ws, b, noop);
    CHECK(std::isnan(r.loss));
    CHECK_FALSE(r.skipped);
    CHECK(r.examples == 0);
  }
  SUBCASE("out-of-range id names the feature") {
    train::example_batch b = random_batch(2, 3, {7, 5}, 1);
    b.add_id(1, 99);
    CHECK_THROWS_WITH_AS(m.forward(b.inputs(), ws), doctest::Contains("sparse feature 1"), error);
  }
  SUBCASE("wrong dense width or feature count") {
    train::example_batch b = random_batch(2, 2, {7, 5}, 1);
    CHECK_THROWS_WITH_AS(m.forward(b.inputs(), ws), doctest::Contains("dense must be 2 x 3"), error);
    train::example_batch one = random_batch(2, 3, {7}, 1);
    CHECK_THROWS_WITH_AS(m.forward(one.inputs(), ws), doctest::Contains("2 sparse features but 1"), error);
  }
  SUBCASE("config and tables disagree") {
    auto c = tiny_config(1, 0, models::dcn_structure::stacked, cpu::pooling::sum);
    c.tables[1].dim = 8;
    CHECK_THROWS_WITH_AS(train::dcn_v2_model(c, t.as_trainable(), 1), doctest::Contains("table 1 has dim 4"), error);
  }
  SUBCASE("backward before forward") {
    std::vector<float> d(3);
    train::dcn_v2_model::workspace fresh;
    CHECK_THROWS_AS(m.backward(fresh, {d.data(), 3, 1}), error);
  }
}

TEST_CASE("mlp_model over dynamic and fixed tables with Adam and row-wise Adagrad: freeze maps ids") {
  auto rows = std::make_shared<train::rowwise_adagrad>(train::rowwise_adagrad_options{.lr = 0.1});
  auto users = std::make_shared<train::dynamic_table>(
      train::dynamic_table_config{.dim = 4, .init = {.scale = 0.1f, .seed = 1}, .name = "user", .admit_after = 2}, rows);
  auto items = std::make_shared<train::fixed_table>(
      train::fixed_table::config{.rows = 10, .dim = 4, .init = {.scale = 0.1f, .seed = 2}, .name = "item"},
      std::make_shared<train::rowwise_adagrad>(train::rowwise_adagrad_options{.lr = 0.1}));
  train::mlp_model_config c;
  c.dense_dim = 1;
  c.tables = {{0, 4}, {10, 4}};
  c.hidden = {8};
  c.sigmoid = false;
  train::mlp_model model(c, {users, items}, 4);
  train::adam adam({.lr = 0.01});
  train::dcn_v2_model::workspace ws;
  // Huge, negative and repeated user ids: a dynamic table takes any 64-bit id.
  const std::vector<id_type> user_ids = {std::int64_t{1} << 60, -5, 42, 42, 7};
  auto make = [&] {
    train::example_batch b(1, 2);
    for (std::size_t e = 0; e < user_ids.size(); ++e) {
      b.begin_example(e % 2 ? 1.0f : 0.0f);
      b.dense_row()[0] = 0.25f * static_cast<float>(e);
      b.add_id(0, user_ids[e]);
      b.add_id(1, static_cast<id_type>(e));
    }
    return b;
  };
  for (int step = 0; step < 3; ++step) {
    auto b = make();
    CHECK_FALSE(train::train_step(model, ws, b, train::optimizer_step(adam)).skipped);
  }
  CHECK(users->size() == 4);  // admitted at the second sighting
  auto b = make();
  b.begin_example(1.0f);
  b.add_id(0, 999);  // never seen: the zero row in training and in serving
  b.add_id(1, 9);
  auto logits = model.forward(b.inputs(), ws);
  auto frozen = model.freeze();
  REQUIRE(frozen.id_maps.size() == 2);
  REQUIRE(frozen.id_maps[0].has_value());
  CHECK_FALSE(frozen.id_maps[1].has_value());
  CHECK(frozen.id_maps[0]->unknown == 4);
  CHECK((*frozen.id_maps[0])(999) == 4);
  CHECK(frozen.model.config().tables[0].rows == 5);
  CHECK(frozen.model.config().tables[1].rows == 10);
  matrix<float> served(b.size(), 1);
  frozen.forward(b.inputs(), served.view());
  for (std::size_t i = 0; i < b.size(); ++i) CHECK(served(i, 0) == doctest::Approx(logits(i, 0)).epsilon(1e-5));
  // A NaN learning rate never reaches a weight: the optimizer refuses it.
  CHECK_THROWS_WITH_AS(train::adam({.lr = std::numeric_limits<double>::quiet_NaN()}), doctest::Contains("lr"), error);
  CHECK_THROWS_AS(adam.set_lr(std::numeric_limits<double>::quiet_NaN()), error);
}
