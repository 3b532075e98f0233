// SPDX-License-Identifier: Apache-2.0
// Serving latency while the index and the feature stores are updated in place (issue 9, "fresh
// items in the live index"). Two threads run batch-1 searches (or lookups) back to back; we report
// p50/p99/p99.9 with no writer, with a writer at a fixed rate and with a writer at full speed.
//   ./scripts/bench index-add                      # N = 200,000 items
//   ./scripts/bench index-add --n 1000000          # the target size
// Flags: --n items, --dim, --m, --ef, --ef-construction, --seconds per phase, --rate adds/s,
//        --build-threads, --users (feature store size), --lookup-only 1 (only the single-threaded
//        lookup cost, e.g. to compare two versions of feature_store).
#include <recpipe/recpipe.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <time.h>

using namespace recpipe;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  std::size_t n = 200'000, dim = 64, m = 16, ef = 64, ef_construction = 100, rate = 1000, build_threads = 0;
  std::size_t users = 100'000;
  double seconds = 5.0;
  bool lookup_only = false;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const double value = std::atof(argv[i + 1]);
    if (flag == "--n") o.n = static_cast<std::size_t>(value);
    else if (flag == "--dim") o.dim = static_cast<std::size_t>(value);
    else if (flag == "--m") o.m = static_cast<std::size_t>(value);
    else if (flag == "--ef") o.ef = static_cast<std::size_t>(value);
    else if (flag == "--ef-construction") o.ef_construction = static_cast<std::size_t>(value);
    else if (flag == "--seconds") o.seconds = value;
    else if (flag == "--rate") o.rate = static_cast<std::size_t>(value);
    else if (flag == "--build-threads") o.build_threads = static_cast<std::size_t>(value);
    else if (flag == "--users") o.users = static_cast<std::size_t>(value);
    else if (flag == "--lookup-only") o.lookup_only = value != 0;
    else {
      std::fprintf(stderr, "index_updates: unknown flag %s\n", flag.c_str());
      std::exit(2);
    }
  }
  return o;
}

matrix<float> random_rows(std::size_t rows, std::size_t cols, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  matrix<float> m(rows, cols);
  for (auto& x : m.values()) x = dist(rng);
  return m;
}

struct latency {
  double p50 = 0, p99 = 0, p999 = 0, max = 0;
  std::size_t count = 0;
};
latency summarize(std::vector<double> us) {
  latency l;
  if (us.empty()) return l;
  std::sort(us.begin(), us.end());
  const auto at = [&](double q) { return us[std::min(us.size() - 1, static_cast<std::size_t>(q * static_cast<double>(us.size())))]; };
  l.p50 = at(0.5);
  l.p99 = at(0.99);
  l.p999 = at(0.999);
  l.max = us.back();
  l.count = us.size();
  return l;
}

// Runs `readers` threads calling read(thread, i) back to back for `seconds` while `write` runs on
// another thread (write gets a stop flag and returns the number of writes it did).
double thread_cpu_us() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) * 1e-3;
}

// On-CPU time per request of the last measure(..., with_cpu = true): it leaves out the time a
// reader waits for a core (the writer and other processes share them), and lock waits too.
latency last_cpu;

template <class Read, class Write>
std::pair<latency, std::size_t> measure(double seconds, int readers, Read&& read, Write&& write, bool with_cpu = false) {
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> samples(static_cast<std::size_t>(readers));
  std::vector<std::vector<double>> cpu(static_cast<std::size_t>(readers));
  std::size_t writes = 0;
  std::thread writer([&] { writes = write(stop); });
  std::vector<std::thread> pool;
  for (int t = 0; t < readers; ++t)
    pool.emplace_back([&, t] {
      auto& mine = samples[static_cast<std::size_t>(t)];
      auto& mine_cpu = cpu[static_cast<std::size_t>(t)];
      mine.reserve(1 << 20);
      for (std::size_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        const double cpu_start = with_cpu ? thread_cpu_us() : 0.0;
        const auto start = clock_type::now();
        read(t, i);
        mine.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - start).count());
        if (with_cpu) mine_cpu.push_back(thread_cpu_us() - cpu_start);
      }
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop.store(true);
  for (auto& t : pool) t.join();
  writer.join();
  std::vector<double> all, all_cpu;
  for (auto& s : samples) all.insert(all.end(), s.begin(), s.end());
  for (auto& s : cpu) all_cpu.insert(all_cpu.end(), s.begin(), s.end());
  last_cpu = summarize(std::move(all_cpu));
  return {summarize(std::move(all)), writes};
}

