// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu/gru.hpp (GRU step and ragged sequences, forward and backward through time)
// against a double-precision reference and its central finite differences. PyTorch nn.GRU /
// autograd parity is the separate cpu_gru_parity program (tools/reference_gru.py).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <recpipe/cpu/gru.hpp>

#include "unit/cpu/gradcheck.hpp"

namespace cpu = recpipe::cpu;
using recpipe::matrix;
using recpipe::matrix_view;

namespace {
using dvec = std::vector<double>;

using gradcheck::random_d;
using gradcheck::to_float;

// The problem: a GRU of input I, hidden H over ragged sequences, with an initial state.
struct problem {
  std::size_t in, hs, max_len;
  std::vector<std::size_t> lengths;
  dvec w_ih, w_hh, b_ih, b_hh, x, h0, dy, dlast;
};

problem make_problem(std::size_t in, std::size_t hs, std::vector<std::size_t> lengths, unsigned seed) {
  std::mt19937 rng(seed);
  problem p{in, hs, 0, std::move(lengths), {}, {}, {}, {}, {}, {}, {}, {}};
  for (std::size_t l : p.lengths) p.max_len = std::max(p.max_len, l);
  const std::size_t batch = p.lengths.size();
  p.w_ih = random_d(3 * hs * in, rng, 0.5f);
  p.w_hh = random_d(3 * hs * hs, rng, 0.5f);
  p.b_ih = random_d(3 * hs, rng, 0.3f);
  p.b_hh = random_d(3 * hs, rng, 0.3f);
  p.x = random_d(batch * p.max_len * in, rng, 1.0f);
  p.h0 = random_d(batch * hs, rng, 0.5f);
  p.dy = random_d(batch * p.max_len * hs, rng, 1.0f);
  p.dlast = random_d(batch * hs, rng, 1.0f);
  return p;
}

double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// Double reference: loss = sum_t,b <out(b, t), dy(b, t)> + sum_b <h_last(b), dlast(b)>.
double reference_loss(const problem& p) {
  const std::size_t in = p.in, hs = p.hs, batch = p.lengths.size();
  double loss = 0.0;
  for (std::size_t b = 0; b < batch; ++b) {
    dvec h(p.h0.begin() + static_cast<std::ptrdiff_t>(b * hs), p.h0.begin() + static_cast<std::ptrdiff_t>((b + 1) * hs));
    for (std::size_t t = 0; t < p.lengths[b]; ++t) {
      const double* x = p.x.data() + (b * p.max_len + t) * in;
      dvec gi(3 * hs), gh(3 * hs), next(hs);
      for (std::size_t g = 0; g < 3 * hs; ++g) {
        double a = p.b_ih[g], c = p.b_hh[g];
        for (std::size_t k = 0; k < in; ++k) a += p.w_ih[g * in + k] * x[k];
        for (std::size_t k = 0; k < hs; ++k) c += p.w_hh[g * hs + k] * h[k];
        gi[g] = a;
        gh[g] = c;
      }
      for (std::size_t j = 0; j < hs; ++j) {
        const double r = sigmoid(gi[j] + gh[j]), z = sigmoid(gi[hs + j] + gh[hs + j]);
        const double n = std::tanh(gi[2 * hs + j] + r * gh[2 * hs + j]);
        next[j] = (1 - z) * n + z * h[j];
        loss += next[j] * p.dy[(b * p.max_len + t) * hs + j];
      }
      h = next;
    }
    for (std::size_t j = 0; j < hs; ++j) loss += h[j] * p.dlast[b * hs + j];
  }
  return loss;
}

struct result {
  std::vector<float> out, last, dx, dh0, dw_ih, dw_hh, db_ih, db_hh;
};

result run_kernel(const problem& p) {
  const std::size_t in = p.in, hs = p.hs, batch = p.lengths.size(), rows = batch * p.max_len;
  const auto w_ih = to_float(p.w_ih), w_hh = to_float(p.w_hh), b_ih = to_float(p.b_ih), b_hh = to_float(p.b_hh);
  const auto x = to_float(p.x), h0 = to_float(p.h0), dy = to_float(p.dy), dlast = to_float(p.dlast);
  const cpu::gru_weights w{{w_ih.data(), 3 * hs, in}, {w_hh.data(), 3 * hs, hs}, b_ih, b_hh};
  result r;
  r.out.resize(rows * hs);
  r.last.resize(batch * hs);
  r.dx.resize(rows * in);
  r.dh0.resize(batch * hs);
  r.dw_ih.assign(3 * hs * in, 0.0f);
  r.dw_hh.assign(3 * hs * hs, 0.0f);
  r.db_ih.assign(3 * hs, 0.0f);
  r.db_hh.assign(3 * hs, 0.0f);
  cpu::gru_sequence_trace trace;
  cpu::gru_sequence({x.data(), rows, in}, p.lengths, p.max_len, w, {h0.data(), batch, hs}, {r.out.data(), rows, hs},
                    {r.last.data(), batch, hs}, &trace);
  const cpu::gru_gradients g{{r.dw_ih.data(), 3 * hs, in}, {r.dw_hh.data(), 3 * hs, hs}, r.db_ih, r.db_hh};
  cpu::gru_sequence_backward({dy.data(), rows, hs}, {dlast.data(), batch, hs}, w, trace, {r.dx.data(), rows, in},
                             {r.dh0.data(), batch, hs}, g);
  return r;
}

constexpr double fd_tolerance = 1e-4;

void check_grad(problem& p, dvec problem::*field, const std::vector<float>& got) {
  dvec& v = p.*field;
  const dvec want = gradcheck::numeric(v, [&] { return reference_loss(p); });
  CHECK(gradcheck::rel_error(want, got) < fd_tolerance);
}
}  // namespace

