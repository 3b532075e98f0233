// SPDX-License-Identifier: Apache-2.0
// Attention with a separate query, LayerNorm, the encoder blocks and the session transformer's
// encode on the GPU against the CPU kernels and model (needs a GPU; exits 77 without).
#include <doctest/doctest.h>

#include <recpipe/cuda/attention.cuh>
#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/blas.cuh>
#include <recpipe/cuda/session_transformer.cuh>
#include <recpipe/cuda/transformer.cuh>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include <recpipe/cpu/attention.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/models/session_transformer.hpp>

#include "common/tiny_models.hpp"

#include "common/cuda_fixtures.cuh"

namespace rc = recpipe::cuda;
namespace models = recpipe::models;
using recpipe::id_type;
using recpipe::matrix_view;

namespace {
const bool device_present = (recpipe_test::exit_unless_device(), true);

using recpipe_test::random_vector;

using recpipe_test::twin;

struct vec_twin {
  std::vector<float> host;
  rc::device_buffer<float> device;
  vec_twin(rc::cuda_backend& backend, std::size_t n, std::mt19937& rng, float scale = 1.0f)
      : host(random_vector(n, rng, scale)), device(rc::to_device(backend, std::span<const float>(host))) {}
  std::span<const float> h() const { return host; }
  rc::device_span<const float> d() const { return device.const_span(); }
};

// |got - want| <= abs + rel * |want| element by element (the task's 1e-4 relative / 1e-5 absolute
// for the model; the single kernels are held to the largest magnitude like test_cuda_cross).
void check_elements(const std::vector<float>& want, std::size_t want_stride, const std::vector<float>& got,
                    std::size_t got_stride, std::size_t rows, std::size_t cols, double rel, double abs) {
  std::size_t bad = 0;
  double worst = 0;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) {
      const double w = want[r * want_stride + c], g = got[r * got_stride + c];
      const double err = std::abs(w - g);
      if (!(err <= abs + rel * std::abs(w))) ++bad;
      worst = std::max(worst, err);
    }
  CAPTURE(worst);
  CHECK(bad == 0);
}

struct layer_twin {
  vec_twin in_b, out_b, b1, b2, n1w, n1b, n2w, n2b;
  twin in_w, out_w, w1, w2;
  layer_twin(rc::cuda_backend& backend, std::size_t e, std::size_t f, std::mt19937& rng)
      : in_b(backend, 3 * e, rng, 0.1f), out_b(backend, e, rng, 0.1f), b1(backend, f, rng, 0.1f),
        b2(backend, e, rng, 0.1f), n1w(backend, e, rng), n1b(backend, e, rng, 0.1f), n2w(backend, e, rng),
        n2b(backend, e, rng, 0.1f), in_w(backend, 3 * e, e, rng, 0, 0.2f), out_w(backend, e, e, rng, 0, 0.2f),
        w1(backend, f, e, rng, 0, 0.2f), w2(backend, e, f, rng, 0, 0.2f) {}
  recpipe::cpu::transformer_layer_weights cpu(std::size_t heads, recpipe::math::activation act, bool norm_first) const {
    recpipe::cpu::transformer_layer_weights w;
    w.attention = {in_w.cview(), in_b.h(), out_w.cview(), out_b.h(), heads};
    w.linear1_weight = w1.cview();
    w.linear1_bias = b1.h();
    w.linear2_weight = w2.cview();
    w.linear2_bias = b2.h();
    w.norm1_weight = n1w.h();
    w.norm1_bias = n1b.h();
    w.norm2_weight = n2w.h();
    w.norm2_bias = n2b.h();
    w.act = act;
    w.norm_first = norm_first;
    return w;
  }
  rc::transformer_layer_weights gpu(std::size_t heads, recpipe::math::activation act, bool norm_first) const {
    rc::transformer_layer_weights w;
    w.attention = {in_w.dcview(), in_b.d(), out_w.dcview(), out_b.d(), heads};
    w.linear1_weight = w1.dcview();
    w.linear1_bias = b1.d();
    w.linear2_weight = w2.dcview();
    w.linear2_bias = b2.d();
    w.norm1_weight = n1w.d();
    w.norm1_bias = n1b.d();
    w.norm2_weight = n2w.d();
    w.norm2_bias = n2b.d();
    w.act = act;
    w.norm_first = norm_first;
    return w;
  }
};

