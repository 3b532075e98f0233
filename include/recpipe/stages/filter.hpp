// SPDX-License-Identifier: Apache-2.0
// recpipe stages: filter_seen and filter - drop candidates.
#pragma once

#include <cstddef>
#include <string_view>
#include <type_traits>
#include <utility>

#include <recpipe/core/pipeline.hpp>
#include <recpipe/detail/meta.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! The description of filter_seen: drop candidates found in `History`.
template <column History>
struct filter_seen_stage : stage<filter_seen_stage<History>> {
  static_assert(History::shape == column_shape::per_request_list && std::is_same_v<typename History::value_type, id_type>,
                "recpipe: HISTORY_COLUMN_NOT_AN_ID_LIST - filter_seen reads a per_request_list column of ids");
  using reads = columns<col::candidates, History>;
  using writes = columns<>;
  static constexpr std::string_view name = "filter_seen";
};

//! @brief Removes from each request's candidates the items of its history (`col::history` by
//! default, or `col::session_items` for session-based pipelines); every per-candidate column is
//! filtered alike. Order is kept. An empty history keeps everything; a fully seen candidate list
//! becomes empty (later stages handle empty lists).
//! Cost: O((h + c) log h) per request for h history items and c candidates.
//!
//! @code
//! auto unseen = recpipe::filter_seen();                            // col::history
//! auto unseen_in_session = recpipe::filter_seen<recpipe::col::session_items>();
//! @endcode
template <column History = col::history>
filter_seen_stage<History> filter_seen() {
  return {};
}

//! The description of filter: a predicate that keeps candidates.
template <class Predicate, class ExtraReads>
struct filter_stage : stage<filter_stage<Predicate, ExtraReads>> {
  using reads = detail::list_union_t<columns<col::candidates>, ExtraReads>;
  using writes = columns<>;
  static constexpr std::string_view name = "filter";

  explicit filter_stage(Predicate keep) : keep_(std::move(keep)) {}
  const Predicate& predicate() const { return keep_; }

 private:
  [[no_unique_address]] Predicate keep_;
};

//! @brief Keeps the candidates for which `keep` returns true. The predicate is called as
//! `keep(item)`, `keep(request_index, item)` or `keep(batch, request_index, item)`, whichever it
//! accepts; name the extra columns it reads from the batch as template arguments so that the
//! pipeline checks they exist. The predicate is copied into the stage and must be safe to call
//! from several threads at once.
//!
//! @code
//! auto in_stock = recpipe::filter([&](recpipe::id_type item) { return stock[item] > 0; });
//! @endcode
template <column... Reads, class Predicate>
filter_stage<std::decay_t<Predicate>, columns<Reads...>> filter(Predicate&& keep) {
  return filter_stage<std::decay_t<Predicate>, columns<Reads...>>(std::forward<Predicate>(keep));
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
#include <recpipe/cpu/stages/filter.hpp>
