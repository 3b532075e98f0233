// SPDX-License-Identifier: Apache-2.0
// recpipe tests: train/dynamic_table.hpp with one trainer thread writing while serving threads
// read (labelled `concurrency`; also run under ThreadSanitizer). Every row the writer publishes
// holds one value repeated, so a torn row (half old, half new) shows as unequal values. The
// worst reader wait is measured and printed, never asserted (timing depends on the machine).
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include <recpipe/train/dynamic_table.hpp>

#include "common/row_optimizers.hpp"

namespace cpu = recpipe::cpu;
namespace train = recpipe::train;
using recpipe::id_type;
using recpipe::matrix;
using clock_type = std::chrono::steady_clock;

namespace {
constexpr std::size_t dim = 16;
constexpr auto run_time = std::chrono::milliseconds(1000);

struct rng {
  std::uint64_t state;
  std::uint64_t next() { return state = train::row_init::mix(state + 0x9e3779b97f4a7c15ull); }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
};

// Latencies of single-row reads in power-of-two nanosecond buckets, plus the exact maximum.
struct wait_histogram {
  std::array<std::uint64_t, 48> buckets{};
  std::uint64_t count = 0, max_ns = 0;
  void add(std::uint64_t ns) {
    ++count;
    max_ns = std::max(max_ns, ns);
    std::size_t b = 0;
    while ((std::uint64_t{1} << b) < ns && b + 1 < buckets.size()) ++b;
    ++buckets[b];
  }
  void merge(const wait_histogram& o) {
    for (std::size_t b = 0; b < buckets.size(); ++b) buckets[b] += o.buckets[b];
    count += o.count;
    max_ns = std::max(max_ns, o.max_ns);
  }
  // Upper bound of the bucket holding quantile q.
  std::uint64_t quantile(double q) const {
    const auto target = static_cast<std::uint64_t>(q * static_cast<double>(count));
    std::uint64_t seen = 0;
    for (std::size_t b = 0; b < buckets.size(); ++b)
      if ((seen += buckets[b]) > target) return std::uint64_t{1} << b;
    return max_ns;
  }
};

bool all_equal(std::span<const float> row) {
  return std::all_of(row.begin(), row.end(), [&](float v) { return v == row[0]; });
}

// One SGD step with lr 1 and a gradient of one value per row keeps a row of equal values equal.
train::dynamic_table_config config() {
  train::dynamic_table_config c;
  c.dim = dim;
  c.init = {train::row_init::distribution::zeros, 0.0f, 1};
  c.name = "concurrent";
  return c;
}

void report(const char* what, const wait_histogram& h, std::uint64_t steps, const train::dynamic_table& t) {
  const auto s = t.stats();
  std::printf(
      "dynamic_table concurrency (%s): %llu single-row reads by 2 threads while 1 writer made %llu steps; reader wait "
      "p50 <= %llu ns, p99 <= %llu ns, p99.9 <= %llu ns, max %llu ns; rows %llu, admitted %llu, evicted %llu, serving "
      "unknown %llu\n",
      what, static_cast<unsigned long long>(h.count), static_cast<unsigned long long>(steps),
      static_cast<unsigned long long>(h.quantile(0.5)), static_cast<unsigned long long>(h.quantile(0.99)),
      static_cast<unsigned long long>(h.quantile(0.999)), static_cast<unsigned long long>(h.max_ns),
      static_cast<unsigned long long>(s.rows), static_cast<unsigned long long>(s.admitted),
      static_cast<unsigned long long>(s.evicted), static_cast<unsigned long long>(s.serving_unknown_lookups));
}
}  // namespace