// Sessions of the given lengths, padded to max_len.
std::vector<std::size_t> lengths_for(std::size_t max_len) {
  return {max_len, 0, 1, std::min<std::size_t>(7, max_len), max_len / 2, max_len};
}
}  // namespace

TEST_CASE("multi_head_attention with a separate query matches the CPU overload: lengths 1, 7, 50, 200") {
  rc::cuda_backend backend;
  rc::blas_handle blas;
  std::mt19937 rng(21);
  for (const auto& [e, heads, max_len] : {std::tuple<std::size_t, std::size_t, std::size_t>{64, 2, 50}, {32, 1, 200},
                                          {48, 3, 7}, {128, 4, 1}, {64, 4, 200}}) {
    CAPTURE(e);
    CAPTURE(heads);
    CAPTURE(max_len);
    const std::vector<std::size_t> lengths = lengths_for(max_len);
    const std::vector<std::int64_t> device_lengths(lengths.begin(), lengths.end());
    auto d_lengths = rc::to_device(backend, std::span<const std::int64_t>(device_lengths));
    const std::size_t rows = lengths.size() * max_len;
    twin x(backend, rows, e, rng), q(backend, rows, e, rng, 3), in_w(backend, 3 * e, e, rng, 0, 0.2f),
        out_w(backend, e, e, rng, 0, 0.2f);
    vec_twin in_b(backend, 3 * e, rng), out_b(backend, e, rng);
    const bool biases = e != 48;  // one shape without biases (the split in-projection then takes none)
    const recpipe::cpu::mha_weights cw{in_w.cview(), biases ? in_b.h() : std::span<const float>(), out_w.cview(),
                                       biases ? out_b.h() : std::span<const float>(), heads};
    const rc::mha_weights gw{in_w.dcview(), biases ? in_b.d() : rc::device_span<const float>(), out_w.dcview(),
                             biases ? out_b.d() : rc::device_span<const float>(), heads};
    for (bool causal : {false, true}) {
      CAPTURE(causal);
      twin want(backend, rows, e, rng), got(backend, rows, e, rng, 1), self_got(backend, rows, e, rng);
      recpipe::cpu::multi_head_attention(q.cview(), x.cview(), lengths, max_len, cw, causal, want.view());
      RECPIPE_CUDA_TRY(rc::multi_head_attention(backend, blas, q.dcview(), x.dcview(), d_lengths.const_span(), max_len,
                                                gw, causal, got.dview()));
      got.fetch(backend);
      check_elements(want.host, want.stride, got.host, got.stride, rows, e, 1e-4, 1e-5);
      for (std::size_t t = 0; t < max_len; ++t) CHECK(got.host[(max_len + t) * got.stride] == 0.0f);  // empty session
      // query_x == x gives the self-attention overload's result.
      twin self_want(backend, rows, e, rng);
      recpipe::cpu::multi_head_attention(x.cview(), lengths, max_len, cw, causal, self_want.view());
      RECPIPE_CUDA_TRY(rc::multi_head_attention(backend, blas, x.dcview(), x.dcview(), d_lengths.const_span(), max_len,
                                                gw, causal, self_got.dview()));
      self_got.fetch(backend);
      check_elements(self_want.host, e, self_got.host, e, rows, e, 1e-4, 1e-5);
    }
  }
}

TEST_CASE("layer_norm matches cpu::layer_norm: affine or not, in place, padded strides") {
  rc::cuda_backend backend;
  rc::blas_handle blas;
  std::mt19937 rng(22);
  for (std::size_t e : {1u, 8u, 31u, 64u, 200u, 1000u}) {
    CAPTURE(e);
    twin x(backend, 37, e, rng, 2, 3.0f);
    vec_twin gamma(backend, e, rng), beta(backend, e, rng);
    for (int affine = 0; affine < 3; ++affine) {
      CAPTURE(affine);
      const std::span<const float> g = affine > 0 ? gamma.h() : std::span<const float>();
      const std::span<const float> b = affine > 1 ? beta.h() : std::span<const float>();
      twin want(backend, 37, e, rng), got(backend, 37, e, rng, 5);
      recpipe::cpu::layer_norm(x.cview(), g, b, want.view(), 1e-5f);
      RECPIPE_CUDA_TRY(rc::layer_norm(backend, x.dcview(), affine > 0 ? gamma.d() : rc::device_span<const float>(),
                                      affine > 1 ? beta.d() : rc::device_span<const float>(), got.dview(), 1e-5f));
      got.fetch(backend);
      check_elements(want.host, want.stride, got.host, got.stride, 37, e, 1e-5, 1e-5);
    }
    // In place.
    twin in_place(backend, 37, e, rng, 2, 3.0f), want(backend, 37, e, rng, 2);
    recpipe::cpu::layer_norm(in_place.cview(), gamma.h(), beta.h(), want.view(), 1e-5f);
    RECPIPE_CUDA_TRY(rc::layer_norm(backend, in_place.dcview(), gamma.d(), beta.d(), in_place.dview(), 1e-5f));
    in_place.fetch(backend);
    check_elements(want.host, want.stride, in_place.host, in_place.stride, 37, e, 1e-5, 1e-5);
  }
}

