// SPDX-License-Identifier: Apache-2.0
// recpipe benchmark: DLRM dot interaction (and FM) vs LibTorch bmm + lower-triangle gather.
#include "harness.hpp"

#include <vector>

#include <recpipe/cpu/cross.hpp>

namespace cpu = recpipe::cpu;

int main(int argc, char** argv) {
  bench::ensure_openblas_core(argv);
  torch::NoGradGuard no_grad;
  const int reps = bench::reps();
  std::vector<bench::row> rows;
  for (const int64_t batch : {2048, 64}) {
    const int64_t f = 27, d = 128;
    torch::manual_seed(0);
    auto t = torch::randn({batch, f, d});
    std::vector<int64_t> li, lj;
    for (int64_t i = 0; i < f; ++i)
      for (int64_t j = 0; j < i; ++j) li.push_back(i), lj.push_back(j);
    const auto ti = torch::tensor(li), tj = torch::tensor(lj);
    const auto pairs = static_cast<std::size_t>(li.size());
    auto out = torch::empty({batch, static_cast<int64_t>(pairs)});
    torch::Tensor want;
    const recpipe::matrix_view<const float> feats(t.data_ptr<float>(), static_cast<std::size_t>(batch), f * d);
    const auto ours = [&](int) { cpu::dot_interaction(feats, f, false, {out.data_ptr<float>(), static_cast<std::size_t>(batch), pairs}); };
    // PyTorch-DLRM's interact_features: Z = bmm(T, T^T); Zflat = Z[:, li, lj]
    const auto peer = [&](int) {
      auto z = torch::bmm(t, t.transpose(1, 2));
      want = z.index({torch::indexing::Slice(), ti, tj});
    };
    ours(0);
    peer(0);
    bench::require(bench::max_rel(out, want) < 1e-5, "dot_interaction differs from LibTorch");
    auto fm = torch::empty({batch});
    torch::Tensor fm_want;
    const auto ours_fm = [&](int) { cpu::fm_second_order(feats, f, {fm.data_ptr<float>(), static_cast<std::size_t>(batch)}); };
    const auto peer_fm = [&](int) {
      auto s = t.sum(1);
      fm_want = 0.5 * (s * s - (t * t).sum(1)).sum(1);
    };
    ours_fm(0);
    peer_fm(0);
    bench::require(bench::max_rel(fm, fm_want) < 1e-4, "fm_second_order differs from LibTorch");
    for (int threads : {1, 2}) {
      rows.push_back(bench::compare("DLRM interaction, batch " + std::to_string(batch) + ", 27 x 128, no diagonal",
                                    threads, reps, ours, peer, {}, "peer: bmm + tril gather"));
      rows.push_back(bench::compare("FM second order, batch " + std::to_string(batch) + ", 27 x 128", threads, reps,
                                    ours_fm, peer_fm, {}, "peer: 0.5 * ((sum)^2 - sum of squares)"));
    }
  }
  bench::print_table("DLRM interaction and FM", rows);
  bench::run_google_benchmark(argc, argv);
}
