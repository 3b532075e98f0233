// SPDX-License-Identifier: Apache-2.0
// Dense layers, feature crossing and attention on the GPU against the CPU backend (needs a GPU; exits 77 without).
#include <doctest/doctest.h>

#include <recpipe/cuda/attention.cuh>
#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/blas.cuh>
#include <recpipe/cuda/cross.cuh>
#include <recpipe/cuda/dense.cuh>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <span>
#include <tuple>
#include <vector>

#include <recpipe/cpu/attention.hpp>
#include <recpipe/cpu/cross.hpp>
#include <recpipe/cpu/dense.hpp>

#include "common/cuda_fixtures.cuh"

namespace rc = recpipe::cuda;
using recpipe::matrix_view;

namespace {
const bool device_present = (recpipe_test::exit_unless_device(), true);

using recpipe_test::random_vector;

using recpipe_test::twin;

// Relative to the largest magnitude of the reference: summation orders differ (cuBLAS vs OpenBLAS).
void check_close(const twin& want, const twin& got, double tolerance = 2e-5) {
  double peak = 1e-30, error = 0;
  for (std::size_t r = 0; r < want.rows; ++r)
    for (std::size_t c = 0; c < want.cols; ++c) {
      const double w = want.host[r * want.stride + c], g = got.host[r * got.stride + c];
      peak = std::max(peak, std::abs(w));
      error = std::max(error, std::abs(w - g));
    }
  CHECK(error <= tolerance * peak);
}
}  // namespace

