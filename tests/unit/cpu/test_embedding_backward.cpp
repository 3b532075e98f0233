// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu/embedding_backward.hpp (sparse row gradients and per-sample-weight
// gradients of embedding_bag) against finite differences of a double reference forward.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include <recpipe/cpu/embedding.hpp>
#include <recpipe/cpu/embedding_backward.hpp>

#include "unit/cpu/gradcheck.hpp"
#include "unit/cpu/reference.hpp"

namespace cpu = recpipe::cpu;
namespace gc = gradcheck;
using recpipe::id_type;
using recpipe::matrix;

namespace {
// sum_b <R[b], bag_b> in double, with embedding_bag's semantics.
double bag_loss(const std::vector<double>& table, std::size_t dim, const std::vector<id_type>& ids,
                const std::vector<id_type>& offsets, const std::vector<double>& weights, bool mean,
                const std::vector<double>& r, std::size_t batch) {
  double loss = 0;
  for (std::size_t b = 0; b < batch; ++b) {
    const auto begin = static_cast<std::size_t>(offsets[b]);
    const std::size_t end = b + 1 < offsets.size() ? static_cast<std::size_t>(offsets[b + 1]) : ids.size();
    for (std::size_t c = 0; c < dim; ++c) {
      double acc = 0;
      for (std::size_t i = begin; i < end; ++i)
        acc += (weights.empty() ? 1.0 : weights[i]) * table[static_cast<std::size_t>(ids[i]) * dim + c];
      if (mean && end > begin) acc /= static_cast<double>(end - begin);
      loss += r[b * dim + c] * acc;
    }
  }
  return loss;
}

// Scatters a sparse gradient into a dense [rows, dim] one (ids must be unique: checked).
std::vector<float> densify(const cpu::sparse_gradient& g, std::size_t rows, std::size_t dim) {
  std::vector<float> dense(rows * dim, 0.0f);
  std::vector<bool> seen(rows, false);
  for (std::size_t i = 0; i < g.ids.size(); ++i) {
    const auto id = static_cast<std::size_t>(g.ids[i]);
    REQUIRE(!seen[id]);
    seen[id] = true;
    for (std::size_t c = 0; c < dim; ++c) dense[id * dim + c] = g.rows(i, c);
  }
  return dense;
}
}  // namespace

TEST_CASE("embedding_bag_backward matches finite differences for sum, mean and weighted bags") {
  std::mt19937 rng(21);
  const std::size_t rows = 12, dim = 5;
  // bags: {3, 1, 3}, {} (empty), {7}, {1, 0, 11, 7, 7}; repeated ids inside and across bags
  const std::vector<id_type> ids = {3, 1, 3, 7, 1, 0, 11, 7, 7};
  for (bool last_offset : {false, true}) {
    std::vector<id_type> offsets = {0, 3, 3, 4};
    if (last_offset) offsets.push_back(9);
    const std::size_t batch = 4;
    for (bool mean : {false, true})
      for (bool weighted : {false, true}) {
        CAPTURE(last_offset); CAPTURE(mean); CAPTURE(weighted);
        matrix<float> table(std::vector<float>(gc::random(rows * dim, rng)), rows, dim);
        const auto w = weighted ? gc::random(ids.size(), rng, 2.0f) : std::vector<float>{};
        ref::buffer dout(batch, dim, 3);
        ref::fill(dout, rng);
        cpu::sparse_gradient grad;
        const auto mode = mean ? cpu::pooling::mean : cpu::pooling::sum;
        cpu::embedding_bag_backward(ids, offsets, w, mode, dout.cview(), grad);
        CHECK(grad.ids == std::vector<id_type>{3, 1, 7, 0, 11});  // first-seen order
        REQUIRE(grad.rows.rows() == 5);
        REQUIRE(grad.rows.cols() == dim);
        auto td = gc::to_double(table.view());
        const auto wd = gc::to_double(w), rd = gc::to_double(dout.cview());
        const auto loss = [&] { return bag_loss(td, dim, ids, offsets, wd, mean, rd, batch); };
        CHECK(gc::rel_error(gc::numeric(td, loss), densify(grad, rows, dim)) < gc::tolerance);
        // the per-sample weight gradient
        std::vector<float> dw(ids.size(), 99.0f);
        cpu::embedding_bag_weights_backward(cpu::embedding_table_view::fp32(table.view()), ids, offsets, mode,
                                            dout.cview(), dw);
        auto wd2 = weighted ? wd : std::vector<double>(ids.size(), 1.0);
        const auto loss_w = [&] { return bag_loss(td, dim, ids, offsets, wd2, mean, rd, batch); };
        CHECK(gc::rel_error(gc::numeric(wd2, loss_w), dw) < gc::tolerance);
        // reuse: a second call on the same object gives the same result
        const auto first = grad.rows.values();
        cpu::embedding_bag_backward(ids, offsets, w, mode, dout.cview(), grad);
        CHECK(grad.rows.values() == first);
      }
  }
}

