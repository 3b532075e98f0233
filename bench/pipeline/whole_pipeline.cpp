// SPDX-License-Identifier: Apache-2.0
// The whole pipeline (issue 11): lookup the user -> retrieve 500 by HNSW -> filter the seen items
// -> lookup item features -> unroll -> score with a DCN-v2 -> top 10, over a synthetic catalog of
// 1,000,000 items of dim 64, against the same pipeline in Python (PyTorch + hnswlib, written the
// way a Merlin user writes operators) and Merlin Systems itself (LocalExecutor), in the same run.
//   ./scripts/bench pipeline [--items 100000] [--requests 2000] [--data DIR] [--no-peers]
// The catalog, the index (hnswlib's own format too, so every peer searches the same graph) and the
// DCN-v2 weights (safetensors, random with a fixed seed) are written to DIR once and reused.
// Peers are Python processes: RECPIPE_PYTHON_PEER (default /usr/bin/python3, Debian's torch 1.13
// and python3-hnswlib) and RECPIPE_MERLIN_PYTHON (the venv scripts/bench makes; unset: skipped).
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/cpu/threads.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/io/synthetic_catalog.hpp>
#include <recpipe/models/dcn_v2.hpp>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/score.hpp>
#include <recpipe/stages/unroll.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

using namespace recpipe;
using clock_type = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

constexpr std::size_t dim = 64, retrieve_k = 500, final_k = 10;
constexpr std::size_t check_requests = 200;  // requests whose top-10 every peer must reproduce

struct options {
  std::size_t items = 1'000'000, users = 10'000, requests = 2'000;
  std::size_t threads = 2, build_threads = 2;
  fs::path data = "build/bench/pipeline_data";
  bool peers = true;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--items") o.items = std::stoul(next());
    else if (a == "--users") o.users = std::stoul(next());
    else if (a == "--requests") o.requests = std::stoul(next());
    else if (a == "--data") o.data = next();
    else if (a == "--no-peers") o.peers = false;
    else {
      std::fprintf(stderr, "usage: bench_pipeline_whole [--items N] [--users N] [--requests N] [--data DIR] [--no-peers]\n");
      std::exit(2);
    }
  }
  return o;
}

// The request stream: request i asks for user (i * 7919) mod users, in every peer.
id_type user_of(std::size_t i, std::size_t users) { return static_cast<id_type>((i * 7919) % users); }

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
}

// DCN-v2 as the issue fixes it: x0 = [4 user features | 4 item features] of 16 dims each = 128,
// 2 low-rank cross layers of rank 32, deep 128-64, head to one logit (no sigmoid, so that random
// weights do not saturate scores into ties). PyTorch-default uniform init, fixed seed.
models::dcn_v2_config ranker_config() {
  models::dcn_v2_config c;
  c.dense_dim = 2 * dim;
  c.cross_layers = 2;
  c.rank = 32;
  c.deep = {128, 64};
  c.sigmoid = false;
  return c;
}

void write_ranker(const fs::path& path) {
  const auto c = ranker_config();
  std::mt19937_64 rng(7);
  io::safetensors_writer out;
  out.set_metadata("recpipe.model", "dcn_v2");
  out.set_metadata("recpipe.config", c.to_json().dump());
  const auto uniform = [&](std::string name, std::vector<std::size_t> shape, float bound) {
    std::uniform_real_distribution<float> u(-bound, bound);
    std::size_t n = 1;
    for (auto s : shape) n *= s;
    std::vector<float> v(n);
    for (auto& x : v) x = u(rng);
    out.add(std::move(name), std::span<const float>(v), std::move(shape));
  };
  const std::size_t d = c.input_dim();
  for (std::size_t l = 0; l < c.cross_layers; ++l) {
    const std::string base = "cross." + std::to_string(l) + ".";
    uniform(base + "down.weight", {c.rank, d}, 1.0f / std::sqrt(float(d)));
    uniform(base + "up.weight", {d, c.rank}, 1.0f / std::sqrt(float(c.rank)));
    uniform(base + "bias", {d}, 0.1f);
  }
  std::size_t width = d;
  for (std::size_t i = 0; i < c.deep.size(); ++i) {
    const std::string base = "deep.layers." + std::to_string(2 * i) + ".";
    uniform(base + "weight", {c.deep[i], width}, 1.0f / std::sqrt(float(width)));
    uniform(base + "bias", {c.deep[i]}, 1.0f / std::sqrt(float(width)));
    width = c.deep[i];
  }
  uniform("head.weight", {1, width}, 1.0f / std::sqrt(float(width)));
  uniform("head.bias", {1}, 1.0f / std::sqrt(float(width)));
  out.write(path);
}

