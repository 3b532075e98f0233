// SPDX-License-Identifier: Apache-2.0
// Every CUDA kernel against the CPU implementation on the same inputs (needs a GPU; exits 77 without).
#include <doctest/doctest.h>

#include <recpipe/cuda.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include <recpipe/cpu/embedding.hpp>
#include <recpipe/cpu/topk.hpp>
#include <recpipe/cuda/sampling.cuh>
#include <recpipe/math/random.hpp>
#include <recpipe/math/topk.hpp>
#include <recpipe/math/vector.hpp>

#include "common/cuda_fixtures.cuh"

namespace rc = recpipe::cuda;
using recpipe::id_type;

namespace {
const bool device_present = (recpipe_test::exit_unless_device(), true);

template <class T>
std::span<const T> cspan(const std::vector<T>& v) {
  return {v.data(), v.size()};
}

bool same_score(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::memcmp(&a, &b, sizeof a) == 0;  // bitwise: scores are copied, never recomputed
}

// Scores with many exact ties, both zeros, infinities and NaNs: the cases where orders differ.
std::vector<float> tricky_scores(std::size_t n, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> level(-20, 20), special(0, 40);
  std::vector<float> scores(n);
  for (auto& s : scores) {
    switch (special(rng)) {
      case 0: s = std::numeric_limits<float>::quiet_NaN(); break;
      case 1: s = -0.0f; break;
      case 2: s = 0.0f; break;
      case 3: s = std::numeric_limits<float>::infinity(); break;
      case 4: s = -std::numeric_limits<float>::infinity(); break;
      default: s = static_cast<float>(level(rng)) * 0.25f;
    }
  }
  return scores;
}

// cpu::top_k per segment, with the same offset sanitising and padding the CUDA entry documents.
void cpu_segmented_top_k(const std::vector<float>& scores, const std::vector<id_type>& ids,
                         const std::vector<std::int64_t>& offsets, std::size_t k, std::vector<id_type>& out_ids,
                         std::vector<float>& out_scores) {
  const auto n = static_cast<std::int64_t>(scores.size());
  std::vector<std::int64_t> bounds(offsets.size());
  std::int64_t running = 0;
  for (std::size_t i = 0; i < offsets.size(); ++i) {
    running = std::max(running, std::clamp<std::int64_t>(offsets[i], 0, n));
    bounds[i] = running;
  }
  const std::size_t segments = offsets.size() - 1;
  out_ids.assign(segments * k, -1);
  out_scores.assign(segments * k, std::numeric_limits<float>::quiet_NaN());
  for (std::size_t s = 0; s < segments; ++s) {
    const auto begin = static_cast<std::size_t>(bounds[s]), end = static_cast<std::size_t>(bounds[s + 1]);
    std::span<const float> segment(scores.data() + begin, end - begin);
    std::span<const id_type> segment_ids;
    if (!ids.empty()) segment_ids = std::span<const id_type>(ids.data() + begin, end - begin);
    recpipe::cpu::top_k_at_most(segment, segment_ids, k, std::span<id_type>(out_ids.data() + s * k, k),
                        std::span<float>(out_scores.data() + s * k, k));
  }
}

void check_same_top_k(const std::vector<id_type>& want_ids, const std::vector<float>& want_scores,
                      const std::vector<id_type>& got_ids, const std::vector<float>& got_scores) {
  REQUIRE(got_ids.size() == want_ids.size());
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < want_ids.size(); ++i) {
    if (got_ids[i] != want_ids[i] || !same_score(got_scores[i], want_scores[i])) {
      if (mismatches++ < 5)
        MESSAGE("slot ", i, ": want (", want_ids[i], ", ", want_scores[i], ") got (", got_ids[i], ", ", got_scores[i], ")");
    }
  }
  CHECK(mismatches == 0);
}

