// SPDX-License-Identifier: Apache-2.0
// Shared fixture for the index tests: random item vectors and spaced, non-contiguous ids.
#pragma once

#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace recpipe::testing {

//! rows x cols standard normal values from `seed`.
inline matrix<float> random_matrix(std::size_t rows, std::size_t cols, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  matrix<float> m(rows, cols);
  for (auto& x : m.values()) x = dist(rng);
  return m;
}

//! n ids base, base + step, ...: spaced so that a position mistaken for an id shows up.
inline std::vector<id_type> make_ids(std::size_t n, id_type base = 100, id_type step = 3) {
  std::vector<id_type> ids(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = base + static_cast<id_type>(i) * step;
  return ids;
}

}  // namespace recpipe::testing
