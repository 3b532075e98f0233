// SPDX-License-Identifier: Apache-2.0
// recpipe train: the inputs every trainable ranking model takes, and a builder that fills them event by event.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/embedding.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief One batch of model inputs, as views: dense features [batch, dense_dim] (an empty view
//! with `batch` rows when the model has none) and one cpu::bag_input per sparse feature, in the
//! order of the model's tables. The same struct feeds train::mlp_model, train::dlrm_model and
//! train::dcn_v2_model (and their frozen serving models), so an experiment can swap models.
//!
//! `batch` is the number of examples; it is explicit because a model without dense features
//! cannot read it from `dense`.
//! @code
//! recpipe::train::model_inputs in{dense.view(), bags, dense.rows()};
//! auto logits = model.forward(in, ws);
//! @endcode
struct model_inputs {
  matrix_view<const float> dense;
  std::span<const cpu::bag_input> sparse;
  std::size_t batch = 0;
};

//! @brief An owning mini-batch of labelled examples that a trainer fills one example at a time
//! (a featurizer appends each event's features), and that hands out model_inputs views.
//!
//! Every feature bag uses offsets with batch + 1 entries (include_last_offset). Per-id weights are
//! kept for a feature only once a weight other than 1 was added to it.
//! @code
//! recpipe::train::example_batch b(/*dense_dim=*/2, /*num_sparse=*/2);
//! b.begin_example(/*label=*/1.0f);
//! b.dense_row()[0] = 0.5f;
//! b.add_id(0, user_id);
//! b.add_id(1, item_id);
//! model.forward(b.inputs(), ws);
//! @endcode
class example_batch {
 public:
  example_batch() = default;
  example_batch(std::size_t dense_dim, std::size_t num_sparse) : dense_dim_(dense_dim), features_(num_sparse) { clear(); }

  std::size_t dense_dim() const noexcept { return dense_dim_; }
  std::size_t num_sparse() const noexcept { return features_.size(); }
  std::size_t size() const noexcept { return labels_.size(); }
  bool empty() const noexcept { return labels_.empty(); }

  //! Drops every example (keeps the allocations).
  void clear() {
    dense_.clear();
    labels_.clear();
    for (feature& f : features_) {
      f.ids.clear();
      f.weights.clear();
      f.offsets.assign(1, 0);
      f.weighted = false;
    }
  }

  //! Starts a new example with `label`; its dense row starts at zero and its bags empty.
  void begin_example(float label) {
    labels_.push_back(label);
    dense_.resize(dense_.size() + dense_dim_, 0.0f);
    for (feature& f : features_) f.offsets.push_back(static_cast<id_type>(f.ids.size()));
  }
  //! The dense row of the current (last) example.
  std::span<float> dense_row() {
    if (labels_.empty()) detail::fail("train::example_batch: dense_row: no example begun (call begin_example first)");
    return {dense_.data() + (labels_.size() - 1) * dense_dim_, dense_dim_};
  }
  //! Label of the current example (to change it after begin_example).
  float& label() {
    if (labels_.empty()) detail::fail("train::example_batch: label: no example begun (call begin_example first)");
    return labels_.back();
  }
  //! Adds `id` (weight `weight`) to the current example's bag of sparse feature `feature`.
  void add_id(std::size_t feature_index, id_type id, float weight = 1.0f) {
    if (labels_.empty()) detail::fail("train::example_batch: add_id: no example begun (call begin_example first)");
    if (feature_index >= features_.size())
      detail::fail("train::example_batch: add_id: feature ", feature_index, " but the batch has ", features_.size(),
                   " sparse features");
    feature& f = features_[feature_index];
    if (weight != 1.0f && !f.weighted) {
      f.weighted = true;
      f.weights.assign(f.ids.size(), 1.0f);
    }
    f.ids.push_back(id);
    if (f.weighted) f.weights.push_back(weight);
    ++f.offsets.back();
  }
  //! Removes the current (last) example, e.g. one whose features turned out invalid.
  void drop_last() {
    if (labels_.empty()) return;
    labels_.pop_back();
    dense_.resize(dense_.size() - dense_dim_);
    for (feature& f : features_) {
      f.offsets.pop_back();
      const auto keep = static_cast<std::size_t>(f.offsets.back());
      f.ids.resize(keep);
      if (f.weighted) f.weights.resize(keep);
    }
  }
  //! True when the current example's label is finite and in [0, 1] and its dense row and bag
  //! weights are finite (what the trainer requires of an event).
  bool last_is_valid() const {
    if (labels_.empty()) return false;
    const float y = labels_.back();
    if (!(y >= 0.0f && y <= 1.0f)) return false;
    const float* row = dense_.data() + (labels_.size() - 1) * dense_dim_;
    for (std::size_t c = 0; c < dense_dim_; ++c)
      if (!std::isfinite(row[c])) return false;
    for (const feature& f : features_) {
      if (!f.weighted) continue;
      const auto first = static_cast<std::size_t>(f.offsets[f.offsets.size() - 2]);
      for (std::size_t i = first; i < f.weights.size(); ++i)
        if (!std::isfinite(f.weights[i])) return false;
    }
    return true;
  }

  std::span<const float> labels() const noexcept { return labels_; }
  matrix_view<const float> dense() const noexcept { return {dense_.data(), labels_.size(), dense_dim_}; }
  //! The ids / offsets of one feature (for tests and featurizers that inspect a batch).
  std::span<const id_type> ids(std::size_t feature_index) const { return features_.at(feature_index).ids; }
  std::span<const id_type> offsets(std::size_t feature_index) const { return features_.at(feature_index).offsets; }

  //! Views of the batch for a model's forward; valid until the batch changes.
  model_inputs inputs() {
    bags_.resize(features_.size());
    for (std::size_t t = 0; t < features_.size(); ++t) {
      const feature& f = features_[t];
      bags_[t] = {f.ids, f.offsets, f.weighted ? std::span<const float>(f.weights) : std::span<const float>()};
    }
    return {dense(), bags_, labels_.size()};
  }

 private:
  struct feature {
    std::vector<id_type> ids;
    std::vector<id_type> offsets{0};
    std::vector<float> weights;
    bool weighted = false;
  };
  std::size_t dense_dim_ = 0;
  std::vector<float> dense_;
  std::vector<float> labels_;
  std::vector<feature> features_;
  std::vector<cpu::bag_input> bags_;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
