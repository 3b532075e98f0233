// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA layer, host half of cuda::device_feature_table (plain C++, no nvcc): the sorted id
// index, the argument checks and the host rows, plus the per-key search the device kernel runs.
//
// Why a sorted array: the device looks every key up with a binary search over the sorted ids
// (log2(size) dependent loads, all lanes of a warp reading the same addresses), which needs no
// hash table on the device and no assumption that ids are dense. The host rows are kept in the
// same order so that a cpu_backend run of the same pipeline reads the same values.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/feature_store.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda {

//! @brief The position of `key` in `ids[0, count)`, sorted ascending without duplicates, or -1.
//! A lower-bound binary search; what the device lookup kernel runs for each key.
//! @code
//! const recpipe::id_type ids[] = {2, 5, 9};
//! auto at = recpipe::cuda::sorted_find(ids, 3, 5);  // 1
//! @endcode
RECPIPE_HOST_DEVICE inline std::int64_t sorted_find(const id_type* ids, std::size_t count, id_type key) {
  std::size_t low = 0, high = count;
  while (low < high) {
    const std::size_t middle = low + (high - low) / 2;
    if (ids[middle] < key)
      low = middle + 1;
    else
      high = middle;
  }
  return low < count && ids[low] == key ? static_cast<std::int64_t>(low) : -1;
}

//! @brief Threads that copy one looked-up row in the device kernel: the smallest power of two
//! >= dim, at most a warp (32). Narrow rows leave no lanes idle; wide rows are copied by a warp
//! with consecutive lanes on consecutive floats (coalesced).
RECPIPE_HOST_DEVICE constexpr unsigned lookup_lanes(std::size_t dim) {
  unsigned lanes = 1;
  while (lanes < 32 && lanes < dim) lanes *= 2;
  return lanes;
}

//! What a device lookup learns about the keys a table did not hold: how many, the smallest flat
//! position of one (~0 when none) and the id there. Counted on the device only under
//! on_missing::fail (the host needs them to throw).
struct lookup_misses {
  unsigned long long count = 0;
  unsigned long long first = ~0ull;
  id_type first_id = -1;
};

//! @brief The host half of cuda::device_feature_table: ids sorted ascending, one float row per id
//! in that order, the missing-id policy. A store in the lookup sense on its own (`lookup(table)`
//! runs it on the host); cuda::device_feature_table copies its ids and rows to the device once.
//!
//! `Value` is a float column: a vector per id (per_request_vector / per_candidate_vector, width
//! dim()) or one value per id (per_request / per_candidate, dim() 1). `Key` is a per-request id
//! column (col::user_id) or col::candidates (per-candidate values), as for feature_store.
//! Immutable after construction, so any number of threads may read it.
//! @throws recpipe::error (at construction) when ids and rows disagree in count, a vector row has
//! width 0 or a single-value row width other than 1, an id is negative or appears twice, or a row
//! holds NaN or inf (naming the id: a non-finite feature would poison every score it enters).
//! @code
//! recpipe::cuda::host_feature_table<recpipe::col::candidates, recpipe::col::item_embedding> items(ids, rows.view());
//! auto found = items.find(42);  // the row of id 42, or an empty span
//! @endcode
template <column Key, column Value>
class host_feature_table {
  using columns_checked = ::recpipe::detail::store_columns<Key, Value>;

 public:
  using key_column = Key;
  using value_column = Value;
  using value_type = typename Value::value_type;
  static constexpr bool holds_vectors = columns_checked::holds_vectors;
  static constexpr bool holds_lists = false;
  static_assert(!columns_checked::holds_lists,
                "recpipe: DEVICE_TABLE_HOLDS_NO_LISTS - a device feature table holds a vector or a value per id; "
                "keep list columns (e.g. col::history) in a feature_store");
  static_assert(std::is_same_v<value_type, float>,
                "recpipe: DEVICE_TABLE_HOLDS_FLOATS - a device feature table holds float columns");

