// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu::hnsw_index serving while a writer adds, removes and replaces items (also
// run under ThreadSanitizer: keep it small).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <numeric>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/hnsw_index.hpp>

#include "common/index_fixtures.hpp"

namespace {

using recpipe::id_type;
using recpipe::metric;
using recpipe::cpu::exact_index;
using recpipe::cpu::hnsw_index;
using recpipe::testing::random_matrix;

constexpr std::size_t dim = 12;
constexpr id_type initial = 300;    // ids [0, initial) are added before serving starts
constexpr id_type added = 300;      // ids [initial, initial + added) arrive while serving
constexpr id_type removed_n = 90;   // ids [0, removed_n) are removed for good, in order
constexpr id_type updated_lo = 90, updated_hi = 140;  // replaced in place (new vector)
constexpr id_type revived_lo = 140, revived_hi = 165;  // removed, then added again (new vector)
constexpr id_type total = initial + added;

}  // namespace

TEST_CASE("hnsw_index: searches while a writer adds, removes and replaces: removed ids never come back") {
  const auto items = random_matrix(static_cast<std::size_t>(total), dim, 31);
  const auto fresh = random_matrix(static_cast<std::size_t>(revived_hi), dim, 32);  // new vectors
  hnsw_index index(dim, metric::l2, 64, 8, 40, 5);  // small capacity: growth happens while serving
  for (id_type id = 0; id < initial; ++id) index.add(id, items.row(static_cast<std::size_t>(id)));

  // removals_done = r: ids [0, r) have been removed and remove() has returned for each.
  std::atomic<id_type> removals_done{0};
  std::atomic<bool> done{false};
  std::atomic<long> searches{0}, invalid{0}, resurrected{0}, duplicates{0}, short_results{0};

  std::thread writer([&] {
    id_type next_add = initial, next_remove = 0, next_update = updated_lo, next_revive = revived_lo;
    for (int step = 0; next_add < total; ++step) {
      index.add(next_add, items.row(static_cast<std::size_t>(next_add)));
      ++next_add;
      if (step % 3 == 0 && next_remove < removed_n) {
        CHECK(index.remove(next_remove));
        removals_done.store(++next_remove);
      }
      if (step % 5 == 0 && next_update < updated_hi) {
        index.add(next_update, fresh.row(static_cast<std::size_t>(next_update)));  // replace a live vector
        ++next_update;
      }
      if (step % 11 == 0 && next_revive < revived_hi) {
        CHECK(index.remove(next_revive));
        index.add(next_revive, fresh.row(static_cast<std::size_t>(next_revive)));  // comes back, new vector
        ++next_revive;
      }
    }
    done.store(true);
  });

  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(40 + t));
      std::uniform_int_distribution<std::size_t> pick(0, static_cast<std::size_t>(total) - 1);
      std::vector<id_type> ids(10);
      std::vector<float> scores(10);
      // At least a few searches even if the writer finishes first.
      for (int n = 0; !done.load() || n < 20; ++n) {
        const id_type removed_before = removals_done.load();  // removals that returned before this search
        const std::size_t live_before = index.size();
        const std::size_t count = index.search(items.row(pick(rng)), 10, ids, scores, 32);
        ++searches;
        if (count > 10 || (live_before >= 10 && count < 10 && index.size() >= 10)) ++short_results;
        std::set<id_type> seen;
        for (std::size_t i = 0; i < count; ++i) {
          if (ids[i] < 0 || ids[i] >= total || !std::isfinite(scores[i])) ++invalid;
          if (ids[i] < removed_before) ++resurrected;
          if (!seen.insert(ids[i]).second) ++duplicates;
        }
      }
    });
  writer.join();
  for (auto& r : readers) r.join();

  CHECK(searches.load() > 0);
  CHECK(invalid.load() == 0);
  CHECK(resurrected.load() == 0);
  CHECK(duplicates.load() == 0);
  CHECK(short_results.load() == 0);

  // The final index: exactly the expected ids, replaced and revived ids found by their new vectors.
  CHECK(index.size() == static_cast<std::size_t>(total - removed_n));
  for (id_type id = 0; id < removed_n; ++id) CHECK_FALSE(index.contains(id));
  for (id_type id = removed_n; id < total; ++id) CHECK(index.contains(id));
  std::vector<id_type> one(1);
  std::vector<float> one_score(1);
  int found_new = 0;
  for (id_type id = updated_lo; id < revived_hi; ++id) {
    REQUIRE(index.search(fresh.row(static_cast<std::size_t>(id)), 1, one, one_score, 64) == 1);
    found_new += one[0] == id && one_score[0] > -1e-4f;
  }
  CHECK(found_new >= (revived_hi - updated_lo) * 95 / 100);

  // Recall@10 against exact search over the live items stays sane.
  exact_index exact(dim, metric::l2);
  for (id_type id = removed_n; id < total; ++id) {
    const bool replaced = id >= updated_lo && id < revived_hi;
    exact.add(id, replaced ? fresh.row(static_cast<std::size_t>(id)) : items.row(static_cast<std::size_t>(id)));
  }
  const auto queries = random_matrix(50, dim, 33);
  std::size_t hits = 0;
  std::vector<id_type> a(10), b(10);
  std::vector<float> sa(10), sb(10);
  for (std::size_t q = 0; q < queries.rows(); ++q) {
    REQUIRE(index.search(queries.row(q), 10, a, sa, 64) == 10);
    REQUIRE(exact.search(queries.row(q), 10, b, sb) == 10);
    for (const id_type id : a) hits += std::count(b.begin(), b.end(), id);
  }
  CHECK(static_cast<double>(hits) / (10.0 * static_cast<double>(queries.rows())) >= 0.9);
}