void run_segmented(rc::cuda_backend& backend, const std::vector<float>& scores, const std::vector<id_type>& ids,
                   const std::vector<std::int64_t>& offsets, std::size_t k, rc::top_k_algorithm algorithm) {
  std::vector<id_type> want_ids;
  std::vector<float> want_scores;
  cpu_segmented_top_k(scores, ids, offsets, k, want_ids, want_scores);
  const std::size_t slots = (offsets.size() - 1) * k;
  auto d_scores = rc::to_device(backend, cspan(scores));
  auto d_ids = rc::to_device(backend, cspan(ids));
  auto d_offsets = rc::to_device(backend, cspan(offsets));
  rc::device_buffer<id_type> d_out_ids(backend, slots);
  rc::device_buffer<float> d_out_scores(backend, slots);
  RECPIPE_CUDA_TRY(rc::top_k(backend, d_scores.const_span(), d_ids.const_span(), d_offsets.const_span(), k,
                             d_out_ids.span(), d_out_scores.span(), algorithm));
  check_same_top_k(want_ids, want_scores, rc::to_host(backend, d_out_ids.const_span()),
                   rc::to_host(backend, d_out_scores.const_span()));
}

std::vector<std::int64_t> ragged_offsets(std::size_t segments, std::size_t max_length, std::mt19937_64& rng) {
  std::uniform_int_distribution<std::size_t> length(0, max_length);
  std::vector<std::int64_t> offsets{0};
  for (std::size_t s = 0; s < segments; ++s) offsets.push_back(offsets.back() + static_cast<std::int64_t>(length(rng)));
  return offsets;
}

std::vector<id_type> wild_ids(std::size_t n, std::mt19937_64& rng) {
  // Duplicates, negatives and ids beyond 32 bits: the 64-bit id pass must order them all.
  std::uniform_int_distribution<id_type> small(-3, 40), huge(std::numeric_limits<id_type>::min(),
                                                                std::numeric_limits<id_type>::max());
  std::vector<id_type> ids(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = i % 3 == 0 ? huge(rng) : small(rng);
  return ids;
}

const rc::top_k_algorithm algorithms[] = {rc::top_k_algorithm::automatic, rc::top_k_algorithm::device_radix_sort,
                                          rc::top_k_algorithm::segmented_radix_sort,
                                          rc::top_k_algorithm::radix_select};
}  // namespace

TEST_CASE("top_k over ragged segments matches cpu::top_k slot by slot") {
  rc::cuda_backend backend;
  std::mt19937_64 rng(1);
  for (auto algorithm : algorithms) {
    CAPTURE(static_cast<int>(algorithm));
    for (std::size_t k : {std::size_t{1}, std::size_t{5}, std::size_t{37}}) {
      CAPTURE(k);
      const auto offsets = ragged_offsets(50, 120, rng);  // includes empty and shorter-than-k segments
      const auto scores = tricky_scores(static_cast<std::size_t>(offsets.back()), rng);
      SUBCASE("ids are positions") { run_segmented(backend, scores, {}, offsets, k, algorithm); }
      SUBCASE("explicit 64-bit ids") { run_segmented(backend, scores, wild_ids(scores.size(), rng), offsets, k, algorithm); }
    }
  }
}

TEST_CASE("top_k on large segments (device-wide and segmented sorts) matches cpu::top_k") {
  rc::cuda_backend backend;
  std::mt19937_64 rng(2);
  const std::vector<std::int64_t> offsets = {0, 1000000, 1000001, 1300000};
  auto scores = tricky_scores(1300000, rng);
  for (auto algorithm : algorithms) {
    run_segmented(backend, scores, {}, offsets, 100, algorithm);
    run_segmented(backend, scores, wild_ids(scores.size(), rng), offsets, 100, algorithm);
  }
  // all-equal keys: the whole order comes from the ids
  std::fill(scores.begin(), scores.end(), 1.5f);
  run_segmented(backend, scores, wild_ids(scores.size(), rng), offsets, 1000, rc::top_k_algorithm::automatic);
  run_segmented(backend, scores, wild_ids(scores.size(), rng), offsets, 1000, rc::top_k_algorithm::radix_select);
  run_segmented(backend, scores, {}, offsets, 1000, rc::top_k_algorithm::radix_select);
}

