// SPDX-License-Identifier: Apache-2.0
// incremental_training: the event stream (MovieLens or synthetic), with the features each event
// was served with logged beside it.
#pragma once

#include <recpipe/io/movielens.hpp>
#include <recpipe/train/online_features.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

namespace experiment {

using recpipe::id_type;
constexpr std::size_t dense_dim = recpipe::train::online_features::dense_dim;
constexpr std::int64_t fresh_window = 7 * 86'400;  // an item first seen within 7 days is "fresh"

//! One event in time order. user/item are dense indices (0..users-1, 0..items-1) of the raw ids
//! in order of first appearance: a row of an embedding table, created when the id first shows up.
struct event {
  std::uint32_t user = 0, item = 0;
  std::int64_t t = 0;
  float label = 0.0f;
};

//! The stream and, for every event, what was known when it had to be predicted: the dense online
//! features, the item's genre bag, whether the item was fresh and how many events the user had.
struct stream {
  std::string name;
  std::vector<event> events;
  std::size_t users = 0, items = 0;
  std::vector<std::array<float, dense_dim>> dense;
  recpipe::train::category_bags genres;
  std::vector<std::uint8_t> fresh_item;
  std::vector<std::uint32_t> user_seen;  // events of the user before this one
  std::size_t warm_end = 0;              // events [0, warm_end) are the warm-up part

