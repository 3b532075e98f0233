// SPDX-License-Identifier: Apache-2.0
// Shared by the table tests: tiny row optimizers (the real ones live in train/ optimizers), so a
// table's tests do not depend on them.
#pragma once

#include <cstddef>
#include <span>

#include <recpipe/train/table.hpp>

namespace recpipe::testing {

//! row -= lr * grad, no state.
struct sgd_rows final : train::row_optimizer {
  float lr = 0.1f;
  explicit sgd_rows(float lr_ = 0.1f) : lr(lr_) {}
  std::size_t state_size(std::size_t) const override { return 0; }
  void init_state(std::span<float>) const override {}
  void begin_step() override {}
  void update_row(std::span<float> row, std::span<float>, std::span<const float> grad) const override {
    for (std::size_t c = 0; c < row.size(); ++c) row[c] -= lr * grad[c];
  }
};

//! SGD with two floats of state per row: state[0] starts at `initial` and counts updates,
//! state[1] holds the last gradient's first value (checks that state lives with its row).
struct counting_sgd final : train::row_optimizer {
  float lr = 0.1f, initial = 7.0f;
  int steps = 0;
  explicit counting_sgd(float lr_ = 0.1f) : lr(lr_) {}
  std::size_t state_size(std::size_t) const override { return 2; }
  void init_state(std::span<float> state) const override {
    state[0] = initial;
    state[1] = 0.0f;
  }
  void begin_step() override { ++steps; }
  void update_row(std::span<float> row, std::span<float> state, std::span<const float> grad) const override {
    for (std::size_t c = 0; c < row.size(); ++c) row[c] -= lr * grad[c];
    state[0] += 1.0f;
    state[1] = grad[0];
  }
};

}  // namespace recpipe::testing
