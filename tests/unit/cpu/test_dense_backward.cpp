// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu/dense_backward.hpp against central finite differences of double-precision
// reference forwards (activations, linear, MLP, layer norm, softmax), and its bad-input behaviour.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/dense_backward.hpp>

#include "unit/cpu/gradcheck.hpp"
#include "unit/cpu/reference.hpp"

namespace cpu = recpipe::cpu;
namespace gc = gradcheck;
using recpipe::matrix;
using recpipe::matrix_view;

namespace {
const char* const act_names[] = {"none", "relu", "gelu", "gelu_tanh", "sigmoid"};

// sum_{r,o} R[r,o] * act(x W^T + b)[r,o] in double; x [n, in], w [out, in].
double linear_loss(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
                   const std::vector<double>& r, std::size_t n, std::size_t in, std::size_t out, int kind) {
  double loss = 0;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0.0 : b[o];
      for (std::size_t k = 0; k < in; ++k) s += x[i * in + k] * w[o * in + k];
      loss += r[i * out + o] * gc::act(kind, s);
    }
  return loss;
}
}  // namespace

TEST_CASE("activation_backward matches finite differences for every activation, in place and strided") {
  std::mt19937 rng(11);
  for (int kind = 0; kind <= 4; ++kind) {
    CAPTURE(act_names[kind]);
    ref::buffer z(6, 9, 3), dy(6, 9, 2), dz(6, 9, 1);
    ref::fill(z, rng, 3.0f);
    ref::fill(dy, rng);
    cpu::activation_backward(static_cast<cpu::activation>(kind), z.cview(), dy.cview(), dz.view());
    std::vector<double> want;
    for (std::size_t r = 0; r < 6; ++r)
      for (std::size_t c = 0; c < 9; ++c) {
        const double x = z(r, c), h = 1e-6;
        want.push_back(dy(r, c) * (gc::act(kind, x + h) - gc::act(kind, x - h)) / (2 * h));
      }
    CHECK(gc::rel_error(want, dz.cview()) < gc::tolerance);
    // in place: dz is dy
    cpu::activation_backward(static_cast<cpu::activation>(kind), z.cview(), dy.cview(), dy.view());
    CHECK(gc::rel_error(want, dy.cview()) < gc::tolerance);
  }
}

TEST_CASE("activation_backward propagates NaN and relu masks like torch") {
  std::vector<float> z = {-1.0f, 2.0f, 0.0f, std::nanf("")}, dy = {std::nanf(""), std::nanf(""), 1.0f, 3.0f};
  std::vector<float> dz(4);
  cpu::activation_backward(cpu::activation::relu, {z.data(), 1, 4}, {dy.data(), 1, 4}, {dz.data(), 1, 4});
  CHECK(dz[0] == 0.0f);        // masked
  CHECK(std::isnan(dz[1]));    // NaN gradient passes where z > 0
  CHECK(dz[2] == 0.0f);        // z == 0 counts as masked (torch: grad * (y > 0))
  CHECK(dz[3] == 3.0f);        // NaN z passes the gradient (torch's threshold_backward)
  for (int kind = 0; kind <= 4; ++kind) {
    cpu::activation_backward(static_cast<cpu::activation>(kind), {z.data(), 1, 4}, {dy.data(), 1, 4}, {dz.data(), 1, 4});
    CHECK(std::isnan(dz[1]));
  }
}

