// SPDX-License-Identifier: Apache-2.0
// recpipe: row-major dense matrices, owning (matrix) and non-owning (matrix_view).
#pragma once

#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

#include <recpipe/core/errors.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! @brief A non-owning view of a row-major matrix: `rows` rows of `cols` values, rows
//! `stride` values apart (stride >= cols). Trivially copyable, so it can be passed to kernels.
//!
//! @code
//! std::vector<float> buffer(6);
//! recpipe::matrix_view<float> m(buffer.data(), 2, 3);
//! m(1, 2) = 1.0f;                    // buffer[5]
//! std::span<float> second = m.row(1);
//! @endcode
template <class T>
class matrix_view {
 public:
  using value_type = std::remove_cv_t<T>;

  constexpr matrix_view() = default;
  RECPIPE_HOST_DEVICE constexpr matrix_view(T* data, std::size_t rows, std::size_t cols)
      : data_(data), rows_(rows), cols_(cols), stride_(cols) {}
  RECPIPE_HOST_DEVICE constexpr matrix_view(T* data, std::size_t rows, std::size_t cols, std::size_t stride)
      : data_(data), rows_(rows), cols_(cols), stride_(stride) {}
  //! A view of T converts to a view of const T.
  template <class U, std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>, int> = 0>
  RECPIPE_HOST_DEVICE constexpr matrix_view(const matrix_view<U>& other)
      : data_(other.data()), rows_(other.rows()), cols_(other.cols()), stride_(other.stride()) {}

  RECPIPE_HOST_DEVICE constexpr T* data() const { return data_; }
  RECPIPE_HOST_DEVICE constexpr std::size_t rows() const { return rows_; }
  RECPIPE_HOST_DEVICE constexpr std::size_t cols() const { return cols_; }
  RECPIPE_HOST_DEVICE constexpr std::size_t stride() const { return stride_; }
  RECPIPE_HOST_DEVICE constexpr bool empty() const { return rows_ == 0 || cols_ == 0; }
  RECPIPE_HOST_DEVICE constexpr T& operator()(std::size_t r, std::size_t c) const { return data_[r * stride_ + c]; }
  constexpr std::span<T> row(std::size_t r) const { return {data_ + r * stride_, cols_}; }
  //! Rows [first, first + count).
  constexpr matrix_view middle_rows(std::size_t first, std::size_t count) const {
    return {data_ + first * stride_, count, cols_, stride_};
  }

 private:
  T* data_ = nullptr;
  std::size_t rows_ = 0, cols_ = 0, stride_ = 0;
};

//! @brief An owning row-major matrix backed by a std::vector (contiguous, stride == cols).
//!
//! `resize` keeps the allocation when shrinking, so a matrix reused across batches stops
//! allocating once it has seen its largest batch.
template <class T>
class matrix {
 public:
  using value_type = T;

  matrix() = default;
  matrix(std::size_t rows, std::size_t cols, const T& fill = T{}) : values_(rows * cols, fill), rows_(rows), cols_(cols) {}
  //! Adopts `values` as a rows x cols matrix; throws recpipe::error if the sizes disagree.
  matrix(std::vector<T> values, std::size_t rows, std::size_t cols) : values_(std::move(values)), rows_(rows), cols_(cols) {
    if (values_.size() != rows * cols)
      detail::fail("matrix: ", values_.size(), " values cannot form ", rows, " x ", cols);
  }

  void resize(std::size_t rows, std::size_t cols) {
    values_.resize(rows * cols);
    rows_ = rows;
    cols_ = cols;
  }
  void clear() { resize(0, cols_); }

  std::size_t rows() const { return rows_; }
  std::size_t cols() const { return cols_; }
  std::size_t size() const { return values_.size(); }
  bool empty() const { return values_.empty(); }
  T* data() { return values_.data(); }
  const T* data() const { return values_.data(); }
  T& operator()(std::size_t r, std::size_t c) { return values_[r * cols_ + c]; }
  const T& operator()(std::size_t r, std::size_t c) const { return values_[r * cols_ + c]; }
  std::span<T> row(std::size_t r) { return {values_.data() + r * cols_, cols_}; }
  std::span<const T> row(std::size_t r) const { return {values_.data() + r * cols_, cols_}; }
  matrix_view<T> view() { return {values_.data(), rows_, cols_}; }
  matrix_view<const T> view() const { return {values_.data(), rows_, cols_}; }
  std::vector<T>& values() { return values_; }
  const std::vector<T>& values() const { return values_; }

 private:
  std::vector<T> values_;
  std::size_t rows_ = 0, cols_ = 0;
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
