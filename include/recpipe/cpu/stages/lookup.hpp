// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: how lookup runs.
#pragma once

#include <algorithm>
#include <span>
#include <type_traits>
#include <utility>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/stages/lookup.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

template <class Store, class Ref>
struct stage_impl<lookup_stage<Store, Ref>, cpu_backend> {
  template <class Batch>
  static auto run(const lookup_stage<Store, Ref>& stage, Batch&& batch, cpu_backend&) {
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
      if constexpr (requires { store.read_or_apply_policy(id, copy); })
        store.read_or_apply_policy(id, copy);
      else
        copy(store.find_or_apply_policy(id));
    };
    column_storage_t<value> out;
    if constexpr (Store::holds_vectors) {
      out.resize(keys.size(), store.dim());  // zero rows stay for unknown ids (use_default)
      for (std::size_t i = 0; i < keys.size(); ++i) {
        const auto row = out.row(i);
        read(keys[i], [&](std::span<const typename value::value_type> found) {
          if (found.empty()) std::fill(row.begin(), row.end(), typename value::value_type{});
          else std::copy(found.begin(), found.end(), row.begin());
        });
      }
    } else if constexpr (Store::holds_lists) {
      out.clear();
      out.reserve(keys.size(), keys.size() * 8);
      for (const id_type id : keys)
        read(id, [&](std::span<const typename value::value_type> found) { out.push_row(found); });
    } else {
      out.assign(keys.size(), typename value::value_type{});
      for (std::size_t i = 0; i < keys.size(); ++i)
        read(keys[i], [&](std::span<const typename value::value_type> found) {
          if (!found.empty()) out[i] = found.front();
        });
    }
    return std::forward<Batch>(batch).template with<value>(std::move(out));
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