// The scorer: the DCN-v2 over [unrolled user features | item features], all of a batch's
// candidates as one matrix.
struct dcn_scorer {
  using reads = columns<col::candidates, col::candidate_user_features, col::item_features>;
  const models::dcn_v2* model;

  template <class Batch>
  void score(const Batch& batch, std::span<float> out) const {
    const std::size_t n = batch.candidate_count();
    if (n == 0) return;
    const auto& user = batch.template get<col::candidate_user_features>();
    const auto& item = batch.template get<col::item_features>();
    const std::size_t width = user.cols() + item.cols();
    thread_local std::vector<float> x0;
    x0.resize(n * width);
    for (std::size_t c = 0; c < n; ++c) {
      float* row = x0.data() + c * width;
      std::copy(user.row(c).begin(), user.row(c).end(), row);
      std::copy(item.row(c).begin(), item.row(c).end(), row + user.cols());
    }
    model->forward(matrix_view<const float>(x0.data(), n, width), {}, matrix_view<float>(out.data(), n, 1));
  }
};

struct peer_result {
  bool ran = false;
  std::string why;  // when it did not run
  nlohmann::json json;
};

// Runs a Python peer; it prints one line `RESULT {json}` at the end.
peer_result run_peer(const std::string& python, const std::string& script, const std::string& args) {
  peer_result r;
  const std::string command = python + " " + script + " " + args + " 2>&1";
  std::fprintf(stderr, "running %s\n", command.c_str());
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) {
    r.why = "could not start " + python;
    return r;
  }
  std::string last, line;
  char chunk[4096];
  while (std::fgets(chunk, sizeof chunk, pipe)) {  // lines of any length (the result line is long)
    line += chunk;
    if (line.empty() || line.back() != '\n') continue;
    if (line.rfind("RESULT ", 0) == 0) last = line.substr(7);
    else std::fprintf(stderr, "  | %s", line.c_str());
    line.clear();
  }
  const int rc = pclose(pipe);
  if (last.empty()) {
    r.why = "exited " + std::to_string(rc) + " without a result";
    return r;
  }
  try {
    r.json = nlohmann::json::parse(last);
  } catch (const nlohmann::json::exception& e) {
    r.why = std::string("its result line is not JSON: ") + e.what();
    return r;
  }
  if (r.json.contains("skipped")) {
    r.why = r.json["skipped"].get<std::string>();
    return r;
  }
  r.ran = true;
  return r;
}

