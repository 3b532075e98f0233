// SPDX-License-Identifier: Apache-2.0
// train::two_tower_model: state_dict names, serving parity after freeze, finite-difference
// gradients (with and without normalisation), pointwise and sampled-softmax training, bad input.
#include <doctest/doctest.h>

#include <recpipe/train/dynamic_table.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/trainer.hpp>
#include <recpipe/train/two_tower_model.hpp>
#include "../../common/learning_fixtures.hpp"

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

models::two_tower_config tiny_config(bool normalize) {
  models::two_tower_config c;
  c.user.dense_dim = 2;
  c.user.tables = {{7, 4}};
  c.user.pooling = cpu::pooling::mean;
  c.user.dims = {6, 3};
  c.item.dense_dim = 1;
  c.item.tables = {{5, 4}, {6, 2}};
  c.item.pooling = cpu::pooling::sum;
  c.item.dims = {3};
  c.normalize = normalize;
  return c;
}

struct tiny {
  std::vector<std::shared_ptr<simple_table>> all = {std::make_shared<simple_table>(7, 4, 0.1f, 1),
                                                    std::make_shared<simple_table>(5, 4, 0.1f, 2),
                                                    std::make_shared<simple_table>(6, 2, 0.1f, 3)};
  train::two_tower_model model(bool normalize, float temperature = 1.0f) const {
    return train::two_tower_model(tiny_config(normalize), {all[0]}, {all[1], all[2]}, 3, temperature);
  }
};

}  // namespace

TEST_CASE("two_tower_model: parameters carry the serving model's names") {
  tiny t;
  auto m = t.model(true);
  std::vector<std::string> names;
  for (auto* p : m.parameters()) names.push_back(p->name);
  CHECK(names == std::vector<std::string>{"user_tower.mlp.layers.0.weight", "user_tower.mlp.layers.0.bias",
                                          "user_tower.mlp.layers.2.weight", "user_tower.mlp.layers.2.bias",
                                          "item_tower.mlp.layers.0.weight", "item_tower.mlp.layers.0.bias"});
  CHECK(m.parameters()[0]->shape == std::vector<std::size_t>{6, 6});
  CHECK(m.parameters()[4]->shape == std::vector<std::size_t>{3, 7});
  CHECK(m.dense_dim() == 3);
  CHECK(m.num_sparse_features() == 3);
}

TEST_CASE("two_tower_model: forward equals the frozen serving model's forward") {
  for (bool normalize : {true, false}) {
    tiny t;
    auto m = t.model(normalize, 0.5f);
    train::example_batch b = random_batch(9, 3, {7, 5, 6}, 3, true);
    train::two_tower_model::workspace ws;
    auto logits = m.forward(b.inputs(), ws);
    auto frozen = m.freeze();
    CHECK(frozen.id_maps.size() == 3);
    matrix<float> served(9, 1);
    frozen.forward(b.inputs(), served.view());
    for (std::size_t i = 0; i < 9; ++i) CHECK(served(i, 0) == doctest::Approx(0.5f * logits(i, 0)).epsilon(1e-5));
  }
}

TEST_CASE("two_tower_model: backward matches finite differences") {
  for (bool normalize : {true, false}) {
    CAPTURE(normalize);
    tiny t;
    auto m = t.model(normalize, 0.7f);
    train::example_batch b = random_batch(5, 3, {7, 5, 6}, 11, true);
    recpipe::testing::check_model_gradients(m, t.all, b);
  }
}

TEST_CASE("two_tower_model: sampled-softmax retrieval training learns which item each user takes") {
  // 30 users, each with one favourite of 30 items; dynamic id tables, Adam, row-wise Adagrad.
  const std::size_t n = 30;
  train::two_tower_model model = recpipe::testing::small_retrieval_two_tower();
  train::adam adam({.lr = 0.01});
  train::two_tower_model::workspace ws;
  std::mt19937 gen(4);
  auto favourite = [&](std::size_t u) { return (u * 7 + 3) % n; };
  float first = 0, last = 0;
  for (int step = 0; step < 200; ++step) {
    train::example_batch b(0, 2);
    std::vector<id_type> items;
    for (int e = 0; e < 16; ++e) {
      const std::size_t u = gen() % n;
      b.begin_example(1.0f);
      b.add_id(0, static_cast<id_type>(u));
      b.add_id(1, static_cast<id_type>(favourite(u)));
      items.push_back(static_cast<id_type>(favourite(u)));
    }
    const auto r = train::train_step_sampled_softmax(model, ws, b, items, {}, train::optimizer_step(adam));
    CHECK_FALSE(r.skipped);
    if (step < 10) first += r.loss / 10;
    if (step >= 190) last += r.loss / 10;
  }
  CHECK(last < 0.5f * first);
  // Every user's favourite is its top item among all n.
  auto frozen = model.freeze();
  std::size_t hits = 0;
  for (std::size_t u = 0; u < n; ++u) {
    train::example_batch b(0, 2);
    for (std::size_t i = 0; i < n; ++i) {
      b.begin_example(0.0f);
      b.add_id(0, static_cast<id_type>(u));
      b.add_id(1, static_cast<id_type>(i));
    }
    matrix<float> scores(n, 1);
    frozen.forward(b.inputs(), scores.view());
    std::size_t best = 0;
    for (std::size_t i = 1; i < n; ++i)
      if (scores(i, 0) > scores(best, 0)) best = i;
    hits += best == favourite(u);
  }
  CHECK(hits >= n * 8 / 10);
}

TEST_CASE("two_tower_model: bad input") {
  tiny t;
  SUBCASE("temperature") {
    CHECK_THROWS_WITH_AS(t.model(true, 0.0f), doctest::Contains("temperature"), error);
    CHECK_THROWS_WITH_AS(t.model(true, std::numeric_limits<float>::quiet_NaN()), doctest::Contains("temperature"), error);
  }
  SUBCASE("towers of different output dims") {
    auto c = tiny_config(true);
    c.item.dims = {4};
    CHECK_THROWS_AS(train::two_tower_model(c, {t.all[0]}, {t.all[1], t.all[2]}, 1), error);
  }
  SUBCASE("a missing item feature") {
    auto m = t.model(true);
    train::two_tower_model::workspace ws;
    train::example_batch b = random_batch(2, 3, {7, 5}, 1);
    CHECK_THROWS_WITH_AS(m.forward(b.inputs(), ws), doctest::Contains("3 sparse features but 2"), error);
  }
  SUBCASE("the frozen model refuses dense inputs of another width instead of reading past them") {
    auto frozen = t.model(true).freeze();
    train::example_batch narrow = random_batch(4, 2, {7, 5, 6}, 1);  // 2 dense columns, the towers take 2 + 1
    matrix<float> out(4, 1);
    CHECK_THROWS_WITH_AS(frozen.forward(narrow.inputs(), out.view()),
                         "recpipe: train::frozen<two_tower>: forward: dense has 2 columns but the towers take 2 (user) "
                         "+ 1 (item)",
                         error);
  }
  SUBCASE("NaN feature: the step is skipped, nothing written") {
    auto m = t.model(true);
    train::two_tower_model::workspace ws;
    train::example_batch b = random_batch(4, 3, {7, 5, 6}, 1);
    b.dense_row()[2] = std::numeric_limits<float>::quiet_NaN();
    const auto before = m.parameters()[0]->value;
    train::sgd opt({.lr = 0.1});
    CHECK(train::train_step(m, ws, b, train::optimizer_step(opt)).skipped);
    CHECK(m.parameters()[0]->value == before);
  }
}
