// SPDX-License-Identifier: Apache-2.0
// Shared fixture for train tests: a small fixed table with plain SGD rows, and synthetic data.
#pragma once

#include <recpipe/train/freeze.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/table.hpp>
#include <recpipe/cpu/embedding_backward.hpp>
#include <recpipe/math/random.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace recpipe::testing {

// row -= lr * grad.
class sgd_rows final : public train::row_optimizer {
 public:
  explicit sgd_rows(float lr) : lr_(lr) {}
  std::size_t state_size(std::size_t) const override { return 0; }
  void init_state(std::span<float>) const override {}
  void begin_step() override { ++steps; }
  void update_row(std::span<float> row, std::span<float>, std::span<const float> grad) const override {
    for (std::size_t i = 0; i < row.size(); ++i) row[i] -= lr_ * grad[i];
  }
  std::size_t steps = 0;

 private:
  float lr_;
};

// A fixed table [rows, dim] with deterministic uniform(-0.1, 0.1) rows.
class simple_table final : public train::trainable_table, public train::exportable_table {
 public:
  simple_table(std::size_t rows, std::size_t dim, float lr, std::uint64_t seed)
      : values_(rows, dim), optimizer_(lr) {
    for (std::size_t i = 0; i < values_.size(); ++i) values_.values()[i] = (2.0f * math::uniform_open01(seed, i) - 1.0f) * 0.1f;
  }
  std::size_t dim() const override { return values_.cols(); }
  train::row_optimizer& optimizer() override { return optimizer_; }
  void pool(std::span<const id_type> ids, std::span<const id_type> offsets, std::span<const float> weights,
            cpu::pooling mode, matrix_view<float> out) override {
    cpu::embedding_bag(cpu::embedding_table_view::fp32(values_.view()), ids, offsets, weights, mode, out);
  }
  void apply(std::span<const id_type> ids, matrix_view<const float> grads) override {
    for (std::size_t i = 0; i < ids.size(); ++i)
      optimizer_.update_row(values_.row(static_cast<std::size_t>(ids[i])), {}, grads.row(i));
  }
  train::table_export export_rows() const override {
    train::table_export e;
    e.rows = values_;
    return e;
  }
  matrix<float>& values() { return values_; }

 private:
  matrix<float> values_;
  sgd_rows optimizer_;
};

}  // namespace recpipe::testing

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include <doctest/doctest.h>

namespace recpipe::testing {

// A batch of `n` examples: uniform(-1, 1) dense features, and bags of 1..3 ids per feature
// (weights in [0, 1) when `weighted`).
inline train::example_batch random_batch(std::size_t n, std::size_t dense_dim, const std::vector<std::size_t>& rows,
                                         std::uint32_t seed, bool weighted = false) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  train::example_batch b(dense_dim, rows.size());
  for (std::size_t e = 0; e < n; ++e) {
    b.begin_example(gen() % 2 ? 1.0f : 0.0f);
    for (float& x : b.dense_row()) x = u(gen);
    for (std::size_t t = 0; t < rows.size(); ++t) {
      const std::size_t count = 1 + gen() % 3;
      for (std::size_t k = 0; k < count; ++k)
        b.add_id(t, static_cast<id_type>(gen() % rows[t]), weighted ? 0.5f + 0.5f * u(gen) : 1.0f);
    }
  }
  return b;
}

// Checks a model's dense and table gradients against central finite differences of
// L = sum_b r_b logit_b (so dL/dlogits = r), on a few elements of every parameter and table row.
template <class Model>
void check_model_gradients(Model& m, const std::vector<std::shared_ptr<simple_table>>& tables, train::example_batch& b) {
  std::vector<float> r(b.size());
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = 0.3f + 0.4f * static_cast<float>(i % 3) - 0.5f * static_cast<float>(i % 2);
  auto loss = [&] {
    typename Model::workspace ws;
    auto logits = m.forward(b.inputs(), ws);
    double s = 0;
    for (std::size_t i = 0; i < b.size(); ++i) s += static_cast<double>(r[i]) * logits(i, 0);
    return s;
  };
  typename Model::workspace ws;
  for (auto* p : m.parameters()) p->zero_grad();
  m.forward(b.inputs(), ws);
  m.backward(ws, {r.data(), r.size(), 1});
  const float eps = 2e-4f;
  std::size_t checked = 0, bad = 0;
  auto compare = [&](float& v, double analytic, const std::string& what) {
    const float keep = v;
    v = keep + eps;
    const double up = loss();
    v = keep - eps;
    const double down = loss();
    v = keep;
    const double fd = (up - down) / (2 * eps);
    ++checked;
    if (std::fabs(fd - analytic) > 5e-3 * std::max(1.0, std::fabs(fd))) {
      ++bad;
      MESSAGE(what, ": backward ", analytic, " vs finite difference ", fd);
    }
  };
  for (train::parameter* p : m.parameters())
    for (std::size_t i = 0; i < p->size(); i += 1 + p->size() / 12) compare(p->value[i], p->grad[i], p->name + "[" + std::to_string(i) + "]");
  for (std::size_t t = 0; t < tables.size(); ++t) {
    const cpu::sparse_gradient& g = ws.table_grads[t];
    for (std::size_t k = 0; k < g.ids.size(); ++k)
      for (std::size_t c = 0; c < tables[t]->dim(); c += 3)
        compare(tables[t]->values()(static_cast<std::size_t>(g.ids[k]), c), g.rows(k, c),
                "table " + std::to_string(t) + " id " + std::to_string(g.ids[k]) + " col " + std::to_string(c));
  }
  CHECK(checked > 20);
  // A ReLU kink within +-eps of a pre-activation can spoil one finite difference.
  CHECK(bad <= 1);
}

}  // namespace recpipe::testing
