// SPDX-License-Identifier: Apache-2.0
// recpipe stage: retrieve - nearest-neighbour candidates for each request's query vector.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/pipeline.hpp>
#include <recpipe/detail/component.hpp>
#include <recpipe/detail/meta.hpp>
#include <recpipe/detail/name.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

namespace detail {
inline constexpr std::string_view retrieve_prefix = "retrieve";
}

namespace detail {
template <class Column>
inline constexpr bool is_id_list_column_v =
    Column::shape == column_shape::per_request_list && std::is_same_v<typename Column::value_type, id_type>;
}

//! The description of a retrieval: which index (held as `Ref`: a reference, a std::shared_ptr or a
//! slot), how many candidates, which query column, and which items are not eligible: the ids in
//! the request's `Excluded` id-list columns and those a `where` predicate rejects.
template <class Index, column Query, class Ref = const Index&, class Excluded = columns<>>
struct retrieve_stage : stage<retrieve_stage<Index, Query, Ref, Excluded>> {
  static_assert(Query::shape == column_shape::per_request_vector && std::is_same_v<typename Query::value_type, float>,
                "recpipe: QUERY_COLUMN_NOT_A_FLOAT_VECTOR - retrieve searches with a per_request_vector column of float");
  using reads = detail::list_concat_t<columns<Query>, Excluded>;
  using writes = columns<col::candidates, col::retrieval_score>;
  using excluded_columns = Excluded;
  static constexpr std::string_view name = detail::stage_name_v<&detail::retrieve_prefix, &Query::name>;

  template <class Arg>
  retrieve_stage(Arg&& index, std::size_t k) : index_(std::forward<Arg>(index)), k_(k) {
    if (k == 0) detail::fail("retrieve: k must be at least 1 (got 0)");
  }
  //! The index (for a slot: the version this run pinned).
  const Index& index() const { return index_.get(); }
  std::size_t k() const { return k_; }
  //! The eligibility predicate set by `where` (empty when none).
  const std::function<bool(id_type)>& allowed() const { return allowed_; }
  //! True when some items may be ineligible (excluded columns or a predicate).
  bool filters() const { return Excluded::size > 0 || static_cast<bool>(allowed_); }
  void pin_versions(detail::run_pins& pins) const { index_.pin(pins); }

  //! @brief The same retrieval, never returning the items listed in each request's `Lists`
  //! columns (per-request lists of ids, e.g. `col::history`), refilled so that a request still
  //! gets k items whenever k eligible items exist (all eligible ones otherwise).
  //!
  //! An index with `search_filtered` (cpu::hnsw_index) filters inside its graph walk; any other
  //! (cpu::exact_index) is asked for k + excluded items and then, while that leaves fewer than k
  //! eligible and the index holds more, for twice as many.
  //! @code
  //! auto unseen = recpipe::retrieve<recpipe::col::user_embedding>(index, 500).excluding<recpipe::col::history>();
  //! @endcode
  template <column... Lists>
  retrieve_stage<Index, Query, Ref, detail::list_concat_t<Excluded, columns<Lists...>>> excluding() const {
    static_assert((detail::is_id_list_column_v<Lists> && ...),
                  "recpipe: EXCLUDED_COLUMN_NOT_AN_ID_LIST - retrieve(...).excluding<C>() reads per_request_list columns of ids");
    return {index_, k_, allowed_};
  }
  //! @brief The same retrieval, returning only items for which `allowed(id)` is true (e.g. in
  //! stock, not blocked), refilled to k like `excluding`. The predicate is copied into the stage
  //! and must be safe to call from several threads at once; a second `where` replaces the first.
  //! @code
  //! auto available = recpipe::retrieve(index, 100).where([&](recpipe::id_type id) { return !blocked.contains(id); });
  //! @endcode
  template <class Predicate>
    requires std::is_invocable_r_v<bool, const std::decay_t<Predicate>&, id_type>
  retrieve_stage where(Predicate&& allowed) const {
    return {index_, k_, std::function<bool(id_type)>(std::forward<Predicate>(allowed))};
  }

  // Used by excluding/where (same index holder, k and predicate).
  retrieve_stage(detail::component<Ref> index, std::size_t k, std::function<bool(id_type)> allowed)
      : index_(std::move(index)), k_(k), allowed_(std::move(allowed)) {}

 private:
  detail::component<Ref> index_;
  std::size_t k_;
  std::function<bool(id_type)> allowed_;
};

//! @brief Retrieves up to k candidates per request from an index (cpu::hnsw_index for ANN,
//! cpu::exact_index for exact search), searching with the `Query` column.
//!
//! Writes `col::candidates` (best first) and `col::retrieval_score` (higher is better: the inner
//! product, or minus the squared L2 distance). Guarantees: never an invalid id; k above the index
//! size returns every item; a request whose query holds NaN or infinity gets no candidates;
//! a query of the wrong width throws recpipe::error naming both widths.
//! @throws recpipe::error when k == 0 (at construction).
//! A named index is held by reference and must outlive the pipeline; a `std::shared_ptr<Index>` is
//! shared (the pipeline keeps it alive); a `recpipe::slot<Index>` reads the version each run pinned.
//! An index that accepts adds and removes while it serves (cpu::hnsw_index) is best held by
//! reference or shared_ptr and updated in place.
//! `.excluding<col::history>()` and `.where(predicate)` make items ineligible during retrieval and
//! refill, so a request still gets k candidates whenever k eligible items exist (see
//! retrieve_stage::excluding).
//!
//! @code
//! recpipe::cpu::hnsw_index index(64, recpipe::metric::inner_product, 100000);
//! auto stage = recpipe::retrieve<recpipe::col::user_embedding>(index, 500);
//! @endcode
template <column Query = col::query_vector, class Index>
  requires(!is_slot_v<Index> && !detail::is_shared_ptr_v<Index>)
retrieve_stage<Index, Query> retrieve(const Index& index, std::size_t k) {
  return retrieve_stage<Index, Query>(index, k);
}
//! Shares ownership of the index: the pipeline keeps it alive.
template <column Query = col::query_vector, class Index>
retrieve_stage<std::remove_const_t<Index>, Query, std::shared_ptr<Index>> retrieve(std::shared_ptr<Index> index,
                                                                                  std::size_t k) {
  return retrieve_stage<std::remove_const_t<Index>, Query, std::shared_ptr<Index>>(std::move(index), k);
}
//! Searches the index version each run pinned from a version_registry slot.
template <column Query = col::query_vector, class Index>
retrieve_stage<Index, Query, slot<Index>> retrieve(const slot<Index>& index, std::size_t k) {
  return retrieve_stage<Index, Query, slot<Index>>(index, k);
}
// READ THIS IF YOUR COMPILE BREAKS HERE: the pipeline keeps a reference to the index, so a
// temporary index would dangle. Build the index first, then pass it by name.
template <column Query = col::query_vector, class Index>
  requires(!is_slot_v<Index> && !detail::is_shared_ptr_v<Index>)
auto retrieve(const Index&& index, std::size_t k) {
  // The deduced return type makes the compiler read this body (and this message) before it
  // reports anything about the caller's use of the result.
  static_assert(detail::always_false<Index>,
                "recpipe: INDEX_MUST_OUTLIVE_PIPELINE - retrieve() keeps a reference to the index; pass a named index "
                "or a std::shared_ptr, not a temporary");
  return retrieve_stage<Index, Query>(index, k);
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
#include <recpipe/cpu/stages/retrieve.hpp>
