// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA kernels of the session transformer: the embedding gather (item + position rows,
// optional input LayerNorm and timeline mask) and the fused GEMM epilogue (bias + residual +
// LayerNorm + padding rows), one warp per row; the final gather of each session's last row.
#pragma once

#include <recpipe/cuda/detail/config.cuh>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <recpipe/math/transformer.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace kernels {

//! Which rows of a [sessions * window, E] activation a kernel writes as zeros.
enum class row_mask : std::uint8_t {
  none,    //!< every row is computed
  suffix,  //!< rows t >= length of each session (right padding: cpu's zero_padding)
  prefix,  //!< rows t < window - length (the timeline mask of a left-padded full window)
};

__device__ inline std::uint32_t clamp_length(const std::int64_t* lengths, std::uint32_t b, std::uint32_t window) {
  const std::int64_t len = lengths[b];
  return len < 0 ? 0u : (len > window ? window : static_cast<std::uint32_t>(len));
}

__device__ inline bool masked_row(row_mask mask, const std::int64_t* lengths, std::size_t row, std::uint32_t window) {
  if (mask == row_mask::none) return false;
  const auto b = static_cast<std::uint32_t>(row / window), t = static_cast<std::uint32_t>(row % window);
  const std::uint32_t len = clamp_length(lengths, b, window);
  return mask == row_mask::suffix ? t >= len : t < window - len;
}

__device__ inline float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// LayerNorm of the row `values` in place, each lane over columns lane, lane + 32, ... (the same
// columns it wrote, so no synchronisation beyond the warp's shuffles): two passes as the CPU
// (mean, then the squared deviations from it), math::layer_norm_* for the element formula.
__device__ inline void warp_layer_norm(float* values, std::uint32_t e, const float* gamma, const float* beta, float eps,
                                       std::uint32_t lane) {
  float partial = 0.0f;
  for (std::uint32_t c = lane; c < e; c += 32) partial += values[c];
  const float mean = warp_sum(partial) / static_cast<float>(e);
  partial = 0.0f;
  for (std::uint32_t c = lane; c < e; c += 32) {
    const float d = values[c] - mean;
    partial += d * d;
  }
  const float inv_std = math::layer_norm_inv_std(warp_sum(partial) / static_cast<float>(e), eps);
  if (gamma == nullptr && beta == nullptr) {
    for (std::uint32_t c = lane; c < e; c += 32) values[c] = math::layer_norm_value(values[c], mean, inv_std);
  } else {
    for (std::uint32_t c = lane; c < e; c += 32)
      values[c] = math::layer_norm_value(values[c], mean, inv_std, gamma != nullptr ? gamma[c] : 1.0f,
                                         beta != nullptr ? beta[c] : 0.0f);
  }
}

//! Arguments of residual_norm_kernel (see there).
struct residual_norm_params {
  const float* src = nullptr;  // [rows, e]
  std::size_t src_stride = 0;
  const float* bias = nullptr;      // [e] or null
  const float* residual = nullptr;  // [rows, e] or null
  std::size_t residual_stride = 0;
  float* sum = nullptr;  // [rows, e] or null: src + bias + residual before the norm
  std::size_t sum_stride = 0;
  float* norm = nullptr;  // [rows, e] or null: LayerNorm of the sum
  std::size_t norm_stride = 0;
  const float* gamma = nullptr;  // [e] or null
  const float* beta = nullptr;   // [e] or null
  float eps = 1e-5f;
  std::size_t rows = 0;
  std::uint32_t e = 0;
  row_mask mask = row_mask::none;
  const std::int64_t* lengths = nullptr;  // per session, for the mask
  std::uint32_t window = 1;               // rows per session, for the mask
};
static_assert(std::is_trivially_copyable_v<residual_norm_params>);

//! One warp per row r: v = (src[r] + bias) + residual[r] (the CPU's order: the linear layer adds
//! its bias, then cpu::add the residual); sum[r] = v when `sum`; norm[r] = LayerNorm(v) when
//! `norm` (computed in `norm`'s row, or in `sum`'s without one); masked rows are written as zeros
//! in both. Any output may alias src or residual (each element is read before it is written,
//! by the lane that writes it).
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads) residual_norm_kernel(residual_norm_params p) {
  constexpr std::uint32_t warps = BlockThreads / 32;
  const std::uint32_t lane = threadIdx.x % 32;
  for (std::size_t r = static_cast<std::size_t>(blockIdx.x) * warps + threadIdx.x / 32; r < p.rows;
       r += static_cast<std::size_t>(gridDim.x) * warps) {
    float* sum = p.sum != nullptr ? p.sum + r * p.sum_stride : nullptr;
    float* norm = p.norm != nullptr ? p.norm + r * p.norm_stride : nullptr;
    if (masked_row(p.mask, p.lengths, r, p.window)) {
      for (std::uint32_t c = lane; c < p.e; c += 32) {
        if (sum != nullptr) sum[c] = 0.0f;
        if (norm != nullptr) norm[c] = 0.0f;
      }
      continue;
    }
    const float* src = p.src + r * p.src_stride;
    const float* residual = p.residual != nullptr ? p.residual + r * p.residual_stride : nullptr;
    float* work = norm != nullptr ? norm : sum;
    for (std::uint32_t c = lane; c < p.e; c += 32) {
      float v = src[c];
      if (p.bias != nullptr) v += p.bias[c];
      if (residual != nullptr) v += residual[c];
      if (sum != nullptr) sum[c] = v;
      work[c] = v;
    }
    if (norm != nullptr) warp_layer_norm(norm, p.e, p.gamma, p.beta, p.eps, lane);
  }
}

