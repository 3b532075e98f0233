// SPDX-License-Identifier: Apache-2.0
// recpipe tests: the backend-neutral math/ functors (half, activations, softmax, dot, random, top-k order).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <recpipe/math/activation.hpp>
#include <recpipe/math/cross.hpp>
#include <recpipe/math/embedding.hpp>
#include <recpipe/math/half.hpp>
#include <recpipe/math/random.hpp>
#include <recpipe/math/softmax.hpp>
#include <recpipe/math/topk.hpp>
#include <recpipe/math/transformer.hpp>
#include <recpipe/math/vector.hpp>

namespace math = recpipe::math;

TEST_CASE("every binary16 pattern survives half -> float -> half") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = math::half_to_float(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) {
      CHECK((math::float_to_half(f) & 0x7c00) == 0x7c00);
      continue;
    }
    REQUIRE(math::float_to_half(f) == h);
  }
  CHECK(math::half_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(math::half_to_float(0xfc00) == -std::numeric_limits<float>::infinity());
}

TEST_CASE("float_to_half rounds to the nearest half, ties to even") {
  std::mt19937 rng(40);
  std::uniform_real_distribution<float> mag(-20.0f, 17.0f);
  for (int i = 0; i < 200000; ++i) {
    const float f = std::ldexp(1.0f, static_cast<int>(mag(rng))) * std::uniform_real_distribution<float>(-2.0f, 2.0f)(rng);
    const std::uint16_t h = math::float_to_half(f);
    const double got = math::half_to_float(h);
    if (std::isinf(got)) {
      CHECK(std::abs(f) >= 65520.0f);
      continue;
    }
    // neighbours of h in magnitude must not be closer
    for (int step : {-1, 1}) {
      const std::uint16_t other = static_cast<std::uint16_t>((h & 0x7fff) + step) | (h & 0x8000);
      if ((h & 0x7fff) == 0 && step < 0) continue;
      const double alt = math::half_to_float(other);
      if (std::isinf(alt)) continue;
      REQUIRE(std::abs(got - f) <= std::abs(alt - f));
      if (std::abs(got - f) == std::abs(alt - f)) CHECK((h & 1) == 0);
    }
  }
  CHECK(math::float_to_half(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie -> even
  CHECK(math::float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
}

TEST_CASE("activations, softmax and dot") {
  CHECK(math::activate(math::activation::relu, -1.0f) == 0.0f);
  CHECK(math::activate(math::activation::gelu, 1.0f) == doctest::Approx(0.8413447));
  CHECK(math::activate(math::activation::gelu_tanh, 1.0f) == doctest::Approx(0.8411920));
  CHECK(math::activate(math::activation::sigmoid, 0.0f) == 0.5f);
  float row[3] = {1000.0f, 1001.0f, -std::numeric_limits<float>::infinity()};
  math::softmax_inplace(row, 3);
  CHECK(row[1] == doctest::Approx(1.0 / (1.0 + std::exp(-1.0))));
  CHECK(row[2] == 0.0f);
  float masked[2] = {-std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()};
  math::softmax_inplace(masked, 2);
  CHECK(masked[0] == 0.0f);
  std::vector<float> a(37), b(37);
  double want = 0;
  for (std::size_t i = 0; i < 37; ++i) {
    a[i] = static_cast<float>(i) * 0.5f;
    b[i] = 1.0f - static_cast<float>(i) * 0.01f;
    want += static_cast<double>(a[i]) * b[i];
  }
  CHECK(math::dot(a.data(), b.data(), 37) == doctest::Approx(want).epsilon(1e-6));
  float four[4];
  math::dot4(a.data(), b.data(), a.data(), b.data(), a.data(), 37, four);
  CHECK(four[0] == math::dot(a.data(), b.data(), 37));
  // The L2-normalisation factor of the two-tower towers (CPU and GPU): 1 / max(||x||, 1e-12).
  CHECK(math::inverse_l2_norm(25.0f) == 0.2f);
  CHECK(math::inverse_l2_norm(0.0f) == 1e12f);
  CHECK(std::isnan(math::inverse_l2_norm(std::numeric_limits<float>::quiet_NaN())));
  CHECK(math::inverse_l2_norm(std::numeric_limits<float>::infinity()) == 0.0f);
  float out[2];
  const float x0[2] = {2, 3}, p[2] = {1, 1}, bias[2] = {1, 0}, xl[2] = {5, 5};
  math::cross_epilogue(x0, p, bias, xl, out, 2);
  CHECK(out[0] == 9.0f);
  CHECK(out[1] == 8.0f);
}

TEST_CASE("interaction_pair inverts interaction_index, with and without the diagonal") {
  for (const bool self : {false, true}) {
    for (std::size_t f = 1; f <= 80; ++f) {
      std::size_t expected = 0;  // the CPU's output order: i ascending, then j ascending
      for (std::size_t i = 0; i < f; ++i)
        for (std::size_t j = 0; j < i + (self ? 1 : 0); ++j, ++expected) {
          REQUIRE(math::interaction_index(i, j, self) == expected);
          std::size_t pi = 99, pj = 99;
          math::interaction_pair(expected, self, pi, pj);
          REQUIRE(pi == i);
          REQUIRE(pj == j);
        }
    }
  }
  // Far beyond any model (F = 5000): the square-root guess is corrected, never trusted.
  for (std::size_t i : {std::size_t{1000}, std::size_t{4095}, std::size_t{4999}}) {
    std::size_t pi = 0, pj = 0;
    math::interaction_pair(math::interaction_index(i, i - 1, false), false, pi, pj);
    CHECK(pi == i);
    CHECK(pj == i - 1);
    math::interaction_pair(math::interaction_index(i, 0, true), true, pi, pj);
    CHECK(pi == i);
    CHECK(pj == 0);
  }
}

TEST_CASE("fm_column sums to the factorization-machine term and cross_update is the cross formula") {
  const std::size_t f = 5, d = 7;
  std::vector<float> row(f * d);
  for (std::size_t i = 0; i < row.size(); ++i) row[i] = std::sin(static_cast<float>(i)) * 1.5f;
  double want = 0;
  for (std::size_t a = 0; a < f; ++a)
    for (std::size_t b = a + 1; b < f; ++b)
      for (std::size_t k = 0; k < d; ++k) want += static_cast<double>(row[a * d + k]) * row[b * d + k];
  float got = 0;
  for (std::size_t k = 0; k < d; ++k) got += math::fm_column(row.data(), f, d, k);
  CHECK(0.5f * got == doctest::Approx(want).epsilon(1e-5));
  CHECK(math::cross_update(2.0f, 3.0f, 1.0f) == 7.0f);
}

TEST_CASE("sampling_key: temperature 0 is the score, NaN stays last, the double radix key orders like ranks_before") {
  const std::uint64_t stream = math::sampling_stream(7, 3);
  CHECK(math::sampling_key(1.25f, 0.0f, stream, 9) == 1.25);
  CHECK(std::isnan(math::sampling_key(std::numeric_limits<float>::quiet_NaN(), 0.5f, stream, 9)));
  CHECK(math::sampling_key(-std::numeric_limits<float>::infinity(), 0.5f, stream, 9) ==
        -std::numeric_limits<double>::infinity());
  CHECK(math::sampling_key(1.0f, 0.5f, stream, 9) == 2.0 + math::item_gumbel(stream, 9));
  CHECK(math::item_gumbel(stream, 9) != math::item_gumbel(stream, 10));
  CHECK(math::sampling_stream(7, 3) != math::sampling_stream(7, 4));
  const double specials[] = {std::numeric_limits<double>::quiet_NaN(), -std::numeric_limits<double>::infinity(), -1e300,
                             -1.0, -0.0, 0.0, 1e-320, 0.5, 1e300, std::numeric_limits<double>::infinity()};
  for (double a : specials)
    for (double b : specials) {
      const bool before = math::ranks_before(a, 0, b, 0);
      CHECK((math::descending_key(a) < math::descending_key(b)) == before);
    }
}

TEST_CASE("uniform and gumbel noise are in range and reproducible") {
  double mean = 0;
  for (std::uint64_t i = 0; i < 100000; ++i) {
    const float u = math::uniform_open01(3, i);
    REQUIRE(u > 0.0f);
    REQUIRE(u < 1.0f);
    mean += math::gumbel(3, i);
  }
  CHECK(mean / 100000 == doctest::Approx(0.5772).epsilon(0.02));  // Euler-Mascheroni
  CHECK(math::gumbel(5, 9) == math::gumbel(5, 9));
  CHECK(math::gumbel(5, 9) != math::gumbel(6, 9));
}

TEST_CASE("ranks_before and descending_key define the same total order") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> values = {inf, 3.0f, 1.0f, 0.0f, -0.0f, -1.0f, -inf, nan};
  for (std::size_t i = 0; i < values.size(); ++i)
    for (std::size_t j = 0; j < values.size(); ++j) {
      const bool strictly = math::ranks_before(values[i], 0, values[j], 0) != math::ranks_before(values[j], 0, values[i], 0);
      if (strictly) CHECK((math::descending_key(values[i]) < math::descending_key(values[j])) == math::ranks_before(values[i], 0, values[j], 0));
      else CHECK(math::descending_key(values[i]) == math::descending_key(values[j]));
    }
  CHECK(math::ranks_before(1.0f, 5, 1.0f, 6));
  CHECK(math::ranks_before(-inf, 9, nan, 0));
}

TEST_CASE("int8 row quantisation round trip") {
  const float values[5] = {-1.0f, 0.0f, 0.5f, 1.0f, 3.0f};
  std::uint8_t row[5 + math::int8_row_tail_bytes];
  math::quantize_row_int8(values, 5, row);
  float acc[5] = {};
  math::accumulate_row_int8(row, 1.0f, acc, 5);
  for (int i = 0; i < 5; ++i) CHECK(std::abs(acc[i] - values[i]) <= 4.0f / 510 + 1e-6f);
  CHECK(acc[0] == -1.0f);
}

TEST_CASE("layer_norm_value / layer_norm_inv_std are LayerNorm's element formula, session_position numbers slots") {
  CHECK(math::layer_norm_inv_std(0.25f, 0.0f) == 2.0f);
  CHECK(math::layer_norm_inv_std(3.0f, 1.0f) == 0.5f);
  CHECK(math::layer_norm_value(3.0f, 1.0f, 0.5f) == 1.0f);
  CHECK(math::layer_norm_value(3.0f, 1.0f, 0.5f, 4.0f, -1.0f) == 3.0f);
  // eps 0 on a constant row: 0 * inf is NaN, as nn.LayerNorm(eps=0) gives.
  CHECK(std::isnan(math::layer_norm_value(2.0f, 2.0f, math::layer_norm_inv_std(0.0f, 0.0f))));
  using math::position_rule;
  // Right padding, first_item: slot s is position s.
  for (std::size_t s = 0; s < 3; ++s) CHECK(math::session_position(position_rule::first_item, false, 10, 3, 0, s) == s);
  // Left padding in a window of 10, a session of 3 kept items (slots 0..2 of its rows): slots 7, 8, 9.
  CHECK(math::session_position(position_rule::window_slot, true, 10, 3, 0, 0) == 7);
  CHECK(math::session_position(position_rule::window_slot, true, 10, 3, 0, 2) == 9);
  CHECK(math::session_position(position_rule::window_slot_from_1, true, 10, 3, 0, 2) == 10);
  // A full window of 10 with 3 items after 7 padding slots: padding gets 0 from 1, the items 8..10.
  CHECK(math::session_position(position_rule::window_slot_from_1, true, 10, 10, 7, 6) == 0);
  CHECK(math::session_position(position_rule::window_slot_from_1, true, 10, 10, 7, 7) == 8);
  CHECK(math::session_position(position_rule::window_slot, true, 10, 10, 7, 6) == 6);
}