// A writer calling `op(k)` `rate` times per second (0: as fast as it can) until stopped.
template <class Op>
auto paced_writer(std::size_t rate, Op op) {
  return [rate, op](std::atomic<bool>& stop) mutable {
    std::size_t done = 0;
    const auto start = clock_type::now();
    while (!stop.load(std::memory_order_relaxed)) {
      if (rate > 0) {
        const auto due = start + std::chrono::duration_cast<clock_type::duration>(
                                     std::chrono::duration<double>(static_cast<double>(done) / static_cast<double>(rate)));
        if (clock_type::now() < due) {
          std::this_thread::sleep_until(std::min(due, clock_type::now() + std::chrono::milliseconds(5)));
          continue;
        }
      }
      op(done);
      ++done;
    }
    return done;
  };
}

void print_row(const char* name, const latency& l, std::size_t writes, double seconds, const latency& base) {
  std::printf("%-46s | %8.1f | %8.1f | %8.1f | %8.1f | %9zu | %10.0f | %5.2fx\n", name, l.p50, l.p99, l.p999, l.max, l.count,
              static_cast<double>(writes) / seconds, base.p99 > 0 ? l.p99 / base.p99 : 1.0);
}
latency base_cpu;
void print_cpu_row(const latency& l) {
  std::printf("%-46s | %8.1f | %8.1f | %8.1f | %8.1f | %9s | %10s | %5.2fx\n", "   on-CPU time per search", l.p50, l.p99, l.p999,
              l.max, "", "", base_cpu.p99 > 0 ? l.p99 / base_cpu.p99 : 1.0);
}

void print_header(const char* what) {
  std::printf("\n%-46s | %8s | %8s | %8s | %8s | %9s | %10s | %s\n", what, "p50 us", "p99 us", "p99.9 us", "max us",
              "requests", "writes/s", "p99 vs no writer");
}

}  // namespace