TEST_CASE("linear and mlp match cpu::linear / cpu::mlp for every activation, fused (cuBLASLt) and fallback paths") {
  rc::cuda_backend backend;
  rc::blas_handle blas;
  std::mt19937 rng(1);
  using recpipe::math::activation;
  for (bool fused : {true, false}) {
    // false: cublasSgemm + the recpipe epilogue kernel, the path a shape without a cuBLASLt
    // algorithm takes.
    blas.set_fused_epilogues(fused);
    for (std::size_t batch : {1u, 7u, 300u})
      for (activation act : {activation::none, activation::relu, activation::gelu, activation::gelu_tanh,
                             activation::sigmoid}) {
        CAPTURE(fused);
        CAPTURE(batch);
        CAPTURE(static_cast<int>(act));
        twin x(backend, batch, 37, rng, 3), w(backend, 19, 37, rng, 1), y(backend, batch, 19, rng, 2),
            want(backend, batch, 19, rng, 2);
        // One spare float in front: bias.subspan(1) is only 4-byte aligned, which keeps the bias in
        // the recpipe kernel even where cuBLASLt runs the GEMM.
        const std::vector<float> bias_storage = random_vector(20, rng);
        const std::vector<float> bias(bias_storage.begin() + 1, bias_storage.end());
        auto d_bias_storage = rc::to_device(backend, std::span<const float>(bias_storage));
        const rc::device_span<const float> d_bias = d_bias_storage.const_span().subspan(1, 19);
        auto d_aligned_bias = rc::to_device(backend, std::span<const float>(bias));
        recpipe::cpu::linear(x.cview(), w.cview(), bias, want.view(), act);
        for (const rc::device_span<const float> b : {d_aligned_bias.const_span(), d_bias}) {
          RECPIPE_CUDA_TRY(rc::linear(backend, blas, x.dcview(), w.dcview(), b, y.dview(), act));
          y.fetch(backend);
          check_close(want, y);
        }
        RECPIPE_CUDA_TRY(rc::linear(backend, blas, x.dcview(), w.dcview(), {}, y.dview(), act));
        recpipe::cpu::linear(x.cview(), w.cview(), {}, want.view(), act);
        y.fetch(backend);
        check_close(want, y);
      }
  }
  blas.set_fused_epilogues(true);
  // A plain aligned shape must get a cuBLASLt algorithm (else every GEMM silently takes the fallback).
  {
    rc::blas_handle fresh;
    twin x(backend, 256, 64, rng), w(backend, 32, 64, rng), y(backend, 256, 32, rng), want(backend, 256, 32, rng);
    const std::vector<float> bias = random_vector(32, rng);
    auto d_bias = rc::to_device(backend, std::span<const float>(bias));
    RECPIPE_CUDA_TRY(rc::linear(backend, fresh, x.dcview(), w.dcview(), d_bias.const_span(), y.dview(), activation::relu));
    REQUIRE(fresh.plans().size() == 1);
    using recpipe::cuda::detail::pointer_alignment;
    const recpipe::cuda::detail::lt_plan_key key{256, 32, 64, 64, 64, 32, CUBLASLT_EPILOGUE_RELU_BIAS,
                                                 pointer_alignment(x.device.data()), pointer_alignment(w.device.data()),
                                                 pointer_alignment(y.device.data()), pointer_alignment(d_bias.data())};
    REQUIRE(pointer_alignment(d_bias.data()) >= 16);  // pool allocations: the bias goes into the matmul
    REQUIRE(fresh.plans().find(key) != nullptr);
    CHECK(fresh.plans().find(key)->usable);
    RECPIPE_CUDA_TRY(rc::linear(backend, fresh, x.dcview(), w.dcview(), d_bias.const_span(), y.dview(), activation::relu));
    CHECK(fresh.plans().size() == 1);  // the second call reuses the plan
    recpipe::cpu::linear(x.cview(), w.cview(), bias, want.view(), activation::relu);
    y.fetch(backend);
    check_close(want, y);
  }
  // NaN pre-activations: the CPU's ReLU keeps NaN (as torch.relu). The fallback path's kernel does
  // too; cuBLASLt's fused ReLU is documented as max(x, 0), so whether it does is recorded here
  // (a warning, not a failure: docs/cuda.md says which it is once this has run on a GPU).
  for (bool fused : {false, true}) {
    blas.set_fused_epilogues(fused);
    twin x(backend, 4, 16, rng), w(backend, 8, 16, rng), y(backend, 4, 8, rng);
    x.host[16 + 3] = std::nanf("");  // row 1 is all NaN after the product
    x.device = rc::to_device(backend, std::span<const float>(x.host));
    RECPIPE_CUDA_TRY(rc::linear(backend, blas, x.dcview(), w.dcview(), {}, y.dview(), activation::relu));
    y.fetch(backend);
    bool all_nan = true;
    for (std::size_t c = 0; c < 8; ++c) all_nan = all_nan && std::isnan(y.host[8 + c]);
    if (fused) WARN_MESSAGE(all_nan, "cuBLASLt's fused ReLU epilogue maps a NaN pre-activation to a number");
    else CHECK(all_nan);
    CHECK(!std::isnan(y.host[0]));
  }
  blas.set_fused_epilogues(true);
  // A three-layer MLP (ReLU, ReLU, none) with a bias-less middle layer, both paths.
  twin x(backend, 65, 40, rng), w0(backend, 64, 40, rng), w1(backend, 32, 64, rng), w2(backend, 3, 32, rng);
  const std::vector<float> b0 = random_vector(64, rng), b2 = random_vector(3, rng);
  auto d_b0 = rc::to_device(backend, std::span<const float>(b0));
  auto d_b2 = rc::to_device(backend, std::span<const float>(b2));
  const std::vector<recpipe::cpu::linear_layer> cpu_layers = {
      {w0.cview(), b0, activation::relu}, {w1.cview(), {}, activation::relu}, {w2.cview(), b2, activation::none}};
  const std::vector<rc::linear_layer> gpu_layers = {{w0.dcview(), d_b0.const_span(), activation::relu},
                                                    {w1.dcview(), {}, activation::relu},
                                                    {w2.dcview(), d_b2.const_span(), activation::none}};
  twin want(backend, 65, 3, rng), got(backend, 65, 3, rng);
  std::vector<float> scratch(recpipe::cpu::mlp_scratch_size(65, cpu_layers));
  recpipe::cpu::mlp(x.cview(), cpu_layers, want.view(), scratch);
  for (bool fused : {true, false}) {
    CAPTURE(fused);
    blas.set_fused_epilogues(fused);
    RECPIPE_CUDA_TRY(rc::mlp(backend, blas, x.dcview(), gpu_layers, got.dview()));
    got.fetch(backend);
    check_close(want, got, 1e-4);
  }
  blas.set_fused_epilogues(true);
  CHECK_THROWS_WITH_AS(rc::mlp(backend, blas, x.dcview(), std::span<const rc::linear_layer>(gpu_layers).subspan(1),
                               got.dview()),
                       doctest::Contains("layers[0].weight is [32, 64] but its input has 40 columns"), recpipe::error);
}

