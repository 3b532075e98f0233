// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend, HNSW index: maximum inner product search reduced to L2 search (one extra coordinate).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

// Why: an HNSW graph built with the inner product as its "distance" is poor when item norms
// differ (the inner product is not a metric: an item is not its own nearest neighbour, and long
// vectors become hubs), so hnswlib's inner-product graph loses recall (0.72 at k = 500 on the
// quickstart catalog). The standard reduction (Bachrach et al., RecSys 2014) stores each item x
// as x' = [x, sqrt(R^2 - |x|^2)] with R >= every |x|, so that every x' has norm R, and searches
// with q' = [q, 0]:
//     |q' - x'|^2 = |q|^2 + R^2 - 2 q.x,
// a decreasing function of q.x: the L2 order of the augmented vectors is the inner-product order.
// The graph is then built with the L2 distance between augmented items, which is a metric.
//
// The search never needs q' itself: the query's extra coordinate is 0, so the search scores an
// element by -q.x over its first dim values (the same order as the L2 distance above), which is
// also the score it returns.

// R^2 - |x|^2 clamped at 0, as the extra coordinate. Returns false when |x| > R (an "overflow":
// the element is stored with an extra coordinate of 0, so its augmented norm is |x| > R; search
// still scores it by its true inner product, only its links are built from a distorted distance).
inline bool mips_augment(std::span<const float> x, float max_norm, float* out) noexcept {
  double norm_sq = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    out[i] = x[i];
    norm_sq += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  }
  const double r_sq = static_cast<double>(max_norm) * static_cast<double>(max_norm);
  out[x.size()] = static_cast<float>(std::sqrt(std::max(0.0, r_sq - norm_sq)));
  // A relative tolerance of a few float roundings: R computed from this very vector's float norm
  // (headroom 1) must not count it as an overflow.
  return norm_sq <= r_sq * (1 + 1e-6);
}

inline float mips_norm(std::span<const float> x) noexcept {
  double norm_sq = 0;
  for (const float v : x) norm_sq += static_cast<double>(v) * static_cast<double>(v);
  return static_cast<float>(std::sqrt(norm_sq));
}

// The R of a stored graph, recovered from its augmented vectors (the file format does not store
// it): every element within R has augmented norm R exactly (up to rounding) and an overflowed one
// has a larger norm, so R is the smallest augmented norm. 0 for an empty graph.
// `element(i)` gives the stored_dim augmented values of element i.
template <class Element>
float mips_recover_max_norm(Element&& element, std::size_t stored_dim, std::size_t count) {
  float r = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const float n = mips_norm(std::span<const float>(element(i), stored_dim));
    r = i == 0 ? n : std::min(r, n);
  }
  return r;
}

}  // namespace detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
