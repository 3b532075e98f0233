// SPDX-License-Identifier: Apache-2.0
// recpipe io: a reproducible synthetic catalog (items, users, histories) that needs no files.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include <recpipe/core/column.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace io {

//! Shape of a synthetic catalog.
struct synthetic_catalog_config {
  std::size_t items = 100'000;
  std::size_t users = 10'000;
  std::size_t dim = 32;
  std::size_t topics = 64;              //!< items and tastes cluster around topic centres
  double popularity_exponent = 1.0;     //!< Zipf exponent: item of popularity rank r has weight r^-s
  std::size_t mean_history = 20;        //!< items a user has seen, on average
  std::uint64_t seed = 42;
};

//! @brief A synthetic recommendation catalog with realistic structure, generated from a seed:
//! items belong to topics and have power-law (Zipf) popularity; users like one to three topics,
//! their vectors point at those topics, and their histories are popularity-weighted draws from
//! them. Item ids are 0..items-1, user ids 0..users-1. Deterministic for a given config (the
//! generator is std::mt19937_64 with std's distributions, so equal across runs of one build).
//!
//! @code
//! auto catalog = recpipe::io::synthetic_catalog::generate({.items = 10'000, .users = 500});
//! // catalog.item_vectors.rows() == 10'000; catalog.histories.rows() == 500
//! @endcode
struct synthetic_catalog {
  synthetic_catalog_config config;
  matrix<float> item_vectors;              //!< items x dim
  std::vector<std::uint32_t> item_topic;   //!< topic of each item
  std::vector<double> item_popularity;     //!< Zipf weight of each item (not normalised)
  matrix<float> user_vectors;              //!< users x dim
  ragged<id_type> histories;               //!< items each user has seen

  static synthetic_catalog generate(const synthetic_catalog_config& config) {
    if (config.items == 0 || config.dim == 0 || config.topics == 0)
      detail::fail("synthetic_catalog: items, dim and topics must be at least 1");
    synthetic_catalog out;
    out.config = config;
    std::mt19937_64 rng(config.seed);
    std::normal_distribution<float> normal;

    matrix<float> centres(config.topics, config.dim);
    for (std::size_t t = 0; t < config.topics; ++t) {
      for (auto& x : centres.row(t)) x = normal(rng);
      normalise(centres.row(t));
    }

    // Popularity ranks are a random permutation, so popular items are spread over topics.
    std::vector<std::size_t> rank(config.items);
    std::iota(rank.begin(), rank.end(), std::size_t{1});
    std::shuffle(rank.begin(), rank.end(), rng);
    std::uniform_int_distribution<std::size_t> any_topic(0, config.topics - 1);
    out.item_vectors.resize(config.items, config.dim);
    out.item_topic.resize(config.items);
    out.item_popularity.resize(config.items);
    std::vector<std::vector<id_type>> topic_items(config.topics);
    for (std::size_t i = 0; i < config.items; ++i) {
      const std::size_t topic = any_topic(rng);
      out.item_topic[i] = static_cast<std::uint32_t>(topic);
      out.item_popularity[i] = std::pow(static_cast<double>(rank[i]), -config.popularity_exponent);
      topic_items[topic].push_back(static_cast<id_type>(i));
      auto v = out.item_vectors.row(i);
      for (std::size_t d = 0; d < config.dim; ++d) v[d] = centres(topic, d) + 0.6f * normal(rng) / std::sqrt(static_cast<float>(config.dim));
      normalise(v);
      // Popular items get slightly longer vectors: inner-product retrieval then favours them a little.
      const float boost = 1.0f + 0.05f * static_cast<float>(std::log1p(out.item_popularity[i] * static_cast<double>(config.items)));
      for (auto& x : v) x *= boost;
    }
    // Per topic, cumulative popularity for weighted draws.
    std::vector<std::vector<double>> topic_cumulative(config.topics);
    for (std::size_t t = 0; t < config.topics; ++t) {
      double sum = 0;
      for (id_type item : topic_items[t]) topic_cumulative[t].push_back(sum += out.item_popularity[static_cast<std::size_t>(item)]);
    }

    out.user_vectors.resize(config.users, config.dim);
    out.histories.clear();
    std::uniform_int_distribution<int> taste_count(1, 3);
    std::poisson_distribution<std::size_t> history_length(static_cast<double>(config.mean_history));
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    std::vector<std::size_t> tastes;
    for (std::size_t u = 0; u < config.users; ++u) {
      tastes.clear();
      const int count = taste_count(rng);
      for (int i = 0; i < count; ++i) tastes.push_back(any_topic(rng));
      auto v = out.user_vectors.row(u);
      std::fill(v.begin(), v.end(), 0.0f);
      for (std::size_t topic : tastes)
        for (std::size_t d = 0; d < config.dim; ++d) v[d] += centres(topic, d);
      for (auto& x : v) x += 0.3f * normal(rng) / std::sqrt(static_cast<float>(config.dim));
      normalise(v);

      out.histories.begin_row();
      const std::size_t length = history_length(rng);
      for (std::size_t h = 0; h < length; ++h) {
        const std::size_t topic = tastes[static_cast<std::size_t>(unit(rng) * static_cast<double>(tastes.size())) % tastes.size()];
        const auto& cumulative = topic_cumulative[topic];
        if (cumulative.empty()) continue;
        const double target = unit(rng) * cumulative.back();
        const auto at = static_cast<std::size_t>(std::lower_bound(cumulative.begin(), cumulative.end(), target) - cumulative.begin());
        out.histories.push_back(topic_items[topic][std::min(at, cumulative.size() - 1)]);
      }
    }
    return out;
  }

 private:
  static void normalise(std::span<float> v) {
    double norm = 0;
    for (float x : v) norm += double(x) * double(x);
    const float scale = norm > 0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.0f;
    for (auto& x : v) x *= scale;
  }
};

}  // namespace io
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