TEST_CASE("cross_network, cross_layer and cross_layer_low_rank match the CPU, full, low rank and mixed") {
  rc::cuda_backend backend;
  rc::blas_handle blas;
  std::mt19937 rng(2);
  // fused: the bias rides in cuBLASLt's GEMM epilogue (the kernel does x0 * p + xl); not fused:
  // cublasSgemm and the kernel adds the bias (the fallback path).
  for (bool fused : {true, false})
  for (std::size_t batch : {1u, 5u, 513u})
    for (std::size_t d : {1u, 13u, 64u, 200u}) {
      blas.set_fused_epilogues(fused);
      CAPTURE(fused);
      CAPTURE(batch);
      CAPTURE(d);
      const std::size_t rank = std::max<std::size_t>(1, d / 4);
      twin x0(backend, batch, d, rng, 1), w0(backend, d, d, rng, 0, 0.2f), down(backend, rank, d, rng, 0, 0.3f),
          up(backend, d, rank, rng, 2, 0.3f), w2(backend, d, d, rng, 3, 0.2f);
      const std::vector<float> b0 = random_vector(d, rng), b1_storage = random_vector(d + 1, rng);
      const std::vector<float> b1(b1_storage.begin() + 1, b1_storage.end());
      auto d_b0 = rc::to_device(backend, std::span<const float>(b0));
      // Layer 1's bias sits one float into its buffer: 4-byte aligned, so the kernel adds it.
      auto d_b1_storage = rc::to_device(backend, std::span<const float>(b1_storage));
      const rc::device_span<const float> d_b1 = d_b1_storage.const_span().subspan(1, d);
      const std::vector<recpipe::cpu::cross_params> cpu_layers = {
          {w0.cview(), {}, {}, b0}, {{}, down.cview(), up.cview(), b1}, {w2.cview(), {}, {}, {}}};
      const std::vector<rc::cross_params> gpu_layers = {{w0.dcview(), {}, {}, d_b0.const_span()},
                                                        {{}, down.dcview(), up.dcview(), d_b1},
                                                        {w2.dcview(), {}, {}, {}}};
      twin want(backend, batch, d, rng, 2), got(backend, batch, d, rng, 2);
      recpipe::cpu::cross_network(x0.cview(), cpu_layers, want.view());
      RECPIPE_CUDA_TRY(rc::cross_network(backend, blas, x0.dcview(), gpu_layers, got.dview()));
      got.fetch(backend);
      check_close(want, got, 1e-4);
      // Single layers, in place (out == xl).
      twin xl(backend, batch, d, rng, 1);
      twin want_l(backend, batch, d, rng, 1);
      want_l.host = xl.host;
      recpipe::cpu::cross_layer(x0.cview(), want_l.cview(), w0.cview(), b0, want_l.view());
      RECPIPE_CUDA_TRY(rc::cross_layer(backend, blas, x0.dcview(), xl.dcview(), w0.dcview(), d_b0.const_span(), xl.dview()));
      xl.fetch(backend);
      check_close(want_l, xl);
      recpipe::cpu::cross_layer_low_rank(x0.cview(), want_l.cview(), down.cview(), up.cview(), b1, want_l.view());
      RECPIPE_CUDA_TRY(rc::cross_layer_low_rank(backend, blas, x0.dcview(), xl.dcview(), down.dcview(), up.dcview(), d_b1,
                                                xl.dview()));
      xl.fetch(backend);
      check_close(want_l, xl);
    }
  twin x0(backend, 4, 8, rng), w(backend, 8, 7, rng);
  const std::vector<rc::cross_params> bad = {{w.dcview(), {}, {}, {}}};
  CHECK_THROWS_WITH_AS(rc::cross_network(backend, blas, x0.dcview(), bad, x0.dview()),
                       doctest::Contains("layer 0 weight must be 8 x 8 (got 8 x 7)"), recpipe::error);
  const std::vector<rc::cross_params> none;
  twin copy(backend, 4, 8, rng);
  RECPIPE_CUDA_TRY(rc::cross_network(backend, blas, x0.dcview(), none, copy.dview()));  // no layers: out = x0
  copy.fetch(backend);
  CHECK(copy.host == x0.host);
}

