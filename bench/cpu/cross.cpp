// SPDX-License-Identifier: Apache-2.0
// recpipe benchmark: DCN-v2 cross network vs LibTorch (x0 * linear(x) + x) and vs the OpenBLAS sgemm ceiling.
#include "harness.hpp"

#include <chrono>
#include <memory>
#include <vector>

#include <cblas.h>

#include <recpipe/cpu/cross.hpp>

namespace cpu = recpipe::cpu;

namespace {
struct setup {
  int64_t batch, width, layers, rank;  // rank 0: full rank
  torch::Tensor x0, out, want;
  std::vector<torch::Tensor> w, down, up, b;
  std::vector<cpu::cross_params> params;
  std::unique_ptr<cpu::packed_cross_network> packed;  // built once, as a model does at load
  double pack_ms = 0;
  torch::Tensor c;  // sgemm ceiling output
  setup(int64_t batch_, int64_t width_, int64_t layers_, int64_t rank_)
      : batch(batch_), width(width_), layers(layers_), rank(rank_) {
    torch::manual_seed(0);
    x0 = torch::randn({batch, width});
    out = torch::empty_like(x0);
    c = torch::empty_like(x0);
    for (int64_t l = 0; l < layers; ++l) {
      b.push_back(torch::randn({width}) * 0.1);
      if (rank == 0) {
        w.push_back(torch::randn({width, width}) / std::sqrt(static_cast<double>(width)));
        params.push_back({view(w.back()), {}, {}, span(b.back())});
      } else {
        down.push_back(torch::randn({rank, width}) / std::sqrt(static_cast<double>(width)));
        up.push_back(torch::randn({width, rank}) / std::sqrt(static_cast<double>(rank)));
        params.push_back({{}, view(down.back()), view(up.back()), span(b.back())});
      }
    }
    const auto start = std::chrono::steady_clock::now();
    packed = std::make_unique<cpu::packed_cross_network>(params);
    pack_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  static recpipe::matrix_view<const float> view(const torch::Tensor& t) {
    return {t.data_ptr<float>(), static_cast<std::size_t>(t.size(0)), static_cast<std::size_t>(t.size(1))};
  }
  static std::span<const float> span(const torch::Tensor& t) { return {t.data_ptr<float>(), static_cast<std::size_t>(t.numel())}; }
  void ours() {
    cpu::cross_network(view(x0), packed->layers(), {out.data_ptr<float>(), static_cast<std::size_t>(batch), static_cast<std::size_t>(width)});
  }
  void peer() {
    namespace F = torch::nn::functional;
    auto x = x0;
    for (int64_t l = 0; l < layers; ++l)
      x = rank == 0 ? x0 * F::linear(x, w[static_cast<std::size_t>(l)], b[static_cast<std::size_t>(l)]) + x
                    : x0 * (F::linear(F::linear(x, down[static_cast<std::size_t>(l)]), up[static_cast<std::size_t>(l)]) +
                            b[static_cast<std::size_t>(l)]) + x;
    want = x;
  }
  // The ceiling: the same GEMMs alone, straight to OpenBLAS (no epilogue).
  void sgemm_only() {
    const auto n = static_cast<int>(batch), d = static_cast<int>(width), r = static_cast<int>(rank);
    for (int64_t l = 0; l < layers; ++l) {
      if (rank == 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d, d, 1.0f, x0.data_ptr<float>(), d,
                    w[static_cast<std::size_t>(l)].data_ptr<float>(), d, 0.0f, c.data_ptr<float>(), d);
      } else {
        thread_local std::vector<float> low;
        low.resize(static_cast<std::size_t>(n * r));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r, d, 1.0f, x0.data_ptr<float>(), d,
                    down[static_cast<std::size_t>(l)].data_ptr<float>(), d, 0.0f, low.data(), r);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d, r, 1.0f, low.data(), r,
                    up[static_cast<std::size_t>(l)].data_ptr<float>(), r, 0.0f, c.data_ptr<float>(), d);
      }
    }
  }
  double gflop() const {
    const double per_layer = rank == 0 ? 2.0 * batch * width * width : 4.0 * batch * width * rank;
    return per_layer * layers / 1e9;
  }
};
}  // namespace

int main(int argc, char** argv) {
  bench::ensure_openblas_core(argv);
  torch::NoGradGuard no_grad;
  const int reps = bench::reps();
  std::vector<bench::row> rows;
  struct shape {
    int64_t batch, width, rank;
  };
  for (const shape sh : {shape{4096, 512, 0}, shape{4096, 512, 128}, shape{64, 512, 0}, shape{1, 512, 0},
                         shape{256, 3456, 512}}) {
    setup s(sh.batch, sh.width, 3, sh.rank);
    s.ours();
    s.peer();
    bench::require(bench::max_rel(s.out, s.want) < 1e-5, "cross_network differs from LibTorch");
    std::printf("packing %lld layers of width %lld%s: %.3f ms once, %.2f MiB (isa %s)\n",
                static_cast<long long>(s.layers), static_cast<long long>(sh.width),
                sh.rank ? (", rank " + std::to_string(sh.rank)).c_str() : ", full rank", s.pack_ms,
                static_cast<double>(s.packed->bytes()) / (1 << 20), cpu::to_string(cpu::active_isa()));
    for (int threads : {1, 2}) {
      std::string name = "3 layers, batch " + std::to_string(sh.batch) + ", width " + std::to_string(sh.width) +
                         (sh.rank ? ", rank " + std::to_string(sh.rank) : ", full rank");
      auto r = bench::compare(name, threads, sh.batch >= 4096 || sh.width > 1000 ? std::max(5, reps / 2) : reps,
                              [&](int) { s.ours(); }, [&](int) { s.peer(); }, [&](int) { s.sgemm_only(); },
                              "ceiling: the same sgemm calls alone (OpenBLAS)");
      char note[200];
      std::snprintf(note, sizeof note, "weights packed once outside the loop; ours %.1f GFLOP/s, sgemm %.1f GFLOP/s (GEMM FLOPs only)",
                    s.gflop() / (r.ours.median_ms / 1e3), s.gflop() / (r.ceiling.median_ms / 1e3));
      r.note = note;
      rows.push_back(r);
    }
  }
  bench::print_table("DCN-v2 cross network", rows);
  bench::run_google_benchmark(argc, argv);
}
