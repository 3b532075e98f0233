// SPDX-License-Identifier: Apache-2.0
// recpipe: the one ordering every backend uses for ranked results.
#pragma once

#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! @brief True when (score_a, id_a) ranks before (score_b, id_b): higher score first, NaN after
//! every number (it never beats even -inf), and equal scores (or two NaNs) by ascending id.
//! A strict weak ordering, so std::sort and std::nth_element may use it; the CPU and CUDA
//! backends both sort with it, which is what makes their results comparable element by element.
template <class Score>
RECPIPE_HOST_DEVICE constexpr bool ranks_before(Score score_a, id_type id_a, Score score_b, id_type id_b) {
  const bool a_nan = score_a != score_a, b_nan = score_b != score_b;
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && score_a != score_b) return score_a > score_b;
  return id_a < id_b;
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
