// SPDX-License-Identifier: Apache-2.0
// recpipe benchmark: publishing a new version of a large embedding table (issue 9) with
// train::table_publisher (copy-on-write row blocks) against a full copy of the table.
//
// Protocol: a train::fixed_table of --rows x --dim fp32 rows (default 4,194,304 x 64 = 1 GiB,
// row SGD); the first version is a full copy. Then --rounds times: an optimizer step changes
// --changed distinct random rows (apply, which records the dirty rows), the next version is
// published while the previous one is still alive, and we record the publication's wall time,
// the bytes it copied plus its block-pointer vector (what the two live versions hold beyond one
// table: the extra memory), and the process's resident-set growth across the publication (a
// measurement of the same thing, page-granular). The previous version is then released. Repeated
// for each --blocks size. The baseline is a full copy of the weights into a fresh buffer (what a
// publication costs without versions: time of the copy, and one more table of memory).
// Before timing, every version is checked against the training table row by row.
//
// Wall times on a shared machine include preemption: the CPU time of the publishing thread (user +
// system, so page faults count) is printed beside them.
// Usage: bench_publish_cost [--rows 4194304] [--dim 64] [--changed 10000] [--rounds 7]
//        [--blocks 8,16,32,64] [--seed 1]
// Output: `case | ours | peer | ratio | fraction of ceiling` lines (ours = publish, peer = full
// copy; times in ms), then the memory of each case.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include <time.h>
#include <unistd.h>

#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/versioned_table.hpp>

namespace train = recpipe::train;
using recpipe::id_type;

namespace {
double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
// CPU time of this thread (user + system: page faults count, preemption by other processes on a
// shared machine does not).
double cpu_s() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

std::vector<std::size_t> parse_list(const std::string& text) {
  std::vector<std::size_t> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoul(item));
  return out;
}

bool equal_rows(const train::table_version& v, const train::fixed_table& t) {
  for (std::size_t r = 0; r < t.rows(); ++r)
    if (std::memcmp(v.row_unchecked(r).data(), t.weights().row(r).data(), t.dim() * sizeof(float)) != 0) return false;
  return true;
}
}  // namespace

int main(int argc, char** argv) {
  std::size_t rows = 4194304, dim = 64, changed = 10000, rounds = 7, seed = 1;
  std::vector<std::size_t> blocks = {8, 16, 32, 64};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--rows") rows = std::stoul(value);
    else if (key == "--dim") dim = std::stoul(value);
    else if (key == "--changed") changed = std::stoul(value);
    else if (key == "--rounds") rounds = std::stoul(value);
    else if (key == "--blocks") blocks = parse_list(value);
    else if (key == "--seed") seed = std::stoul(value);
    else {
      std::fprintf(stderr, "bench_publish_cost: unknown option %s\n", key.c_str());
      return 2;
    }
  }
  changed = std::min(changed, rows);
  const double table_mib = static_cast<double>(rows * dim * sizeof(float)) / (1 << 20);
  std::printf("table %zu x %zu fp32 (%.0f MiB), %zu rows changed per version, %zu publications per case\n", rows, dim,
              table_mib, changed, rounds);

  const double t0 = now_s();
  train::fixed_table table({.rows = rows, .dim = dim, .init = {train::row_init::distribution::uniform, 0.1f, seed},
                            .name = "bench"},
                           std::make_shared<train::row_sgd>(0.01));
  std::printf("table initialised in %.1f s\n", now_s() - t0);

  // Baseline: a full copy of the weights (the new version without sharing).
  std::vector<double> full_ms, full_cpu_ms;
  for (int i = 0; i < 3; ++i) {
    const double start = now_s(), start_cpu = cpu_s();
    std::unique_ptr<float[]> copy(new float[rows * dim]);
    std::memcpy(copy.get(), table.weights().data(), rows * dim * sizeof(float));
    full_ms.push_back((now_s() - start) * 1e3);
    full_cpu_ms.push_back((cpu_s() - start_cpu) * 1e3);
    if (copy[rows * dim - 1] != table.weights().data()[rows * dim - 1]) return 1;
  }
  const double full = median(full_ms), full_cpu = median(full_cpu_ms);
  const double full_bytes = static_cast<double>(rows * dim * sizeof(float));

  std::mt19937_64 rng(seed);
  std::vector<id_type> ids;
  recpipe::matrix<float> grads(changed, dim);
  std::fill(grads.data(), grads.data() + changed * dim, 0.5f);
  bool all_ok = true;
  std::printf("case | ours (ms, median wall) | peer: full copy (ms) | ratio | extra memory: ours vs a full copy\n");
  for (std::size_t block_rows : blocks) {
    train::table_publisher publisher({.block_rows = block_rows});
    table.mark_all_dirty();
    std::shared_ptr<const train::table_version> previous = publisher.publish(table);
    const double first_ms = publisher.last_stats().seconds * 1e3;
    std::vector<double> ms, cpu_ms, rss_growth;
    std::vector<std::size_t> extra, copied_blocks;
    for (std::size_t round = 0; round < rounds; ++round) {
      std::unordered_set<id_type> pick;
      while (pick.size() < changed) pick.insert(static_cast<id_type>(rng() % rows));
      ids.assign(pick.begin(), pick.end());
      table.optimizer().begin_step();
      table.apply(ids, grads.view());
      const std::size_t rss_before = resident_bytes();
      const double start_cpu = cpu_s();
      std::shared_ptr<const train::table_version> next = publisher.publish(table);
      cpu_ms.push_back((cpu_s() - start_cpu) * 1e3);
      const std::size_t rss_after = resident_bytes();  // both versions alive here
      ms.push_back(publisher.last_stats().seconds * 1e3);
      extra.push_back(publisher.last_stats().extra_bytes());
      copied_blocks.push_back(publisher.last_stats().copied_blocks);
      rss_growth.push_back(static_cast<double>(rss_after) - static_cast<double>(rss_before));
      if (round == 0 && !equal_rows(*next, table)) {
        std::fprintf(stderr, "bench_publish_cost: version %llu differs from the table\n",
                     static_cast<unsigned long long>(next->version()));
        all_ok = false;
      }
      previous = std::move(next);  // the old version goes; its replaced blocks are freed
    }
    const double ours = median(ms);
    const double extra_mib = static_cast<double>(extra[extra.size() / 2]) / (1 << 20);
    std::printf("publish %zu of %zu rows, blocks of %zu rows | %.2f | %.1f | %.4f | %.1f MiB (%.2f%% of a full copy; "
                "%zu blocks copied, pointer vector %.1f MiB; RSS growth %.1f MiB: new blocks come from those the released version freed)\n",
                changed, rows, block_rows, ours, full, ours / full, extra_mib,
                100.0 * static_cast<double>(extra[extra.size() / 2]) / full_bytes, copied_blocks[copied_blocks.size() / 2],
                static_cast<double>(publisher.last_stats().pointer_bytes) / (1 << 20), median(rss_growth) / (1 << 20));
    std::printf("  publication CPU time median %.2f ms (full copy %.1f ms); wall min %.2f max %.2f ms; first (full) "
                "publication %.1f ms\n",
                median(cpu_ms), full_cpu, *std::min_element(ms.begin(), ms.end()), *std::max_element(ms.begin(), ms.end()),
                first_ms);
  }
  std::printf("full copy: %.1f ms and %.0f MiB more while both versions are alive\n", full, table_mib);
  return all_ok ? 0 : 1;
}
