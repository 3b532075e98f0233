// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA kernels: fused scaled-dot-product attention per (session, head) with causal and
// padding masks, the softmax in shared memory; zeroing of padded rows.
#pragma once

#include <recpipe/cuda/detail/config.cuh>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <recpipe/math/vector.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace kernels {

struct attention_params {
  const float* qkv = nullptr;  // [sessions * max_len, 3E]: q | k | v per row (in_proj output)
  std::size_t qkv_stride = 0;
  const std::int64_t* lengths = nullptr;  // one per session, clamped into [0, max_len]; null: all max_len
  std::uint32_t sessions = 0;
  std::uint32_t max_len = 0;
  std::uint32_t e = 0;
  std::uint32_t head_dim = 0;
  float scale = 1.0f;  // 1 / sqrt(head_dim), applied to q as PyTorch does
  bool causal = false;
  float* context = nullptr;  // [sessions * max_len, E]
  std::size_t context_stride = 0;
};
static_assert(std::is_trivially_copyable_v<attention_params>);

// lengths == nullptr: every session fills all max_len rows.
__device__ inline std::uint32_t clamped_length(const std::int64_t* lengths, std::uint32_t b, std::uint32_t max_len) {
  if (lengths == nullptr) return max_len;
  const std::int64_t len = lengths[b];
  return len < 0 ? 0u : (len > max_len ? max_len : static_cast<std::uint32_t>(len));
}

//! One block per (session b = blockIdx.x, head h = blockIdx.y); each warp takes queries t =
//! warp, warp + warps, ... For a valid query: its scaled q in shared memory, one score per
//! visible key (lanes over keys, math::dot as the CPU), a warp-wide max / exp / sum softmax
//! over the row kept in shared memory (all -inf gives zeros, as math::softmax_inplace), then
//! lanes over the head's columns sum p_s * v_s in key order (the CPU's order). Padded queries
//! (t >= length) get a zero context row.
//! `Staged`: the block first copies the session's `length` keys and values of its head into
//! shared memory (coalesced, once per block instead of once per query from L1 / L2): keys with
//! a row pitch of head_dim + 1 floats, so that the 32 lanes reading 32 different keys hit 32
//! different banks; values with pitch head_dim (lanes read consecutive columns). The
//! arithmetic is the same in both variants.
template <int BlockThreads, bool Staged>
__global__ void __launch_bounds__(BlockThreads) attention_kernel(attention_params p) {
  extern __shared__ float shared[];
  constexpr std::uint32_t warps = BlockThreads / 32;
  const std::uint32_t b = blockIdx.x, h = blockIdx.y;
  const std::uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* probs = shared + warp * p.max_len;                        // warps x max_len
  float* query = shared + warps * p.max_len + warp * p.head_dim;   // warps x head_dim
  const std::uint32_t len = clamped_length(p.lengths, b, p.max_len);
  const std::size_t first_row = static_cast<std::size_t>(b) * p.max_len;
  const std::uint32_t hd = p.head_dim, column = h * hd;
  // Where key s and value s of this head start, and the distance between their elements' rows.
  const float* key_base = p.qkv + first_row * p.qkv_stride + p.e + column;
  const float* value_base = p.qkv + first_row * p.qkv_stride + 2 * p.e + column;
  std::size_t key_pitch = p.qkv_stride, value_pitch = p.qkv_stride;
  if constexpr (Staged) {
    float* keys = shared + warps * (p.max_len + hd);   // max_len x (hd + 1)
    float* values = keys + p.max_len * (hd + 1);       // max_len x hd
    const std::uint32_t count = len * hd;
    for (std::uint32_t i = threadIdx.x; i < count; i += BlockThreads) {
      const std::uint32_t s = i / hd, c = i % hd;
      keys[s * (hd + 1) + c] = key_base[s * p.qkv_stride + c];
      values[s * hd + c] = value_base[s * p.qkv_stride + c];
    }
    __syncthreads();  // every thread reaches it: nothing returns before
    key_base = keys;
    value_base = values;
    key_pitch = hd + 1;
    value_pitch = hd;
  }
  for (std::uint32_t t = warp; t < p.max_len; t += warps) {
    float* ctx = p.context + (first_row + t) * p.context_stride + column;
    if (t >= len) {
      for (std::uint32_t c = lane; c < hd; c += 32) ctx[c] = 0.0f;
      continue;
    }
    const float* q = p.qkv + (first_row + t) * p.qkv_stride + column;
    for (std::uint32_t c = lane; c < hd; c += 32) query[c] = q[c] * p.scale;
    __syncwarp();
    const std::uint32_t visible = p.causal ? t + 1 : len;
    float peak = -__int_as_float(0x7f800000);  // -inf
    for (std::uint32_t s = lane; s < visible; s += 32) {
      const float score = math::dot(query, key_base + s * key_pitch, hd);
      probs[s] = score;
      peak = score > peak ? score : peak;
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      const float other = __shfl_xor_sync(0xffffffffu, peak, offset);
      peak = other > peak ? other : peak;
    }
    const bool all_masked = peak == -__int_as_float(0x7f800000);
    float total = 0.0f;
    for (std::uint32_t s = lane; s < visible; s += 32) {
      const float w = all_masked ? 0.0f : expf(probs[s] - peak);
      probs[s] = w;
      total += w;
    }
    for (int offset = 16; offset > 0; offset /= 2) total += __shfl_xor_sync(0xffffffffu, total, offset);
    const float inverse = all_masked ? 0.0f : 1.0f / total;
    __syncwarp();
    for (std::uint32_t c = lane; c < hd; c += 32) {
      const float* value = value_base + c;
      float acc = 0.0f;
      for (std::uint32_t s = 0; s < visible; ++s) acc += (probs[s] * inverse) * value[s * value_pitch];
      ctx[c] = acc;
    }
    __syncwarp();  // probs and query are rewritten by this warp's next query
  }
}

//! Rows t >= length of every session set to zero (after the output projection added its bias).
template <int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    zero_padding_kernel(float* out, std::size_t stride, std::uint32_t cols, const std::int64_t* lengths,
                        std::uint32_t sessions, std::uint32_t max_len) {
  const std::size_t total = static_cast<std::size_t>(sessions) * max_len * cols;
  for (std::size_t e = static_cast<std::size_t>(blockIdx.x) * BlockThreads + threadIdx.x; e < total;
       e += static_cast<std::size_t>(gridDim.x) * BlockThreads) {
    const std::size_t row = e / cols;
    const auto b = static_cast<std::uint32_t>(row / max_len), t = static_cast<std::uint32_t>(row % max_len);
    if (t >= clamped_length(lengths, b, max_len)) out[row * stride + e % cols] = 0.0f;
  }
}

}  // namespace kernels
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