TEST_CASE("radix_select on distinct floats: every digit pass decides, ties at the k-th key resolve by id") {
  rc::cuda_backend backend;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> value(-1e6f, 1e6f);
  std::vector<float> scores(1000000);
  for (auto& s : scores) s = value(rng);
  // Long rows, a short one, k from 1 to beyond a segment's length.
  const std::vector<std::int64_t> offsets = {0, 600000, 600010, 1000000};
  for (std::size_t k : {std::size_t{1}, std::size_t{100}, std::size_t{2048}, std::size_t{400001}}) {
    CAPTURE(k);
    run_segmented(backend, scores, {}, offsets, k, rc::top_k_algorithm::radix_select);
    run_segmented(backend, scores, wild_ids(scores.size(), rng), offsets, k, rc::top_k_algorithm::radix_select);
  }
  // The k-th key is tied with entries on both sides of the cut: equal scores scattered through
  // the row; the winners among them are the smallest ids.
  for (std::size_t i = 0; i < scores.size(); i += 997) scores[i] = 5e5f;
  for (std::size_t k : {std::size_t{200}, std::size_t{260}, std::size_t{500}}) {
    run_segmented(backend, scores, {}, {0, 1000000}, k, rc::top_k_algorithm::radix_select);
    run_segmented(backend, scores, wild_ids(scores.size(), rng), {0, 1000000}, k, rc::top_k_algorithm::radix_select);
  }
}

TEST_CASE("top_k gives hostile offsets their documented meaning") {
  rc::cuda_backend backend;
  std::mt19937_64 rng(3);
  const auto scores = tricky_scores(300, rng);
  // out of range, negative, decreasing: clamped into [0, n], then running maximum
  const std::vector<std::int64_t> offsets = {-5, 40, 20, 20, 1000, 250, std::numeric_limits<std::int64_t>::max(), -1};
  for (auto algorithm : algorithms) run_segmented(backend, scores, {}, offsets, 8, algorithm);
  // offsets not starting at 0 leave a gap that belongs to no segment
  run_segmented(backend, scores, wild_ids(300, rng), {100, 150, 150, 290}, 7, rc::top_k_algorithm::device_radix_sort);
  run_segmented(backend, scores, wild_ids(300, rng), {100, 150, 150, 290}, 7, rc::top_k_algorithm::radix_select);
  run_segmented(backend, scores, {}, {100, 150, 150, 290}, 7, rc::top_k_algorithm::radix_select);
  // no scores at all: every slot is padding
  run_segmented(backend, {}, {}, {0, 0, 0}, 3, rc::top_k_algorithm::automatic);
}

TEST_CASE("top_k_rows matches cpu::top_k per row, with and without shared ids") {
  rc::cuda_backend backend;
  std::mt19937_64 rng(4);
  for (auto [rows, cols, k] : {std::tuple<std::size_t, std::size_t, std::size_t>{64, 5000, 100}, {1, 200000, 100},
                               {3, 7, 10}, {1, 50, 50}}) {
    CAPTURE(rows);
    CAPTURE(cols);
    const auto scores = tricky_scores(rows * cols, rng);
    const auto ids = wild_ids(cols, rng);
    auto d_scores = rc::to_device(backend, cspan(scores));
    auto d_ids = rc::to_device(backend, cspan(ids));
    rc::device_buffer<id_type> d_out_ids(backend, rows * k);
    rc::device_buffer<float> d_out_scores(backend, rows * k);
    for (bool shared_ids : {false, true}) {
      std::vector<id_type> want_ids(rows * k, -1);
      std::vector<float> want_scores(rows * k, std::numeric_limits<float>::quiet_NaN());
      for (std::size_t r = 0; r < rows; ++r)
        recpipe::cpu::top_k(std::span<const float>(scores.data() + r * cols, cols),
                            shared_ids ? cspan(ids) : std::span<const id_type>(), k,
                            std::span<id_type>(want_ids.data() + r * k, k), std::span<float>(want_scores.data() + r * k, k));
      for (auto algorithm : algorithms) {
        RECPIPE_CUDA_TRY(rc::top_k_rows(backend, d_scores.const_span(), rows, cols,
                                        shared_ids ? d_ids.const_span() : rc::device_span<const id_type>(), k,
                                        d_out_ids.span(), d_out_scores.span(), algorithm));
        check_same_top_k(want_ids, want_scores, rc::to_host(backend, d_out_ids.const_span()),
                         rc::to_host(backend, d_out_scores.const_span()));
      }
    }
  }
}

