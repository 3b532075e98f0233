// SPDX-License-Identifier: Apache-2.0
// recpipe math: the per-row layer-norm arithmetic and the position numbering of a session
// transformer, shared by the CPU path (cpu::layer_norm, models::session_transformer) and the
// CUDA kernels (cuda/kernels/transformer.cuh).
#pragma once

#include <cmath>
#include <cstddef>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace math {

//! @brief 1 / sqrt(variance + eps), the scale LayerNorm applies after subtracting the mean
//! (variance is the biased one: sum of squared deviations / n).
//! @code
//! float inv_std = recpipe::math::layer_norm_inv_std(0.25f, 1e-5f);
//! @endcode
RECPIPE_HOST_DEVICE inline float layer_norm_inv_std(float variance, float eps) {
  return 1.0f / std::sqrt(variance + eps);
}

//! @brief One normalised element without an affine part: (x - mean) * inv_std.
//! @code
//! float y = recpipe::math::layer_norm_value(x, mean, inv_std);
//! @endcode
RECPIPE_HOST_DEVICE inline float layer_norm_value(float x, float mean, float inv_std) { return (x - mean) * inv_std; }

//! @brief One normalised element with LayerNorm's affine part: (x - mean) * inv_std * gamma + beta
//! (nn.LayerNorm's order of operations; gamma 1 and beta 0 when the layer has none).
//! @code
//! float y = recpipe::math::layer_norm_value(x, mean, inv_std, gamma[c], beta[c]);
//! @endcode
RECPIPE_HOST_DEVICE inline float layer_norm_value(float x, float mean, float inv_std, float gamma, float beta) {
  return (x - mean) * inv_std * gamma + beta;
}

//! How a session transformer numbers its position embeddings (models::position_numbering has
//! the same enumerators and values).
enum class position_rule {
  first_item = 0,          //!< item k of the kept window gets position k
  window_slot = 1,         //!< the slot of a left-padded window of max_length
  window_slot_from_1 = 2,  //!< that slot + 1; padded slots get 0
};

//! @brief Row of the position-embedding table for slot `s` of a session's encoded rows.
//!
//! The session's rows are slots 0 .. filled-1 of its window: with a full window (attend_to_padding)
//! filled = max_length and the first `first_slot` slots hold padding; otherwise filled = the
//! session's kept length and first_slot = 0. `left`: the session is left-padded in a window of
//! max_length (its last item in slot max_length - 1).
//! @code
//! std::size_t p = recpipe::math::session_position(recpipe::math::position_rule::first_item, false, 50, len, 0, s);
//! @endcode
RECPIPE_HOST_DEVICE inline std::size_t session_position(position_rule rule, bool left, std::size_t max_length,
                                                         std::size_t filled, std::size_t first_slot, std::size_t s) {
  const std::size_t window_slot = left ? max_length - (filled - s) : s;
  if (rule == position_rule::window_slot) return window_slot;
  if (rule == position_rule::window_slot_from_1) return s < first_slot ? 0 : window_slot + 1;
  return s;  // first_item: item k at slot k (the slots start at the first item)
}

}  // namespace math
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
