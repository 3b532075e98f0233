// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu/attention_backward.hpp (training forward and backward of multi-head attention
// and the transformer encoder layer) against central finite differences of a double-precision
// reference forward. PyTorch autograd parity is the separate attention_backward_parity program.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <recpipe/cpu/attention_backward.hpp>

#include "unit/cpu/gradcheck.hpp"
#include "unit/cpu/reference.hpp"

namespace cpu = recpipe::cpu;
using recpipe::matrix;
using recpipe::matrix_view;

namespace {
using dvec = std::vector<double>;

using gradcheck::random_d;
using gradcheck::to_float;

// ---- double reference forward (padded layout; padded output rows are 0) ----
struct mha_params {
  std::size_t e = 0, heads = 1;
  bool bias = true;
  dvec in_w, in_b, out_w, out_b;
  mha_params(std::size_t e_, std::size_t heads_, bool bias_, std::mt19937& rng)
      : e(e_), heads(heads_), bias(bias_), in_w(random_d(3 * e_ * e_, rng, 0.5f)), out_w(random_d(e_ * e_, rng, 0.5f)) {
    if (bias) {
      in_b = random_d(3 * e, rng, 0.5f);
      out_b = random_d(e, rng, 0.5f);
    }
  }
};

dvec linear_d(const dvec& x, std::size_t rows, std::size_t in, const dvec& w, const dvec& b, std::size_t out) {
  dvec y(rows * out);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0.0 : b[o];
      for (std::size_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
      y[r * out + o] = s;
    }
  return y;
}

dvec mha_d(const dvec& x, const std::vector<std::size_t>& lengths, std::size_t max_len, const mha_params& p,
           bool causal) {
  const std::size_t e = p.e, rows = lengths.size() * max_len, hd = e / p.heads;
  const dvec qkv = linear_d(x, rows, e, p.in_w, p.in_b, 3 * e);
  dvec ctx(rows * e, 0.0);
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t h = 0; h < p.heads; ++h)
      for (std::size_t t = 0; t < lengths[b]; ++t) {
        const std::size_t visible = causal ? t + 1 : lengths[b];
        dvec s(visible);
        double peak = -1e300, total = 0;
        for (std::size_t k = 0; k < visible; ++k) {
          double dot = 0;
          for (std::size_t c = 0; c < hd; ++c)
            dot += qkv[(b * max_len + t) * 3 * e + h * hd + c] * qkv[(b * max_len + k) * 3 * e + e + h * hd + c];
          s[k] = dot / std::sqrt(static_cast<double>(hd));
          peak = std::max(peak, s[k]);
        }
        for (double& v : s) total += (v = std::exp(v - peak));
        for (std::size_t k = 0; k < visible; ++k)
          for (std::size_t c = 0; c < hd; ++c)
            ctx[(b * max_len + t) * e + h * hd + c] += s[k] / total * qkv[(b * max_len + k) * 3 * e + 2 * e + h * hd + c];
      }
  dvec out = linear_d(ctx, rows, e, p.out_w, p.out_b, e);
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t t = lengths[b]; t < max_len; ++t) std::fill_n(out.begin() + static_cast<long>((b * max_len + t) * e), e, 0.0);
  return out;
}

dvec layer_norm_d(const dvec& x, std::size_t rows, std::size_t cols, const dvec& g, const dvec& b) {
  dvec y(x.size());
  for (std::size_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (std::size_t c = 0; c < cols; ++c) mean += x[r * cols + c];
    mean /= static_cast<double>(cols);
    for (std::size_t c = 0; c < cols; ++c) var += (x[r * cols + c] - mean) * (x[r * cols + c] - mean);
    var /= static_cast<double>(cols);
    for (std::size_t c = 0; c < cols; ++c)
      y[r * cols + c] = (x[r * cols + c] - mean) / std::sqrt(var + 1e-5) * g[c] + b[c];
  }
  return y;
}