TEST_CASE("dot_interaction and fm_second_order match the CPU (shared-memory and global paths)") {
  rc::cuda_backend backend;
  std::mt19937 rng(3);
  // f * d * 4 bytes above 48 KiB (27 x 512) takes the global-memory path.
  for (std::size_t f : {1u, 2u, 5u, 27u})
    for (std::size_t d : {1u, 3u, 16u, 33u, 128u, 512u})
      for (bool self : {false, true}) {
        CAPTURE(f);
        CAPTURE(d);
        CAPTURE(self);
        const std::size_t batch = 37, pairs = recpipe::cpu::interaction_size(f, self);
        twin feats(backend, batch, f * d, rng, 5);
        twin want(backend, batch, pairs + 4, rng), got(backend, batch, pairs + 4, rng);  // sub-views: sentinels stay
        got.host = want.host;
        RECPIPE_CUDA_TRY(rc::copy_to_device(backend, std::span<const float>(got.host), got.device.span()));
        recpipe::cpu::dot_interaction(feats.cview(), f, self, {want.host.data(), batch, pairs, want.stride});
        RECPIPE_CUDA_TRY(
            rc::dot_interaction(backend, feats.dcview(), f, self, {got.device.data(), batch, pairs, got.stride}));
        got.fetch(backend);
        check_close(want, got);
        CHECK(got.host[pairs] == want.host[pairs]);
        if (self) continue;
        std::vector<float> fm_want(batch);
        recpipe::cpu::fm_second_order(feats.cview(), f, fm_want);
        rc::device_buffer<float> fm_got(backend, batch);
        RECPIPE_CUDA_TRY(rc::fm_second_order(backend, feats.dcview(), f, fm_got.span()));
        const std::vector<float> fm = rc::to_host(backend, fm_got.const_span());
        double squares = 1e-30;
        for (float v : feats.host) squares += static_cast<double>(v) * v;
        for (std::size_t b = 0; b < batch; ++b) CHECK(std::abs(fm[b] - fm_want[b]) <= 1e-5 * squares / batch);
      }
  twin feats(backend, 2, 10, rng), out(backend, 2, 3, rng);
  CHECK_THROWS_WITH_AS(rc::dot_interaction(backend, feats.dcview(), 3, false, out.dview()),
                       doctest::Contains("not a multiple of num_features = 3"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::dot_interaction(backend, feats.dcview(), 5, false, out.dview()),
                       doctest::Contains("out is 2 x 3 but must be 2 x 10"), recpipe::error);
}

TEST_CASE("multi_head_attention matches cpu::multi_head_attention: causal or not, padded sessions, lengths 0..200") {
  rc::cuda_backend backend;
  rc::blas_handle blas;
  std::mt19937 rng(4);
  for (const auto& [e, heads, max_len] : {std::tuple<std::size_t, std::size_t, std::size_t>{64, 2, 50}, {32, 1, 200},
                                          {48, 3, 7}, {128, 2, 1}}) {
    CAPTURE(e);
    CAPTURE(heads);
    CAPTURE(max_len);
    std::vector<std::size_t> lengths = {max_len, 0, 1, max_len / 2, max_len};
    std::vector<std::int64_t> device_lengths(lengths.begin(), lengths.end());
    auto d_lengths = rc::to_device(backend, std::span<const std::int64_t>(device_lengths));
    const std::size_t rows = lengths.size() * max_len;
    twin x(backend, rows, e, rng), in_w(backend, 3 * e, e, rng, 0, 0.2f), out_w(backend, e, e, rng, 0, 0.2f);
    const std::vector<float> in_b = random_vector(3 * e, rng), out_b = random_vector(e, rng);
    auto d_in_b = rc::to_device(backend, std::span<const float>(in_b));
    auto d_out_b = rc::to_device(backend, std::span<const float>(out_b));
    const recpipe::cpu::mha_weights cw{in_w.cview(), in_b, out_w.cview(), out_b, heads};
    const rc::mha_weights gw{in_w.dcview(), d_in_b.const_span(), out_w.dcview(), d_out_b.const_span(), heads};
    for (bool causal : {false, true}) {
      CAPTURE(causal);
      twin want(backend, rows, e, rng), got(backend, rows, e, rng, 1);
      recpipe::cpu::multi_head_attention(x.cview(), lengths, max_len, cw, causal, want.view());
      RECPIPE_CUDA_TRY(rc::multi_head_attention(backend, blas, x.dcview(), d_lengths.const_span(), max_len, gw, causal,
                                                got.dview()));
      got.fetch(backend);
      check_close(want, got, 1e-4);
      for (std::size_t t = 0; t < max_len; ++t) CHECK(got.host[(max_len + t) * got.stride] == 0.0f);  // session 1 is empty
    }
  }
  twin x(backend, 10, 8, rng), w(backend, 24, 8, rng), o(backend, 8, 8, rng);
  rc::device_buffer<std::int64_t> lengths(backend, 2);
  CHECK_THROWS_WITH_AS(rc::multi_head_attention(backend, blas, x.dcview(), lengths.const_span(), 5,
                                                {w.dcview(), {}, o.dcview(), {}, 3}, false, x.dview()),
                       doctest::Contains("num_heads = 3 must be >= 1 and divide the embedding width 8"), recpipe::error);
}
