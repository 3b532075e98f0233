// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu/embedding.hpp tables (fp32, fp16, int8 row-wise), lookups and bags.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <recpipe/cpu/embedding.hpp>
#include <recpipe/cpu/isa.hpp>
#include <recpipe/cpu/threads.hpp>

#include "common/isa.hpp"
#include "unit/cpu/reference.hpp"

namespace cpu = recpipe::cpu;
using recpipe::id_type;

namespace {
// Reference: pooled bags in double from the *decoded* table rows (so fp16/int8 errors are the
// kernel's only) and separately from the fp32 source (to bound the quantisation error).
std::vector<double> bag_reference(const std::vector<std::vector<double>>& rows, std::span<const id_type> ids,
                                  std::span<const id_type> offsets, std::span<const float> weights, bool mean,
                                  std::size_t batch, std::size_t dim) {
  std::vector<double> out(batch * dim, 0.0);
  for (std::size_t b = 0; b < batch; ++b) {
    const auto begin = static_cast<std::size_t>(offsets[b]);
    const std::size_t end = b + 1 < offsets.size() ? static_cast<std::size_t>(offsets[b + 1]) : ids.size();
    for (std::size_t i = begin; i < end; ++i)
      for (std::size_t c = 0; c < dim; ++c)
        out[b * dim + c] += (weights.empty() ? 1.0 : weights[i]) * rows[static_cast<std::size_t>(ids[i])][c];
    if (mean && end > begin)
      for (std::size_t c = 0; c < dim; ++c) out[b * dim + c] /= static_cast<double>(end - begin);
  }
  return out;
}
}  // namespace

namespace {
using recpipe::testing::available_isas;
using recpipe::testing::isa_guard;
}  // namespace

TEST_CASE("half conversions used by fp16 tables round to nearest") {
  CHECK(recpipe::math::half_to_float(recpipe::math::float_to_half(1.0f)) == 1.0f);
  CHECK(recpipe::math::float_to_half(65504.0f) == 0x7bff);
  CHECK(recpipe::math::float_to_half(1e6f) == 0x7c00);
}

TEST_CASE_TEMPLATE("embedding_bag matches the reference for every storage, pooling and offsets form", Storage,
                   std::integral_constant<cpu::storage, cpu::storage::fp32>,
                   std::integral_constant<cpu::storage, cpu::storage::fp16>,
                   std::integral_constant<cpu::storage, cpu::storage::int8_rowwise>) {
  std::mt19937 rng(5);
  for (std::size_t dim : {1u, 3u, 16u, 33u, 64u}) {
    const std::size_t rows = 101;
    ref::buffer source(rows, dim);
    ref::fill(source, rng);
    auto table = cpu::embedding_table::from_fp32(source.cview(), Storage::value);
    std::vector<std::vector<double>> decoded(rows, std::vector<double>(dim)), exact(rows, std::vector<double>(dim));
    std::vector<float> tmp(dim);
    for (std::size_t r = 0; r < rows; ++r) {
      table.view().dequantize_row(static_cast<id_type>(r), tmp);
      for (std::size_t c = 0; c < dim; ++c) {
        decoded[r][c] = tmp[c];
        exact[r][c] = source(r, c);
      }
    }
    // bags of sizes 0..40, including empty bags first and last
    std::uniform_int_distribution<id_type> pick(0, rows - 1);
    std::vector<id_type> ids, offsets;
    const std::size_t batch = 12;
    for (std::size_t b = 0; b < batch; ++b) {
      offsets.push_back(static_cast<id_type>(ids.size()));
      const std::size_t size = (b == 0 || b == batch - 1) ? 0 : (b * 7) % 41;
      for (std::size_t i = 0; i < size; ++i) ids.push_back(pick(rng));
    }
    const auto weights = ref::random_vector(ids.size(), rng);
    auto with_last = offsets;
    with_last.push_back(static_cast<id_type>(ids.size()));
    for (bool mean : {false, true})
      for (bool weighted : {false, true})
        for (bool include_last : {false, true}) {
          CAPTURE(dim); CAPTURE(mean); CAPTURE(weighted); CAPTURE(include_last);
          ref::buffer out(batch, dim, 3);
          ref::fill(out, rng);  // must be overwritten, empty bags included
          const std::span<const float> w = weighted ? std::span<const float>(weights) : std::span<const float>();
          const std::span<const id_type> off = include_last ? std::span<const id_type>(with_last) : std::span<const id_type>(offsets);
          cpu::embedding_bag(table.view(), ids, off, w, mean ? cpu::pooling::mean : cpu::pooling::sum, out.view());
          CHECK(ref::max_rel_error(bag_reference(decoded, ids, off, w, mean, batch, dim), out) < 1e-5);
          for (std::size_t c = 0; c < dim; ++c) CHECK(out(0, c) == 0.0f);
          // stated bounds against the fp32 source: fp16 keeps 11 bits, int8 row-wise half a step (range/510) per row
          const double bound = Storage::value == cpu::storage::fp32 ? 1e-5 : Storage::value == cpu::storage::fp16 ? 1e-3 : 1e-2;
          CHECK(ref::max_rel_error(bag_reference(exact, ids, off, w, mean, batch, dim), out) < bound);
        }
  }
}