struct layer_params {
  mha_params attn;
  std::size_t ff;
  dvec w1, b1, w2, b2, g1, be1, g2, be2;
  int act;  // 1 relu, 2 gelu (ref::act)
  bool norm_first;
  layer_params(std::size_t e, std::size_t heads, std::size_t ff_, int act_, bool norm_first_, std::mt19937& rng)
      : attn(e, heads, true, rng), ff(ff_), w1(random_d(ff_ * e, rng, 0.5f)), b1(random_d(ff_, rng, 0.5f)),
        w2(random_d(e * ff_, rng, 0.5f)), b2(random_d(e, rng, 0.5f)), g1(random_d(e, rng, 1.0f)),
        be1(random_d(e, rng, 0.5f)), g2(random_d(e, rng, 1.0f)), be2(random_d(e, rng, 0.5f)), act(act_),
        norm_first(norm_first_) {}
};

dvec layer_d(const dvec& x, const std::vector<std::size_t>& lengths, std::size_t max_len, const layer_params& p,
             bool causal) {
  const std::size_t e = p.attn.e, rows = lengths.size() * max_len;
  const auto plus = [](dvec a, const dvec& b) {
    for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
    return a;
  };
  const auto ffn = [&](const dvec& in) {
    dvec hidden = linear_d(in, rows, e, p.w1, p.b1, p.ff);
    for (double& v : hidden) v = ref::act(p.act, v);
    return linear_d(hidden, rows, p.ff, p.w2, p.b2, e);
  };
  dvec y;
  if (!p.norm_first) {
    const dvec h = layer_norm_d(plus(x, mha_d(x, lengths, max_len, p.attn, causal)), rows, e, p.g1, p.be1);
    y = layer_norm_d(plus(h, ffn(h)), rows, e, p.g2, p.be2);
  } else {
    const dvec h = plus(x, mha_d(layer_norm_d(x, rows, e, p.g1, p.be1), lengths, max_len, p.attn, causal));
    y = plus(h, ffn(layer_norm_d(h, rows, e, p.g2, p.be2)));
  }
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t t = lengths[b]; t < max_len; ++t) std::fill_n(y.begin() + static_cast<long>((b * max_len + t) * e), e, 0.0);
  return y;
}

// ---- float mirrors of the parameters, and their gradients ----
struct mha_float {
  std::size_t e, heads;
  std::vector<float> in_w, in_b, out_w, out_b;
  std::vector<float> d_in_w, d_in_b, d_out_w, d_out_b;
  explicit mha_float(const mha_params& p)
      : e(p.e), heads(p.heads), in_w(to_float(p.in_w)), in_b(to_float(p.in_b)), out_w(to_float(p.out_w)),
        out_b(to_float(p.out_b)), d_in_w(in_w.size()), d_in_b(in_b.size()), d_out_w(out_w.size()), d_out_b(out_b.size()) {}
  cpu::mha_weights weights() const {
    return {{in_w.data(), 3 * e, e}, in_b, {out_w.data(), e, e}, out_b, heads};
  }
  cpu::mha_gradients grads() { return {{d_in_w.data(), 3 * e, e}, d_in_b, {d_out_w.data(), e, e}, d_out_b}; }
};

// Loss = sum(dy * f(x)) over every row (padded outputs are 0 in the reference, so they add 0).
double dot_loss(const dvec& y, const dvec& dy) {
  double s = 0;
  for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * dy[i];
  return s;
}

// Central differences of loss() with respect to every entry of v.
dvec numeric_gradient(dvec& v, const std::function<double()>& loss) {
  constexpr double h = 1e-6;
  dvec g(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const double saved = v[i];
    v[i] = saved + h;
    const double plus = loss();
    v[i] = saved - h;
    const double minus = loss();
    v[i] = saved;
    g[i] = (plus - minus) / (2 * h);
  }
  return g;
}

// Float analytic gradients against the double finite differences: the error is float rounding,
// about 1e-6 of the tensor's magnitude; 1e-4 leaves room and still catches any wrong term.
constexpr double fd_tolerance = 1e-4;

void check_gradient(const char* name, const dvec& want, std::span<const float> got) {
  CAPTURE(name);
  REQUIRE(want.size() == got.size());
  if (want.empty()) return;
  double peak = 0;
  for (double v : want) peak = std::max(peak, std::abs(v));
  CHECK(peak > 0.0);  // a zero gradient everywhere would make the comparison meaningless
  CHECK(ref::max_rel_error(want, got) < fd_tolerance);
}

}  // namespace

