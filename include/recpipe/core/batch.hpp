// SPDX-License-Identifier: Apache-2.0
// recpipe: the batch of requests that flows through a pipeline, stored as a struct of arrays.
#pragma once

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/detail/meta.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

template <column... Cs>
class batch;

namespace detail {
template <class T>
struct is_batch : std::false_type {};
template <class... Cs>
struct is_batch<batch<Cs...>> : std::true_type {};

struct batch_adopt_tag {};

template <class C, class... Cs>
inline constexpr int count_of_v = (0 + ... + int(std::is_same_v<C, Cs>));
template <class... Cs>
inline constexpr bool columns_unique_v = ((count_of_v<Cs, Cs...> == 1) && ...);
}  // namespace detail

//! True for recpipe::batch<...>.
template <class T>
inline constexpr bool is_batch_v = detail::is_batch<std::remove_cvref_t<T>>::value;

//! @brief A batch of requests: `size()` requests and one container per column
//! (see column_storage_t): struct of arrays, ragged lists as offsets + values.
//!
//! Stages read the columns they declare and return a batch with their output columns added; the
//! type of the batch therefore records which columns exist, and a stage that reads a column no
//! request column or earlier stage provides does not compile.
//!
//! @code
//! using namespace recpipe;
//! batch<col::user_id, col::history> requests(2);
//! requests.get<col::user_id>() = {7, 42};
//! requests.get<col::history>().assign({0, 2, 2}, {3, 9});   // user 7 saw 3 and 9; user 42 nothing
//! requests.validate();
//! @endcode
template <column... Cs>
class batch {
  // READ THIS IF YOUR COMPILE BREAKS HERE: the batch type names one column twice.
  static_assert(detail::columns_unique_v<Cs...>, "recpipe: DUPLICATE_COLUMN_IN_BATCH - each column may appear once in a batch");

 public:
  using column_list = type_list<Cs...>;

  //! Whether this batch holds column C.
  template <class C>
  static constexpr bool contains = (std::is_same_v<C, Cs> || ...);

  batch() : batch(0) {}
  //! A batch of n requests: per-request columns sized n (vectors n x 0, lists n empty rows),
  //! per-candidate columns empty.
  explicit batch(std::size_t n) : size_(n) { (init_column<Cs>(), ...); }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  //! The storage of column C.
  template <class C>
  column_storage_t<C>& get() {
    static_assert(contains<C>, "recpipe: COLUMN_NOT_IN_BATCH - get<C>() names a column this batch does not hold");
    return std::get<detail::index_of_v<C, Cs...>>(data_);
  }
  template <class C>
  const column_storage_t<C>& get() const {
    static_assert(contains<C>, "recpipe: COLUMN_NOT_IN_BATCH - get<C>() names a column this batch does not hold");
    return std::get<detail::index_of_v<C, Cs...>>(data_);
  }

  //! This batch with column C set to `value`: C is appended if absent, replaced if present.
  template <column C>
  auto with(column_storage_t<C> value) && {
    if constexpr (contains<C>) {
      get<C>() = std::move(value);
      return std::move(*this);
    } else {
      batch<Cs..., C> out(detail::batch_adopt_tag{}, size_, std::tuple_cat(std::move(data_), std::tuple<column_storage_t<C>>(std::move(value))));
      return out;
    }
  }

  //! Number of candidates over all requests (0 when the batch has no candidates column).
  std::size_t candidate_count() const {
    if constexpr (contains<col::candidates>)
      return get<col::candidates>().total();
    else
      return 0;
  }

  //! Checks that every column is consistent with size() and the candidates; throws
  //! recpipe::error naming the column otherwise. Pipelines call this before the first stage.
  void validate() const { (validate_column<Cs>(), ...); }

  //! Keeps, for each request r, the candidates at the flat positions
  //! picks[offsets[r] .. offsets[r+1]) (positions into the current candidate values, each inside
  //! request r's row), in that order; applies the same selection to every per-candidate column.
  //! Used by filters (subsets) and ordering stages (permutations + truncation).
  void select_candidates(std::vector<std::size_t> offsets, const std::vector<std::size_t>& picks) {
    static_assert(contains<col::candidates>, "recpipe: STAGE_READS_MISSING_COLUMN - select_candidates needs col::candidates");
    (select_column<Cs>(picks), ...);
    auto& candidates = get<col::candidates>();
    std::vector<id_type> ids(picks.size());
    for (std::size_t i = 0; i < picks.size(); ++i) ids[i] = candidates.values()[picks[i]];
    candidates.assign(std::move(offsets), std::move(ids), "select_candidates");
  }

  //! A pick in replace_candidates() that adds a new candidate instead of keeping an old one.
  static constexpr std::size_t new_candidate = static_cast<std::size_t>(-1);

