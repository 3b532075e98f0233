// SPDX-License-Identifier: Apache-2.0
// The serving-while-training stress run, shared by the 5-second test (tests/unit/stages/
// test_swap_concurrency.cpp, also under ThreadSanitizer) and the 30-second benchmark
// (bench/swap/swap.cpp, ./scripts/bench swap).
//
// Serving threads run a full pipeline (lookup >> retrieve >> lookup >> filter_seen >> score >>
// top_k) at batch 1 without pause. Phase 1 measures them alone; in phase 2 a trainer thread
// publishes a new version of the user vectors and the ranker together every `publish_every`,
// adds fresh items to the live index and removes others, and appends clicks to users' histories.
// Each run checks what it used:
// - version mixes: the user vectors of version v carry v in their last coordinate (which the
//   items' last coordinate, 0, keeps out of retrieval); the ranker of version v counts a mix when
//   the query it scores carries another version;
// - items returned after their removal: an item removed (remove() returned) before a run started
//   must not be in that run's output;
// - failures: any exception from a run.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <recpipe/core/versions.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/score.hpp>

namespace recpipe::stress {

struct swap_stress_config {
  std::chrono::milliseconds phase{2500};          //!< length of each phase (without, with swaps)
  std::chrono::milliseconds publish_every{100};   //!< the trainer's publication interval
  std::size_t items = 5000;                       //!< items in the index at the start
  std::size_t users = 1000;
  std::size_t dim = 16;                           //!< + 1 version coordinate
  std::size_t serving_threads = 2;
  std::size_t adds_per_publish = 100;             //!< fresh items per publication (1,000/s at 100 ms)
  std::size_t removes_per_publish = 10;
  std::size_t clicks_per_publish = 50;            //!< history appends per publication
  std::size_t retrieve_k = 50, final_k = 10;
  std::size_t build_threads = 1;                  //!< threads building the initial index
  std::uint64_t seed = 7;
  //! The swapping phase lasts at least `phase` and until this many publications were made (at
  //! most 20 x phase): on a loaded machine, or under ThreadSanitizer, a fixed time could end with
  //! too few versions to prove anything.
  std::uint64_t min_publications = 0;
};

struct phase_result {
  std::uint64_t requests = 0, failures = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0, max_us = 0;
};

struct swap_stress_result {
  phase_result quiet, swapping;
  std::uint64_t version_mixes = 0;       //!< must be 0
  std::uint64_t removed_returned = 0;    //!< must be 0
  std::uint64_t publications = 0, items_added = 0, items_removed = 0, clicks = 0;
  double publish_mean_us = 0, publish_max_us = 0;  //!< building + committing one version
  std::size_t live_generations_after = 0;          //!< 1 once every run has ended
  std::uint64_t distinct_versions_served = 0;      //!< how many versions runs actually pinned
  std::string first_failure;
};

namespace impl {

using user_store = feature_store<col::user_id, col::user_embedding>;
using history_store = feature_store<col::user_id, col::history>;

//! The ranker: score = retrieval score + version * 1e-6 (ranks stay those of retrieval); it
//! counts a mix when the query it scores (its run's user vectors) carries another version.
struct tagged_ranker {
  using reads = columns<col::candidates, col::user_embedding, col::retrieval_score>;
  float version = 0;
  std::atomic<std::uint64_t>* mixes = nullptr;
  template <class Batch>
  void score(const Batch& batch, std::span<float> out) const {
    const auto& queries = batch.template get<col::user_embedding>();
    const auto& retrieval = batch.template get<col::retrieval_score>();
    const auto& offsets = batch.template get<col::candidates>().offsets();
    for (std::size_t r = 0; r < batch.size(); ++r) {
      const float tag = queries.row(r)[queries.cols() - 1];
      if (tag != version) mixes->fetch_add(1, std::memory_order_relaxed);
      for (std::size_t c = offsets[r]; c < offsets[r + 1]; ++c) out[c] = retrieval[c] + version * 1e-6f;
    }
  }
};

inline std::vector<float> random_vector(std::mt19937_64& rng, std::size_t dim, float tag) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(dim + 1);
  for (std::size_t d = 0; d < dim; ++d) v[d] = normal(rng);
  v[dim] = tag;
  return v;
}

inline std::shared_ptr<const user_store> make_users(const std::vector<std::vector<float>>& base, float version) {
  auto store = std::make_shared<user_store>(base.front().size());
  for (std::size_t u = 0; u < base.size(); ++u) {
    std::vector<float> row = base[u];
    row.back() = version;
    store->insert(static_cast<id_type>(u), std::span<const float>(row));
  }
  return store;
}

//! Appends a click to a user's history in place, where the store supports it.
template <class Store>
bool append_click(Store& store, id_type user, id_type item) {
  if constexpr (requires { store.append(user, item); }) {
    store.append(user, item);
    return true;
  } else {
    return false;
  }
}

inline phase_result summarise(std::vector<double>& latencies_us, std::uint64_t failures) {
  phase_result p;
  p.requests = latencies_us.size();
  p.failures = failures;
  if (latencies_us.empty()) return p;
  std::sort(latencies_us.begin(), latencies_us.end());
  const auto at = [&](double q) {
    return latencies_us[std::min(latencies_us.size() - 1, static_cast<std::size_t>(q * latencies_us.size()))];
  };
  p.p50_us = at(0.5);
  p.p99_us = at(0.99);
  p.p999_us = at(0.999);
  p.max_us = latencies_us.back();
  return p;
}

}  // namespace impl