TEST_CASE("int8 row-wise rows decode within half a quantisation step; constant rows are exact") {
  std::mt19937 rng(6);
  ref::buffer source(50, 37);
  ref::fill(source, rng, 5.0f);
  for (std::size_t c = 0; c < 37; ++c) source(3, c) = -2.5f;
  auto table = cpu::embedding_table::from_fp32(source.cview(), cpu::storage::int8_rowwise);
  CHECK(table.row_bytes() == 37 + 8);
  std::vector<float> row(37);
  for (std::size_t r = 0; r < 50; ++r) {
    table.view().dequantize_row(static_cast<id_type>(r), row);
    float lo = source(r, 0), hi = lo;
    for (std::size_t c = 0; c < 37; ++c) {
      lo = std::min(lo, source(r, c));
      hi = std::max(hi, source(r, c));
    }
    for (std::size_t c = 0; c < 37; ++c) CHECK(std::abs(row[c] - source(r, c)) <= (hi - lo) / 510.0f * 1.001f + 1e-6f);
  }
  table.view().dequantize_row(3, row);
  for (float v : row) CHECK(v == -2.5f);
}

TEST_CASE("embedding_lookup copies rows; fp32 views may be strided") {
  std::mt19937 rng(7);
  ref::buffer source(20, 9, 4);
  ref::fill(source, rng);
  const auto view = cpu::embedding_table_view::fp32(source.cview());
  const std::vector<id_type> ids = {19, 0, 7, 7};
  ref::buffer out(4, 9);
  cpu::embedding_lookup(view, ids, out.view());
  for (std::size_t i = 0; i < ids.size(); ++i)
    for (std::size_t c = 0; c < 9; ++c) CHECK(out(i, c) == source(static_cast<std::size_t>(ids[i]), c));
  cpu::embedding_lookup(view, {}, recpipe::matrix_view<float>(nullptr, 0, 9));  // empty is fine
}