TEST_CASE("multi_head_attention_backward matches finite differences (causal, padded, several heads)") {
  std::mt19937 rng(31);
  const std::vector<std::size_t> lengths = {4, 1, 0, 3};
  const std::size_t max_len = 4, rows = lengths.size() * max_len;
  for (const auto& shape : {std::pair<std::size_t, std::size_t>{8, 2}, {12, 3}, {6, 1}})
    for (bool causal : {false, true})
      for (bool bias : {true, false}) {
        const std::size_t e = shape.first, heads = shape.second;
        CAPTURE(e); CAPTURE(heads); CAPTURE(causal); CAPTURE(bias);
        mha_params p(e, heads, bias, rng);
        dvec x = random_d(rows * e, rng, 1.0f), dy = random_d(rows * e, rng, 1.0f);
        mha_float f(p);
        std::vector<float> xf = to_float(x), dyf = to_float(dy), y(rows * e, 7.0f), dx(rows * e, 7.0f);
        const matrix_view<const float> xv(xf.data(), rows, e), dyv(dyf.data(), rows, e);
        cpu::mha_trace trace;
        cpu::multi_head_attention(xv, lengths, max_len, f.weights(), causal, {y.data(), rows, e}, trace);
        // The training forward gives the inference forward's output.
        std::vector<float> y_inference(rows * e);
        cpu::multi_head_attention(xv, lengths, max_len, f.weights(), causal, {y_inference.data(), rows, e});
        CHECK(ref::max_rel_error(dvec(y_inference.begin(), y_inference.end()), y) < 1e-6);
        cpu::multi_head_attention_backward(dyv, f.weights(), trace, {dx.data(), rows, e}, f.grads());

        const auto loss = [&] { return dot_loss(mha_d(x, lengths, max_len, p, causal), dy); };
        check_gradient("x", numeric_gradient(x, loss), dx);
        check_gradient("in_proj_weight", numeric_gradient(p.in_w, loss), f.d_in_w);
        check_gradient("in_proj_bias", numeric_gradient(p.in_b, loss), f.d_in_b);
        check_gradient("out_proj_weight", numeric_gradient(p.out_w, loss), f.d_out_w);
        check_gradient("out_proj_bias", numeric_gradient(p.out_b, loss), f.d_out_b);
        // Padded positions receive no gradient; an empty session none at all.
        for (std::size_t b = 0; b < lengths.size(); ++b)
          for (std::size_t t = lengths[b]; t < max_len; ++t)
            for (std::size_t c = 0; c < e; ++c) CHECK(dx[(b * max_len + t) * e + c] == 0.0f);
      }
}

TEST_CASE("multi_head_attention_backward accumulates parameter gradients and overwrites dx") {
  std::mt19937 rng(32);
  const std::vector<std::size_t> lengths = {3, 2};
  const std::size_t max_len = 3, rows = 6, e = 8;
  mha_params p(e, 2, true, rng);
  mha_float f(p);
  std::vector<float> x = to_float(random_d(rows * e, rng, 1.0f)), dy = to_float(random_d(rows * e, rng, 1.0f));
  std::vector<float> y(rows * e), dx(rows * e);
  cpu::mha_trace trace;
  cpu::multi_head_attention({x.data(), rows, e}, lengths, max_len, f.weights(), true, {y.data(), rows, e}, trace);
  cpu::multi_head_attention_backward({dy.data(), rows, e}, f.weights(), trace, {dx.data(), rows, e}, f.grads());
  const auto once_w = f.d_in_w, once_b = f.d_out_b;
  const auto once_dx = dx;
  cpu::multi_head_attention_backward({dy.data(), rows, e}, f.weights(), trace, {dx.data(), rows, e}, f.grads());
  for (std::size_t i = 0; i < once_w.size(); ++i) CHECK(f.d_in_w[i] == doctest::Approx(2 * once_w[i]).epsilon(1e-6));
  for (std::size_t i = 0; i < once_b.size(); ++i) CHECK(f.d_out_b[i] == doctest::Approx(2 * once_b[i]).epsilon(1e-6));
  CHECK(dx == once_dx);
  // d_x may be d_out itself.
  std::vector<float> in_place = dy;
  cpu::multi_head_attention_backward({in_place.data(), rows, e}, f.weights(), trace, {in_place.data(), rows, e},
                                     f.grads());
  for (std::size_t i = 0; i < dx.size(); ++i) CHECK(in_place[i] == doctest::Approx(once_dx[i]).epsilon(1e-6));
}

