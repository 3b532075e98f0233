// SPDX-License-Identifier: Apache-2.0
// Shared fixture: a small catalog of item vectors, user vectors and histories for stage tests.
#pragma once

#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>

#include <cstddef>
#include <random>
#include <vector>

namespace recpipe::testing {

struct small_catalog {
  static constexpr std::size_t dim = 8;
  std::size_t item_count;
  cpu::exact_index index{dim, metric::inner_product};
  feature_store<col::candidates, col::item_embedding> items{dim};
  feature_store<col::user_id, col::user_embedding> users{dim};
  feature_store<col::user_id, col::history> histories;

  explicit small_catalog(std::size_t items_in_catalog = 200, std::size_t user_count = 20, unsigned seed = 7)
      : item_count(items_in_catalog) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    std::vector<float> v(dim);
    for (std::size_t i = 0; i < item_count; ++i) {
      for (auto& x : v) x = normal(rng);
      index.add(static_cast<id_type>(i), v);
      items.insert(static_cast<id_type>(i), v);
    }
    std::uniform_int_distribution<id_type> pick(0, static_cast<id_type>(item_count) - 1);
    for (std::size_t u = 0; u < user_count; ++u) {
      for (auto& x : v) x = normal(rng);
      users.insert(static_cast<id_type>(u), v);
      std::vector<id_type> seen(u % 6);
      for (auto& s : seen) s = pick(rng);
      histories.insert(static_cast<id_type>(u), seen);
    }
  }
};

}  // namespace recpipe::testing