TEST_CASE("encoder blocks match the CPU: pre-norm, post-norm (GELU), the query-norm block, lengths 0..200") {
  rc::cuda_backend backend;
  rc::blas_handle blas;
  std::mt19937 rng(23);
  using recpipe::math::activation;
  for (const auto& [e, heads, ff, max_len] : {std::tuple<std::size_t, std::size_t, std::size_t, std::size_t>{64, 2, 128, 50},
                                              {32, 2, 64, 200}, {48, 3, 40, 7}, {16, 1, 16, 1}}) {
    CAPTURE(e);
    CAPTURE(max_len);
    const std::vector<std::size_t> lengths = lengths_for(max_len);
    const std::vector<std::int64_t> device_lengths(lengths.begin(), lengths.end());
    auto d_lengths = rc::to_device(backend, std::span<const std::int64_t>(device_lengths));
    const std::size_t rows = lengths.size() * max_len;
    twin x(backend, rows, e, rng);
    const layer_twin layer(backend, e, ff, rng);
    for (int variant = 0; variant < 3; ++variant) {
      CAPTURE(variant);
      const bool norm_first = variant != 1;
      const activation act = variant == 1 ? activation::gelu : activation::relu;
      twin want(backend, rows, e, rng), got(backend, rows, e, rng, 2);
      if (variant == 2) {
        recpipe::cpu::query_norm_encoder_layer(x.cview(), lengths, max_len, layer.cpu(heads, act, true), true, want.view());
        RECPIPE_CUDA_TRY(rc::query_norm_encoder_layer(backend, blas, x.dcview(), d_lengths.const_span(), max_len,
                                                      layer.gpu(heads, act, true), true, got.dview()));
      } else {
        recpipe::cpu::transformer_encoder_layer(x.cview(), lengths, max_len, layer.cpu(heads, act, norm_first), true,
                                                want.view());
        RECPIPE_CUDA_TRY(rc::transformer_encoder_layer(backend, blas, x.dcview(), d_lengths.const_span(), max_len,
                                                       layer.gpu(heads, act, norm_first), true, got.dview()));
      }
      got.fetch(backend);
      check_elements(want.host, want.stride, got.host, got.stride, rows, e, 1e-4, 1e-5);
    }
  }
}


TEST_CASE("session_transformer encode matches the CPU model for every variant: lengths 1, 7, 50, 200, longer, empty") {
  rc::cuda_backend backend;
  rc::blas_handle blas;
  std::mt19937 rng(24);
  for (const auto& nc : recpipe::testing::session_transformer_variants()) {
    CAPTURE(nc.name);
    const models::session_transformer model = recpipe::testing::random_session_transformer(nc.config);
    const rc::session_transformer gpu = rc::to_device(backend, model);
    const std::size_t e = model.embedding_dim();
    for (const std::vector<std::size_t>& lengths :
         {std::vector<std::size_t>{1, 7, 50, 200, 0, 230, 3}, std::vector<std::size_t>{1}, std::vector<std::size_t>{7, 7},
          std::vector<std::size_t>{0, 0}, std::vector<std::size_t>{}}) {
      CAPTURE(lengths.size());
      std::vector<id_type> offsets = {0}, items;
      std::uniform_int_distribution<id_type> item(0, static_cast<id_type>(nc.config.num_items) - 1);
      for (std::size_t len : lengths) {
        for (std::size_t i = 0; i < len; ++i) items.push_back(item(rng));  // includes padding ids now and then
        offsets.push_back(static_cast<id_type>(items.size()));
      }
      if (!items.empty()) items[items.size() / 2] = 0;  // a padding id for the variants with one
      const std::size_t batch = lengths.size();
      recpipe::matrix<float> want(batch, e);
      model.encode(offsets, items, want.view());
      rc::device_buffer<float> d_out(backend, std::max<std::size_t>(batch * (e + 3), 1));
      const matrix_view<float> out(d_out.data(), batch, e, e + 3);
      RECPIPE_CUDA_TRY(gpu.encode(backend, blas, offsets, items, out));
      const std::vector<float> got = rc::to_host(backend, d_out.const_span());
      std::vector<float> want_flat(want.view().data(), want.view().data() + batch * e);
      check_elements(want_flat, e, got, e + 3, batch, e, 1e-4, 1e-5);
      for (std::size_t b = 0; b < batch; ++b)
        if (lengths[b] == 0)
          for (std::size_t c = 0; c < e; ++c) CHECK(got[b * (e + 3) + c] == 0.0f);
    }
  }
}

