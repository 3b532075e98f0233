// SPDX-License-Identifier: Apache-2.0
// recpipe math: the element-wise epilogue of a DCN-v2 cross layer.
#pragma once

#include <cstddef>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace math {

//! @brief out[c] = x0[c] * (projected[c] + bias[c]) + xl[c]: DCN-v2's x0 * (W xl + b) + xl once
//! W xl is known. `bias` may be null. `out` may equal `xl` (each element is read before written).
//! @code
//! recpipe::math::cross_epilogue(x0, wx, bias, xl, out, d);
//! @endcode
RECPIPE_HOST_DEVICE inline void cross_epilogue(const float* x0, const float* projected, const float* bias,
                                               const float* xl, float* out, std::size_t d) {
  if (bias)
    for (std::size_t c = 0; c < d; ++c) out[c] = x0[c] * (projected[c] + bias[c]) + xl[c];
  else
    for (std::size_t c = 0; c < d; ++c) out[c] = x0[c] * projected[c] + xl[c];
}

}  // namespace math
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
