// SPDX-License-Identifier: Apache-2.0
// Tests for the lock-free latency histogram behind per-stage p50/p99.
#include <doctest/doctest.h>

#include <recpipe/core/metrics.hpp>

#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

using recpipe::latency_histogram;
using namespace std::chrono_literals;

TEST_CASE("an empty histogram reports zeros") {
  latency_histogram h;
  CHECK(h.count() == 0);
  CHECK(h.percentile_ns(0.5) == 0.0);
  CHECK(h.mean_ns() == 0.0);
}

TEST_CASE("percentiles are within the bucket resolution") {
  latency_histogram h;
  for (int i = 1; i <= 10000; ++i) h.record(std::chrono::nanoseconds(i * 100));  // 100 ns .. 1 ms uniform
  CHECK(h.count() == 10000);
  const double p50 = h.percentile_ns(0.5), p99 = h.percentile_ns(0.99);
  CHECK(std::abs(p50 - 500000.0) / 500000.0 < 0.04);
  CHECK(std::abs(p99 - 990000.0) / 990000.0 < 0.04);
  CHECK(std::abs(h.mean_ns() - 500050.0) < 1.0);
  h.reset();
  CHECK(h.count() == 0);
}

TEST_CASE("bucket boundaries are monotonic and small values exact") {
  for (std::uint64_t v = 0; v < 16; ++v) CHECK(latency_histogram::bucket_of(v) == v);
  std::size_t previous = 0;
  for (std::uint64_t v = 1; v < (std::uint64_t{1} << 40); v = v * 3 / 2 + 1) {
    const auto b = latency_histogram::bucket_of(v);
    CHECK(b >= previous);
    previous = b;
    const double middle = latency_histogram::bucket_middle(b);
    CHECK(std::abs(middle - static_cast<double>(v)) / static_cast<double>(v) <= 1.0 / 16 + 1e-9);
  }
  CHECK(latency_histogram::bucket_of(~std::uint64_t{0}) == latency_histogram::bucket_count - 1);
}

TEST_CASE("concurrent recording loses nothing") {
  latency_histogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&h] {
      for (int i = 0; i < 20000; ++i) h.record(1us);
    });
  for (auto& thread : threads) thread.join();
  CHECK(h.count() == 80000);
  CHECK(std::abs(h.percentile_ns(0.5) - 1000.0) < 40.0);
}

TEST_CASE("negative durations count as zero") {
  latency_histogram h;
  h.record(std::chrono::nanoseconds(-5));
  CHECK(h.count() == 1);
  CHECK(h.percentile_ns(1.0) == 0.0);
}
