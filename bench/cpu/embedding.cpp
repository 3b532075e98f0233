// SPDX-License-Identifier: Apache-2.0
// recpipe benchmark: embedding bags (fp32, fp16, int8 row-wise; hot and cold) vs LibTorch embedding_bag and a gather ceiling.
#include "harness.hpp"

#include <cstdint>
#include <random>
#include <vector>

#include <recpipe/cpu/embedding.hpp>

namespace cpu = recpipe::cpu;
using recpipe::id_type;

namespace {
constexpr std::size_t table_rows = 4'000'000, dim = 64, bag = 20, batch = 2048, sets = 40;

struct fixture {
  cpu::embedding_table table{cpu::storage::fp32, table_rows, dim};
  cpu::embedding_table int8{cpu::storage::int8_rowwise, table_rows, dim};
  cpu::embedding_table half{cpu::storage::fp16, table_rows, dim};
  std::vector<std::vector<id_type>> ids;
  std::vector<id_type> offsets;
  std::vector<torch::Tensor> torch_ids;
  torch::Tensor torch_offsets, torch_table, out_ours, out_peer;
  fixture() {
    std::mt19937_64 rng(1);
    auto* t = reinterpret_cast<float*>(table.data());
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (std::size_t i = 0; i < table_rows * dim; ++i) t[i] = dist(rng);
    for (std::size_t r = 0; r < table_rows; ++r) {
      const std::span<const float> values(t + r * dim, dim);
      int8.set_row(static_cast<id_type>(r), values);
      half.set_row(static_cast<id_type>(r), values);
    }
    std::uniform_int_distribution<id_type> pick(0, table_rows - 1);
    for (std::size_t s = 0; s < sets; ++s) {
      ids.emplace_back(batch * bag);
      for (auto& id : ids.back()) id = pick(rng);
      torch_ids.push_back(torch::from_blob(ids.back().data(), {static_cast<int64_t>(batch * bag)}, torch::kLong));
    }
    for (std::size_t b = 0; b < batch; ++b) offsets.push_back(static_cast<id_type>(b * bag));
    torch_offsets = torch::from_blob(offsets.data(), {static_cast<int64_t>(batch)}, torch::kLong);
    // The peer reads the very same (huge-page) memory.
    torch_table = torch::from_blob(table.data(), {static_cast<int64_t>(table_rows), static_cast<int64_t>(dim)}, torch::kFloat);
    out_ours = torch::empty({static_cast<int64_t>(batch), static_cast<int64_t>(dim)});
  }
  recpipe::matrix_view<float> out() { return {out_ours.data_ptr<float>(), batch, dim}; }
  void ours(const cpu::embedding_table& t, std::size_t set) {
    cpu::embedding_bag(t.view(), ids[set % sets], offsets, {}, cpu::pooling::sum, out());
  }
  void peer(std::size_t set) {
    namespace F = torch::nn::functional;
    out_peer = F::embedding_bag(torch_ids[set % sets], torch_table,
                                F::EmbeddingBagFuncOptions().offsets(torch_offsets).mode(torch::kSum));
  }
  // The ceilings: the plainest gather-and-add loop over the huge-page table, no checks, prefetching
  // the row `Ahead` ids ahead with locality hint `Locality`.
  template <std::size_t Ahead, int Locality>
  void gather_loop(std::size_t set) {
    const auto& id = ids[set % sets];
    const auto* t = reinterpret_cast<const float*>(table.data());
    float* o = out_ours.data_ptr<float>();
    for (std::size_t b = 0; b < batch; ++b) {
      float* acc = o + b * dim;
      for (std::size_t c = 0; c < dim; ++c) acc[c] = 0.0f;
      for (std::size_t i = b * bag; i < (b + 1) * bag; ++i) {
        if (i + Ahead < id.size()) {
          const float* next = t + static_cast<std::size_t>(id[i + Ahead]) * dim;
          for (std::size_t l = 0; l < dim; l += 16) __builtin_prefetch(next + l, 0, Locality);
        }
        const float* r = t + static_cast<std::size_t>(id[i]) * dim;
        for (std::size_t c = 0; c < dim; ++c) acc[c] += r[c];
      }
    }
  }
  // The ceiling: prefetch into L1 (prefetcht0) 16 rows ahead.
  void gather(std::size_t set) { gather_loop<16, 3>(set); }
  // A stronger ceiling (added with the AVX-512 body): into L2 (prefetcht1) 48 rows = 192 lines
  // ahead, which is what the kernel does. Reported as an extra row.
  void gather_l2(std::size_t set) { gather_loop<48, 2>(set); }
};
fixture* global = nullptr;

void BM_embedding_bag_fp32_cold(benchmark::State& state) {
  std::size_t set = 0;
  for (auto _ : state) global->ours(global->table, set++);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch * bag));
}
BENCHMARK(BM_embedding_bag_fp32_cold)->Unit(benchmark::kMillisecond);
}  // namespace

