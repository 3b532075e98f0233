// SPDX-License-Identifier: Apache-2.0
// recpipe tests: train/fixed_table.hpp (and train/row_init.hpp): init, pooling, sparse updates,
// bad ids and non-finite gradients, serving copies.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <recpipe/cpu/embedding.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/row_init.hpp>

#include "common/row_optimizers.hpp"

namespace cpu = recpipe::cpu;
namespace train = recpipe::train;
using recpipe::id_type;
using recpipe::matrix;

namespace {
std::string message_of(auto&& f) {
  try {
    f();
  } catch (const recpipe::error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_CASE("row_init: a pure function of (seed, id, column), in range, with the requested spread") {
  train::row_init uniform{train::row_init::distribution::uniform, 0.5f, 3};
  std::vector<float> a(64), b(64), c(64);
  uniform.fill(12345, a);
  uniform.fill(12345, b);
  CHECK(a == b);
  uniform.fill(12346, c);
  CHECK(a != c);
  // A prefix of a longer row is the shorter row: values depend on the column only.
  std::vector<float> prefix(8);
  uniform.fill(12345, prefix);
  CHECK(std::vector<float>(a.begin(), a.begin() + 8) == prefix);
  train::row_init other_seed = uniform;
  other_seed.seed = 4;
  other_seed.fill(12345, c);
  CHECK(a != c);

  // Statistics over many rows: uniform(-s, s) has mean 0 and variance s^2/3; normal(0, s) has s^2.
  double sum = 0, sq = 0, lo = 1, hi = -1;
  std::vector<float> row(16);
  const int n = 4000;
  for (id_type id = 0; id < n; ++id) {
    uniform.fill(id, row);
    for (float v : row) {
      sum += v, sq += double(v) * v;
      lo = std::min(lo, double(v)), hi = std::max(hi, double(v));
    }
  }
  const double count = n * 16.0;
  CHECK(lo >= -0.5);
  CHECK(hi < 0.5);
  CHECK(std::abs(sum / count) < 0.01);
  CHECK(sq / count == doctest::Approx(0.25 / 3).epsilon(0.03));

  train::row_init normal{train::row_init::distribution::normal, 2.0f, 9};
  sum = sq = 0;
  for (id_type id = -n; id < 0; ++id) {  // negative ids are keys like any other
    normal.fill(id, row);
    for (float v : row) {
      REQUIRE(std::isfinite(v));
      sum += v, sq += double(v) * v;
    }
  }
  CHECK(std::abs(sum / count) < 0.05);
  CHECK(sq / count == doctest::Approx(4.0).epsilon(0.03));

  train::row_init zeros{train::row_init::distribution::zeros, 1.0f, 1};
  zeros.fill(std::numeric_limits<id_type>::min(), row);
  for (float v : row) CHECK(v == 0.0f);

  train::row_init bad{train::row_init::distribution::uniform, -1.0f, 1};
  CHECK(message_of([&] { bad.fill(1, row); }).find("scale must be finite and >= 0") != std::string::npos);
}

TEST_CASE("fixed_table: rows start from row_init, state from the optimizer's init_state") {
  auto opt = std::make_shared<recpipe::testing::counting_sgd>();
  train::fixed_table t({.rows = 50, .dim = 8, .init = {train::row_init::distribution::normal, 0.1f, 77}, .name = "item"}, opt);
  CHECK(t.rows() == 50);
  CHECK(t.dim() == 8);
  CHECK(t.state_size() == 2);
  CHECK(t.name() == "item");
  CHECK(&t.optimizer() == opt.get());
  std::vector<float> expected(8);
  for (std::size_t r = 0; r < 50; ++r) {
    t.settings().init.fill(static_cast<id_type>(r), expected);
    for (std::size_t c = 0; c < 8; ++c) CHECK(t.weights()(r, c) == expected[c]);
    CHECK(t.state()(r, 0) == 7.0f);
  }
  // The weights are one contiguous [rows, dim] block (what a safetensors writer takes).
  CHECK(t.weights().stride() == 8);
  // Same config, same rows: determinism does not depend on anything but (seed, id).
  train::fixed_table u({.rows = 50, .dim = 8, .init = {train::row_init::distribution::normal, 0.1f, 77}}, opt);
  for (std::size_t r = 0; r < 50; ++r)
    for (std::size_t c = 0; c < 8; ++c) CHECK(u.weights()(r, c) == t.weights()(r, c));

  CHECK(message_of([] { train::fixed_table({.rows = 2, .dim = 2, .name = "x"}, nullptr); }).find("optimizer is null") !=
        std::string::npos);
}

TEST_CASE("fixed_table: pool is cpu::embedding_bag over the fp32 master weights") {
  auto opt = std::make_shared<recpipe::testing::sgd_rows>();
  train::fixed_table t({.rows = 20, .dim = 5, .init = {train::row_init::distribution::uniform, 1.0f, 1}}, opt);
  const std::vector<id_type> ids = {3, 1, 4, 1, 5, 9, 2, 6};
  const std::vector<id_type> offsets = {0, 2, 2, 5};
  const std::vector<float> weights = {0.5f, 2.0f, 1.0f, -1.0f, 3.0f, 1.0f, 1.0f, 0.25f};
  for (auto mode : {cpu::pooling::sum, cpu::pooling::mean}) {
    for (bool weighted : {false, true}) {
      matrix<float> got(4, 5), want(4, 5);
      const std::span<const float> w = weighted ? std::span<const float>(weights) : std::span<const float>();
      t.pool(ids, offsets, w, mode, got.view());
      cpu::embedding_bag(cpu::embedding_table_view::fp32(t.weights()), ids, offsets, w, mode, want.view());
      CHECK(got.values() == want.values());
      std::as_const(t).pool_const(ids, offsets, w, mode, got.view());
      CHECK(got.values() == want.values());
    }
  }
  // The empty bag (index 1) pools to zeros.
  matrix<float> out(4, 5);
  t.pool(ids, offsets, {}, cpu::pooling::mean, out.view());
  for (float v : out.row(1)) CHECK(v == 0.0f);
}

TEST_CASE("fixed_table: out-of-range and negative ids throw, naming the table and the id") {
  auto opt = std::make_shared<recpipe::testing::sgd_rows>();
  train::fixed_table t({.rows = 10, .dim = 4, .name = "user_id"}, opt);
  matrix<float> out(1, 4);
  for (id_type bad : {id_type{10}, id_type{-1}, std::numeric_limits<id_type>::min(), std::numeric_limits<id_type>::max()}) {
    const std::vector<id_type> ids = {1, bad}, offsets = {0};
    const std::string m = message_of([&] { t.pool(ids, offsets, {}, cpu::pooling::sum, out.view()); });
    CHECK(m.find("\"user_id\"") != std::string::npos);
    CHECK(m.find("= " + std::to_string(bad) + " is outside [0, 10)") != std::string::npos);
    matrix<float> grads(2, 4);
    const std::string a = message_of([&] { t.apply(ids, grads.view()); });
    CHECK(a.find("\"user_id\": apply: ids[1] = " + std::to_string(bad)) != std::string::npos);
  }
  // An id check failing leaves every row untouched (all ids are checked first).
  std::vector<float> snapshot(t.weights().data(), t.weights().data() + 40);
  const std::vector<id_type> ids = {2, 11};
  matrix<float> grads(2, 4, 1.0f);
  CHECK_THROWS_AS(t.apply(ids, grads.view()), recpipe::error);
  CHECK(std::vector<float>(t.weights().data(), t.weights().data() + 40) == snapshot);
  // Shape errors.
  matrix<float> wrong(2, 3);
  CHECK(message_of([&] { t.apply(ids, wrong.view()); }).find("grads must be 2 x 4 (got 2 x 3)") != std::string::npos);
  matrix<float> out3(1, 3);
  const std::vector<id_type> ok = {1}, offsets = {0};
  CHECK(message_of([&] { t.pool(ok, offsets, {}, cpu::pooling::sum, out3.view()); }).find("\"table\"") == std::string::npos);
  CHECK(message_of([&] { t.pool(ok, offsets, {}, cpu::pooling::sum, out3.view()); }).find("\"user_id\"") != std::string::npos);
}

TEST_CASE("fixed_table: apply updates only the given rows through the optimizer") {
  auto opt = std::make_shared<recpipe::testing::counting_sgd>(0.5f);
  train::fixed_table t({.rows = 30, .dim = 6, .init = {train::row_init::distribution::uniform, 1.0f, 5}}, opt);
  const std::vector<float> w0(t.weights().data(), t.weights().data() + 30 * 6);
  const std::vector<float> s0(t.state().data(), t.state().data() + 30 * 2);
  const std::vector<id_type> ids = {4, 17, 0};
  matrix<float> grads(3, 6);
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t c = 0; c < 6; ++c) grads(i, c) = float(i + 1) * 0.1f * float(c + 1);
  t.optimizer().begin_step();
  t.apply(ids, grads.view());
  CHECK(opt->steps == 1);
  for (std::size_t r = 0; r < 30; ++r) {
    const auto it = std::find(ids.begin(), ids.end(), static_cast<id_type>(r));
    for (std::size_t c = 0; c < 6; ++c) {
      if (it == ids.end()) {
        CHECK(t.weights()(r, c) == w0[r * 6 + c]);
      } else {
        const std::size_t i = static_cast<std::size_t>(it - ids.begin());
        CHECK(t.weights()(r, c) == w0[r * 6 + c] - 0.5f * grads(i, c));
      }
    }
    CHECK(t.state()(r, 0) == (it == ids.end() ? s0[r * 2] : s0[r * 2] + 1.0f));
  }
  // Empty batches are fine.
  t.apply({}, matrix<float>(0, 6).view());
  t.apply({}, recpipe::matrix_view<const float>());
}

TEST_CASE("fixed_table: non-finite gradients and non-finite updates skip the row and are counted") {
  auto opt = std::make_shared<recpipe::testing::counting_sgd>(0.5f);
  train::fixed_table t({.rows = 4, .dim = 3, .init = {train::row_init::distribution::uniform, 1.0f, 5}}, opt);
  const std::vector<float> w0(t.weights().data(), t.weights().data() + 12);
  const std::vector<id_type> ids = {0, 1, 2};
  matrix<float> grads(3, 3, 1.0f);
  grads(0, 1) = std::numeric_limits<float>::quiet_NaN();
  grads(2, 2) = std::numeric_limits<float>::infinity();
  t.apply(ids, grads.view());
  CHECK(t.skipped_nonfinite() == 2);
  for (std::size_t c = 0; c < 3; ++c) {
    CHECK(t.weights()(0, c) == w0[c]);
    CHECK(t.weights()(1, c) == w0[3 + c] - 0.5f);
    CHECK(t.weights()(2, c) == w0[6 + c]);
  }
  CHECK(t.state()(0, 0) == 7.0f);
  CHECK(t.state()(1, 0) == 8.0f);
  // A NaN learning rate makes every update non-finite: nothing is written.
  opt->lr = std::numeric_limits<float>::quiet_NaN();
  matrix<float> ones(3, 3, 1.0f);
  t.apply(ids, ones.view());
  CHECK(t.skipped_nonfinite() == 5);
  CHECK(t.weights()(1, 0) == w0[3] - 0.5f);
  CHECK(t.state()(1, 0) == 8.0f);
  // A finite gradient that overflows the row is also refused.
  opt->lr = 1.0f;
  matrix<float> huge(1, 3, std::numeric_limits<float>::max());
  const std::vector<id_type> one = {3};
  t.apply(one, huge.view());  // row - max is finite
  t.apply(one, huge.view());  // -max - max overflows to -inf
  CHECK(t.skipped_nonfinite() == 6);
  for (std::size_t c = 0; c < 3; ++c) CHECK(std::isfinite(t.weights()(3, c)));
}

TEST_CASE("fixed_table: serving copies in fp32, fp16 and int8 row-wise come from the fp32 master") {
  auto opt = std::make_shared<recpipe::testing::sgd_rows>();
  train::fixed_table t({.rows = 40, .dim = 16, .init = {train::row_init::distribution::normal, 0.3f, 11}}, opt);
  const std::vector<id_type> ids = {0, 39, 7, 7, 21}, offsets = {0, 2};
  matrix<float> master(2, 16);
  t.pool(ids, offsets, {}, cpu::pooling::sum, master.view());
  for (auto [type, tolerance] : {std::pair{cpu::storage::fp32, 0.0f}, std::pair{cpu::storage::fp16, 2e-3f},
                                 std::pair{cpu::storage::int8_rowwise, 2e-2f}}) {
    const cpu::embedding_table copy = t.serving_copy(type);
    CHECK(copy.type() == type);
    CHECK(copy.rows() == 40);
    CHECK(copy.dim() == 16);
    matrix<float> served(2, 16);
    cpu::embedding_bag(copy.view(), ids, offsets, {}, cpu::pooling::sum, served.view());
    for (std::size_t i = 0; i < served.size(); ++i) CHECK(std::abs(served.values()[i] - master.values()[i]) <= tolerance);
  }
  // The copy is a snapshot: training afterwards does not change it.
  const cpu::embedding_table copy = t.serving_copy(cpu::storage::fp32);
  const std::vector<id_type> one = {0};
  matrix<float> g(1, 16, 1.0f);
  t.apply(one, g.view());
  std::vector<float> row(16);
  copy.view().dequantize_row(0, row);
  CHECK(row[0] != t.weights()(0, 0));
  CHECK(row[0] == doctest::Approx(t.weights()(0, 0) + 0.1f));
}

TEST_CASE("fixed_table: with train/optimizers.hpp's row-wise Adagrad and lazy Adam, state lives beside each row") {
  for (int which = 0; which < 2; ++which) {
    std::shared_ptr<train::basic_row_optimizer> opt;
    if (which == 0)
      opt = std::make_shared<train::rowwise_adagrad>(train::rowwise_adagrad_options{.lr = 0.1, .initial_accumulator_value = 0.5});
    else
      opt = std::make_shared<train::lazy_adam>(train::lazy_adam_options{.lr = 0.01});
    INFO(opt->name());
    train::fixed_table t({.rows = 12, .dim = 4, .init = {train::row_init::distribution::normal, 0.2f, 3}}, opt);
    CHECK(t.state_size() == opt->state_size(4));
    // Reference: the same optimizer on copies of the rows it is given, nothing else changes.
    matrix<float> w(12, 4), s(12, t.state_size());
    std::copy(t.weights().data(), t.weights().data() + 48, w.data());
    std::copy(t.state().data(), t.state().data() + s.size(), s.data());
    if (which == 0)
      for (float v : s.values()) CHECK(v == 0.5f);
    for (int step = 0; step < 5; ++step) {
      const std::vector<id_type> ids = {static_cast<id_type>(step), 11, static_cast<id_type>(2 * step + 1)};
      matrix<float> g(3, 4);
      for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t c = 0; c < 4; ++c) g(i, c) = 0.1f * float(step + 1) - 0.07f * float(i * 4 + c);
      t.optimizer().begin_step();
      t.apply(ids, g.view());
      for (std::size_t i = 0; i < 3; ++i) opt->update_row(w.row(std::size_t(ids[i])), s.row(std::size_t(ids[i])), g.row(i));
      CHECK(std::vector<float>(t.weights().data(), t.weights().data() + 48) == w.values());
      CHECK(std::vector<float>(t.state().data(), t.state().data() + s.size()) == s.values());
    }
  }
}
