// SPDX-License-Identifier: Apache-2.0
// recpipe math: the per-value feature rules (categorify, hash, cross, normalize, bucketize, log,
// counts and target encodings) and the small tables they read. The `transform` stage
// (stages/transform.hpp) and the trainer's feature code (train/online_features.hpp) both call
// these, so a feature is computed by one function at training and at serving time: they cannot
// drift. They live in math/ (not train/) because serving must not depend on the trainer.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/math/random.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace math {

//! The index `categorify` gives a value that is not in the vocabulary (and the row an embedding
//! table reserves for it): known values get 1 .. size(), so growing a vocabulary never moves it.
inline constexpr id_type oov_index = 0;

//! @brief A categorical vocabulary: value -> dense index. The i-th value given gets index i + 1;
//! every other value gets math::oov_index (0). An embedding table over it has rows() = size() + 1.
//! @throws recpipe::error on a duplicate value (its index would be ambiguous).
//! @code
//! recpipe::math::vocabulary v({42, 7, 1000});
//! v.index(7);     // 2
//! v.index(5);     // recpipe::math::oov_index (0)
//! @endcode
class vocabulary {
 public:
  vocabulary() = default;
  explicit vocabulary(std::vector<std::int64_t> values) : values_(std::move(values)) {
    index_.reserve(values_.size());
    for (std::size_t i = 0; i < values_.size(); ++i)
      if (!index_.emplace(values_[i], static_cast<id_type>(i + 1)).second)
        recpipe::detail::fail("math::vocabulary: value ", values_[i], " appears twice (at ", index_.at(values_[i]) - 1, " and ", i, ")");
  }

  //! @brief The vocabulary a trainer fits on its data: values seen at least `min_count` times,
  //! most frequent first (ties: smaller value first), as NVTabular's Categorify orders them.
  //! @code
  //! auto v = recpipe::math::vocabulary::fit(training_item_ids, /*min_count=*/5);
  //! @endcode
  static vocabulary fit(std::span<const std::int64_t> values, std::size_t min_count = 1) {
    std::unordered_map<std::int64_t, std::size_t> counts;
    for (const std::int64_t v : values) ++counts[v];
    std::vector<std::pair<std::int64_t, std::size_t>> kept;
    for (const auto& [value, count] : counts)
      if (count >= min_count) kept.emplace_back(value, count);
    std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) {
      return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    std::vector<std::int64_t> ordered;
    ordered.reserve(kept.size());
    for (const auto& k : kept) ordered.push_back(k.first);
    return vocabulary(std::move(ordered));
  }

  //! The index of `value`: 1 .. size() when known, oov_index (0) otherwise.
  id_type index(std::int64_t value) const {
    const auto it = index_.find(value);
    return it == index_.end() ? oov_index : it->second;
  }
  //! Number of known values.
  std::size_t size() const noexcept { return values_.size(); }
  //! Rows an embedding table over these indices needs: the known values plus the OOV row.
  std::size_t rows() const noexcept { return values_.size() + 1; }
  //! The known values, in index order (values()[i] has index i + 1).
  std::span<const std::int64_t> values() const noexcept { return values_; }

 private:
  std::vector<std::int64_t> values_;
  std::unordered_map<std::int64_t, id_type> index_;
};

//! @brief Categorify by hashing: `value` -> a bucket in [0, buckets) through math::mix64
//! (splitmix64, math/random.hpp: the same on every platform and in every version, unlike
//! std::hash, so a model trained on hashed ids serves the same buckets). Every value, seen or
//! not, lands in a bucket (there is no out-of-vocabulary index); different values may share one.
//! @throws recpipe::error when buckets is 0.
//! @code
//! recpipe::id_type b = recpipe::math::hash_bucket(user_id, 100'000);
//! @endcode
inline id_type hash_bucket(std::int64_t value, std::uint64_t buckets) {
  if (buckets == 0) recpipe::detail::fail("math::hash_bucket: buckets must be at least 1 (got 0)");
  return static_cast<id_type>(mix64(static_cast<std::uint64_t>(value)) % buckets);
}

//! @brief The hash cross of two categorical values: (a, b) -> a bucket in [0, buckets). Ordered:
//! cross(a, b) and cross(b, a) generally differ. @throws recpipe::error when buckets is 0.
//! @code
//! recpipe::id_type b = recpipe::math::hash_cross(user_id, item_id, 1'000'000);
//! @endcode
inline id_type hash_cross(std::int64_t a, std::int64_t b, std::uint64_t buckets) {
  if (buckets == 0) recpipe::detail::fail("math::hash_cross: buckets must be at least 1 (got 0)");
  const std::uint64_t h = mix64(static_cast<std::uint64_t>(a));
  return static_cast<id_type>(mix64(h ^ (mix64(static_cast<std::uint64_t>(b)) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2))) %
                              buckets);
}

