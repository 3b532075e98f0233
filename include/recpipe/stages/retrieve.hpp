// SPDX-License-Identifier: Apache-2.0
// recpipe stage: retrieve - nearest-neighbour candidates for each request's query vector.
#pragma once

#include <cstddef>
#include <string_view>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/pipeline.hpp>
#include <recpipe/detail/meta.hpp>
#include <recpipe/detail/name.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

namespace detail {
inline constexpr std::string_view retrieve_prefix = "retrieve";
}

//! The description of a retrieval: which index, how many candidates, which query column.
template <class Index, column Query>
struct retrieve_stage : stage<retrieve_stage<Index, Query>> {
  static_assert(Query::shape == column_shape::per_request_vector && std::is_same_v<typename Query::value_type, float>,
                "recpipe: QUERY_COLUMN_NOT_A_FLOAT_VECTOR - retrieve searches with a per_request_vector column of float");
  using reads = columns<Query>;
  using writes = columns<col::candidates, col::retrieval_score>;
  static constexpr std::string_view name = detail::stage_name_v<detail::retrieve_prefix, Query::name>;

  retrieve_stage(const Index& index, std::size_t k) : index_(&index), k_(k) {
    if (k == 0) detail::fail("retrieve: k must be at least 1 (got 0)");
  }
  const Index& index() const { return *index_; }
  std::size_t k() const { return k_; }

 private:
  const Index* index_;
  std::size_t k_;
};

//! @brief Retrieves up to k candidates per request from an index (cpu::hnsw_index for ANN,
//! cpu::exact_index for exact search), searching with the `Query` column.
//!
//! Writes `col::candidates` (best first) and `col::retrieval_score` (higher is better: the inner
//! product, or minus the squared L2 distance). Guarantees: never an invalid id; k above the index
//! size returns every item; a request whose query holds NaN or infinity gets no candidates;
//! a query of the wrong width throws recpipe::error naming both widths.
//! @throws recpipe::error when k == 0 (at construction).
//! The index is held by reference and must outlive the pipeline.
//!
//! @code
//! recpipe::cpu::hnsw_index index(64, recpipe::metric::inner_product, 100000);
//! auto stage = recpipe::retrieve<recpipe::col::user_embedding>(index, 500);
//! @endcode
template <column Query = col::query_vector, class Index>
retrieve_stage<Index, Query> retrieve(const Index& index, std::size_t k) {
  return retrieve_stage<Index, Query>(index, k);
}
// READ THIS IF YOUR COMPILE BREAKS HERE: the pipeline keeps a reference to the index, so a
// temporary index would dangle. Build the index first, then pass it by name.
template <column Query = col::query_vector, class Index>
void retrieve(const Index&& index, std::size_t k) {
  static_assert(detail::always_false<Index>,
                "recpipe: INDEX_MUST_OUTLIVE_PIPELINE - retrieve() keeps a reference to the index; pass a named index, "
                "not a temporary");
  (void)index;
  (void)k;
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
#include <recpipe/cpu/stages/retrieve.hpp>
