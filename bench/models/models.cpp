// SPDX-License-Identifier: Apache-2.0
// Benchmark: recpipe models vs LibTorch (TorchScript of the same weights) at batch 1 and 256.
//
// Inputs, weights and TorchScript modules come from tools/reference_models.py --torchscript
// (run by the build). Before timing, every case checks recpipe's output against the outputs
// PyTorch stored and against LibTorch's output on the same inputs (max abs error <= 1e-5).
// Timing: Google Benchmark for each side, then an interleaved A/B table (ours, peer, ours, ...),
// median of 25 repetitions with the 10-90% spread, one thread on both sides.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <recpipe/cpu/threads.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/models/dcn_v2.hpp>
#include <recpipe/models/dlrm.hpp>
#include <recpipe/models/mlp.hpp>
#include <recpipe/models/session_transformer.hpp>
#include <recpipe/models/two_tower.hpp>

#ifndef RECPIPE_MODELS_REFERENCE_DIR
#error "RECPIPE_MODELS_REFERENCE_DIR must name the folder tools/reference_models.py --torchscript wrote"
#endif

namespace io = recpipe::io;
namespace models = recpipe::models;
using recpipe::id_type;
using recpipe::matrix;
using recpipe::matrix_view;

namespace {

constexpr double sgemm_ceiling_gflops = 98.0;  // OpenBLAS 1 thread, docs PERFORMANCE.md

// One benchmark case: both sides as closures writing their output, plus the stored expectation.
struct bench_case {
  std::string name;
  std::size_t batch = 0;
  double flops = 0;                        // dense multiply-adds x 2 per forward
  std::function<void()> ours, peer;
  std::function<matrix_view<const float>()> ours_output;
  std::function<at::Tensor()> peer_output;
  const io::tensor_view* expected = nullptr;
};

at::Tensor tensor_of(const io::tensor_view& t) {
  std::vector<int64_t> shape(t.shape.begin(), t.shape.end());
  const auto type = t.type == io::dtype::i64 ? torch::kInt64 : torch::kFloat32;
  // from_blob does not copy; the mapping outlives the benchmark and torch never writes inputs.
  return torch::from_blob(const_cast<std::byte*>(t.bytes.data()), shape, torch::TensorOptions().dtype(type));
}

double mlp_flops(std::size_t batch, std::size_t in, const std::vector<std::size_t>& dims) {
  double f = 0;
  for (std::size_t d : dims) {
    f += 2.0 * double(batch) * double(in) * double(d);
    in = d;
  }
  return f;
}

float max_abs(matrix_view<const float> a, const at::Tensor& b_in) {
  const at::Tensor b = b_in.contiguous().reshape({static_cast<int64_t>(a.rows()), static_cast<int64_t>(a.cols())});
  float worst = 0;
  for (std::size_t r = 0; r < a.rows(); ++r)
    for (std::size_t c = 0; c < a.cols(); ++c) {
      const float d = std::fabs(a(r, c) - b[static_cast<int64_t>(r)][static_cast<int64_t>(c)].item<float>());
      worst = std::isnan(d) ? INFINITY : std::max(worst, d);
    }
  return worst;
}

struct holder {  // keeps models, files and buffers alive for the closures
  std::vector<std::shared_ptr<void>> keep;
  template <class T>
  T& own(T value) {
    auto p = std::make_shared<T>(std::move(value));
    keep.push_back(p);
    return *p;
  }
};

std::vector<recpipe::cpu::bag_input> bags_of(const io::safetensors_file& f, const std::string& prefix, std::size_t n) {
  std::vector<recpipe::cpu::bag_input> out;
  for (std::size_t t = 0; t < n; ++t) {
    const std::string base = prefix + "sparse." + std::to_string(t);
    out.push_back({f.at(base + ".ids").data<id_type>(), f.at(base + ".offsets").data<id_type>()});
  }
  return out;
}

std::vector<torch::jit::IValue> sparse_args(const io::safetensors_file& f, const std::string& prefix, std::size_t n) {
  c10::List<at::Tensor> ids, offsets;
  for (std::size_t t = 0; t < n; ++t) {
    const std::string base = prefix + "sparse." + std::to_string(t);
    ids.push_back(tensor_of(f.at(base + ".ids")));
    offsets.push_back(tensor_of(f.at(base + ".offsets")));
  }
  return {tensor_of(f.at(prefix + "dense")), ids, offsets};
}

std::vector<bench_case> build_cases(holder& h, const std::filesystem::path& dir) {
  std::vector<bench_case> cases;
  const std::vector<std::string> names = {"mlp", "two_tower", "dlrm", "dcn_v2", "dcn_v2_parallel_low_rank",
                                          "session_transformer", "session_transformer_post_norm"};
  for (const std::string& name : names) {
    auto weights = models::open_weights(dir / (name + ".safetensors"));
    const std::string kind = weights->metadata().at("recpipe.model");
    auto& inputs = h.own(io::safetensors_file::open(dir / (name + ".bench.safetensors")));
    auto& module = h.own(torch::jit::load((dir / (name + ".pt")).string()));
    module.eval();
    for (std::size_t batch : {std::size_t{1}, std::size_t{256}}) {
      const std::string p = "b" + std::to_string(batch) + ".";
      bench_case c;
      c.name = name + " b" + std::to_string(batch);
      c.batch = batch;
      c.expected = &inputs.at(p + "expected");
      auto& out = h.own(matrix<float>());
      c.ours_output = [&out] { return matrix_view<const float>(out.view()); };
      std::vector<torch::jit::IValue> args;
      if (kind == "mlp") {
        auto& m = h.own(models::mlp::load(weights));
        out.resize(batch, m.output_dim());
        const auto x = inputs.at(p + "dense").as_matrix();
        c.ours = [&m, &out, x] { m.forward(x, out.view()); };
        c.flops = mlp_flops(batch, m.input_dim(), m.config().dims);
        args = {tensor_of(inputs.at(p + "dense"))};
      } else if (kind == "dlrm") {
        auto& m = h.own(models::dlrm::load(weights));
        out.resize(batch, m.output_dim());
        const auto x = inputs.at(p + "dense").as_matrix();
        auto& sparse = h.own(bags_of(inputs, p, m.num_sparse_features()));
        c.ours = [&m, &out, x, &sparse] { m.forward(x, sparse, out.view()); };
        const auto& cfg = m.config();
        const double f = double(cfg.num_features());
        c.flops = mlp_flops(batch, cfg.dense_dim, cfg.bottom) + mlp_flops(batch, cfg.top_input_dim(), cfg.top) +
                  double(batch) * f * (f - 1) * double(cfg.embedding_dim);
        args = sparse_args(inputs, p, m.num_sparse_features());
      } else if (kind == "dcn_v2") {
        auto& m = h.own(models::dcn_v2::load(weights));
        out.resize(batch, 1);
        const auto x = inputs.at(p + "dense").as_matrix();
        auto& sparse = h.own(bags_of(inputs, p, m.num_sparse_features()));
        c.ours = [&m, &out, x, &sparse] { m.forward(x, sparse, out.view()); };
        const auto& cfg = m.config();
        const double d = double(cfg.input_dim());
        const double cross = cfg.rank == 0 ? 2.0 * d * d : 4.0 * d * double(cfg.rank);
        c.flops = double(batch) * double(cfg.cross_layers) * cross + mlp_flops(batch, cfg.input_dim(), cfg.deep) +
                  2.0 * double(batch) * double(cfg.head_input_dim());
        args = sparse_args(inputs, p, m.num_sparse_features());
      } else if (kind == "two_tower") {
        auto& m = h.own(models::two_tower::load(weights));
        out.resize(batch, m.output_dim());
        const auto x = inputs.at(p + "user.dense").as_matrix();
        auto& sparse = h.own(bags_of(inputs, p + "user.", m.user_tower().num_sparse_features()));
        c.ours = [&m, &out, x, &sparse] { m.encode_users(x, sparse, out.view()); };
        c.expected = &inputs.at(p + "expected_user");
        c.name = name + " user tower b" + std::to_string(batch);
        c.flops = mlp_flops(batch, m.config().user.input_dim(), m.config().user.dims);
        args = sparse_args(inputs, p + "user.", m.user_tower().num_sparse_features());
      } else if (kind == "session_transformer") {
        auto& m = h.own(models::session_transformer::load(weights));
        out.resize(batch, m.embedding_dim());
        const auto offsets = inputs.at(p + "offsets").data<id_type>();
        const auto items = inputs.at(p + "items").data<id_type>();
        c.ours = [&m, &out, offsets, items] { m.encode(offsets, items, out.view()); };
        // The peer takes right-padded [batch, longest] items and lengths (built outside the timing).
        int64_t longest = 0;
        double attention = 0, rows = 0;
        for (std::size_t b = 0; b < batch; ++b) {
          const int64_t len = offsets[b + 1] - offsets[b];
          longest = std::max(longest, len);
          attention += double(len) * double(len + 1);  // causal: ~len^2/2 scores, x2 (QK and PV)
          rows += double(len);
        }
        at::Tensor padded = torch::zeros({static_cast<int64_t>(batch), longest}, torch::kInt64);
        at::Tensor lengths = torch::zeros({static_cast<int64_t>(batch)}, torch::kInt64);
        for (std::size_t b = 0; b < batch; ++b) {
          const int64_t len = offsets[b + 1] - offsets[b];
          lengths[static_cast<int64_t>(b)] = len;
          for (int64_t t = 0; t < len; ++t) padded[static_cast<int64_t>(b)][t] = items[static_cast<std::size_t>(offsets[b] + t)];
        }
        const auto& cfg = m.config();
        const double e = double(cfg.embedding_dim), ff = double(cfg.ffn_dim);
        c.flops = double(cfg.num_layers) * (2.0 * rows * (4.0 * e * e + 2.0 * e * ff) + 2.0 * attention * e);
        args = {padded, lengths};
      }
      auto& peer_args = h.own(std::move(args));
      auto& peer_out = h.own(at::Tensor());
      c.peer = [&module, &peer_args, &peer_out] { peer_out = module.forward(peer_args).toTensor(); };
      c.peer_output = [&peer_out] { return peer_out; };
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

double seconds_of(const std::function<void()>& f, int iterations) {
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iterations;
}

std::string human(double seconds) {
  char text[32];
  if (seconds < 1e-3)
    std::snprintf(text, sizeof text, "%.1f us", seconds * 1e6);
  else
    std::snprintf(text, sizeof text, "%.2f ms", seconds * 1e3);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  recpipe::cpu::set_num_threads(1);
  at::set_num_threads(1);
  torch::NoGradGuard no_grad;
  holder h;
  std::vector<bench_case> cases;
  try {
    cases = build_cases(h, RECPIPE_MODELS_REFERENCE_DIR);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_models: cannot load the reference files: %s\n", e.what());
    return 1;
  }

  // 1. Correctness before any timing.
  bool ok = true;
  for (bench_case& c : cases) {
    c.ours();
    c.peer();
    const auto expected = c.expected->rank() == 1
                              ? matrix_view<const float>(c.expected->data<float>().data(), c.expected->shape[0], 1)
                              : c.expected->as_matrix();
    float vs_torch_py = 0;
    for (std::size_t r = 0; r < expected.rows(); ++r)
      for (std::size_t col = 0; col < expected.cols(); ++col)
        vs_torch_py = std::max(vs_torch_py, std::fabs(c.ours_output()(r, col) - expected(r, col)));
    const float vs_libtorch = max_abs(c.ours_output(), c.peer_output());
    const bool pass = vs_torch_py <= 1e-5f && vs_libtorch <= 1e-5f;
    std::printf("check %-40s max abs error vs PyTorch %.2e, vs LibTorch %.2e %s\n", c.name.c_str(),
                static_cast<double>(vs_torch_py), static_cast<double>(vs_libtorch), pass ? "ok" : "FAIL");
    ok = ok && pass;
  }
  if (!ok) {
    std::fprintf(stderr, "bench_models: outputs disagree; not timing\n");
    return 1;
  }

  // 2. Google Benchmark, each side on its own.
  for (bench_case& c : cases) {
    benchmark::RegisterBenchmark(("recpipe/" + c.name).c_str(), [&c](benchmark::State& state) {
      for (auto _ : state) c.ours();
    })->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("libtorch/" + c.name).c_str(), [&c](benchmark::State& state) {
      for (auto _ : state) c.peer();
    })->Unit(benchmark::kMicrosecond);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  // 3. Interleaved A/B table: median of 25 repetitions, each repetition ~20 ms per side.
  std::printf("\nrecpipe models vs LibTorch 1.13 TorchScript (same weights), 1 thread each, interleaved, "
              "median of 25 (p10-p90)\n");
  std::printf("| case | ours | peer | ratio | fraction of ceiling |\n|---|---|---|---|---|\n");
  for (bench_case& c : cases) {
    const double probe = std::max(seconds_of(c.ours, 3), seconds_of(c.peer, 3));
    const int iterations = std::max(1, static_cast<int>(0.02 / std::max(probe, 1e-7)));
    std::vector<double> ours, peer, ratios;
    for (int rep = 0; rep < 25; ++rep) {
      ours.push_back(seconds_of(c.ours, iterations));
      peer.push_back(seconds_of(c.peer, iterations));
      ratios.push_back(peer.back() / ours.back());
    }
    auto quantile = [](std::vector<double> v, double q) {
      std::sort(v.begin(), v.end());
      return v[static_cast<std::size_t>(q * double(v.size() - 1) + 0.5)];
    };
    const double o = quantile(ours, 0.5), pr = quantile(peer, 0.5);
    const double gflops = c.flops / o / 1e9;
    std::printf("| %s | %s (%s-%s) | %s (%s-%s) | %.2fx (%.2f-%.2f) | %.1f GFLOP/s = %.3f of %.0f GFLOP/s sgemm |\n",
                c.name.c_str(), human(o).c_str(), human(quantile(ours, 0.1)).c_str(), human(quantile(ours, 0.9)).c_str(),
                human(pr).c_str(), human(quantile(peer, 0.1)).c_str(), human(quantile(peer, 0.9)).c_str(),
                quantile(ratios, 0.5), quantile(ratios, 0.1), quantile(ratios, 0.9), gflops, gflops / sgemm_ceiling_gflops,
                sgemm_ceiling_gflops);
  }
  return 0;
}
