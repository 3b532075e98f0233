// SPDX-License-Identifier: Apache-2.0
// Recall of HNSW inner-product search against exact search, and its latency, as a curve over ef
// (issue 11, "Retrieval that keeps its recall"). Two graphs over the same catalog: the L2
// reduction of inner product (hnsw_options::mips_reduction, the default) and hnswlib's own
// inner-product graph ("direct", the peer). For each ef: recall@10/100/500 of search(k, ef)
// against exact_index and the single-thread latency of those searches.
//   ./scripts/bench retrieval                         # quickstart catalog: 100,000 items, dim 32
//   ./scripts/bench retrieval --items 1000000 --dim 64 --out build/retrieval-1m
// Flags: --items, --dim, --users (queries are the first --queries users), --queries, --m,
//        --ef-construction, --threads (build), --headroom, --efs 10,20,...,
//        --out DIR (writes curve.dat, curve.gp and, with gnuplot, curve.png), --direct 0 (skip the peer)
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/io/synthetic_catalog.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

using namespace recpipe;
using clock_type = std::chrono::steady_clock;

namespace {

struct options {
  std::size_t items = 100'000, dim = 32, users = 10'000, queries = 500, m = 32, ef_construction = 200, threads = 2;
  float headroom = 1.25f;
  std::vector<std::size_t> efs{16, 32, 64, 128, 256, 400, 600, 800, 1200};
  std::string out;
  bool direct = true;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--items") o.items = std::stoul(value);
    else if (flag == "--dim") o.dim = std::stoul(value);
    else if (flag == "--users") o.users = std::stoul(value);
    else if (flag == "--queries") o.queries = std::stoul(value);
    else if (flag == "--m") o.m = std::stoul(value);
    else if (flag == "--ef-construction") o.ef_construction = std::stoul(value);
    else if (flag == "--threads") o.threads = std::stoul(value);
    else if (flag == "--headroom") o.headroom = std::stof(value);
    else if (flag == "--out") o.out = value;
    else if (flag == "--direct") o.direct = value != "0";
    else if (flag == "--efs") {
      o.efs.clear();
      std::stringstream list(value);
      for (std::string item; std::getline(list, item, ',');) o.efs.push_back(std::stoul(item));
    } else {
      std::fprintf(stderr, "recall_curve: unknown flag %s\n", flag.c_str());
      std::exit(2);
    }
  }
  o.queries = std::min(o.queries, o.users);
  return o;
}

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

struct point {
  std::size_t ef = 0;
  double recall[3] = {0, 0, 0};
  double p50_us[3] = {0, 0, 0}, mean_us[3] = {0, 0, 0};
};
constexpr std::size_t ks[3] = {10, 100, 500};

struct truth {
  matrix<id_type> ids;  // queries x 500
};

cpu::hnsw_index build(const options& o, const io::synthetic_catalog& catalog, const std::vector<id_type>& ids, bool reduce) {
  cpu::hnsw_index index(o.dim, metric::inner_product,
                        cpu::hnsw_options{.capacity = o.items, .m = o.m, .ef_construction = o.ef_construction,
                                          .mips_reduction = reduce, .norm_headroom = o.headroom});
  const auto start = clock_type::now();
  double last = -1;
  index.add(ids, catalog.item_vectors.view(), o.threads, [&](std::size_t done, std::size_t total) {
    const double t = seconds_since(start);
    if (done == total || t - last >= 2.0) {  // a progress line at most every 2 s
      last = t;
      std::fprintf(stderr, "\r  building %s graph: %zu / %zu items (%.0f%%) in %.0f s, %.0f items/s   ",
                   reduce ? "reduced" : "direct", done, total, 100.0 * static_cast<double>(done) / static_cast<double>(total), t,
                   static_cast<double>(done) / std::max(t, 1e-9));
      if (done == total) std::fprintf(stderr, "\n");
    }
  });
  std::printf("  %s graph: %zu items built on %zu threads in %.1f s (max_norm %.3f, overflows %zu)\n",
              reduce ? "reduced (L2 reduction)" : "direct (inner-product graph)", index.size(), o.threads,
              seconds_since(start), static_cast<double>(index.max_norm()), index.norm_overflows());
  return index;
}

