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

  struct counter {
    std::uint64_t events = 0;
    double likes = 0.0;
  };
  struct item_state {
    counter count;
    std::int64_t first_seen = 0;
  };

  online_features() = default;
  explicit online_features(online_features_config config) : config_(config) {
    if (!(config_.smoothing >= 0.0) || !std::isfinite(config_.smoothing))
      detail::fail("online_features: smoothing must be finite and >= 0 (got ", config_.smoothing, ")");
  }

  //! Writes the dense features of (user, item) at time `t` into out[0, dense_dim).
  void dense(id_type user, id_type item, std::int64_t t, std::span<float> out) const {
    if (out.size() < dense_dim)
      detail::fail("online_features::dense: out has ", out.size(), " floats but needs ", dense_dim);
    const counter u = user_counter(user);
    const item_state* i = find_item(item);
    const counter ic = i ? i->count : counter{};
    out[0] = static_cast<float>(std::log1p(static_cast<double>(u.events)));
    out[1] = static_cast<float>(std::log1p(static_cast<double>(ic.events)));
    out[2] = static_cast<float>(smoothed_rate(u));
    out[3] = static_cast<float>(smoothed_rate(ic));
    out[4] = i ? static_cast<float>(std::log1p(age_days(*i, t))) : 0.0f;
    out[5] = i ? 0.0f : 1.0f;
  }

  //! Adds an event (after it was predicted). `label` in [0, 1], e.g. like = rating >= 4.
  void observe(id_type user, id_type item, float label, std::int64_t t) {
    if (!std::isfinite(label) || label < 0.0f || label > 1.0f)
      detail::fail("online_features::observe: label must be finite and in [0, 1] (got ", label, ")");
    counter& u = users_[user];
    ++u.events;
    u.likes += label;
    auto [it, inserted] = items_.try_emplace(item);
    if (inserted) it->second.first_seen = t;
    ++it->second.count.events;
    it->second.count.likes += label;
    ++global_.events;
    global_.likes += label;
  }

  //! Events of `user` observed so far.
  std::uint64_t user_events(id_type user) const { return user_counter(user).events; }
  //! Events of `item` observed so far.
  std::uint64_t item_events(id_type item) const {
    const item_state* i = find_item(item);
    return i ? i->count.events : 0;
  }
  //! True when `item` was first seen less than `window` seconds before `t`, or never seen.
  bool item_is_fresh(id_type item, std::int64_t t, std::int64_t window) const {
    const item_state* i = find_item(item);
    return !i || t - i->first_seen < window;
  }
  //! Like rate of everything seen so far (0.5 before the first event).
  double prior() const { return global_.events ? global_.likes / static_cast<double>(global_.events) : 0.5; }
  std::uint64_t events() const noexcept { return global_.events; }
  const online_features_config& config() const noexcept { return config_; }

 private:
  counter user_counter(id_type user) const {
    auto it = users_.find(user);
    return it == users_.end() ? counter{} : it->second;
  }
  const item_state* find_item(id_type item) const {
    auto it = items_.find(item);
    return it == items_.end() ? nullptr : &it->second;
  }
  double smoothed_rate(const counter& c) const {
    const double m = config_.smoothing;
    const double denominator = static_cast<double>(c.events) + m;
    return denominator > 0.0 ? (c.likes + m * prior()) / denominator : prior();
  }
  static double age_days(const item_state& i, std::int64_t t) {
    return t > i.first_seen ? static_cast<double>(t - i.first_seen) / 86400.0 : 0.0;
  }

  online_features_config config_;
  std::unordered_map<id_type, counter> users_;
  std::unordered_map<id_type, item_state> items_;
  counter global_;
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
