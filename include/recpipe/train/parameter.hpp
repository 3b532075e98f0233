// SPDX-License-Identifier: Apache-2.0
// recpipe train: a named fp32 parameter with its gradient, the unit dense optimizers update.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief One trainable dense tensor: fp32 master values and the gradient of the same shape.
//!
//! Backward passes *accumulate* into `grad` (as PyTorch autograd does); the trainer zeroes the
//! gradients before each step. Shapes follow the PyTorch module's `state_dict()` (a Linear weight
//! is [out, in]), so `name` and `shape` are what a safetensors snapshot stores.
//! @code
//! recpipe::train::parameter w("layers.0.weight", {64, 32});
//! auto view = w.matrix();        // [64, 32] over w.value
//! w.zero_grad();
//! @endcode
struct parameter {
  std::string name;
  std::vector<std::size_t> shape;
  std::vector<float> value;
  std::vector<float> grad;

  parameter() = default;
  parameter(std::string name_, std::vector<std::size_t> shape_)
      : name(std::move(name_)), shape(std::move(shape_)), value(count(shape)), grad(count(shape)) {}

  static std::size_t count(const std::vector<std::size_t>& shape) {
    std::size_t n = 1;
    for (std::size_t s : shape) n *= s;
    return n;
  }
  std::size_t size() const noexcept { return value.size(); }
  void zero_grad() noexcept { std::fill(grad.begin(), grad.end(), 0.0f); }
  //! True when every gradient value is finite (a step whose gradients are not is skipped).
  bool grad_is_finite() const noexcept {
    for (float g : grad)
      if (!std::isfinite(g)) return false;
    return true;
  }

  //! The value as a [shape[0], product of the rest] matrix (a rank-1 tensor is one row).
  matrix_view<float> matrix() { return {value.data(), rows(), cols()}; }
  matrix_view<const float> matrix() const { return {value.data(), rows(), cols()}; }
  matrix_view<float> grad_matrix() { return {grad.data(), rows(), cols()}; }

 private:
  std::size_t rows() const { return shape.size() <= 1 ? 1 : shape[0]; }
  std::size_t cols() const { return shape.empty() ? 1 : (shape.size() == 1 ? shape[0] : value.size() / shape[0]); }
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
