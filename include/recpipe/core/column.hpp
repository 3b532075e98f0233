// SPDX-License-Identifier: Apache-2.0
// recpipe: columns (compile-time tags with a value type and a shape) and their storage.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/ragged_view.hpp>
#include <recpipe/detail/meta.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! How a column's values line up with the requests of a batch.
enum class column_shape {
  per_request,           //!< one value per request (a user id)                 -> std::vector<T>
  per_request_vector,    //!< one fixed-width vector per request (a query)      -> matrix<T>, n rows
  per_request_list,      //!< a variable-length list per request (history)      -> ragged<T>, n rows
  per_candidate,         //!< one value per candidate in `col::candidates`      -> std::vector<T>
  per_candidate_vector,  //!< one vector per candidate (item features)          -> matrix<T>
};

//! @brief Variable-length rows stored flat, ready for a GPU: `offsets` (rows + 1 entries, starting
//! at 0, non-decreasing, ending at values.size()) and `values`.
//!
//! @code
//! recpipe::ragged<recpipe::id_type> history;
//! history.push_row({{4, 8, 15}});
//! history.push_row({});                 // an empty row
//! // history.rows() == 2, history.row(0).size() == 3
//! @endcode
template <class T>
class ragged {
 public:
  using value_type = T;

  ragged() = default;
  //! Adopts offsets and values; throws recpipe::error if they do not describe valid rows.
  ragged(std::vector<std::size_t> offsets, std::vector<T> values) : offsets_(std::move(offsets)), values_(std::move(values)) {
    validate("ragged");
  }

  std::size_t rows() const { return offsets_.size() - 1; }
  std::size_t total() const { return values_.size(); }
  std::span<const T> row(std::size_t r) const { return {values_.data() + offsets_[r], offsets_[r + 1] - offsets_[r]}; }
  std::span<T> row(std::size_t r) { return {values_.data() + offsets_[r], offsets_[r + 1] - offsets_[r]}; }
  std::size_t row_size(std::size_t r) const { return offsets_[r + 1] - offsets_[r]; }
  const std::vector<std::size_t>& offsets() const { return offsets_; }
  const std::vector<T>& values() const { return values_; }
  std::vector<T>& values() { return values_; }

  //! Replaces the contents; throws recpipe::error naming `what` when they are not valid rows.
  void assign(std::vector<std::size_t> offsets, std::vector<T> values, std::string_view what = "ragged") {
    offsets_ = std::move(offsets);
    values_ = std::move(values);
    validate(what);
  }

  void clear() {
    offsets_.assign(1, 0);
    values_.clear();
  }
  void reserve(std::size_t rows, std::size_t values) {
    offsets_.reserve(rows + 1);
    values_.reserve(values);
  }
  void push_row(std::span<const T> row) {
    values_.insert(values_.end(), row.begin(), row.end());
    offsets_.push_back(values_.size());
  }
  void push_row(std::initializer_list<T> row) { push_row(std::span<const T>(row.begin(), row.size())); }
  //! Appends one value to the last row begun with begin_row().
  void begin_row() { offsets_.push_back(values_.size()); }
  void push_back(const T& value) {
    values_.push_back(value);
    offsets_.back() = values_.size();
  }

  //! Throws recpipe::error naming `what` when the offsets are not a valid row partition
  //! (check_offsets in core/ragged_view.hpp).
  void validate(std::string_view what) const {
    check_offsets<std::size_t>(what, offsets_, values_.size());
  }
  //! The rows as a non-owning ragged_view (what the session models take without a copy).
  ragged_view<const T> view() const { return {offsets_, values_}; }

 private:
  std::vector<std::size_t> offsets_{0};
  std::vector<T> values_;
};

//! Base of every column tag. Declare columns with RECPIPE_COLUMN.
template <class Name, class T, column_shape Shape>
struct column_base {
  using value_type = T;
  static constexpr column_shape shape = Shape;
};

//! True for types declared with RECPIPE_COLUMN.
template <class C>
concept column = requires {
  typename C::value_type;
  { C::shape } -> std::convertible_to<column_shape>;
  { C::name } -> std::convertible_to<std::string_view>;
};

namespace detail {
template <class T, column_shape Shape>
struct storage_for {
  using type = std::vector<T>;
};
template <class T>
struct storage_for<T, column_shape::per_request_vector> {
  using type = matrix<T>;
};
template <class T>
struct storage_for<T, column_shape::per_candidate_vector> {
  using type = matrix<T>;
};
template <class T>
struct storage_for<T, column_shape::per_request_list> {
  using type = ragged<T>;
};
}  // namespace detail

//! The container that holds column C in a batch.
template <column C>
using column_storage_t = typename detail::storage_for<typename C::value_type, C::shape>::type;

template <column C>
inline constexpr bool is_per_candidate_v =
    C::shape == column_shape::per_candidate || C::shape == column_shape::per_candidate_vector;

//! A list of columns, as stages declare what they read and write.
template <column... Cs>
using columns = type_list<Cs...>;

RECPIPE_NAMESPACE_END

//! Declares a column in one line: `RECPIPE_COLUMN(click_prob, per_candidate, float);`
//! Shape is one of per_request, per_request_vector, per_request_list, per_candidate,
//! per_candidate_vector.
#define RECPIPE_COLUMN(Name, Shape, Type)                                                      \
  struct Name : ::recpipe::column_base<Name, Type, ::recpipe::column_shape::Shape> {           \
    static constexpr ::std::string_view name = #Name;                                          \
  }

#include <recpipe/detail/epilogue.hpp>
