// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu/attention.hpp (multi-head self-attention, transformer encoder layer) against double references.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include <recpipe/cpu/attention.hpp>
#include <recpipe/cpu/isa.hpp>

#include "common/isa.hpp"
#include "unit/cpu/reference.hpp"

namespace cpu = recpipe::cpu;

namespace {
using dvec = std::vector<double>;

// Naive MHA in double on padded sessions; padded output rows are 0.
dvec mha_reference(const dvec& x, std::size_t e, const std::vector<std::size_t>& lengths, std::size_t max_len,
                   const ref::buffer& in_w, std::span<const float> in_b, const ref::buffer& out_w,
                   std::span<const float> out_b, std::size_t heads, bool causal, const dvec* query_x = nullptr) {
  const std::size_t rows = lengths.size() * max_len, hd = e / heads;
  dvec qkv(rows * 3 * e), ctx(rows * e, 0.0), out(rows * e, 0.0);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t o = 0; o < 3 * e; ++o) {
      double s = in_b.empty() ? 0 : in_b[o];
      const dvec& input = query_x != nullptr && o < e ? *query_x : x;  // q from query_x when given
      for (std::size_t i = 0; i < e; ++i) s += input[r * e + i] * in_w(o, i);
      qkv[r * 3 * e + o] = s;
    }
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t h = 0; h < heads; ++h)
      for (std::size_t t = 0; t < lengths[b]; ++t) {
        const std::size_t visible = causal ? t + 1 : lengths[b];
        dvec p(visible);
        double peak = -1e300;
        for (std::size_t s = 0; s < visible; ++s) {
          double dot = 0;
          for (std::size_t c = 0; c < hd; ++c)
            dot += qkv[(b * max_len + t) * 3 * e + h * hd + c] * qkv[(b * max_len + s) * 3 * e + e + h * hd + c];
          p[s] = dot / std::sqrt(static_cast<double>(hd));
          peak = std::max(peak, p[s]);
        }
        double total = 0;
        for (auto& v : p) total += (v = std::exp(v - peak));
        for (std::size_t s = 0; s < visible; ++s)
          for (std::size_t c = 0; c < hd; ++c)
            ctx[(b * max_len + t) * e + h * hd + c] += p[s] / total * qkv[(b * max_len + s) * 3 * e + 2 * e + h * hd + c];
      }
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t t = 0; t < lengths[b]; ++t)
      for (std::size_t o = 0; o < e; ++o) {
        double s = out_b.empty() ? 0 : out_b[o];
        for (std::size_t i = 0; i < e; ++i) s += ctx[(b * max_len + t) * e + i] * out_w(o, i);
        out[(b * max_len + t) * e + o] = s;
      }
  return out;
}

dvec linear_d(const dvec& x, std::size_t rows, const ref::buffer& w, std::span<const float> b, int act) {
  dvec y(rows * w.rows);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t o = 0; o < w.rows; ++o) {
      double s = b.empty() ? 0 : b[o];
      for (std::size_t i = 0; i < w.cols; ++i) s += x[r * w.cols + i] * w(o, i);
      y[r * w.rows + o] = ref::act(act, s);
    }
  return y;
}

struct model {
  std::size_t e, heads, ff;
  ref::buffer in_w, out_w, w1, w2;
  std::vector<float> in_b, out_b, b1, b2, g1, be1, g2, be2;
  model(std::size_t e_, std::size_t heads_, std::size_t ff_, std::mt19937& rng)
      : e(e_), heads(heads_), ff(ff_), in_w(3 * e_, e_, 1), out_w(e_, e_), w1(ff_, e_), w2(e_, ff_, 2) {
    ref::fill(in_w, rng, 0.4f);
    ref::fill(out_w, rng, 0.4f);
    ref::fill(w1, rng, 0.4f);
    ref::fill(w2, rng, 0.4f);
    in_b = ref::random_vector(3 * e, rng);
    out_b = ref::random_vector(e, rng);
    b1 = ref::random_vector(ff, rng);
    b2 = ref::random_vector(e, rng);
    g1 = ref::random_vector(e, rng);
    be1 = ref::random_vector(e, rng);
    g2 = ref::random_vector(e, rng);
    be2 = ref::random_vector(e, rng);
  }
  cpu::mha_weights mha() const { return {in_w.cview(), in_b, out_w.cview(), out_b, heads}; }
};