TEST_CASE("linear_backward with each activation matches finite differences, parameters accumulate") {
  std::mt19937 rng(12);
  const std::size_t n = 5, in = 7, out = 4;
  for (int kind = 0; kind <= 4; ++kind) {
    CAPTURE(act_names[kind]);
    ref::buffer x(n, in, 2), w(out, in, 1), dx(n, in, 3), dw(out, in, 2);
    ref::fill(x, rng, 1.5f);
    ref::fill(w, rng);
    auto b = gc::random(out, rng);
    auto r = gc::random(n * out, rng);
    ref::fill(dw, rng);  // existing gradient: accumulated into
    const auto dw_before = gc::flatten(dw.cview());
    std::vector<float> db = gc::random(out, rng), db_before = db;
    // forward z, then the backward chain activation -> linear
    matrix<float> z(n, out), dz(n, out);
    cpu::linear(x.cview(), w.cview(), b, z.view());
    matrix<float> dy(std::vector<float>(r), n, out);
    cpu::activation_backward(static_cast<cpu::activation>(kind), z.view(), dy.view(), dz.view());
    cpu::linear_backward(x.cview(), w.cview(), dz.view(), dx.view(), dw.view(), db);

    auto xd = gc::to_double(x.cview()), wd = gc::to_double(w.cview()), bd = gc::to_double(b), rd = gc::to_double(r);
    const auto loss = [&] { return linear_loss(xd, wd, bd, rd, n, in, out, kind); };
    CHECK(gc::rel_error(gc::numeric(xd, loss), dx.cview()) < gc::tolerance);
    auto want_w = gc::numeric(wd, loss);
    for (std::size_t i = 0; i < want_w.size(); ++i) want_w[i] += dw_before[i];
    CHECK(gc::rel_error(want_w, dw.cview()) < gc::tolerance);
    auto want_b = gc::numeric(bd, loss);
    for (std::size_t i = 0; i < out; ++i) want_b[i] += db_before[i];
    CHECK(gc::rel_error(want_b, db) < gc::tolerance);
  }
}

TEST_CASE("linear_backward skips empty gradients, is a no-op on an empty batch, propagates NaN") {
  std::mt19937 rng(13);
  ref::buffer x(3, 4), w(2, 4), dz(3, 2);
  ref::fill(x, rng);
  ref::fill(w, rng);
  ref::fill(dz, rng);
  std::vector<float> db(2, 0.0f);
  matrix<float> dw(2, 4, 0.0f);
  cpu::linear_backward(x.cview(), w.cview(), dz.cview(), {}, {}, db);  // only dbias
  CHECK(db[0] == doctest::Approx(dz(0, 0) + dz(1, 0) + dz(2, 0)));
  // empty batch: nothing changes
  std::vector<float> db2 = {1.0f, 2.0f};
  matrix<float> dw2(2, 4, 5.0f);
  cpu::linear_backward({x.data(), 0, 4}, w.cview(), {dz.data(), 0, 2}, {}, dw2.view(), db2);
  CHECK(db2 == std::vector<float>{1.0f, 2.0f});
  for (float v : dw2.values()) CHECK(v == 5.0f);
  // NaN in dz reaches every gradient
  dz(1, 1) = std::nanf("");
  matrix<float> dx(3, 4);
  cpu::linear_backward(x.cview(), w.cview(), dz.cview(), dx.view(), dw.view(), db);
  CHECK(std::isnan(dx(1, 0)));
  CHECK(std::isnan(dw(1, 0)));
  CHECK(std::isnan(db[1]));
  CHECK_FALSE(std::isnan(db[0]));
}

