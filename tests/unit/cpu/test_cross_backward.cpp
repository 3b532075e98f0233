// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu/cross_backward.hpp (DCN-v2 cross layers and stacks, dot interaction, FM,
// row-wise dot) against central finite differences of double-precision reference forwards.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include <recpipe/cpu/cross.hpp>
#include <recpipe/cpu/cross_backward.hpp>

#include "unit/cpu/gradcheck.hpp"
#include "unit/cpu/reference.hpp"

namespace cpu = recpipe::cpu;
namespace gc = gradcheck;
using recpipe::matrix;
using recpipe::matrix_view;

namespace {
// One cross layer in double: out = x0 * (W xl + b) + xl, W = weight [d, d] or up [d, r] * down [r, d].
std::vector<double> cross_ref(const std::vector<double>& x0, const std::vector<double>& xl,
                              const std::vector<double>& weight, const std::vector<double>& down,
                              const std::vector<double>& up, const std::vector<double>& bias, std::size_t n,
                              std::size_t d, std::size_t rank) {
  std::vector<double> out(n * d);
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<double> v(rank);
    for (std::size_t k = 0; k < rank; ++k)
      for (std::size_t c = 0; c < d; ++c) v[k] += down[k * d + c] * xl[i * d + c];
    for (std::size_t o = 0; o < d; ++o) {
      double u = bias[o];
      if (rank == 0)
        for (std::size_t c = 0; c < d; ++c) u += weight[o * d + c] * xl[i * d + c];
      else
        for (std::size_t k = 0; k < rank; ++k) u += up[o * rank + k] * v[k];
      out[i * d + o] = x0[i * d + o] * u + xl[i * d + o];
    }
  }
  return out;
}
double weighted_sum(const std::vector<double>& y, const std::vector<float>& r) {
  double total = 0;
  for (std::size_t i = 0; i < y.size(); ++i) total += y[i] * r[i];
  return total;
}
}  // namespace

TEST_CASE("cross_layer_backward (full rank) matches finite differences, strided, dx0 accumulates") {
  std::mt19937 rng(31);
  const std::size_t n = 5, d = 7;
  ref::buffer x0(n, d, 2), xl(n, d, 1), w(d, d, 3), u(n, d, 1), dout(n, d, 2), dx0(n, d, 1), dxl(n, d, 3), dw(d, d, 1);
  ref::fill(x0, rng);
  ref::fill(xl, rng);
  ref::fill(w, rng, 0.5f);
  ref::fill(dout, rng);
  ref::fill(dx0, rng);  // accumulated into
  const auto b = gc::random(d, rng);
  cpu::linear(xl.cview(), w.cview(), b, u.view());
  const auto dx0_before = gc::flatten(dx0.cview());
  std::vector<float> db(d, 0.0f);
  cpu::cross_layer_backward(x0.cview(), xl.cview(), w.cview(), u.cview(), dout.cview(), dx0.view(), dxl.view(), dw.view(),
                            db);
  auto x0d = gc::to_double(x0.cview()), xld = gc::to_double(xl.cview()), wd = gc::to_double(w.cview()),
       bd = gc::to_double(b);
  const auto r = gc::flatten(dout.cview());
  const auto loss = [&] { return weighted_sum(cross_ref(x0d, xld, wd, {}, {}, bd, n, d, 0), r); };
  auto want_x0 = gc::numeric(x0d, loss);
  for (std::size_t i = 0; i < want_x0.size(); ++i) want_x0[i] += dx0_before[i];
  CHECK(gc::rel_error(want_x0, dx0.cview()) < gc::tolerance);
  CHECK(gc::rel_error(gc::numeric(xld, loss), dxl.cview()) < gc::tolerance);
  CHECK(gc::rel_error(gc::numeric(wd, loss), dw.cview()) < gc::tolerance);
  CHECK(gc::rel_error(gc::numeric(bd, loss), db) < gc::tolerance);
  // dxl in place on dout
  cpu::cross_layer_backward(x0.cview(), xl.cview(), w.cview(), u.cview(), dout.cview(), {}, dout.view(), {}, {});
  CHECK(gc::flatten(dout.cview()) == gc::flatten(dxl.cview()));
}