  //! Rows `rows.row(i)` belong to `ids[i]` (any order; copied and sorted by id).
  host_feature_table(std::span<const id_type> ids, matrix_view<const float> rows,
                     on_missing missing = on_missing::use_default)
      : dim_(rows.cols()), missing_(missing) {
    if (ids.size() != rows.rows())
      ::recpipe::detail::fail(name_prefix(), ids.size(), " ids but ", rows.rows(), " rows");
    check_width(dim_);
    std::vector<std::size_t> order(ids.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ids[a] < ids[b]; });
    ids_.resize(ids.size());
    values_.resize(ids.size() * dim_);
    for (std::size_t i = 0; i < order.size(); ++i) {
      const id_type id = ids[order[i]];
      check_id(id);
      if (i > 0 && ids_[i - 1] == id) ::recpipe::detail::fail(name_prefix(), "id ", id, " appears twice");
      ids_[i] = id;
      const auto row = rows.row(order[i]);
      for (std::size_t c = 0; c < dim_; ++c) {
        if (!std::isfinite(row[c]))
          ::recpipe::detail::fail(name_prefix(), "the row of id ", id, " holds ", row[c], " at column ", c,
                                  "; rows must be finite");
        values_[i * dim_ + c] = row[c];
      }
    }
  }

  //! One value per id (single-value columns): `values[i]` belongs to `ids[i]`.
  host_feature_table(std::span<const id_type> ids, std::span<const float> values,
                     on_missing missing = on_missing::use_default)
      : host_feature_table(ids, matrix_view<const float>(values.data(), values.size(), 1), missing) {}

  //! @brief A snapshot of `store`: every id it holds now, with its row, and its missing-id policy
  //! (rows written while this runs may or may not be seen; each row is copied whole).
  explicit host_feature_table(const feature_store<Key, Value>& store)
      : host_feature_table(snapshot(store), store.missing_policy()) {}

  std::size_t dim() const noexcept { return dim_; }
  //! Number of ids held.
  std::size_t size() const noexcept { return ids_.size(); }
  on_missing missing_policy() const noexcept { return missing_; }
  //! The ids, ascending.
  std::span<const id_type> ids() const noexcept { return ids_; }
  //! The rows, in the order of ids(): size() x dim().
  matrix_view<const float> rows() const noexcept { return {values_.data(), ids_.size(), dim_}; }
  std::span<const float> values() const noexcept { return values_; }

  //! Where `id` is in ids(), or -1.
  std::int64_t position(id_type id) const noexcept { return sorted_find(ids_.data(), ids_.size(), id); }
  bool contains(id_type id) const noexcept { return position(id) >= 0; }
  //! The row of `id` (dim() values), or an empty span when it is not held.
  std::span<const float> find(id_type id) const noexcept {
    const std::int64_t at = position(id);
    if (at < 0) return {};
    return {values_.data() + static_cast<std::size_t>(at) * dim_, dim_};
  }
  //! find() applying the missing-id policy: an empty span (use_default; the lookup writes zeros) or
  //! a recpipe::error naming the id (fail), as feature_store does.
  std::span<const float> find_or_apply_policy(id_type id) const {
    const auto found = find(id);
    if (found.empty() && missing_ == on_missing::fail) missing_id(id);
    return found;
  }

  //! find_or_apply_policy() handed to `visit(std::span<const float>)`: the lookup stage's way to
  //! read a store (nvcc's front end checks the stage's call to it even when a store lacks it).
  template <class Visit>
  void read_or_apply_policy(id_type id, Visit&& visit) const {
    visit(find_or_apply_policy(id));
  }

  //! @brief Throws the error a lookup of the unknown `id` raises under on_missing::fail (the same
  //! text on both backends).
  [[noreturn]] static void missing_id(id_type id) {
    ::recpipe::detail::fail("lookup: id ", id, " is not in the device feature table for column '", Value::name, "'");
  }

 private:
  struct rows_of_store {
    std::vector<id_type> ids;
    std::vector<float> values;
    std::size_t dim = 0;
  };
  static rows_of_store snapshot(const feature_store<Key, Value>& store) {
    rows_of_store out;
    out.dim = store.dim();
    store.for_each([&](id_type id, std::span<const float> row) {
      out.ids.push_back(id);
      out.values.insert(out.values.end(), row.begin(), row.end());
    });
    return out;
  }
  host_feature_table(const rows_of_store& rows, on_missing missing)
      : host_feature_table(rows.ids, matrix_view<const float>(rows.values.data(), rows.ids.size(), rows.dim), missing) {}

  static std::string name_prefix() { return std::string("cuda::device_feature_table<") + std::string(Value::name) + ">: "; }
  static void check_width(std::size_t width) {
    if constexpr (holds_vectors) {
      if (width == 0) ::recpipe::detail::fail(name_prefix(), "rows have width 0");
    } else {
      if (width != 1)
        ::recpipe::detail::fail(name_prefix(), "'", Value::name, "' holds one value per id but rows have width ", width);
    }
  }
  static void check_id(id_type id) {
    if (id < 0) ::recpipe::detail::fail(name_prefix(), "id ", id, " is negative; ids must be >= 0");
  }

  std::size_t dim_;
  on_missing missing_;
  std::vector<id_type> ids_;
  std::vector<float> values_;
};

}  // namespace cuda
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
