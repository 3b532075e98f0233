// SPDX-License-Identifier: Apache-2.0
// recpipe train: a trainable embedding table of a fixed number of rows (ids in [0, rows)).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/train/row_init.hpp>
#include <recpipe/train/table.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief A trainable table of `rows` fp32 master rows, ids in [0, rows).
//!
//! Rows start from `init` (a pure function of (seed, id), see row_init). Optimizer state
//! (`optimizer.state_size(dim)` floats per row, initialised by `init_state`) is held in a second
//! [rows, state_size] matrix, so `weights()` stays one contiguous [rows, dim] block that a
//! snapshot or safetensors writer can take as it is.
//!
//! Forward is cpu::embedding_bag on the fp32 weights (same offsets, weights and pooling rules,
//! same threading); an id outside [0, rows), negative included, throws recpipe::error naming the
//! table and the id. `apply` updates only the rows it is given (lazy/sparse): a gradient row that
//! is not finite, or an update that would make the row or its state non-finite, leaves that row
//! untouched and is counted in `skipped_nonfinite()`, so training never writes NaN into a table.
//! Not thread-safe: one thread trains; serve from `serving_copy()` or from versions that
//! train::table_publisher makes from the rows `apply` changed (`take_dirty_rows()`).
//! @code
//! auto sgd = std::make_shared<my_sgd>(0.1f);
//! recpipe::train::fixed_table items({.rows = 1000, .dim = 16, .name = "item"}, sgd);
//! items.pool(ids, offsets, {}, recpipe::cpu::pooling::sum, out.view());
//! items.optimizer().begin_step();
//! items.apply(unique_ids, grads.view());
//! auto serving = items.serving_copy(recpipe::cpu::storage::int8_rowwise);
//! @endcode
class fixed_table final : public trainable_table {
 public:
  struct config {
    std::size_t rows = 0;
    std::size_t dim = 0;
    row_init init = {};
    std::string name = "table";  //!< named in error messages
  };

  //! @throws recpipe::error if optimizer is null or rows * dim overflows.
  fixed_table(config cfg, std::shared_ptr<row_optimizer> optimizer)
      : cfg_(std::move(cfg)), optimizer_(std::move(optimizer)) {
    if (!optimizer_) detail::fail("train::fixed_table \"", cfg_.name, "\": the row optimizer is null");
    if (cfg_.dim != 0 && cfg_.rows > (std::size_t{1} << 40) / cfg_.dim)
      detail::fail("train::fixed_table \"", cfg_.name, "\": ", cfg_.rows, " x ", cfg_.dim, " is too large");
    state_size_ = optimizer_->state_size(cfg_.dim);
    weights_ = matrix<float>(cfg_.rows, cfg_.dim);
    state_ = matrix<float>(cfg_.rows, state_size_);
    dirty_bits_.assign((cfg_.rows + 63) / 64, 0);
    reset();
  }

  //! Re-initialises every row from `init` and every state row from the optimizer.
  void reset() {
    for (std::size_t r = 0; r < cfg_.rows; ++r) {
      cfg_.init.fill(static_cast<id_type>(r), weights_.row(r));
      if (state_size_) optimizer_->init_state(state_.row(r));
    }
    skipped_nonfinite_ = 0;
    mark_all_dirty();
  }

  //! The rows changed since the last take_dirty_rows(): `all` (every row; after construction,
  //! reset() or mark_all_dirty()), or `rows`, each row once, in the order apply first changed it.
  struct dirty_rows {
    bool all = false;
    std::vector<std::size_t> rows;
  };
  //! @brief The rows `apply` changed since the last call (or since construction: `all`), and
  //! starts a new empty set. table_publisher calls it to copy only the changed rows' blocks.
  //! Writes through the mutable weights() are not tracked: call mark_dirty / mark_all_dirty.
  //! @code
  //! auto dirty = table.take_dirty_rows();   // dirty.all, or dirty.rows = {17, 3, ...}
  //! @endcode
  dirty_rows take_dirty_rows() {
    dirty_rows out;
    out.all = all_dirty_;
    out.rows = std::move(dirty_list_);
    dirty_list_.clear();
    if (all_dirty_) {
      out.rows.clear();
      std::fill(dirty_bits_.begin(), dirty_bits_.end(), 0);
    } else {
      for (std::size_t r : out.rows) dirty_bits_[r / 64] = 0;  // clears every bit: all are in the list
    }
    all_dirty_ = false;
    return out;
  }
  //! Rows changed since the last take_dirty_rows() (rows() when all are dirty).
  std::size_t dirty_row_count() const noexcept { return all_dirty_ ? cfg_.rows : dirty_list_.size(); }
  //! Marks row r changed (after writing it through the mutable weights()).
  //! @throws recpipe::error for r outside [0, rows).
  void mark_dirty(std::size_t r) {
    if (r >= cfg_.rows) detail::fail("train::fixed_table \"", cfg_.name, "\": mark_dirty: row ", r, " is outside [0, ", cfg_.rows, ")");
    note_dirty(r);
  }
  //! Marks every row changed (after restoring a snapshot into weights()).
  void mark_all_dirty() {
    all_dirty_ = true;
    dirty_list_.clear();
  }

  std::size_t rows() const { return cfg_.rows; }
  std::size_t dim() const override { return cfg_.dim; }
  std::size_t state_size() const { return state_size_; }
  const std::string& name() const { return cfg_.name; }
  const config& settings() const { return cfg_; }
  row_optimizer& optimizer() override { return *optimizer_; }
  const std::shared_ptr<row_optimizer>& optimizer_ptr() const { return optimizer_; }

