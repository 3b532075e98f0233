// SPDX-License-Identifier: Apache-2.0
// recpipe stages: merge (Merlin's `+`) - two branches over the same requests joined into one
// candidate list, de-duplicated, checked at compile time.
#pragma once

#include <string_view>
#include <type_traits>
#include <utility>

#include <recpipe/core/pipeline.hpp>
#include <recpipe/detail/meta.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! Tag for merge: of an item found several times, keep its first occurrence (the left branch's
//! before the right branch's).
struct keep_first {};

//! Names the side of a merge in JOIN_BRANCH_LACKS_COLUMN diagnostics.
struct left_branch {};
//! Names the side of a merge in JOIN_BRANCH_LACKS_COLUMN diagnostics.
struct right_branch {};

namespace detail {

template <class L>
struct flatten_lists;
template <>
struct flatten_lists<type_list<>> {
  using type = type_list<>;
};
template <class L0, class... Ls>
struct flatten_lists<type_list<L0, Ls...>> {
  using type = list_concat_t<L0, typename flatten_lists<type_list<Ls...>>::type>;
};
//! The members of `List` that satisfy `Keep<C>::value`, in order.
template <class List, template <class> class Keep>
struct list_filter;
template <class... Cs, template <class> class Keep>
struct list_filter<type_list<Cs...>, Keep> {
  using type = typename flatten_lists<type_list<std::conditional_t<Keep<Cs>::value, type_list<Cs>, type_list<>>...>>::type;
};
template <class C>
struct is_per_candidate_column : std::bool_constant<is_per_candidate_v<C>> {};
//! A column that describes the requests, not their candidates (col::candidates is neither kept nor
//! dropped by this: merge writes it).
template <class C>
struct is_per_request_column : std::bool_constant<!is_per_candidate_v<C> && !std::is_same_v<C, col::candidates>> {};
template <class List>
using per_candidate_columns_t = typename list_filter<List, is_per_candidate_column>::type;
template <class Score>
struct is_merge_score : std::false_type {};
template <column Score>
struct is_merge_score<Score> : std::bool_constant<is_per_candidate_v<Score>> {};
template <>
struct is_merge_score<keep_first> : std::true_type {};

template <class List>
using per_request_columns_t = typename list_filter<List, is_per_request_column>::type;

template <class Score>
struct merge_score_columns {
  using type = columns<Score>;
};
template <>
struct merge_score_columns<keep_first> {
  using type = columns<>;
};

// READ THIS IF YOUR COMPILE BREAKS HERE: the second argument says which branch of `a + b` (or
// merge(a, b)) lacks a column, the first is that branch and the third is the column. Both branches
// must write col::candidates and the same per-candidate columns (so every merged candidate has a
// value in each), plus the score column merge<Score> keeps the best of. Add the stage that writes
// the column to the branch that lacks it, or move the stage after the merge.
template <class Branch, class Side, class Column>
struct JOIN_BRANCH_LACKS_COLUMN {
  static_assert(always_false<Branch, Side, Column>,
                "recpipe: JOIN_BRANCH_LACKS_COLUMN - both branches of a merge (a + b) must write col::candidates and "
                "the same per-candidate columns; see JOIN_BRANCH_LACKS_COLUMN<Branch, Side, Column> in this diagnostic");
  static constexpr bool value = false;
};

//! Whether both branches write what the join needs (no diagnostic).
template <class Left, class Right, class Score>
inline constexpr bool join_ok_v = [] {
  using needed = list_union_t<columns<col::candidates>, typename merge_score_columns<Score>::type>;
  using left_needs = list_union_t<needed, per_candidate_columns_t<typename Right::writes>>;
  using right_needs = list_union_t<needed, per_candidate_columns_t<typename Left::writes>>;
  return std::is_void_v<first_missing_t<left_needs, typename Left::writes>> &&
         std::is_void_v<first_missing_t<right_needs, typename Right::writes>>;
}();

//! True when both branches write what the join needs; otherwise instantiates
//! JOIN_BRANCH_LACKS_COLUMN (one readable error) and still returns true so no second error follows.
template <class Left, class Right, class Score>
constexpr bool check_join() {
  using needed = list_union_t<columns<col::candidates>, typename merge_score_columns<Score>::type>;
  using left_needs = list_union_t<needed, per_candidate_columns_t<typename Right::writes>>;
  using right_needs = list_union_t<needed, per_candidate_columns_t<typename Left::writes>>;
  using left_missing = first_missing_t<left_needs, typename Left::writes>;
  using right_missing = first_missing_t<right_needs, typename Right::writes>;
  if constexpr (!std::is_void_v<left_missing>)
    return !JOIN_BRANCH_LACKS_COLUMN<Left, left_branch, left_missing>::value || true;
  else if constexpr (!std::is_void_v<right_missing>)
    return !JOIN_BRANCH_LACKS_COLUMN<Right, right_branch, right_missing>::value || true;
  else
    return true;
}

}  // namespace detail