dvec valid_rows(const dvec& v, std::size_t e, const std::vector<std::size_t>& lengths, std::size_t max_len) {
  dvec out;
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t t = 0; t < lengths[b]; ++t)
      for (std::size_t c = 0; c < e; ++c) out.push_back(v[(b * max_len + t) * e + c]);
  return out;
}
std::vector<float> valid_rows(const ref::buffer& v, const std::vector<std::size_t>& lengths, std::size_t max_len) {
  std::vector<float> out;
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::size_t t = 0; t < lengths[b]; ++t)
      for (std::size_t c = 0; c < v.cols; ++c) out.push_back(v(b * max_len + t, c));
  return out;
}

using recpipe::testing::available_isas;
using recpipe::testing::isa_guard;
}  // namespace

TEST_CASE("multi_head_attention matches a double reference with causal and key-padding masks, on every isa") {
  isa_guard guard;
  std::mt19937 rng(20);
  // Head widths 8, 4, 32, 2, 16 and 48 (the AVX-512 body takes multiples of 16, the others
  // stay portable); sessions of 0 to 37 items cross the 4-query blocks and 16-key registers.
  const std::vector<std::size_t> short_lengths = {1, 7, 0, 9, 4}, long_lengths = {37, 16, 17, 3, 33};
  for (cpu::isa choice : available_isas())
  for (const auto& shape : {std::pair<std::size_t, std::size_t>{8, 1}, {12, 3}, {64, 2}, {10, 5}, {32, 2}, {96, 2}})
    for (bool causal : {false, true})
    for (bool long_sessions : {false, true}) {
      const std::size_t e = shape.first, heads = shape.second;  // not a structured binding: clang 14 cannot capture those
      const auto& lengths = long_sessions ? long_lengths : short_lengths;
      const std::size_t max_len = long_sessions ? 37 : 9;
      cpu::set_isa(choice);
      CAPTURE(cpu::to_string(choice)); CAPTURE(e); CAPTURE(heads); CAPTURE(causal); CAPTURE(max_len);
      model m(e, heads, 16, rng);
      ref::buffer x(lengths.size() * max_len, e, 1), y(lengths.size() * max_len, e, 2);
      ref::fill(x, rng, 2.0f);
      x(2 * max_len + 1, 0) = std::nanf("");  // NaN inside padding never leaks into valid rows
      ref::fill(y, rng);
      cpu::multi_head_attention(x.cview(), lengths, max_len, m.mha(), causal, y.view());
      dvec xd;
      for (float v : ref::flatten(x)) xd.push_back(v);
      const auto want = mha_reference(xd, e, lengths, max_len, m.in_w, m.in_b, m.out_w, m.out_b, heads, causal);
      CHECK(ref::max_rel_error(valid_rows(want, e, lengths, max_len), valid_rows(y, lengths, max_len)) < 1e-5);
      for (std::size_t b = 0; b < lengths.size(); ++b)
        for (std::size_t t = lengths[b]; t < max_len; ++t)
          for (std::size_t c = 0; c < e; ++c) CHECK(y(b * max_len + t, c) == 0.0f);
    }
}

TEST_CASE("softmax stays finite for huge scores, on every isa") {
  isa_guard guard;
  std::mt19937 rng(21);
  for (cpu::isa choice : available_isas())
    for (std::size_t e : {4u, 16u}) {  // one head of 4 (portable) or of 16 (the AVX-512 body)
      cpu::set_isa(choice);
      CAPTURE(cpu::to_string(choice)); CAPTURE(e);
      model m(e, 1, 4, rng);
      ref::buffer x(3, e), y(3, e);
      for (std::size_t r = 0; r < 3; ++r)
        for (std::size_t c = 0; c < e; ++c) x(r, c) = 1e3f * static_cast<float>(r + 1);
      cpu::multi_head_attention(x.cview(), std::vector<std::size_t>{3}, 3, m.mha(), false, y.view());
      for (float v : ref::flatten(y)) CHECK(std::isfinite(v));
    }
}

