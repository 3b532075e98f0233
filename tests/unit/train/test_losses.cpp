// SPDX-License-Identifier: Apache-2.0
// recpipe tests: train/losses.hpp against double-precision references and central finite differences.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include <recpipe/train/losses.hpp>

namespace train = recpipe::train;
using recpipe::id_type;
using recpipe::matrix;
using recpipe::matrix_view;

namespace {

using dvec = std::vector<double>;

std::vector<float> random_floats(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Central differences of f at x (double), step h.
dvec finite_differences(const std::function<double(const dvec&)>& f, dvec x, double h = 1e-5) {
  dvec g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = f(x);
    x[i] = keep - h;
    const double down = f(x);
    x[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

dvec to_double(std::span<const float> v) { return dvec(v.begin(), v.end()); }

// max |a - b| / max(1, max |b|)
double relative_error(std::span<const float> got, const dvec& want) {
  REQUIRE(got.size() == want.size());
  double worst = 0.0, magnitude = 1e-30;
  for (std::size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]));
    magnitude = std::max(magnitude, std::fabs(want[i]));
  }
  return worst / magnitude;
}

// ---- double references (written from the formulas, independently of the header) -------------

double bce_reference(const dvec& x, std::span<const float> y, std::span<const float> w) {
  double total = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double p = 1.0 / (1.0 + std::exp(-x[i]));
    const double l = -(y[i] * std::log(p) + (1.0 - y[i]) * std::log(1.0 - p));
    total += (w.empty() ? 1.0 : w[i]) * l;
  }
  return total / static_cast<double>(x.size());
}

double softmax_ce_reference(const dvec& x, std::size_t classes, std::span<const id_type> t, id_type ignore = -1000) {
  double total = 0.0;
  std::size_t counted = 0;
  for (std::size_t r = 0; r < t.size(); ++r) {
    if (t[r] == ignore) continue;
    double z = 0.0;
    for (std::size_t c = 0; c < classes; ++c) z += std::exp(x[r * classes + c]);
    total += std::log(z) - x[r * classes + static_cast<std::size_t>(t[r])];
    ++counted;
  }
  return total / static_cast<double>(counted);
}

// q [B, d], p [B + N, d] (in-batch then extra), ids [B + N], log_q [B + N]
double sampled_reference(const dvec& q, const dvec& p, std::size_t batch, std::size_t dim, std::span<const id_type> ids,
                         const dvec& log_q, double temperature) {
  const std::size_t width = ids.size();
  double total = 0.0;
  for (std::size_t b = 0; b < batch; ++b) {
    double z = 0.0, positive = 0.0;
    for (std::size_t j = 0; j < width; ++j) {
      if (j != b && ids[j] == ids[b]) continue;
      double dot = 0.0;
      for (std::size_t c = 0; c < dim; ++c) dot += q[b * dim + c] * p[j * dim + c];
      const double s = dot / temperature - log_q[j];
      z += std::exp(s);
      if (j == b) positive = s;
    }
    total += std::log(z) - positive;
  }
  return total / static_cast<double>(batch);
}

}  // namespace

TEST_CASE("bce_with_logits: loss and gradient against a double reference and finite differences") {
  std::mt19937 rng(7);
  for (bool weighted : {false, true}) {
    const std::size_t n = 33;
    std::vector<float> x = random_floats(n, rng, 3.0f), y(n), w, dx(n);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (std::size_t i = 0; i < n; ++i) y[i] = i % 3 == 0 ? u(rng) : static_cast<float>(i % 2);  // hard and soft labels
    if (weighted) w = random_floats(n, rng), w[0] = 0.0f;
    const float loss = train::bce_with_logits(x, y, dx, w);
    const auto f = [&](const dvec& xs) { return bce_reference(xs, y, w); };
    CHECK(loss == doctest::Approx(f(to_double(x))).epsilon(1e-6));
    CHECK(relative_error(dx, finite_differences(f, to_double(x))) < 1e-6);
    // loss only
    CHECK(train::bce_with_logits(x, y, {}, w) == loss);
  }
}

TEST_CASE("bce_with_logits: stable at extreme logits") {
  std::vector<float> x{100.0f, -100.0f, 100.0f, -100.0f, 0.0f}, y{1, 0, 0, 1, 1}, dx(5);
  const float loss = train::bce_with_logits(x, y, dx);
  CHECK(std::isfinite(loss));
  CHECK(loss == doctest::Approx((0 + 0 + 100 + 100 + std::log(2.0)) / 5).epsilon(1e-6));
  CHECK(dx[0] == doctest::Approx(0.0));
  CHECK(dx[2] == doctest::Approx(0.2));
  CHECK(dx[3] == doctest::Approx(-0.2));
  CHECK(dx[4] == doctest::Approx(-0.1));
}

