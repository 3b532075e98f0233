// SPDX-License-Identifier: Apache-2.0
// Shared fixture for trainer tests: an event type, an MLP over two simple tables, a learnable stream.
#pragma once

#include <recpipe/train/mlp_model.hpp>
#include <recpipe/train/trainer.hpp>

#include "train_fixtures.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <vector>

namespace recpipe::testing {


struct event {
  std::int64_t user = 0, item = 0;
  float label = 0, feature = 0;
  std::int64_t time = 0;
};

constexpr std::size_t num_users = 60, num_items = 40;

struct fixture {
  std::shared_ptr<simple_table> users = std::make_shared<simple_table>(num_users, 8, 5.0f, 1);
  std::shared_ptr<simple_table> items = std::make_shared<simple_table>(num_items, 8, 5.0f, 2);
  train::mlp_model model{[] {
                           train::mlp_model_config c;
                           c.dense_dim = 1;
                           c.tables = {{num_users, 8}, {num_items, 8}};
                           c.hidden = {16, 8};
                           return c;
                         }(),
                         {users, items}, 3};
  float lr = 0.5f;
  train::dense_step_fn sgd() {
    return [this](std::span<train::parameter* const> ps) {
      for (auto* p : ps)
        for (std::size_t i = 0; i < p->size(); ++i) p->value[i] -= lr * p->grad[i];
    };
  }
  static void featurize(const event& e, train::example_batch& b) {
    b.begin_example(e.label);
    b.dense_row()[0] = e.feature;
    b.add_id(0, e.user);
    b.add_id(1, e.item);
  }
  train::trainer_options quiet(std::size_t batch = 32) {
    train::trainer_options o;
    o.batch_size = batch;
    o.progress = train::progress_mode::off;
    return o;
  }
};

// A learnable stream: like when the user's and the item's hidden signs agree.
struct synthetic_stream {
  std::mt19937 gen{17};
  std::vector<int> user_sign = signs(num_users, 1), item_sign = signs(num_items, 2);
  std::size_t left;
  std::int64_t time = 0;
  explicit synthetic_stream(std::size_t n) : left(n) {}
  static std::vector<int> signs(std::size_t n, unsigned seed) {
    std::mt19937 g(seed);
    std::vector<int> s(n);
    for (int& x : s) x = g() % 2 ? 1 : -1;
    return s;
  }
  std::optional<event> operator()() {
    if (left == 0) return std::nullopt;
    --left;
    event e;
    e.user = static_cast<std::int64_t>(gen() % num_users);
    e.item = static_cast<std::int64_t>(gen() % num_items);
    e.label = user_sign[static_cast<std::size_t>(e.user)] == item_sign[static_cast<std::size_t>(e.item)] ? 1.0f : 0.0f;
    e.feature = 0.1f;
    e.time = ++time;
    return e;
  }
};

}  // namespace recpipe::testing
