// SPDX-License-Identifier: Apache-2.0
// CUDA layer checks that need no GPU: argument validation, cuda_error text, radix key order.
#include <doctest/doctest.h>

#include <recpipe/cuda.cuh>
#include <recpipe/cuda/attention.cuh>
#include <recpipe/cuda/blas.cuh>
#include <recpipe/cuda/cross.cuh>
#include <recpipe/cuda/dense.cuh>
#include <recpipe/cuda/feature_table.cuh>
#include <recpipe/cuda/stages.cuh>
#include <recpipe/cuda/transformer.cuh>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/stages/mlp_scorer.hpp>
#include <recpipe/core/pipeline.hpp>
#include <recpipe/core/versions.hpp>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/score.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include <recpipe/math/topk.hpp>
#include <recpipe/math/vector.hpp>

namespace rc = recpipe::cuda;
using recpipe::id_type;

namespace {
// Validation throws before any CUDA call, so these pointers are never dereferenced.
float fake_floats[1];
id_type fake_ids[1];
std::int64_t fake_offsets[1];
std::uint64_t fake_u64[1];
float fake_out[1];
template <class T>
rc::device_span<T> fake(T* base, std::size_t size) {
  return {base, size};
}
bool has_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}
}  // namespace

TEST_CASE("cuda_error formats file, line, error name and string") {
  const rc::cuda_error e(cudaErrorMemoryAllocation, "topk.cu", 42);
  CHECK(std::string(e.what()) == "CUDA ERROR: topk.cu:42: cudaErrorMemoryAllocation: out of memory");
  CHECK(e.code() == cudaErrorMemoryAllocation);
  const recpipe::error& base = e;  // catchable as the library's base error
  CHECK(std::string(base.what()).find("cudaErrorMemoryAllocation") != std::string::npos);
}

TEST_CASE("RECPIPE_CUDA_TRY throws with this file and line, and passes cudaSuccess") {
  CHECK_NOTHROW(RECPIPE_CUDA_TRY(cudaSuccess));
  const int line = __LINE__ + 2;
  try {
    RECPIPE_CUDA_TRY(cudaErrorInvalidValue);
    FAIL("no throw");
  } catch (const rc::cuda_error& e) {
    const std::string what = e.what();
    CHECK(what.rfind("CUDA ERROR: ", 0) == 0);
    CHECK(what.find("test_cuda_host.cu:" + std::to_string(line) + ": cudaErrorInvalidValue: ") != std::string::npos);
    CHECK(e.code() == cudaErrorInvalidValue);
  }
}

TEST_CASE("owning cuda_backend: works with a device, throws cuda_error without one") {
  if (has_device()) {
    rc::cuda_backend backend;
    CHECK(backend.stream() != nullptr);
    CHECK(backend.pool() != nullptr);
    CHECK_NOTHROW(backend.synchronize());
    rc::cuda_backend moved = std::move(backend);
    CHECK(moved.stream() != nullptr);
    CHECK(backend.stream() == nullptr);
  } else {
    CHECK_THROWS_AS(rc::cuda_backend{}, rc::cuda_error);
    try {
      rc::cuda_backend backend;
    } catch (const rc::cuda_error& e) {
      CHECK(std::string(e.what()).rfind("CUDA ERROR: ", 0) == 0);
      CHECK(e.code() != cudaSuccess);
    }
  }
}

TEST_CASE("borrowing cuda_backend makes no CUDA call and keeps what it was given") {
  rc::cuda_backend backend{cudaStream_t{}};
  CHECK(backend.stream() == nullptr);
  CHECK(backend.pool() == nullptr);
  CHECK(rc::cuda_backend::name == std::string_view("cuda"));
  void* p = reinterpret_cast<void*>(&backend);
  CHECK(backend.allocate_async(&p, 0) == cudaSuccess);  // zero bytes: no call, nullptr
  CHECK(p == nullptr);
  CHECK(backend.deallocate_async(nullptr) == cudaSuccess);
}

TEST_CASE("kernels live in an inline namespace tagged with the -arch list") {
  const std::string name = typeid(rc::top_k_algorithm).name();
  CHECK(name.find("arch_") != std::string::npos);
#if defined(__CUDA_ARCH_LIST__)
  CHECK(name.find("arch_" + std::to_string(__CUDA_ARCH_LIST__)) != std::string::npos);
#endif
  // Host-visible types are not tagged: one cuda_error type for every TU.
  CHECK(std::string(typeid(rc::cuda_error).name()).find("arch_") == std::string::npos);
}

TEST_CASE("radix keys order like cpu::top_k: score desc, NaN last, -0 == +0; ids signed ascending") {
  std::mt19937_64 rng(7);
  const float specials[] = {0.0f, -0.0f, 1.0f, -1.0f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min(),
                            -std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::lowest()};
  std::vector<float> values(std::begin(specials), std::end(specials));
  std::uniform_real_distribution<float> uniform(-100.0f, 100.0f);
  for (int i = 0; i < 200; ++i) values.push_back(uniform(rng));
  for (float a : values)
    for (float b : values) {
      const auto ka = rc::kernels::descending_key(a), kb = rc::kernels::descending_key(b);
      // same id: ranks_before is then "strictly better score"
      CHECK((ka < kb) == recpipe::math::ranks_before(a, 0, b, 0));
    }
  const id_type ids[] = {std::numeric_limits<id_type>::min(), -5, -1, 0, 1, 7, (id_type{1} << 32) + 3,
                         std::numeric_limits<id_type>::max()};
  for (id_type a : ids)
    for (id_type b : ids) CHECK((rc::kernels::ascending_id_key(a) < rc::kernels::ascending_id_key(b)) == (a < b));
}

