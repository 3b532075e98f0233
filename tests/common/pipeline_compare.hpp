// SPDX-License-Identifier: Apache-2.0
// Shared by the tests that run one pipeline on two backends (tests/cuda/): the comparison of
// their recommendations, and the request batch they use.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

#include <recpipe/core/batch.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/types.hpp>

namespace recpipe_test {

//! Users 0..n-1 and one unknown user (100000: a zero user vector, every score 0, ties by id).
inline std::vector<recpipe::id_type> users_and_one_unknown(std::size_t n) {
  std::vector<recpipe::id_type> users(n);
  std::iota(users.begin(), users.end(), recpipe::id_type{0});
  users.push_back(100000);
  return users;
}

//! @brief The two runs recommend the same: the same row sizes; `Score` within `relative` * |x| +
//! `absolute` slot by slot (NaN matches NaN); the same ids, except that two candidates of one
//! request whose scores agree within that tolerance may come in either order (`ties_may_swap`:
//! backends that sum in another order, e.g. cuBLAS vs OpenBLAS on random floats). Without it,
//! the ids must be identical (inputs whose sums are exact in float).
template <class Score = recpipe::col::score, class Batch>
void check_same_recommendations(const Batch& expected, const Batch& actual, float relative = 1e-5f,
                                float absolute = 1e-5f, bool ties_may_swap = false) {
  const auto& a = expected.template get<recpipe::col::candidates>();
  const auto& b = actual.template get<recpipe::col::candidates>();
  REQUIRE(a.offsets() == b.offsets());
  if (!ties_may_swap) REQUIRE(a.values() == b.values());
  const auto& sa = expected.template get<Score>();
  const auto& sb = actual.template get<Score>();
  REQUIRE(sa.size() == sb.size());
  const auto close = [&](float x, float y) {
    return (std::isnan(x) && std::isnan(y)) || std::abs(x - y) <= relative * std::abs(x) + absolute;
  };
  for (std::size_t r = 0; r + 1 < a.offsets().size(); ++r)
    for (std::size_t i = a.offsets()[r]; i < a.offsets()[r + 1]; ++i) {
      CAPTURE(r);
      CAPTURE(i);
      CHECK(close(sa[i], sb[i]));
      if (a.values()[i] == b.values()[i]) continue;
      // a swapped near-tie, within the request: the other run's item scores (here) as this one
      const auto first = a.values().begin() + static_cast<std::ptrdiff_t>(a.offsets()[r]);
      const auto last = a.values().begin() + static_cast<std::ptrdiff_t>(a.offsets()[r + 1]);
      const auto j = static_cast<std::size_t>(std::find(first, last, b.values()[i]) - a.values().begin());
      REQUIRE(j < a.offsets()[r + 1]);
      CHECK(close(sa[j], sb[i]));
    }
}

}  // namespace recpipe_test
