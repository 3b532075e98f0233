// SPDX-License-Identifier: Apache-2.0
// Shared fixture for train tests: a small fixed table with plain SGD rows, and synthetic data.
#pragma once

#include <recpipe/train/freeze.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/table.hpp>
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