// Scores returned by the index must be the exact inner products of the returned ids, best first.
bool check(const cpu::hnsw_index& index, const io::synthetic_catalog& catalog, matrix_view<const float> queries) {
  std::vector<id_type> ids(500);
  std::vector<float> scores(500);
  for (std::size_t q = 0; q < std::min<std::size_t>(queries.rows(), 20); ++q) {
    const std::size_t n = index.search(queries.row(q), 500, ids, scores, 600);
    if (n != 500) return false;
    for (std::size_t i = 0; i < n; ++i) {
      double dot = 0;
      for (std::size_t d = 0; d < queries.cols(); ++d)
        dot += static_cast<double>(queries(q, d)) * catalog.item_vectors(static_cast<std::size_t>(ids[i]), d);
      if (std::abs(dot - static_cast<double>(scores[i])) > 1e-4 * std::max(1.0, std::abs(dot))) return false;
      if (i > 0 && scores[i] > scores[i - 1]) return false;
    }
  }
  return true;
}

std::vector<point> curve(const options& o, const cpu::hnsw_index& index, matrix_view<const float> queries, const truth& t) {
  std::vector<point> out;
  std::vector<id_type> ids(500);
  std::vector<float> scores(500);
  std::vector<double> us(queries.rows());
  for (const std::size_t ef : o.efs) {
    point p;
    p.ef = ef;
    for (std::size_t j = 0; j < 3; ++j) {
      const std::size_t k = ks[j];
      double total_recall = 0;
      for (std::size_t q = 0; q < queries.rows(); ++q) {
        const auto start = clock_type::now();
        const std::size_t n = index.search(queries.row(q), k, std::span<id_type>(ids.data(), k),
                                           std::span<float>(scores.data(), k), ef);
        us[q] = seconds_since(start) * 1e6;
        total_recall += cpu::recall(t.ids.row(q).first(k), std::span<const id_type>(ids.data(), n));
      }
      std::sort(us.begin(), us.end());
      p.recall[j] = total_recall / static_cast<double>(queries.rows());
      p.p50_us[j] = us[us.size() / 2];
      p.mean_us[j] = std::accumulate(us.begin(), us.end(), 0.0) / static_cast<double>(us.size());
    }
    out.push_back(p);
  }
  return out;
}