TEST_CASE("bce_with_logits: bad labels, shapes and empty batches") {
  std::vector<float> x{0.1f, 0.2f, 0.3f}, dx(3, 42.0f);
  std::vector<float> nan_label{0, std::numeric_limits<float>::quiet_NaN(), 1};
  CHECK_THROWS_WITH_AS(train::bce_with_logits(x, nan_label, dx), doctest::Contains("label 1 is nan"), recpipe::error);
  CHECK(dx[0] == 42.0f);  // nothing written before the check
  std::vector<float> big{0, 1, 2};
  CHECK_THROWS_WITH_AS(train::bce_with_logits(x, big, dx), doctest::Contains("label 2 is 2"), recpipe::error);
  std::vector<float> neg{-0.5f, 1, 0};
  CHECK_THROWS_WITH_AS(train::bce_with_logits(x, neg, dx), doctest::Contains("label 0"), recpipe::error);
  std::vector<float> two{0, 1};
  CHECK_THROWS_AS(train::bce_with_logits(x, two, dx), recpipe::error);
  std::vector<float> y{0, 1, 1}, short_dx(2);
  CHECK_THROWS_AS(train::bce_with_logits(x, y, short_dx), recpipe::error);
  std::vector<float> bad_w{1, std::numeric_limits<float>::infinity(), 1};
  CHECK_THROWS_WITH_AS(train::bce_with_logits(x, y, dx, bad_w), doctest::Contains("sample weight 1"), recpipe::error);
  CHECK(train::bce_with_logits({}, {}, {}) == 0.0f);
  // a NaN logit gives a NaN loss (the trainer's finiteness check catches it), never a throw
  std::vector<float> nan_x{0.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f};
  CHECK(std::isnan(train::bce_with_logits(nan_x, y, dx)));
}

TEST_CASE("softmax_cross_entropy: loss and gradient against finite differences, with and without ignore_index") {
  std::mt19937 rng(11);
  const std::size_t rows = 6, classes = 9;
  matrix<float> x(rows, classes), dx(rows, classes, 7.0f);
  const auto values = random_floats(rows * classes, rng, 2.0f);
  std::copy(values.begin(), values.end(), x.values().begin());
  std::vector<id_type> t{0, 8, 3, 3, 5, 1};
  const float loss = train::softmax_cross_entropy(x.view(), t, dx.view());
  const auto f = [&](const dvec& xs) { return softmax_ce_reference(xs, classes, t); };
  CHECK(loss == doctest::Approx(f(to_double(x.values()))).epsilon(1e-6));
  CHECK(relative_error(dx.values(), finite_differences(f, to_double(x.values()))) < 1e-6);

  std::vector<id_type> padded{0, -1, 3, -1, 5, 1};
  const float masked = train::softmax_cross_entropy(x.view(), padded, dx.view(), -1);
  const auto g = [&](const dvec& xs) { return softmax_ce_reference(xs, classes, padded, -1); };
  CHECK(masked == doctest::Approx(g(to_double(x.values()))).epsilon(1e-6));
  CHECK(relative_error(dx.values(), finite_differences(g, to_double(x.values()))) < 1e-6);
  for (std::size_t c = 0; c < classes; ++c) CHECK(dx(1, c) == 0.0f);

  // loss only
  CHECK(train::softmax_cross_entropy(x.view(), t, {}) == loss);
  // every row ignored: 0 loss, zero gradient
  std::vector<id_type> none(rows, -1);
  CHECK(train::softmax_cross_entropy(x.view(), none, dx.view(), -1) == 0.0f);
  for (float v : dx.values()) CHECK(v == 0.0f);
}

TEST_CASE("softmax_cross_entropy: extreme logits stay finite") {
  matrix<float> x(2, 3), dx(2, 3);
  x(0, 0) = 1000.0f, x(0, 1) = -1000.0f, x(0, 2) = 0.0f;
  x(1, 0) = -80.0f, x(1, 1) = 80.0f, x(1, 2) = 80.0f;
  std::vector<id_type> t{0, 2};
  const float loss = train::softmax_cross_entropy(x.view(), t, dx.view());
  CHECK(loss == doctest::Approx(std::log(2.0) / 2).epsilon(1e-6));
  for (float v : dx.values()) CHECK(std::isfinite(v));
}

TEST_CASE("softmax_cross_entropy: bad targets and shapes") {
  matrix<float> x(3, 4), dx(3, 4);
  std::vector<id_type> out_of_range{0, 4, 1}, negative{0, 1, -1}, short_t{0, 1};
  CHECK_THROWS_WITH_AS(train::softmax_cross_entropy(x.view(), out_of_range, dx.view()),
                       doctest::Contains("target of row 1 is 4"), recpipe::error);
  CHECK_THROWS_WITH_AS(train::softmax_cross_entropy(x.view(), negative, dx.view()),
                       doctest::Contains("target of row 2 is -1"), recpipe::error);
  CHECK_THROWS_WITH_AS(train::softmax_cross_entropy(x.view(), negative, dx.view(), -7),
                       doctest::Contains("target of row 2 is -1"), recpipe::error);
  CHECK_THROWS_AS(train::softmax_cross_entropy(x.view(), short_t, dx.view()), recpipe::error);
  matrix<float> wrong(3, 5);
  std::vector<id_type> t{0, 1, 2};
  CHECK_THROWS_WITH_AS(train::softmax_cross_entropy(x.view(), t, wrong.view()), doctest::Contains("dlogits is 3 x 5"),
                       recpipe::error);
  matrix<float> empty(0, 4);
  CHECK(train::softmax_cross_entropy(empty.view(), {}, empty.view()) == 0.0f);
}