TEST_CASE("multi_head_attention_backward: padding content, empty batches and bad arguments") {
  std::mt19937 rng(33);
  const std::size_t e = 8;
  mha_params p(e, 2, true, rng);
  mha_float f(p);
  SUBCASE("NaN in padded rows never reaches a gradient") {
    const std::vector<std::size_t> lengths = {2, 0};
    const std::size_t max_len = 3, rows = 6;
    std::vector<float> x = to_float(random_d(rows * e, rng, 1.0f)), dy = to_float(random_d(rows * e, rng, 1.0f));
    for (std::size_t c = 0; c < e; ++c) x[2 * e + c] = x[3 * e + c] = std::nanf("");
    for (std::size_t c = 0; c < e; ++c) dy[5 * e + c] = INFINITY;  // gradient of a padded output: ignored
    std::vector<float> y(rows * e), dx(rows * e);
    cpu::mha_trace trace;
    cpu::multi_head_attention({x.data(), rows, e}, lengths, max_len, f.weights(), true, {y.data(), rows, e}, trace);
    cpu::multi_head_attention_backward({dy.data(), rows, e}, f.weights(), trace, {dx.data(), rows, e}, f.grads());
    for (float v : y) CHECK(std::isfinite(v));
    for (float v : dx) CHECK(std::isfinite(v));
    for (float v : f.d_in_w) CHECK(std::isfinite(v));
    for (float v : f.d_out_w) CHECK(std::isfinite(v));
  }
  SUBCASE("an empty batch and all-empty sessions give zeros and leave the gradients alone") {
    cpu::mha_trace trace;
    std::vector<float> none;
    cpu::multi_head_attention({none.data(), 0, e}, std::vector<std::size_t>{}, 5, f.weights(), true, {none.data(), 0, e}, trace);
    cpu::multi_head_attention_backward({none.data(), 0, e}, f.weights(), trace, {none.data(), 0, e}, f.grads());
    const std::vector<std::size_t> zero = {0, 0};
    std::vector<float> x(4 * e, 1.0f), y(4 * e, 5.0f), dx(4 * e, 5.0f);
    cpu::multi_head_attention({x.data(), 4, e}, zero, 2, f.weights(), false, {y.data(), 4, e}, trace);
    cpu::multi_head_attention_backward({x.data(), 4, e}, f.weights(), trace, {dx.data(), 4, e}, f.grads());
    for (float v : y) CHECK(v == 0.0f);
    for (float v : dx) CHECK(v == 0.0f);
    for (float v : f.d_in_w) CHECK(v == 0.0f);
  }
  SUBCASE("shapes that disagree with the trace or the weights are errors") {
    const std::vector<std::size_t> lengths = {2, 1};
    std::vector<float> x(4 * e, 0.5f), y(4 * e), dx(4 * e);
    cpu::mha_trace trace;
    cpu::multi_head_attention({x.data(), 4, e}, lengths, 2, f.weights(), true, {y.data(), 4, e}, trace);
    CHECK_THROWS_WITH_AS(cpu::multi_head_attention_backward({x.data(), 3, e}, f.weights(), trace, {dx.data(), 4, e}, f.grads()),
                         doctest::Contains("d_out must be 4 x 8"), recpipe::error);
    auto w = f.weights();
    w.num_heads = 4;
    CHECK_THROWS_WITH_AS(cpu::multi_head_attention_backward({x.data(), 4, e}, w, trace, {dx.data(), 4, e}, f.grads()),
                         doctest::Contains("recorded with 2"), recpipe::error);
    auto no_bias = f.weights();
    no_bias.out_proj_bias = {};
    CHECK_THROWS_WITH_AS(cpu::multi_head_attention_backward({x.data(), 4, e}, no_bias, trace, {dx.data(), 4, e}, f.grads()),
                         doctest::Contains("no out_proj_bias"), recpipe::error);
    auto g = f.grads();
    g.in_proj_weight = {f.d_in_w.data(), e, e};
    CHECK_THROWS_WITH_AS(cpu::multi_head_attention_backward({x.data(), 4, e}, f.weights(), trace, {dx.data(), 4, e}, g),
                         doctest::Contains("grads.in_proj_weight must be 24 x 8"), recpipe::error);
    CHECK_THROWS_WITH_AS(cpu::multi_head_attention({x.data(), 4, e}, std::vector<std::size_t>{3, 1}, 2, f.weights(), true,
                                                   {y.data(), 4, e}, trace),
                         doctest::Contains("exceeds max_len"), recpipe::error);
  }
}

