// SPDX-License-Identifier: Apache-2.0
// Tests for online features: values, the predict-then-observe protocol (nothing from the
// future leaks into a prediction) and bad input.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <recpipe/train/online_features.hpp>

namespace train = recpipe::train;
using features = std::array<float, train::online_features::dense_dim>;

namespace {
features dense_of(const train::online_features& f, recpipe::id_type user, recpipe::id_type item, std::int64_t t) {
  features x{};
  f.dense(user, item, t, x);
  return x;
}
}  // namespace

TEST_CASE("online_features: an empty state gives the prior and marks the item unseen") {
  train::online_features f;
  const features x = dense_of(f, 1, 2, 100);
  CHECK(x[0] == 0.0f);
  CHECK(x[1] == 0.0f);
  CHECK(x[2] == doctest::Approx(0.5));
  CHECK(x[3] == doctest::Approx(0.5));
  CHECK(x[4] == 0.0f);
  CHECK(x[5] == 1.0f);
  CHECK(f.item_is_fresh(2, 100, 7 * 86400));
}

TEST_CASE("online_features: counts, smoothed like rates and item age") {
  train::online_features f({.smoothing = 2.0});
  f.observe(1, 10, 1.0f, 0);
  f.observe(1, 11, 1.0f, 0);
  f.observe(2, 10, 0.0f, 86400);
  f.observe(1, 10, 1.0f, 86400);
  // 4 events, 3 likes: prior 0.75.
  CHECK(f.prior() == doctest::Approx(0.75));
  const features x = dense_of(f, 1, 10, 3 * 86400);
  CHECK(x[0] == doctest::Approx(std::log1p(3.0)));
  CHECK(x[1] == doctest::Approx(std::log1p(3.0)));
  CHECK(x[2] == doctest::Approx((3.0 + 2.0 * 0.75) / (3.0 + 2.0)));  // user 1: 3 of 3
  CHECK(x[3] == doctest::Approx((2.0 + 2.0 * 0.75) / (3.0 + 2.0)));  // item 10: 2 of 3
  CHECK(x[4] == doctest::Approx(std::log1p(3.0)));                   // first seen at 0, now day 3
  CHECK(x[5] == 0.0f);
  CHECK(f.user_events(1) == 3);
  CHECK(f.item_events(10) == 3);
  CHECK(f.item_events(99) == 0);
  CHECK(f.item_is_fresh(10, 6 * 86400, 7 * 86400));
  CHECK_FALSE(f.item_is_fresh(10, 7 * 86400, 7 * 86400));
  // A timestamp before the first sighting gives age 0, not a negative log.
  CHECK(dense_of(f, 1, 11, -50)[4] == 0.0f);
}

TEST_CASE("online_features: a prediction depends only on the events before it") {
  // Replay a random stream twice: once whole, once cut right after event k. The features of
  // event k (computed before observing it) must be identical, whatever comes after.
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> user(0, 20), item(0, 50), label(0, 1);
  struct event {
    int user, item;
    float label;
    std::int64_t t;
  };
  std::vector<event> stream;
  for (int i = 0; i < 500; ++i)
    stream.push_back({user(rng), item(rng), static_cast<float>(label(rng)), static_cast<std::int64_t>(i) * 600});

  train::online_features whole;
  std::vector<features> logged;
  for (const event& e : stream) {
    logged.push_back(dense_of(whole, e.user, e.item, e.t));
    whole.observe(e.user, e.item, e.label, e.t);
  }
  for (std::size_t k : {0u, 1u, 37u, 250u, 499u}) {
    train::online_features prefix;
    for (std::size_t i = 0; i < k; ++i) prefix.observe(stream[i].user, stream[i].item, stream[i].label, stream[i].t);
    const features x = dense_of(prefix, stream[k].user, stream[k].item, stream[k].t);
    for (std::size_t j = 0; j < x.size(); ++j) CHECK(x[j] == logged[k][j]);
  }
  // And flipping the label of event k changes nothing logged at or before k.
  std::vector<event> flipped = stream;
  flipped[250].label = 1.0f - flipped[250].label;
  train::online_features other;
  for (std::size_t i = 0; i <= 250; ++i) {
    const features x = dense_of(other, flipped[i].user, flipped[i].item, flipped[i].t);
    for (std::size_t j = 0; j < x.size(); ++j) CHECK(x[j] == logged[i][j]);
    other.observe(flipped[i].user, flipped[i].item, flipped[i].label, flipped[i].t);
  }
}

TEST_CASE("online_features: bad input") {
  train::online_features f;
  CHECK_THROWS_WITH_AS(f.observe(1, 2, std::numeric_limits<float>::quiet_NaN(), 0),
                       doctest::Contains("label must be finite and in [0, 1]"), recpipe::error);
  CHECK_THROWS_AS(f.observe(1, 2, 2.0f, 0), recpipe::error);
  CHECK_THROWS_AS(f.observe(1, 2, -1.0f, 0), recpipe::error);
  CHECK(f.events() == 0);  // nothing was counted
  std::array<float, 3> small{};
  CHECK_THROWS_WITH_AS(f.dense(1, 2, 0, small), doctest::Contains("out has 3 floats but needs 6"), recpipe::error);
  CHECK_THROWS_AS(train::online_features({.smoothing = -1.0}), recpipe::error);
  CHECK_THROWS_AS(train::online_features({.smoothing = std::numeric_limits<double>::infinity()}), recpipe::error);
  // Negative and huge ids are just keys.
  f.observe(-5, std::numeric_limits<recpipe::id_type>::max(), 1.0f, 0);
  CHECK(f.user_events(-5) == 1);
}

TEST_CASE("category_bags: multi-hot bags with an unknown id") {
  train::category_bags bags(3);
  bags.set(42, {0, 2});
  bags.set(43, {});
  CHECK(bags.rows() == 4);
  const auto b = bags.bag(42);
  REQUIRE(b.size() == 2);
  CHECK(b[0] == 0);
  CHECK(b[1] == 2);
  REQUIRE(bags.bag(7).size() == 1);
  CHECK(bags.bag(7)[0] == 3);
  CHECK(bags.bag(43)[0] == bags.unknown_id());
  CHECK_THROWS_WITH_AS(bags.set(1, {3}), doctest::Contains("category 3 of item 1 is out of range [0, 3)"),
                       recpipe::error);
}