TEST_CASE("cross_layer_low_rank_backward matches finite differences") {
  std::mt19937 rng(32);
  const std::size_t n = 4, d = 8, rank = 3;
  ref::buffer x0(n, d, 1), xl(n, d, 2), down(rank, d, 1), up(d, rank, 2), dout(n, d);
  ref::fill(x0, rng);
  ref::fill(xl, rng);
  ref::fill(down, rng, 0.5f);
  ref::fill(up, rng, 0.5f);
  ref::fill(dout, rng);
  const auto b = gc::random(d, rng);
  matrix<float> v(n, rank), u(n, d), dx0(n, d, 0.0f), dxl(n, d), ddown(rank, d, 0.0f), dup(d, rank, 0.0f);
  std::vector<float> db(d, 0.0f);
  cpu::linear(xl.cview(), down.cview(), {}, v.view());
  cpu::linear(v.view(), up.cview(), b, u.view());
  cpu::cross_layer_low_rank_backward(x0.cview(), xl.cview(), down.cview(), up.cview(), v.view(), u.view(), dout.cview(),
                                     dx0.view(), dxl.view(), ddown.view(), dup.view(), db);
  auto x0d = gc::to_double(x0.cview()), xld = gc::to_double(xl.cview()), downd = gc::to_double(down.cview()),
       upd = gc::to_double(up.cview()), bd = gc::to_double(b);
  const auto r = gc::flatten(dout.cview());
  const auto loss = [&] { return weighted_sum(cross_ref(x0d, xld, {}, downd, upd, bd, n, d, rank), r); };
  CHECK(gc::rel_error(gc::numeric(x0d, loss), dx0.view()) < gc::tolerance);
  CHECK(gc::rel_error(gc::numeric(xld, loss), dxl.view()) < gc::tolerance);
  CHECK(gc::rel_error(gc::numeric(downd, loss), ddown.view()) < gc::tolerance);
  CHECK(gc::rel_error(gc::numeric(upd, loss), dup.view()) < gc::tolerance);
  CHECK(gc::rel_error(gc::numeric(bd, loss), db) < gc::tolerance);
}

TEST_CASE("cross_network_forward_train matches cross_network and its backward matches finite differences") {
  std::mt19937 rng(33);
  const std::size_t n = 4, d = 6, rank = 2;
  // layers: full, low rank, full
  matrix<float> w0(std::vector<float>(gc::random(d * d, rng, 0.5f)), d, d), w2(std::vector<float>(gc::random(d * d, rng, 0.5f)), d, d);
  matrix<float> down(std::vector<float>(gc::random(rank * d, rng, 0.5f)), rank, d),
      up(std::vector<float>(gc::random(d * rank, rng, 0.5f)), d, rank);
  std::vector<std::vector<float>> b = {gc::random(d, rng), gc::random(d, rng), gc::random(d, rng)};
  const std::vector<cpu::cross_params> layers = {
      {w0.view(), {}, {}, b[0]}, {{}, down.view(), up.view(), b[1]}, {w2.view(), {}, {}, b[2]}};
  ref::buffer x0(n, d, 3);
  ref::fill(x0, rng);
  matrix<float> out(n, d), want(n, d);
  cpu::cross_trace trace;
  cpu::cross_network(x0.cview(), layers, want.view());
  for (int repeat = 0; repeat < 2; ++repeat) {
    cpu::cross_network_forward_train(x0.cview(), layers, trace, out.view());
    for (std::size_t i = 0; i < out.size(); ++i) CHECK(out.values()[i] == doctest::Approx(want.values()[i]).epsilon(1e-5));
  }
  const auto r = gc::random(n * d, rng);
  matrix<float> dout(std::vector<float>(r), n, d);
  ref::buffer dx0(n, d, 2);
  ref::fill(dx0, rng);  // overwritten
  matrix<float> dw0(d, d, 0.0f), dw2(d, d, 0.0f), ddown(rank, d, 0.0f), dup(d, rank, 0.0f);
  std::vector<std::vector<float>> db(3, std::vector<float>(d, 0.0f));
  const std::vector<cpu::cross_gradient> grads = {
      {dw0.view(), {}, {}, db[0]}, {{}, ddown.view(), dup.view(), db[1]}, {dw2.view(), {}, {}, db[2]}};
  cpu::cross_network_backward(layers, trace, dout.view(), dx0.view(), grads);

  auto x0d = gc::to_double(x0.cview()), w0d = gc::to_double(w0.view()), w2d = gc::to_double(w2.view()),
       downd = gc::to_double(down.view()), upd = gc::to_double(up.view());
  std::vector<std::vector<double>> bd = {gc::to_double(b[0]), gc::to_double(b[1]), gc::to_double(b[2])};
  const auto loss = [&] {
    auto x = cross_ref(x0d, x0d, w0d, {}, {}, bd[0], n, d, 0);
    x = cross_ref(x0d, x, {}, downd, upd, bd[1], n, d, rank);
    x = cross_ref(x0d, x, w2d, {}, {}, bd[2], n, d, 0);
    return weighted_sum(x, r);
  };
  CHECK(gc::rel_error(gc::numeric(x0d, loss), dx0.cview()) < gc::tolerance);
  CHECK(gc::rel_error(gc::numeric(w0d, loss), dw0.view()) < gc::tolerance);
  CHECK(gc::rel_error(gc::numeric(w2d, loss), dw2.view()) < gc::tolerance);
  CHECK(gc::rel_error(gc::numeric(downd, loss), ddown.view()) < gc::tolerance);
  CHECK(gc::rel_error(gc::numeric(upd, loss), dup.view()) < gc::tolerance);
  for (std::size_t l = 0; l < 3; ++l) CHECK(gc::rel_error(gc::numeric(bd[l], loss), db[l]) < gc::tolerance);
  // without dx0: parameters still accumulate (doubled now)
  const auto dw0_first = dw0.values();
  cpu::cross_network_backward(layers, trace, dout.view(), {}, grads);
  for (std::size_t i = 0; i < dw0_first.size(); ++i) CHECK(dw0.values()[i] == doctest::Approx(2 * dw0_first[i]));
}

