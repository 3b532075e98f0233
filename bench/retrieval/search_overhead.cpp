// SPDX-License-Identifier: Apache-2.0
// recpipe's HNSW search against a bare hnswlib searchKnn over the same stored graph (issue 11:
// "retrieve at most 3% slower than a bare hnswlib searchKnn call"), and the retrieve stage
// against the index call it makes. 100,000 items of dim 64 (synthetic catalog), M 16,
// ef_construction 200, inner product through the L2 reduction (the default), k 500, ef 600,
// 1 thread. The bare hnswlib graph is the body of recpipe's own file (the same graph), searched
// with hnsw_space(dim, inner_product): -q.x over the first dim stored values, the distance
// recpipe's search ranks by, so only the machinery differs.
// Interleaved A B A B (order alternating), each repetition timing all queries; median of
// --reps repetitions (>= 20) with the spread.
//   ./scripts/bench retrieval                      (also runs the recall curve)
//   build/bench/bench/retrieval/bench_search_overhead --items 100000 --reps 30 --data DIR
#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/io/synthetic_catalog.hpp>
#include <recpipe/stages/retrieve.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <vector>

using namespace recpipe;
using clock_type = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

struct options {
  std::size_t items = 100'000, dim = 64, queries = 200, reps = 30, k = 500, ef = 600, threads = 2;
  fs::path data = "build/bench/retrieval_data";
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--items") o.items = std::stoul(value);
    else if (flag == "--queries") o.queries = std::stoul(value);
    else if (flag == "--reps") o.reps = std::max<std::size_t>(std::stoul(value), 1);
    else if (flag == "--k") o.k = std::stoul(value);
    else if (flag == "--ef") o.ef = std::stoul(value);
    else if (flag == "--threads") o.threads = std::stoul(value);
    else if (flag == "--data") o.data = value;
    else {
      std::fprintf(stderr, "search_overhead: unknown flag %s\n", flag.c_str());
      std::exit(2);
    }
  }
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}
double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * double(v.size() - 1) + 0.5)];
}

