// SPDX-License-Identifier: Apache-2.0
// recpipe train: online features of a user-item event stream (counts, smoothed like rates, item
// age) computed only from events already seen, and genre bags: one code for training and serving.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/math/features.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! Settings of online_features.
struct online_features_config {
  //! Pseudo-count m of the smoothed like rate (likes + m * prior) / (count + m); the prior is
  //! the like rate of all events seen so far (0.5 before the first).
  double smoothing = 20.0;
};

//! @brief Online counts and target encodings of users and items over a stream of labelled
//! events, computed only from the past.
//!
//! The protocol is *predict, then observe*: `dense(user, item, t, out)` reads the state built
//! from the events observed so far, and `observe(user, item, label, t)` adds the event after
//! its prediction. Serving calls `dense` for a request; training logs the same row with the
//! event and trains on it later, so the features a model learns from are exactly those it was
//! served (no training/serving skew, nothing from the future).
//!
//! Dense features (`dense_dim` of them, each in a small range so no scaling is needed):
//!   0 log1p(events of the user so far)     1 log1p(events of the item so far)
//!   2 smoothed like rate of the user       3 smoothed like rate of the item
//!   4 log1p(days since the item was first seen; 0 for an unseen item)
//!   5 1 if the item was never seen before, else 0
//!
//! Timestamps may go backwards (equal timestamps are common in MovieLens): an age computed from a
//! timestamp before the first sighting is 0. A label must be finite and in [0, 1]; anything else
//! is a recpipe::error and leaves the state unchanged.
//! @code
//! recpipe::train::online_features f;
//! float x[recpipe::train::online_features::dense_dim];
//! f.dense(7, 42, t, x);        // features for predicting user 7 on item 42 at time t
//! f.observe(7, 42, 1.0f, t);   // then learn that the user liked it
//! @endcode
class online_features {
 public:
  static constexpr std::size_t dense_dim = 6;

  //! Events and likes of one user or item (math::event_counts).
  using counter = math::event_counts;

  online_features() = default;
  explicit online_features(online_features_config config) : config_(config) {
    math::check_smoothing(config_.smoothing, "online_features");
  }

  //! Writes the dense features of (user, item) at time `t` into out[0, dense_dim). The counts and
  //! rates are math::log_count and math::target_encoding, the functions the serving `transform`
  //! stage's ops::count_encode / ops::target_encode call on user_counts() / item_counts().
  void dense(id_type user, id_type item, std::int64_t t, std::span<float> out) const {
    if (out.size() < dense_dim)
      detail::fail("online_features::dense: out has ", out.size(), " floats but needs ", dense_dim);
    const counter u = users_.counts(user);
    const counter ic = items_.counts(item);
    const auto first = first_seen_.find(item);
    const bool seen = first != first_seen_.end();
    out[0] = math::log_count(u.events);
    out[1] = math::log_count(ic.events);
    out[2] = math::target_encoding(u, prior(), config_.smoothing);
    out[3] = math::target_encoding(ic, prior(), config_.smoothing);
    out[4] = seen ? static_cast<float>(std::log1p(age_days(first->second, t))) : 0.0f;
    out[5] = seen ? 0.0f : 1.0f;
  }

  //! Adds an event (after it was predicted). `label` in [0, 1], e.g. like = rating >= 4.
  void observe(id_type user, id_type item, float label, std::int64_t t) {
    if (!std::isfinite(label) || label < 0.0f || label > 1.0f)
      detail::fail("online_features::observe: label must be finite and in [0, 1] (got ", label, ")");
    users_.observe(user, label);
    items_.observe(item, label);
    first_seen_.try_emplace(item, t);
  }

  //! Events of `user` observed so far.
  std::uint64_t user_events(id_type user) const { return users_.counts(user).events; }
  //! Events of `item` observed so far.
  std::uint64_t item_events(id_type item) const { return items_.counts(item).events; }
  //! True when `item` was first seen less than `window` seconds before `t`, or never seen.
  bool item_is_fresh(id_type item, std::int64_t t, std::int64_t window) const {
    const auto first = first_seen_.find(item);
    return first == first_seen_.end() || t - first->second < window;
  }
  //! Like rate of everything seen so far (0.5 before the first event).
  double prior() const { return users_.prior(); }
  std::uint64_t events() const noexcept { return users_.total().events; }
  const online_features_config& config() const noexcept { return config_; }
  //! @brief The per-user counts (a store for the transform stage's count / target encodings).
  //! @code
  //! auto t = recpipe::transform(recpipe::ops::target_encode<recpipe::col::user_id, user_rate>(f.user_counts(), 20.0));
  //! @endcode
  const math::count_table& user_counts() const noexcept { return users_; }
  //! The per-item counts (see user_counts()); their prior() equals prior().
  const math::count_table& item_counts() const noexcept { return items_; }

 private:
  static double age_days(std::int64_t first_seen, std::int64_t t) {
    return t > first_seen ? static_cast<double>(t - first_seen) / 86400.0 : 0.0;
  }

  online_features_config config_;
  // Every event updates both tables, so their totals (and priors) are the global ones.
  math::count_table users_;
  math::count_table items_;
  std::unordered_map<id_type, std::int64_t> first_seen_;
};

//! @brief Multi-hot bags of item categories (e.g. MovieLens genres), as embedding-bag ids.
//!
//! Static item metadata, so nothing can leak from the future. An unknown item gets the bag
//! {`unknown_id()`} (one id past the last category) so that every bag is non-empty and the
//! model can learn what "no metadata" means.
//! @code
//! recpipe::train::category_bags bags(3);          // categories 0, 1, 2
//! bags.set(42, {0, 2});
//! auto b = bags.bag(42);                          // {0, 2}; bags.bag(7) == {3}
//! @endcode
class category_bags {
 public:
  explicit category_bags(std::size_t categories = 0) : categories_(categories), unknown_{static_cast<id_type>(categories)} {}

  //! Sets the categories of `item`; each must be < categories(). An empty list means "none"
  //! and reads as the unknown bag.
  void set(id_type item, std::span<const std::uint32_t> categories) {
    std::vector<id_type> bag;
    bag.reserve(categories.size());
    for (std::uint32_t c : categories) {
      if (c >= categories_)
        detail::fail("category_bags::set: category ", c, " of item ", item, " is out of range [0, ", categories_, ")");
      bag.push_back(static_cast<id_type>(c));
    }
    if (bag.empty()) bags_.erase(item);
    else bags_[item] = std::move(bag);
  }
  void set(id_type item, std::initializer_list<std::uint32_t> categories) {
    set(item, std::span<const std::uint32_t>(categories.begin(), categories.size()));
  }
  //! The bag of `item` (ids in [0, categories()]; the last is the unknown id).
  std::span<const id_type> bag(id_type item) const {
    auto it = bags_.find(item);
    return it == bags_.end() ? std::span<const id_type>(&unknown_, 1) : std::span<const id_type>(it->second);
  }
  std::size_t categories() const noexcept { return categories_; }
  //! Rows an embedding table of these bags needs: the categories plus the unknown id.
  std::size_t rows() const noexcept { return categories_ + 1; }
  id_type unknown_id() const noexcept { return unknown_; }

 private:
  std::size_t categories_;
  id_type unknown_;
  std::unordered_map<id_type, std::vector<id_type>> bags_;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
