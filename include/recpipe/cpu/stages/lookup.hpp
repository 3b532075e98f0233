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

    column_storage_t<value> out;
    if constexpr (Store::holds_vectors) {
      out.resize(keys.size(), store.dim());  // zero rows stay for unknown ids (use_default)
      for (std::size_t i = 0; i < keys.size(); ++i) {
        const auto found = store.find_or_apply_policy(keys[i]);
        if (found.empty()) {
          std::fill(out.row(i).begin(), out.row(i).end(), typename value::value_type{});
        } else {
          std::copy(found.begin(), found.end(), out.row(i).begin());
        }
      }
    } else if constexpr (Store::holds_lists) {
      out.clear();
      out.reserve(keys.size(), keys.size() * 8);
      for (const id_type id : keys) out.push_row(store.find_or_apply_policy(id));
    } else {
      out.assign(keys.size(), typename value::value_type{});
      for (std::size_t i = 0; i < keys.size(); ++i) {
        const auto found = store.find_or_apply_policy(keys[i]);
        if (!found.empty()) out[i] = found.front();
      }
    }
    return std::forward<Batch>(batch).template with<value>(std::move(out));
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