TEST_CASE("top_k runs on a borrowed default stream with the device's default pool") {
  rc::cuda_backend backend{cudaStream_t{}};
  std::mt19937_64 rng(5);
  const auto offsets = ragged_offsets(10, 300, rng);
  run_segmented(backend, tricky_scores(static_cast<std::size_t>(offsets.back()), rng), {}, offsets, 20,
                rc::top_k_algorithm::automatic);
}

namespace {
std::vector<float> random_floats(std::size_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = value(rng);
  return v;
}

void check_close(const std::vector<float>& want, const std::vector<float>& got, float tolerance) {
  REQUIRE(got.size() == want.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const bool ok = std::isnan(want[i]) ? std::isnan(got[i])
                                        : std::fabs(got[i] - want[i]) <= tolerance * (1.0f + std::fabs(want[i]));
    if (!ok && bad++ < 5) MESSAGE("index ", i, ": want ", want[i], " got ", got[i]);
  }
  CHECK(bad == 0);
}

// Runs cuda::embedding_bag on a [rows, dim] table stored with `table_stride` and an output with
// `out_stride`; returns the dense [batch, dim] result.
std::vector<float> gpu_bag(rc::cuda_backend& backend, const std::vector<float>& table, std::size_t rows,
                           std::size_t dim, std::size_t table_stride, const std::vector<id_type>& ids,
                           const std::vector<std::int64_t>& offsets, const std::vector<float>& weights,
                           rc::pooling mode, std::size_t batch, std::size_t out_stride,
                           unsigned long long* invalid = nullptr) {
  auto d_table = rc::to_device(backend, cspan(table));
  auto d_ids = rc::to_device(backend, cspan(ids));
  auto d_offsets = rc::to_device(backend, cspan(offsets));
  auto d_weights = rc::to_device(backend, cspan(weights));
  rc::device_buffer<float> d_out(backend, batch * out_stride);
  rc::device_buffer<unsigned long long> d_invalid(backend, 1);
  RECPIPE_CUDA_TRY(cudaMemsetAsync(d_invalid.data(), 0, sizeof(unsigned long long), backend.stream()));
  RECPIPE_CUDA_TRY(rc::embedding_bag(backend, recpipe::matrix_view<const float>(d_table.data(), rows, dim, table_stride),
                                     d_ids.const_span(), d_offsets.const_span(), d_weights.const_span(), mode,
                                     recpipe::matrix_view<float>(d_out.data(), batch, dim, out_stride), d_invalid.span()));
  const auto strided = rc::to_host(backend, d_out.const_span());
  if (invalid != nullptr) *invalid = rc::to_host(backend, d_invalid.const_span())[0];
  std::vector<float> dense(batch * dim);
  for (std::size_t b = 0; b < batch; ++b)
    std::copy_n(strided.begin() + static_cast<std::ptrdiff_t>(b * out_stride), dim,
                dense.begin() + static_cast<std::ptrdiff_t>(b * dim));
  return dense;
}

std::vector<float> cpu_bag(const std::vector<float>& table, std::size_t rows, std::size_t dim, std::size_t stride,
                           const std::vector<id_type>& ids, const std::vector<std::int64_t>& offsets,
                           const std::vector<float>& weights, rc::pooling mode, std::size_t batch) {
  std::vector<float> out(batch * dim);
  const auto view = recpipe::cpu::embedding_table_view::fp32(recpipe::matrix_view<const float>(table.data(), rows, dim, stride));
  recpipe::cpu::embedding_bag(view, cspan(ids), cspan(offsets), cspan(weights),
                              mode == rc::pooling::mean ? recpipe::cpu::pooling::mean : recpipe::cpu::pooling::sum,
                              recpipe::matrix_view<float>(out.data(), batch, dim));
  return out;
}
}  // namespace