//! @brief Standardization (x - mean) / std with a checked mean and std. NaN stays NaN and +-inf
//! stays +-inf (the trainer drops such examples; ordering stages rank NaN scores last).
//! @throws recpipe::error (constructor) when mean is not finite or std is not finite and > 0.
//! @code
//! recpipe::math::normalization n(3.0, 2.0);
//! float z = n(5.0);                                   // 1
//! auto fitted = recpipe::math::normalization::fit(training_prices);
//! @endcode
class normalization {
 public:
  normalization(double mean, double stddev) : mean_(mean), std_(stddev) {
    if (!std::isfinite(mean)) recpipe::detail::fail("math::normalization: mean must be finite (got ", mean, ")");
    if (!(stddev > 0.0) || !std::isfinite(stddev))
      recpipe::detail::fail("math::normalization: std must be finite and > 0 (got ", stddev, ")");
  }
  //! @brief Mean and (population) standard deviation of the finite values of `values`; a
  //! constant column gets std 1 (its values all normalize to 0).
  //! @throws recpipe::error when no value is finite.
  //! @code
  //! auto n = recpipe::math::normalization::fit(std::vector<float>{1, 2, 3});
  //! @endcode
  template <class T>
  static normalization fit(std::span<const T> values) {
    double sum = 0.0;
    std::size_t n = 0;
    for (const T v : values)
      if (std::isfinite(static_cast<double>(v))) {
        sum += static_cast<double>(v);
        ++n;
      }
    if (n == 0) recpipe::detail::fail("math::normalization::fit: no finite value among ", values.size());
    const double mean = sum / static_cast<double>(n);
    double sq = 0.0;
    for (const T v : values)
      if (std::isfinite(static_cast<double>(v))) sq += (static_cast<double>(v) - mean) * (static_cast<double>(v) - mean);
    const double stddev = std::sqrt(sq / static_cast<double>(n));
    return normalization(mean, stddev > 0.0 && std::isfinite(stddev) ? stddev : 1.0);
  }
  template <class T>
  static normalization fit(const std::vector<T>& values) {
    return fit(std::span<const T>(values));
  }

  //! (x - mean) / std, as float.
  float operator()(double x) const noexcept { return static_cast<float>((x - mean_) / std_); }
  double mean() const noexcept { return mean_; }
  double stddev() const noexcept { return std_; }

 private:
  double mean_, std_;
};

//! @brief Bucket boundaries b0 < b1 < ... < b(n-1): a value x goes to bucket i = the number of
//! boundaries <= x, so x < b0 -> 0, b(i-1) <= x < b(i) -> i, x >= b(n-1) -> n (-inf -> 0,
//! +inf -> n); NaN goes to its own bucket n + 1 (missing_bucket()). buckets() = n + 2 rows.
//! @throws recpipe::error when the list is empty, holds a non-finite value or does not increase
//! strictly (the message names the position).
//! @code
//! recpipe::math::bucket_boundaries ages({18, 25, 35, 50});
//! ages.index(30.0);   // 2
//! ages.index(NAN);    // 5 == ages.missing_bucket()
//! @endcode
class bucket_boundaries {
 public:
  explicit bucket_boundaries(std::vector<double> boundaries) : boundaries_(std::move(boundaries)) {
    if (boundaries_.empty()) recpipe::detail::fail("math::bucket_boundaries: no boundaries (give at least one)");
    for (std::size_t i = 0; i < boundaries_.size(); ++i) {
      if (!std::isfinite(boundaries_[i]))
        recpipe::detail::fail("math::bucket_boundaries: boundaries[", i, "] = ", boundaries_[i], " is not finite");
      if (i > 0 && !(boundaries_[i - 1] < boundaries_[i]))
        recpipe::detail::fail("math::bucket_boundaries: boundaries must increase strictly, but boundaries[", i, "] = ",
                     boundaries_[i], " follows boundaries[", i - 1, "] = ", boundaries_[i - 1]);
    }
  }
  //! The bucket of `x` (see the class comment).
  id_type index(double x) const noexcept {
    if (std::isnan(x)) return missing_bucket();
    return static_cast<id_type>(std::upper_bound(boundaries_.begin(), boundaries_.end(), x) - boundaries_.begin());
  }
  //! The bucket of NaN: boundaries + 1.
  id_type missing_bucket() const noexcept { return static_cast<id_type>(boundaries_.size() + 1); }
  //! Rows an embedding table over these buckets needs (boundaries + 2, the NaN bucket included).
  std::size_t buckets() const noexcept { return boundaries_.size() + 2; }
  std::span<const double> boundaries() const noexcept { return boundaries_; }