//! Arguments of embed_kernel.
struct embed_params {
  const std::int64_t* slots = nullptr;    // [sessions * window] item ids (see embed_kernel)
  const std::int64_t* lengths = nullptr;  // [sessions] kept lengths
  std::uint32_t sessions = 0;
  std::uint32_t window = 0;
  std::uint32_t max_length = 0;
  bool full_window = false;  // attend_to_padding: the items in the last `length` slots
  bool left = false;         // left padding (for the position numbering)
  math::position_rule positions = math::position_rule::first_item;
  const float* items = nullptr;  // [num_items, e]
  std::size_t items_stride = 0;
  std::size_t num_items = 0;
  std::int64_t padding_id = -1;
  const float* positions_table = nullptr;  // [position rows, e]
  std::size_t positions_stride = 0;
  float scale = 1.0f;
  const float* norm_gamma = nullptr;  // input LayerNorm (when input_norm)
  const float* norm_beta = nullptr;
  bool input_norm = false;
  bool timeline_mask = false;
  float eps = 1e-5f;
  float* out = nullptr;  // [sessions * window, e]
  std::size_t out_stride = 0;
  std::uint32_t e = 0;
};
static_assert(std::is_trivially_copyable_v<embed_params>);

//! One warp per row (session b, slot s): the session transformer's input, as the CPU model
//! builds it - item row * scale (the multiply only when scale != 1, like the CPU) + the position
//! row of math::session_position; then the input LayerNorm and the timeline mask. Rows past a
//! right-padded session's length are zeros (the kernels mask them; the CPU's rows there differ
//! only when input_norm, and never reach a valid row). Full window: slots before the items use
//! padding_id's row. An id outside [0, num_items) embeds as a zero item row (the host entry
//! rejects such ids before they get here).
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads) embed_kernel(embed_params p) {
  constexpr std::uint32_t warps = BlockThreads / 32;
  const std::uint32_t lane = threadIdx.x % 32;
  const std::size_t rows = static_cast<std::size_t>(p.sessions) * p.window;
  for (std::size_t r = static_cast<std::size_t>(blockIdx.x) * warps + threadIdx.x / 32; r < rows;
       r += static_cast<std::size_t>(gridDim.x) * warps) {
    const auto b = static_cast<std::uint32_t>(r / p.window), s = static_cast<std::uint32_t>(r % p.window);
    const std::uint32_t len = clamp_length(p.lengths, b, p.window);
    const std::uint32_t first_slot = p.full_window ? p.window - len : 0;
    const std::uint32_t filled = p.full_window ? p.window : len;
    float* row = p.out + r * p.out_stride;
    if (s >= filled || (p.timeline_mask && s < first_slot)) {
      for (std::uint32_t c = lane; c < p.e; c += 32) row[c] = 0.0f;
      continue;
    }
    const std::int64_t id = s < first_slot ? p.padding_id : p.slots[r];
    const bool valid = id >= 0 && static_cast<std::size_t>(id) < p.num_items;
    const float* item = p.items + (valid ? static_cast<std::size_t>(id) : 0) * p.items_stride;
    const float* position =
        p.positions_table + math::session_position(p.positions, p.left, p.max_length, filled, first_slot, s) * p.positions_stride;
    for (std::uint32_t c = lane; c < p.e; c += 32) {
      float v = valid ? item[c] : 0.0f;
      if (p.scale != 1.0f) v *= p.scale;
      row[c] = v + position[c];
    }
    if (p.input_norm) warp_layer_norm(row, p.e, p.norm_gamma, p.norm_beta, p.eps, lane);
  }
}

//! One warp per session b: out[b] = LayerNorm(x[b * window + last]) (or the copy without
//! `final_norm`), last = window - 1 for a full window, else length - 1; a session of length 0
//! gives a zero row.
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    last_row_kernel(const float* x, std::size_t x_stride, const std::int64_t* lengths, std::uint32_t sessions,
                    std::uint32_t window, bool full_window, const float* gamma, const float* beta, bool final_norm,
                    float eps, float* out, std::size_t out_stride, std::uint32_t e) {
  constexpr std::uint32_t warps = BlockThreads / 32;
  const std::uint32_t lane = threadIdx.x % 32;
  for (std::size_t b = static_cast<std::size_t>(blockIdx.x) * warps + threadIdx.x / 32; b < sessions;
       b += static_cast<std::size_t>(gridDim.x) * warps) {
    float* row = out + b * out_stride;
    const std::uint32_t len = clamp_length(lengths, static_cast<std::uint32_t>(b), window);
    if (len == 0) {
      for (std::uint32_t c = lane; c < e; c += 32) row[c] = 0.0f;
      continue;
    }
    const float* last = x + (b * window + (full_window ? window : len) - 1) * x_stride;
    for (std::uint32_t c = lane; c < e; c += 32) row[c] = last[c];
    if (final_norm) warp_layer_norm(row, e, gamma, beta, eps, lane);
  }
}

}  // namespace kernels
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
