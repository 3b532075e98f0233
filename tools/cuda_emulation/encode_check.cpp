// SPDX-License-Identifier: Apache-2.0
// Development check without a GPU (not part of the build): runs the session transformer's real
// CUDA kernels (cuda/kernels/attention.cuh, staged and not; cuda/kernels/transformer.cuh) on the
// CPU through shim/recpipe/cuda/detail/config.cuh (one std::thread per CUDA thread, std::barrier
// for __syncthreads / __syncwarp / shuffles), wired as cuda::session_transformer::run and
// transformer_detail::block wire them (cpu::linear in place of the cuBLAS GEMMs; keep the two in
// step when either changes), and compares the encode with models::session_transformer::encode
// for six config variants. From the repository root (about 2 minutes, mostly thread creation):
//   g++ -std=gnu++20 -O1 -DRECPIPE_HAS_CBLAS=1 -Itools/cuda_emulation/shim -Itests -Iinclude
//       -isystem /usr/include/eigen3 -isystem /usr/include/x86_64-linux-gnu/openblas-pthread
//       tools/cuda_emulation/encode_check.cpp -o /tmp/encode_check -lopenblas -pthread
//   /tmp/encode_check
// Exit status 0 when every session vector is within 1e-4 relative + 1e-5 absolute of the CPU's.
#include <recpipe/cpu/attention.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/models/session_transformer.hpp>
#include <recpipe/math/transformer.hpp>
#include <recpipe/cuda/kernels/attention.cuh>
#include <recpipe/cuda/kernels/transformer.cuh>
#include "common/tiny_models.hpp"
#include <cstdio>
#include <random>
using namespace recpipe;
namespace models = recpipe::models;
namespace K = recpipe::cuda::kernels;
using row_mask = K::row_mask;
RECPIPE_CUDA_NAMESPACE_BEGIN
namespace kernels { float shared[1 << 18]; }
RECPIPE_CUDA_NAMESPACE_END
static int staged_mode = 0;
using i64 = std::int64_t;
struct rn { const float* src; std::size_t src_stride; const float* bias; const float* residual; std::size_t residual_stride;
  float* sum; std::size_t sum_stride; float* norm; std::size_t norm_stride; const float* gamma; const float* beta; float eps;
  std::size_t rows; std::uint32_t e; row_mask mask; const i64* lengths; std::uint32_t window; };