TEST_CASE("hnsw_index: a NaN or infinite vector added while serving is rejected and changes nothing") {
  const auto items = random_matrix(300, dim, 34);
  hnsw_index index(dim, metric::inner_product, 512, 8, 40, 6);
  for (id_type id = 0; id < 300; ++id) index.add(id, items.row(static_cast<std::size_t>(id)));
  std::atomic<bool> done{false};
  std::atomic<long> bad{0};
  std::thread reader([&] {
    std::vector<id_type> ids(5);
    std::vector<float> scores(5);
    for (std::size_t q = 0; !done.load(); q = (q + 1) % 300) {
      const std::size_t n = index.search(items.row(q), 5, ids, scores);
      for (std::size_t i = 0; i < n; ++i) bad += ids[i] < 0 || ids[i] >= 300 || !std::isfinite(scores[i]);
    }
  });
  std::vector<float> poisoned(items.row(7).begin(), items.row(7).end());
  poisoned[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(index.add(1000, poisoned), doctest::Contains("id 1000 has a non-finite value"), recpipe::error);
  poisoned[3] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(index.add(7, poisoned), doctest::Contains("id 7 has a non-finite value"), recpipe::error);
  recpipe::matrix<float> batch(2, dim);
  std::copy(items.row(1).begin(), items.row(1).end(), batch.row(0).begin());
  std::copy(poisoned.begin(), poisoned.end(), batch.row(1).begin());
  CHECK_THROWS_AS(index.add(std::vector<id_type>{2000, 2001}, batch.view()), recpipe::error);
  done.store(true);
  reader.join();
  CHECK(bad.load() == 0);
  CHECK(index.size() == 300);
  CHECK_FALSE(index.contains(1000));
  CHECK_FALSE(index.contains(2000));
  CHECK(index.contains(7));
  // id 7 keeps its old vector: it is still its own best match.
  std::vector<id_type> top(1);
  std::vector<float> score(1);
  REQUIRE(index.search(items.row(7), 1, top, score, 300) == 1);
  const float self = std::inner_product(items.row(7).begin(), items.row(7).end(), items.row(7).begin(), 0.0f);
  CHECK(score[0] >= self - 1e-3f);
}

TEST_CASE("hnsw_index: capacity grows while searches run, and save blocks only writers") {
  const auto items = random_matrix(500, dim, 35);
  hnsw_index index(dim, metric::l2, 8, 8, 40, 7);  // grows 8 -> 16 -> ... -> 512 while serving
  index.add(0, items.row(0));
  std::atomic<bool> done{false};
  std::atomic<long> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&, t] {
      std::vector<id_type> ids(5);
      std::vector<float> scores(5);
      for (std::size_t q = static_cast<std::size_t>(t); !done.load(); q = (q + 13) % 500) {
        const std::size_t n = index.search(items.row(q), 5, ids, scores);
        if (n == 0) ++bad;
        for (std::size_t i = 0; i < n; ++i) bad += ids[i] < 0 || ids[i] >= 500;
        // size first: capacity only grows, and grows before an add, so a size read earlier can
        // never exceed a capacity read later (the other order fails when an add lands in between)
        const std::size_t size = index.size();
        bad += index.capacity() < size;
      }
    });
  const std::filesystem::path saved = std::filesystem::path(RECPIPE_TEST_BINARY_DIR) / "hnsw_concurrency_save.hnsw";
  for (id_type id = 1; id < 500; ++id) {
    index.add(id, items.row(static_cast<std::size_t>(id)));
    if (id == 250) index.save(saved);  // searches keep running; writers wait
  }
  done.store(true);
  for (auto& r : readers) r.join();
  CHECK(bad.load() == 0);
  CHECK(index.size() == 500);
  CHECK(index.capacity() >= 500);
  const hnsw_index loaded = hnsw_index::load(saved);
  CHECK(loaded.size() == 251);
  std::filesystem::remove(saved);
}