TEST_CASE("embedding_bags pools many tables into concatenated columns") {
  std::mt19937 rng(8);
  ref::buffer t0(30, 4), t1(10, 6);
  ref::fill(t0, rng);
  ref::fill(t1, rng);
  auto q1 = cpu::embedding_table::from_fp32(t1.cview(), cpu::storage::fp16);
  const std::vector<cpu::embedding_table_view> tables = {cpu::embedding_table_view::fp32(t0.cview()), q1.view()};
  const std::vector<id_type> ids0 = {1, 2, 29}, off0 = {0, 2}, ids1 = {9, 9}, off1 = {0, 0};
  const std::vector<cpu::bag_input> inputs = {{ids0, off0}, {ids1, off1}};
  ref::buffer out(2, 10);
  cpu::embedding_bags(tables, inputs, cpu::pooling::sum, out.view());
  CHECK(out(0, 0) == doctest::Approx(t0(1, 0) + t0(2, 0)));
  CHECK(out(1, 3) == doctest::Approx(t0(29, 3)));
  for (std::size_t c = 0; c < 6; ++c) {
    CHECK(out(0, 4 + c) == 0.0f);  // table 1, bag 0 is empty
    CHECK(out(1, 4 + c) == doctest::Approx(2 * t1(9, c)).epsilon(1e-3));
  }
  ref::buffer narrow(2, 9);
  CHECK_THROWS_WITH_AS(cpu::embedding_bags(tables, inputs, cpu::pooling::sum, narrow.view()),
                       doctest::Contains("dims add up to 10"), recpipe::error);
  const std::vector<id_type> bad_ids = {1, 10};
  const std::vector<cpu::bag_input> bad = {{ids0, off0}, {bad_ids, off1}};
  CHECK_THROWS_WITH_AS(cpu::embedding_bags(tables, bad, cpu::pooling::sum, out.view()),
                       doctest::Contains("inputs[1]: cpu::embedding_bag: ids[1] = 10 is outside [0, 10)"), recpipe::error);
}