TEST_CASE("dynamic_table: 2 serving threads read consistent rows while 1 trainer trains, admits and evicts") {
  auto opt = std::make_shared<recpipe::testing::sgd_rows>(1.0f);
  auto cfg = config();
  cfg.max_rows = 3000;  // below the 6000 ids in play: constant budget eviction and re-admission
  cfg.ttl = 40;
  train::dynamic_table table(cfg, opt);
  std::vector<id_type> universe(6000);
  for (std::size_t i = 0; i < universe.size(); ++i)
    universe[i] = static_cast<id_type>(i * 0x9e3779b97f4a7c15ull);  // spread over the whole 64-bit range

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> torn{0}, steps{0};
  std::vector<wait_histogram> waits(2);

  {
    // Baseline: the same reads with no writer, so the printed maximum under writing can be told
    // apart from what the OS scheduler alone costs on this machine (preemption between the two
    // clock reads).
    std::vector<float> value(dim, 1.0f);
    for (std::size_t i = 0; i < universe.size(); i += 2) table.load_row(universe[i], value);
    std::vector<wait_histogram> idle(2);
    std::vector<std::thread> readers;
    for (std::size_t t = 0; t < 2; ++t)
      readers.emplace_back([&, t] {
        rng r{200 + t};
        std::vector<float> row(dim);
        const auto end = clock_type::now() + run_time / 5;
        while (clock_type::now() < end) {
          const auto start = clock_type::now();
          table.read_row(universe[r.below(universe.size())], row);
          idle[t].add(static_cast<std::uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - start).count()));
        }
      });
    for (auto& reader : readers) reader.join();
    idle[0].merge(idle[1]);
    report("baseline: readers only, no writer", idle[0], 0, table);
  }

  std::thread writer([&] {
    rng r{1};
    std::vector<id_type> ids(256), offsets(64);
    for (std::size_t b = 0; b < offsets.size(); ++b) offsets[b] = static_cast<id_type>(4 * b);
    matrix<float> pooled(64, dim), grads;
    const auto end = clock_type::now() + run_time;
    std::int64_t step = 0;
    while (clock_type::now() < end) {
      table.advance_clock(step);
      for (auto& id : ids) id = universe[r.below(universe.size())];
      table.pool(ids, offsets, {}, cpu::pooling::sum, pooled.view());
      for (std::size_t b = 0; b < 64; ++b)
        if (!all_equal(pooled.row(b))) torn.fetch_add(1);
      std::vector<id_type> unique(ids);
      std::sort(unique.begin(), unique.end());
      unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
      grads.resize(unique.size(), dim);
      for (std::size_t i = 0; i < unique.size(); ++i)
        std::fill(grads.row(i).begin(), grads.row(i).end(), static_cast<float>(static_cast<int>(r.below(9)) - 4));
      table.optimizer().begin_step();
      table.apply(unique, grads.view());
      if (step % 8 == 0) {
        const std::vector<float> value(dim, static_cast<float>(step % 1000));
        table.load_row(universe[r.below(universe.size())], value);
      }
      table.evict_expired(step);
      ++step;
    }
    steps.store(static_cast<std::uint64_t>(step));
    stop.store(true);
  });

  std::vector<std::thread> readers;
  for (std::size_t t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      rng r{100 + t};
      std::vector<float> row(dim);
      std::vector<id_type> ids(32), offsets = {0, 8, 16, 24};
      matrix<float> rows(32, dim), pooled(4, dim);
      wait_histogram& h = waits[t];
      std::uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        const id_type id = universe[r.below(universe.size())];
        const auto start = clock_type::now();
        table.read_row(id, row);
        h.add(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - start).count()));
        if (!all_equal(row)) torn.fetch_add(1);
        if (++n % 64 == 0) {
          for (auto& i : ids) i = universe[r.below(universe.size())];
          table.lookup(ids, rows.view());
          for (std::size_t i = 0; i < 32; ++i)
            if (!all_equal(rows.row(i))) torn.fetch_add(1);
          table.pool_serving(ids, offsets, {}, cpu::pooling::mean, pooled.view());
          for (std::size_t b = 0; b < 4; ++b)
            if (!all_equal(pooled.row(b))) torn.fetch_add(1);
          (void)table.contains(id);
          (void)table.stats();
        }
      }
    });
  }
  writer.join();
  for (auto& reader : readers) reader.join();

  wait_histogram all;
  for (const auto& h : waits) all.merge(h);
  report("budget + ttl", all, steps.load(), table);
  CHECK(torn.load() == 0);
  CHECK(all.count > 0);
  CHECK(steps.load() > 0);
  const auto s = table.stats();
  CHECK(s.rows <= 3000);
  CHECK(s.admitted - s.evicted == s.rows);
  CHECK(table.size() == s.rows);
}

