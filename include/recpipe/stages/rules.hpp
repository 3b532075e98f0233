// SPDX-License-Identifier: Apache-2.0
// recpipe stages: business rules and diversity - diversify (maximal marginal relevance), cap (at
// most n items per category), pin (an item at a fixed position), filter_in / filter_out (allow and
// block lists that an operator can swap while the pipeline serves).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/pipeline.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/core/versions.hpp>
#include <recpipe/detail/component.hpp>
#include <recpipe/detail/meta.hpp>
#include <recpipe/detail/name.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

namespace col {
RECPIPE_COLUMN(item_category, per_candidate, id_type);  //!< a candidate's category (brand, genre, seller) for cap
}  // namespace col

namespace detail {
inline constexpr std::string_view diversify_prefix = "diversify";
inline constexpr std::string_view cap_prefix = "cap";
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// diversify

//! The description of diversify: greedy maximal marginal relevance over `Vector`.
template <column Score, column Vector>
struct diversify_stage : stage<diversify_stage<Score, Vector>> {
  static_assert(Score::shape == column_shape::per_candidate,
                "recpipe: ORDER_COLUMN_NOT_PER_CANDIDATE - ordering stages rank by a per_candidate column");
  static_assert(Vector::shape == column_shape::per_candidate_vector && std::is_same_v<typename Vector::value_type, float>,
                "recpipe: DIVERSIFY_VECTOR_NOT_PER_CANDIDATE_FLOAT - diversify compares a per_candidate_vector column "
                "of float (e.g. col::item_embedding)");
  using reads = columns<col::candidates, Score, Vector>;
  using writes = columns<>;
  static constexpr std::string_view name = detail::stage_name_v<&detail::diversify_prefix, &Vector::name>;

  diversify_stage(std::size_t k, float lambda) : k_(k), lambda_(lambda) {
    if (k == 0) detail::fail("diversify: k must be at least 1 (got 0)");
    if (!(lambda >= 0.0f && lambda <= 1.0f))
      detail::fail("diversify: lambda must be in [0, 1] (got ", lambda, ")");
  }
  std::size_t k() const { return k_; }
  float lambda() const { return lambda_; }

 private:
  std::size_t k_;
  float lambda_;
};

//! @brief Keeps each request's k candidates chosen greedily by maximal marginal relevance
//! (Carbonell & Goldstein 1998), in the order chosen: each step picks the candidate with the
//! largest `lambda * score - (1 - lambda) * max cosine(vector, vectors already chosen)`.
//!
//! lambda == 1 is exactly top_k(k) by `Score`; lambda == 0 ignores the score after the first pick
//! (which is always the best-scored one). The score and the cosine are mixed as they are, so give
//! scores on a scale comparable to [-1, 1] (a probability, a normalised similarity). Ties, NaN
//! and infinities rank as in top_k (higher value first, then lower id; NaN after every number).
//! A vector that is zero or holds NaN/infinity has no direction: its cosine with any vector is 0.
//! Every per-candidate column is reordered alike. Cost: O(k * c * d) per request for c candidates
//! of width d.
//! @throws recpipe::error when k == 0 or lambda is outside [0, 1] or NaN (at construction).
//!
//! @code
//! auto varied = recpipe::lookup(item_vectors) >> recpipe::score(ranker)
//!             >> recpipe::diversify(10, 0.7f);                 // col::score, col::item_embedding
//! auto by_similarity = recpipe::diversify<recpipe::col::retrieval_score>(10, 0.5f);
//! @endcode
template <column Score = col::score, column Vector = col::item_embedding>
diversify_stage<Score, Vector> diversify(std::size_t k, float lambda) {
  return diversify_stage<Score, Vector>(k, lambda);
}

// ---------------------------------------------------------------------------------------------
// cap

//! Tag for cap: keep the candidates' current order instead of ranking them by a score column.
struct current_order {};

namespace detail {
template <class Score>
struct cap_reads {
  using type = columns<Score>;
};
template <>
struct cap_reads<current_order> {
  using type = columns<>;
};
}  // namespace detail

//! The description of cap: at most n candidates per value of `Category`.
template <column Category, class Score>
struct cap_stage : stage<cap_stage<Category, Score>> {
  static_assert(Category::shape == column_shape::per_candidate && std::is_integral_v<typename Category::value_type>,
                "recpipe: CAP_CATEGORY_NOT_PER_CANDIDATE_INTEGER - cap reads a per_candidate column of integers "
                "(e.g. col::item_category)");
  static_assert(std::is_same_v<Score, current_order> || column<Score>,
                "recpipe: CAP_ORDER_NOT_A_COLUMN - cap ranks by a per_candidate column or keeps recpipe::current_order");
  using reads = detail::list_union_t<columns<col::candidates, Category>, typename detail::cap_reads<Score>::type>;
  using writes = columns<>;
  static constexpr std::string_view name = detail::stage_name_v<&detail::cap_prefix, &Category::name>;

