// SPDX-License-Identifier: Apache-2.0
// recpipe stage: lookup - read per-request or per-candidate features from a feature store.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <type_traits>

#include <recpipe/core/pipeline.hpp>
#include <recpipe/detail/component.hpp>
#include <recpipe/detail/meta.hpp>
#include <recpipe/detail/name.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

namespace detail {
inline constexpr std::string_view lookup_prefix = "lookup";
template <class Value, class Flag>
struct lookup_writes {
  using type = columns<Value, Flag>;
};
template <class Value>
struct lookup_writes<Value, void> {
  using type = columns<Value>;
};
}

//! The description of a lookup: which store to read, and how the stage holds it (`Ref`: a
//! reference, a std::shared_ptr or a slot; see detail::component). Built by recpipe::lookup().
//! `Flag` (void by default) is the column that marks ids the store did not hold; see flag_missing().
template <class Store, class Ref = const Store&, class Flag = void>
struct lookup_stage : stage<lookup_stage<Store, Ref, Flag>> {
  using key_column = typename Store::key_column;
  using value_column = typename Store::value_column;
  using flag_column = Flag;
  using reads = columns<key_column>;
  using writes = typename detail::lookup_writes<value_column, Flag>::type;
  static constexpr std::string_view name = detail::stage_name_v<&detail::lookup_prefix, &Store::value_column::name>;

  template <class Arg>
    requires(!std::is_same_v<std::remove_cvref_t<Arg>, lookup_stage>)
  explicit lookup_stage(Arg&& store) : store_(std::forward<Arg>(store)) {}
  //! The store (for a slot: the version this run pinned).
  const Store& store() const { return store_.get(); }
  void pin_versions(detail::run_pins& pins) const { store_.pin(pins); }

  //! @brief The same lookup, also writing `MissingFlag`: 1 for each id whose row the store does not
  //! hold (it got the store's default: zeros, an empty list), else 0. A later stage reads it, e.g.
  //! `cold_start<col::user_unknown>(popular, k)` serves popular items to unknown users.
  //! The default flag is col::user_unknown for per-request keys and col::item_unknown for
  //! col::candidates. For list stores a known id with an empty list is not flagged.
  //! @code
  //! auto users = recpipe::lookup(user_vectors).flag_missing();  // also writes col::user_unknown
  //! @endcode
  template <class MissingFlag = std::conditional_t<std::is_same_v<key_column, col::candidates>, col::item_unknown,
                                                   col::user_unknown>>
  auto flag_missing() const {
    static_assert(std::is_void_v<Flag>, "recpipe: LOOKUP_ALREADY_FLAGS_MISSING - flag_missing() was called twice");
    static_assert(column<MissingFlag> && std::is_same_v<typename MissingFlag::value_type, std::uint8_t>,
                  "recpipe: MISSING_FLAG_NOT_A_UINT8_COLUMN - the missing flag is a std::uint8_t column");
    static_assert(std::is_same_v<key_column, col::candidates> ? MissingFlag::shape == column_shape::per_candidate
                                                              : MissingFlag::shape == column_shape::per_request,
                  "recpipe: MISSING_FLAG_SHAPE - flag per request for per-request keys, per candidate for col::candidates");
    return lookup_stage<Store, Ref, MissingFlag>(store_);
  }

 private:
  template <class, class, class>
  friend struct lookup_stage;
  explicit lookup_stage(const detail::component<Ref>& store) : store_(store) {}
  detail::component<Ref> store_;
};

//! @brief Looks up features by id: reads the store's key column (`col::user_id`, or
//! `col::candidates` for item features) and writes its value column.
//!
//! @param store a feature store (cpu/feature_store.hpp), or any type with its lookup interface
//!              (key_column, value_column, dim(), find_or_apply_policy), or a store that reads a
//!              whole batch at once (`lookup_batch(keys, out)`, e.g. io/redis_store.hpp). A named store is held by
//!              reference and must outlive the pipeline; a `std::shared_ptr<Store>` is shared (the
//!              pipeline keeps it alive); a `recpipe::slot<Store>` reads the version each run pinned.
//! Unknown ids follow the store's on_missing policy: zeros / an empty list (default) or a
//! recpipe::error naming the id; `.flag_missing()` also marks them in a column (cold start).
//! Cost: one hash or table probe and one row copy per id.
//!
//! @code
//! recpipe::feature_store<recpipe::col::user_id, recpipe::col::history> histories;
//! auto with_history = recpipe::lookup(histories);  // user_id -> history
//! @endcode
template <class Store>
  requires(!is_slot_v<Store> && !detail::is_shared_ptr_v<Store>)
lookup_stage<Store> lookup(const Store& store) {
  return lookup_stage<Store>(store);
}
//! Shares ownership of the store: the pipeline keeps it alive.
template <class Store>
lookup_stage<std::remove_const_t<Store>, std::shared_ptr<Store>> lookup(std::shared_ptr<Store> store) {
  return lookup_stage<std::remove_const_t<Store>, std::shared_ptr<Store>>(std::move(store));
}
//! Reads the store version each run pinned from a version_registry slot.
template <class Store>
lookup_stage<Store, slot<Store>> lookup(const slot<Store>& store) {
  return lookup_stage<Store, slot<Store>>(store);
}
// READ THIS IF YOUR COMPILE BREAKS HERE: the pipeline keeps a reference to the store, so a
// temporary store would dangle. Create the store first, then pass it by name.
template <class Store>
  requires(!is_slot_v<Store> && !detail::is_shared_ptr_v<Store>)
auto lookup(const Store&& store) {
  // The deduced return type makes the compiler read this body (and this message) first.
  static_assert(detail::always_false<Store>,
                "recpipe: STORE_MUST_OUTLIVE_PIPELINE - lookup() keeps a reference to the store; pass a named store "
                "or a std::shared_ptr, not a temporary");
  return lookup_stage<Store>(store);
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
#include <recpipe/cpu/stages/lookup.hpp>