TEST_CASE("dot_interaction_backward matches finite differences with and without self interaction, strided dz") {
  std::mt19937 rng(34);
  const std::size_t n = 3, f = 4, d = 5;
  for (bool self : {false, true}) {
    CAPTURE(self);
    const std::size_t pairs = cpu::interaction_size(f, self);
    ref::buffer features(n, f * d, 2), dfeatures(n, f * d, 1);
    ref::fill(features, rng);
    // dz sits beside other columns (as DLRM's cat([x, Z]) gradient does)
    ref::buffer wide(n, pairs + 3);
    ref::fill(wide, rng);
    const matrix_view<const float> dz(wide.data() + 3, n, pairs, wide.stride);
    cpu::dot_interaction_backward(features.cview(), f, self, dz, dfeatures.view());
    auto fd = gc::to_double(features.cview());
    const auto loss = [&] {
      double total = 0;
      for (std::size_t b = 0; b < n; ++b) {
        std::size_t p = 0;
        for (std::size_t i = 0; i < f; ++i)
          for (std::size_t j = 0; j < i + (self ? 1 : 0); ++j, ++p) {
            double dot = 0;
            for (std::size_t c = 0; c < d; ++c) dot += fd[b * f * d + i * d + c] * fd[b * f * d + j * d + c];
            total += dot * dz(b, p);
          }
      }
      return total;
    };
    CHECK(gc::rel_error(gc::numeric(fd, loss), dfeatures.cview()) < gc::tolerance);
    // the forward's pair order: check one entry against cpu::dot_interaction
    matrix<float> z(n, pairs);
    cpu::dot_interaction(features.cview(), f, self, z.view());
    const std::size_t last = pairs - 1;  // (f-1, f-2) or (f-1, f-1)
    double want = 0;
    const std::size_t j = self ? f - 1 : f - 2;
    for (std::size_t c = 0; c < d; ++c) want += double(features(1, (f - 1) * d + c)) * features(1, j * d + c);
    CHECK(z(1, last) == doctest::Approx(want).epsilon(1e-5));
  }
}

TEST_CASE("fm_second_order_backward and dot_rows_backward match finite differences") {
  std::mt19937 rng(35);
  const std::size_t n = 3, f = 4, d = 5;
  ref::buffer features(n, f * d, 3), dfeatures(n, f * d, 1);
  ref::fill(features, rng);
  const auto dout = gc::random(n, rng);
  cpu::fm_second_order_backward(features.cview(), f, dout, dfeatures.view());
  auto fd = gc::to_double(features.cview());
  const auto fm_loss = [&] {
    double total = 0;
    for (std::size_t b = 0; b < n; ++b) {
      double term = 0;
      for (std::size_t c = 0; c < d; ++c) {
        double s = 0, sq = 0;
        for (std::size_t i = 0; i < f; ++i) {
          const double v = fd[b * f * d + i * d + c];
          s += v;
          sq += v * v;
        }
        term += s * s - sq;
      }
      total += 0.5 * term * dout[b];
    }
    return total;
  };
  CHECK(gc::rel_error(gc::numeric(fd, fm_loss), dfeatures.cview()) < gc::tolerance);

  ref::buffer q(n, d, 1), it(n, d, 2), dq(n, d), di(n, d, 1);
  ref::fill(q, rng);
  ref::fill(it, rng);
  std::vector<float> scores(n);
  cpu::dot_rows(q.cview(), it.cview(), scores);
  cpu::dot_rows_backward(q.cview(), it.cview(), dout, dq.view(), di.view());
  auto qd = gc::to_double(q.cview()), id = gc::to_double(it.cview());
  const auto dot_loss = [&] {
    double total = 0;
    for (std::size_t b = 0; b < n; ++b) {
      double s = 0;
      for (std::size_t c = 0; c < d; ++c) s += qd[b * d + c] * id[b * d + c];
      total += s * dout[b];
    }
    return total;
  };
  CHECK(gc::rel_error(gc::numeric(qd, dot_loss), dq.cview()) < gc::tolerance);
  CHECK(gc::rel_error(gc::numeric(id, dot_loss), di.cview()) < gc::tolerance);
  double s0 = 0;
  for (std::size_t c = 0; c < d; ++c) s0 += double(q(0, c)) * it(0, c);
  CHECK(scores[0] == doctest::Approx(s0).epsilon(1e-6));
}

