// SPDX-License-Identifier: Apache-2.0
// recpipe: lock-free latency histograms and per-stage statistics.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! @brief A latency histogram that many threads record into at once (relaxed atomics, no locks).
//!
//! Log-linear buckets: exact below 16 ns, then 16 buckets per power of two, so a reported
//! percentile is within 1/32 (about 3%) of the true value. Covers up to 2^47 ns (39 hours).
class latency_histogram {
 public:
  static constexpr int sub_bucket_bits = 4;
  static constexpr std::size_t sub_buckets = std::size_t{1} << sub_bucket_bits;
  static constexpr std::size_t bucket_count = 44 * sub_buckets;

  void record(std::chrono::nanoseconds elapsed) {
    const std::uint64_t ns = elapsed.count() < 0 ? 0 : static_cast<std::uint64_t>(elapsed.count());
    buckets_[bucket_of(ns)].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    total_ns_.fetch_add(ns, std::memory_order_relaxed);
  }

  std::uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double mean_ns() const {
    const auto n = count();
    return n == 0 ? 0.0 : static_cast<double>(total_ns_.load(std::memory_order_relaxed)) / static_cast<double>(n);
  }
  //! The q-quantile (q in [0, 1]) in nanoseconds; 0 when nothing was recorded.
  double percentile_ns(double q) const {
    const auto n = count();
    if (n == 0) return 0.0;
    q = q < 0 ? 0 : (q > 1 ? 1 : q);
    const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(n - 1)) + 1;  // 1-based
    std::uint64_t seen = 0;
    for (std::size_t b = 0; b < bucket_count; ++b) {
      seen += buckets_[b].load(std::memory_order_relaxed);
      if (seen >= rank) return bucket_middle(b);
    }
    return bucket_middle(bucket_count - 1);
  }
  void reset() {
    for (auto& bucket : buckets_) bucket.store(0, std::memory_order_relaxed);
    count_.store(0, std::memory_order_relaxed);
    total_ns_.store(0, std::memory_order_relaxed);
  }

  static constexpr std::size_t bucket_of(std::uint64_t ns) {
    if (ns < sub_buckets) return static_cast<std::size_t>(ns);
    const int top_bit = std::bit_width(ns) - 1;  // >= sub_bucket_bits
    const int shift = top_bit - sub_bucket_bits;
    const std::size_t sub = static_cast<std::size_t>(ns >> shift) & (sub_buckets - 1);
    const std::size_t index = static_cast<std::size_t>(shift + 1) * sub_buckets + sub;
    return index < bucket_count ? index : bucket_count - 1;
  }
  static constexpr double bucket_middle(std::size_t b) {
    if (b < sub_buckets) return static_cast<double>(b);
    const int shift = static_cast<int>(b / sub_buckets) - 1;
    const double low = static_cast<double>((sub_buckets + b % sub_buckets) << shift);
    return low + static_cast<double>(std::uint64_t{1} << shift) / 2.0;
  }

 private:
  std::array<std::atomic<std::uint64_t>, bucket_count> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> total_ns_{0};
};

//! A snapshot of one stage's statistics.
struct stage_stats {
  std::string_view name;
  std::uint64_t runs = 0;
  double mean_us = 0, p50_us = 0, p99_us = 0;
};

//! Per-stage wall times of one run, filled by `pipeline.run(batch, report)`.
template <std::size_t StageCount>
struct run_report {
  std::array<std::string_view, StageCount> stage_names{};
  std::array<std::chrono::nanoseconds, StageCount> stage_time{};
  std::chrono::nanoseconds total() const {
    std::chrono::nanoseconds sum{0};
    for (auto t : stage_time) sum += t;
    return sum;
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
