// SPDX-License-Identifier: Apache-2.0
// recpipe stage: cold_start - popular items for requests a lookup could not personalise.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <recpipe/core/columns.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/pipeline.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/detail/component.hpp>
#include <recpipe/detail/name.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! @brief Items ranked by popularity (count descending, then id ascending): what cold_start serves
//! to users a lookup did not find. Immutable once built; refresh it by publishing a new one
//! through a version_registry slot (core/versions.hpp) or by swapping a std::shared_ptr.
//!
//! @code
//! std::vector<recpipe::id_type> clicks = {3, 7, 3, 9, 3, 7};
//! auto popular = recpipe::popular_items::from_interactions(clicks);  // 3 (3), 7 (2), 9 (1)
//! @endcode
class popular_items {
 public:
  popular_items() = default;

  //! Ranks `ids` by `counts` (equal lengths, counts finite and >= 0, ids >= 0 and distinct).
  //! @throws recpipe::error naming the first bad entry.
  popular_items(std::span<const id_type> ids, std::span<const double> counts) {
    if (ids.size() != counts.size())
      detail::fail("popular_items: ", ids.size(), " ids but ", counts.size(), " counts");
    std::vector<std::size_t> order(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0) detail::fail("popular_items: id ", ids[i], " at position ", i, " is negative");
      if (!std::isfinite(counts[i]) || counts[i] < 0)
        detail::fail("popular_items: count ", counts[i], " of id ", ids[i], " is not a finite number >= 0");
      order[i] = i;
    }
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return counts[a] != counts[b] ? counts[a] > counts[b] : ids[a] < ids[b];
    });
    ids_.reserve(ids.size());
    counts_.reserve(ids.size());
    for (const std::size_t i : order) {
      ids_.push_back(ids[i]);
      counts_.push_back(static_cast<float>(counts[i]));
    }
    // Equal ids need not be adjacent in count order: look for them in id order.
    std::vector<id_type> sorted(ids_);
    std::sort(sorted.begin(), sorted.end());
    if (const auto twice = std::adjacent_find(sorted.begin(), sorted.end()); twice != sorted.end())
      detail::fail("popular_items: id ", *twice, " appears twice");
  }

  //! Counts each item's occurrences in an interaction log (clicks, purchases); negative ids are
  //! skipped (they are never items).
  static popular_items from_interactions(std::span<const id_type> items) {
    std::unordered_map<id_type, double> counts;
    for (const id_type id : items)
      if (id >= 0) counts[id] += 1.0;
    std::vector<id_type> ids;
    std::vector<double> values;
    ids.reserve(counts.size());
    values.reserve(counts.size());
    for (const auto& [id, count] : counts) {
      ids.push_back(id);
      values.push_back(count);
    }
    return popular_items(ids, values);
  }

  //! The items, most popular first.
  std::span<const id_type> ids() const { return ids_; }
  //! Their counts, as float (what cold_start writes as the score).
  std::span<const float> counts() const { return counts_; }
  std::size_t size() const { return ids_.size(); }
  //! Lets a popular_items list be published through a version_registry slot (the shape check).
  std::size_t dim() const { return 1; }

 private:
  std::vector<id_type> ids_;
  std::vector<float> counts_;
};

namespace detail {
inline constexpr std::string_view cold_start_prefix = "cold_start";
}

//! The description of cold_start: which flag selects the requests, which list serves them, and
//! how many items each gets. Built by recpipe::cold_start().
template <column Flag, column Score, class Ref>
struct cold_start_stage : stage<cold_start_stage<Flag, Score, Ref>> {
  static_assert(Flag::shape == column_shape::per_request,
                "recpipe: COLD_START_FLAG_NOT_PER_REQUEST - cold_start selects whole requests: use a per-request flag "
                "such as col::user_unknown (lookup(store).flag_missing())");
  static_assert(Score::shape == column_shape::per_candidate && std::is_same_v<typename Score::value_type, float>,
                "recpipe: COLD_START_SCORE_NOT_PER_CANDIDATE_FLOAT - the score cold_start writes is a per-candidate float column");
  using reads = columns<Flag, col::candidates, Score>;
  using writes = columns<>;
  static constexpr std::string_view name = detail::stage_name_v<&detail::cold_start_prefix, &Flag::name>;

  template <class Arg>
  cold_start_stage(Arg&& popular, std::size_t k) : popular_(std::forward<Arg>(popular)), k_(k) {
    if (k == 0) detail::fail("cold_start: k must be at least 1 (got 0)");
  }
  const popular_items& popular() const { return popular_.get(); }
  std::size_t k() const { return k_; }
  void pin_versions(detail::run_pins& pins) const { popular_.pin(pins); }

 private:
  detail::component<Ref> popular_;
  std::size_t k_;
};

//! @brief The cold-start path: each request whose `Flag` is set (a user the lookup did not find,
//! see lookup(store).flag_missing()) gets, instead of its candidates, the k most popular items
//! that are not in its col::history (when the batch has that column), in popularity order, each
//! scored with its count in `Score`. Every other per-candidate column is 0 for those items.
//! Requests whose flag is 0 pass unchanged. Put it after the ordering stage, so unknown users are
//! not ranked by a zero vector (which would give every candidate the score 0).
//!
//! Results: a popular list shorter than k (or mostly seen) gives fewer items; an empty list gives
//! flagged requests no items. @throws recpipe::error when k == 0.
//!
//! @param popular a named popular_items (held by reference: it must outlive the pipeline), a
//!                std::shared_ptr<const popular_items>, or a slot<popular_items>.
//! @code
//! auto recommend = recpipe::lookup(user_vectors).flag_missing()   // writes col::user_unknown
//!                  >> recpipe::retrieve<recpipe::col::user_embedding>(index, 100)
//!                  >> recpipe::score(recpipe::dot_product_scorer<>{})  // needs item vectors first
//!                  >> recpipe::top_k(10)
//!                  >> recpipe::cold_start(popular, 10);          // unknown users: top-10 popular
//! @endcode
template <column Flag = col::user_unknown, column Score = col::score>
cold_start_stage<Flag, Score, const popular_items&> cold_start(const popular_items& popular, std::size_t k) {
  return {popular, k};
}
//! Shares ownership of the list: the pipeline keeps it alive.
template <column Flag = col::user_unknown, column Score = col::score>
cold_start_stage<Flag, Score, std::shared_ptr<const popular_items>> cold_start(std::shared_ptr<const popular_items> popular,
                                                                                std::size_t k) {
  return {std::move(popular), k};
}
//! Reads the list each run pinned from a version_registry slot.
template <column Flag = col::user_unknown, column Score = col::score>
cold_start_stage<Flag, Score, slot<popular_items>> cold_start(const slot<popular_items>& popular, std::size_t k) {
  return {popular, k};
}
// READ THIS IF YOUR COMPILE BREAKS HERE: the pipeline keeps a reference to the list; a
// temporary would dangle. Name it first, or pass a std::shared_ptr.
template <column Flag = col::user_unknown, column Score = col::score>
auto cold_start(const popular_items&& popular, std::size_t k) {
  static_assert(detail::always_false<Flag>,
                "recpipe: POPULAR_ITEMS_MUST_OUTLIVE_PIPELINE - cold_start() keeps a reference to the list; pass a named "
                "popular_items or a std::shared_ptr, not a temporary");
  return cold_start_stage<Flag, Score, const popular_items&>(popular, k);
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
#include <recpipe/cpu/stages/cold_start.hpp>
