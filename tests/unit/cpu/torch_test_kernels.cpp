// SPDX-License-Identifier: Apache-2.0
// recpipe tests: the CPU kernels against LibTorch 1.13 on the same inputs (fp32 max rel error < 1e-5).
#include <torch/torch.h>
// LibTorch pulls in glog, whose CHECK* macros would silently replace doctest's: drop them first.
#undef CHECK
#undef CHECK_EQ
#undef CHECK_NE
#undef CHECK_LT
#undef CHECK_LE
#undef CHECK_GT
#undef CHECK_GE
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <recpipe/cpu/attention.hpp>
#include <recpipe/cpu/cross.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/cpu/topk.hpp>

namespace cpu = recpipe::cpu;
using recpipe::id_type;

namespace {
recpipe::matrix_view<const float> view(const torch::Tensor& t) {
  return {t.data_ptr<float>(), static_cast<std::size_t>(t.size(0)), static_cast<std::size_t>(t.size(1))};
}
std::span<const float> span(const torch::Tensor& t) { return {t.data_ptr<float>(), static_cast<std::size_t>(t.numel())}; }
// max |ours - torch| / max |torch|, computed in double
double rel(const torch::Tensor& ours, const torch::Tensor& theirs) {
  const auto a = ours.to(torch::kDouble), b = theirs.to(torch::kDouble);
  const double peak = b.abs().max().item<double>();
  return (a - b).abs().max().item<double>() / std::max(peak, 1e-30);
}
struct guard {
  torch::NoGradGuard no_grad;
  guard() { torch::manual_seed(0); }
};
}  // namespace

TEST_CASE("linear + activations and layer_norm match torch") {
  guard g;
  auto x = torch::randn({33, 70}), w = torch::randn({45, 70}) * 0.2, b = torch::randn({45});
  auto y = torch::empty({33, 45});
  const std::pair<cpu::activation, torch::Tensor> cases[] = {
      {cpu::activation::none, torch::nn::functional::linear(x, w, b)},
      {cpu::activation::relu, torch::relu(torch::nn::functional::linear(x, w, b))},
      {cpu::activation::gelu, torch::gelu(torch::nn::functional::linear(x, w, b))},
      {cpu::activation::gelu_tanh, torch::gelu(torch::nn::functional::linear(x, w, b), "tanh")},
      {cpu::activation::sigmoid, torch::sigmoid(torch::nn::functional::linear(x, w, b))}};
  for (const auto& [act, want] : cases) {
    cpu::linear(view(x), view(w), span(b), {y.data_ptr<float>(), 33, 45}, act);
    CHECK(rel(y, want) < 1e-5);
  }
  auto gamma = torch::randn({70}), beta = torch::randn({70});
  auto ln = torch::empty_like(x);
  cpu::layer_norm(view(x), span(gamma), span(beta), {ln.data_ptr<float>(), 33, 70});
  CHECK(rel(ln, torch::layer_norm(x, {70}, gamma, beta, 1e-5)) < 1e-5);
}

TEST_CASE("embedding_bag matches torch embedding_bag (fp32 exact; fp16 and int8 within stated bounds)") {
  guard g;
  const int64_t rows = 5000, dim = 64, batch = 128;
  auto table = torch::randn({rows, dim});
  auto ids = torch::randint(0, rows, {batch * 20}, torch::kLong);
  auto lengths = torch::randint(0, 40, {batch}, torch::kLong);
  auto offsets = torch::cat({torch::zeros({1}, torch::kLong), lengths.cumsum(0)}).slice(0, 0, batch);
  const int64_t total = lengths.sum().item<int64_t>();
  ids = torch::randint(0, rows, {total}, torch::kLong);
  auto weights = torch::rand({total});
  std::span<const id_type> id_span(ids.data_ptr<int64_t>(), static_cast<std::size_t>(total));
  std::span<const id_type> off_span(offsets.data_ptr<int64_t>(), static_cast<std::size_t>(batch));
  auto out = torch::empty({batch, dim});
  recpipe::matrix_view<float> out_view(out.data_ptr<float>(), batch, dim);
  namespace F = torch::nn::functional;
  const auto fp32 = cpu::embedding_table_view::fp32(view(table));
  for (auto mode : {cpu::pooling::sum, cpu::pooling::mean}) {
    const auto torch_mode = mode == cpu::pooling::sum ? torch::nn::EmbeddingBagMode(torch::kSum)
                                                      : torch::nn::EmbeddingBagMode(torch::kMean);
    cpu::embedding_bag(fp32, id_span, off_span, {}, mode, out_view);
    const auto want = F::embedding_bag(ids, table, F::EmbeddingBagFuncOptions().offsets(offsets).mode(torch_mode));
    CHECK(rel(out, want) < 1e-5);
    // fp16 table: < 1e-3 of the fp32 result (11-bit mantissa); int8 row-wise: < 1e-2
    auto half = cpu::embedding_table::from_fp32(view(table), cpu::storage::fp16);
    cpu::embedding_bag(half.view(), id_span, off_span, {}, mode, out_view);
    CHECK(rel(out, want) < 1e-3);
    CHECK(rel(out, F::embedding_bag(ids, table.to(torch::kHalf).to(torch::kFloat),
                                    F::EmbeddingBagFuncOptions().offsets(offsets).mode(torch_mode))) < 1e-5);
    auto int8 = cpu::embedding_table::from_fp32(view(table), cpu::storage::int8_rowwise);
    cpu::embedding_bag(int8.view(), id_span, off_span, {}, mode, out_view);
    CHECK(rel(out, want) < 1e-2);
  }
  cpu::embedding_bag(fp32, id_span, off_span, span(weights), cpu::pooling::sum, out_view);
  CHECK(rel(out, F::embedding_bag(ids, table, F::EmbeddingBagFuncOptions().offsets(offsets).mode(torch::kSum).per_sample_weights(weights))) < 1e-5);
}

