// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: how lookup runs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/stages/lookup.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

namespace detail {
//! `T`, as a type that depends on `U` too (see its use in the lookup stage).
template <class T, class U>
struct first_of {
  using type = T;
};
}  // namespace detail

template <class Store, class Ref, class Flag>
struct stage_impl<lookup_stage<Store, Ref, Flag>, cpu_backend> {
  static constexpr bool flags = !std::is_void_v<Flag>;

  template <class Batch>
  static auto run(const lookup_stage<Store, Ref, Flag>& stage, Batch&& batch, cpu_backend&) {
    using key = typename Store::key_column;
    using value = typename Store::value_column;
    const Store& store = stage.store();
    std::span<const id_type> keys;
    if constexpr (std::is_same_v<key, col::candidates>) {
      const auto& ids = batch.template get<col::candidates>().values();
      keys = {ids.data(), ids.size()};
    } else {
      const auto& ids = batch.template get<key>();
      keys = {ids.data(), ids.size()};
    }

    // Each row is copied under its shard's shared lock (read_or_apply_policy), so stores may be
    // updated in place while this runs (see feature_store's thread-safety contract). Immutable
    // stores (a published table version) may offer only find_or_apply_policy, returning a span.
    const auto read = [&store](id_type id, auto&& copy) {
      if constexpr (requires { store.read_or_apply_policy(id, copy); }) {
        // Through first_of as below: nvcc checks this call even when the branch is discarded.
        const typename detail::first_of<Store, decltype(copy)>::type& s = store;
        s.read_or_apply_policy(id, copy);
      } else {
        // Through a type that names `copy`, so that the call is dependent: clang 14 checks a
        // non-dependent call even in a generic lambda's discarded branch, and a store that reads
        // whole batches (io/redis_store.hpp) has no find_or_apply_policy.
        const typename detail::first_of<Store, decltype(copy)>::type& s = store;
        copy(s.find_or_apply_policy(id));
      }
    };
    column_storage_t<value> out;
    // 1 where the id got the store's default (flag_missing); sized only when the stage flags.
    std::vector<std::uint8_t> defaulted(flags ? keys.size() : 0, 0);
    const auto mark = [&](std::size_t i, bool empty, id_type id) {
      if constexpr (flags) {
        // An empty vector row is always a default; an empty list may be a known, empty list.
        if constexpr (Store::holds_lists) {
          if constexpr (requires { store.contains(id); })
            defaulted[i] = empty && !store.contains(id) ? 1 : 0;
          else
            defaulted[i] = empty ? 1 : 0;
        } else {
          defaulted[i] = empty ? 1 : 0;
        }
      } else {
        (void)i, (void)empty, (void)id;
      }
    };
    if constexpr (requires { store.lookup_batch(keys, out); }) {
      // A store over a remote service (io/redis_store.hpp) reads the whole batch at once: one
      // round trip per batch instead of one per id.
      if constexpr (flags) {
        static_assert(requires { store.lookup_batch(keys, out, &defaulted); },
                      "recpipe: STORE_CANNOT_FLAG_MISSING - flag_missing() needs lookup_batch(keys, out, std::vector<std::uint8_t>*)");
        store.lookup_batch(keys, out, &defaulted);
      } else {
        store.lookup_batch(keys, out);
      }
    } else if constexpr (Store::holds_vectors) {
      out.resize(keys.size(), store.dim());  // zero rows stay for unknown ids (use_default)
      for (std::size_t i = 0; i < keys.size(); ++i) {
        const auto row = out.row(i);
        read(keys[i], [&](std::span<const typename value::value_type> found) {
          if (found.empty()) std::fill(row.begin(), row.end(), typename value::value_type{});
          else std::copy(found.begin(), found.end(), row.begin());
          mark(i, found.empty(), keys[i]);
        });
      }
    } else if constexpr (Store::holds_lists) {
      out.clear();
      out.reserve(keys.size(), keys.size() * 8);
      for (std::size_t i = 0; i < keys.size(); ++i)
        read(keys[i], [&](std::span<const typename value::value_type> found) {
          out.push_row(found);
          mark(i, found.empty(), keys[i]);
        });
    } else {
      out.assign(keys.size(), typename value::value_type{});
      for (std::size_t i = 0; i < keys.size(); ++i)
        read(keys[i], [&](std::span<const typename value::value_type> found) {
          if (!found.empty()) out[i] = found.front();
          mark(i, found.empty(), keys[i]);
        });
    }
    if constexpr (flags)
      return std::forward<Batch>(batch).template with<value>(std::move(out)).template with<Flag>(std::move(defaulted));
    else
      return std::forward<Batch>(batch).template with<value>(std::move(out));
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