TEST_CASE("embedding_bag matches cpu::embedding_bag for every vector width, stride and pooling") {
  rc::cuda_backend backend;
  std::mt19937_64 rng(6);
  const std::size_t rows = 1000, batch = 300;
  for (std::size_t dim : {std::size_t{1}, std::size_t{3}, std::size_t{6}, std::size_t{32}, std::size_t{64},
                          std::size_t{128}, std::size_t{200}, std::size_t{600}}) {
    for (std::size_t pad : {std::size_t{0}, std::size_t{1}, std::size_t{4}}) {
      CAPTURE(dim);
      CAPTURE(pad);
      const std::size_t stride = dim + pad;
      const auto table = random_floats(rows * stride, rng);
      auto offsets = ragged_offsets(batch, 40, rng);  // includes empty bags
      std::uniform_int_distribution<id_type> id(0, static_cast<id_type>(rows) - 1);
      std::vector<id_type> ids(static_cast<std::size_t>(offsets.back()));
      for (auto& i : ids) i = id(rng);
      const auto weights = random_floats(ids.size(), rng);
      for (auto mode : {rc::pooling::sum, rc::pooling::mean})
        for (bool weighted : {false, true})
          for (bool last_offset : {true, false}) {
            auto bag_offsets = offsets;
            if (!last_offset) bag_offsets.pop_back();  // PyTorch default: the last bag runs to the end
            const std::vector<float> w = weighted ? weights : std::vector<float>{};
            const auto want = cpu_bag(table, rows, dim, stride, ids, bag_offsets, w, mode, batch);
            unsigned long long invalid = 1;
            const auto got = gpu_bag(backend, table, rows, dim, stride, ids, bag_offsets, w, mode, batch, dim + pad, &invalid);
            check_close(want, got, 1e-5f);
            CHECK(invalid == 0);
          }
    }
  }
}

TEST_CASE("embedding_bag: invalid ids count and pool as zero rows; hostile offsets are clamped") {
  rc::cuda_backend backend;
  std::mt19937_64 rng(7);
  const std::size_t rows = 50, dim = 64, batch = 4;
  const auto table = random_floats(rows * dim, rng);
  const std::vector<id_type> ids = {1, -1, 2, 50, 3, std::numeric_limits<id_type>::max(), 4, 5, 6, 7};
  const std::vector<std::int64_t> offsets = {0, 3, 6, 10};
  // Reference: the same table plus one zero row that every invalid id is redirected to.
  std::vector<float> padded = table;
  padded.resize((rows + 1) * dim, 0.0f);
  std::vector<id_type> redirected = ids;
  for (auto& id : redirected)
    if (id < 0 || id >= static_cast<id_type>(rows)) id = static_cast<id_type>(rows);
  for (auto mode : {rc::pooling::sum, rc::pooling::mean}) {
    unsigned long long invalid = 0;
    const auto got = gpu_bag(backend, table, rows, dim, dim, ids, offsets, {}, mode, batch, dim, &invalid);
    CHECK(invalid == 3);
    check_close(cpu_bag(padded, rows + 1, dim, dim, redirected, offsets, {}, mode, batch), got, 1e-5f);
  }
  // offsets -7 -> 0, 100 -> 10, then 4 < 10 -> empty bag, then the last bag [4, 10)
  const std::vector<std::int64_t> hostile = {-7, 100, 4};
  const std::vector<id_type> valid = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  const auto got = gpu_bag(backend, table, rows, dim, dim, valid, hostile, {}, rc::pooling::sum, 3, dim);
  std::vector<float> want(3 * dim, 0.0f);
  const auto bag0 = cpu_bag(table, rows, dim, dim, valid, {0}, {}, rc::pooling::sum, 1);
  const auto bag2 = cpu_bag(table, rows, dim, dim, std::vector<id_type>(valid.begin() + 4, valid.end()), {0}, {},
                            rc::pooling::sum, 1);
  std::copy(bag0.begin(), bag0.end(), want.begin());
  std::copy(bag2.begin(), bag2.end(), want.begin() + 2 * dim);
  check_close(want, got, 1e-5f);
}

