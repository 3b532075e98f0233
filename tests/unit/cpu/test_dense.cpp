// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu/dense.hpp (gemm_nt, linear + activations, layer_norm, add, mlp) against double references.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <recpipe/cpu/dense.hpp>

#include "unit/cpu/reference.hpp"

namespace cpu = recpipe::cpu;

TEST_CASE("gemm_nt matches a double reference on odd, empty and strided shapes") {
  std::mt19937 rng(1);
  const std::size_t shapes[][3] = {{0, 3, 4}, {3, 0, 4}, {3, 4, 0}, {1, 1, 1}, {1, 7, 5}, {5, 1, 9}, {13, 17, 33}, {64, 31, 127}};
  for (const auto& s : shapes) {
    CAPTURE(s[0]); CAPTURE(s[1]); CAPTURE(s[2]);
    ref::buffer a(s[0], s[2], 3), b(s[1], s[2], 1), c(s[0], s[1], 2);
    ref::fill(a, rng);
    ref::fill(b, rng);
    ref::fill(c, rng);  // beta = 0 must overwrite this
    cpu::gemm_nt(a.cview(), b.cview(), c.view());
    CHECK(ref::max_rel_error(ref::linear(a, b, {}), c) < 1e-5);
    // beta = 1 accumulates
    const auto before = ref::flatten(c);
    cpu::gemm_nt(a.cview(), b.cview(), c.view(), 2.0f, 1.0f);
    auto want = ref::linear(a, b, {});
    for (std::size_t i = 0; i < want.size(); ++i) want[i] = 2 * want[i] + before[i];
    CHECK(ref::max_rel_error(want, c) < 1e-5);
  }
}

TEST_CASE("linear applies bias and every activation like the double reference") {
  std::mt19937 rng(2);
  for (int kind = 0; kind <= 4; ++kind) {
    for (std::size_t batch : {1u, 2u, 37u}) {
      CAPTURE(kind); CAPTURE(batch);
      ref::buffer x(batch, 19), w(23, 19, 5), y(batch, 23, 1);
      ref::fill(x, rng, 2.0f);
      ref::fill(w, rng);
      const auto bias = ref::random_vector(23, rng);
      cpu::linear(x.cview(), w.cview(), bias, y.view(), static_cast<cpu::activation>(kind));
      CHECK(ref::max_rel_error(ref::linear(x, w, bias, kind), y) < 1e-5);
      cpu::linear(x.cview(), w.cview(), {}, y.view(), static_cast<cpu::activation>(kind));
      CHECK(ref::max_rel_error(ref::linear(x, w, {}, kind), y) < 1e-5);
    }
  }
}

TEST_CASE("relu propagates NaN and apply_activation works in place") {
  std::vector<float> v = {-1.0f, 0.5f, std::nanf("")};
  cpu::apply_activation({v.data(), 1, 3}, cpu::activation::relu);
  CHECK(v[0] == 0.0f);
  CHECK(v[1] == 0.5f);
  CHECK(std::isnan(v[2]));
  cpu::apply_activation({v.data(), 1, 2}, cpu::activation::sigmoid);
  CHECK(v[0] == doctest::Approx(0.5));
}

TEST_CASE("layer_norm matches nn.LayerNorm semantics, with and without affine, in place") {
  std::mt19937 rng(3);
  for (std::size_t cols : {1u, 2u, 7u, 64u, 129u}) {
    CAPTURE(cols);
    ref::buffer x(5, cols, 2), y(5, cols);
    ref::fill(x, rng, 3.0f);
    for (std::size_t c = 0; c < cols; ++c) x(0, c) += 100.0f;  // a large mean must not hurt
    const auto gamma = ref::random_vector(cols, rng), beta = ref::random_vector(cols, rng);
    std::vector<double> xd;
    for (float v : ref::flatten(x)) xd.push_back(v);
    cpu::layer_norm(x.cview(), gamma, beta, y.view(), 1e-5f);
    CHECK(ref::max_rel_error(ref::layer_norm(xd, 5, cols, gamma, beta, 1e-5), y) < 1e-5);
    cpu::layer_norm(x.cview(), {}, {}, x.view());  // in place, no affine
    CHECK(ref::max_rel_error(ref::layer_norm(xd, 5, cols, {}, {}, 1e-5), x) < 1e-5);
  }
}