 private:
  std::vector<double> boundaries_;
};

//! @brief log1p of a value with negatives clamped to 0: log1p(max(x, 0)), so -3 -> 0, 0 -> 0;
//! +inf -> +inf, -inf -> 0, NaN -> NaN (NaN is "missing", not "negative").
//! @code
//! float x = recpipe::math::log1p_clamped(price);
//! @endcode
inline float log1p_clamped(double x) noexcept {
  if (std::isnan(x)) return static_cast<float>(x);
  return static_cast<float>(std::log1p(x > 0.0 ? x : 0.0));
}

//! How many events a key (a user, an item) had so far and how many of them were positive.
struct event_counts {
  std::uint64_t events = 0;
  double likes = 0.0;  //!< sum of the events' labels, each in [0, 1]
};

//! @brief The count feature: log1p(events), as float (0 for a key never seen).
//! @code
//! float c = recpipe::math::log_count(table.counts(user).events);
//! @endcode
inline float log_count(std::uint64_t events) noexcept { return static_cast<float>(std::log1p(static_cast<double>(events))); }

//! @brief The target encoding: the like rate smoothed towards `prior` with pseudo-count m,
//! (likes + m * prior) / (events + m), as float; a key never seen (and m = 0) gets the prior.
//! @code
//! float te = recpipe::math::target_encoding(table.counts(item), table.prior(), 20.0);
//! @endcode
inline float target_encoding(const event_counts& c, double prior, double m) noexcept {
  const double denominator = static_cast<double>(c.events) + m;
  return static_cast<float>(denominator > 0.0 ? (c.likes + m * prior) / denominator : prior);
}

//! @brief Checks a target-encoding pseudo-count: finite and >= 0.
//! @throws recpipe::error naming `who` otherwise.
//! @code
//! recpipe::math::check_smoothing(20.0, "my_featurizer");
//! @endcode
inline void check_smoothing(double m, std::string_view who) {
  if (!(m >= 0.0) || !std::isfinite(m)) recpipe::detail::fail(who, ": smoothing must be finite and >= 0 (got ", m, ")");
}

//! @brief Online counts of labelled events per key (a store the count and target-encoding
//! features read). Predict, then observe: features read the state of the events observed so far.
//! Not synchronized: mutate it between pipeline runs, or publish copies through a
//! recpipe::version_registry slot while a pipeline serves.
//! @code
//! recpipe::math::count_table items;
//! items.observe(42, 1.0f);                 // item 42 was liked
//! items.counts(42).events;                 // 1
//! items.prior();                           // like rate of everything so far (0.5 before anything)
//! @endcode
class count_table {
 public:
  //! Adds one event of `key` with `label` in [0, 1]. @throws recpipe::error otherwise (unchanged).
  void observe(std::int64_t key, float label) {
    if (!std::isfinite(label) || label < 0.0f || label > 1.0f)
      recpipe::detail::fail("math::count_table::observe: label must be finite and in [0, 1] (got ", label, ")");
    event_counts& c = counts_[key];
    ++c.events;
    c.likes += label;
    ++total_.events;
    total_.likes += label;
  }
  //! @brief Sets the counts of `key` (e.g. loaded from an external store); totals follow.
  //! @throws recpipe::error when likes is not finite or not in [0, events].
  void set(std::int64_t key, event_counts counts) {
    if (!std::isfinite(counts.likes) || counts.likes < 0.0 || counts.likes > static_cast<double>(counts.events))
      recpipe::detail::fail("math::count_table::set: key ", key, ": likes must be finite and in [0, events = ", counts.events,
                   "] (got ", counts.likes, ")");
    event_counts& c = counts_[key];
    total_.events = total_.events - c.events + counts.events;
    total_.likes = total_.likes - c.likes + counts.likes;
    c = counts;
  }
  //! The counts of `key` (zeros for a key never seen).
  event_counts counts(std::int64_t key) const {
    const auto it = counts_.find(key);
    return it == counts_.end() ? event_counts{} : it->second;
  }
  //! Counts over every key.
  event_counts total() const noexcept { return total_; }
  //! Like rate over every event so far (0.5 before the first): the target encoding's prior.
  double prior() const noexcept {
    return total_.events ? total_.likes / static_cast<double>(total_.events) : 0.5;
  }
  //! Keys seen.
  std::size_t size() const noexcept { return counts_.size(); }

 private:
  std::unordered_map<std::int64_t, event_counts> counts_;
  event_counts total_;
};

}  // namespace math
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
