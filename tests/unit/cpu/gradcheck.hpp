// SPDX-License-Identifier: Apache-2.0
// recpipe tests: central finite differences in double precision for the backward-pass tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <span>
#include <vector>

#include <recpipe/core/matrix.hpp>

namespace gradcheck {

//! d loss / d v[i] for every i by central differences, perturbing v in place (restored after).
//! `loss` reads v (captured by reference) and returns a double; h is relative to |v[i]|.
template <class Loss>
std::vector<double> numeric(std::vector<double>& v, Loss&& loss, double h = 1e-6) {
  std::vector<double> g(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const double saved = v[i], step = h * std::max(1.0, std::abs(saved));
    v[i] = saved + step;
    const double plus = loss();
    v[i] = saved - step;
    const double minus = loss();
    v[i] = saved;
    g[i] = (plus - minus) / (2 * step);
  }
  return g;
}

inline std::vector<double> to_double(std::span<const float> v) { return {v.begin(), v.end()}; }
inline std::vector<double> to_double(recpipe::matrix_view<const float> m) {
  std::vector<double> v;
  v.reserve(m.rows() * m.cols());
  for (std::size_t r = 0; r < m.rows(); ++r)
    for (std::size_t c = 0; c < m.cols(); ++c) v.push_back(m(r, c));
  return v;
}
inline std::vector<float> flatten(recpipe::matrix_view<const float> m) {
  std::vector<float> v;
  for (std::size_t r = 0; r < m.rows(); ++r)
    for (std::size_t c = 0; c < m.cols(); ++c) v.push_back(m(r, c));
  return v;
}

//! Per-tensor relative error max|got - want| / max|want| (an element-wise ratio is meaningless
//! where a sum cancels to nearly 0); NaN counts as infinite; sizes must agree.
inline double rel_error(std::span<const double> want, std::span<const float> got) {
  if (want.size() != got.size()) return INFINITY;
  double peak = 0.0, err = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    peak = std::max(peak, std::abs(want[i]));
    const double d = std::abs(want[i] - static_cast<double>(got[i]));
    err = std::isnan(d) ? INFINITY : std::max(err, d);
  }
  return err / std::max(peak, 1e-30);
}
inline double rel_error(std::span<const double> want, recpipe::matrix_view<const float> got) {
  return rel_error(want, flatten(got));
}

inline double act(int kind, double x) {  // 0 none, 1 relu, 2 gelu, 3 gelu_tanh, 4 sigmoid
  switch (kind) {
    case 1: return x < 0 ? 0 : x;
    case 2: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case 3: return 0.5 * x * (1 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case 4: return 1 / (1 + std::exp(-x));
    default: return x;
  }
}

inline std::vector<float> random(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

//! Values drawn as floats and kept in double: the double reference and the float kernels see
//! exactly the same numbers.
inline std::vector<double> random_d(std::size_t n, std::mt19937& rng, float scale) {
  std::vector<double> v(n);
  std::uniform_real_distribution<float> dist(-scale, scale);
  for (double& x : v) x = static_cast<double>(dist(rng));
  return v;
}
inline std::vector<float> to_float(std::span<const double> v) { return {v.begin(), v.end()}; }

//! Finite differences in double carry ~1e-9 error; the fp32 analytic gradients carry a few ulps
//! of accumulated rounding over short sums.
inline constexpr double tolerance = 2e-5;

}  // namespace gradcheck