TEST_CASE("cross backward: empty batches are no-ops, NaN propagates, bad shapes name the argument") {
  const std::size_t d = 3;
  matrix<float> w(d, d, 0.5f), dw(d, d, 1.0f);
  std::vector<float> db(d, 1.0f);
  matrix<float> empty(0, d);
  cpu::cross_layer_backward(empty.view(), empty.view(), w.view(), empty.view(), empty.view(), empty.view(),
                            empty.view(), dw.view(), db);
  for (float v : dw.values()) CHECK(v == 1.0f);
  CHECK(db[0] == 1.0f);
  // NaN in dout reaches the gradients
  matrix<float> x0(2, d, 1.0f), xl(2, d, 1.0f), u(2, d, 1.0f), dout(2, d, 1.0f), dx0(2, d, 0.0f), dxl(2, d);
  dout(0, 1) = std::nanf("");
  cpu::cross_layer_backward(x0.view(), xl.view(), w.view(), u.view(), dout.view(), dx0.view(), dxl.view(), dw.view(), db);
  CHECK(std::isnan(dx0(0, 1)));
  CHECK(std::isnan(dxl(0, 0)));
  CHECK(std::isnan(dw(1, 0)));
  CHECK(std::isnan(db[1]));
  CHECK_FALSE(std::isnan(dx0(1, 1)));
  matrix<float> bad(2, d + 1);
  CHECK_THROWS_WITH_AS(cpu::cross_layer_backward(x0.view(), xl.view(), w.view(), u.view(), bad.view(), dx0.view(),
                                                 dxl.view(), dw.view(), db),
                       doctest::Contains("cpu::cross_layer_backward: dout"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::cross_layer_backward(x0.view(), xl.view(), w.view(), u.view(), dout.view(), dout.view(),
                                                 dxl.view(), dw.view(), db),
                       doctest::Contains("dx0 must not be dout"), recpipe::error);
  matrix<float> down(2, d), up(d, 3), v(2, 2);
  CHECK_THROWS_WITH_AS(cpu::cross_layer_low_rank_backward(x0.view(), xl.view(), down.view(), up.view(), v.view(),
                                                          u.view(), dout.view(), dx0.view(), dxl.view(), {}, {}, {}),
                       doctest::Contains("cpu::cross_layer_low_rank_backward: up"), recpipe::error);
  matrix<float> feats(2, 6), dfeats(2, 6), dz(2, 2);
  CHECK_THROWS_WITH_AS(cpu::dot_interaction_backward(feats.view(), 3, false, dz.view(), dfeats.view()),
                       doctest::Contains("cpu::dot_interaction_backward: dz"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::dot_interaction_backward(feats.view(), 4, false, dz.view(), dfeats.view()),
                       doctest::Contains("not a multiple of num_features"), recpipe::error);
  std::vector<float> one(1);
  CHECK_THROWS_WITH_AS(cpu::fm_second_order_backward(feats.view(), 3, one, dfeats.view()),
                       doctest::Contains("dout holds 1"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::dot_rows_backward(x0.view(), bad.view(), one, {}, {}),
                       doctest::Contains("cpu::dot_rows_backward: item"), recpipe::error);
  // empty network backward without a forward
  cpu::cross_trace trace;
  const std::vector<cpu::cross_params> layers = {{w.view(), {}, {}, {}}};
  const std::vector<cpu::cross_gradient> grads = {{dw.view(), {}, {}, {}}};
  CHECK_THROWS_WITH_AS(cpu::cross_network_backward(layers, trace, dout.view(), {}, grads),
                       doctest::Contains("trace holds 0 layers"), recpipe::error);
  cpu::cross_network_forward_train(empty.view(), layers, trace, empty.view());
  cpu::cross_network_backward(layers, trace, empty.view(), empty.view(), grads);
}
