// SPDX-License-Identifier: Apache-2.0
// recpipe core: a non-owning view of ragged rows (offsets + values), and the one check of offsets
// that every kernel, model and column uses.
#pragma once

#include <concepts>
#include <cstddef>
#include <span>
#include <string_view>
#include <type_traits>

#include <recpipe/core/errors.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! What the last offset of a ragged layout must be.
enum class last_offset {
  equals_total,     //!< rows + 1 offsets, the last equal to the number of values (recpipe's layout)
  may_be_implicit,  //!< also rows offsets, the last row running to the end (PyTorch's embedding_bag)
};

//! @brief Checks that `offsets` describe rows over `total` values: offsets[0] = 0, every offset in
//! [0, total], non-decreasing, and (equals_total) the last equal to `total`. The one check of
//! offsets: columns (ragged), embedding bags, tables and the session models all call it, so every
//! error reads alike. `where` names the caller, `total_name` what `total` counts.
//! @throws recpipe::error naming the first bad offset.
//! @code
//! std::vector<std::size_t> offsets = {0, 2, 5};
//! recpipe::check_offsets<std::size_t>("my_stage", offsets, 5);  // fine: rows [0, 2) and [2, 5)
//! @endcode
template <std::integral Offset>
void check_offsets(std::string_view where, std::span<const Offset> offsets, std::size_t total,
                   last_offset last = last_offset::equals_total, std::string_view total_name = "the number of values") {
  if (offsets.empty()) {
    if (last == last_offset::may_be_implicit) return;
    detail::fail(where, ": offsets must have rows + 1 entries (got 0)");
  }
  if (offsets[0] != 0) detail::fail(where, ": offsets[0] must be 0 (got ", offsets[0], ")");
  const std::size_t n = offsets.size();
  if (last == last_offset::equals_total) {
    bool equal = static_cast<std::size_t>(offsets[n - 1]) == total;
    if constexpr (std::is_signed_v<Offset>) equal = equal && offsets[n - 1] >= 0;
    if (!equal) detail::fail(where, ": offsets[", n - 1, "] = ", offsets[n - 1], " must equal ", total_name, " = ", total);
  }
  for (std::size_t b = 1; b < n; ++b) {
    bool inside = true;
    if constexpr (std::is_signed_v<Offset>) inside = offsets[b] >= 0;
    if (!inside || static_cast<std::size_t>(offsets[b]) > total)
      detail::fail(where, ": offsets[", b, "] = ", offsets[b], " is outside [0, ", total, "]");
    if (offsets[b] < offsets[b - 1])
      detail::fail(where, ": offsets must not decrease (offsets[", b, "] = ", offsets[b], " < offsets[", b - 1, "] = ",
                   offsets[b - 1], ")");
  }
}

//! @brief Rows of variable length over flat values, not owned: row r is
//! values[offsets[r] .. offsets[r + 1]). What the session models and kernels take, so a ragged
//! column (size_t offsets) and PyTorch-style int64 offsets both pass without a copy.
//! @code
//! std::vector<std::size_t> offsets = {0, 3, 5};
//! std::vector<recpipe::id_type> items = {12, 7, 99, 4, 4};
//! recpipe::ragged_view<const recpipe::id_type> sessions(offsets, items);  // 2 rows
//! // sessions.row(1) holds {4, 4}
//! @endcode
template <class T, std::integral Offset = std::size_t>
class ragged_view {
 public:
  using value_type = std::remove_const_t<T>;
  using offset_type = Offset;

  ragged_view() = default;
  //! Views offsets and values as they are; call check() before trusting them.
  ragged_view(std::span<const Offset> offsets, std::span<T> values) : offsets_(offsets), values_(values) {}

  //! @throws recpipe::error naming `where` when the offsets do not describe rows of values().
  void check(std::string_view where, std::string_view total_name = "the number of values") const {
    check_offsets<Offset>(where, offsets_, values_.size(), last_offset::equals_total, total_name);
  }
  std::size_t rows() const { return offsets_.empty() ? 0 : offsets_.size() - 1; }
  std::size_t total() const { return values_.size(); }
  std::size_t begin_of(std::size_t r) const { return static_cast<std::size_t>(offsets_[r]); }
  std::size_t end_of(std::size_t r) const { return static_cast<std::size_t>(offsets_[r + 1]); }
  std::size_t row_size(std::size_t r) const { return end_of(r) - begin_of(r); }
  std::span<T> row(std::size_t r) const { return values_.subspan(begin_of(r), row_size(r)); }
  std::span<const Offset> offsets() const { return offsets_; }
  std::span<T> values() const { return values_; }

 private:
  std::span<const Offset> offsets_;
  std::span<T> values_;
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