//! Runs both phases and returns what the runs saw (see the file comment).
inline swap_stress_result run_swap_stress(const swap_stress_config& cfg) {
  using clock = std::chrono::steady_clock;
  std::mt19937_64 rng(cfg.seed);
  const std::size_t max_items = cfg.items + (cfg.adds_per_publish + 1) * 4096;

  // The live index: items carry 0 in the version coordinate. Updated in place by the trainer.
  cpu::hnsw_index index(cfg.dim + 1, metric::inner_product, cfg.items * 2, 16, 100, cfg.seed);
  index.set_ef(std::max<std::size_t>(cfg.retrieve_k, 64));
  {
    matrix<float> vectors(cfg.items, cfg.dim + 1);
    std::vector<id_type> ids(cfg.items);
    for (std::size_t i = 0; i < cfg.items; ++i) {
      const auto v = impl::random_vector(rng, cfg.dim, 0.0f);
      std::copy(v.begin(), v.end(), vectors.row(i).begin());
      ids[i] = static_cast<id_type>(i);
    }
    index.add(ids, vectors.view(), cfg.build_threads);
  }
  // Users' histories, appended to while serving.
  impl::history_store histories;
  for (std::size_t u = 0; u < cfg.users; ++u) {
    std::vector<id_type> seen;
    for (int h = 0; h < 5; ++h) seen.push_back(static_cast<id_type>(rng() % cfg.items));
    histories.insert(static_cast<id_type>(u), std::span<const id_type>(seen));
  }

  std::vector<std::vector<float>> user_base(cfg.users);
  for (auto& u : user_base) u = impl::random_vector(rng, cfg.dim, 0.0f);

  std::atomic<std::uint64_t> mixes{0};
  version_registry versions;
  auto users = versions.add("users", impl::make_users(user_base, 0.0f));
  auto ranker = versions.add("ranker", std::make_shared<const impl::tagged_ranker>(impl::tagged_ranker{0.0f, &mixes}));

  auto recommend = lookup(users) >> retrieve<col::user_embedding>(index, cfg.retrieve_k) >> lookup(histories) >>
                   filter_seen() >> score(ranker) >> top_k(cfg.final_k);
  recommend.enable_stats(false);

  // removed_at[id]: the removal epoch after which id must never be returned (0: not removed).
  std::vector<std::atomic<std::uint64_t>> removed_at(max_items);
  std::atomic<std::uint64_t> removal_epoch{0};
  std::atomic<std::uint64_t> removed_returned{0};
  std::atomic<std::uint64_t> max_version_seen{0};

  swap_stress_result result;
  std::mutex failure_mutex;

  const auto serve_phase = [&](std::chrono::milliseconds length, bool with_trainer) {
    std::atomic<bool> stop{false};
    std::vector<std::vector<double>> latencies(cfg.serving_threads);
    std::vector<std::uint64_t> failures(cfg.serving_threads, 0);
    std::vector<std::thread> servers;
    for (std::size_t t = 0; t < cfg.serving_threads; ++t)
      servers.emplace_back([&, t] {
        std::mt19937_64 local(cfg.seed * 31 + t);
        auto& lat = latencies[t];
        lat.reserve(1 << 20);
        while (!stop.load(std::memory_order_relaxed)) {
          const auto user = static_cast<id_type>(local() % cfg.users);
          const std::uint64_t epoch = removal_epoch.load(std::memory_order_acquire);
          const auto start = clock::now();
          try {
            auto out = recommend.run(make_batch<col::user_id>(std::vector<id_type>{user}));
            lat.push_back(std::chrono::duration<double, std::micro>(clock::now() - start).count());
            for (const id_type id : out.template get<col::candidates>().row(0)) {
              const std::uint64_t removed = removed_at[static_cast<std::size_t>(id)].load(std::memory_order_acquire);
              if (removed != 0 && removed <= epoch) removed_returned.fetch_add(1, std::memory_order_relaxed);
            }
            const float v = out.template get<col::user_embedding>().row(0)[cfg.dim];
            auto seen = max_version_seen.load(std::memory_order_relaxed);
            while (static_cast<std::uint64_t>(v) > seen &&
                   !max_version_seen.compare_exchange_weak(seen, static_cast<std::uint64_t>(v))) {
            }
          } catch (const std::exception& e) {
            ++failures[t];
            std::lock_guard lock(failure_mutex);
            if (result.first_failure.empty()) result.first_failure = e.what();
          }
        }
      });

    std::thread trainer;
    if (with_trainer)
      trainer = std::thread([&] {
        std::mt19937_64 local(cfg.seed * 77);
        std::size_t next_item = cfg.items;
        std::vector<id_type> live_candidates;  // ids that may be removed
        for (std::size_t i = 0; i < cfg.items; ++i) live_candidates.push_back(static_cast<id_type>(i));
        double publish_total = 0;
        const auto phase_end = clock::now() + length, hard_end = clock::now() + 20 * length;
        auto next_publish = clock::now();
        float version = 0;
        while (clock::now() < phase_end || (result.publications < cfg.min_publications && clock::now() < hard_end)) {
          std::this_thread::sleep_until(next_publish);
          next_publish += cfg.publish_every;
          // A "training step": the users drift a little; the new ranker goes with them.
          version += 1;
          for (auto& u : user_base) u[local() % cfg.dim] += 0.01f;
          const auto start = clock::now();
          auto tx = versions.begin();
          tx.set(users, impl::make_users(user_base, version));
          tx.set(ranker, std::make_shared<const impl::tagged_ranker>(impl::tagged_ranker{version, &mixes}));
          tx.commit();
          const double us = std::chrono::duration<double, std::micro>(clock::now() - start).count();
          publish_total += us;
          result.publish_max_us = std::max(result.publish_max_us, us);
          ++result.publications;
          // Fresh items enter the live index; some old ones leave it for good.
          for (std::size_t a = 0; a < cfg.adds_per_publish && next_item < max_items; ++a, ++next_item) {
            const auto v = impl::random_vector(local, cfg.dim, 0.0f);
            index.add(static_cast<id_type>(next_item), std::span<const float>(v));
            live_candidates.push_back(static_cast<id_type>(next_item));
            ++result.items_added;
          }
          for (std::size_t r = 0; r < cfg.removes_per_publish && !live_candidates.empty(); ++r) {
            const std::size_t at = local() % live_candidates.size();
            const id_type id = live_candidates[at];
            live_candidates[at] = live_candidates.back();
            live_candidates.pop_back();
            if (index.remove(id)) {
              // Runs that start after this point must not return id.
              removed_at[static_cast<std::size_t>(id)].store(removal_epoch.fetch_add(1) + 1, std::memory_order_release);
              ++result.items_removed;
            }
          }
          // Clicks: users' histories grow while the pipeline reads them.
          for (std::size_t c = 0; c < cfg.clicks_per_publish; ++c) {
            const auto user = static_cast<id_type>(local() % cfg.users);
            if (impl::append_click(histories, user, static_cast<id_type>(local() % next_item))) ++result.clicks;
          }
        }
        result.publish_mean_us = result.publications ? publish_total / static_cast<double>(result.publications) : 0;
      });

    if (with_trainer) {
      trainer.join();
    } else {
      std::this_thread::sleep_for(length);
    }
    stop.store(true);
    for (auto& s : servers) s.join();
    std::vector<double> all;
    std::uint64_t failed = 0;
    for (std::size_t t = 0; t < cfg.serving_threads; ++t) {
      all.insert(all.end(), latencies[t].begin(), latencies[t].end());
      failed += failures[t];
    }
    return impl::summarise(all, failed);
  };

  result.quiet = serve_phase(cfg.phase, false);
  result.swapping = serve_phase(cfg.phase, true);
  result.version_mixes = mixes.load();
  result.removed_returned = removed_returned.load();
  result.live_generations_after = versions.live_generations();
  result.distinct_versions_served = max_version_seen.load();
  return result;
}

}  // namespace recpipe::stress