TEST_CASE("dot_scores matches math::dot per candidate; invalid candidates score NaN") {
  rc::cuda_backend backend;
  std::mt19937_64 rng(8);
  for (std::size_t dim : {std::size_t{1}, std::size_t{5}, std::size_t{32}, std::size_t{64}, std::size_t{100},
                          std::size_t{256}, std::size_t{1000}}) {
    CAPTURE(dim);
    const std::size_t requests = 37, num_items = 500, stride = dim + 3;
    const auto queries = random_floats(requests * stride, rng);
    const auto items = random_floats(num_items * stride, rng);
    const auto offsets = ragged_offsets(requests, 60, rng);
    std::uniform_int_distribution<id_type> item(-2, static_cast<id_type>(num_items) + 1);  // some invalid
    std::vector<id_type> candidates(static_cast<std::size_t>(offsets.back()));
    for (auto& c : candidates) c = item(rng);
    std::vector<float> want(candidates.size());
    for (std::size_t r = 0; r < requests; ++r)
      for (auto c = static_cast<std::size_t>(offsets[r]); c < static_cast<std::size_t>(offsets[r + 1]); ++c)
        want[c] = candidates[c] < 0 || candidates[c] >= static_cast<id_type>(num_items)
                      ? std::numeric_limits<float>::quiet_NaN()
                      : recpipe::math::dot(queries.data() + r * stride,
                                           items.data() + static_cast<std::size_t>(candidates[c]) * stride, dim);
    auto d_queries = rc::to_device(backend, cspan(queries));
    auto d_items = rc::to_device(backend, cspan(items));
    auto d_candidates = rc::to_device(backend, cspan(candidates));
    auto d_offsets = rc::to_device(backend, cspan(offsets));
    rc::device_buffer<float> d_out(backend, candidates.size());
    RECPIPE_CUDA_TRY(rc::dot_scores(backend, recpipe::matrix_view<const float>(d_queries.data(), requests, dim, stride),
                                    recpipe::matrix_view<const float>(d_items.data(), num_items, dim, stride),
                                    d_candidates.const_span(), d_offsets.const_span(), d_out.span()));
    check_close(want, rc::to_host(backend, d_out.const_span()), 1e-4f);
  }
}

TEST_CASE("dot_scores: candidates outside every request score NaN") {
  rc::cuda_backend backend;
  std::mt19937_64 rng(9);
  const std::size_t dim = 16;
  const auto queries = random_floats(2 * dim, rng), items = random_floats(10 * dim, rng);
  const std::vector<id_type> candidates = {0, 1, 2, 3, 4, 5};
  const std::vector<std::int64_t> offsets = {2, 4, 3};  // request 0 = [2, 4), request 1 empty; 0, 1, 4, 5 belong to none
  auto d_queries = rc::to_device(backend, cspan(queries));
  auto d_items = rc::to_device(backend, cspan(items));
  auto d_candidates = rc::to_device(backend, cspan(candidates));
  auto d_offsets = rc::to_device(backend, cspan(offsets));
  rc::device_buffer<float> d_out(backend, candidates.size());
  RECPIPE_CUDA_TRY(rc::dot_scores(backend, recpipe::matrix_view<const float>(d_queries.data(), 2, dim),
                                  recpipe::matrix_view<const float>(d_items.data(), 10, dim), d_candidates.const_span(),
                                  d_offsets.const_span(), d_out.span()));
  const auto got = rc::to_host(backend, d_out.const_span());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> want = {nan, nan, recpipe::math::dot(queries.data(), items.data() + 2 * dim, dim),
                                   recpipe::math::dot(queries.data(), items.data() + 3 * dim, dim), nan, nan};
  check_close(want, got, 1e-5f);
}

TEST_CASE("device_buffer round trip and move") {
  rc::cuda_backend backend;
  const std::vector<float> host = {1.0f, 2.0f, 3.0f};
  auto a = rc::to_device(backend, cspan(host));
  rc::device_buffer<float> b = std::move(a);
  CHECK(a.data() == nullptr);
  CHECK(rc::to_host(backend, b.const_span()) == host);
}