static void residual_norm(rn p) {
  K::residual_norm_params q;
  q.src = p.src; q.src_stride = p.src_stride; q.bias = p.bias; q.residual = p.residual; q.residual_stride = p.residual_stride;
  q.sum = p.sum; q.sum_stride = p.sum_stride; q.norm = p.norm; q.norm_stride = p.norm_stride; q.gamma = p.gamma; q.beta = p.beta;
  q.eps = p.eps; q.rows = p.rows; q.e = p.e; q.mask = p.mask; q.lengths = p.lengths; q.window = p.window;
  emu_launch(3, 1, 256, K::residual_norm_kernel<256>, q);
}
static const float* dn(std::span<const float> s) { return s.empty() ? nullptr : s.data(); }
enum class block_kind { post_norm, pre_norm, query_norm };
static void context(matrix_view<const float> q, matrix_view<const float> x, const i64* lengths, std::size_t sessions, std::size_t max_len,
                    const cpu::mha_weights& w, float* ctx) {
  const std::size_t e = x.cols(), rows = x.rows(), hd = e / w.num_heads;
  std::vector<float> qkv(rows * 3 * e);
  auto bias = [&](std::size_t f, std::size_t n) { return w.in_proj_bias.empty() ? std::span<const float>() : w.in_proj_bias.subspan(f, n); };
  cpu::linear(q, w.in_proj_weight.middle_rows(0, e), bias(0, e), matrix_view<float>(qkv.data(), rows, e, 3 * e));
  cpu::linear(x, w.in_proj_weight.middle_rows(e, 2 * e), bias(e, 2 * e), matrix_view<float>(qkv.data() + e, rows, 2 * e, 3 * e));
  K::attention_params p;
  p.qkv = qkv.data(); p.qkv_stride = 3 * e; p.lengths = lengths; p.sessions = (std::uint32_t)sessions; p.max_len = (std::uint32_t)max_len;
  p.e = (std::uint32_t)e; p.head_dim = (std::uint32_t)hd; p.scale = 1.0f / std::sqrt((float)hd); p.causal = true; p.context = ctx; p.context_stride = e;
  if (staged_mode) emu_launch((unsigned)sessions, (unsigned)w.num_heads, 256, K::attention_kernel<256, true>, p);
  else emu_launch((unsigned)sessions, (unsigned)w.num_heads, 256, K::attention_kernel<256, false>, p);
}
static void block(block_kind kind, matrix_view<const float> x, const i64* lengths, std::size_t sessions, std::size_t max_len,
                  const cpu::transformer_layer_weights& w, row_mask mask, const i64* mask_lengths, matrix_view<float> out,
                  float* ba, float* bh, float* bc) {
  const std::size_t rows = x.rows(), e = x.cols(), ff = w.linear1_weight.rows();
  const matrix_view<float> a(ba, rows, e), hidden(bh, rows, ff), ctx(bc, rows, e);
  auto norm_pass = [&](const float* src, std::size_t ss, std::span<const float> bias, const float* residual, std::size_t rs, float* sum, std::size_t sums,
                       float* norm, std::size_t ns, std::span<const float> g, std::span<const float> bb, row_mask m) {
    residual_norm({src, ss, dn(bias), residual, rs, sum, sums, norm, ns, dn(g), dn(bb), w.eps, rows, (std::uint32_t)e, m, mask_lengths, (std::uint32_t)max_len});
  };
  const std::size_t xs = x.stride(), os = out.stride();
  auto gemm = [&](matrix_view<const float> in, matrix_view<const float> weight, matrix_view<float> y) { cpu::linear(in, weight, {}, y); };
  auto context_of = [&](matrix_view<const float> q, matrix_view<const float> kv) { context(q, kv, lengths, sessions, max_len, w.attention, bc); };
  switch (kind) {
    case block_kind::post_norm:
      context_of(x, x); gemm(ctx, w.attention.out_proj_weight, out);
      norm_pass(out.data(), os, w.attention.out_proj_bias, x.data(), xs, nullptr, 0, a.data(), e, w.norm1_weight, w.norm1_bias, row_mask::none);
      cpu::linear(a, w.linear1_weight, w.linear1_bias, hidden, w.act);
      gemm(hidden, w.linear2_weight, out);
      return norm_pass(out.data(), os, w.linear2_bias, a.data(), e, nullptr, 0, out.data(), os, w.norm2_weight, w.norm2_bias, mask);
    case block_kind::pre_norm:
      norm_pass(x.data(), xs, {}, nullptr, 0, nullptr, 0, a.data(), e, w.norm1_weight, w.norm1_bias, row_mask::none);
      context_of(a, a); gemm(ctx, w.attention.out_proj_weight, out);
      norm_pass(out.data(), os, w.attention.out_proj_bias, x.data(), xs, out.data(), os, a.data(), e, w.norm2_weight, w.norm2_bias, row_mask::none);
      cpu::linear(a, w.linear1_weight, w.linear1_bias, hidden, w.act);
      gemm(hidden, w.linear2_weight, a);
      return norm_pass(a.data(), e, w.linear2_bias, out.data(), os, out.data(), os, nullptr, 0, {}, {}, mask);
    default:
      norm_pass(x.data(), xs, {}, nullptr, 0, nullptr, 0, a.data(), e, w.norm1_weight, w.norm1_bias, row_mask::none);
      context_of(a, x); gemm(ctx, w.attention.out_proj_weight, out);
      norm_pass(out.data(), os, w.attention.out_proj_bias, a.data(), e, nullptr, 0, out.data(), os, w.norm2_weight, w.norm2_bias, row_mask::none);
      cpu::linear(out, w.linear1_weight, w.linear1_bias, hidden, w.act);
      gemm(hidden, w.linear2_weight, a);
      return norm_pass(a.data(), e, w.linear2_bias, out.data(), os, out.data(), os, nullptr, 0, {}, {}, mask);
  }
}
static std::vector<float> emu_encode(const models::session_transformer& model, const std::vector<id_type>& offsets, const std::vector<id_type>& items) {
  // The host half of cuda::session_transformer::encode: the window layout of the ids.
  const auto& spec = model.config();
  const std::size_t e = spec.embedding_dim, batch = offsets.size() - 1;
  std::vector<std::vector<id_type>> kept(batch); std::size_t longest = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    for (auto i = (std::size_t)offsets[b]; i < (std::size_t)offsets[b + 1]; ++i)
      if (spec.padding_id < 0 || items[i] != spec.padding_id) kept[b].push_back(items[i]);
    if (kept[b].size() > spec.max_length) kept[b].erase(kept[b].begin(), kept[b].end() - (std::ptrdiff_t)spec.max_length);
    longest = std::max(longest, kept[b].size());
  }
  std::vector<float> out(batch * e, 0.0f);
  if (longest == 0) return out;
  const std::size_t window = spec.attend_to_padding ? spec.max_length : longest;
  std::vector<i64> host(batch * window + batch, spec.padding_id);
  for (std::size_t b = 0; b < batch; ++b) {
    const std::size_t len = kept[b].size(), first = spec.attend_to_padding ? window - len : 0;
    std::copy(kept[b].begin(), kept[b].end(), host.begin() + (std::ptrdiff_t)(b * window + first));
    host[batch * window + b] = (i64)len;
  }
  const i64* slots = host.data(); const i64* lengths = host.data() + batch * window;
  const std::size_t rows = batch * window; const bool full = spec.attend_to_padding;
  std::vector<float> X(rows * e), Y(rows * e), A(rows * e), H(rows * spec.ffn_dim), C(rows * e);
  float* x = X.data(); float* y = Y.data();
  {
    K::embed_params p;
    p.slots = slots; p.lengths = lengths; p.sessions = (std::uint32_t)batch; p.window = (std::uint32_t)window; p.max_length = (std::uint32_t)spec.max_length;
    p.full_window = full; p.left = spec.padding == models::session_padding::left; p.positions = models::to_position_rule(spec.positions);
    p.items = model.item_embeddings().data(); p.items_stride = model.item_embeddings().stride(); p.num_items = spec.num_items; p.padding_id = spec.padding_id;
    p.positions_table = model.position_embeddings().data(); p.positions_stride = model.position_embeddings().stride(); p.scale = spec.embedding_scale;
    p.norm_gamma = dn(model.input_norm_weight()); p.norm_beta = dn(model.input_norm_bias()); p.input_norm = spec.input_norm; p.timeline_mask = spec.timeline_mask;
    p.eps = spec.eps; p.out = x; p.out_stride = e; p.e = (std::uint32_t)e;
    emu_launch(2, 1, 256, K::embed_kernel<256>, p);
  }
  const i64* attention_lengths = full ? nullptr : lengths;
  const row_mask mask = full ? (spec.timeline_mask ? row_mask::prefix : row_mask::none) : row_mask::suffix;
  const block_kind kind = spec.query_only_norm ? block_kind::query_norm : spec.norm_first ? block_kind::pre_norm : block_kind::post_norm;
  for (const auto& w : model.layers()) {
    block(kind, matrix_view<const float>(x, rows, e), attention_lengths, batch, window, w, mask, lengths, matrix_view<float>(y, rows, e), A.data(), H.data(), C.data());
    std::swap(x, y);
  }
  emu_launch(1, 1, 256, K::last_row_kernel<256>, (const float*)x, e, lengths, (std::uint32_t)batch, (std::uint32_t)window, full,
             dn(model.final_norm_weight()), dn(model.final_norm_bias()), spec.final_norm, spec.eps, out.data(), e, (std::uint32_t)e);
  return out;
}
int main() {
  std::mt19937 rng(24);
  int bad_total = 0;
  for (staged_mode = 0; staged_mode < 2; ++staged_mode)
  for (const auto& nc : recpipe::testing::session_transformer_variants()) {
    const models::session_transformer model = recpipe::testing::random_session_transformer(nc.config);
    const std::size_t e = model.embedding_dim();
    for (const std::vector<std::size_t>& lengths : {std::vector<std::size_t>{1, 7, 50, 200, 0, 230, 3}, std::vector<std::size_t>{1}, std::vector<std::size_t>{7, 7}, std::vector<std::size_t>{0, 0}}) {
      std::vector<id_type> offsets = {0}, items;
      std::uniform_int_distribution<id_type> item(0, static_cast<id_type>(nc.config.num_items) - 1);
      for (std::size_t len : lengths) { for (std::size_t i = 0; i < len; ++i) items.push_back(item(rng)); offsets.push_back((id_type)items.size()); }
      if (!items.empty()) items[items.size() / 2] = 0;
      const std::size_t batch = lengths.size();
      recpipe::matrix<float> want(batch, e);
      model.encode(offsets, items, want.view());
      const auto got = emu_encode(model, offsets, items);
      double worst = 0; int bad = 0;
      for (std::size_t i = 0; i < batch * e; ++i) { double w = want.view().data()[i], g = got[i]; double err = std::abs(w - g); worst = std::max(worst, err); if (!(err <= 1e-5 + 1e-4 * std::abs(w))) ++bad; }
      std::printf("staged %d %-32s batch %zu worst %.3g bad %d\n", staged_mode, nc.name.c_str(), batch, worst, bad);
      bad_total += bad;
    }
  }
  return bad_total != 0;
}