TEST_CASE("embedding_bag_backward reuses storage, handles empty batches and ids outside every bag") {
  std::mt19937 rng(22);
  cpu::sparse_gradient grad;
  matrix<float> dout(2, 3, 1.0f);
  const std::vector<id_type> big = {5, 6, 7, 8, 9, 10}, offsets = {0, 3};
  cpu::embedding_bag_backward(big, offsets, {}, cpu::pooling::sum, dout.view(), grad);
  CHECK(grad.size() == 6);
  const float* storage = grad.rows.data();
  const std::vector<id_type> small = {42, 42}, offsets2 = {0, 1};
  cpu::embedding_bag_backward(small, offsets2, {}, cpu::pooling::mean, dout.view(), grad);
  CHECK(grad.ids == std::vector<id_type>{42});
  CHECK(grad.rows.data() == storage);  // no reallocation for a smaller batch
  CHECK(grad.rows(0, 0) == 2.0f);      // two bags of one id each
  // include_last_offset with ids past the last bag: those ids get no row
  const std::vector<id_type> tail = {1, 2, 3}, offsets3 = {0, 1, 2};
  cpu::embedding_bag_backward(tail, offsets3, {}, cpu::pooling::sum, dout.view(), grad);
  CHECK(grad.ids == std::vector<id_type>{1, 2});
  // an empty batch
  matrix<float> none(0, 3);
  cpu::embedding_bag_backward({}, {}, {}, cpu::pooling::sum, none.view(), grad);
  CHECK(grad.size() == 0);
  CHECK(grad.rows.rows() == 0);
  // mean of an empty bag contributes nothing; negative ids are only keys here
  const std::vector<id_type> neg = {-4}, offsets4 = {0, 0};
  cpu::embedding_bag_backward(neg, offsets4, {}, cpu::pooling::mean, dout.view(), grad);
  CHECK(grad.ids == std::vector<id_type>{-4});
  CHECK(grad.rows(0, 1) == 1.0f);
  // many distinct ids (the hash table grows) keep first-seen order
  std::vector<id_type> many;
  for (int i = 0; i < 1000; ++i) many.push_back((i * 7919) % 1009);
  const std::vector<id_type> one_bag = {0};
  matrix<float> d1(1, 2, 1.0f);
  cpu::embedding_bag_backward(many, one_bag, {}, cpu::pooling::sum, d1.view(), grad);
  REQUIRE(grad.size() == 1000);
  for (int i = 0; i < 1000; ++i) CHECK(grad.ids[static_cast<std::size_t>(i)] == many[static_cast<std::size_t>(i)]);
  (void)rng;
}

TEST_CASE("embedding_bag_backward propagates NaN and names bad arguments") {
  cpu::sparse_gradient grad;
  matrix<float> dout(2, 2, 1.0f);
  dout(1, 0) = std::nanf("");
  const std::vector<id_type> ids = {1, 2, 1}, offsets = {0, 2};
  cpu::embedding_bag_backward(ids, offsets, {}, cpu::pooling::sum, dout.view(), grad);
  CHECK(std::isnan(grad.rows(0, 0)));   // id 1 is in bag 1 too
  CHECK_FALSE(std::isnan(grad.rows(1, 0)));  // id 2 only in bag 0
  const std::vector<id_type> bad_offsets = {0, 5};
  CHECK_THROWS_WITH_AS(cpu::embedding_bag_backward(ids, bad_offsets, {}, cpu::pooling::sum, dout.view(), grad),
                       doctest::Contains("cpu::embedding_bag_backward: offsets[1] = 5"), recpipe::error);
  const std::vector<float> w = {1.0f};
  CHECK_THROWS_WITH_AS(cpu::embedding_bag_backward(ids, offsets, w, cpu::pooling::sum, dout.view(), grad),
                       doctest::Contains("per_sample_weights has 1 entries"), recpipe::error);
  matrix<float> table(3, 2, 1.0f);
  std::vector<float> dw(3);
  const auto view = cpu::embedding_table_view::fp32(table.view());
  const std::vector<id_type> out_of_range = {1, 3, 0};
  CHECK_THROWS_WITH_AS(cpu::embedding_bag_weights_backward(view, out_of_range, offsets, cpu::pooling::sum, dout.view(), dw),
                       doctest::Contains("ids[1] = 3"), recpipe::error);
  std::vector<float> short_dw(2);
  CHECK_THROWS_WITH_AS(cpu::embedding_bag_weights_backward(view, ids, offsets, cpu::pooling::sum, dout.view(), short_dw),
                       doctest::Contains("dweights holds 2"), recpipe::error);
  matrix<float> wide(2, 3);
  CHECK_THROWS_WITH_AS(cpu::embedding_bag_weights_backward(view, ids, offsets, cpu::pooling::sum, wide.view(), dw),
                       doctest::Contains("dout has 3 columns"), recpipe::error);
}