TEST_CASE("embedding_bags: fp32, fp16 and int8 row-wise tables in one launch match cpu::embedding_bags") {
  rc::cuda_backend backend;
  std::mt19937_64 rng(9);
  const std::size_t batch = 97;
  // 35 tables: more than one launch's 32; dims cover one lane, partial tiles and the tile loop (300).
  const std::size_t dims[] = {24, 64, 300, 1, 7, 33};
  const recpipe::cpu::storage formats[] = {recpipe::cpu::storage::fp32, recpipe::cpu::storage::fp16,
                                           recpipe::cpu::storage::int8_rowwise};
  std::vector<recpipe::cpu::embedding_table> cpu_tables;
  std::vector<rc::device_buffer<std::byte>> device_bytes;
  std::vector<rc::device_table> tables;
  std::vector<std::vector<id_type>> ids;
  std::vector<std::vector<std::int64_t>> offsets;
  std::vector<std::vector<float>> weights;
  std::size_t total = 0;
  for (std::size_t t = 0; t < 35; ++t) {
    const std::size_t dim = dims[t % 6], rows = 50 + t;
    const auto values = random_floats(rows * dim, rng);
    cpu_tables.push_back(recpipe::cpu::embedding_table::from_fp32(
        recpipe::matrix_view<const float>(values.data(), rows, dim), formats[t % 3]));
    const auto view = cpu_tables.back().view();
    device_bytes.push_back(rc::to_device(backend, std::span<const std::byte>(view.data(), rows * view.row_bytes())));
    const void* d = device_bytes.back().data();
    tables.push_back(formats[t % 3] == recpipe::cpu::storage::fp32
                         ? rc::device_table::fp32({static_cast<const float*>(d), rows, dim})
                     : formats[t % 3] == recpipe::cpu::storage::fp16
                         ? rc::device_table::fp16(static_cast<const std::uint16_t*>(d), rows, dim)
                         : rc::device_table::int8_rowwise(static_cast<const std::uint8_t*>(d), rows, dim));
    offsets.push_back(ragged_offsets(batch, 9, rng));
    std::uniform_int_distribution<id_type> id(0, static_cast<id_type>(rows) - 1);
    ids.emplace_back(static_cast<std::size_t>(offsets.back().back()));
    for (auto& i : ids.back()) i = id(rng);
    weights.push_back(t % 2 ? random_floats(ids.back().size(), rng) : std::vector<float>{});
    total += dim;
  }
  std::vector<rc::device_buffer<id_type>> d_ids;
  std::vector<rc::device_buffer<std::int64_t>> d_offsets;
  std::vector<rc::device_buffer<float>> d_weights;
  std::vector<rc::device_bags> inputs;
  std::vector<recpipe::cpu::embedding_table_view> cpu_views;
  std::vector<recpipe::cpu::bag_input> cpu_inputs;
  for (std::size_t t = 0; t < 35; ++t) {
    d_ids.push_back(rc::to_device(backend, cspan(ids[t])));
    d_offsets.push_back(rc::to_device(backend, cspan(offsets[t])));
    d_weights.push_back(rc::to_device(backend, cspan(weights[t])));
    inputs.push_back({d_ids[t].const_span(), d_offsets[t].const_span(), d_weights[t].const_span()});
    cpu_views.push_back(cpu_tables[t].view());
    cpu_inputs.push_back({cspan(ids[t]), cspan(offsets[t]), cspan(weights[t])});
  }
  for (auto mode : {rc::pooling::sum, rc::pooling::mean}) {
    std::vector<float> want(batch * total);
    recpipe::cpu::embedding_bags(cpu_views, cpu_inputs,
                                 mode == rc::pooling::mean ? recpipe::cpu::pooling::mean : recpipe::cpu::pooling::sum,
                                 recpipe::matrix_view<float>(want.data(), batch, total));
    rc::device_buffer<float> d_out(backend, batch * (total + 3));
    RECPIPE_CUDA_TRY(rc::embedding_bags(backend, tables, inputs, mode,
                                        recpipe::matrix_view<float>(d_out.data(), batch, total, total + 3)));
    const auto strided = rc::to_host(backend, d_out.const_span());
    std::vector<float> got(batch * total);
    for (std::size_t b = 0; b < batch; ++b)
      std::copy_n(strided.begin() + static_cast<std::ptrdiff_t>(b * (total + 3)), total,
                  got.begin() + static_cast<std::ptrdiff_t>(b * total));
    check_close(want, got, 1e-5f);
  }
  // Shape errors name the input.
  inputs[3].offsets = inputs[3].offsets.subspan(0, 5);
  rc::device_buffer<float> d_out(backend, batch * total);
  CHECK_THROWS_WITH_AS(rc::embedding_bags(backend, tables, inputs, rc::pooling::sum,
                                          recpipe::matrix_view<float>(d_out.data(), batch, total)),
                       doctest::Contains("inputs[3].offsets has 5 entries for 97 bags"), recpipe::error);
  CHECK_THROWS_WITH_AS(rc::embedding_bags(backend, std::span<const rc::device_table>(tables).subspan(1), inputs,
                                          rc::pooling::sum, recpipe::matrix_view<float>(d_out.data(), batch, total)),
                       doctest::Contains("34 tables but 35 inputs"), recpipe::error);
}

