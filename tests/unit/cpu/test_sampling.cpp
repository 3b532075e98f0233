// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu/sampling.hpp (Gumbel top-k sampling without replacement).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include <recpipe/cpu/sampling.hpp>

namespace cpu = recpipe::cpu;
using recpipe::id_type;

TEST_CASE("sampling is deterministic per seed, without replacement, and in draw order") {
  std::vector<float> logits(1000);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i));
  std::vector<id_type> a(50), b(50), c(50);
  std::vector<float> sa(50), sb(50), sc(50);
  CHECK(cpu::sample_without_replacement(logits, {}, 50, 1.0f, 7, a, sa) == 50);
  CHECK(cpu::sample_without_replacement(logits, {}, 50, 1.0f, 7, b, sb) == 50);
  CHECK(cpu::sample_without_replacement(logits, {}, 50, 1.0f, 8, c, sc) == 50);
  CHECK(a == b);
  CHECK(a != c);
  CHECK(std::set<id_type>(a.begin(), a.end()).size() == 50);
  for (std::size_t i = 0; i < 50; ++i) CHECK(sa[i] == logits[static_cast<std::size_t>(a[i])]);
}

TEST_CASE("first draws follow softmax(logits / temperature); pairs follow Plackett-Luce") {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, -1.0f};
  for (float temperature : {1.0f, 2.0f}) {
    std::vector<double> p(4);
    double total = 0;
    for (std::size_t i = 0; i < 4; ++i) total += (p[i] = std::exp(logits[i] / temperature));
    for (auto& v : p) v /= total;
    const int trials = 40000;
    std::vector<int> first(4, 0), second_after_2(4, 0);
    int first_is_2 = 0;
    std::vector<id_type> ids(2);
    std::vector<float> picked(2);
    for (int s = 0; s < trials; ++s) {
      REQUIRE(cpu::sample_without_replacement(logits, {}, 2, temperature, static_cast<std::uint64_t>(s), ids, picked) == 2);
      ++first[static_cast<std::size_t>(ids[0])];
      if (ids[0] == 2) {
        ++first_is_2;
        ++second_after_2[static_cast<std::size_t>(ids[1])];
      }
    }
    for (std::size_t i = 0; i < 4; ++i) {
      const double sigma = std::sqrt(p[i] * (1 - p[i]) / trials);
      CHECK(std::abs(first[i] / static_cast<double>(trials) - p[i]) < 5 * sigma + 1e-3);
    }
    // P(second = j | first = 2) = p_j / (1 - p_2)
    for (std::size_t j : {0u, 1u, 3u}) {
      const double q = p[j] / (1 - p[2]);
      const double sigma = std::sqrt(q * (1 - q) / first_is_2);
      CHECK(std::abs(second_after_2[j] / static_cast<double>(first_is_2) - q) < 5 * sigma + 1e-3);
    }
  }
}

TEST_CASE("NaN and -inf are never drawn; ids map through; bad arguments throw") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), ninf = -std::numeric_limits<float>::infinity();
  const std::vector<float> logits = {nan, 0.5f, ninf, -3.0f, nan};
  const std::vector<id_type> ids = {10, 11, 12, 13, 14};
  std::vector<id_type> out(5);
  std::vector<float> scores(5);
  for (std::uint64_t seed = 0; seed < 100; ++seed) {
    REQUIRE(cpu::sample_without_replacement(logits, ids, 5, 0.5f, seed, out, scores) == 2);
    CHECK(std::set<id_type>{out[0], out[1]} == std::set<id_type>{11, 13});
  }
  CHECK_THROWS_WITH_AS(cpu::sample_without_replacement(logits, ids, 2, -1.0f, 1, out, scores),
                       doctest::Contains("temperature must be finite and >= 0"), recpipe::error);
  CHECK_THROWS_AS(cpu::sample_without_replacement(logits, ids, 2, nan, 1, out, scores), recpipe::error);
  CHECK_THROWS_AS(cpu::sample_without_replacement(logits, ids, 2, std::numeric_limits<float>::infinity(), 1, out, scores),
                  recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::sample_without_replacement(logits, std::vector<id_type>(3), 2, 1.0f, 1, out, scores),
                       doctest::Contains("ids has 3 entries"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::sample_without_replacement(logits, ids, 4, 1.0f, 1, std::span<id_type>(out).first(1), scores),
                       doctest::Contains("4 are needed"), recpipe::error);
  CHECK(cpu::sample_without_replacement({}, {}, 3, 1.0f, 1, out, scores) == 0);
}

TEST_CASE("a tiny temperature reproduces top-k order") {
  std::vector<float> logits = {0.1f, 0.9f, 0.5f, 0.7f, 0.3f};
  std::vector<id_type> out(3);
  std::vector<float> scores(3);
  cpu::sample_without_replacement(logits, {}, 3, 1e-4f, 3, out, scores);
  CHECK(out == std::vector<id_type>{1, 3, 2});
}

TEST_CASE("temperature 0 is a plain top-k (ties by id); the noise is keyed by item id, not position") {
  const std::vector<float> logits = {0.1f, 0.9f, 0.5f, 0.9f, 0.3f};
  const std::vector<id_type> ids = {50, 40, 30, 20, 10};
  std::vector<id_type> out(3);
  std::vector<float> scores(3);
  REQUIRE(cpu::sample_without_replacement(logits, ids, 3, 0.0f, 3, out, scores) == 3);
  CHECK(out == std::vector<id_type>{20, 40, 30});
  CHECK(scores == std::vector<float>{0.9f, 0.9f, 0.5f});
  // The same items in another order draw the same (the key is math::sampling_key of the id).
  std::vector<float> logits2(100);
  std::vector<id_type> ids2(100);
  for (std::size_t i = 0; i < 100; ++i) {
    logits2[i] = std::cos(static_cast<float>(i));
    ids2[i] = static_cast<id_type>(1000 + i);
  }
  std::vector<float> reversed_logits(logits2.rbegin(), logits2.rend());
  std::vector<id_type> reversed_ids(ids2.rbegin(), ids2.rend());
  std::vector<id_type> a(10), b(10);
  std::vector<float> sa(10), sb(10);
  cpu::sample_without_replacement(logits2, ids2, 10, 0.8f, 99, a, sa);
  cpu::sample_without_replacement(reversed_logits, reversed_ids, 10, 0.8f, 99, b, sb);
  CHECK(a == b);
  CHECK(sa == sb);
  // And it is the rule itself: the first draw has the largest sampling_key.
  const std::uint64_t stream = recpipe::math::sampling_stream(99, 0);
  std::size_t best = 0;
  for (std::size_t i = 1; i < 100; ++i)
    if (recpipe::math::sampling_key(logits2[i], 0.8f, stream, ids2[i]) >
        recpipe::math::sampling_key(logits2[best], 0.8f, stream, ids2[best]))
      best = i;
  CHECK(a[0] == ids2[best]);
}