  std::span<const id_type> bag(std::size_t e) const { return genres.bag(static_cast<id_type>(events[e].item)); }
};

// Replays the stream once through online_features: predict (log the features), then observe.
inline void log_features(stream& s) {
  recpipe::train::online_features f;
  const std::size_t n = s.events.size();
  s.dense.assign(n, {});
  s.fresh_item.assign(n, 0);
  s.user_seen.assign(n, 0);
  for (std::size_t e = 0; e < n; ++e) {
    const event& ev = s.events[e];
    f.dense(ev.user, ev.item, ev.t, s.dense[e]);
    s.fresh_item[e] = f.item_is_fresh(ev.item, ev.t, fresh_window) ? 1 : 0;
    s.user_seen[e] = static_cast<std::uint32_t>(f.user_events(ev.user));
    f.observe(ev.user, ev.item, ev.label, ev.t);
  }
}

//! MovieLens ratings in timestamp order (ties keep file order), like = rating >= 4; genres from
//! movies.csv beside the ratings file when it is there.
inline stream load_movielens(const std::filesystem::path& path, double warm_fraction) {
  auto ratings = recpipe::io::read_movielens_ratings(path);
  if (ratings.malformed.count)
    std::fprintf(stderr, "%s: skipped %zu malformed lines (first: %s)\n", path.string().c_str(),
                 ratings.malformed.count, ratings.malformed.messages.front().c_str());
  std::stable_sort(ratings.events.begin(), ratings.events.end(),
                   [](const auto& a, const auto& b) { return a.timestamp < b.timestamp; });
  stream s;
  s.name = path.string();
  std::unordered_map<id_type, std::uint32_t> users, items;
  std::vector<id_type> item_ids;
  for (const auto& r : ratings.events) {
    auto [u, new_user] = users.try_emplace(r.user, static_cast<std::uint32_t>(users.size()));
    auto [i, new_item] = items.try_emplace(r.item, static_cast<std::uint32_t>(items.size()));
    if (new_item) item_ids.push_back(r.item);
    s.events.push_back({u->second, i->second, r.timestamp, r.rating >= 4.0f ? 1.0f : 0.0f});
  }
  s.users = users.size();
  s.items = items.size();
  const auto movies_path = path.parent_path() / "movies.csv";
  if (std::filesystem::exists(movies_path)) {
    const auto movies = recpipe::io::read_movielens_movies(movies_path);
    s.genres = recpipe::train::category_bags(movies.genre_names.size());
    for (std::size_t i = 0; i < item_ids.size(); ++i)
      s.genres.set(static_cast<id_type>(i), movies.genres_of(item_ids[i]));
    std::printf("genres: %zu from %s\n", movies.genre_names.size(), movies_path.string().c_str());
  } else {
    std::printf("genres: none (%s is absent; every item gets the unknown bag)\n", movies_path.string().c_str());
  }
  s.warm_end = static_cast<std::size_t>(static_cast<double>(s.events.size()) * warm_fraction);
  log_features(s);
  return s;
}

//! Settings of the synthetic stream.
struct synthetic_config {
  std::size_t events = 100'000;
  std::size_t users = 600;
  std::size_t initial_items = 1'500;
  std::size_t new_items_per_day = 40;
  std::size_t days = 120;
  std::size_t genres = 18;
  std::size_t dim = 8;
  double drift = 0.3;   // per-day random-walk step of a user's taste (relative to its norm)
  double mood = 1.5;    // weight of a session's mood (a genre centre added to the taste for one session)
  std::uint64_t seed = 42;
};

//! @brief A stream with drifting preferences, generated from a seed (no files needed).
//!
//! Items have a latent vector near the centre of one or two of `genres` genres (their bag) and a
//! popularity; new items arrive every day and are most popular while young. Users have a latent
//! taste that drifts by a random walk each day and a Zipf activity; they rate in sessions (bursts
//! of events minutes apart), each with a mood (one genre's centre added to the taste for the
//! session). like ~ Bernoulli(sigmoid(3 * (taste + mood) . item + user bias + item bias)).
inline stream synthetic_stream(const synthetic_config& c, double warm_fraction) {
  std::mt19937_64 rng(c.seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<double> uniform;
  const std::size_t total_items = c.initial_items + c.new_items_per_day * c.days;
  std::vector<std::vector<float>> centres(c.genres, std::vector<float>(c.dim));
  for (auto& centre : centres)
    for (float& x : centre) x = normal(rng) / std::sqrt(static_cast<float>(c.dim));
  struct item_info {
    std::vector<float> v;
    std::vector<std::uint32_t> genres;
    double bias, popularity;
    std::int64_t born;
  };
  std::vector<item_info> items(total_items);
  for (std::size_t i = 0; i < total_items; ++i) {
    auto& it = items[i];
    it.genres.push_back(static_cast<std::uint32_t>(rng() % c.genres));
    if (uniform(rng) < 0.5) {
      const auto g = static_cast<std::uint32_t>(rng() % c.genres);
      if (g != it.genres[0]) it.genres.push_back(g);
    }
    it.v.assign(c.dim, 0.0f);
    for (std::size_t d = 0; d < c.dim; ++d) {
      for (auto g : it.genres) it.v[d] += centres[g][d] / static_cast<float>(it.genres.size());
      it.v[d] += 0.5f * normal(rng) / std::sqrt(static_cast<float>(c.dim));
    }
    it.bias = 0.5 * normal(rng);
    it.popularity = std::exp(1.2 * normal(rng));
    it.born = i < c.initial_items ? 0
                                  : static_cast<std::int64_t>((i - c.initial_items) / c.new_items_per_day) * 86'400 +
                                        static_cast<std::int64_t>(uniform(rng) * 86'400);
  }
  std::vector<std::vector<float>> taste(c.users, std::vector<float>(c.dim));
  std::vector<double> user_bias(c.users), activity(c.users);
  for (std::size_t u = 0; u < c.users; ++u) {
    const auto& centre = centres[rng() % c.genres];
    for (std::size_t d = 0; d < c.dim; ++d)
      taste[u][d] = 2.0f * centre[d] + 0.5f * normal(rng) / std::sqrt(static_cast<float>(c.dim));
    user_bias[u] = 0.5 * normal(rng);
    activity[u] = 1.0 / std::pow(static_cast<double>(u + 1), 0.8);
  }
  std::discrete_distribution<std::size_t> pick_user(activity.begin(), activity.end());

  // Sessions: a user starts a session at a uniform time and rates a burst of items a few minutes apart.
  struct raw {
    std::int64_t t;
    std::uint32_t user, item;
    float label;
  };
  std::vector<raw> raws;
  raws.reserve(c.events);
  const auto horizon = static_cast<std::int64_t>(c.days) * 86'400;
  // Sessions are generated in time order so that a user's drift applies as time passes.
  std::vector<std::int64_t> starts;
  const std::size_t sessions = c.events / 10 + 1;
  for (std::size_t k = 0; k < sessions; ++k) starts.push_back(static_cast<std::int64_t>(uniform(rng) * static_cast<double>(horizon)));
  std::sort(starts.begin(), starts.end());
  std::vector<std::int64_t> drifted_to(c.users, 0);
  for (std::size_t k = 0; k < sessions && raws.size() < c.events; ++k) {
    const std::size_t u = pick_user(rng);
    // Drift the user's taste for every day since it last drifted.
    const std::int64_t day = starts[k] / 86'400;
    for (; drifted_to[u] < day; ++drifted_to[u])
      for (std::size_t d = 0; d < c.dim; ++d)
        taste[u][d] += static_cast<float>(c.drift) * normal(rng) / std::sqrt(static_cast<float>(c.dim));
    // Items alive now, weighted by popularity that decays with age (fresh items are hot).
    const std::size_t alive = std::min(total_items, c.initial_items + static_cast<std::size_t>(day + 1) * c.new_items_per_day);
    const std::size_t length = 1 + static_cast<std::size_t>(-std::log(1.0 - uniform(rng)) * 9.0);
    std::int64_t t = starts[k];
    const auto& mood = centres[rng() % c.genres];
    std::vector<float> now(c.dim);
    for (std::size_t d = 0; d < c.dim; ++d) now[d] = taste[u][d] + static_cast<float>(c.mood) * mood[d];
    for (std::size_t j = 0; j < length && raws.size() < c.events; ++j) {
      std::size_t i = 0;
      for (int attempt = 0; attempt < 8; ++attempt) {  // rejection sampling by popularity and age
        i = rng() % alive;
        if (items[i].born > t) continue;
        const double age_days = static_cast<double>(t - items[i].born) / 86'400.0;
        const double weight = items[i].popularity / 4.0 * std::exp(-age_days / 20.0) + 0.05;
        if (uniform(rng) < weight) break;
      }
      if (items[i].born > t) continue;
      double dot = 0.0;
      for (std::size_t d = 0; d < c.dim; ++d) dot += static_cast<double>(now[d]) * items[i].v[d];
      const double p = 1.0 / (1.0 + std::exp(-(3.0 * dot + user_bias[u] + items[i].bias)));
      raws.push_back({t, static_cast<std::uint32_t>(u), static_cast<std::uint32_t>(i), uniform(rng) < p ? 1.0f : 0.0f});
      t += 30 + static_cast<std::int64_t>(uniform(rng) * 300);
    }
  }
  std::stable_sort(raws.begin(), raws.end(), [](const raw& a, const raw& b) { return a.t < b.t; });
  stream s;
  s.name = "synthetic";
  std::unordered_map<std::uint32_t, std::uint32_t> users, item_index;
  std::vector<std::uint32_t> item_ids;
  for (const raw& r : raws) {
    auto [u, nu] = users.try_emplace(r.user, static_cast<std::uint32_t>(users.size()));
    auto [i, ni] = item_index.try_emplace(r.item, static_cast<std::uint32_t>(item_index.size()));
    if (ni) item_ids.push_back(r.item);
    s.events.push_back({u->second, i->second, r.t, r.label});
  }
  s.users = users.size();
  s.items = item_index.size();
  s.genres = recpipe::train::category_bags(c.genres);
  for (std::size_t i = 0; i < item_ids.size(); ++i) s.genres.set(static_cast<id_type>(i), items[item_ids[i]].genres);
  s.warm_end = static_cast<std::size_t>(static_cast<double>(s.events.size()) * warm_fraction);
  log_features(s);
  return s;
}

}  // namespace experiment
