// SPDX-License-Identifier: Apache-2.0
// recpipe math: element-wise activation functions shared by the CPU and CUDA backends.
#pragma once

#include <cmath>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace math {

//! The epilogue a dense layer applies after `x W^T + b`.
enum class activation {
  none,       //!< identity
  relu,       //!< max(x, 0); NaN stays NaN (as torch.relu)
  gelu,       //!< exact GELU, 0.5 x (1 + erf(x / sqrt 2)) (nn.GELU())
  gelu_tanh,  //!< tanh approximation (nn.GELU(approximate="tanh"))
  sigmoid     //!< 1 / (1 + exp(-x))
};

//! @brief Applies one activation to one value.
//! @code
//! float y = recpipe::math::activate(recpipe::math::activation::relu, -2.0f);  // 0
//! @endcode
RECPIPE_HOST_DEVICE inline float activate(activation act, float x) {
  switch (act) {
    case activation::relu:
      return x < 0.0f ? 0.0f : x;  // written so that NaN propagates
    case activation::gelu:
      return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    case activation::gelu_tanh: {
      const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + std::tanh(inner));
    }
    case activation::sigmoid:
      return 1.0f / (1.0f + std::exp(-x));
    case activation::none:
    default:
      return x;
  }
}

}  // namespace math
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
