// SPDX-License-Identifier: Apache-2.0
// recpipe tests: train/metrics.hpp (exact AUC with ties, sliding-window AUC) against a pairwise count.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <recpipe/train/metrics.hpp>

namespace train = recpipe::train;

namespace {
// O(n^2) pairwise definition: P(score+ > score-) + 0.5 P(score+ == score-).
double brute_force_auc(const std::vector<float>& s, const std::vector<float>& y) {
  double wins = 0.0, pairs = 0.0;
  for (std::size_t i = 0; i < s.size(); ++i)
    for (std::size_t j = 0; j < s.size(); ++j)
      if (y[i] > 0.5f && y[j] <= 0.5f) {
        pairs += 1;
        wins += s[i] > s[j] ? 1.0 : (s[i] == s[j] ? 0.5 : 0.0);
      }
  return wins / pairs;
}
}  // namespace

TEST_CASE("auc: matches the pairwise count, with many ties") {
  std::mt19937 rng(1);
  for (int round = 0; round < 20; ++round) {
    const std::size_t n = 1 + rng() % 300;
    std::vector<float> s(n), y(n);
    for (std::size_t i = 0; i < n; ++i) {
      s[i] = static_cast<float>(rng() % (round % 2 ? 5 : 1000)) * 0.25f;  // odd rounds: heavy ties
      y[i] = static_cast<float>(rng() % 3 == 0);
    }
    y[0] = 1.0f;
    if (n > 1) y[1] = 0.0f;
    if (n == 1) {
      CHECK(std::isnan(train::auc(s, y)));
      continue;
    }
    CHECK(train::auc(s, y) == doctest::Approx(brute_force_auc(s, y)).epsilon(1e-12));
  }
}

TEST_CASE("auc: known values and edge cases") {
  CHECK(train::auc(std::vector<float>{1, 2, 3, 4}, std::vector<float>{0, 0, 1, 1}) == 1.0);
  CHECK(train::auc(std::vector<float>{4, 3, 2, 1}, std::vector<float>{0, 0, 1, 1}) == 0.0);
  CHECK(train::auc(std::vector<float>{1, 1, 1, 1}, std::vector<float>{0, 1, 0, 1}) == 0.5);
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(train::auc(std::vector<float>{-inf, inf}, std::vector<float>{0, 1}) == 1.0);
  CHECK(std::isnan(train::auc(std::vector<float>{1, 2}, std::vector<float>{1, 1})));
  CHECK(std::isnan(train::auc({}, {})));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(train::auc(std::vector<float>{1, nan}, std::vector<float>{0, 1}), doctest::Contains("score 1 is nan"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(train::auc(std::vector<float>{1, 2}, std::vector<float>{0, nan}), doctest::Contains("label 1"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(train::auc(std::vector<float>{1, 2}, std::vector<float>{0, 2}), doctest::Contains("label 1 is 2"),
                       recpipe::error);
  CHECK_THROWS_AS(train::auc(std::vector<float>{1, 2}, std::vector<float>{0}), recpipe::error);
}

TEST_CASE("running_auc: equals auc over the last window events and skips bad events") {
  std::mt19937 rng(2);
  std::vector<float> s(1000), y(1000);
  for (std::size_t i = 0; i < s.size(); ++i) {
    y[i] = static_cast<float>(rng() % 2);
    s[i] = y[i] + static_cast<float>(rng() % 100) * 0.02f;
  }
  train::running_auc window(100);
  CHECK(std::isnan(window.value()));
  for (std::size_t i = 0; i < s.size(); ++i) {
    window.add(s[i], y[i]);
    if (i % 97 == 0 || i == s.size() - 1) {
      const std::size_t first = i + 1 >= 100 ? i + 1 - 100 : 0;
      const std::vector<float> ws(s.begin() + static_cast<long>(first), s.begin() + static_cast<long>(i + 1));
      const std::vector<float> wy(y.begin() + static_cast<long>(first), y.begin() + static_cast<long>(i + 1));
      const double want = train::auc(ws, wy);
      if (std::isnan(want)) CHECK(std::isnan(window.value()));
      else CHECK(window.value() == doctest::Approx(want).epsilon(1e-12));
    }
  }
  CHECK(window.size() == 100);
  CHECK(window.seen() == 1000);
  window.add(std::numeric_limits<float>::quiet_NaN(), 1.0f);
  window.add(0.5f, 3.0f);
  window.add(0.5f, std::numeric_limits<float>::quiet_NaN());
  CHECK(window.skipped() == 3);
  CHECK(window.seen() == 1000);
  window.clear();
  CHECK(window.size() == 0);
  CHECK_THROWS_AS(train::running_auc(0), recpipe::error);
  CHECK_THROWS_AS(window.add(std::vector<float>{1, 2}, std::vector<float>{1}), recpipe::error);
}