TEST_CASE("session_transformer encode_padded gives encode's result, encode rejects what the CPU model rejects") {
  rc::cuda_backend backend;
  rc::blas_handle blas;
  models::session_transformer_config c;
  c.num_items = 100;
  c.embedding_dim = 32;
  c.max_length = 20;
  c.num_heads = 2;
  c.ffn_dim = 48;
  c.num_layers = 2;
  const auto model = recpipe::testing::random_session_transformer(c);
  const rc::session_transformer gpu = rc::to_device(backend, model);
  const std::vector<id_type> offsets = {0, 3, 3, 8}, items = {5, 6, 7, 1, 2, 3, 4, 99};
  rc::device_buffer<float> a(backend, 3 * 32), b(backend, 3 * 32);
  RECPIPE_CUDA_TRY(gpu.encode(backend, blas, offsets, items, {a.data(), 3, 32}));
  // The same sessions in a window of 5 slots (right padding, -1 in the unused slots).
  const std::vector<id_type> slots = {5, 6, 7, -1, -1, -1, -1, -1, -1, -1, 1, 2, 3, 4, 99};
  const std::vector<std::int64_t> lengths = {3, 0, 5};
  auto d_slots = rc::to_device(backend, std::span<const id_type>(slots));
  auto d_lengths = rc::to_device(backend, std::span<const std::int64_t>(lengths));
  RECPIPE_CUDA_TRY(gpu.encode_padded(backend, blas, d_slots.const_span(), d_lengths.const_span(), 5, {b.data(), 3, 32}));
  const auto ga = rc::to_host(backend, a.const_span()), gb = rc::to_host(backend, b.const_span());
  for (std::size_t i = 0; i < ga.size(); ++i) CHECK(ga[i] == doctest::Approx(gb[i]).epsilon(1e-6));
  // A ragged_view with std::size_t offsets (a ragged column's view) encodes the same.
  const std::vector<std::size_t> size_offsets(offsets.begin(), offsets.end());
  RECPIPE_CUDA_TRY(gpu.encode(backend, blas, recpipe::ragged_view<const id_type, std::size_t>(size_offsets, items),
                              {b.data(), 3, 32}));
  const auto gc = rc::to_host(backend, b.const_span());
  CHECK(gc == ga);
  using doctest::Contains;
  const std::vector<id_type> bad = {5, 6, 100};
  CHECK_THROWS_WITH_AS(gpu.encode(backend, blas, std::vector<id_type>{0, 3}, bad, {a.data(), 1, 32}),
                       Contains("items[2] = 100 is outside [0, 100)"), recpipe::error);
  CHECK_THROWS_WITH_AS(gpu.encode(backend, blas, std::vector<id_type>{0, 3}, items, {a.data(), 1, 32}),
                       Contains("offsets[1] = 3 must equal items.size() = 8"), recpipe::error);
  CHECK_THROWS_WITH_AS(gpu.encode(backend, blas, offsets, items, {a.data(), 2, 32}), Contains("out must be 3 x 32"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(
      gpu.encode_padded(backend, blas, d_slots.const_span(), d_lengths.const_span(), 21, {b.data(), 3, 32}),
      Contains("slots has 15 entries"), recpipe::error);
}
