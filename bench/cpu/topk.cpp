// SPDX-License-Identifier: Apache-2.0
// recpipe benchmark: top-k vs LibTorch topk, std::partial_sort and std::nth_element.
#include "harness.hpp"

#include <algorithm>
#include <random>
#include <vector>

#include <recpipe/cpu/topk.hpp>
#include <recpipe/math/topk.hpp>

namespace cpu = recpipe::cpu;
using recpipe::id_type;

namespace {
struct pair_entry {
  float score;
  id_type id;
};
bool better(const pair_entry& a, const pair_entry& b) { return recpipe::math::ranks_before(a.score, a.id, b.score, b.id); }

std::vector<float> make_scores(std::size_t n, int kind, std::mt19937& rng) {
  std::vector<float> s(n);
  std::uniform_real_distribution<float> dist(0.0f, 1.0f);
  for (auto& v : s) v = dist(rng);
  if (kind == 1) std::sort(s.begin(), s.end());  // ascending: worst case for a rising threshold
  if (kind == 2)
    for (std::size_t i = 0; i < n; ++i) s[i] = 0.5f + static_cast<float>(i % 7) * 1e-7f;  // near-equal
  return s;
}

void BM_top_k_1e6_100(benchmark::State& state) {
  std::mt19937 rng(1);
  const auto s = make_scores(1'000'000, 0, rng);
  std::vector<id_type> ids(100);
  std::vector<float> best(100);
  for (auto _ : state) benchmark::DoNotOptimize(cpu::top_k(s, {}, 100, ids, best));
}
BENCHMARK(BM_top_k_1e6_100)->Unit(benchmark::kMicrosecond);
}  // namespace

int main(int argc, char** argv) {
  bench::ensure_openblas_core(argv);
  torch::NoGradGuard no_grad;
  std::mt19937 rng(7);
  const int reps = bench::reps();
  std::vector<bench::row> rows;
  struct shape {
    std::size_t n, k;
    int kind;
    const char* name;
  };
  const shape shapes[] = {{1'000'000, 100, 0, "N=1e6 k=100 uniform"},
                          {1'000'000, 10, 0, "N=1e6 k=10 uniform"},
                          {10'000'000, 1000, 0, "N=1e7 k=1000 uniform"},
                          {1'000'000, 100, 1, "N=1e6 k=100 ascending"},
                          {1'000'000, 100, 2, "N=1e6 k=100 near-equal"},
                          {1'000, 10, 0, "N=1e3 k=10 uniform"}};
  for (const auto& sh : shapes) {
    const auto scores = make_scores(sh.n, sh.kind, rng);
    const auto tensor = torch::from_blob(const_cast<float*>(scores.data()), {static_cast<int64_t>(sh.n)}, torch::kFloat);
    std::vector<id_type> ids(sh.k);
    std::vector<float> best(sh.k);
    std::vector<pair_entry> work(sh.n);
    torch::Tensor values, indices;
    const auto ours = [&](int) { cpu::top_k(scores, {}, sh.k, ids, best); };
    const auto peer_torch = [&](int) { std::tie(values, indices) = torch::topk(tensor, static_cast<int64_t>(sh.k)); };
    const auto peer_partial = [&](int) {
      for (std::size_t i = 0; i < sh.n; ++i) work[i] = {scores[i], static_cast<id_type>(i)};
      std::partial_sort(work.begin(), work.begin() + static_cast<std::ptrdiff_t>(sh.k), work.end(), better);
    };
    const auto peer_nth = [&](int) {
      for (std::size_t i = 0; i < sh.n; ++i) work[i] = {scores[i], static_cast<id_type>(i)};
      std::nth_element(work.begin(), work.begin() + static_cast<std::ptrdiff_t>(sh.k - 1), work.end(), better);
      std::sort(work.begin(), work.begin() + static_cast<std::ptrdiff_t>(sh.k), better);
    };
    // Self-check: same scores as LibTorch (ids too where scores are distinct), same ids as partial_sort.
    ours(0);
    peer_torch(0);
    peer_partial(0);
    for (std::size_t i = 0; i < sh.k; ++i) {
      bench::require(best[i] == values[static_cast<int64_t>(i)].item<float>(), "top_k scores differ from torch::topk");
      bench::require(ids[i] == work[i].id && best[i] == work[i].score, "top_k differs from std::partial_sort");
    }
    for (int threads : {1, 2}) {
      rows.push_back(bench::compare(std::string(sh.name) + " vs torch::topk", threads, reps, ours, peer_torch));
      rows.push_back(bench::compare(std::string(sh.name) + " vs std::partial_sort", threads, reps, ours, peer_partial));
      rows.push_back(bench::compare(std::string(sh.name) + " vs nth_element+sort", threads, reps, ours, peer_nth));
    }
  }
  bench::print_table("top-k, one row (ours is single-threaded)", rows);
  bench::run_google_benchmark(argc, argv);
}