  explicit cap_stage(std::size_t n) : n_(n) {
    if (n == 0)
      detail::fail("cap: n must be at least 1 (got 0); to drop a whole category use filter with the category column");
  }
  std::size_t n() const { return n_; }

 private:
  std::size_t n_;
};

//! @brief Keeps, per request, at most n candidates of each `Category` value (col::item_category by
//! default: a brand, a seller, a genre, filled by a lookup), the best ones by `Score`, and returns
//! them ranked by `Score` (descending, then id ascending, NaN last: top_k's order).
//! `cap<Category, recpipe::current_order>(n)` reads no score: it keeps the first n of each
//! category in the current order and keeps that order (run it after diversify or pin).
//! Nothing is refilled: a request whose candidates are all of one category keeps n of them.
//! Every per-candidate column follows the candidates. Cost: O(c log c) per request.
//! @throws recpipe::error when n == 0 (at construction).
//!
//! @code
//! auto at_most_two_per_brand = recpipe::lookup(brands)   // candidates -> col::item_category
//!                            >> recpipe::cap(2) >> recpipe::top_k(10);
//! auto keep_mmr_order = recpipe::cap<recpipe::col::item_category, recpipe::current_order>(2);
//! @endcode
template <column Category = col::item_category, class Score = col::score>
cap_stage<Category, Score> cap(std::size_t n) {
  return cap_stage<Category, Score>(n);
}

// ---------------------------------------------------------------------------------------------
// pin

//! One pinned item: `item` goes to 0-based `position` of every request's final list.
struct pinned_item {
  id_type item;
  std::size_t position;
};

//! The description of pin: items forced to positions.
struct pin_stage : stage<pin_stage> {
  using reads = columns<col::candidates>;
  using writes = columns<>;
  static constexpr std::string_view name = "pin";

  explicit pin_stage(std::vector<pinned_item> pins) : pins_(std::move(pins)) {
    for (const auto& p : pins_)
      if (p.item < 0) detail::fail("pin: item ", p.item, " is not a valid id (ids are >= 0)");
  }
  const std::vector<pinned_item>& pins() const { return pins_; }

 private:
  std::vector<pinned_item> pins_;
};

//! @brief Moves `item` to 0-based `position` of each request's candidate list; the other
//! candidates keep their order around it. Run it last (after top_k / diversify), so that
//! the position is a position of the final list.
//!
//! Documented behaviour:
//! - the item is not among a request's candidates (never retrieved, or removed by a filter or a
//!   block list): nothing changes for that request. A pin never brings back an item that a rule
//!   removed, and never invents per-candidate values (scores, features) for it;
//! - the position is past the end of the list: the item goes last;
//! - an item that appears several times in a list: its first occurrence is pinned, the others stay;
//! - several pins in one stage (`pin({{a, 0}, {b, 0}})`): they are placed in the order given; a pin
//!   whose position an earlier pin holds takes the next free position after it (the nearest free
//!   one before it when none is left after), and a second pin of the same item is ignored;
//! - pins in successive stages (`pin(a, 0) >> pin(b, 0)`): the later stage moves its item, so b is
//!   first and a second. Put the pins of one list in one stage to get the order given.
//! Every per-candidate column follows the candidates. Cost: O(c + p) per request with p pins.
//! @throws recpipe::error for a negative item id (at construction).
//!
//! @code
//! auto final_list = recpipe::top_k(10) >> recpipe::pin(sponsored_item, 2);
//! auto editorial = recpipe::pin({{launch_item, 0}, {partner_item, 3}});
//! @endcode
inline pin_stage pin(id_type item, std::size_t position) { return pin_stage({{item, position}}); }
//! Several pins in one stage, placed in the order given (see above).
inline pin_stage pin(std::vector<pinned_item> pins) { return pin_stage(std::move(pins)); }

// ---------------------------------------------------------------------------------------------
// filter_in / filter_out

//! Sets of item ids that filter_in / filter_out accept: anything with `contains(id_type)`
//! (std::unordered_set<id_type>, std::set<id_type>, recpipe::id_set).
template <class Set>
concept item_set = requires(const Set& s, id_type id) {
  { s.contains(id) } -> std::convertible_to<bool>;
};

//! @brief An immutable set of item ids stored as a sorted vector: `contains` is a binary search
//! over contiguous memory (no hashing, no pointer chasing), which beats std::unordered_set for
//! block and allow lists of up to millions of ids. Negative ids are dropped.
//!
//! @code
//! recpipe::id_set blocked{13, 666, 7};
//! bool b = blocked.contains(13);  // true
//! @endcode
class id_set {
 public:
  id_set() = default;
  id_set(std::initializer_list<id_type> ids) : id_set(std::vector<id_type>(ids)) {}
  explicit id_set(std::vector<id_type> ids) : ids_(std::move(ids)) {
    std::erase_if(ids_, [](id_type id) { return id < 0; });
    std::sort(ids_.begin(), ids_.end());
    ids_.erase(std::unique(ids_.begin(), ids_.end()), ids_.end());
  }
  bool contains(id_type id) const { return std::binary_search(ids_.begin(), ids_.end(), id); }
  std::size_t size() const { return ids_.size(); }
  bool empty() const { return ids_.empty(); }
  const std::vector<id_type>& ids() const { return ids_; }