  //! @brief Like select_candidates(), but a pick equal to `new_candidate` adds the item
  //! `fresh_ids[i]` (picks and fresh_ids have equal length; fresh_ids[i] is read only for new
  //! picks) with zero in every per-candidate column. Used to replace whole candidate lists, e.g.
  //! cold_start's popular items for unknown users.
  void replace_candidates(std::vector<std::size_t> offsets, const std::vector<std::size_t>& picks,
                          const std::vector<id_type>& fresh_ids) {
    static_assert(contains<col::candidates>, "recpipe: STAGE_READS_MISSING_COLUMN - replace_candidates needs col::candidates");
    if (fresh_ids.size() != picks.size())
      detail::fail("replace_candidates: ", picks.size(), " picks but ", fresh_ids.size(), " ids");
    (select_column<Cs>(picks), ...);
    auto& candidates = get<col::candidates>();
    std::vector<id_type> ids(picks.size());
    for (std::size_t i = 0; i < picks.size(); ++i)
      ids[i] = picks[i] == new_candidate ? fresh_ids[i] : candidates.values()[picks[i]];
    candidates.assign(std::move(offsets), std::move(ids), "replace_candidates");
  }

 private:
  template <column... Ds>
  friend class batch;
  template <class Tuple>
  batch(detail::batch_adopt_tag, std::size_t n, Tuple&& data) : size_(n), data_(std::forward<Tuple>(data)) {}

  template <class C>
  void init_column() {
    auto& storage = get<C>();
    if constexpr (C::shape == column_shape::per_request)
      storage.resize(size_);
    else if constexpr (C::shape == column_shape::per_request_vector)
      storage.resize(size_, 0);
    else if constexpr (C::shape == column_shape::per_request_list)
      storage.assign(std::vector<std::size_t>(size_ + 1, 0), {}, C::name);
  }

  template <class C>
  void validate_column() const {
    const auto& storage = get<C>();
    if constexpr (C::shape == column_shape::per_request) {
      if (storage.size() != size_)
        detail::fail("batch: column '", C::name, "' has ", storage.size(), " values but the batch has ", size_, " requests");
    } else if constexpr (C::shape == column_shape::per_request_vector) {
      if (storage.rows() != size_)
        detail::fail("batch: column '", C::name, "' has ", storage.rows(), " rows but the batch has ", size_, " requests");
    } else if constexpr (C::shape == column_shape::per_request_list) {
      storage.validate(C::name);
      if (storage.rows() != size_)
        detail::fail("batch: column '", C::name, "' has ", storage.rows(), " rows but the batch has ", size_, " requests");
    } else {
      static_assert(contains<col::candidates>,
                    "recpipe: PER_CANDIDATE_COLUMN_WITHOUT_CANDIDATES - a per-candidate column needs col::candidates in the batch");
      std::size_t have = 0;
      if constexpr (C::shape == column_shape::per_candidate)
        have = storage.size();
      else
        have = storage.rows();
      if (have != candidate_count())
        detail::fail("batch: column '", C::name, "' has ", have, " entries but the batch has ", candidate_count(), " candidates");
    }
  }

  template <class C>
  void select_column(const std::vector<std::size_t>& picks) {
    if constexpr (C::shape == column_shape::per_candidate) {
      auto& old = get<C>();
      std::vector<typename C::value_type> fresh(picks.size());
      for (std::size_t i = 0; i < picks.size(); ++i)
        fresh[i] = picks[i] == new_candidate ? typename C::value_type{} : old[picks[i]];
      old = std::move(fresh);
    } else if constexpr (C::shape == column_shape::per_candidate_vector) {
      auto& old = get<C>();
      matrix<typename C::value_type> fresh(picks.size(), old.cols());
      for (std::size_t i = 0; i < picks.size(); ++i) {
        if (picks[i] == new_candidate) continue;  // matrix rows start zeroed
        const auto source = old.row(picks[i]);
        std::copy(source.begin(), source.end(), fresh.row(i).begin());
      }
      old = std::move(fresh);
    }
  }

  std::size_t size_ = 0;
  std::tuple<column_storage_t<Cs>...> data_;
};

//! @brief A batch of requests built from its columns: the first column's length sets size().
//! Validates the result (throws recpipe::error naming a column of the wrong length).
//!
//! @code
//! auto requests = recpipe::make_batch<recpipe::col::user_id>(std::vector<recpipe::id_type>{7, 42});
//! @endcode
template <column... Cs>
batch<Cs...> make_batch(column_storage_t<Cs>... values) {
  static_assert(sizeof...(Cs) > 0, "recpipe: EMPTY_BATCH_TYPE - name at least one column");
  using first = std::tuple_element_t<0, std::tuple<Cs...>>;
  std::size_t n = 0;
  const auto& head = std::get<0>(std::forward_as_tuple(values...));
  if constexpr (first::shape == column_shape::per_request)
    n = head.size();
  else if constexpr (first::shape == column_shape::per_request_vector || first::shape == column_shape::per_request_list)
    n = head.rows();
  else
    static_assert(detail::always_false<first>, "recpipe: FIRST_COLUMN_MUST_BE_PER_REQUEST - make_batch takes its size from the first column");
  batch<Cs...> out(n);
  ((out.template get<Cs>() = std::move(values)), ...);
  out.validate();
  return out;
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