TEST_CASE("linear_backward names the argument whose shape is wrong") {
  matrix<float> x(3, 4), w(2, 4), dz(3, 2), dx(3, 4), dw(2, 4);
  std::vector<float> db(2);
  matrix<float> bad(3, 3);
  CHECK_THROWS_WITH_AS(cpu::linear_backward(x.view(), w.view(), bad.view(), dx.view(), dw.view(), db),
                       doctest::Contains("cpu::linear_backward: dz"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::linear_backward(x.view(), w.view(), dz.view(), bad.view(), dw.view(), db),
                       doctest::Contains("dx must be 3 x 4"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::linear_backward(x.view(), w.view(), dz.view(), dx.view(), bad.view(), db),
                       doctest::Contains("dweight"), recpipe::error);
  std::vector<float> db3(3);
  CHECK_THROWS_WITH_AS(cpu::linear_backward(x.view(), w.view(), dz.view(), dx.view(), dw.view(), db3),
                       doctest::Contains("dbias"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::linear_backward(x.view(), bad.view(), dz.view(), dx.view(), dw.view(), db),
                       doctest::Contains("weight is [3, 3]"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::activation_backward(cpu::activation::relu, x.view(), bad.view(), dx.view()),
                       doctest::Contains("cpu::activation_backward: dy"), recpipe::error);
}

TEST_CASE("mlp_forward_train equals cpu::mlp and mlp_backward matches finite differences") {
  std::mt19937 rng(14);
  const std::size_t n = 4, widths[] = {6, 5, 7, 3};
  const int acts[] = {1, 2, 4};  // relu, gelu, sigmoid; the last has none below for one case
  for (int last_act : {0, 3}) {
    CAPTURE(last_act);
    std::vector<matrix<float>> w;
    std::vector<std::vector<float>> b;
    std::vector<cpu::linear_layer> layers;
    for (std::size_t l = 0; l < 3; ++l) {
      w.emplace_back(std::vector<float>(gc::random(widths[l + 1] * widths[l], rng)), widths[l + 1], widths[l]);
      b.push_back(gc::random(widths[l + 1], rng));
    }
    for (std::size_t l = 0; l < 3; ++l)
      layers.push_back({w[l].view(), b[l], static_cast<cpu::activation>(l == 2 ? last_act : acts[l])});
    ref::buffer x(n, widths[0], 2);
    ref::fill(x, rng, 1.5f);
    matrix<float> y(n, widths[3]), y_ref(n, widths[3]);
    std::vector<float> scratch(cpu::mlp_scratch_size(n, layers));
    cpu::mlp(x.cview(), layers, y_ref.view(), scratch);
    cpu::mlp_trace trace;
    for (int repeat = 0; repeat < 2; ++repeat) {  // the trace is reusable
      cpu::mlp_forward_train(x.cview(), layers, trace, y.view());
      CHECK(y.values() == y_ref.values());
    }
    // backward
    const auto r = gc::random(n * widths[3], rng);
    matrix<float> dy(std::vector<float>(r), n, widths[3]);
    std::vector<matrix<float>> dw;
    std::vector<std::vector<float>> db;
    for (std::size_t l = 0; l < 3; ++l) {
      dw.emplace_back(widths[l + 1], widths[l], 0.0f);
      db.emplace_back(widths[l + 1], 0.0f);
    }
    std::vector<cpu::linear_gradient> grads;
    for (std::size_t l = 0; l < 3; ++l) grads.push_back({dw[l].view(), db[l]});
    ref::buffer dx(n, widths[0], 1);
    cpu::mlp_backward(layers, trace, dy.view(), dx.view(), grads);

    // double reference
    std::vector<std::vector<double>> wd, bd;
    for (std::size_t l = 0; l < 3; ++l) {
      wd.push_back(gc::to_double(w[l].view()));
      bd.push_back(gc::to_double(b[l]));
    }
    auto xd = gc::to_double(x.cview());
    const auto loss = [&] {
      std::vector<double> h = xd;
      for (std::size_t l = 0; l < 3; ++l) {
        const std::size_t in = widths[l], out = widths[l + 1];
        std::vector<double> next(n * out);
        for (std::size_t i = 0; i < n; ++i)
          for (std::size_t o = 0; o < out; ++o) {
            double s = bd[l][o];
            for (std::size_t k = 0; k < in; ++k) s += h[i * in + k] * wd[l][o * in + k];
            next[i * out + o] = gc::act(static_cast<int>(layers[l].act), s);
          }
        h = std::move(next);
      }
      double total = 0;
      for (std::size_t i = 0; i < h.size(); ++i) total += h[i] * r[i];
      return total;
    };
    CHECK(gc::rel_error(gc::numeric(xd, loss), dx.cview()) < gc::tolerance);
    for (std::size_t l = 0; l < 3; ++l) {
      CAPTURE(l);
      CHECK(gc::rel_error(gc::numeric(wd[l], loss), dw[l].view()) < gc::tolerance);
      CHECK(gc::rel_error(gc::numeric(bd[l], loss), db[l]) < gc::tolerance);
    }
    // grads accumulate: a second backward doubles them; dx is overwritten (unchanged)
    const auto dx_first = gc::flatten(dx.cview());
    const auto dw0 = dw[0].values();
    cpu::mlp_backward(layers, trace, dy.view(), dx.view(), grads);
    CHECK(gc::flatten(dx.cview()) == dx_first);
    for (std::size_t i = 0; i < dw0.size(); ++i) CHECK(dw[0].values()[i] == doctest::Approx(2 * dw0[i]));
    // dx may be skipped
    cpu::mlp_backward(layers, trace, dy.view(), {}, grads);
  }
}

TEST_CASE("mlp_backward: empty batch is a no-op, bad input throws") {
  matrix<float> w0(3, 2, 0.5f), w1(1, 3, 0.5f);
  std::vector<float> b0(3), b1(1);
  const std::vector<cpu::linear_layer> layers = {{w0.view(), b0, cpu::activation::relu}, {w1.view(), b1}};
  matrix<float> dw0(3, 2, 1.0f), dw1(1, 3, 1.0f);
  std::vector<float> db0(3, 1.0f), db1(1, 1.0f);
  const std::vector<cpu::linear_gradient> grads = {{dw0.view(), db0}, {dw1.view(), db1}};
  cpu::mlp_trace trace;
  matrix<float> x(0, 2), y(0, 1);
  cpu::mlp_forward_train(x.view(), layers, trace, y.view());
  cpu::mlp_backward(layers, trace, y.view(), x.view(), grads);
  for (float v : dw0.values()) CHECK(v == 1.0f);
  CHECK(db1[0] == 1.0f);
  matrix<float> x2(2, 2, 1.0f), y2(2, 1), bad(2, 2);
  cpu::mlp_forward_train(x2.view(), layers, trace, y2.view());
  CHECK_THROWS_WITH_AS(cpu::mlp_backward(layers, trace, bad.view(), {}, grads), doctest::Contains("cpu::mlp_backward: dy"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::mlp_backward(layers, trace, y2.view(), {}, std::span(grads).first(1)),
                       doctest::Contains("grads has 1 entries"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::mlp_forward_train(x2.view(), layers, trace, bad.view()),
                       doctest::Contains("cpu::mlp_forward_train: y"), recpipe::error);
  const std::vector<cpu::linear_layer> one = {{w0.view(), b0}};
  CHECK_THROWS_WITH_AS(cpu::mlp_backward(one, trace, y2.view(), {}, std::span(grads).first(1)),
                       doctest::Contains("trace holds 2 layers"), recpipe::error);
}

TEST_CASE("layer_norm_backward matches finite differences with and without affine, in place") {
  std::mt19937 rng(15);
  const std::size_t n = 4, d = 9;
  for (bool affine : {true, false}) {
    CAPTURE(affine);
    ref::buffer x(n, d, 2), dx(n, d, 1);
    ref::fill(x, rng, 2.0f);
    std::vector<float> gamma = affine ? gc::random(d, rng) : std::vector<float>{};
    std::vector<float> beta = affine ? gc::random(d, rng) : std::vector<float>{};
    const auto r = gc::random(n * d, rng);
    std::vector<float> dgamma(d, 0.5f), dbeta(d, 0.25f);
    matrix<float> dy(std::vector<float>(r), n, d);
    cpu::layer_norm_backward(x.cview(), gamma, dy.view(), dx.view(), dgamma, dbeta, 1e-5f);
    auto xd = gc::to_double(x.cview()), gd = gc::to_double(gamma), bd = gc::to_double(beta);
    const auto loss = [&] {
      const auto y = ref::layer_norm(xd, n, d, {}, {}, 1e-5);
      double total = 0;
      for (std::size_t i = 0; i < y.size(); ++i)
        total += r[i] * (y[i] * (gd.empty() ? 1.0 : gd[i % d]) + (bd.empty() ? 0.0 : bd[i % d]));
      return total;
    };
    CHECK(gc::rel_error(gc::numeric(xd, loss), dx.cview()) < gc::tolerance);
    if (affine) {
      auto want_g = gc::numeric(gd, loss), want_b = gc::numeric(bd, loss);
      for (auto& v : want_g) v += 0.5;
      for (auto& v : want_b) v += 0.25;
      CHECK(gc::rel_error(want_g, dgamma) < gc::tolerance);
      CHECK(gc::rel_error(want_b, dbeta) < gc::tolerance);
    }
    // in place on dy
    cpu::layer_norm_backward(x.cview(), gamma, dy.view(), dy.view(), {}, {}, 1e-5f);
    CHECK(gc::flatten(dy.view()) == gc::flatten(dx.cview()));
  }
  matrix<float> x(2, 3), bad(2, 2);
  std::vector<float> g(3), dg(2);
  CHECK_THROWS_WITH_AS(cpu::layer_norm_backward(x.view(), g, bad.view(), {}, {}, {}), doctest::Contains("dy"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::layer_norm_backward(x.view(), g, x.view(), {}, dg, {}), doctest::Contains("dgamma"), recpipe::error);
  matrix<float> empty(0, 3);
  cpu::layer_norm_backward(empty.view(), g, empty.view(), empty.view(), {}, {});
}

TEST_CASE("softmax forward and backward match finite differences, a masked row stays zero") {
  std::mt19937 rng(16);
  const std::size_t n = 3, d = 8;
  ref::buffer x(n, d, 1), y(n, d, 2);
  ref::fill(x, rng, 3.0f);
  cpu::softmax(x.cview(), y.view());
  auto xd = gc::to_double(x.cview());
  const auto r = gc::random(n * d, rng);
  const auto probabilities = [&](std::size_t row) {
    std::vector<double> p(d);
    double peak = -INFINITY, total = 0;
    for (std::size_t c = 0; c < d; ++c) peak = std::max(peak, xd[row * d + c]);
    for (std::size_t c = 0; c < d; ++c) total += p[c] = std::exp(xd[row * d + c] - peak);
    for (auto& v : p) v /= total;
    return p;
  };
  std::vector<double> want_y;
  for (std::size_t row = 0; row < n; ++row)
    for (double v : probabilities(row)) want_y.push_back(v);
  CHECK(gc::rel_error(want_y, y.cview()) < 1e-6);
  const auto loss = [&] {
    double total = 0;
    for (std::size_t row = 0; row < n; ++row) {
      const auto p = probabilities(row);
      for (std::size_t c = 0; c < d; ++c) total += r[row * d + c] * p[c];
    }
    return total;
  };
  matrix<float> dy(std::vector<float>(r), n, d), dx(n, d);
  cpu::softmax_backward(y.cview(), dy.view(), dx.view());
  CHECK(gc::rel_error(gc::numeric(xd, loss), dx.view()) < gc::tolerance);
  cpu::softmax_backward(y.cview(), dy.view(), dy.view());  // in place
  CHECK(dy.values() == dx.values());
  // a fully masked row: softmax gives zeros, so does its gradient
  std::vector<float> masked(4, -INFINITY), p(4), g = {1, 2, 3, 4}, dg(4, 7.0f);
  cpu::softmax({masked.data(), 1, 4}, {p.data(), 1, 4});
  cpu::softmax_backward({p.data(), 1, 4}, {g.data(), 1, 4}, {dg.data(), 1, 4});
  for (float v : dg) CHECK(v == 0.0f);
  CHECK_THROWS_WITH_AS(cpu::softmax_backward({p.data(), 1, 4}, {g.data(), 2, 2}, {dg.data(), 1, 4}),
                       doctest::Contains("cpu::softmax_backward: dy"), recpipe::error);
}