TEST_CASE("softmax_sample draws what the CPU rule (math::sampling_key, ties by id) draws, per segment") {
  rc::cuda_backend backend;
  std::mt19937_64 rng(10);
  const auto offsets = ragged_offsets(40, 300, rng);
  const std::size_t n = static_cast<std::size_t>(offsets.back()), segments = offsets.size() - 1;
  const auto scores = tricky_scores(n, rng);
  std::vector<std::uint64_t> request_keys(segments);
  for (auto& key : request_keys) key = rng();
  auto d_scores = rc::to_device(backend, cspan(scores));
  auto d_offsets = rc::to_device(backend, cspan(offsets));
  auto d_keys = rc::to_device(backend, cspan(request_keys));
  for (bool explicit_ids : {false, true})
    for (bool keyed : {false, true})
      for (float temperature : {0.0f, 0.3f, 2.0f})
        for (std::size_t k : {std::size_t{1}, std::size_t{17}, std::size_t{400}}) {
          CAPTURE(explicit_ids);
          CAPTURE(keyed);
          CAPTURE(temperature);
          CAPTURE(k);
          const auto ids = explicit_ids ? wild_ids(n, rng) : std::vector<id_type>{};
          std::vector<id_type> want_ids(segments * k, -1);
          std::vector<float> want_scores(segments * k, std::numeric_limits<float>::quiet_NaN());
          for (std::size_t seg = 0; seg < segments; ++seg) {
            const auto begin = static_cast<std::size_t>(offsets[seg]), end = static_cast<std::size_t>(offsets[seg + 1]);
            const std::uint64_t stream = recpipe::math::sampling_stream(77, keyed ? request_keys[seg] : seg);
            struct entry {
              double key;
              id_type id;
              std::size_t position;
            };
            std::vector<entry> row;
            for (std::size_t i = begin; i < end; ++i) {
              const id_type id = explicit_ids ? ids[i] : static_cast<id_type>(i - begin);
              row.push_back({recpipe::math::sampling_key(scores[i], temperature, stream, id), id, i});
            }
            std::stable_sort(row.begin(), row.end(), [](const entry& a, const entry& b) {
              return recpipe::math::ranks_before(a.key, a.id, b.key, b.id);
            });
            for (std::size_t j = 0; j < std::min(k, row.size()); ++j) {
              want_ids[seg * k + j] = row[j].id;
              want_scores[seg * k + j] = scores[row[j].position];
            }
          }
          auto d_ids = rc::to_device(backend, cspan(ids));
          rc::device_buffer<id_type> d_out_ids(backend, segments * k);
          rc::device_buffer<float> d_out_scores(backend, segments * k);
          RECPIPE_CUDA_TRY(rc::softmax_sample(backend, d_scores.const_span(), d_ids.const_span(), d_offsets.const_span(),
                                              keyed ? d_keys.const_span() : rc::device_span<const std::uint64_t>(), k,
                                              temperature, 77, d_out_ids.span(), d_out_scores.span()));
          check_same_top_k(want_ids, want_scores, rc::to_host(backend, d_out_ids.const_span()),
                           rc::to_host(backend, d_out_scores.const_span()));
        }
  rc::device_buffer<id_type> out_ids(backend, 1);
  rc::device_buffer<float> out_scores(backend, 1);
  CHECK_THROWS_WITH_AS(rc::softmax_sample(backend, d_scores.const_span(), {}, d_offsets.const_span(), {}, 1, -1.0f, 1,
                                          out_ids.span(), out_scores.span()),
                       doctest::Contains("temperature must be finite and >= 0"), recpipe::error);
}