 private:
  std::vector<id_type> ids_;
};

namespace detail {
inline constexpr std::string_view filter_in_name = "filter_in";
inline constexpr std::string_view filter_out_name = "filter_out";
}  // namespace detail

//! The description of filter_in (Keep = true) and filter_out (Keep = false): a set of ids held
//! as `Ref` (a reference, a value, a std::shared_ptr or a slot; see detail::component).
template <class Set, bool Keep, class Ref>
struct set_filter_stage : stage<set_filter_stage<Set, Keep, Ref>> {
  static_assert(item_set<Set>,
                "recpipe: FILTER_SET_WITHOUT_CONTAINS - filter_in / filter_out need a set with contains(id_type)");
  using reads = columns<col::candidates>;
  using writes = columns<>;
  static constexpr std::string_view name = Keep ? detail::filter_in_name : detail::filter_out_name;
  static constexpr bool keeps_members = Keep;

  template <class Arg>
  explicit set_filter_stage(Arg&& set) : set_(std::forward<Arg>(set)) {}
  //! The set (for a slot: the version this run pinned).
  const Set& set() const { return set_.get(); }
  void pin_versions(detail::run_pins& pins) const { set_.pin(pins); }

 private:
  detail::component<Ref> set_;
};

namespace detail {
template <bool Keep, class Arg>
auto make_set_filter(Arg&& set) {
  using ref = component_ref_t<Arg&&>;
  using value = typename component_value<std::remove_cvref_t<ref>>::type;
  using held = std::conditional_t<std::is_lvalue_reference_v<ref>, const value&, std::remove_cvref_t<ref>>;
  return set_filter_stage<value, Keep, held>(std::forward<Arg>(set));
}
}  // namespace detail

//! @brief Keeps only the candidates in `allowed` (an availability or allow list); the others are
//! dropped, the order is kept, and every per-candidate column is compacted alike. An empty set
//! drops every candidate (rows become empty; later stages handle empty rows).
//!
//! How the set is held decides who may change it:
//! - a named set: by reference; it must outlive the pipeline and must not change while runs are
//!   in flight (std containers are not safe to read while written);
//! - a temporary: moved into the stage (fixed for the stage's life);
//! - `std::shared_ptr<const Set>`: shared and immutable;
//! - `recpipe::slot<Set>` from a version_registry: swap the list live with
//!   `registry.publish(slot, std::make_shared<const Set>(...))`; each run reads the version it
//!   pinned when it started, runs in flight finish on the old list, and readers never wait.
//! Cost: one `contains` per candidate.
//!
//! @code
//! recpipe::version_registry lists;
//! auto in_stock = lists.add("in_stock", std::make_shared<const recpipe::id_set>(recpipe::id_set{1, 2, 3}));
//! auto serve = recpipe::retrieve(index, 100) >> recpipe::filter_in(in_stock);
//! lists.publish(in_stock, std::make_shared<const recpipe::id_set>(recpipe::id_set{2, 3, 4}));  // live
//! @endcode
template <class Set>
auto filter_in(Set&& allowed) {
  return detail::make_set_filter<true>(std::forward<Set>(allowed));
}
//! filter_in from a list of ids (held by value as an id_set).
inline auto filter_in(std::initializer_list<id_type> allowed) { return filter_in(id_set(allowed)); }

//! @brief Drops the candidates in `blocked` (a block list: removed, banned or reported items);
//! the order is kept and every per-candidate column is compacted alike. An empty set keeps
//! everything. The set is held like filter_in's (reference, value, shared_ptr or a versioned
//! slot that an operator swaps live).
//!
//! @code
//! auto blocked = std::make_shared<const recpipe::id_set>(recpipe::id_set{13, 666});
//! auto serve = recpipe::retrieve(index, 100) >> recpipe::filter_out(blocked) >> recpipe::top_k(10);
//! @endcode
template <class Set>
auto filter_out(Set&& blocked) {
  return detail::make_set_filter<false>(std::forward<Set>(blocked));
}
//! filter_out from a list of ids (held by value as an id_set).
inline auto filter_out(std::initializer_list<id_type> blocked) { return filter_out(id_set(blocked)); }

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
#include <recpipe/cpu/stages/rules.hpp>