TEST_CASE("bad ids, offsets and weights throw recpipe::error naming the argument") {
  ref::buffer source(5, 4);
  const auto view = cpu::embedding_table_view::fp32(source.cview());
  ref::buffer out(2, 4);
  const std::vector<id_type> ids = {0, 1, 2};
  const auto run = [&](std::vector<id_type> i, std::vector<id_type> o, std::vector<float> w = {}) {
    cpu::embedding_bag(view, i, o, w, cpu::pooling::sum, out.view());
  };
  CHECK_THROWS_WITH_AS(run({0, 5}, {0, 1}), doctest::Contains("ids[1] = 5 is outside [0, 5)"), recpipe::error);
  CHECK_THROWS_WITH_AS(run({-1, 2}, {0, 1}), doctest::Contains("ids[0] = -1"), recpipe::error);
  CHECK_THROWS_WITH_AS(run({0, 1}, {0, -1}), doctest::Contains("offsets[1] = -1"), recpipe::error);
  CHECK_THROWS_WITH_AS(run({0, 1}, {0, 3}), doctest::Contains("offsets[1] = 3 is outside [0, 2]"), recpipe::error);
  CHECK_THROWS_WITH_AS(run({0, 1}, {1, 2}), doctest::Contains("offsets[0] must be 0"), recpipe::error);
  CHECK_THROWS_WITH_AS(run({0, 1, 2}, {0, 2, 1}), doctest::Contains("must not decrease"), recpipe::error);
  CHECK_THROWS_WITH_AS(run({0, 1}, {0}), doctest::Contains("offsets has 1 entries for 2 bags"), recpipe::error);
  CHECK_THROWS_WITH_AS(run({0, 1}, {0, 1}, {1.0f}), doctest::Contains("weights has 1 entries"), recpipe::error);
  ref::buffer wrong(2, 3);
  CHECK_THROWS_WITH_AS(cpu::embedding_bag(view, ids, std::vector<id_type>{0, 1}, {}, cpu::pooling::sum, wrong.view()),
                       doctest::Contains("out has 3 columns but the table's dim is 4"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::embedding_lookup(view, std::vector<id_type>{0, 9}, out.view()),
                       doctest::Contains("cpu::embedding_lookup: ids[1] = 9"), recpipe::error);
  cpu::embedding_table table(cpu::storage::int8_rowwise, 3, 2);
  CHECK_THROWS_WITH_AS(table.set_row(0, std::vector<float>{1.0f, std::nanf("")}), doctest::Contains("values[1]"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(table.set_row(3, std::vector<float>{1.0f, 2.0f}), doctest::Contains("id 3 is outside"), recpipe::error);
  CHECK_THROWS_WITH_AS(table.set_row(0, std::vector<float>{1.0f}), doctest::Contains("values holds 1"), recpipe::error);
  std::vector<float> row(2);
  CHECK_THROWS_AS(table.view().dequantize_row(-1, row), recpipe::error);
}

TEST_CASE("large tables are 2 MiB aligned for huge pages") {
  cpu::embedding_table table(cpu::storage::fp32, 1 << 14, 64);  // 4 MiB
  CHECK(reinterpret_cast<std::uintptr_t>(table.data()) % (2u << 20) == 0);
  CHECK(table.size_bytes() == (std::size_t{1} << 14) * 256);
}

TEST_CASE_TEMPLATE("embedding_bag: AVX-512 and portable bodies both match the reference on awkward shapes", Storage,
                   std::integral_constant<cpu::storage, cpu::storage::fp32>,
                   std::integral_constant<cpu::storage, cpu::storage::fp16>,
                   std::integral_constant<cpu::storage, cpu::storage::int8_rowwise>) {
  isa_guard guard;
  std::mt19937 rng(11);
  // dim 1..16 fit one masked register, 17 and 100 end in a partial one, 64 is the common case,
  // 200 takes two column passes (128 + a masked 72).
  for (std::size_t dim : {1u, 3u, 16u, 17u, 64u, 100u, 200u}) {
    const std::size_t rows = 257;
    ref::buffer source(rows, dim, 5);  // a strided source exercises from_fp32 on a strided view
    ref::fill(source, rng);
    auto table = cpu::embedding_table::from_fp32(source.cview(), Storage::value);
    std::vector<std::vector<double>> decoded(rows, std::vector<double>(dim));
    std::vector<float> tmp(dim);
    for (std::size_t r = 0; r < rows; ++r) {
      table.view().dequantize_row(static_cast<id_type>(r), tmp);
      for (std::size_t c = 0; c < dim; ++c) decoded[r][c] = tmp[c];
    }
    // 300 bags, long enough that prefetching runs ahead across many bags; every 7th bag is empty,
    // and ids 0 and rows - 1 (the table's first and last rows) occur.
    std::uniform_int_distribution<id_type> pick(0, rows - 1);
    std::vector<id_type> ids, offsets;
    const std::size_t batch = 300;
    for (std::size_t b = 0; b < batch; ++b) {
      offsets.push_back(static_cast<id_type>(ids.size()));
      const std::size_t size = b % 7 == 0 ? 0 : 1 + (b * 13) % 29;
      for (std::size_t i = 0; i < size; ++i) ids.push_back(pick(rng));
    }
    ids[1] = 0;
    ids.back() = static_cast<id_type>(rows - 1);
    const auto weights = ref::random_vector(ids.size(), rng);
    for (bool mean : {false, true})
      for (bool weighted : {false, true}) {
        const std::span<const float> w = weighted ? std::span<const float>(weights) : std::span<const float>();
        const auto want = bag_reference(decoded, ids, offsets, w, mean, batch, dim);
        std::vector<std::vector<float>> results;
        for (cpu::isa choice : available_isas()) {
          CAPTURE(dim); CAPTURE(mean); CAPTURE(weighted); CAPTURE(cpu::to_string(choice));
          cpu::set_isa(choice);
          ref::buffer out(batch, dim, 7);  // strided: 7 padding floats per row must stay untouched
          for (auto& v : out.storage) v = -123.0f;
          cpu::embedding_bag(table.view(), ids, offsets, w, mean ? cpu::pooling::mean : cpu::pooling::sum, out.view());
          CHECK(ref::max_rel_error(want, out) < 1e-5);
          for (std::size_t b = 0; b < batch; b += 7)
            for (std::size_t c = 0; c < dim; ++c) CHECK(out(b, c) == 0.0f);  // empty bags give zeros
          bool padding_kept = out.storage[0] == -123.0f;
          for (std::size_t r = 0; r < batch; ++r)
            for (std::size_t c = dim; c < out.stride; ++c) padding_kept = padding_kept && out(r, c) == -123.0f;
          CHECK(padding_kept);
          results.push_back(ref::flatten(out));
        }
        // The two bodies add in the same order, so they agree far inside the tolerance.
        if (results.size() == 2) {
          double diff = 0.0, peak = 0.0;
          for (std::size_t i = 0; i < results[0].size(); ++i) {
            diff = std::max(diff, static_cast<double>(std::abs(results[0][i] - results[1][i])));
            peak = std::max(peak, static_cast<double>(std::abs(results[0][i])));
          }
          CHECK(diff <= 1e-6 * std::max(peak, 1.0));
        }
      }
  }
}

TEST_CASE("embedding_bag: both bodies name the position of a bad id, also one far ahead and on 2 threads") {
  isa_guard guard;
  std::mt19937 rng(12);
  ref::buffer source(50, 24);
  ref::fill(source, rng);
  auto q = cpu::embedding_table::from_fp32(source.cview(), cpu::storage::int8_rowwise);
  const std::vector<cpu::embedding_table_view> tables = {cpu::embedding_table_view::fp32(source.cview()), q.view()};
  std::vector<id_type> offsets;
  for (std::size_t b = 0; b < 400; ++b) offsets.push_back(static_cast<id_type>(b * 5));
  ref::buffer out(400, 24);
  for (int threads : {1, 2}) {
    cpu::set_num_threads(threads);
    for (cpu::isa choice : available_isas()) {
      cpu::set_isa(choice);
      for (const auto& table : tables) {
        CAPTURE(threads); CAPTURE(cpu::to_string(choice)); CAPTURE(static_cast<int>(table.type()));
        for (id_type bad : {id_type{50}, id_type{-1}, id_type{1} << 40}) {
          std::vector<id_type> ids(2000, 7);
          ids[1500] = bad;  // many rows after the start: the prefetcher meets it first and must skip it
          const std::string message = "ids[1500] = " + std::to_string(bad) + " is outside [0, 50)";
          CHECK_THROWS_WITH_AS(cpu::embedding_bag(table, ids, offsets, {}, cpu::pooling::sum, out.view()),
                               doctest::Contains(message.c_str()), recpipe::error);
        }
        // The last id of the stream (prefetch distance reaches past the end) is fine.
        std::vector<id_type> ids(2000, 49);
        cpu::embedding_bag(table, ids, offsets, {}, cpu::pooling::sum, out.view());
        std::vector<float> row(24);
        table.dequantize_row(49, row);
        for (std::size_t c = 0; c < 24; ++c) CHECK(out(399, c) == doctest::Approx(5.0 * row[c]).epsilon(1e-5));
      }
    }
  }
  cpu::set_num_threads(1);
}

TEST_CASE("embedding_bag on 2 threads matches 1 thread bit for bit") {
  std::mt19937 rng(13);
  ref::buffer source(1000, 40);
  ref::fill(source, rng);
  const auto view = cpu::embedding_table_view::fp32(source.cview());
  std::uniform_int_distribution<id_type> pick(0, 999);
  std::vector<id_type> ids(4096 * 8), offsets;
  for (auto& id : ids) id = pick(rng);
  for (std::size_t b = 0; b < 4096; ++b) offsets.push_back(static_cast<id_type>(b * 8));
  ref::buffer one(4096, 40), two(4096, 40);
  cpu::set_num_threads(1);
  cpu::embedding_bag(view, ids, offsets, {}, cpu::pooling::sum, one.view());
  cpu::set_num_threads(2);
  cpu::embedding_bag(view, ids, offsets, {}, cpu::pooling::sum, two.view());
  cpu::set_num_threads(1);
  CHECK(one.storage == two.storage);
}