TEST_CASE("DCN-v2 cross network matches x0 * linear(x) + x in torch") {
  guard g;
  const int64_t batch = 600, d = 96, rank = 24;
  auto x0 = torch::randn({batch, d});
  auto w0 = torch::randn({d, d}) * 0.1, b0 = torch::randn({d}), v = torch::randn({rank, d}) * 0.2,
       u = torch::randn({d, rank}) * 0.2, b1 = torch::randn({d});
  auto want = x0 * torch::nn::functional::linear(x0, w0, b0) + x0;
  want = x0 * (torch::nn::functional::linear(torch::nn::functional::linear(want, v), u) + b1) + want;
  const std::vector<cpu::cross_params> layers = {{view(w0), {}, {}, span(b0)}, {{}, view(v), view(u), span(b1)}};
  auto out = torch::empty_like(x0);
  cpu::cross_network(view(x0), layers, {out.data_ptr<float>(), batch, d});
  CHECK(rel(out, want) < 1e-5);
}

TEST_CASE("dot interaction matches torch bmm + lower-triangle gather (PyTorch-DLRM)") {
  guard g;
  const int64_t batch = 64, f = 27, d = 128;
  auto t = torch::randn({batch, f, d});
  auto z = torch::bmm(t, t.transpose(1, 2));
  for (bool self : {false, true}) {
    std::vector<int64_t> li, lj;
    for (int64_t i = 0; i < f; ++i)
      for (int64_t j = 0; j < i + (self ? 1 : 0); ++j) li.push_back(i), lj.push_back(j);
    auto want = z.index({torch::indexing::Slice(), torch::tensor(li), torch::tensor(lj)});
    auto out = torch::empty({batch, static_cast<int64_t>(li.size())});
    cpu::dot_interaction({t.data_ptr<float>(), batch, f * d}, f, self, {out.data_ptr<float>(), batch, li.size()});
    CHECK(rel(out, want) < 1e-5);
  }
}

TEST_CASE("multi_head_attention matches torch nn::MultiheadAttention with causal and key-padding masks") {
  guard g;
  const int64_t batch = 6, max_len = 11, e = 64, heads = 2;
  const std::vector<std::size_t> lengths = {11, 1, 5, 8, 2, 11};
  torch::nn::MultiheadAttention mha(torch::nn::MultiheadAttentionOptions(e, heads));
  mha->eval();
  auto x = torch::randn({batch, max_len, e});
  auto padding = torch::zeros({batch, max_len}, torch::kBool);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = static_cast<int64_t>(lengths[static_cast<std::size_t>(b)]); t < max_len; ++t) padding[b][t] = true;
  const cpu::mha_weights w{view(mha->in_proj_weight), span(mha->in_proj_bias), view(mha->out_proj->weight),
                           span(mha->out_proj->bias), static_cast<std::size_t>(heads)};
  for (bool causal : {false, true}) {
    // the C++ API adds attn_mask to the scores (a bool mask would add 1), so pass -inf above the diagonal
    auto mask = causal ? torch::triu(torch::full({max_len, max_len}, -INFINITY), 1) : torch::Tensor();
    auto xs = x.transpose(0, 1);  // torch C++ MHA is sequence-first
    auto want = std::get<0>(mha->forward(xs, xs, xs, padding, false, mask)).transpose(0, 1).contiguous();
    auto out = torch::empty({batch, max_len, e});
    cpu::multi_head_attention({x.data_ptr<float>(), batch * max_len, e}, lengths, max_len, w, causal,
                              {out.data_ptr<float>(), batch * max_len, e});
    auto valid = padding.logical_not();
    CAPTURE(causal);
    CHECK(rel(out.index({valid}), want.index({valid})) < 1e-5);
    CHECK(out.index({padding}).abs().max().item<float>() == 0.0f);
  }
}

TEST_CASE("top_k matches torch::topk on distinct scores") {
  guard g;
  auto scores = torch::randperm(200000, torch::kFloat) / 7.0;
  std::vector<id_type> ids(100);
  std::vector<float> best(100);
  cpu::top_k(span(scores), {}, 100, ids, best);
  auto [values, indices] = torch::topk(scores, 100);
  for (std::size_t i = 0; i < 100; ++i) {
    CHECK(ids[i] == indices[static_cast<int64_t>(i)].item<int64_t>());
    CHECK(best[i] == values[static_cast<int64_t>(i)].item<float>());
  }
}
