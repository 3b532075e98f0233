// SPDX-License-Identifier: Apache-2.0
// recpipe stage: unroll - pair each candidate with its request's features (Merlin's UnrollFeatures).
#pragma once

#include <cstddef>
#include <string_view>
#include <type_traits>

#include <recpipe/core/columns.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/pipeline.hpp>
#include <recpipe/detail/meta.hpp>
#include <recpipe/detail/name.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

namespace col {
//! The request's features repeated for each of its candidates (written by recpipe::unroll), so a
//! ranker reads [user | item] features row by row.
RECPIPE_COLUMN(candidate_user_features, per_candidate_vector, float);
}  // namespace col

namespace detail {
inline constexpr std::string_view unroll_prefix = "unroll";

template <class C>
inline constexpr bool unrollable_v =
    (C::shape == column_shape::per_request_vector || C::shape == column_shape::per_request) &&
    std::is_same_v<typename C::value_type, float>;
}  // namespace detail

//! The description of unroll: which per-request columns (`Sources`, concatenated in that order)
//! are copied to every candidate into `Out`, and the width a ranker expects (0: any).
template <column Out, column... Sources>
struct unroll_stage : stage<unroll_stage<Out, Sources...>> {
  static_assert(sizeof...(Sources) > 0, "recpipe: UNROLL_WITHOUT_SOURCES - name at least one per-request column");
  // READ THIS IF YOUR COMPILE BREAKS HERE: unroll copies per-request float columns (vectors, or
  // one float per request) to the candidates; a list column or an id column cannot be unrolled.
  static_assert((detail::unrollable_v<Sources> && ...),
                "recpipe: UNROLL_SOURCE_NOT_PER_REQUEST_FLOAT - unroll reads per_request_vector or per_request "
                "columns of float");
  static_assert(Out::shape == column_shape::per_candidate_vector && std::is_same_v<typename Out::value_type, float>,
                "recpipe: UNROLL_OUTPUT_NOT_PER_CANDIDATE_VECTOR - unroll writes a per_candidate_vector column of float");
  static_assert(((!std::is_same_v<Out, Sources>) && ...), "recpipe: UNROLL_OUTPUT_IS_A_SOURCE");
  using reads = columns<col::candidates, Sources...>;
  using writes = columns<Out>;
  static constexpr std::string_view name = detail::stage_name_v<&detail::unroll_prefix, &Out::name>;

  explicit unroll_stage(std::size_t width) : width_(width) {}
  //! The width the output must have (the sum of the sources' widths), or 0 for any.
  std::size_t width() const { return width_; }

 private:
  std::size_t width_;
};

//! @brief Copies each request's features to every one of its candidates, the way Merlin's
//! UnrollFeatures prepares a ranker's input: reads `col::user_features` (or the per-request float
//! columns named as template arguments, concatenated in that order: a vector column adds its
//! width, a per_request column one value) and writes `col::candidate_user_features`, one row per
//! candidate, which later filters and ordering stages keep aligned like any per-candidate column.
//!
//! @param width the total width the ranker expects; 0 (default) accepts any. A mismatch throws
//!              recpipe::error naming each source's width and the expected one, so a lookup that
//!              wrote features of the wrong size fails here, not inside the model.
//! Bad input: no candidates (an empty batch, or every candidate filtered out) gives an empty
//! column of the sources' width; a source of width 0 while there are candidates (features never
//! looked up) or a source whose row count differs from the batch's throws recpipe::error. NaN and
//! infinity are copied as they are. Cost: one copy of the width per candidate (500 candidates of
//! 64 floats: 128 KB).
//!
//! @code
//! auto ranked = recpipe::lookup(user_features) >> recpipe::retrieve<recpipe::col::user_embedding>(index, 500)
//!             >> recpipe::lookup(item_features) >> recpipe::unroll(64) >> recpipe::score(ranker) >> recpipe::top_k(10);
//! @endcode
inline unroll_stage<col::candidate_user_features, col::user_features> unroll(std::size_t width = 0) {
  return unroll_stage<col::candidate_user_features, col::user_features>(width);
}
//! Unrolls the named per-request columns into `col::candidate_user_features`:
//! `recpipe::unroll<recpipe::col::user_embedding, my_cols::age>(65)`.
template <column Source, column... More>
unroll_stage<col::candidate_user_features, Source, More...> unroll(std::size_t width = 0) {
  return unroll_stage<col::candidate_user_features, Source, More...>(width);
}
//! Unrolls into a column of your own (`Out`, a per_candidate_vector column of float), e.g. to
//! unroll two groups of features for two models: `recpipe::unroll_into<my_cols::ctx, col::user_features>()`.
template <column Out, column Source, column... More>
unroll_stage<Out, Source, More...> unroll_into(std::size_t width = 0) {
  return unroll_stage<Out, Source, More...>(width);
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
#include <recpipe/cpu/stages/unroll.hpp>
