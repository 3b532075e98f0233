// SPDX-License-Identifier: Apache-2.0
// recpipe stage: lookup - read per-request or per-candidate features from a feature store.
#pragma once

#include <string_view>

#include <recpipe/core/pipeline.hpp>
#include <recpipe/detail/meta.hpp>
#include <recpipe/detail/name.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

namespace detail {
inline constexpr std::string_view lookup_prefix = "lookup";
}

//! The description of a lookup: which store to read. Built by recpipe::lookup().
template <class Store>
struct lookup_stage : stage<lookup_stage<Store>> {
  using reads = columns<typename Store::key_column>;
  using writes = columns<typename Store::value_column>;
  static constexpr std::string_view name = detail::stage_name_v<detail::lookup_prefix, Store::value_column::name>;

  explicit lookup_stage(const Store& store) : store_(&store) {}
  const Store& store() const { return *store_; }

 private:
  const Store* store_;
};

//! @brief Looks up features by id: reads the store's key column (`col::user_id`, or
//! `col::candidates` for item features) and writes its value column.
//!
//! @param store a feature store (cpu/feature_store.hpp). Held by reference: it must outlive the
//!              pipeline, and must not be modified while the pipeline runs.
//! Unknown ids follow the store's on_missing policy: zeros / an empty list (default) or a
//! recpipe::error naming the id. Cost: one hash or table probe and one row copy per id.
//!
//! @code
//! recpipe::feature_store<recpipe::col::user_id, recpipe::col::history> histories;
//! auto with_history = recpipe::lookup(histories);  // user_id -> history
//! @endcode
template <class Store>
lookup_stage<Store> lookup(const Store& store) {
  return lookup_stage<Store>(store);
}
// READ THIS IF YOUR COMPILE BREAKS HERE: the pipeline keeps a reference to the store, so a
// temporary store would dangle. Create the store first, then pass it by name.
template <class Store>
void lookup(const Store&& store) {
  static_assert(detail::always_false<Store>,
                "recpipe: STORE_MUST_OUTLIVE_PIPELINE - lookup() keeps a reference to the store; pass a named store, "
                "not a temporary");
  (void)store;
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
#include <recpipe/cpu/stages/lookup.hpp>