TEST_CASE("transformer_encoder_layer matches post-norm and pre-norm references with relu and gelu") {
  std::mt19937 rng(22);
  const std::vector<std::size_t> lengths = {5, 1, 3};
  const std::size_t max_len = 5, e = 12, rows = lengths.size() * max_len;
  for (bool norm_first : {false, true})
    for (int act : {1, 2})
      for (bool causal : {false, true}) {
        CAPTURE(norm_first); CAPTURE(act); CAPTURE(causal);
        model m(e, 3, 20, rng);
        ref::buffer x(rows, e), y(rows, e);
        ref::fill(x, rng);
        cpu::transformer_layer_weights w{m.mha(), m.w1.cview(), m.b1, m.w2.cview(), m.b2, m.g1, m.be1, m.g2, m.be2,
                                         1e-5f, static_cast<cpu::activation>(act), norm_first};
        cpu::transformer_encoder_layer(x.cview(), lengths, max_len, w, causal, y.view());
        dvec xd;
        for (float v : ref::flatten(x)) xd.push_back(v);
        const auto attend = [&](const dvec& in) {
          return mha_reference(in, e, lengths, max_len, m.in_w, m.in_b, m.out_w, m.out_b, 3, causal);
        };
        const auto ffn = [&](const dvec& in) { return linear_d(linear_d(in, rows, m.w1, m.b1, act), rows, m.w2, m.b2, 0); };
        const auto plus = [](dvec a, const dvec& b) {
          for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
          return a;
        };
        dvec want;
        if (!norm_first) {
          const auto h = ref::layer_norm(plus(xd, attend(xd)), rows, e, m.g1, m.be1, 1e-5);
          want = ref::layer_norm(plus(h, ffn(h)), rows, e, m.g2, m.be2, 1e-5);
        } else {
          const auto h = plus(xd, attend(ref::layer_norm(xd, rows, e, m.g1, m.be1, 1e-5)));
          want = plus(h, ffn(ref::layer_norm(h, rows, e, m.g2, m.be2, 1e-5)));
        }
        CHECK(ref::max_rel_error(valid_rows(want, e, lengths, max_len), valid_rows(y, lengths, max_len)) < 1e-5);
      }
}