int main(int argc, char** argv) {
  bench::ensure_openblas_core(argv);
  torch::NoGradGuard no_grad;
  fixture f;
  global = &f;
  // Self-check before timing: every set, fp32 must agree with LibTorch; fp16/int8 within their bounds.
  for (std::size_t s = 0; s < sets; s += 13) {
    f.ours(f.table, s);
    f.peer(s);
    bench::require(bench::max_rel(f.out_ours, f.out_peer) < 1e-5, "fp32 embedding_bag differs from LibTorch");
    f.ours(f.half, s);
    bench::require(bench::max_rel(f.out_ours, f.out_peer) < 1e-3, "fp16 embedding_bag outside its bound");
    f.ours(f.int8, s);
    bench::require(bench::max_rel(f.out_ours, f.out_peer) < 1e-2, "int8 embedding_bag outside its bound");
    f.gather(s);
    bench::require(bench::max_rel(f.out_ours, f.out_peer) < 1e-5, "gather ceiling loop is wrong");
    f.gather_l2(s);
    bench::require(bench::max_rel(f.out_ours, f.out_peer) < 1e-5, "L2-prefetch gather ceiling loop is wrong");
  }
  const int reps = bench::reps();
  const auto n = [](int r) { return static_cast<std::size_t>(r); };
  std::vector<bench::row> rows;
  for (int threads : {1, 2}) {
    rows.push_back(bench::compare(
        "bag fp32 cold, 4e6x64, bag 20, batch 2048", threads, reps, [&](int r) { f.ours(f.table, n(r)); },
        [&](int r) { f.peer(n(r)); }, [&](int r) { f.gather(n(r)); }, "ceiling: plain gather, huge pages, prefetch 16"));
    rows.push_back(bench::compare(
        "bag fp32 hot (same ids every rep)", threads, reps, [&](int) { f.ours(f.table, 0); }, [&](int) { f.peer(0); },
        [&](int) { f.gather(0); }, "ceiling: plain gather, hot"));
    rows.push_back(bench::compare(
        "bag fp32 cold, vs L2-prefetch ceiling", threads, reps, [&](int r) { f.ours(f.table, n(r)); },
        [&](int r) { f.peer(n(r)); }, [&](int r) { f.gather_l2(n(r)); },
        "ceiling: plain gather, huge pages, prefetcht1 48 rows ahead"));
    rows.push_back(bench::compare(
        "bag int8 row-wise cold vs LibTorch fp32", threads, reps, [&](int r) { f.ours(f.int8, n(r)); },
        [&](int r) { f.peer(n(r)); }, {}, "rows/s ratio; LibTorch 1.13 (no FBGEMM) has no int8 bag"));
    rows.push_back(bench::compare(
        "bag fp16 cold vs LibTorch fp32", threads, reps, [&](int r) { f.ours(f.half, n(r)); },
        [&](int r) { f.peer(n(r)); }, {}, "rows/s ratio"));
  }
  bench::print_table("embedding bag (" + std::to_string(batch * bag) + " rows per call)", rows);
  bench::run_google_benchmark(argc, argv);
}