namespace {
struct layer_float {
  mha_float attn;
  std::size_t e, ff;
  std::vector<float> w1, b1, w2, b2, g1, be1, g2, be2;
  std::vector<float> d_w1, d_b1, d_w2, d_b2, d_g1, d_be1, d_g2, d_be2;
  cpu::activation act;
  bool norm_first;
  explicit layer_float(const layer_params& p)
      : attn(p.attn), e(p.attn.e), ff(p.ff), w1(to_float(p.w1)), b1(to_float(p.b1)), w2(to_float(p.w2)),
        b2(to_float(p.b2)), g1(to_float(p.g1)), be1(to_float(p.be1)), g2(to_float(p.g2)), be2(to_float(p.be2)),
        d_w1(w1.size()), d_b1(b1.size()), d_w2(w2.size()), d_b2(b2.size()), d_g1(e), d_be1(e), d_g2(e), d_be2(e),
        act(static_cast<cpu::activation>(p.act)), norm_first(p.norm_first) {}
  cpu::transformer_layer_weights weights() const {
    return {attn.weights(), {w1.data(), ff, e}, b1, {w2.data(), e, ff}, b2, g1, be1, g2, be2, 1e-5f, act, norm_first};
  }
  cpu::transformer_layer_gradients grads() {
    return {attn.grads(), {d_w1.data(), ff, e}, d_b1, {d_w2.data(), e, ff}, d_b2, d_g1, d_be1, d_g2, d_be2};
  }
};
}  // namespace

TEST_CASE("transformer_encoder_layer_backward matches finite differences (post-norm, pre-norm, relu, gelu)") {
  REQUIRE(static_cast<int>(cpu::activation::relu) == 1);
  REQUIRE(static_cast<int>(cpu::activation::gelu) == 2);
  std::mt19937 rng(34);
  const std::vector<std::size_t> lengths = {4, 1, 0, 3};
  const std::size_t max_len = 4, rows = lengths.size() * max_len, e = 8;
  for (bool norm_first : {false, true})
    for (int act : {1, 2})
      for (bool causal : {true, false}) {
        CAPTURE(norm_first); CAPTURE(act); CAPTURE(causal);
        layer_params p(e, 2, 12, act, norm_first, rng);
        dvec x = random_d(rows * e, rng, 1.0f), dy = random_d(rows * e, rng, 1.0f);
        layer_float f(p);
        std::vector<float> xf = to_float(x), dyf = to_float(dy), y(rows * e, 7.0f), dx(rows * e, 7.0f);
        const matrix_view<const float> xv(xf.data(), rows, e);
        cpu::transformer_layer_trace trace;
        cpu::transformer_encoder_layer(xv, lengths, max_len, f.weights(), causal, {y.data(), rows, e}, trace);
        std::vector<float> y_inference(rows * e);
        cpu::transformer_encoder_layer(xv, lengths, max_len, f.weights(), causal, {y_inference.data(), rows, e});
        CHECK(ref::max_rel_error(dvec(y_inference.begin(), y_inference.end()), y) < 1e-6);
        cpu::transformer_encoder_layer_backward({dyf.data(), rows, e}, f.weights(), trace, {dx.data(), rows, e}, f.grads());

        const auto loss = [&] { return dot_loss(layer_d(x, lengths, max_len, p, causal), dy); };
        check_gradient("x", numeric_gradient(x, loss), dx);
        check_gradient("in_proj_weight", numeric_gradient(p.attn.in_w, loss), f.attn.d_in_w);
        check_gradient("in_proj_bias", numeric_gradient(p.attn.in_b, loss), f.attn.d_in_b);
        check_gradient("out_proj_weight", numeric_gradient(p.attn.out_w, loss), f.attn.d_out_w);
        check_gradient("out_proj_bias", numeric_gradient(p.attn.out_b, loss), f.attn.d_out_b);
        check_gradient("linear1.weight", numeric_gradient(p.w1, loss), f.d_w1);
        check_gradient("linear1.bias", numeric_gradient(p.b1, loss), f.d_b1);
        check_gradient("linear2.weight", numeric_gradient(p.w2, loss), f.d_w2);
        check_gradient("linear2.bias", numeric_gradient(p.b2, loss), f.d_b2);
        check_gradient("norm1.weight", numeric_gradient(p.g1, loss), f.d_g1);
        check_gradient("norm1.bias", numeric_gradient(p.be1, loss), f.d_be1);
        check_gradient("norm2.weight", numeric_gradient(p.g2, loss), f.d_g2);
        check_gradient("norm2.bias", numeric_gradient(p.be2, loss), f.d_be2);
        for (std::size_t b = 0; b < lengths.size(); ++b)
          for (std::size_t t = lengths[b]; t < max_len; ++t)
            for (std::size_t c = 0; c < e; ++c) CHECK(dx[(b * max_len + t) * e + c] == 0.0f);
      }
}