//! The description of a merge: two branches (stages or pipelines) run on the same requests, and
//! their candidates joined. `Score` is keep_first or the per-candidate column whose best value wins.
template <class Left, class Right, class Score>
struct merge_stage : stage<merge_stage<Left, Right, Score>> {
  static_assert(detail::is_merge_score<Score>::value,
                "recpipe: MERGE_SCORE_NOT_PER_CANDIDATE - merge<Score> keeps the best of a per_candidate column");
  static_assert(detail::check_join<Left, Right, Score>(), "recpipe: JOIN_BRANCH_LACKS_COLUMN");

  //! Columns the requests must provide: what either branch reads.
  using reads = detail::list_union_t<typename Left::reads, typename Right::reads>;
  //! col::candidates and the per-candidate columns both branches write. Per-request columns a
  //! branch adds stay inside the branch (compute shared ones before the merge).
  using writes = detail::list_union_t<columns<col::candidates>, detail::per_candidate_columns_t<typename Left::writes>>;
  static constexpr std::string_view name = "merge";
  using score_column = Score;

  merge_stage(Left left, Right right) : left_(std::move(left)), right_(std::move(right)) {}
  const Left& left() const { return left_; }
  const Right& right() const { return right_; }

  //! Pins the versioned components of both branches for the run.
  void pin_versions(detail::run_pins& pins) const {
    if constexpr (detail::pins_versions<Left>) left_.pin_versions(pins);
    if constexpr (detail::pins_versions<Right>) right_.pin_versions(pins);
  }

 private:
  Left left_;
  Right right_;
};

//! @brief Runs two branches (stages or pipelines) on the same requests and joins their candidates
//! into one list per request: Merlin Systems' `+`, e.g. two retrievers over different indexes.
//!
//! - Both branches must write `col::candidates` and the same per-candidate columns (checked at
//!   compile time: JOIN_BRANCH_LACKS_COLUMN names the branch and the column). The result holds the
//!   requests' own columns, the candidates and those per-candidate columns; per-request columns a
//!   branch adds (a lookup inside it) stay inside the branch, so run shared lookups before the merge.
//! - Order: the left branch's candidates, then the right branch's that the left did not return.
//! - Duplicates (across the branches and within one) are removed. `merge(a, b)` and `a + b` keep
//!   an item's first occurrence with its values; `merge<Score>(a, b)` keeps the item at its first
//!   position but takes every per-candidate value from its occurrence with the best `Score`
//!   (higher first, NaN worst, ties to the first occurrence). Negative (invalid) ids are dropped.
//! - A request for which both branches return nothing gets an empty row.
//! - Vector columns must have the same width in both branches (recpipe::error naming the column
//!   otherwise). An error in a branch propagates.
//! The branches are copied into the stage; each runs on its own copy of the requests, one after
//! the other on the calling thread. A branch pipeline's stats() are those of the copy
//! (`merged.left().stats()`).
//!
//! @code
//! auto two_sources = recpipe::retrieve<recpipe::col::user_embedding>(semantic_index, 200)
//!                  + recpipe::retrieve<recpipe::col::user_embedding>(popular_index, 50);
//! auto recommend = recpipe::lookup(users) >> two_sources >> recpipe::filter_seen() >> recpipe::top_k(10);
//! // inline: (a + b) >> c, with the parentheses that GCC's -Wparentheses asks for
//! auto best_score = recpipe::merge<recpipe::col::retrieval_score>(recpipe::retrieve<recpipe::col::user_embedding>(hnsw, 100),
//!                                                                 recpipe::retrieve<recpipe::col::user_embedding>(exact, 100));
//! @endcode
template <class Score = keep_first, class Left, class Right>
  requires(is_stage_v<Left> && is_stage_v<Right>)
merge_stage<std::remove_cvref_t<Left>, std::remove_cvref_t<Right>, Score> merge(Left&& left, Right&& right) {
  return {std::forward<Left>(left), std::forward<Right>(right)};
}

//! @brief `a + b` is merge(a, b): the candidates of both branches, de-duplicated, first occurrence
//! kept (see merge). C++ binds `+` tighter than `>>`, so `lookup(users) >> retrieve(a, 100) +
//! retrieve(b, 100)` already merges the two retrievers, but GCC's -Wparentheses warns about it:
//! write the parentheses, `lookup(users) >> (retrieve(a, 100) + retrieve(b, 100)) >> top_k(10)`.
//!
//! @code
//! auto both = recpipe::retrieve<recpipe::col::user_embedding>(index_a, 100)
//!           + recpipe::retrieve<recpipe::col::user_embedding>(index_b, 100);
//! @endcode
template <class Left, class Right>
  requires(is_stage_v<Left> && is_stage_v<Right>)
auto operator+(Left&& left, Right&& right) {
  return merge(std::forward<Left>(left), std::forward<Right>(right));
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
#include <recpipe/cpu/stages/merge.hpp>
