// SPDX-License-Identifier: Apache-2.0
// The serving-while-training stress test (5 seconds; runs under ThreadSanitizer too): two serving
// threads run a full pipeline while a trainer publishes versions every 100 ms, adds and removes
// items in the live index and appends clicks to histories. The 30-second version is
// ./scripts/bench swap. Latencies are printed, not asserted (timing belongs to benchmarks).
#include <doctest/doctest.h>

#include "common/swap_stress.hpp"

#include <cstdio>

#if defined(__SANITIZE_THREAD__)
#define RECPIPE_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RECPIPE_UNDER_TSAN 1
#endif
#endif

TEST_CASE("serving while a trainer publishes: no failure, no version mix, no removed item returned") {
  recpipe::stress::swap_stress_config cfg;
  cfg.phase = std::chrono::milliseconds(2500);
  cfg.min_publications = 10;  // what the checks below need, however loaded the machine is
#if defined(RECPIPE_UNDER_TSAN)
  // ThreadSanitizer runs the same code 5-20x slower: a smaller catalog and fewer adds per
  // version keep about 25 publications in the phase.
  cfg.items = 1000;
  cfg.users = 200;
  cfg.adds_per_publish = 10;
  cfg.removes_per_publish = 2;
  cfg.clicks_per_publish = 10;
#endif
  const auto r = recpipe::stress::run_swap_stress(cfg);
  std::printf("swap stress (2 x 2.5 s): quiet %llu requests p50 %.0f us p99 %.0f us | swapping %llu requests p50 %.0f "
              "us p99 %.0f us | %llu publications (mean %.0f us, max %.0f us), %llu items added, %llu removed, %llu "
              "clicks, latest version served %llu\n",
              static_cast<unsigned long long>(r.quiet.requests), r.quiet.p50_us, r.quiet.p99_us,
              static_cast<unsigned long long>(r.swapping.requests), r.swapping.p50_us, r.swapping.p99_us,
              static_cast<unsigned long long>(r.publications), r.publish_mean_us, r.publish_max_us,
              static_cast<unsigned long long>(r.items_added), static_cast<unsigned long long>(r.items_removed),
              static_cast<unsigned long long>(r.clicks), static_cast<unsigned long long>(r.distinct_versions_served));
  INFO("first failure: " << r.first_failure);
  CHECK(r.quiet.failures == 0);
  CHECK(r.swapping.failures == 0);
  CHECK(r.version_mixes == 0);
  CHECK(r.removed_returned == 0);
  // The run really served and really swapped: requests in both phases, publications about every
  // 100 ms (at least 10 of the 25 even on a loaded machine), and runs that saw new versions.
  CHECK(r.quiet.requests > 0);
  CHECK(r.swapping.requests > 0);
  CHECK(r.publications >= 10);
  CHECK(r.items_added >= 10 * cfg.adds_per_publish);
  CHECK(r.items_removed >= 10 * cfg.removes_per_publish);
  CHECK(r.distinct_versions_served >= 2);
  // Every generation pinned by a run was freed when the runs ended: only the current one is left.
  CHECK(r.live_generations_after == 1);
}