TEST_CASE("attention rejects bad shapes, heads and lengths") {
  std::mt19937 rng(23);
  model m(8, 2, 16, rng);
  ref::buffer x(6, 8), y(6, 8);
  CHECK_THROWS_WITH_AS(cpu::multi_head_attention(x.cview(), std::vector<std::size_t>{3, 4}, 3, m.mha(), true, y.view()),
                       doctest::Contains("lengths[1] = 4 exceeds max_len = 3"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::multi_head_attention(x.cview(), std::vector<std::size_t>{3}, 3, m.mha(), true, y.view()),
                       doctest::Contains("x has 6 rows but lengths.size() * max_len = 1 * 3"), recpipe::error);
  auto w = m.mha();
  w.num_heads = 3;
  CHECK_THROWS_WITH_AS(cpu::multi_head_attention(x.cview(), std::vector<std::size_t>{3, 3}, 3, w, true, y.view()),
                       doctest::Contains("num_heads = 3"), recpipe::error);
  w = m.mha();
  w.in_proj_weight = m.out_w.cview();
  CHECK_THROWS_WITH_AS(cpu::multi_head_attention(x.cview(), std::vector<std::size_t>{3, 3}, 3, w, true, y.view()),
                       doctest::Contains("in_proj_weight must be 24 x 8"), recpipe::error);
  cpu::transformer_layer_weights t{m.mha(), m.w1.cview(), m.b1, m.w1.cview(), m.b2, m.g1, m.be1, m.g2, m.be2};
  CHECK_THROWS_WITH_AS(cpu::transformer_encoder_layer(x.cview(), std::vector<std::size_t>{3, 3}, 3, t, true, y.view()),
                       doctest::Contains("linear2_weight must be 8 x 16"), recpipe::error);
}

TEST_CASE("multi_head_attention with a separate query input matches a double reference, on every isa") {
  isa_guard guard;
  std::mt19937 rng(24);
  const std::vector<std::size_t> lengths = {1, 7, 0, 9, 4};
  const std::size_t max_len = 9;
  for (cpu::isa choice : available_isas())
    for (const auto& shape : {std::pair<std::size_t, std::size_t>{8, 1}, {12, 3}, {32, 2}})
      for (bool causal : {false, true})
        for (bool padded : {false, true}) {  // all rows valid (SASRec.pytorch's full window) or ragged
          const std::size_t e = shape.first, heads = shape.second;
          const std::vector<std::size_t> used = padded ? lengths : std::vector<std::size_t>(lengths.size(), max_len);
          cpu::set_isa(choice);
          CAPTURE(cpu::to_string(choice)); CAPTURE(e); CAPTURE(causal); CAPTURE(padded);
          model m(e, heads, 16, rng);
          const std::size_t rows = lengths.size() * max_len;
          ref::buffer q(rows, e, 1), x(rows, e, 3), y(rows, e, 2), self(rows, e), cross_self(rows, e);
          ref::fill(q, rng, 2.0f);
          ref::fill(x, rng, 2.0f);
          cpu::multi_head_attention(q.cview(), x.cview(), used, max_len, m.mha(), causal, y.view());
          dvec qd, xd;
          for (float v : ref::flatten(q)) qd.push_back(v);
          for (float v : ref::flatten(x)) xd.push_back(v);
          const auto want = mha_reference(xd, e, used, max_len, m.in_w, m.in_b, m.out_w, m.out_b, heads, causal, &qd);
          CHECK(ref::max_rel_error(valid_rows(want, e, used, max_len), valid_rows(y, used, max_len)) < 1e-5);
          // query_x == x is self-attention
          cpu::multi_head_attention(x.cview(), used, max_len, m.mha(), causal, self.view());
          cpu::multi_head_attention(x.cview(), x.cview(), used, max_len, m.mha(), causal, cross_self.view());
          CHECK(ref::flatten(self) == ref::flatten(cross_self));
        }
}

TEST_CASE("query_norm_encoder_layer matches the SASRec.pytorch block in double") {
  std::mt19937 rng(25);
  const std::vector<std::size_t> lengths = {5, 1, 3};
  const std::size_t max_len = 5, e = 12, rows = lengths.size() * max_len;
  for (int act : {1, 2})
    for (bool causal : {false, true}) {
      CAPTURE(act); CAPTURE(causal);
      model m(e, 3, 20, rng);
      ref::buffer x(rows, e), y(rows, e);
      ref::fill(x, rng);
      cpu::transformer_layer_weights w{m.mha(), m.w1.cview(), m.b1, m.w2.cview(), m.b2, m.g1, m.be1, m.g2, m.be2,
                                       1e-8f, static_cast<cpu::activation>(act), true};
      cpu::query_norm_encoder_layer(x.cview(), lengths, max_len, w, causal, y.view());
      dvec xd;
      for (float v : ref::flatten(x)) xd.push_back(v);
      const auto plus = [](dvec a, const dvec& b) {
        for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
        return a;
      };
      const dvec q = ref::layer_norm(xd, rows, e, m.g1, m.be1, 1e-8);
      const dvec h = plus(q, mha_reference(xd, e, lengths, max_len, m.in_w, m.in_b, m.out_w, m.out_b, 3, causal, &q));
      const dvec z = ref::layer_norm(h, rows, e, m.g2, m.be2, 1e-8);
      const dvec want = plus(z, linear_d(linear_d(z, rows, m.w1, m.b1, act), rows, m.w2, m.b2, 0));
      CHECK(ref::max_rel_error(valid_rows(want, e, lengths, max_len), valid_rows(y, lengths, max_len)) < 1e-5);
      for (std::size_t b = 0; b < lengths.size(); ++b)
        for (std::size_t t = lengths[b]; t < max_len; ++t)
          for (std::size_t c = 0; c < e; ++c) CHECK(y(b * max_len + t, c) == 0.0f);
    }
}

TEST_CASE("separate-query attention and query_norm_encoder_layer reject bad shapes") {
  std::mt19937 rng(26);
  model m(8, 2, 16, rng);
  ref::buffer x(6, 8), q(5, 8), y(6, 8);
  CHECK_THROWS_WITH_AS(cpu::multi_head_attention(q.cview(), x.cview(), std::vector<std::size_t>{3, 3}, 3, m.mha(), true,
                                                 y.view()),
                       doctest::Contains("query_x"), recpipe::error);
  cpu::transformer_layer_weights w{m.mha(), m.w1.cview(), m.b1, m.w2.cview(), m.b2, m.g1, m.be1, m.g2, m.be2};
  w.linear2_bias = std::span<const float>(m.b2.data(), 7);
  CHECK_THROWS_WITH_AS(cpu::query_norm_encoder_layer(x.cview(), std::vector<std::size_t>{3, 3}, 3, w, true, y.view()),
                       doctest::Contains("linear2_bias"), recpipe::error);
}