TEST_CASE("gru_sequence: backward through time matches finite differences (ragged, h0, biases)") {
  for (const auto& lengths : {std::vector<std::size_t>{4, 1, 3, 0, 4}, std::vector<std::size_t>{2}}) {
    problem p = make_problem(5, 4, lengths, 11 + static_cast<unsigned>(lengths.size()));
    const result r = run_kernel(p);
    check_grad(p, &problem::w_ih, r.dw_ih);
    check_grad(p, &problem::w_hh, r.dw_hh);
    check_grad(p, &problem::b_ih, r.db_ih);
    check_grad(p, &problem::b_hh, r.db_hh);
    check_grad(p, &problem::h0, r.dh0);
    // padded rows of x do not enter the loss: their numeric gradient is 0 and dx is written 0
    check_grad(p, &problem::x, r.dx);
  }
}

TEST_CASE("gru_sequence: forward equals steps, padded outputs are 0, length-0 keeps h0") {
  problem p = make_problem(3, 6, {3, 0, 2}, 5);
  const result r = run_kernel(p);
  const std::size_t hs = p.hs;
  // sequence 1 has no step: h_last = h0, its output rows are 0
  for (std::size_t j = 0; j < hs; ++j) CHECK(r.last[hs + j] == static_cast<float>(p.h0[hs + j]));
  for (std::size_t t = 0; t < p.max_len; ++t)
    for (std::size_t j = 0; j < hs; ++j) CHECK(r.out[(1 * p.max_len + t) * hs + j] == 0.0f);
  for (std::size_t j = 0; j < hs; ++j) CHECK(r.out[(2 * p.max_len + 2) * hs + j] == 0.0f);
  // step by step with gru_step reproduces sequence 0
  const auto w_ih = to_float(p.w_ih), w_hh = to_float(p.w_hh), b_ih = to_float(p.b_ih), b_hh = to_float(p.b_hh);
  const cpu::gru_weights w{{w_ih.data(), 3 * hs, p.in}, {w_hh.data(), 3 * hs, hs}, b_ih, b_hh};
  std::vector<float> h(p.h0.begin(), p.h0.begin() + static_cast<std::ptrdiff_t>(hs));
  const auto x = to_float(p.x);
  for (std::size_t t = 0; t < 3; ++t) {
    cpu::gru_step({x.data() + t * p.in, 1, p.in}, {h.data(), 1, hs}, w, {h.data(), 1, hs});  // in place
    for (std::size_t j = 0; j < hs; ++j) CHECK(h[j] == doctest::Approx(r.out[t * hs + j]).epsilon(1e-6));
  }
}

TEST_CASE("gru_step_backward: parameter grads accumulate, input grads overwrite, no-bias GRU") {
  std::mt19937 rng(3);
  const std::size_t in = 4, hs = 3, batch = 2;
  auto w_ih = gradcheck::random(3 * hs * in, rng, 0.5f), w_hh = gradcheck::random(3 * hs * hs, rng, 0.5f);
  auto x = gradcheck::random(batch * in, rng), h = gradcheck::random(batch * hs, rng), dy = gradcheck::random(batch * hs, rng);
  const cpu::gru_weights w{{w_ih.data(), 3 * hs, in}, {w_hh.data(), 3 * hs, hs}, {}, {}};
  std::vector<float> out(batch * hs);
  cpu::gru_step_trace trace;
  cpu::gru_step({x.data(), batch, in}, {h.data(), batch, hs}, w, {out.data(), batch, hs}, &trace);
  std::vector<float> dw_ih(3 * hs * in, 0.0f), dw_hh(3 * hs * hs, 0.0f), dx(batch * in, 7.0f), dh(batch * hs, 7.0f);
  const cpu::gru_gradients g{{dw_ih.data(), 3 * hs, in}, {dw_hh.data(), 3 * hs, hs}, {}, {}};
  cpu::gru_step_backward({dy.data(), batch, hs}, w, trace, {dx.data(), batch, in}, {dh.data(), batch, hs}, g);
  const auto once_ih = dw_ih, once_dx = dx, once_dh = dh;
  cpu::gru_step_backward({dy.data(), batch, hs}, w, trace, {dx.data(), batch, in}, {dh.data(), batch, hs}, g);
  for (std::size_t i = 0; i < dw_ih.size(); ++i) CHECK(dw_ih[i] == doctest::Approx(2 * once_ih[i]));
  CHECK(dx == once_dx);
  CHECK(dh == once_dh);
  // dh may alias dh_out (BPTT in place)
  std::vector<float> inplace = dy;
  cpu::gru_step_backward({inplace.data(), batch, hs}, w, trace, {}, {inplace.data(), batch, hs}, g);
  for (std::size_t i = 0; i < inplace.size(); ++i) CHECK(inplace[i] == doctest::Approx(once_dh[i]));
}