TEST_CASE("hnsw_index: an index with replaced vectors (tombstones) saves and loads") {
  const auto items = random_matrix(100, dim, 36);
  hnsw_index index(dim, metric::l2, 128, 8, 40, 8);
  for (id_type id = 0; id < 100; ++id) index.add(id, items.row(static_cast<std::size_t>(id)));
  for (id_type id = 0; id < 10; ++id) index.add(id, items.row(static_cast<std::size_t>(99 - id)));  // replace
  index.remove(3);
  const std::filesystem::path saved = std::filesystem::path(RECPIPE_TEST_BINARY_DIR) / "hnsw_concurrency_tomb.hnsw";
  index.save(saved);
  const hnsw_index loaded = hnsw_index::load(saved);
  std::filesystem::remove(saved);
  CHECK(loaded.size() == 99);
  CHECK_FALSE(loaded.contains(3));
  std::vector<id_type> a(5), b(5);
  std::vector<float> sa(5), sb(5);
  for (std::size_t q = 0; q < 100; ++q) {
    REQUIRE(index.search(items.row(q), 5, a, sa, 100) == 5);
    REQUIRE(loaded.search(items.row(q), 5, b, sb, 100) == 5);
    CHECK(a == b);
  }
}

// add(ids, rows, threads > 1) inserts in parallel: the levels come from recpipe's counter-based
// draw, not hnswlib's shared generator (a data race ThreadSanitizer reported), and a replaced id
// gets a fresh element, never hnswlib's updatePoint (which called memcpy with a null pointer
// for a node without links on one of its levels: UBSan). Batches replace ids, including the
// entry point's, on a graph with many removals, while readers search.
TEST_CASE("hnsw_index: parallel batch adds that replace ids, with removals, while searching") {
  for (const std::size_t m : {2, 4, 16}) {
    CAPTURE(m);
    const auto items = random_matrix(480, dim, 37);
    hnsw_index index(dim, metric::l2, 16, m, 8, 9);
    std::vector<id_type> ids(120);
    std::atomic<bool> done{false};
    std::atomic<long> bad{0};
    std::thread reader([&] {
      std::vector<id_type> out(10);
      std::vector<float> scores(10);
      for (std::size_t q = 0; !done.load(); q = (q + 1) % 480) {
        const std::size_t n = index.search(items.row(q), 10, out, scores);
        for (std::size_t i = 0; i < n; ++i) bad += out[i] < 0 || out[i] >= 120;
      }
    });
    for (std::size_t round = 0; round < 4; ++round) {
      // Rows [120 * round, 120 * round + 120) become ids 0..119: every id is replaced each round.
      std::iota(ids.begin(), ids.end(), id_type{0});
      const recpipe::matrix_view<const float> rows(items.values().data() + round * 120 * dim, 120, dim);
      index.add(ids, rows, 3);
      CHECK(index.size() == 120);
      for (id_type id = 0; id < 120; id += 1 + static_cast<id_type>(round)) index.remove(id);  // round 0: all
      for (id_type id = 0; id < 120; ++id) index.add(id, items.row(static_cast<std::size_t>(id)));
    }
    done.store(true);
    reader.join();
    CHECK(bad.load() == 0);
    std::vector<id_type> out(120);
    std::vector<float> scores(120);
    REQUIRE(index.search(items.row(0), 120, out, scores) == 120);
    CHECK(std::set<id_type>(out.begin(), out.end()).size() == 120);
  }
}
