// SPDX-License-Identifier: Apache-2.0
// recpipe benchmark: multi-head self-attention over padded sessions vs LibTorch nn::MultiheadAttention.
#include "harness.hpp"

#include <random>
#include <vector>

#include <recpipe/cpu/attention.hpp>

namespace cpu = recpipe::cpu;

int main(int argc, char** argv) {
  bench::ensure_openblas_core(argv);
  torch::NoGradGuard no_grad;
  const int reps = bench::reps();
  std::vector<bench::row> rows;
  struct shape {
    int64_t batch, len, heads, head_dim;
  };
  for (const shape sh : {shape{256, 50, 2, 32}, shape{32, 200, 4, 64}, shape{1, 20, 2, 32}}) {
    const int64_t e = sh.heads * sh.head_dim;
    torch::manual_seed(0);
    torch::nn::MultiheadAttention mha(torch::nn::MultiheadAttentionOptions(e, sh.heads));
    mha->eval();
    auto x = torch::randn({sh.batch, sh.len, e});
    std::mt19937 rng(3);
    std::uniform_int_distribution<std::size_t> length(1, static_cast<std::size_t>(sh.len));
    std::vector<std::size_t> lengths(static_cast<std::size_t>(sh.batch));
    auto padding = torch::zeros({sh.batch, sh.len}, torch::kBool);
    for (std::size_t b = 0; b < lengths.size(); ++b) {
      lengths[b] = length(rng);
      for (int64_t t = static_cast<int64_t>(lengths[b]); t < sh.len; ++t) padding[static_cast<int64_t>(b)][t] = true;
    }
    const auto causal = torch::triu(torch::full({sh.len, sh.len}, -INFINITY), 1);
    const auto xs = x.transpose(0, 1).contiguous();  // the C++ module is sequence-first; transposed once, untimed
    const cpu::mha_weights w{
        {mha->in_proj_weight.data_ptr<float>(), static_cast<std::size_t>(3 * e), static_cast<std::size_t>(e)},
        {mha->in_proj_bias.data_ptr<float>(), static_cast<std::size_t>(3 * e)},
        {mha->out_proj->weight.data_ptr<float>(), static_cast<std::size_t>(e), static_cast<std::size_t>(e)},
        {mha->out_proj->bias.data_ptr<float>(), static_cast<std::size_t>(e)},
        static_cast<std::size_t>(sh.heads)};
    const auto rows_n = static_cast<std::size_t>(sh.batch * sh.len);
    auto out = torch::empty({sh.batch, sh.len, e});
    torch::Tensor want;
    const auto ours = [&](int) {
      cpu::multi_head_attention({x.data_ptr<float>(), rows_n, static_cast<std::size_t>(e)}, lengths,
                                static_cast<std::size_t>(sh.len), w, true,
                                {out.data_ptr<float>(), rows_n, static_cast<std::size_t>(e)});
    };
    const auto peer = [&](int) { want = std::get<0>(mha->forward(xs, xs, xs, padding, false, causal)); };
    ours(0);
    peer(0);
    const auto valid = padding.logical_not();
    bench::require(bench::max_rel(out.index({valid}), want.transpose(0, 1).index({valid})) < 1e-5,
                   "multi_head_attention differs from LibTorch");
    for (int threads : {1, 2})
      rows.push_back(bench::compare("B=" + std::to_string(sh.batch) + " S=" + std::to_string(sh.len) + " " +
                                        std::to_string(sh.heads) + "x" + std::to_string(sh.head_dim) + " causal+padding",
                                    threads, reps, ours, peer, {}, "peer: nn::MultiheadAttention (C++ API)"));
  }
  bench::print_table("multi-head self-attention", rows);
  bench::run_google_benchmark(argc, argv);
}