  //! fp32 master weights [rows, dim], contiguous (snapshots; the mutable one restores them).
  matrix_view<const float> weights() const { return weights_.view(); }
  matrix_view<float> weights() { return weights_.view(); }
  //! Optimizer state [rows, state_size()] (0 columns for plain SGD).
  matrix_view<const float> state() const { return state_.view(); }
  matrix_view<float> state() { return state_.view(); }
  //! The weights as a serving-kernel view (fp32).
  cpu::embedding_table_view view() const { return cpu::embedding_table_view::fp32(weights_.view()); }

  //! Rows `apply` left untouched because the gradient or the update was not finite.
  std::size_t skipped_nonfinite() const { return skipped_nonfinite_; }

  //! @brief cpu::embedding_bag over the fp32 master weights into out [batch, dim].
  //! @throws recpipe::error (naming the table) for an id outside [0, rows), bad offsets or shapes.
  void pool(std::span<const id_type> ids, std::span<const id_type> offsets, std::span<const float> weights,
            cpu::pooling mode, matrix_view<float> out) override {
    pool_const(ids, offsets, weights, mode, out);
  }
  //! The same forward pass, usable on a const table (evaluation).
  void pool_const(std::span<const id_type> ids, std::span<const id_type> offsets, std::span<const float> weights,
                  cpu::pooling mode, matrix_view<float> out) const {
    try {
      cpu::embedding_bag(view(), ids, offsets, weights, mode, out);
    } catch (const error& e) {
      detail::fail("train::fixed_table \"", cfg_.name, "\": ", e.what() + std::strlen("recpipe: "));
    }
  }

  //! @brief Hands grads.row(i) (dL/d row ids[i]) to the optimizer for row ids[i]; other rows are
  //! not touched. Ids should be unique (a repeated id is updated once per occurrence). A
  //! non-finite gradient row, or an update giving a non-finite value, skips that row (counted).
  //! @throws recpipe::error (naming the table) for an id outside [0, rows) or grads not [ids, dim];
  //! the check covers every id before any row changes.
  void apply(std::span<const id_type> ids, matrix_view<const float> grads) override {
    if (grads.rows() != ids.size() || (grads.cols() != cfg_.dim && !ids.empty()))
      detail::fail("train::fixed_table \"", cfg_.name, "\": apply: grads must be ", ids.size(), " x ", cfg_.dim,
                   " (got ", grads.rows(), " x ", grads.cols(), ")");
    if (grads.rows() > 1 && grads.stride() < grads.cols())
      detail::fail("train::fixed_table \"", cfg_.name, "\": apply: grads has stride ", grads.stride(),
                   " smaller than its ", grads.cols(), " columns");
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || static_cast<std::uint64_t>(ids[i]) >= cfg_.rows)
        detail::fail("train::fixed_table \"", cfg_.name, "\": apply: ids[", i, "] = ", ids[i], " is outside [0, ",
                     cfg_.rows, ")");
    scratch_.resize(cfg_.dim + state_size_);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::span<const float> grad = grads.row(i);
      if (!all_finite(grad)) {
        ++skipped_nonfinite_;
        continue;
      }
      const auto r = static_cast<std::size_t>(ids[i]);
      // Update a copy, commit only a finite result: a NaN learning rate or an overflow must not
      // reach the master weights.
      const std::span<float> row(scratch_.data(), cfg_.dim), st(scratch_.data() + cfg_.dim, state_size_);
      std::copy(weights_.row(r).begin(), weights_.row(r).end(), row.begin());
      std::copy(state_.row(r).begin(), state_.row(r).end(), st.begin());
      optimizer_->update_row(row, st, grad);
      if (!all_finite(scratch_)) {
        ++skipped_nonfinite_;
        continue;
      }
      std::copy(row.begin(), row.end(), weights_.row(r).begin());
      std::copy(st.begin(), st.end(), state_.row(r).begin());
      note_dirty(r);
    }
  }

  //! @brief A serving table made from the fp32 master: fp32, fp16 (round to nearest even) or int8
  //! row-wise (cpu::embedding_table::from_fp32). Row r serves id r.
  cpu::embedding_table serving_copy(cpu::storage type) const {
    try {
      return cpu::embedding_table::from_fp32(weights_.view(), type);
    } catch (const error& e) {
      detail::fail("train::fixed_table \"", cfg_.name, "\": serving_copy: ", e.what() + std::strlen("recpipe: "));
    }
  }

 private:
  static bool all_finite(std::span<const float> values) {
    for (float v : values)
      if (!std::isfinite(v)) return false;
    return true;
  }
  // One bit test per applied row; the list gets a row the first time it changes, so taking the
  // dirty set costs O(changed rows), not O(rows). While all rows are dirty nothing is recorded.
  void note_dirty(std::size_t r) {
    if (all_dirty_) return;
    std::uint64_t& word = dirty_bits_[r / 64];
    const std::uint64_t bit = std::uint64_t{1} << (r % 64);
    if (word & bit) return;
    word |= bit;
    dirty_list_.push_back(r);
  }

  config cfg_;
  std::shared_ptr<row_optimizer> optimizer_;
  std::size_t state_size_ = 0;
  matrix<float> weights_, state_;
  std::vector<float> scratch_;
  std::size_t skipped_nonfinite_ = 0;
  std::vector<std::uint64_t> dirty_bits_;
  std::vector<std::size_t> dirty_list_;
  bool all_dirty_ = true;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