// Mean overlap of two sets of top-10 lists (request order), and the fraction identical as sets.
std::pair<double, double> agreement(const std::vector<std::vector<id_type>>& a, const std::vector<std::vector<id_type>>& b) {
  const std::size_t n = std::min(a.size(), b.size());
  if (n == 0) return {0, 0};
  double overlap = 0, same = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::set<id_type> sa(a[i].begin(), a[i].end());
    std::size_t hit = 0;
    for (id_type id : b[i]) hit += sa.count(id);
    overlap += a[i].empty() ? 1.0 : double(hit) / double(a[i].size());
    same += (hit == a[i].size() && a[i].size() == b[i].size()) ? 1 : 0;
  }
  return {overlap / double(n), same / double(n)};
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse(argc, argv);
  // Kernels on the calling thread only (OpenBLAS too): concurrency 1 is one thread, and the
  // 2-thread throughput is two serving threads, like the peers' thread counts.
  cpu::set_num_threads(1);
  fs::create_directories(opt.data);
  const std::string tag = std::to_string(opt.items);
  const fs::path index_path = opt.data / ("items_" + tag + ".hnsw");
  const fs::path hnswlib_path = opt.data / ("items_" + tag + ".hnswlib");
  const fs::path catalog_path = opt.data / ("catalog_" + tag + ".safetensors");
  const fs::path ranker_path = opt.data / "dcn_v2.safetensors";

  // ---- data: catalog, stores, index, ranker ----
  auto t0 = clock_type::now();
  io::synthetic_catalog_config cc;
  cc.items = opt.items;
  cc.users = opt.users;
  cc.dim = dim;
  cc.mean_history = 50;  // "filter 50 seen items"
  cc.seed = 42;
  const auto catalog = io::synthetic_catalog::generate(cc);
  std::fprintf(stderr, "catalog of %zu items, %zu users: %.1f s\n", opt.items, opt.users,
               std::chrono::duration<double>(clock_type::now() - t0).count());
  if (!fs::exists(catalog_path)) {
    io::safetensors_writer out;
    out.add("item_vectors", catalog.item_vectors.view());
    out.add("user_vectors", catalog.user_vectors.view());
    std::vector<std::int64_t> offsets(catalog.histories.offsets().begin(), catalog.histories.offsets().end());
    out.add("history_offsets", std::span<const std::int64_t>(offsets), {offsets.size()});
    out.add("history_values", std::span<const std::int64_t>(catalog.histories.values()), {catalog.histories.values().size()});
    out.write(catalog_path);
  }
  if (!fs::exists(ranker_path)) write_ranker(ranker_path);
  const auto ranker = models::dcn_v2::load(ranker_path);

  feature_store<col::user_id, col::user_embedding> user_vectors(dim);
  feature_store<col::user_id, col::user_features> user_features(dim);
  feature_store<col::user_id, col::history> histories;
  feature_store<col::candidates, col::item_features> item_features(dim);
  for (std::size_t u = 0; u < opt.users; ++u) {
    user_vectors.insert(static_cast<id_type>(u), catalog.user_vectors.row(u));
    user_features.insert(static_cast<id_type>(u), catalog.user_vectors.row(u));
    histories.insert(static_cast<id_type>(u), catalog.histories.row(u));
  }
  for (std::size_t i = 0; i < opt.items; ++i) item_features.insert(static_cast<id_type>(i), catalog.item_vectors.row(i));
  std::vector<id_type> ids(opt.items);
  std::iota(ids.begin(), ids.end(), id_type{0});

  t0 = clock_type::now();
  std::unique_ptr<cpu::hnsw_index> index_ptr;
  if (fs::exists(index_path)) {
    index_ptr = std::make_unique<cpu::hnsw_index>(cpu::hnsw_index::load(index_path));
    std::fprintf(stderr, "loaded %s: %.1f s\n", index_path.c_str(), std::chrono::duration<double>(clock_type::now() - t0).count());
  } else {
    // M 16, ef_construction 200: hnswlib's usual settings; metric::inner_product as is.
    index_ptr = std::make_unique<cpu::hnsw_index>(dim, metric::inner_product, opt.items, 16, 200, 100);
    index_ptr->add(ids, catalog.item_vectors.view(), opt.build_threads);
    std::fprintf(stderr, "built the HNSW index on %zu threads: %.1f s\n", opt.build_threads,
                 std::chrono::duration<double>(clock_type::now() - t0).count());
    index_ptr->save(index_path);
  }
  const cpu::hnsw_index& index = *index_ptr;
  if (!fs::exists(hnswlib_path)) {  // hnswlib's own format: the body after recpipe's 80-byte header
    std::ifstream in(index_path, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(detail::hnsw_file_header::size));
    std::ofstream out(hnswlib_path.string() + ".tmp", std::ios::binary);
    out << in.rdbuf();
    out.close();
    fs::rename(hnswlib_path.string() + ".tmp", hnswlib_path);
  }
  cpu::exact_index exact(dim, metric::inner_product, opt.items);
  exact.add(ids, catalog.item_vectors.view());

  // ---- the pipeline ----
  auto recommend = lookup(user_vectors) >> lookup(user_features) >> lookup(histories) >>
                         retrieve<col::user_embedding>(index, retrieve_k) >> filter_seen() >> lookup(item_features) >>
                         unroll(dim) >> score(dcn_scorer{&ranker}) >> top_k(final_k);
  const auto recommend_exact = lookup(user_vectors) >> lookup(user_features) >> lookup(histories) >>
                               retrieve<col::user_embedding>(exact, retrieve_k) >> filter_seen() >>
                               lookup(item_features) >> unroll(dim) >> score(dcn_scorer{&ranker}) >> top_k(final_k);
  const auto request = [&](std::size_t i) { return make_batch<col::user_id>(std::vector<id_type>{user_of(i, opt.users)}); };

  // ---- correctness before timing: the HNSW path against exact retrieval (recall@10 of the
  // final top 10 and recall@500 of retrieval), and our top 10 for the peers to reproduce ----
  std::vector<std::vector<id_type>> ours_top(check_requests), exact_top(check_requests);
  double recall_retrieval = 0;
  for (std::size_t i = 0; i < check_requests; ++i) {
    const auto a = recommend.run(request(i));
    const auto b = recommend_exact.run(request(i));
    const auto ra = a.get<col::candidates>().row(0), rb = b.get<col::candidates>().row(0);
    ours_top[i].assign(ra.begin(), ra.end());
    exact_top[i].assign(rb.begin(), rb.end());
    if (ra.size() != final_k) {
      std::fprintf(stderr, "request %zu got %zu items, not %zu\n", i, ra.size(), final_k);
      return 1;
    }
    const auto q = (request(i) >> lookup(user_vectors)).get<col::user_embedding>();
    std::vector<id_type> hi(retrieve_k), ei(retrieve_k);
    std::vector<float> hs(retrieve_k), es(retrieve_k);
    index.search(q.row(0), retrieve_k, hi, hs);
    exact.search(q.row(0), retrieve_k, ei, es);
    std::set<id_type> truth(ei.begin(), ei.end());
    std::size_t hit = 0;
    for (id_type id : hi) hit += truth.count(id);
    recall_retrieval += double(hit) / double(retrieve_k);
  }
  recall_retrieval /= double(check_requests);
  const auto [recall10, same_exact] = agreement(exact_top, ours_top);
  {
    nlohmann::json j;
    j["users"] = std::vector<id_type>();
    for (std::size_t i = 0; i < check_requests; ++i) j["users"].push_back(user_of(i, opt.users));
    j["top10"] = ours_top;
    std::ofstream(opt.data / ("check_" + tag + ".json")) << j.dump();
  }

  // ---- timing ----
  for (std::size_t i = 0; i < 50; ++i) (void)recommend.run(request(i));  // warm
  recommend.reset_stats();
  std::vector<double> latency_us;
  latency_us.reserve(opt.requests);
  std::vector<double> machinery_us;
  machinery_us.reserve(opt.requests);
  run_report<decltype(recommend)::stage_count> report;
  for (std::size_t i = 0; i < opt.requests; ++i) {
    auto requests = request(i);
    const auto start = clock_type::now();
    const auto out = recommend.run(std::move(requests), report);
    const auto took = clock_type::now() - start;
    latency_us.push_back(std::chrono::duration<double, std::micro>(took).count());
    machinery_us.push_back(std::chrono::duration<double, std::micro>(took - report.total()).count());
  }
  const auto stage_stats = recommend.stats();
  // Throughput: `threads` threads, each running single-user requests back to back.
  const auto throughput = [&](std::size_t threads) {
    std::atomic<std::size_t> next{0};
    const std::size_t total = opt.requests * 2;
    const auto start = clock_type::now();
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t)
      pool.emplace_back([&] {
        for (std::size_t i; (i = next.fetch_add(1)) < total;) (void)recommend.run(request(i));
      });
    for (auto& t : pool) t.join();
    return double(total) / std::chrono::duration<double>(clock_type::now() - start).count();
  };
  const double ours_qps_1 = throughput(1);
  const double ours_qps_2 = throughput(opt.threads);

  // Pipeline machinery, second view: run() against the same stage objects called by hand in a row.
  const auto& st = recommend.stages();
  const auto by_hand = [&](auto requests) {
    return std::get<8>(st)(std::get<7>(st)(std::get<6>(st)(std::get<5>(st)(std::get<4>(st)(
        std::get<3>(st)(std::get<2>(st)(std::get<1>(st)(std::get<0>(st)(std::move(requests))))))))));
  };
  // Paired per request (run, then by hand, alternating which goes first), so that load changes on
  // this shared machine hit both; the median of the paired differences is the estimate.
  std::vector<double> composed_us, hand_us, paired_diff_us;
  for (std::size_t rep = 0; rep < 5; ++rep)
    for (std::size_t i = 0; i < 200; ++i) {
      const auto time_one = [&](auto&& f) {
        const auto start = clock_type::now();
        (void)f(request(i));
        return std::chrono::duration<double, std::micro>(clock_type::now() - start).count();
      };
      double c = 0, h = 0;
      if ((i + rep) % 2 == 0) {
        c = time_one([&](auto r) { return recommend.run(std::move(r)); });
        h = time_one(by_hand);
      } else {
        h = time_one(by_hand);
        c = time_one([&](auto r) { return recommend.run(std::move(r)); });
      }
      composed_us.push_back(c);
      hand_us.push_back(h);
      paired_diff_us.push_back(c - h);
    }

  // recpipe's retrieve stage against a bare hnswlib searchKnn on the same graph (loaded from the
  // same file, searched with the same distance function, so only the machinery differs).
  detail::hnsw_space space(dim, metric::inner_product);
  hnswlib::HierarchicalNSW<float> bare(&space, hnswlib_path.string(), false, opt.items);
  bare.setEf(1);  // searchKnn searches with max(ef, k) = 500, like recpipe
  const auto retrieve_stage = retrieve<col::user_embedding>(index, retrieve_k);
  std::vector<matrix<float>> queries;
  std::vector<batch<col::user_id, col::user_embedding>> query_batches;
  for (std::size_t i = 0; i < 200; ++i) {
    auto b = request(i) >> lookup(user_vectors);
    queries.push_back(b.get<col::user_embedding>());
    query_batches.push_back(std::move(b));
  }
  std::size_t same_ids = 0;
  for (std::size_t i = 0; i < queries.size(); ++i) {
    auto found = bare.searchKnn(queries[i].row(0).data(), retrieve_k);
    std::set<id_type> theirs;
    while (!found.empty()) {
      theirs.insert(static_cast<id_type>(found.top().second));
      found.pop();
    }
    const auto ours = (query_batches[i] >> retrieve_stage).get<col::candidates>().row(0);
    std::size_t hit = 0;
    for (id_type id : ours) hit += theirs.count(id);
    same_ids += hit;
  }
  const double retrieve_agreement = double(same_ids) / double(queries.size() * retrieve_k);
  std::vector<double> stage_us, bare_us, paired_ratio;
  std::vector<id_type> sink_ids(retrieve_k);
  std::vector<float> sink_scores(retrieve_k);
  const auto time_bare = [&](std::size_t i) {
    const auto start = clock_type::now();
    auto found = bare.searchKnn(queries[i].row(0).data(), retrieve_k);
    for (std::size_t j = found.size(); j-- > 0; found.pop()) {  // best last in the heap: fill from the back
      sink_ids[j] = static_cast<id_type>(found.top().second);
      sink_scores[j] = -found.top().first;
    }
    return std::chrono::duration<double, std::micro>(clock_type::now() - start).count();
  };
  const auto time_stage = [&](std::size_t i) {
    const auto start = clock_type::now();
    (void)(query_batches[i] >> retrieve_stage);
    return std::chrono::duration<double, std::micro>(clock_type::now() - start).count();
  };
  for (std::size_t rep = 0; rep < 10; ++rep)
    for (std::size_t i = 0; i < queries.size(); ++i) {  // paired per query, alternating the order
      double a = 0, b = 0;
      if ((i + rep) % 2 == 0) {
        a = time_stage(i);
        b = time_bare(i);
      } else {
        b = time_bare(i);
        a = time_stage(i);
      }
      stage_us.push_back(a);
      bare_us.push_back(b);
      paired_ratio.push_back(a / b);
    }

  // ---- peers ----
  const std::string bench_dir = RECPIPE_BENCH_PIPELINE_DIR;
  const std::string common_args = "--data " + opt.data.string() + " --items " + tag + " --users " +
                                  std::to_string(opt.users) + " --requests " + std::to_string(opt.requests);
  peer_result python, merlin;
  if (!opt.peers) {
    python.why = merlin.why = "--no-peers";
  } else {
    const char* py = std::getenv("RECPIPE_PYTHON_PEER");
    python = run_peer(py && *py ? py : "/usr/bin/python3", bench_dir + "/python_pipeline.py", common_args);
    const char* mp = std::getenv("RECPIPE_MERLIN_PYTHON");
    if (std::getenv("CI")) merlin.why = "CI: Merlin Systems is not installed in CI";
    else if (!mp || !*mp) merlin.why = "RECPIPE_MERLIN_PYTHON unset (./scripts/bench pipeline sets it)";
    else merlin = run_peer(mp, bench_dir + "/merlin_pipeline.py", common_args);
  }
  const auto top_of = [](const peer_result& p) {
    std::vector<std::vector<id_type>> top;
    if (p.ran) top = p.json["top10"].get<std::vector<std::vector<id_type>>>();
    return top;
  };

  // ---- report ----
  const double p50 = percentile(latency_us, 0.5), p99 = percentile(latency_us, 0.99);
  std::printf("\nwhole pipeline: %zu items of dim %zu, %zu users, retrieve %zu by HNSW (M 16, ef_construction 200, "
              "search width 500, inner product), filter seen (%.1f per user on average), DCN-v2 128 -> 2 cross rank 32 "
              "-> 128-64-1, top %zu; %zu requests\n",
              opt.items, dim, opt.users, retrieve_k, double(catalog.histories.total()) / double(opt.users), final_k,
              opt.requests);
  std::printf("check: recall@10 of the HNSW path against exact retrieval %.3f (identical top-10 sets %.0f%%); "
              "recall@500 of the HNSW retrieval %.3f\n",
              recall10, 100 * same_exact, recall_retrieval);
  std::printf("check: recpipe retrieve vs bare searchKnn: %.4f of the ids agree\n", retrieve_agreement);
  for (const auto* p : {&python, &merlin}) {
    const char* who = p == &python ? "python (torch + hnswlib)" : "merlin systems";
    if (!p->ran) {
      std::printf("check: %s: skipped (%s)\n", who, p->why.c_str());
      continue;
    }
    const auto [overlap, same] = agreement(ours_top, top_of(*p));
    std::printf("check: %s reproduces our top 10: overlap %.4f, identical sets %.1f%%%s\n", who, overlap, 100 * same,
                overlap >= 0.99 ? "" : "  <-- OUTPUTS DIFFER");
  }

  std::printf("\nper-stage breakdown (concurrency 1, %zu runs) | mean us | p50 us | p99 us\n", opt.requests);
  double stages_mean = 0;
  for (const auto& s : stage_stats) {
    std::printf("  %-36s | %8.1f | %8.1f | %8.1f\n", std::string(s.name).c_str(), s.mean_us, s.p50_us, s.p99_us);
    stages_mean += s.mean_us;
  }
  std::printf("  %-36s | %8.1f |\n", "sum of stages", stages_mean);

  const auto py = [&](const char* key) { return python.ran && python.json.contains(key) ? python.json[key].get<double>() : NAN; };
  const auto mg = [&](const char* key) { return merlin.ran && merlin.json.contains(key) ? merlin.json[key].get<double>() : NAN; };
  const auto row = [](const char* name, double ours, const char* unit, double peer, bool higher_better, const char* peer_name,
                      const char* target) {
    const double ratio = std::isnan(peer) ? NAN : (higher_better ? ours / peer : peer / ours);
    if (std::isnan(peer))
      std::printf("%-48s | %10.1f %-5s | %-26s | %7s | %s\n", name, ours, unit, peer_name, "-", target);
    else
      std::printf("%-48s | %10.1f %-5s | %10.1f %-5s %-9s | %6.2fx | %s\n", name, ours, unit, peer, unit, peer_name, ratio, target);
  };
  std::printf("\ncase                                             | ours             | peer                       | ratio   | fraction of ceiling / target\n");
  char target[128];
  std::snprintf(target, sizeof target, "target p99 <= 2000 us: %s", p99 <= 2000 ? "met" : "MISSED");
  row("latency p50, concurrency 1", p50, "us", py("p50_us"), false, "(python)", "");
  row("latency p99, concurrency 1", p99, "us", py("p99_us"), false, "(python)", target);
  row("latency p50, concurrency 1", p50, "us", mg("p50_us"), false, "(merlin)", "");
  row("latency p99, concurrency 1", p99, "us", mg("p99_us"), false, "(merlin)", "");
  const double py_best = std::max(py("qps_sequential"), py("qps_batched"));
  std::snprintf(target, sizeof target, "target >= 3x python: %s; %.2f of 2x our 1-thread rate",
                std::isnan(py_best) ? "not measured" : (ours_qps_2 >= 3 * py_best ? "met" : "MISSED"), ours_qps_2 / (2 * ours_qps_1));
  row("throughput, 2 threads (req/s), vs python best", ours_qps_2, "req/s", py_best, true, "(python)", target);
  std::snprintf(target, sizeof target, "target >= 10x merlin: %s",
                std::isnan(mg("qps_sequential")) ? "not measured" : (ours_qps_2 >= 10 * mg("qps_sequential") ? "met" : "MISSED"));
  row("throughput, 2 threads (req/s), vs merlin", ours_qps_2, "req/s", mg("qps_sequential"), true, "(merlin)", target);
  row("throughput, 1 thread (req/s)", ours_qps_1, "req/s", py("qps_sequential"), true, "(python seq)", "");
  const double machinery = percentile(machinery_us, 0.5);
  std::snprintf(target, sizeof target, "target <= 20 us: %s (p99 %.1f us)", machinery <= 20 ? "met" : "MISSED",
                percentile(machinery_us, 0.99));
  row("pipeline machinery: run - stages (p50)", machinery, "us", NAN, false, "", target);
  const double composed = percentile(composed_us, 0.5), hand = percentile(hand_us, 0.5);
  std::snprintf(target, sizeof target, "median paired difference %.1f us/request (p25 %.1f, p75 %.1f)",
                percentile(paired_diff_us, 0.5), percentile(paired_diff_us, 0.25), percentile(paired_diff_us, 0.75));
  row("pipeline.run vs the stages called by hand", composed, "us", hand, false, "(by hand)", target);
  const double rs = percentile(stage_us, 0.5), rb = percentile(bare_us, 0.5);
  const double ratio_paired = percentile(paired_ratio, 0.5);
  std::snprintf(target, sizeof target, "target <= 3%% slower: %s (median paired %+.1f%%, p25 %+.1f%%, p75 %+.1f%%)",
                ratio_paired <= 1.03 ? "met" : "MISSED", 100 * (ratio_paired - 1), 100 * (percentile(paired_ratio, 0.25) - 1),
                100 * (percentile(paired_ratio, 0.75) - 1));
  row("retrieve 500 (stage) vs bare hnswlib searchKnn", rs, "us", rb, false, "(searchKnn)", target);
  for (const auto* p : {&python, &merlin}) {
    if (!p->ran) continue;
    const auto [peer_recall, peer_same] = agreement(exact_top, top_of(*p));
    std::printf("%-48s | %10.3f       | %10.3f %-15s | identical sets %.0f%% vs %.0f%%\n", "recall@10 vs exact retrieval",
                recall10, peer_recall, p == &python ? "(python)" : "(merlin)", 100 * same_exact, 100 * peer_same);
  }
  if (python.ran) {
    std::printf("\npython peer per stage (mean us, sequential single-user): %s\n", python.json["stages_us"].dump().c_str());
    std::printf("python peer best configuration: %s\n", python.json["best"].dump().c_str());
  }
  if (merlin.ran) std::printf("merlin peer: %s\n", merlin.json["notes"].dump().c_str());
  std::printf("caveat: shared 2-core machine (other agents build and test on it); absolute times drift 20%% or more, ratios less.\n");
  return 0;
}
