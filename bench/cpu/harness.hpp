// SPDX-License-Identifier: Apache-2.0
// recpipe benchmarks: interleaved ours-vs-peer timing (A B A B ...), medians with spread, and the results table.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <benchmark/benchmark.h>
#include <cblas.h>

#include <recpipe/cpu/threads.hpp>

namespace bench {

struct stats {
  double median_ms = 0, p25_ms = 0, p75_ms = 0;
};
inline stats summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  const auto at = [&](double q) { return ms[static_cast<std::size_t>(q * static_cast<double>(ms.size() - 1) + 0.5)]; };
  return {at(0.5), at(0.25), at(0.75)};
}

inline double time_ms(const std::function<void(int)>& f, int rep) {
  const auto start = std::chrono::steady_clock::now();
  f(rep);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

struct row {
  std::string name;
  int threads = 1;
  stats ours, peer, ceiling;
  bool has_ceiling = false;
  std::string note;
};

//! Runs ours, peer (and an optional ceiling) interleaved for `reps` repetitions after 2 warm-ups.
//! Each callable receives the repetition index (used to pick a fresh input set for cold runs).
//!
//! With one thread the three alternate call by call (A B C A B C ...). With several, LibTorch's
//! pools keep spinning after each call (libgomp for GOMP_SPINCOUNT iterations, OpenBLAS's
//! workers for 2^28 cycles, about 0.1 s, before they sleep), so a call that follows one of theirs
//! shares the cores with busy-waiting threads. There the sides alternate in blocks of 3 calls,
//! each block after a 150 ms pause (not timed) that lets the other side's threads go to sleep:
//! every side is timed in its own steady state, as it would run in a service of its own.
inline row compare(std::string name, int threads, int reps, const std::function<void(int)>& ours,
                   const std::function<void(int)>& peer, const std::function<void(int)>& ceiling = {},
                   std::string note = {}) {
  at::set_num_threads(threads);
  recpipe::cpu::set_num_threads(threads);
  for (int w = 0; w < 2; ++w) {
    ours(reps + 3 * w);
    peer(reps + 3 * w + 1);
    if (ceiling) ceiling(reps + 3 * w + 2);
  }
  std::vector<double> a, b, c;
  const int block = threads > 1 ? 3 : 1;
  const auto settle = [&] {
    if (threads > 1) std::this_thread::sleep_for(std::chrono::milliseconds(150));
  };
  for (int first = 0; first < reps; first += block) {
    const int last = std::min(reps, first + block);
    settle();
    for (int r = first; r < last; ++r) a.push_back(time_ms(ours, 3 * r));
    settle();
    for (int r = first; r < last; ++r) b.push_back(time_ms(peer, 3 * r + 1));
    if (!ceiling) continue;
    settle();
    for (int r = first; r < last; ++r) c.push_back(time_ms(ceiling, 3 * r + 2));
  }
  row out{std::move(name), threads, summarize(a), summarize(b), {}, static_cast<bool>(ceiling), std::move(note)};
  if (ceiling) out.ceiling = summarize(c);
  std::fprintf(stderr, "  done: %s (%d thread%s)\n", out.name.c_str(), threads, threads > 1 ? "s" : "");
  return out;
}

inline std::string fmt_ms(const stats& s) {
  char buffer[96];
  const double spread = s.median_ms > 0 ? (s.p75_ms - s.p25_ms) / s.median_ms * 100 : 0;
  std::snprintf(buffer, sizeof buffer, "%.3f ms (IQR %.0f%%)", s.median_ms, spread);
  return buffer;
}

//! Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not recognise some AVX-512 Xeons (a VM that
//! reports "Intel(R) Xeon(R) Processor") and falls back to its Prescott (SSE3) kernels, 5-7x
//! slower; LibTorch uses the same OpenBLAS. OpenBLAS picks its core when it is loaded, so the
//! only fix is the environment: re-run this binary with OPENBLAS_CORETYPE=SkylakeX (both peers
//! benefit equally). Set OPENBLAS_CORETYPE yourself to override.
inline void ensure_openblas_core(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  if (std::string(openblas_get_corename()) == "Prescott" && __builtin_cpu_supports("avx512f")) {
    ::setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    ::execv("/proc/self/exe", argv);  // returns only on failure: then run with the slow core
  }
}

//! One line describing the BLAS setup, printed above every table.
inline void print_setup() {
  std::printf("\nOpenBLAS core: %s (OPENBLAS_CORETYPE=%s); LibTorch %s\n", openblas_get_corename(),
              std::getenv("OPENBLAS_CORETYPE") ? std::getenv("OPENBLAS_CORETYPE") : "unset", TORCH_VERSION);
}

//! Prints `case | ours | peer | ratio | fraction of ceiling` (ratio = peer / ours, > 1: we are faster).
inline void print_table(const std::string& title, const std::vector<row>& rows) {
  print_setup();
  std::printf("\n### %s\n\n| case | threads | ours | peer | ratio | fraction of ceiling | note |\n|---|---|---|---|---|---|---|\n",
              title.c_str());
  for (const auto& r : rows) {
    char ratio[32], ceiling[64] = "-";
    std::snprintf(ratio, sizeof ratio, "%.2fx", r.peer.median_ms / r.ours.median_ms);
    if (r.has_ceiling)
      std::snprintf(ceiling, sizeof ceiling, "%.0f%% (ceiling %.3f ms)", r.ceiling.median_ms / r.ours.median_ms * 100,
                    r.ceiling.median_ms);
    std::printf("| %s | %d | %s | %s | %s | %s | %s |\n", r.name.c_str(), r.threads, fmt_ms(r.ours).c_str(),
                fmt_ms(r.peer).c_str(), ratio, ceiling, r.note.c_str());
  }
  std::fflush(stdout);
}

//! Aborts the benchmark (never time a wrong answer).
inline void require(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "benchmark self-check failed: %s\n", what.c_str());
    std::exit(1);
  }
}

inline double max_rel(const torch::Tensor& ours, const torch::Tensor& theirs) {
  const auto a = ours.to(torch::kDouble), b = theirs.to(torch::kDouble);
  return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-30);
}

//! Repetitions: RECPIPE_BENCH_REPS or 21.
inline int reps() {
  const char* env = std::getenv("RECPIPE_BENCH_REPS");
  return env ? std::max(3, std::atoi(env)) : 21;
}

//! Also runs the registered Google Benchmark cases when any --benchmark_* flag is given.
inline void run_google_benchmark(int argc, char** argv) {
  bool wanted = false;
  for (int i = 1; i < argc; ++i) wanted |= std::string(argv[i]).rfind("--benchmark", 0) == 0;
  if (!wanted) return;
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}

}  // namespace bench
