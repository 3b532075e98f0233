// SPDX-License-Identifier: Apache-2.0
// recpipe tests: random inputs, naive double-precision references and error metrics for the CPU kernels.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <span>
#include <vector>

#include <recpipe/core/matrix.hpp>

namespace ref {

//! A matrix whose data starts one float past a 64-byte boundary (unaligned on purpose), with
//! `pad` extra columns of stride so strided views are exercised too.
struct buffer {
  std::vector<float> storage;
  std::size_t rows = 0, cols = 0, stride = 0;
  buffer(std::size_t r, std::size_t c, std::size_t pad = 0) : storage(r * (c + pad) + 1, 0.0f), rows(r), cols(c), stride(c + pad) {}
  float* data() { return storage.data() + 1; }
  const float* data() const { return storage.data() + 1; }
  float& operator()(std::size_t r, std::size_t c) { return data()[r * stride + c]; }
  float operator()(std::size_t r, std::size_t c) const { return data()[r * stride + c]; }
  recpipe::matrix_view<float> view() { return {data(), rows, cols, stride}; }
  recpipe::matrix_view<const float> cview() const { return {data(), rows, cols, stride}; }
};

inline void fill(buffer& b, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  for (std::size_t r = 0; r < b.rows; ++r)
    for (std::size_t c = 0; c < b.cols; ++c) b(r, c) = dist(rng);
}
inline std::vector<float> random_vector(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

//! max |got - want| / max(max |want|, 1e-30): the error relative to the tensor's magnitude (an
//! element-wise ratio is meaningless where a long float sum cancels to nearly 0).
inline double max_rel_error(std::span<const double> want, std::span<const float> got) {
  double peak = 0.0, err = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    peak = std::max(peak, std::abs(want[i]));
    err = std::max(err, std::abs(want[i] - static_cast<double>(got[i])));
  }
  return err / std::max(peak, 1e-30);
}
inline std::vector<float> flatten(const buffer& b) {
  std::vector<float> v;
  for (std::size_t r = 0; r < b.rows; ++r)
    for (std::size_t c = 0; c < b.cols; ++c) v.push_back(b(r, c));
  return v;
}
inline double max_rel_error(std::span<const double> want, const buffer& got) {
  const auto flat = flatten(got);
  return max_rel_error(want, flat);
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

//! y = act(x W^T + b), row-major result [rows(x), rows(w)]
inline std::vector<double> linear(const buffer& x, const buffer& w, std::span<const float> bias, int kind = 0) {
  std::vector<double> y(x.rows * w.rows);
  for (std::size_t r = 0; r < x.rows; ++r)
    for (std::size_t o = 0; o < w.rows; ++o) {
      double s = bias.empty() ? 0.0 : bias[o];
      for (std::size_t i = 0; i < x.cols; ++i) s += static_cast<double>(x(r, i)) * w(o, i);
      y[r * w.rows + o] = act(kind, s);
    }
  return y;
}

inline std::vector<double> layer_norm(std::span<const double> x, std::size_t rows, std::size_t cols,
                                      std::span<const float> gamma, std::span<const float> beta, double eps) {
  std::vector<double> y(x.size());
  for (std::size_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (std::size_t c = 0; c < cols; ++c) mean += x[r * cols + c];
    mean /= static_cast<double>(cols);
    for (std::size_t c = 0; c < cols; ++c) var += (x[r * cols + c] - mean) * (x[r * cols + c] - mean);
    var /= static_cast<double>(cols);
    for (std::size_t c = 0; c < cols; ++c)
      y[r * cols + c] = (x[r * cols + c] - mean) / std::sqrt(var + eps) * (gamma.empty() ? 1.0 : gamma[c]) +
                        (beta.empty() ? 0.0 : beta[c]);
  }
  return y;
}

}  // namespace ref
