// SPDX-License-Identifier: Apache-2.0
// recpipe train: the interfaces between embedding tables and their row-wise optimizers.
#pragma once

#include <cstddef>
#include <span>

#include <recpipe/config.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/embedding.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief A sparse optimizer: updates one embedding row at a time, with `state_size(dim)` floats
//! of per-row state that the table keeps beside the row (so evicting a row frees its state too).
//!
//! The trainer calls `begin_step()` once per optimizer step, then `update_row` for every row the
//! batch touched: rows not in the batch are never read or written (lazy updates).
class row_optimizer {
 public:
  virtual ~row_optimizer() = default;
  //! Floats of optimizer state per row of width `dim` (0 for plain SGD).
  virtual std::size_t state_size(std::size_t dim) const = 0;
  //! Initial state of a new row (e.g. Adagrad's initial accumulator).
  virtual void init_state(std::span<float> state) const = 0;
  //! Advances the step count (bias correction of lazy Adam); once per optimizer step.
  virtual void begin_step() = 0;
  //! row -= update(grad, state); state updated in place. grad is finite (the trainer checks).
  virtual void update_row(std::span<float> row, std::span<float> state, std::span<const float> grad) const = 0;
};

//! @brief A trainable embedding table, fixed (`id` in [0, rows)) or dynamic (any 64-bit id).
//!
//! A table owns its row optimizer (given at construction, so that a row created later gets its
//! optimizer state from `init_state`). Forward (`pool`) reads rows; backward produces one
//! gradient row per unique id of the batch (cpu::embedding_bag_backward); `apply` hands each to
//! the optimizer. The trainer calls `optimizer().begin_step()` once per step before `apply`.
class trainable_table {
 public:
  virtual ~trainable_table() = default;
  virtual std::size_t dim() const = 0;
  virtual row_optimizer& optimizer() = 0;
  //! Training forward: pools bags (as cpu::embedding_bag) into out [batch, dim]. A dynamic table
  //! counts each id towards admission here; ids it does not hold read as zero rows.
  virtual void pool(std::span<const id_type> ids, std::span<const id_type> offsets, std::span<const float> weights,
                    cpu::pooling mode, matrix_view<float> out) = 0;
  //! Applies grads[i] (dL/d row of ids[i]; ids unique) through optimizer(). Ids the table does
  //! not hold (not admitted, evicted) are skipped.
  virtual void apply(std::span<const id_type> ids, matrix_view<const float> grads) = 0;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