// Interleaved A B / B A per repetition; each returns the mean microseconds per query of that rep.
template <class A, class B>
void compare(const char* name, const char* a_name, const char* b_name, std::size_t reps, A&& a, B&& b) {
  for (int warm = 0; warm < 2; ++warm) (void)a(), (void)b();
  std::vector<double> as, bs, ratios;
  for (std::size_t r = 0; r < reps; ++r) {
    double ta = 0, tb = 0;
    if (r % 2 == 0) {
      ta = a();
      tb = b();
    } else {
      tb = b();
      ta = a();
    }
    as.push_back(ta);
    bs.push_back(tb);
    ratios.push_back(ta / tb);
  }
  std::printf("%s | %s %.1f us [%.1f-%.1f] | %s %.1f us [%.1f-%.1f] | ratio %s/%s: median %.3f [p10 %.3f, p90 %.3f] (%+.1f%%)\n",
              name, a_name, median(as), quantile(as, 0.1), quantile(as, 0.9), b_name, median(bs), quantile(bs, 0.1),
              quantile(bs, 0.9), a_name, b_name, median(ratios), quantile(ratios, 0.1), quantile(ratios, 0.9),
              100 * (median(ratios) - 1));
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse(argc, argv);
  constexpr std::size_t dim = 64;
  fs::create_directories(opt.data);
  const std::string tag = std::to_string(opt.items);
  const fs::path index_path = opt.data / ("items_" + tag + ".hnsw");
  const fs::path hnswlib_path = opt.data / ("items_" + tag + ".hnswlib");

  io::synthetic_catalog_config cc;
  cc.items = opt.items;
  cc.users = opt.queries;
  cc.dim = dim;
  cc.seed = 42;
  const auto catalog = io::synthetic_catalog::generate(cc);
  auto t0 = clock_type::now();
  std::unique_ptr<cpu::hnsw_index> index_ptr;
  if (fs::exists(index_path)) {
    index_ptr = std::make_unique<cpu::hnsw_index>(cpu::hnsw_index::load(index_path));
  } else {
    index_ptr = std::make_unique<cpu::hnsw_index>(dim, metric::inner_product, opt.items, 16, 200, 100);
    std::vector<id_type> ids(opt.items);
    std::iota(ids.begin(), ids.end(), id_type{0});
    index_ptr->add(ids, catalog.item_vectors.view(), opt.threads);
    index_ptr->save(index_path);
    std::fprintf(stderr, "built the index: %.1f s\n", std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  cpu::hnsw_index& index = *index_ptr;
  index.set_ef(opt.ef);
  if (!fs::exists(hnswlib_path)) {  // hnswlib's own format: the body after recpipe's header
    std::ifstream in(index_path, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(detail::hnsw_file_header::size));
    std::ofstream out(hnswlib_path.string() + ".tmp", std::ios::binary);
    out << in.rdbuf();
    out.close();
    fs::rename(hnswlib_path.string() + ".tmp", hnswlib_path);
  }
  detail::hnsw_space space(dim, metric::inner_product);
  hnswlib::HierarchicalNSW<float> bare(&space, hnswlib_path.string(), false, opt.items);
  bare.setEf(opt.ef);

  const std::size_t nq = opt.queries, k = opt.k;
  std::vector<batch<col::user_embedding>> batches;
  for (std::size_t i = 0; i < nq; ++i) {
    matrix<float> q(1, dim);
    std::copy(catalog.user_vectors.row(i).begin(), catalog.user_vectors.row(i).end(), q.row(0).begin());
    batches.push_back(make_batch<col::user_embedding>(std::move(q)));
  }
  const auto stage = retrieve<col::user_embedding>(index, k);

  // Correctness first: same ids as searchKnn (the same walk over the same graph), scores = q.x.
  std::vector<id_type> ids(k), bare_ids(k);
  std::vector<float> scores(k), bare_scores(k);
  std::size_t same = 0, total = 0, stage_same = 0;
  for (std::size_t i = 0; i < nq; ++i) {
    const float* q = catalog.user_vectors.row(i).data();
    const std::size_t n = index.search(catalog.user_vectors.row(i), k, ids, scores, opt.ef);
    auto found = bare.searchKnn(q, k);
    std::set<id_type> theirs;
    for (; !found.empty(); found.pop()) theirs.insert(static_cast<id_type>(found.top().second));
    for (std::size_t j = 0; j < n; ++j) same += theirs.count(ids[j]);
    total += k;
    const auto out = batches[i] >> stage;
    const auto row = out.get<col::candidates>().row(0);
    for (std::size_t j = 0; j < row.size() && j < n; ++j) stage_same += row[j] == ids[j];
  }
  std::printf("check: search vs searchKnn: %.4f of ids agree; stage vs search: %.4f identical\n",
              double(same) / double(total), double(stage_same) / double(total));
  if (same < total * 99 / 100 || stage_same < total * 99 / 100) {
    std::fprintf(stderr, "search_overhead: results differ: not timing\n");
    return 1;
  }

  const auto per_query = [&](auto&& body) {
    return [&, body] {
      const auto start = clock_type::now();
      for (std::size_t i = 0; i < nq; ++i) body(i);
      return std::chrono::duration<double, std::micro>(clock_type::now() - start).count() / double(nq);
    };
  };
  const auto run_bare = per_query([&](std::size_t i) {
    auto found = bare.searchKnn(catalog.user_vectors.row(i).data(), k);
    for (std::size_t j = found.size(); j-- > 0; found.pop()) {  // best last in the heap: fill from the back
      bare_ids[j] = static_cast<id_type>(found.top().second);
      bare_scores[j] = -found.top().first;
    }
  });
  const auto run_search = per_query([&](std::size_t i) { (void)index.search(catalog.user_vectors.row(i), k, ids, scores, opt.ef); });
  const auto run_stage = per_query([&](std::size_t i) { (void)(batches[i] >> stage); });

  std::printf("search overhead: %zu items of dim %zu, M 16, k %zu, ef %zu, 1 thread, %zu queries x %zu reps\n",
              opt.items, dim, k, opt.ef, nq, opt.reps);
  compare("hnsw_index::search vs hnswlib searchKnn", "search", "searchKnn", opt.reps, run_search, run_bare);
  compare("retrieve stage vs hnsw_index::search", "stage", "search", opt.reps, run_stage, run_search);
  compare("retrieve stage vs hnswlib searchKnn", "stage", "searchKnn", opt.reps, run_stage, run_bare);
  return 0;
}