TEST_CASE("dynamic_table: readers and a snapshot thread while the trainer grows the table (map growth swaps)") {
  auto opt = std::make_shared<recpipe::testing::sgd_rows>(1.0f);
  train::dynamic_table table(config(), opt);  // no budget, no ttl: maps keep growing
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> published{0};  // ids [0, published) have been written
  std::atomic<std::uint64_t> torn{0}, steps{0}, snapshots{0};
  std::vector<wait_histogram> waits(2);

  std::thread writer([&] {
    std::vector<float> value(dim);
    const auto end = clock_type::now() + run_time;
    std::int64_t next = 0;
    std::uint64_t step = 0;
    // Negative and positive ids alike: id k is written as -k for odd k.
    while (clock_type::now() < end && next < 400'000) {
      for (int i = 0; i < 256; ++i, ++next) {
        std::fill(value.begin(), value.end(), static_cast<float>(next % 4096));
        table.load_row(next % 2 ? -next : next, value);
      }
      published.store(next, std::memory_order_release);
      // Rewrite a few older rows (an update under the exclusive lock).
      for (int i = 0; i < 64; ++i) {
        const std::int64_t k = static_cast<std::int64_t>(train::row_init::mix(step * 64 + static_cast<std::uint64_t>(i)) %
                                                         static_cast<std::uint64_t>(next));
        std::fill(value.begin(), value.end(), static_cast<float>(step % 777));
        table.load_row(k % 2 ? -k : k, value);
      }
      ++step;
    }
    steps.store(step);
    stop.store(true);
  });

  std::vector<std::thread> readers;
  for (std::size_t t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      rng r{7 + t};
      std::vector<float> row(dim);
      wait_histogram& h = waits[t];
      while (!stop.load(std::memory_order_relaxed)) {
        const std::int64_t limit = published.load(std::memory_order_acquire);
        if (limit == 0) continue;
        const auto k = static_cast<std::int64_t>(r.below(static_cast<std::size_t>(limit)));
        const auto start = clock_type::now();
        const bool found = table.read_row(k % 2 ? -k : k, row);
        h.add(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - start).count()));
        if (!found || !all_equal(row)) torn.fetch_add(1);  // published rows are never evicted here
      }
    });
  }
  std::thread snapshotter([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      std::size_t rows = 0;
      table.for_each_row([&](id_type, std::span<const float> row, std::span<const float> state) {
        ++rows;
        if (!all_equal(row) || !state.empty()) torn.fetch_add(1);
      });
      const auto copy = table.serving_copy(cpu::storage::fp16);
      if (copy.table.rows() != copy.ids.size() + 1) torn.fetch_add(1);
      snapshots.fetch_add(1);
      (void)rows;
    }
  });
  writer.join();
  for (auto& reader : readers) reader.join();
  snapshotter.join();

  wait_histogram all;
  for (const auto& h : waits) all.merge(h);
  report("growing, with snapshots", all, steps.load(), table);
  std::printf("dynamic_table concurrency (growing): %llu snapshots taken\n", static_cast<unsigned long long>(snapshots.load()));
  CHECK(torn.load() == 0);
  CHECK(table.size() == static_cast<std::size_t>(published.load()));
  CHECK(table.stats().admitted == table.size());
}
