// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu/topk.hpp against a full-sort reference on adversarial score distributions.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/topk.hpp>

namespace cpu = recpipe::cpu;
using recpipe::id_type;

namespace {
// Sorts every (score, id) with the documented order and keeps min(k, n).
std::vector<std::pair<float, id_type>> reference(const std::vector<float>& scores, const std::vector<id_type>& ids,
                                                 std::size_t k) {
  std::vector<std::pair<float, id_type>> all;
  for (std::size_t i = 0; i < scores.size(); ++i) all.emplace_back(scores[i], ids.empty() ? static_cast<id_type>(i) : ids[i]);
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    const bool an = std::isnan(a.first), bn = std::isnan(b.first);
    if (an != bn) return bn;
    if (!an && a.first != b.first) return a.first > b.first;
    return a.second < b.second;
  });
  all.resize(std::min(k, all.size()));
  return all;
}

void check_top_k(const std::vector<float>& scores, const std::vector<id_type>& ids, std::size_t k) {
  const auto want = reference(scores, ids, k);
  std::vector<id_type> got_ids(want.size() + 2, -7);
  std::vector<float> got_scores(want.size() + 2, -7.0f);
  // top_k proper for k <= n; beyond n, top_k_at_most (top_k itself throws: see the bad-argument case).
  const std::size_t count = k <= scores.size() ? cpu::top_k(scores, ids, k, got_ids, got_scores)
                                               : cpu::top_k_at_most(scores, ids, k, got_ids, got_scores);
  REQUIRE(count == want.size());
  for (std::size_t i = 0; i < count; ++i) {
    CHECK(got_ids[i] == want[i].second);
    if (std::isnan(want[i].first))
      CHECK(std::isnan(got_scores[i]));
    else
      CHECK(got_scores[i] == want[i].first);
  }
  CHECK(got_ids[count] == -7);  // nothing written past the count
}
}  // namespace

TEST_CASE("top_k agrees with a full sort on uniform, sorted, equal, near-equal and NaN-laden scores") {
  std::mt19937 rng(30);
  for (std::size_t n : {0u, 1u, 2u, 15u, 17u, 1000u, 20000u, 100000u}) {
    std::vector<std::vector<float>> cases;
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = uniform(rng);
    cases.push_back(v);
    std::sort(v.begin(), v.end());
    cases.push_back(v);                                  // ascending: the threshold rises every chunk
    cases.push_back(std::vector<float>(v.rbegin(), v.rend()));  // descending
    cases.push_back(std::vector<float>(n, 0.25f));       // all equal: ties break by id
    std::vector<float> near(n);
    for (std::size_t i = 0; i < n; ++i) near[i] = 1.0f + static_cast<float>(i % 3) * std::numeric_limits<float>::epsilon();
    cases.push_back(near);
    std::vector<float> nan_mix = cases[0];
    for (std::size_t i = 0; i < n; i += 3) nan_mix[i] = std::numeric_limits<float>::quiet_NaN();
    for (std::size_t i = 1; i < n; i += 7) nan_mix[i] = -std::numeric_limits<float>::infinity();
    cases.push_back(nan_mix);
    std::vector<float> mostly_nan(n, std::numeric_limits<float>::quiet_NaN());
    if (n > 4) mostly_nan[n / 2] = -std::numeric_limits<float>::infinity(), mostly_nan[1] = 0.0f, mostly_nan[3] = -0.0f;
    cases.push_back(mostly_nan);
    for (std::size_t c = 0; c < cases.size(); ++c)
      for (std::size_t k : {0u, 1u, 2u, 10u, 100u, 1000u, 200000u}) {
        CAPTURE(n); CAPTURE(c); CAPTURE(k);
        check_top_k(cases[c], {}, k);
      }
  }
}

TEST_CASE("top_k uses the given ids for output and tie-breaking") {
  std::mt19937 rng(31);
  const std::size_t n = 50000;
  std::vector<float> scores(n);
  std::vector<id_type> ids(n);
  std::uniform_int_distribution<int> coarse(0, 40);  // many ties
  for (std::size_t i = 0; i < n; ++i) {
    scores[i] = static_cast<float>(coarse(rng));
    ids[i] = static_cast<id_type>((i * 7919) % 1000003);
  }
  for (std::size_t k : {1u, 10u, 100u, 5000u}) check_top_k(scores, ids, k);
}

TEST_CASE("top_k_rows selects per row") {
  std::mt19937 rng(32);
  const std::size_t rows = 4, n = 3000, k = 25;
  std::vector<float> scores(rows * n);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (auto& s : scores) s = uniform(rng);
  recpipe::matrix<id_type> ids(rows, k);
  recpipe::matrix<float> best(rows, k);
  CHECK(cpu::top_k_rows({scores.data(), rows, n}, k, ids.view(), best.view()) == k);
  for (std::size_t r = 0; r < rows; ++r) {
    const auto want = reference(std::vector<float>(scores.begin() + static_cast<std::ptrdiff_t>(r * n),
                                                   scores.begin() + static_cast<std::ptrdiff_t>((r + 1) * n)),
                                {}, k);
    for (std::size_t i = 0; i < k; ++i) CHECK(ids(r, i) == want[i].second);
  }
  recpipe::matrix<id_type> few(rows, 3);
  CHECK_THROWS_WITH_AS(cpu::top_k_rows({scores.data(), rows, n}, k, few.view(), best.view()),
                       doctest::Contains("outputs have 3 columns but 25 are needed"), recpipe::error);
  recpipe::matrix<id_type> short_rows(2, k);
  CHECK_THROWS_WITH_AS(cpu::top_k_rows({scores.data(), rows, n}, k, short_rows.view(), best.view()),
                       doctest::Contains("rows"), recpipe::error);
}

TEST_CASE("top_k rejects bad ids and short outputs") {
  std::vector<float> scores(10, 1.0f);
  std::vector<id_type> ids(9), out(3);
  std::vector<float> out_scores(3);
  CHECK_THROWS_WITH_AS(cpu::top_k(scores, ids, 3, out, out_scores), doctest::Contains("ids has 9 entries"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::top_k(scores, {}, 4, out, out_scores), doctest::Contains("4 are needed"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::top_k(std::span<const float>(scores).first(2), {}, 5, out, out_scores),
                       doctest::Contains("k = 5 is larger than the 2 scores"), recpipe::error);
  CHECK(cpu::top_k_at_most(std::span<const float>(scores).first(2), {}, 5, out, out_scores) == 2);  // keeps n
  CHECK(cpu::top_k_at_most(std::span<const float>(), {}, 5, out, out_scores) == 0);
  recpipe::matrix<float> grid(2, 3);
  recpipe::matrix<id_type> grid_ids(2, 4);
  recpipe::matrix<float> grid_best(2, 4);
  CHECK_THROWS_WITH_AS(cpu::top_k_rows(grid.view(), 4, grid_ids.view(), grid_best.view()),
                       doctest::Contains("top_k_rows: k = 4 is larger than the 3 columns"), recpipe::error);
}