TEST_CASE("mlp runs a stack of linears through caller scratch") {
  std::mt19937 rng(4);
  ref::buffer x(9, 13), w1(32, 13), w2(7, 32), w3(3, 7), y(9, 3);
  ref::fill(x, rng);
  ref::fill(w1, rng);
  ref::fill(w2, rng);
  ref::fill(w3, rng);
  const auto b1 = ref::random_vector(32, rng), b2 = ref::random_vector(7, rng);
  const std::vector<cpu::linear_layer> layers = {{w1.cview(), b1, cpu::activation::relu},
                                                 {w2.cview(), b2, cpu::activation::gelu},
                                                 {w3.cview(), {}, cpu::activation::sigmoid}};
  std::vector<float> scratch(cpu::mlp_scratch_size(9, layers));
  CHECK(scratch.size() == 2 * 9 * 32);
  cpu::mlp(x.cview(), layers, y.view(), scratch);
  // reference: chain in double through float buffers of the double values
  auto h1 = ref::linear(x, w1, b1, 1);
  ref::buffer f1(9, 32);
  for (std::size_t i = 0; i < h1.size(); ++i) f1.data()[i] = static_cast<float>(h1[i]);
  auto h2 = ref::linear(f1, w2, b2, 2);
  ref::buffer f2(9, 7);
  for (std::size_t i = 0; i < h2.size(); ++i) f2.data()[i] = static_cast<float>(h2[i]);
  CHECK(ref::max_rel_error(ref::linear(f2, w3, {}, 4), y) < 1e-5);

  CHECK_THROWS_WITH_AS(cpu::mlp(x.cview(), layers, y.view(), std::span<float>(scratch).first(10)),
                       doctest::Contains("cpu::mlp: scratch"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::mlp(x.cview(), {}, y.view(), scratch), doctest::Contains("layers is empty"), recpipe::error);
  const std::vector<cpu::linear_layer> broken = {{w1.cview(), b1}, {w3.cview(), {}}};
  CHECK_THROWS_WITH_AS(cpu::mlp(x.cview(), broken, y.view(), scratch), doctest::Contains("layers[1].weight"),
                       recpipe::error);
}

TEST_CASE("add is a residual connection") {
  ref::buffer a(3, 5, 1), b(3, 5);
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 5; ++j) {
      a(i, j) = static_cast<float>(i);
      b(i, j) = static_cast<float>(j);
    }
  cpu::add(a.view(), b.cview());
  CHECK(a(2, 4) == 6.0f);
  ref::buffer wrong(3, 4);
  CHECK_THROWS_WITH_AS(cpu::add(a.view(), wrong.cview()), doctest::Contains("cpu::add: y must be 3 x 4"), recpipe::error);
}

TEST_CASE("dense kernels reject mismatched shapes naming the argument") {
  ref::buffer x(4, 8), w(6, 7), y(4, 6);
  CHECK_THROWS_WITH_AS(cpu::linear(x.cview(), w.cview(), {}, y.view()), doctest::Contains("cpu::linear: weight is [6, 7]"),
                       recpipe::error);
  ref::buffer w_ok(6, 8);
  std::vector<float> bias(5);
  CHECK_THROWS_WITH_AS(cpu::linear(x.cview(), w_ok.cview(), bias, y.view()), doctest::Contains("bias must be empty or hold 6"),
                       recpipe::error);
  ref::buffer y_bad(4, 5);
  CHECK_THROWS_WITH_AS(cpu::linear(x.cview(), w_ok.cview(), {}, y_bad.view()), doctest::Contains("y must be 4 x 6"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::gemm_nt(x.cview(), w.cview(), y.view()), doctest::Contains("cpu::gemm_nt: a has 8 columns"),
                       recpipe::error);
  recpipe::matrix_view<const float> bad_stride(x.data(), 4, 8, 3);
  CHECK_THROWS_WITH_AS(cpu::linear(bad_stride, w_ok.cview(), {}, y.view()), doctest::Contains("x has stride 3"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::layer_norm(x.cview(), bias, {}, x.view()), doctest::Contains("gamma must be empty or hold 8"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::layer_norm(x.cview(), {}, {}, x.view(), -1.0f), doctest::Contains("eps"), recpipe::error);
  CHECK_THROWS_AS(cpu::set_num_threads(0), recpipe::error);
}