TEST_CASE("transformer_encoder_layer_backward: accumulation, NaN padding, mismatches") {
  std::mt19937 rng(35);
  const std::vector<std::size_t> lengths = {3, 1};
  const std::size_t max_len = 3, rows = 6, e = 8;
  for (bool norm_first : {false, true}) {
    CAPTURE(norm_first);
    layer_params p(e, 2, 12, 1, norm_first, rng);
    layer_float f(p);
    std::vector<float> x = to_float(random_d(rows * e, rng, 1.0f)), dy = to_float(random_d(rows * e, rng, 1.0f));
    for (std::size_t c = 0; c < e; ++c) x[4 * e + c] = std::nanf("");  // padding of session 1
    for (std::size_t c = 0; c < e; ++c) dy[5 * e + c] = std::nanf("");
    std::vector<float> y(rows * e), dx(rows * e);
    cpu::transformer_layer_trace trace;
    cpu::transformer_encoder_layer({x.data(), rows, e}, lengths, max_len, f.weights(), true, {y.data(), rows, e}, trace);
    cpu::transformer_encoder_layer_backward({dy.data(), rows, e}, f.weights(), trace, {dx.data(), rows, e}, f.grads());
    for (float v : y) CHECK(std::isfinite(v));
    for (float v : dx) CHECK(std::isfinite(v));
    for (const auto* g : {&f.d_w1, &f.d_w2, &f.d_g1, &f.d_be2, &f.attn.d_in_w})
      for (float v : *g) CHECK(std::isfinite(v));
    const auto once = f.d_w2;
    const auto once_dx = dx;
    cpu::transformer_encoder_layer_backward({dy.data(), rows, e}, f.weights(), trace, {dy.data(), rows, e}, f.grads());
    for (std::size_t i = 0; i < once.size(); ++i) CHECK(f.d_w2[i] == doctest::Approx(2 * once[i]).epsilon(1e-6));
    for (std::size_t i = 0; i < dx.size(); ++i) CHECK(dy[i] == doctest::Approx(once_dx[i]).epsilon(1e-6));  // in place

    auto other = f.weights();
    other.norm_first = !norm_first;
    CHECK_THROWS_WITH_AS(cpu::transformer_encoder_layer_backward({dx.data(), rows, e}, other, trace, {dx.data(), rows, e},
                                                                 f.grads()),
                         doctest::Contains("differ from the recorded forward"), recpipe::error);
    auto g = f.grads();
    g.norm1_weight = g.norm1_weight.first(3);
    CHECK_THROWS_WITH_AS(cpu::transformer_encoder_layer_backward({dx.data(), rows, e}, f.weights(), trace,
                                                                 {dx.data(), rows, e}, g),
                         doctest::Contains("grads.norm1_weight must hold 8 values"), recpipe::error);
    auto no_norm = f.weights();
    no_norm.norm2_weight = {};
    CHECK_THROWS_WITH_AS(cpu::transformer_encoder_layer_backward({dx.data(), rows, e}, no_norm, trace,
                                                                 {dx.data(), rows, e}, f.grads()),
                         doctest::Contains("weights have no norm2_weight"), recpipe::error);
    auto sigmoid = f.weights();
    sigmoid.act = cpu::activation::sigmoid;
    CHECK_THROWS_WITH_AS(cpu::transformer_encoder_layer({x.data(), rows, e}, lengths, max_len, sigmoid, true,
                                                        {y.data(), rows, e}, trace),
                         doctest::Contains("relu or gelu"), recpipe::error);
  }
}