TEST_CASE("sampled_softmax: loss and gradients against finite differences (log-Q, temperature, accidental hits, extra negatives)") {
  std::mt19937 rng(3);
  const std::size_t batch = 5, dim = 4, extra_n = 3;
  for (bool with_extra : {false, true}) {
    matrix<float> q(batch, dim), p(batch, dim), n(extra_n, dim), dq(batch, dim), dp(batch, dim), dn(extra_n, dim);
    for (auto* m : {&q, &p, &n}) {
      const auto v = random_floats(m->size(), rng);
      std::copy(v.begin(), v.end(), m->values().begin());
    }
    // item 2 and item 4 are the same item (an accidental hit both ways); extra negative 1 is item 0
    std::vector<id_type> ids{10, 11, 12, 13, 12}, neg_ids{20, 10, 21};
    std::vector<float> log_q = random_floats(batch, rng, 0.5f), neg_log_q = random_floats(extra_n, rng, 0.5f);
    const float temperature = 0.7f;
    std::vector<id_type> all_ids(ids);
    dvec all_log_q = to_double(log_q);
    if (with_extra) {
      all_ids.insert(all_ids.end(), neg_ids.begin(), neg_ids.end());
      all_log_q.insert(all_log_q.end(), neg_log_q.begin(), neg_log_q.end());
    }
    float loss = 0.0f;
    if (with_extra) {
      train::sampled_negatives extra{n.view(), neg_ids, neg_log_q, dn.view()};
      loss = train::sampled_softmax(q.view(), p.view(), ids, log_q, dq.view(), dp.view(), extra, temperature);
    } else {
      loss = train::sampled_softmax(q.view(), p.view(), ids, log_q, dq.view(), dp.view(), temperature);
    }
    dvec pd = to_double(p.values());
    if (with_extra) pd.insert(pd.end(), n.values().begin(), n.values().end());
    const dvec qd = to_double(q.values());
    const auto by_q = [&](const dvec& x) { return sampled_reference(x, pd, batch, dim, all_ids, all_log_q, temperature); };
    const auto by_p = [&](const dvec& x) { return sampled_reference(qd, x, batch, dim, all_ids, all_log_q, temperature); };
    CHECK(loss == doctest::Approx(by_q(qd)).epsilon(1e-6));
    CHECK(relative_error(dq.values(), finite_differences(by_q, qd)) < 1e-6);
    const dvec dp_fd = finite_differences(by_p, pd);
    CHECK(relative_error(dp.values(), dvec(dp_fd.begin(), dp_fd.begin() + batch * dim)) < 1e-6);
    if (with_extra) CHECK(relative_error(dn.values(), dvec(dp_fd.begin() + batch * dim, dp_fd.end())) < 1e-6);
  }
}

TEST_CASE("sampled_softmax: empty log_q means no correction, and bad arguments") {
  std::mt19937 rng(5);
  matrix<float> q(3, 2), p(3, 2), dq(3, 2), dp(3, 2);
  for (auto* m : {&q, &p}) {
    const auto v = random_floats(m->size(), rng);
    std::copy(v.begin(), v.end(), m->values().begin());
  }
  std::vector<id_type> ids{1, 2, 3};
  std::vector<float> zeros(3, 0.0f);
  const float a = train::sampled_softmax(q.view(), p.view(), ids, zeros, dq.view(), dp.view());
  const float b = train::sampled_softmax(q.view(), p.view(), ids, {}, dq.view(), dp.view());
  CHECK(a == b);
  CHECK_THROWS_WITH_AS(train::sampled_softmax(q.view(), p.view(), ids, {}, dq.view(), dp.view(), 0.0f),
                       doctest::Contains("temperature"), recpipe::error);
  CHECK_THROWS_AS(train::sampled_softmax(q.view(), p.view(), ids, {}, dq.view(), dp.view(), NAN), recpipe::error);
  std::vector<id_type> short_ids{1, 2};
  CHECK_THROWS_AS(train::sampled_softmax(q.view(), p.view(), short_ids, {}, dq.view(), dp.view()), recpipe::error);
  matrix<float> p3(3, 3);
  CHECK_THROWS_WITH_AS(train::sampled_softmax(q.view(), p3.view(), ids, {}, dq.view(), dp.view()),
                       doctest::Contains("items is 3 x 3"), recpipe::error);
  // every candidate is the same item: only the positive is left, loss 0, gradients 0
  std::vector<id_type> same{4, 4, 4};
  CHECK(train::sampled_softmax(q.view(), p.view(), same, {}, dq.view(), dp.view()) == doctest::Approx(0.0));
  for (float v : dq.values()) CHECK(v == doctest::Approx(0.0));
  matrix<float> none(0, 2);
  CHECK(train::sampled_softmax(none.view(), none.view(), {}, {}, none.view(), none.view()) == 0.0f);
}