TEST_CASE("gru: shapes are checked, NaN propagates, empty batches do nothing") {
  const std::size_t in = 2, hs = 3;
  std::vector<float> w_ih(3 * hs * in, 0.1f), w_hh(3 * hs * hs, 0.1f), b(3 * hs, 0.0f), bad_b(4, 0.0f);
  const cpu::gru_weights w{{w_ih.data(), 3 * hs, in}, {w_hh.data(), 3 * hs, hs}, b, b};
  std::vector<float> x(2 * in, 1.0f), h(2 * hs, 0.0f), out(2 * hs);
  CHECK_THROWS_WITH_AS(cpu::gru_step({x.data(), 2, in}, {h.data(), 1, hs}, w, {out.data(), 2, hs}),
                       doctest::Contains("cpu::gru_step: h must be 2 x 3"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::gru_step({x.data(), 1, 2 * in}, {h.data(), 1, hs}, w, {out.data(), 1, hs}),
                       doctest::Contains("x must be 1 x 2"), recpipe::error);
  const cpu::gru_weights wrong_bias{{w_ih.data(), 3 * hs, in}, {w_hh.data(), 3 * hs, hs}, bad_b, bad_b};
  CHECK_THROWS_WITH_AS(cpu::gru_step({x.data(), 2, in}, {h.data(), 2, hs}, wrong_bias, {out.data(), 2, hs}),
                       doctest::Contains("bias_ih"), recpipe::error);
  const cpu::gru_weights one_bias{{w_ih.data(), 3 * hs, in}, {w_hh.data(), 3 * hs, hs}, b, {}};
  CHECK_THROWS_AS(cpu::gru_step({x.data(), 2, in}, {h.data(), 2, hs}, one_bias, {out.data(), 2, hs}), recpipe::error);
  const cpu::gru_weights wrong_ih{{w_ih.data(), 2 * hs, in}, {w_hh.data(), 3 * hs, hs}, b, b};
  CHECK_THROWS_WITH_AS(cpu::gru_step({x.data(), 2, in}, {h.data(), 2, hs}, wrong_ih, {out.data(), 2, hs}),
                       doctest::Contains("weight_ih must have 3 * hidden"), recpipe::error);
  const std::vector<std::size_t> too_long{3};
  CHECK_THROWS_WITH_AS(cpu::gru_sequence({x.data(), 2, in}, too_long, 2, w, {}, {}, {}),
                       doctest::Contains("lengths[0] = 3 exceeds max_len = 2"), recpipe::error);
  cpu::gru_step_trace empty_trace;
  std::vector<float> g_ih(3 * hs * in), g_hh(3 * hs * hs), gb(3 * hs);
  const cpu::gru_gradients g{{g_ih.data(), 3 * hs, in}, {g_hh.data(), 3 * hs, hs}, gb, gb};
  CHECK_THROWS_WITH_AS(cpu::gru_step_backward({out.data(), 2, hs}, w, empty_trace, {}, {}, g),
                       doctest::Contains("trace does not match"), recpipe::error);
  // NaN in row 0's input reaches row 0's state only
  x[0] = std::numeric_limits<float>::quiet_NaN();
  cpu::gru_step({x.data(), 2, in}, {h.data(), 2, hs}, w, {out.data(), 2, hs});
  for (std::size_t j = 0; j < hs; ++j) {
    CHECK(std::isnan(out[j]));
    CHECK(std::isfinite(out[hs + j]));
  }
  // empty batch
  cpu::gru_step_trace trace;
  cpu::gru_step({x.data(), 0, in}, {h.data(), 0, hs}, w, {out.data(), 0, hs}, &trace);
  cpu::gru_step_backward({out.data(), 0, hs}, w, trace, {}, {}, g);
  const std::vector<std::size_t> none;
  cpu::gru_sequence({nullptr, 0, in}, none, 0, w, {}, {}, {});
}
