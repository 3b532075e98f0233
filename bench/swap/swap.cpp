// SPDX-License-Identifier: Apache-2.0
// ./scripts/bench swap [--seconds S] [--items N] [--threads T]: two serving threads run a full
// pipeline for S seconds alone, then S seconds while a trainer publishes a new version every 100 ms,
// adds 1,000 items per second to the live index, removes 100 per second and appends clicks to
// histories (tests/common/swap_stress.hpp). Prints latency with and without swaps and the
// correctness counters (failures, version mixes, removed items returned: all must be 0).
#include "common/swap_stress.hpp"

#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  recpipe::stress::swap_stress_config cfg;
  cfg.phase = std::chrono::seconds(30);
  cfg.items = 20000;
  cfg.build_threads = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--seconds" && i + 1 < argc) cfg.phase = std::chrono::milliseconds(static_cast<long>(std::stod(argv[++i]) * 1000));
    else if (arg == "--items" && i + 1 < argc) cfg.items = std::stoul(argv[++i]);
    else if (arg == "--threads" && i + 1 < argc) cfg.serving_threads = std::stoul(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--seconds S] [--items N] [--threads T]\n", argv[0]);
      return 2;
    }
  }
  std::printf("swap stress: %zu items (dim %zu), %zu users, %zu serving threads at batch 1, %.1f s per phase; "
              "trainer: a version every %lld ms, %zu adds, %zu removes, %zu clicks per version\n",
              cfg.items, cfg.dim, cfg.users, cfg.serving_threads, cfg.phase.count() / 1000.0,
              static_cast<long long>(cfg.publish_every.count()), cfg.adds_per_publish, cfg.removes_per_publish,
              cfg.clicks_per_publish);
  const auto r = recpipe::stress::run_swap_stress(cfg);
  std::printf("%-10s | %9s | %8s | %8s | %8s | %8s | %8s\n", "phase", "requests", "failures", "p50 us", "p99 us",
              "p99.9 us", "max us");
  for (const auto& [name, p] : {std::pair{"no swaps", r.quiet}, std::pair{"swapping", r.swapping}})
    std::printf("%-10s | %9llu | %8llu | %8.1f | %8.1f | %8.1f | %8.0f\n", name,
                static_cast<unsigned long long>(p.requests), static_cast<unsigned long long>(p.failures), p.p50_us,
                p.p99_us, p.p999_us, p.max_us);
  std::printf("p99 ratio swapping / no swaps: %.2f\n", r.quiet.p99_us > 0 ? r.swapping.p99_us / r.quiet.p99_us : 0.0);
  std::printf("publications %llu (build + commit mean %.0f us, max %.0f us); items added %llu, removed %llu; clicks "
              "%llu; latest version served %llu\n",
              static_cast<unsigned long long>(r.publications), r.publish_mean_us, r.publish_max_us,
              static_cast<unsigned long long>(r.items_added), static_cast<unsigned long long>(r.items_removed),
              static_cast<unsigned long long>(r.clicks), static_cast<unsigned long long>(r.distinct_versions_served));
  std::printf("version mixes %llu, removed items returned %llu, live generations after %zu\n",
              static_cast<unsigned long long>(r.version_mixes), static_cast<unsigned long long>(r.removed_returned),
              r.live_generations_after);
  const bool ok = r.quiet.failures == 0 && r.swapping.failures == 0 && r.version_mixes == 0 && r.removed_returned == 0;
  if (!ok) std::printf("FAILED: %s\n", r.first_failure.c_str());
  return ok ? 0 : 1;
}
