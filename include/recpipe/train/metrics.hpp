// SPDX-License-Identifier: Apache-2.0
// recpipe train: ROC AUC, exact over a batch and over a sliding window for progress lines.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

namespace impl {
// AUC of (score, positive) pairs, sorted here; ties between a positive and a negative count half.
inline double auc_of(std::vector<std::pair<float, bool>>& events) {
  std::sort(events.begin(), events.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::uint64_t negatives_below = 0, positives = 0;
  double wins = 0.0;  // pairs (positive, negative) with the positive scored higher; ties count 0.5
  for (std::size_t i = 0; i < events.size();) {
    std::size_t j = i;
    std::uint64_t pos = 0, neg = 0;
    for (; j < events.size() && events[j].first == events[i].first; ++j) (events[j].second ? pos : neg) += 1;
    wins += static_cast<double>(pos) * static_cast<double>(negatives_below) +
            0.5 * static_cast<double>(pos) * static_cast<double>(neg);
    negatives_below += neg;
    positives += pos;
    i = j;
  }
  if (positives == 0 || negatives_below == 0) return std::numeric_limits<double>::quiet_NaN();
  return wins / (static_cast<double>(positives) * static_cast<double>(negatives_below));
}
}  // namespace impl

//! @brief Exact ROC AUC: the probability that a random positive scores above a random negative,
//! ties counted half (as sklearn.metrics.roc_auc_score). O(n log n).
//!
//! A label is positive when > 0.5 (labels are 0/1; soft labels are thresholded). Returns NaN when
//! the events hold only one class (AUC is undefined; sklearn raises). A NaN score, or a label
//! that is NaN or outside [0, 1], throws recpipe::error naming its index; infinite scores are fine.
//! @code
//! double a = recpipe::train::auc(scores, labels);   // 0.5 = chance
//! @endcode
inline double auc(std::span<const float> scores, std::span<const float> labels) {
  if (scores.size() != labels.size())
    detail::fail("train::auc: ", scores.size(), " scores but ", labels.size(), " labels");
  std::vector<std::pair<float, bool>> events(scores.size());
  for (std::size_t i = 0; i < scores.size(); ++i) {
    if (std::isnan(scores[i])) detail::fail("train::auc: score ", i, " is nan");
    if (!(labels[i] >= 0.0f && labels[i] <= 1.0f))
      detail::fail("train::auc: label ", i, " is ", labels[i], " (labels must be in [0, 1])");
    events[i] = {scores[i], labels[i] > 0.5f};
  }
  return impl::auc_of(events);
}

//! @brief AUC over a sliding window of the last `window` events, for progress lines.
//!
//! `add` is O(1); `value()` sorts the window (O(window log window)), so call it once per progress
//! line, not per event. Events with a NaN score or a label that is NaN or outside [0, 1] are not
//! added and are counted in `skipped()` (a progress line must never throw). `value()` is NaN
//! while the window holds only one class.
//! @code
//! recpipe::train::running_auc progress(10000);
//! progress.add(scores, labels);
//! std::printf("auc %.4f\n", progress.value());
//! @endcode
class running_auc {
 public:
  explicit running_auc(std::size_t window) : window_(window) {
    if (window == 0) detail::fail("train::running_auc: window must be at least 1");
    events_.reserve(std::min<std::size_t>(window, 1u << 16));
  }

  void add(float score, float label) {
    if (std::isnan(score) || !(label >= 0.0f && label <= 1.0f)) {
      ++skipped_;
      return;
    }
    const std::pair<float, bool> e{score, label > 0.5f};
    if (events_.size() < window_) {
      events_.push_back(e);
    } else {
      events_[next_] = e;
      next_ = (next_ + 1) % window_;
    }
    ++seen_;
  }
  void add(std::span<const float> scores, std::span<const float> labels) {
    if (scores.size() != labels.size())
      detail::fail("train::running_auc::add: ", scores.size(), " scores but ", labels.size(), " labels");
    for (std::size_t i = 0; i < scores.size(); ++i) add(scores[i], labels[i]);
  }
  //! AUC of the events in the window (NaN when it holds one class only or none).
  double value() const {
    std::vector<std::pair<float, bool>> copy(events_);
    return impl::auc_of(copy);
  }
  std::size_t size() const noexcept { return events_.size(); }
  std::size_t window() const noexcept { return window_; }
  //! Events added since construction or clear() (the window keeps the last `window()` of them).
  std::uint64_t seen() const noexcept { return seen_; }
  std::uint64_t skipped() const noexcept { return skipped_; }
  void clear() noexcept {
    events_.clear();
    next_ = 0;
    seen_ = skipped_ = 0;
  }

 private:
  std::size_t window_, next_ = 0;
  std::vector<std::pair<float, bool>> events_;
  std::uint64_t seen_ = 0, skipped_ = 0;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