void print_table(const char* name, const std::vector<point>& points) {
  std::printf("\n%s\n| ef | recall@10 | p50 us (k 10) | recall@100 | p50 us (k 100) | recall@500 | p50 us (k 500) |\n"
              "|---:|---:|---:|---:|---:|---:|---:|\n", name);
  for (const point& p : points)
    std::printf("| %zu | %.4f | %.0f | %.4f | %.0f | %.4f | %.0f |\n", p.ef, p.recall[0], p.p50_us[0], p.recall[1],
                p.p50_us[1], p.recall[2], p.p50_us[2]);
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  io::synthetic_catalog_config config;
  config.items = o.items;
  config.users = o.users;
  config.dim = o.dim;
  auto start = clock_type::now();
  const auto catalog = io::synthetic_catalog::generate(config);
  std::printf("recall_curve: synthetic catalog of %zu items, dim %zu (seed %llu) in %.1f s; %zu queries (user vectors); "
              "M %zu, ef_construction %zu, headroom %.2f\n",
              o.items, o.dim, static_cast<unsigned long long>(config.seed), seconds_since(start), o.queries, o.m,
              o.ef_construction, static_cast<double>(o.headroom));
  std::vector<id_type> ids(o.items);
  std::iota(ids.begin(), ids.end(), id_type{0});
  matrix<float> queries(o.queries, o.dim);
  for (std::size_t q = 0; q < o.queries; ++q) std::copy_n(catalog.user_vectors.row(q).begin(), o.dim, queries.row(q).begin());

  // Ground truth: exact top 500 (a GEMM per query block).
  start = clock_type::now();
  truth t{matrix<id_type>(o.queries, 500)};
  {
    cpu::exact_index exact(o.dim, metric::inner_product, o.items);
    exact.add(ids, catalog.item_vectors.view());
    matrix<float> scores(o.queries, 500);
    exact.search_batch(queries.view(), 500, t.ids.view(), scores.view());
  }
  std::printf("  exact top 500 for %zu queries in %.1f s\n", o.queries, seconds_since(start));

  std::vector<point> reduced, direct;
  {
    const cpu::hnsw_index index = build(o, catalog, ids, true);
    if (!check(index, catalog, queries.view())) {
      std::fprintf(stderr, "recall_curve: the reduced graph returned scores that are not the exact inner products\n");
      return 1;
    }
    reduced = curve(o, index, queries.view(), t);
  }
  if (o.direct) {
    const cpu::hnsw_index index = build(o, catalog, ids, false);
    if (!check(index, catalog, queries.view())) {
      std::fprintf(stderr, "recall_curve: the direct graph returned scores that are not the exact inner products\n");
      return 1;
    }
    direct = curve(o, index, queries.view(), t);
  }
  print_table("L2 reduction (default)", reduced);
  if (o.direct) print_table("direct inner-product graph (hnswlib's own, the peer)", direct);

  // The summary lines in the benchmarks' common format: recall at the quickstart's ef 600.
  std::printf("\n| case | ours | peer | ratio | fraction of ceiling |\n|---|---:|---:|---:|---:|\n");
  for (std::size_t i = 0; i < reduced.size(); ++i) {
    if (reduced[i].ef != 600) continue;
    for (std::size_t j = 0; j < 3; ++j) {
      const double peer = o.direct ? direct[i].recall[j] : 0;
      std::printf("| recall@%zu, ef 600, %zu items | %.4f | %.4f | %.3f | %.3f |\n", ks[j], o.items, reduced[i].recall[j], peer,
                  peer > 0 ? reduced[i].recall[j] / peer : 0.0, reduced[i].recall[j]);
    }
    std::printf("| p50 latency of k 500, ef 600 (us) | %.0f | %.0f | %.3f | - |\n", reduced[i].p50_us[2],
                o.direct ? direct[i].p50_us[2] : 0.0, o.direct ? reduced[i].p50_us[2] / direct[i].p50_us[2] : 0.0);
  }

  if (!o.out.empty()) {
    std::filesystem::create_directories(o.out);
    const std::filesystem::path dir(o.out);
    std::ofstream dat(dir / "curve.dat");
    const char* names[2] = {"reduction", "direct"};
    for (int g = 0; g < (o.direct ? 2 : 1); ++g)
      for (std::size_t j = 0; j < 3; ++j) {
        dat << "# " << names[g] << " recall@" << ks[j] << ": p50 us, recall, ef\n";
        for (const point& p : g == 0 ? reduced : direct) dat << p.p50_us[j] << ' ' << p.recall[j] << ' ' << p.ef << '\n';
        dat << "\n\n";
      }
    std::ofstream gp(dir / "curve.gp");
    gp << "set terminal pngcairo size 900,560 font 'sans,11' noenhanced\nset output 'curve.png'\n"
       << "set title 'HNSW inner-product recall vs latency over ef (" << o.items << " items, dim " << o.dim << ", M "
       << o.m << ")'\nset xlabel 'median latency per query, one thread (us, log scale)'\nset logscale x\n"
       << "set ylabel 'recall against exact search'\nset yrange [0:1.02]\nset grid\nset key bottom right\n"
       << "plot ";
    const char* colours[3] = {"#1f77b4", "#2ca02c", "#d62728"};
    for (int g = 0; g < (o.direct ? 2 : 1); ++g)
      for (std::size_t j = 0; j < 3; ++j)
        gp << (g + j ? ", \\\n     " : "") << "'curve.dat' index " << g * 3 + j << " using 1:2 with linespoints lw 2 pt "
           << (g == 0 ? 7 : 6) << " dt " << (g == 0 ? 1 : 2) << " lc rgb '" << colours[j] << "' title '" << (g == 0 ? "L2 reduction" : "direct IP graph") << " recall@" << ks[j] << "'";
    gp << "\n";
    gp.close();
    const std::string command = "cd '" + o.out + "' && gnuplot curve.gp 2>&1";
    if (std::system(command.c_str()) == 0) std::printf("\nwrote %s\n", (dir / "curve.png").string().c_str());
    else std::printf("\ngnuplot failed or is absent (apt-get install gnuplot-nox); %s is ready to plot\n",
                     (dir / "curve.gp").string().c_str());
  }
  return 0;
}