// Single-threaded lookup cost per row (the shared lock per row is the price of in-place updates):
// best of 5 runs of 20,000 calls of 256 random users each.
template <class Stage, class Batches>
void single_threaded_lookup(const Stage& stage, const Batches& b, std::size_t dim) {
  for (int warm = 0; warm < 100; ++warm) (void)stage(b[static_cast<std::size_t>(warm) % b.size()]);
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const int calls = 20000;
    const auto start = clock_type::now();
    for (int i = 0; i < calls; ++i) (void)stage(b[static_cast<std::size_t>(i) % b.size()]);
    best = std::min(best, std::chrono::duration<double, std::nano>(clock_type::now() - start).count() / (calls * 256.0));
  }
  std::printf("\nsingle-threaded lookup: %.1f ns per row (best of 5; 256-row calls, dim %zu)\n", best, dim);
}

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  if (o.lookup_only) {
    const auto rows = random_rows(o.users, o.dim, 1);
    feature_store<col::user_id, col::user_embedding> users(o.dim);
    for (std::size_t u = 0; u < o.users; ++u) users.insert(static_cast<id_type>(u), rows.row(u));
    std::mt19937 rng(3);
    std::uniform_int_distribution<std::size_t> pick(0, o.users - 1);
    std::vector<batch<col::user_id>> batches;
    for (std::size_t i = 0; i < 1024; ++i) {
      std::vector<id_type> many(256);
      for (auto& id : many) id = static_cast<id_type>(pick(rng));
      batches.push_back(make_batch<col::user_id>(many));
    }
    single_threaded_lookup(lookup(users), batches, o.dim);
    return 0;
  }
  const std::size_t hw = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t build_threads = o.build_threads ? o.build_threads : hw;
  std::printf("index_updates: N=%zu items, dim=%zu, M=%zu, ef=%zu, ef_construction=%zu, %g s per phase, "
              "2 serving threads at batch 1, %zu hardware threads\n",
              o.n, o.dim, o.m, o.ef, o.ef_construction, o.seconds, hw);

  // Items arriving while serving: at most a full-speed writer's worth per phase; capacity is
  // reserved for them up front so that no phase measures a growth.
  const std::size_t extra = std::max<std::size_t>(200'000, o.rate * static_cast<std::size_t>(o.seconds + 1) * 4);
  const auto items = random_rows(o.n + extra, o.dim, 1);
  const auto queries = random_rows(4096, o.dim, 2);
  cpu::hnsw_index index(o.dim, metric::inner_product, o.n + extra, o.m, o.ef_construction, 42);
  std::vector<id_type> ids(o.n);
  for (std::size_t i = 0; i < o.n; ++i) ids[i] = static_cast<id_type>(i);
  const auto build_start = clock_type::now();
  index.add(ids, items.view().middle_rows(0, o.n), build_threads);
  const double build_s = std::chrono::duration<double>(clock_type::now() - build_start).count();
  std::printf("built %zu items in %.1f s with %zu threads (%.0f items/s)\n", o.n, build_s, build_threads,
              static_cast<double>(o.n) / build_s);

  // Check before timing: a search returns k live ids with recall near exact search on a sample.
  {
    std::vector<id_type> got(10);
    std::vector<float> scores(10);
    std::size_t hits = 0;
    const std::size_t sample = 20;
    for (std::size_t q = 0; q < sample; ++q) {
      if (index.search(queries.row(q), 10, got, scores, o.ef) != 10) {
        std::fprintf(stderr, "index_updates: a search returned fewer than 10 results\n");
        return 1;
      }
      std::vector<std::pair<float, id_type>> exact(o.n);
      for (std::size_t i = 0; i < o.n; ++i) {
        float dot = 0;
        for (std::size_t j = 0; j < o.dim; ++j) dot += queries.row(q)[j] * items.row(i)[j];
        exact[i] = {-dot, static_cast<id_type>(i)};
      }
      std::partial_sort(exact.begin(), exact.begin() + 10, exact.end());
      for (std::size_t j = 0; j < 10; ++j) hits += std::count(got.begin(), got.end(), exact[j].second);
    }
    std::printf("recall@10 on %zu queries against exact search: %.3f\n", sample, static_cast<double>(hits) / (10.0 * sample));
  }

  const auto search = [&](int t, std::size_t i) {
    thread_local std::vector<id_type> out_ids(10);
    thread_local std::vector<float> out_scores(10);
    index.search(queries.row((i * 2 + static_cast<std::size_t>(t)) % queries.rows()), 10, out_ids, out_scores, o.ef);
  };
  std::atomic<std::size_t> next_item{o.n};
  const auto add_one = [&](std::size_t) {
    const std::size_t i = next_item.fetch_add(1);
    if (i >= items.rows()) return;  // out of prepared vectors: stop adding
    index.add(static_cast<id_type>(i), items.row(i));
  };
  std::size_t removed = 0;
  const auto add_and_remove = [&](std::size_t k) {
    add_one(k);
    index.remove(static_cast<id_type>(removed++ * 7 % o.n));  // an evicted item
  };

  print_header("hnsw_index search, k=10 (2 threads)");
  const auto none = [](std::atomic<bool>&) { return std::size_t{0}; };
  auto [base, base_writes] = measure(o.seconds, 2, search, none, true);
  base_cpu = last_cpu;
  print_row("no writer", base, base_writes, o.seconds, base);
  print_cpu_row(last_cpu);
  {
    auto [l, w] = measure(o.seconds, 2, search, paced_writer(o.rate, add_one), true);
    print_row(("writer adding " + std::to_string(o.rate) + " items/s").c_str(), l, w, o.seconds, base);
    print_cpu_row(last_cpu);
  }
  {
    auto [l, w] = measure(o.seconds, 2, search, paced_writer(o.rate / 2, add_and_remove), true);
    print_row(("writer adding+removing " + std::to_string(o.rate / 2) + "+" + std::to_string(o.rate / 2) + "/s").c_str(), l, w,
              o.seconds, base);
    print_cpu_row(last_cpu);
  }
  {
    auto [l, w] = measure(o.seconds, 2, search, paced_writer(0, add_one), true);
    print_row("writer adding at full speed", l, w, o.seconds, base);
    print_cpu_row(last_cpu);
  }
  {
    // Growth: one reserve() doubling the capacity while serving (copies outside the exclusive lock).
    double reserve_ms = 0;
    const std::size_t target = 2 * index.capacity();
    auto [l, w] = measure(o.seconds, 2, search, [&](std::atomic<bool>&) {
      std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds / 2));
      const auto start = clock_type::now();
      index.reserve(target);
      reserve_ms = std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
      return std::size_t{1};
    }, true);
    print_row("one capacity doubling (reserve) mid-phase", l, w, o.seconds, base);
    print_cpu_row(last_cpu);
    std::printf("  (reserve to %zu elements took %.1f ms in the writer; searches wait only for the pointer swap)\n", target,
                reserve_ms);
  }
  std::printf("index now holds %zu live items\n", index.size());

  // Feature store: per-user vectors overwritten in place while lookups read them.
  feature_store<col::user_id, col::user_embedding> users(o.dim);
  for (std::size_t u = 0; u < o.users; ++u) users.insert(static_cast<id_type>(u), items.row(u % items.rows()));
  const auto one_user = lookup(users);
  std::vector<batch<col::user_id>> singles, batches;
  std::mt19937 rng(3);
  std::uniform_int_distribution<std::size_t> pick(0, o.users - 1);
  for (std::size_t i = 0; i < 1024; ++i) {
    singles.push_back(make_batch<col::user_id>(std::vector<id_type>{static_cast<id_type>(pick(rng))}));
    std::vector<id_type> many(256);
    for (auto& id : many) id = static_cast<id_type>(pick(rng));
    batches.push_back(make_batch<col::user_id>(many));
  }
  const auto overwrite = [&](std::size_t k) {
    users.insert(static_cast<id_type>(k * 7919 % o.users), items.row(k % items.rows()));
  };
  for (const bool big : {false, true}) {
    const auto read = [&](int t, std::size_t i) {
      const auto& b = big ? batches : singles;
      const auto out = one_user(b[(i * 2 + static_cast<std::size_t>(t)) % b.size()]);
      if (out.get<col::user_embedding>().rows() == 0) std::abort();
    };
    print_header(big ? "feature_store lookup, 256 users per call (2 thr)" : "feature_store lookup, 1 user per call (2 thr)");
    auto [fbase, fw] = measure(o.seconds, 2, read, none);
    print_row("no writer", fbase, fw, o.seconds, fbase);
    {
      auto [l, w] = measure(o.seconds, 2, read, paced_writer(o.rate, overwrite));
      print_row(("writer overwriting " + std::to_string(o.rate) + " rows/s").c_str(), l, w, o.seconds, fbase);
    }
    {
      auto [l, w] = measure(o.seconds, 2, read, paced_writer(0, overwrite));
      print_row("writer overwriting at full speed", l, w, o.seconds, fbase);
    }
  }

  single_threaded_lookup(one_user, batches, o.dim);
  return 0;
}