TEST_CASE("embedding_bag_weights_backward reads fp16 and int8 tables through their decoded rows") {
  std::mt19937 rng(23);
  matrix<float> values(std::vector<float>(gc::random(6 * 4, rng)), 6, 4);
  const std::vector<id_type> ids = {0, 5, 2, 2}, offsets = {0, 1};
  matrix<float> dout(std::vector<float>(gc::random(2 * 4, rng)), 2, 4);
  for (auto type : {cpu::storage::fp16, cpu::storage::int8_rowwise}) {
    const auto table = cpu::embedding_table::from_fp32(values.view(), type);
    std::vector<float> dw(4), row(4);
    cpu::embedding_bag_weights_backward(table.view(), ids, offsets, cpu::pooling::sum, dout.view(), dw);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      table.view().dequantize_row(ids[i], row);
      const std::size_t b = i == 0 ? 0 : 1;
      double want = 0;
      for (std::size_t c = 0; c < 4; ++c) want += static_cast<double>(row[c]) * dout(b, c);
      CHECK(dw[i] == doctest::Approx(want).epsilon(1e-5));
    }
  }
}

TEST_CASE("embedding_bags_backward splits dout by table like embedding_bags") {
  std::mt19937 rng(24);
  const std::vector<id_type> ids0 = {1, 2, 1}, offsets0 = {0, 2}, ids1 = {0, 3}, offsets1 = {0, 0};
  const std::vector<float> w1 = {2.0f, 0.5f};
  const std::vector<cpu::bag_input> inputs = {{ids0, offsets0}, {ids1, offsets1, w1}};
  const std::vector<std::size_t> dims = {3, 2};
  ref::buffer dout(2, 5, 1);
  ref::fill(dout, rng);
  std::vector<cpu::sparse_gradient> grads(2);
  cpu::embedding_bags_backward(inputs, dims, cpu::pooling::sum, dout.cview(), grads);
  // each table on its own, on its columns
  cpu::sparse_gradient g0, g1;
  cpu::embedding_bag_backward(ids0, offsets0, {}, cpu::pooling::sum, {dout.data(), 2, 3, dout.stride}, g0);
  cpu::embedding_bag_backward(ids1, offsets1, w1, cpu::pooling::sum, {dout.data() + 3, 2, 2, dout.stride}, g1);
  CHECK(grads[0].ids == g0.ids);
  CHECK(grads[0].rows.values() == g0.rows.values());
  CHECK(grads[1].ids == g1.ids);
  CHECK(grads[1].rows.values() == g1.rows.values());
  CHECK(grads[1].rows(0, 0) == doctest::Approx(2.0f * dout(1, 3)));  // bag 0 of table 1 is empty
  const std::vector<std::size_t> bad_dims = {3, 3};
  CHECK_THROWS_WITH_AS(cpu::embedding_bags_backward(inputs, bad_dims, cpu::pooling::sum, dout.cview(), grads),
                       doctest::Contains("add up to 6"), recpipe::error);
  const std::vector<id_type> bad_offsets = {0, 9};
  const std::vector<cpu::bag_input> bad_inputs = {{ids0, offsets0}, {ids1, bad_offsets}};
  CHECK_THROWS_WITH_AS(cpu::embedding_bags_backward(bad_inputs, dims, cpu::pooling::sum, dout.cview(), grads),
                       doctest::Contains("inputs[1]: cpu::embedding_bag_backward: offsets[1] = 9"), recpipe::error);
}