TEST_CASE("cuda::top_k validates sizes before touching the device") {
  rc::cuda_backend backend{cudaStream_t{}};
  const auto scores = fake<const float>(fake_floats, 10);
  const auto offsets = fake<const std::int64_t>(fake_offsets, 3);  // 2 segments
  const auto out_ids = fake<id_type>(fake_ids, 8);
  const auto out_scores = fake<float>(fake_floats, 8);
  using doctest::Contains;
  CHECK_THROWS_WITH_AS(rc::top_k(backend, scores, fake<const id_type>(fake_ids, 9), offsets, 4, out_ids, out_scores),
                       Contains("cuda::top_k: ids has 9 entries but scores has 10"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::top_k(backend, scores, {}, {}, 4, out_ids, out_scores),
                       Contains("cuda::top_k: offsets is empty"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::top_k(backend, scores, {}, offsets, 5, out_ids, out_scores),
                       Contains("cuda::top_k: out_ids holds 8 and out_scores 8 entries but 2 segments x k = 5 need 10"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(rc::top_k(backend, rc::device_span<const float>(nullptr, 10), {}, offsets, 4, out_ids, out_scores),
                       Contains("cuda::top_k: scores has 10 entries but no data"), recpipe::error);
  const std::size_t too_many = std::size_t{1} << 31;
  CHECK_THROWS_WITH_AS(rc::top_k(backend, fake<const float>(fake_floats, too_many), {}, offsets, 4, out_ids, out_scores),
                       Contains("cuda::top_k: scores has 2147483648 entries"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::top_k(backend, scores, {}, offsets, std::numeric_limits<std::size_t>::max(), out_ids, out_scores),
                       Contains("cuda::top_k: k = "), recpipe::error);
  // k == 0 is valid and does nothing (no CUDA call is needed).
  CHECK(rc::top_k(backend, scores, {}, offsets, 0, {}, {}) == cudaSuccess);

  CHECK_THROWS_WITH_AS(rc::top_k_rows(backend, scores, 3, 4, {}, 1, out_ids, out_scores),
                       Contains("cuda::top_k_rows: scores has 10 entries but rows = 3 x cols = 4 needs 12"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(rc::top_k_rows(backend, scores, 2, 5, fake<const id_type>(fake_ids, 10), 1, out_ids, out_scores),
                       Contains("cuda::top_k_rows: ids has 10 entries but there are 5 columns"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::top_k_rows(backend, scores, 2, 5, {}, 5, out_ids, out_scores),
                       Contains("need 10"), recpipe::error);
}

TEST_CASE("cuda::embedding_bag validates shapes before touching the device") {
  rc::cuda_backend backend{cudaStream_t{}};
  const recpipe::matrix_view<const float> table(fake_floats, 100, 16);
  const recpipe::matrix_view<float> out(fake_floats, 4, 16);
  const auto ids = fake<const id_type>(fake_ids, 20);
  const auto offsets = fake<const std::int64_t>(fake_offsets, 4);
  using doctest::Contains;
  CHECK_THROWS_WITH_AS(rc::embedding_bag(backend, table, ids, offsets, {}, rc::pooling::sum,
                                         recpipe::matrix_view<float>(fake_floats, 4, 8)),
                       Contains("cuda::embedding_bag: out has 8 columns but the table's dim is 16"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::embedding_bag(backend, table, ids, fake<const std::int64_t>(fake_offsets, 6), {},
                                         rc::pooling::sum, out),
                       Contains("cuda::embedding_bag: offsets has 6 entries for 4 bags (need 4 or 5)"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::embedding_bag(backend, table, ids, offsets, fake<const float>(fake_floats, 19),
                                         rc::pooling::mean, out),
                       Contains("cuda::embedding_bag: weights has 19 entries for 20 ids"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::embedding_bag(backend, recpipe::matrix_view<const float>(fake_floats, 100, 16, 8), ids,
                                         offsets, {}, rc::pooling::sum, out),
                       Contains("cuda::embedding_bag: table has stride 8 smaller than its 16 columns"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::embedding_bag(backend, recpipe::matrix_view<const float>(nullptr, 100, 16), ids, offsets,
                                         {}, rc::pooling::sum, out),
                       Contains("cuda::embedding_bag: table is 100 x 16 but has no data"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::embedding_bag(backend, table, ids, offsets, {}, static_cast<rc::pooling>(7), out),
                       Contains("cuda::embedding_bag: mode 7"), recpipe::error);
  // An empty batch is valid and launches nothing.
  CHECK(rc::embedding_bag(backend, table, ids, {}, {}, rc::pooling::sum, recpipe::matrix_view<float>(fake_floats, 0, 16)) ==
        cudaSuccess);
}

TEST_CASE("cuda::dot_scores validates shapes before touching the device") {
  rc::cuda_backend backend{cudaStream_t{}};
  const recpipe::matrix_view<const float> queries(fake_floats, 2, 64), items(fake_floats, 1000, 64);
  const auto candidates = fake<const id_type>(fake_ids, 5);
  const auto offsets = fake<const std::int64_t>(fake_offsets, 3);
  const auto out = fake<float>(fake_floats, 5);
  using doctest::Contains;
  CHECK_THROWS_WITH_AS(rc::dot_scores(backend, queries, recpipe::matrix_view<const float>(fake_floats, 1000, 32),
                                      candidates, offsets, out),
                       Contains("cuda::dot_scores: queries have dimension 64 but items have 32"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::dot_scores(backend, queries, items, candidates, fake<const std::int64_t>(fake_offsets, 2), out),
                       Contains("cuda::dot_scores: offsets has 2 entries for 2 requests (need 3)"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::dot_scores(backend, queries, items, candidates, offsets, fake<float>(fake_floats, 4)),
                       Contains("cuda::dot_scores: out has 4 entries for 5 candidates"), recpipe::error);
}

TEST_CASE("host/device copies validate sizes") {
  rc::cuda_backend backend{cudaStream_t{}};
  std::vector<float> host(4);
  using doctest::Contains;
  CHECK_THROWS_WITH_AS(rc::copy_to_device(backend, std::span<const float>(host), fake<float>(fake_floats, 3)),
                       Contains("cuda::copy_to_device: device span holds 3 values but host has 4"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::copy_to_host(backend, fake<const float>(fake_floats, 5), std::span<float>(host)),
                       Contains("cuda::copy_to_host: host span holds 4 values but device has 5"), recpipe::error);
}

TEST_CASE("cublas_error names file, line and status; dense and cross entries validate before cuBLAS") {
  using doctest::Contains;
  const rc::cublas_error e(CUBLAS_STATUS_NOT_INITIALIZED, "dense.cu", 12);
  CHECK(std::string(e.what()).find("cuBLAS ERROR: dense.cu:12: CUBLAS_STATUS_NOT_INITIALIZED") != std::string::npos);
  CHECK(e.status() == CUBLAS_STATUS_NOT_INITIALIZED);
  rc::cuda_backend backend{cudaStream_t{}};
  const rc::blas_handle blas(cublasHandle_t{});  // borrowed, never used: every call below fails validation first
  const recpipe::matrix_view<const float> x(fake_floats, 4, 37), w(fake_floats, 19, 37);
  const recpipe::matrix_view<float> y(fake_floats, 4, 19);
  CHECK_THROWS_WITH_AS(rc::linear(backend, blas, recpipe::matrix_view<const float>(fake_floats, 4, 36), w, {}, y),
                       Contains("cuda::linear: x is 4 x 36 but must be 4 x 37"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::linear(backend, blas, x, w, fake<const float>(fake_floats, 5), y),
                       Contains("cuda::linear: bias has 5 entries but must have 19 (or none)"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::linear(backend, blas, x, w, {}, recpipe::matrix_view<float>(fake_floats, 4, 18)),
                       Contains("cuda::linear: y is 4 x 18 but must be 4 x 19"), recpipe::error);
  // An empty batch needs no GEMM and no launch (so not the null handle either).
  CHECK(rc::linear(backend, blas, recpipe::matrix_view<const float>(fake_floats, 0, 37), w, {},
                   recpipe::matrix_view<float>(fake_floats, 0, 19)) == cudaSuccess);
  const std::vector<rc::linear_layer> layers = {{w, {}, recpipe::math::activation::relu},
                                                {recpipe::matrix_view<const float>(fake_floats, 3, 20), {}}};
  CHECK_THROWS_WITH_AS(rc::mlp(backend, blas, x, {}, y), Contains("cuda::mlp: layers is empty"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::mlp(backend, blas, x, layers, recpipe::matrix_view<float>(fake_floats, 4, 3)),
                       Contains("cuda::mlp: layers[1].weight is [3, 20] but its input has 19 columns"), recpipe::error);

  const recpipe::matrix_view<const float> x0(fake_floats, 4, 8);
  const recpipe::matrix_view<float> out(fake_out, 4, 8);
  const std::vector<rc::cross_params> bad_full = {{recpipe::matrix_view<const float>(fake_floats, 8, 7), {}, {}, {}}};
  CHECK_THROWS_WITH_AS(rc::cross_network(backend, blas, x0, bad_full, out),
                       Contains("cuda::cross_network: layer 0 weight must be 8 x 8 (got 8 x 7)"), recpipe::error);
  const std::vector<rc::cross_params> bad_low = {
      {{}, recpipe::matrix_view<const float>(fake_floats, 2, 8), recpipe::matrix_view<const float>(fake_floats, 8, 3), {}}};
  CHECK_THROWS_WITH_AS(rc::cross_network(backend, blas, x0, bad_low, out),
                       Contains("layer 0 low rank needs down [r, 8] and up [8, r]"), recpipe::error);
  const std::vector<rc::cross_params> good = {{recpipe::matrix_view<const float>(fake_floats, 8, 8), {}, {}, {}}};
  CHECK_THROWS_WITH_AS(rc::cross_network(backend, blas, x0, good, recpipe::matrix_view<float>(fake_floats, 4, 8)),
                       Contains("out must not be x0"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::cross_layer(backend, blas, x0, x0, recpipe::matrix_view<const float>(fake_floats, 8, 8),
                                       fake<const float>(fake_floats, 7), out),
                       Contains("cuda::cross_layer: bias has 7 entries but must have 8"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::cross_layer_low_rank(backend, blas, x0, x0, {}, {}, {}, out),
                       Contains("down and up must not be empty"), recpipe::error);

  const recpipe::matrix_view<const float> feats(fake_floats, 2, 10);
  CHECK_THROWS_WITH_AS(rc::dot_interaction(backend, feats, 3, false, recpipe::matrix_view<float>(fake_floats, 2, 3)),
                       Contains("cuda::dot_interaction: features has 10 columns, not a multiple of num_features = 3"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(rc::dot_interaction(backend, feats, 5, true, recpipe::matrix_view<float>(fake_floats, 2, 10)),
                       Contains("out is 2 x 10 but must be 2 x 15"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::fm_second_order(backend, feats, 2, fake<float>(fake_floats, 3)),
                       Contains("cuda::fm_second_order: out holds 3 values for 2 rows"), recpipe::error);
}

TEST_CASE("cuBLASLt epilogue split: bias and ReLU fused, GELU / sigmoid / unaligned bias left to the kernel") {
  using recpipe::math::activation;
  using rc::dispatch::split_epilogue;
  // ReLU with or without a (usable) bias: all in cuBLASLt, no kernel.
  CHECK(split_epilogue(activation::relu, true, true).lt == CUBLASLT_EPILOGUE_RELU_BIAS);
  CHECK(!split_epilogue(activation::relu, true, true).needs_kernel());
  CHECK(split_epilogue(activation::relu, false, false).lt == CUBLASLT_EPILOGUE_RELU);
  CHECK(!split_epilogue(activation::relu, false, false).needs_kernel());
  // ReLU with a bias cuBLASLt cannot take: both in the kernel (bias before the activation).
  const auto unaligned = split_epilogue(activation::relu, true, false);
  CHECK(unaligned.lt == CUBLASLT_EPILOGUE_DEFAULT);
  CHECK((unaligned.kernel_bias && unaligned.kernel_act == activation::relu));
  // No activation: BIAS or nothing at all.
  CHECK(split_epilogue(activation::none, true, true).lt == CUBLASLT_EPILOGUE_BIAS);
  CHECK(!split_epilogue(activation::none, true, true).needs_kernel());
  CHECK(split_epilogue(activation::none, false, true).lt == CUBLASLT_EPILOGUE_DEFAULT);
  CHECK(!split_epilogue(activation::none, false, true).needs_kernel());
  CHECK(split_epilogue(activation::none, true, false).kernel_bias);
  // GELU (exact and tanh) and sigmoid: the bias in cuBLASLt, the activation in math::activate.
  for (activation act : {activation::gelu, activation::gelu_tanh, activation::sigmoid}) {
    const auto s = split_epilogue(act, true, true);
    CHECK(s.lt == CUBLASLT_EPILOGUE_BIAS);
    CHECK((!s.kernel_bias && s.kernel_act == act && s.needs_kernel()));
    const auto no_bias = split_epilogue(act, false, false);
    CHECK(no_bias.lt == CUBLASLT_EPILOGUE_DEFAULT);
    CHECK((!no_bias.kernel_bias && no_bias.kernel_act == act));
    CHECK(split_epilogue(act, true, false).kernel_bias);
  }
}

TEST_CASE("cuBLASLt plans: alignment classes, a bounded first-in-first-out cache, the handle's switches") {
  using rc::detail::pointer_alignment;
  alignas(256) static unsigned char bytes[1024];
  CHECK(pointer_alignment(bytes) == 256);
  CHECK(pointer_alignment(bytes + 512) == 256);
  CHECK(pointer_alignment(bytes + 4) == 4);
  CHECK(pointer_alignment(bytes + 48) == 16);
  CHECK(pointer_alignment(bytes + 128) == 128);
  CHECK(pointer_alignment(nullptr) == 256);

  rc::detail::lt_plan_cache cache;  // plans without descriptors: nothing to destroy, no cuBLASLt call
  rc::detail::lt_plan_key key{4, 19, 37, 40, 38, 21, CUBLASLT_EPILOGUE_RELU_BIAS, 256, 16, 4, 256};
  CHECK(cache.find(key) == nullptr);
  rc::detail::lt_plan usable;
  usable.usable = true;
  usable.workspace_bytes = 1024;
  cache.insert(key, usable);
  REQUIRE(cache.find(key) != nullptr);
  CHECK(cache.find(key)->workspace_bytes == 1024);
  rc::detail::lt_plan_key other = key;
  other.align_c = 8;  // another alignment class is another plan
  CHECK(cache.find(other) == nullptr);
  for (std::uint64_t m = 100; cache.size() < rc::detail::lt_plan_cache::capacity; ++m) {
    other.m = m;
    cache.insert(other, rc::detail::lt_plan{});
  }
  CHECK(cache.find(key) != nullptr);
  other.m = 1;
  cache.insert(other, rc::detail::lt_plan{});  // full: the oldest (key) goes
  CHECK(cache.size() == rc::detail::lt_plan_cache::capacity);
  CHECK(cache.find(key) == nullptr);
  CHECK(cache.find(other) != nullptr);
  cache.clear();
  CHECK(cache.size() == 0);

  // A borrowed handle pair makes no cuBLAS call; moves carry the switch and the plans.
  rc::blas_handle blas(cublasHandle_t{}, cublasLtHandle_t{});
  CHECK(blas.fused_epilogues());
  blas.set_fused_epilogues(false);
  blas.plans().insert(key, usable);
  rc::blas_handle moved(std::move(blas));
  CHECK(!moved.fused_epilogues());
  CHECK(moved.plans().size() == 1);
  // Fused epilogues off: lt_gemm_nt declines (the caller takes cublasSgemm) without any call;
  // an empty product is done without a call either way.
  rc::cuda_backend backend{cudaStream_t{}};
  bool ran = true;
  CHECK(rc::dispatch::lt_gemm_nt(backend, moved, 4, 19, 37, fake_floats, 37, fake_floats, 37, fake_out, 19,
                                 CUBLASLT_EPILOGUE_DEFAULT, nullptr, &ran) == cudaSuccess);
  CHECK(!ran);
  moved.set_fused_epilogues(true);
  CHECK(rc::dispatch::lt_gemm_nt(backend, moved, 0, 19, 37, fake_floats, 37, fake_floats, 37, fake_out, 19,
                                 CUBLASLT_EPILOGUE_RELU, nullptr, &ran) == cudaSuccess);
  CHECK(ran);
  CHECK(rc::dispatch::gemm_nt_bias_activation(backend, moved, 4, 0, 37, fake_floats, 37, fake_floats, 37, fake_out, 1,
                                              fake_floats, recpipe::math::activation::relu) == cudaSuccess);
}

TEST_CASE("cuda::embedding_bags and cuda::softmax_sample validate before touching the device") {
  using doctest::Contains;
  rc::cuda_backend backend{cudaStream_t{}};
  const std::vector<rc::device_table> tables = {
      rc::device_table::fp32(recpipe::matrix_view<const float>(fake_floats, 100, 16)),
      rc::device_table::fp16(reinterpret_cast<const std::uint16_t*>(fake_floats), 100, 8),
      rc::device_table::int8_rowwise(reinterpret_cast<const std::uint8_t*>(fake_floats), 10, 4)};
  CHECK(tables[2].row_bytes == 12);
  CHECK(tables[1].row_bytes == 16);
  const auto ids = fake<const id_type>(fake_ids, 20);
  const auto offsets = fake<const std::int64_t>(fake_offsets, 4);
  std::vector<rc::device_bags> inputs(3, rc::device_bags{ids, offsets});
  const recpipe::matrix_view<float> out(fake_floats, 4, 28);
  CHECK_THROWS_WITH_AS(rc::embedding_bags(backend, tables, std::span<const rc::device_bags>(inputs).first(2),
                                          rc::pooling::sum, out),
                       Contains("cuda::embedding_bags: 3 tables but 2 inputs"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::embedding_bags(backend, tables, inputs, rc::pooling::sum,
                                          recpipe::matrix_view<float>(fake_floats, 4, 27)),
                       Contains("the tables' dims add up to 28 but out has 27 columns"), recpipe::error);
  inputs[1].offsets = fake<const std::int64_t>(fake_offsets, 6);
  CHECK_THROWS_WITH_AS(rc::embedding_bags(backend, tables, inputs, rc::pooling::sum, out),
                       Contains("inputs[1].offsets has 6 entries for 4 bags (need 4 or 5)"), recpipe::error);
  inputs[1].offsets = offsets;
  inputs[2].weights = fake<const float>(fake_floats, 3);
  CHECK_THROWS_WITH_AS(rc::embedding_bags(backend, tables, inputs, rc::pooling::mean, out),
                       Contains("inputs[2].weights has 3 entries for 20 ids"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::device_table::fp16(nullptr, 10, 4),
                       Contains("cuda::device_table::fp16: data is null for a 10 x 4 table"), recpipe::error);
  // An empty batch launches nothing.
  inputs[2].weights = {};
  const std::vector<rc::device_bags> empty_inputs(3, rc::device_bags{{}, {}});
  CHECK(rc::embedding_bags(backend, tables, empty_inputs, rc::pooling::sum, recpipe::matrix_view<float>(fake_floats, 0, 28)) ==
        cudaSuccess);

  const auto scores = fake<const float>(fake_floats, 20);
  const auto out_ids = fake<id_type>(fake_ids, 6);
  const auto out_scores = fake<float>(fake_floats, 6);
  CHECK_THROWS_WITH_AS(rc::softmax_sample(backend, scores, {}, offsets, {}, 2, -0.5f, 1, out_ids, out_scores),
                       Contains("cuda::softmax_sample: temperature must be finite and >= 0"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::softmax_sample(backend, scores, {}, offsets, {}, 2, std::nanf(""), 1, out_ids, out_scores),
                       Contains("temperature must be finite"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::softmax_sample(backend, scores, {}, offsets, fake<const std::uint64_t>(fake_u64, 2), 2, 1.0f, 1,
                                          out_ids, out_scores),
                       Contains("request_keys has 2 entries for 3 segments"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::softmax_sample(backend, scores, {}, offsets, {}, 3, 1.0f, 1, out_ids, out_scores),
                       Contains("need 9"), recpipe::error);
}

TEST_CASE("cuda::multi_head_attention validates before touching the device") {
  using doctest::Contains;
  rc::cuda_backend backend{cudaStream_t{}};
  const rc::blas_handle blas(cublasHandle_t{});
  const recpipe::matrix_view<const float> x(fake_floats, 10, 8), in_w(fake_floats, 24, 8), out_w(fake_floats, 8, 8);
  const recpipe::matrix_view<float> out(fake_out, 10, 8);
  const auto lengths = fake<const std::int64_t>(fake_offsets, 2);
  CHECK_THROWS_WITH_AS(rc::multi_head_attention(backend, blas, x, lengths, 5, {in_w, {}, out_w, {}, 3}, false, out),
                       Contains("num_heads = 3 must be >= 1 and divide the embedding width 8"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::multi_head_attention(backend, blas, x, lengths, 4, {in_w, {}, out_w, {}, 2}, false, out),
                       Contains("x has 10 rows but lengths.size() * max_len = 2 * 4"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::multi_head_attention(backend, blas, x, lengths, 5,
                                                {recpipe::matrix_view<const float>(fake_floats, 16, 8), {}, out_w, {}, 2},
                                                false, out),
                       Contains("in_proj_weight is 16 x 8 but must be 24 x 8"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::multi_head_attention(backend, blas, x, lengths, 5,
                                                {in_w, fake<const float>(fake_floats, 8), out_w, {}, 2}, false, out),
                       Contains("in_proj_bias has 8 entries but must have 24"), recpipe::error);
  // 8 warps x (max_len + head width) floats must fit in 48 KiB.
  const recpipe::matrix_view<const float> long_x(fake_floats, 2000, 8);
  CHECK_THROWS_WITH_AS(rc::multi_head_attention(backend, blas, long_x, fake<const std::int64_t>(fake_offsets, 1), 2000,
                                                {in_w, {}, out_w, {}, 2}, true, recpipe::matrix_view<float>(fake_out, 2000, 8)),
                       Contains("needs more shared memory"), recpipe::error);
  // No sessions: nothing to do, no CUDA call.
  CHECK(rc::multi_head_attention(backend, blas, recpipe::matrix_view<const float>(fake_floats, 0, 8), {}, 5,
                                 {in_w, {}, out_w, {}, 2}, true, recpipe::matrix_view<float>(fake_out, 0, 8)) == cudaSuccess);
}

TEST_CASE("cuda::multi_head_attention with a separate query, layer_norm and the encoder blocks validate first") {
  using doctest::Contains;
  rc::cuda_backend backend{cudaStream_t{}};
  const rc::blas_handle blas(cublasHandle_t{});
  const recpipe::matrix_view<const float> x(fake_floats, 10, 8), in_w(fake_floats, 24, 8), out_w(fake_floats, 8, 8);
  const recpipe::matrix_view<float> out(fake_out, 10, 8);
  const auto lengths = fake<const std::int64_t>(fake_offsets, 2);
  const rc::mha_weights w{in_w, {}, out_w, {}, 2};
  CHECK_THROWS_WITH_AS(rc::multi_head_attention(backend, blas, recpipe::matrix_view<const float>(fake_floats, 9, 8), x,
                                                lengths, 5, w, true, out),
                       Contains("cuda::multi_head_attention: query_x is 9 x 8 but must be 10 x 8"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::multi_head_attention(backend, blas, recpipe::matrix_view<const float>(fake_floats, 10, 4), x,
                                                lengths, 5, w, true, out),
                       Contains("query_x is 10 x 4 but must be 10 x 8"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::multi_head_attention(backend, blas, recpipe::matrix_view<const float>(nullptr, 10, 8), x,
                                                lengths, 5, w, true, out),
                       Contains("query_x is 10 x 8 but has no data"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::multi_head_attention(backend, blas, x, x, lengths, 4, w, true, out),
                       Contains("x has 10 rows but lengths.size() * max_len = 2 * 4"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::multi_head_attention(backend, blas, x, x, lengths, 5, w, true,
                                                recpipe::matrix_view<float>(fake_out, 10, 7)),
                       Contains("out is 10 x 7 but must be 10 x 8"), recpipe::error);
  CHECK(rc::multi_head_attention(backend, blas, recpipe::matrix_view<const float>(fake_floats, 0, 8),
                                 recpipe::matrix_view<const float>(fake_floats, 0, 8), {}, 5, w, true,
                                 recpipe::matrix_view<float>(fake_out, 0, 8)) == cudaSuccess);

  // layer_norm
  CHECK_THROWS_WITH_AS(rc::layer_norm(backend, x, fake<const float>(fake_floats, 7), {}, out),
                       Contains("cuda::layer_norm: gamma has 7 entries but must have 8"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::layer_norm(backend, x, {}, {}, recpipe::matrix_view<float>(fake_out, 9, 8)),
                       Contains("cuda::layer_norm: y is 9 x 8 but must be 10 x 8"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::layer_norm(backend, x, {}, {}, out, -1.0f), Contains("eps must be >= 0"), recpipe::error);
  CHECK(rc::layer_norm(backend, recpipe::matrix_view<const float>(fake_floats, 0, 8), {}, {},
                       recpipe::matrix_view<float>(fake_out, 0, 8)) == cudaSuccess);

  // encoder blocks
  rc::transformer_layer_weights layer;
  layer.attention = w;
  layer.linear1_weight = recpipe::matrix_view<const float>(fake_floats, 16, 8);
  layer.linear2_weight = recpipe::matrix_view<const float>(fake_floats, 8, 16);
  auto bad = layer;
  bad.linear2_weight = recpipe::matrix_view<const float>(fake_floats, 8, 15);
  CHECK_THROWS_WITH_AS(rc::transformer_encoder_layer(backend, blas, x, lengths, 5, bad, true, out),
                       Contains("cuda::transformer_encoder_layer: linear2_weight is 8 x 15 but must be 8 x 16"),
                       recpipe::error);
  bad = layer;
  bad.norm2_bias = fake<const float>(fake_floats, 3);
  CHECK_THROWS_WITH_AS(rc::query_norm_encoder_layer(backend, blas, x, lengths, 5, bad, true, out),
                       Contains("cuda::query_norm_encoder_layer: norm2_bias has 3 entries but must have 8"), recpipe::error);
  bad = layer;
  bad.eps = std::nanf("");
  CHECK_THROWS_WITH_AS(rc::transformer_encoder_layer(backend, blas, x, lengths, 5, bad, true, out),
                       Contains("eps must be finite and >= 0"), recpipe::error);
  bad = layer;
  bad.attention.num_heads = 3;
  CHECK_THROWS_WITH_AS(rc::transformer_encoder_layer(backend, blas, x, lengths, 5, bad, true, out),
                       Contains("num_heads = 3 must be >= 1 and divide the embedding width 8"), recpipe::error);
  CHECK(rc::transformer_encoder_layer(backend, blas, recpipe::matrix_view<const float>(fake_floats, 0, 8), {}, 5, layer,
                                      true, recpipe::matrix_view<float>(fake_out, 0, 8)) == cudaSuccess);
}

TEST_CASE("cuda::session_transformer rejects a bad spec or mis-shaped weights before copying anything") {
  using doctest::Contains;
  rc::cuda_backend backend{cudaStream_t{}};
  rc::session_transformer_spec spec;
  spec.num_items = 20;
  spec.embedding_dim = 8;
  spec.max_length = 4;
  spec.num_heads = 2;
  spec.ffn_dim = 16;
  spec.num_layers = 1;
  static float weights[24 * 20];
  rc::session_transformer_host_weights w;
  w.item_embedding = recpipe::matrix_view<const float>(weights, 20, 8);
  w.position_embedding = recpipe::matrix_view<const float>(weights, 4, 8);
  w.final_norm_weight = std::span<const float>(weights, 8);
  w.final_norm_bias = std::span<const float>(weights, 8);
  rc::session_transformer_host_layer layer;
  layer.in_proj_weight = recpipe::matrix_view<const float>(weights, 24, 8);
  layer.out_proj_weight = recpipe::matrix_view<const float>(weights, 8, 8);
  layer.linear1_weight = recpipe::matrix_view<const float>(weights, 16, 8);
  layer.linear2_weight = recpipe::matrix_view<const float>(weights, 8, 16);
  w.layers = {layer};
  auto bad_spec = spec;
  bad_spec.num_heads = 3;
  CHECK_THROWS_WITH_AS(rc::session_transformer(backend, bad_spec, w),
                       Contains("cuda::session_transformer: num_heads = 3 must be at least 1 and divide embedding_dim = 8"),
                       recpipe::error);
  bad_spec = spec;
  bad_spec.query_only_norm = true;
  bad_spec.norm_first = false;
  CHECK_THROWS_WITH_AS(rc::session_transformer(backend, bad_spec, w), Contains("needs norm_first = true"), recpipe::error);
  bad_spec = spec;
  bad_spec.attend_to_padding = true;
  CHECK_THROWS_WITH_AS(rc::session_transformer(backend, bad_spec, w), Contains("attend_to_padding needs left padding"),
                       recpipe::error);
  bad_spec = spec;
  bad_spec.num_layers = 2;
  CHECK_THROWS_WITH_AS(rc::session_transformer(backend, bad_spec, w), Contains("1 layers of weights for num_layers = 2"),
                       recpipe::error);
  auto bad = w;
  bad.position_embedding = recpipe::matrix_view<const float>(weights, 5, 8);
  CHECK_THROWS_WITH_AS(rc::session_transformer(backend, spec, bad),
                       Contains("position_embedding is 5 x 8 but must be 4 x 8"), recpipe::error);
  bad = w;
  bad.final_norm_bias = std::span<const float>(weights, 7);
  CHECK_THROWS_WITH_AS(rc::session_transformer(backend, spec, bad),
                       Contains("final_norm_bias has 7 entries but must have 8 (or none)"), recpipe::error);
  auto no_final = spec;  // final_norm off: no final_norm tensors
  no_final.final_norm = false;
  CHECK_THROWS_WITH_AS(rc::session_transformer(backend, no_final, w),
                       Contains("final_norm_weight has 8 entries but must have 0"), recpipe::error);
  bad = w;
  bad.layers[0].linear1_bias = std::span<const float>(weights, 15);
  CHECK_THROWS_WITH_AS(rc::session_transformer(backend, spec, bad),
                       Contains("layers[i].linear1_bias has 15 entries but must have 16 (or none)"), recpipe::error);
  if (!has_device())  // the shapes are right: the copy to the device is what fails here
    CHECK_THROWS_AS(rc::session_transformer(backend, spec, w), rc::cuda_error);
}

TEST_CASE("cuda::session_transformer::window_layout lays sessions out as the CPU model's window") {
  using layout = std::vector<std::int64_t>;
  rc::session_transformer_spec spec;
  spec.num_items = 100;
  spec.embedding_dim = 8;
  spec.max_length = 3;
  spec.ffn_dim = 8;
  spec.num_layers = 1;
  const std::vector<id_type> offsets = {0, 2, 2, 7}, items = {5, 6, 1, 0, 2, 0, 3};
  const recpipe::ragged_view<const id_type, id_type> sessions(offsets, items);
  layout out;
  // Right padding, no padding id: window = the longest kept (3: the last session keeps 2, 0, 3).
  CHECK(rc::session_transformer::window_layout(spec, sessions, out) == 3);
  CHECK(out == layout{5, 6, -1, -1, -1, -1, 2, 0, 3, /* lengths */ 2, 0, 3});
  // Padding id 0 dropped: the last session keeps 1, 2, 3.
  spec.padding_id = 0;
  CHECK(rc::session_transformer::window_layout(spec, sessions, out) == 3);
  CHECK(out == layout{5, 6, 0, 0, 0, 0, 1, 2, 3, 2, 0, 3});
  // A full window of max_length slots, items in the last ones.
  spec.max_length = 4;
  spec.attend_to_padding = true;
  CHECK(rc::session_transformer::window_layout(spec, sessions, out) == 4);
  CHECK(out == layout{0, 0, 5, 6, 0, 0, 0, 0, 0, 1, 2, 3, 2, 0, 3});
  // Every session empty (after dropping padding): window 0, lengths only.
  const std::vector<id_type> empty_offsets = {0, 1, 1}, only_padding = {0};
  CHECK(rc::session_transformer::window_layout(
            spec, recpipe::ragged_view<const id_type, id_type>(empty_offsets, only_padding), out) == 0);
  CHECK(out == layout{0, 0});
  // std::size_t offsets (a ragged column's view) give the same.
  spec.attend_to_padding = false;
  const std::vector<std::size_t> size_offsets(offsets.begin(), offsets.end());
  layout from_size;
  CHECK(rc::session_transformer::window_layout(spec, recpipe::ragged_view<const id_type, std::size_t>(size_offsets, items),
                                               from_size) == 3);
  CHECK(rc::session_transformer::window_layout(spec, sessions, out) == 3);
  CHECK(from_size == out);
}

// Which stages run where inside a cuda_backend run (compile-time, no device needed).
static_assert(recpipe::cuda::detail::device_stage<recpipe::top_k_stage<recpipe::col::score>>);
static_assert(recpipe::cuda::detail::device_stage<recpipe::softmax_sample_stage<recpipe::col::score>>);
static_assert(recpipe::cuda::detail::device_stage<
              recpipe::retrieve_stage<recpipe::cuda::exact_index, recpipe::col::user_embedding>>);
static_assert(recpipe::cuda::detail::device_stage<
              recpipe::score_stage<const recpipe::dot_product_scorer<>&, recpipe::col::score>>);
static_assert(recpipe::cuda::detail::device_stage<recpipe::filter_seen_stage<recpipe::col::history>>);
// A filter with a host predicate has no device version: it runs its CPU stage_impl inside the run.
using host_filter = decltype(recpipe::filter([](recpipe::id_type item) { return item % 2 == 0; }));
static_assert(!recpipe::cuda::detail::device_stage<host_filter>);
static_assert(recpipe::has_stage_impl<host_filter, recpipe::cuda::cuda_backend>);
// The residency keeps device copies across host stages that keep the candidates, and drops them
// after those that may select candidates.
static_assert(recpipe::cuda::host_stage_keeps_candidates<
              recpipe::score_stage<const recpipe::dot_product_scorer<>&, recpipe::col::score>>);
static_assert(!recpipe::cuda::host_stage_keeps_candidates<host_filter>);

TEST_CASE("cuda_backend runs host stages on the host and device stages skip empty work without a CUDA call") {
  using namespace recpipe;
  recpipe::cuda::cuda_backend borrowed{cudaStream_t{}};  // makes no CUDA call; a device stage with work would fail
  // A host filter runs its CPU stage_impl inside the cuda run; filter_seen with no history to
  // remove makes no CUDA call either.
  auto requests = make_batch<col::user_id>(std::vector<id_type>{1, 2});
  ragged<id_type> candidates, history;
  candidates.assign(std::vector<std::size_t>{0, 3, 5}, std::vector<id_type>{10, 11, 12, 20, 21}, "candidates");
  history.assign(std::vector<std::size_t>{0, 0, 0}, std::vector<id_type>{}, "history");
  auto with_lists = std::move(requests).with<col::candidates>(std::move(candidates)).with<col::history>(std::move(history));
  const auto filtered =
      (filter([](id_type item) { return item != 11 && item != 21; }) >> filter_seen()).run(with_lists, borrowed);
  CHECK(filtered.get<col::candidates>().values() == std::vector<id_type>{10, 12, 20});
  CHECK(filtered.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 2, 3});
  CHECK(borrowed.columns().counts().synchronizations == 0);
  CHECK(borrowed.columns().depth() == 0);
  // top_k and softmax_sample over an empty batch: no device work.
  auto empty = make_batch<col::user_id>(std::vector<id_type>{})
                   .with<col::candidates>(ragged<id_type>{})
                   .with<col::score>(std::vector<float>{});
  CHECK((top_k(3) >> softmax_sample(2, 0.5f, 1)).run(empty, borrowed).size() == 0);
}

// lookup(cuda::device_feature_table) has a device stage_impl; a feature_store lookup runs on the host.
using device_item_table = recpipe::cuda::device_feature_table<recpipe::col::candidates, recpipe::col::item_embedding>;
static_assert(recpipe::cuda::detail::device_stage<recpipe::lookup_stage<device_item_table>>);
static_assert(recpipe::cuda::detail::device_stage<
              recpipe::lookup_stage<device_item_table, recpipe::slot<device_item_table>, recpipe::col::item_unknown>>);
static_assert(!recpipe::cuda::detail::device_stage<
              recpipe::lookup_stage<recpipe::feature_store<recpipe::col::candidates, recpipe::col::item_embedding>>>);

TEST_CASE("cuda::device_feature_table checks its input before touching the device; its lookup skips empty work") {
  using namespace recpipe;
  recpipe::cuda::cuda_backend borrowed{cudaStream_t{}};  // makes no CUDA call; device work would fail
  const std::vector<float> rows = {1, 2, 3, 4};
  const matrix_view<const float> two_rows(rows.data(), 2, 2);
  CHECK_THROWS_WITH_AS(device_item_table(borrowed, std::vector<id_type>{3, 3}, two_rows),
                       "recpipe: cuda::device_feature_table<item_embedding>: id 3 appears twice", error);
  CHECK_THROWS_WITH_AS(device_item_table(borrowed, std::vector<id_type>{3}, two_rows),
                       "recpipe: cuda::device_feature_table<item_embedding>: 1 ids but 2 rows", error);
  const std::vector<float> with_nan = {1, 2, std::nanf(""), 4};
  CHECK_THROWS_WITH_AS(device_item_table(borrowed, std::vector<id_type>{1, 2},
                                         matrix_view<const float>(with_nan.data(), 2, 2)),
                       "recpipe: cuda::device_feature_table<item_embedding>: the row of id 2 holds nan at column 0; "
                       "rows must be finite",
                       error);
  // An empty table allocates nothing (no CUDA call).
  const device_item_table empty(borrowed, std::vector<id_type>{}, matrix_view<const float>(nullptr, 0, 2), on_missing::fail);
  CHECK(empty.size() == 0);
  CHECK(empty.dim() == 2);
  CHECK(empty.device_ids().empty());
  float out[2];
  CHECK_THROWS_WITH_AS((void)empty.gather(borrowed, fake(fake_ids, 1), fake(out, 1)),
                       "recpipe: cuda::device_feature_table<item_embedding>::gather: out holds 1 floats but 1 keys x "
                       "dim 2 need 2",
                       error);
  std::uint8_t flag[1];
  CHECK_THROWS_WITH_AS((void)empty.gather(borrowed, fake(fake_ids, 2), fake(fake_out, 4), fake(flag, 1)),
                       "recpipe: cuda::device_feature_table<item_embedding>::gather: flags hold 1 values but there "
                       "are 2 keys",
                       error);
  CHECK(empty.gather(borrowed, fake(fake_ids, 0), fake(out, 0)) == cudaSuccess);

  // An empty batch: no CUDA call. Under on_missing::fail, keys the host holds are checked on the
  // host, before any device work: the error names the first unknown id.
  auto none = make_batch<col::user_id>(std::vector<id_type>{}).with<col::candidates>(ragged<id_type>{});
  CHECK(lookup(empty).flag_missing()(none, borrowed).get<col::item_embedding>().rows() == 0);
  auto requests = make_batch<col::user_id>(std::vector<id_type>{1});
  ragged<id_type> candidates;
  candidates.assign(std::vector<std::size_t>{0, 2}, std::vector<id_type>{8, 9}, "candidates");
  auto with_candidates = std::move(requests).with<col::candidates>(std::move(candidates));
  CHECK_THROWS_WITH_AS((void)lookup(empty)(with_candidates, borrowed),
                       "recpipe: lookup: id 8 is not in the device feature table for column 'item_embedding'", error);
  CHECK(borrowed.columns().counts().synchronizations == 0);
  CHECK(borrowed.columns().depth() == 0);

  // Published through a slot: the CPU backend reads the host rows (an empty table: zeros, flags),
  // a cuda_backend run of an empty batch makes no CUDA call.
  version_registry versions;
  auto published = versions.add("items", std::make_shared<const device_item_table>(
                                             borrowed, std::vector<id_type>{}, matrix_view<const float>(nullptr, 0, 2)));
  const auto from_slot = lookup(published).flag_missing();
  const auto on_cpu = from_slot(with_candidates);
  CHECK(on_cpu.get<col::item_embedding>().values() == std::vector<float>(4, 0.0f));
  CHECK(on_cpu.get<col::item_unknown>() == std::vector<std::uint8_t>{1, 1});
  CHECK(from_slot(none, borrowed).get<col::item_unknown>().empty());
}

namespace {
// A safetensors image of `tensors` (name, shape) with values 0.1, 0.2, ... (the checks below
// throw before any value is read).
std::shared_ptr<const recpipe::io::safetensors_file> weights_of(
    const std::vector<std::pair<std::string, std::vector<std::size_t>>>& tensors) {
  recpipe::io::safetensors_writer w;
  for (const auto& [name, shape] : tensors) {
    std::size_t n = 1;
    for (std::size_t s : shape) n *= s;
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = 0.1f * static_cast<float>(i + 1);
    w.add(name, std::span<const float>(v), shape);
  }
  return std::make_shared<const recpipe::io::safetensors_file>(recpipe::io::safetensors_file::from_bytes(w.to_bytes(), "host test"));
}
}  // namespace

TEST_CASE("device model input checks: the CPU forward's errors, naming the input (no device)") {
  const std::vector<std::size_t> rows = {5, 3};
  const std::vector<id_type> good = {0, 2}, bad = {0, 5}, offsets = {0, 1, 2}, unsorted = {1, 0, 2};
  float dense[4] = {};
  using bags = std::vector<recpipe::cpu::bag_input>;
  const recpipe::matrix_view<const float> d22(dense, 2, 2), d21(dense, 2, 1);
  CHECK_NOTHROW(rc::detail::check_host_inputs("dcn_v2: forward", d22, 2, rows, bags{{good, offsets}, {good, offsets}}, 2));
  CHECK_THROWS_WITH_AS(rc::detail::check_host_inputs("dcn_v2: forward", d22, 2, rows, bags{{good, offsets}, {bad, offsets}}, 2),
                       "recpipe: dcn_v2: forward: inputs[1]: cpu::embedding_bag: ids[1] = 5 is outside [0, 3)",
                       recpipe::error);
  CHECK_THROWS_WITH_AS(rc::detail::check_host_inputs("dlrm: forward", d21, 2, rows, bags{{good, offsets}, {good, offsets}}, 2),
                       doctest::Contains("dlrm: forward: dense must be 2 x 2 (got 2 x 1)"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::detail::check_host_inputs("dlrm: forward", d22, 2, rows, bags{{good, offsets}}, 2),
                       doctest::Contains("the model has 2 sparse features but 1 bag inputs were given"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::detail::check_host_inputs("x", d22, 2, rows, bags{{good, unsorted}, {good, offsets}}, 2),
                       doctest::Contains("x: inputs[0]: cpu::embedding_bag"), recpipe::error);
  const std::vector<float> one_weight = {1.0f};
  CHECK_THROWS_WITH_AS(rc::detail::check_host_inputs("x", d22, 2, rows, bags{{good, offsets, one_weight}, {good, offsets}}, 2),
                       doctest::Contains("x: inputs[0]: cpu::embedding_bag: weights has 1 entries for 2 ids"), recpipe::error);
  CHECK(recpipe::math::inverse_l2_norm(4.0f) == 0.5f);
}

TEST_CASE("model score stages on cuda_backend throw the CPU stage's input errors before any device work") {
  using namespace recpipe;
  rc::cuda_backend borrowed{cudaStream_t{}};  // makes no CUDA call; device work would fail
  static_assert(rc::detail::device_stage<score_stage<mlp_scorer<models::mlp>, col::score>>);
  static_assert(rc::detail::device_stage<
                score_stage<train::feature_scorer<train::features<train::sparse<col::candidates>>, train::frozen<models::dcn_v2>>,
                            col::score>>);
  ragged<id_type> candidates;
  candidates.assign(std::vector<std::size_t>{0, 2, 3}, std::vector<id_type>{10, 11, 12}, "candidates");
  auto b = make_batch<col::user_id>(std::vector<id_type>{1, 2})
               .with<col::candidates>(std::move(candidates))
               .with<col::user_embedding>(matrix<float>(2, 3))
               .with<col::item_embedding>(matrix<float>(3, 4))
               .with<col::retrieval_score>(std::vector<float>{0.5f, 0.25f, 0.125f});

  // mlp_scorer: a network whose input width is not the columns' widths.
  const models::mlp narrow = models::mlp::load(weights_of({{"layers.0.weight", {1, 5}}, {"layers.0.bias", {1}}}),
                                               models::mlp_config{.input_dim = 5, .dims = {1}});
  const char* width_error = "'user_embedding' (3) + 'item_embedding' (4) = 7 features but the network's input_dim is 5";
  CHECK_THROWS_WITH_AS(score(mlp_scorer(narrow))(b), doctest::Contains(width_error), error);
  CHECK_THROWS_WITH_AS(score(mlp_scorer(narrow))(b, borrowed), doctest::Contains(width_error), error);
  CHECK(borrowed.columns().depth() == 0);

  // A frozen DCN-v2 over a fixed table of 12 rows: candidate 12 is outside it.
  models::dcn_v2_config c;
  c.tables = {{12, 2}};
  c.cross_layers = 1;
  c.deep = {2};
  const auto file = weights_of({{"embeddings.0.weight", {12, 2}}, {"cross.0.weight", {2, 2}}, {"cross.0.bias", {2}},
                                {"deep.layers.0.weight", {2, 2}}, {"deep.layers.0.bias", {2}}, {"head.weight", {1, 2}},
                                {"head.bias", {1}}});
  const train::frozen<models::dcn_v2> frozen{models::dcn_v2::load(file, c), {std::nullopt}, file};
  using ids_only = train::features<train::sparse<col::candidates>>;
  const char* id_error = "inputs[0]: cpu::embedding_bag: ids[2] = 12 is outside [0, 12)";
  CHECK_THROWS_WITH_AS(score(train::scorer<ids_only>(frozen))(b), doctest::Contains(id_error), error);
  CHECK_THROWS_WITH_AS(score(train::scorer<ids_only>(frozen))(b, borrowed), doctest::Contains(id_error), error);
  // A dense feature the model does not take.
  using with_dense = train::features<train::sparse<col::candidates>, train::dense<col::retrieval_score>>;
  CHECK_THROWS_WITH_AS(score(train::scorer<with_dense>(frozen))(b, borrowed),
                       doctest::Contains("dcn_v2: forward: the model has no dense features but dense has 1 columns"), error);
  CHECK(borrowed.models().uploads() == 0);  // nothing reached the device

  // No candidates: the score column, and no CUDA call.
  auto empty = make_batch<col::user_id>(std::vector<id_type>{})
                   .with<col::candidates>(ragged<id_type>{})
                   .with<col::user_embedding>(matrix<float>(0, 3))
                   .with<col::item_embedding>(matrix<float>(0, 4));
  CHECK(score(mlp_scorer(narrow))(empty, borrowed).get<col::score>().empty());
  CHECK(score(train::scorer<ids_only>(frozen))(empty, borrowed).get<col::score>().empty());
  CHECK(borrowed.columns().counts().synchronizations == 0);
}
