// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA kernels: embedding-bag gather and pooling: fp32 rows (one warp per bag, vector
// loads) and many fp32 / fp16 / int8 row-wise tables in one launch (one warp per bag and table).
#pragma once

#include <recpipe/cuda/detail/config.cuh>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <recpipe/core/types.hpp>
#include <recpipe/math/embedding.hpp>
#include <recpipe/math/half.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace kernels {

struct embedding_bag_params {
  const float* table = nullptr;
  std::size_t table_rows = 0;
  std::size_t table_stride = 0;  // floats between rows
  std::uint32_t dim = 0;
  const id_type* ids = nullptr;
  std::uint32_t num_ids = 0;
  const std::int64_t* offsets = nullptr;
  std::uint32_t num_offsets = 0;  // batch (PyTorch default) or batch + 1
  const float* weights = nullptr;  // nullable
  bool mean = false;
  float* out = nullptr;
  std::size_t out_stride = 0;
  std::uint32_t batch = 0;
  unsigned long long* invalid_count = nullptr;  // nullable
  std::uint32_t lanes_per_row = 32;  // power of two; 32 / lanes_per_row rows are gathered at once
};
static_assert(std::is_trivially_copyable_v<embedding_bag_params>);

template <int Vec>
struct vec_of;
template <>
struct vec_of<1> {
  using type = float;
  __device__ static void add(float (&acc)[1], type v, float w) { acc[0] += w * v; }
  __device__ static type make(const float (&acc)[1]) { return acc[0]; }
};
template <>
struct vec_of<2> {
  using type = float2;
  __device__ static void add(float (&acc)[2], type v, float w) {
    acc[0] += w * v.x;
    acc[1] += w * v.y;
  }
  __device__ static type make(const float (&acc)[2]) { return {acc[0], acc[1]}; }
};
template <>
struct vec_of<4> {
  using type = float4;
  __device__ static void add(float (&acc)[4], type v, float w) {
    acc[0] += w * v.x;
    acc[1] += w * v.y;
    acc[2] += w * v.z;
    acc[3] += w * v.w;
  }
  __device__ static type make(const float (&acc)[4]) { return {acc[0], acc[1], acc[2], acc[3]}; }
};

//! One warp pools one bag. The warp splits into groups of `lanes_per_row` lanes; each group
//! gathers every (32 / lanes_per_row)-th row of the bag, each lane owning Vec-wide column slices
//! (Chunks of them in registers), and the groups are summed with shuffles at the end. Small rows
//! (dim 32-64) thus keep the whole warp busy with several rows in flight. Unroll gives each group
//! Unroll independent row loads before the first add, hiding HBM latency.
//! Columns beyond Chunks slices per lane are handled by an outer loop that re-reads the ids.
template <int Vec, int Chunks, int Unroll, int BlockThreads>
__global__ void __launch_bounds__(BlockThreads) embedding_bag_kernel(embedding_bag_params p) {
  using vec = vec_of<Vec>;
  using vec_t = typename vec::type;
  constexpr int warps_per_block = BlockThreads / 32;
  const std::uint32_t bag = blockIdx.x * warps_per_block + threadIdx.x / 32;
  if (bag >= p.batch) return;
  const std::uint32_t lane = threadIdx.x % 32;
  const std::uint32_t width = p.lanes_per_row;
  const std::uint32_t group = lane / width, groups = 32 / width, sub = lane % width;

  // Offsets are unchecked device data: clamp, and treat end < begin as an empty bag.
  const std::int64_t n = p.num_ids;
  auto clamp = [n](std::int64_t v) { return v < 0 ? std::int64_t{0} : (v > n ? n : v); };
  const std::int64_t begin = clamp(p.offsets[bag]);
  std::int64_t end = bag + 1 < p.num_offsets ? clamp(p.offsets[bag + 1]) : n;
  if (end < begin) end = begin;
  const float scale = p.mean && end > begin ? 1.0f / static_cast<float>(end - begin) : 1.0f;
  float* out_row = p.out + static_cast<std::size_t>(bag) * p.out_stride;

  const std::uint32_t tile_columns = width * Vec * Chunks;
  for (std::uint32_t tile = 0; tile < p.dim; tile += tile_columns) {
    float acc[Chunks][Vec] = {};
    for (std::int64_t i0 = begin + group; i0 < end; i0 += static_cast<std::int64_t>(groups) * Unroll) {
      const float* rows[Unroll];
      float w[Unroll];
#pragma unroll
      for (int u = 0; u < Unroll; ++u) {
        const std::int64_t i = i0 + static_cast<std::int64_t>(u) * groups;
        rows[u] = nullptr;
        w[u] = 0.0f;
        if (i < end) {
          const id_type id = p.ids[i];
          if (static_cast<std::uint64_t>(id) < p.table_rows) {
            rows[u] = p.table + static_cast<std::size_t>(id) * p.table_stride;
            w[u] = p.weights != nullptr ? p.weights[i] : 1.0f;
          } else if (tile == 0 && sub == 0 && p.invalid_count != nullptr) {
            atomicAdd(p.invalid_count, 1ull);
          }
        }
      }
      vec_t values[Unroll][Chunks];
#pragma unroll
      for (int u = 0; u < Unroll; ++u)
#pragma unroll
        for (int c = 0; c < Chunks; ++c) {
          const std::uint32_t column = tile + (static_cast<std::uint32_t>(c) * width + sub) * Vec;
          values[u][c] = rows[u] != nullptr && column < p.dim ? __ldg(reinterpret_cast<const vec_t*>(rows[u] + column))
                                                               : vec_t{};
        }
#pragma unroll
      for (int u = 0; u < Unroll; ++u)
#pragma unroll
        for (int c = 0; c < Chunks; ++c) vec::add(acc[c], values[u][c], w[u]);
    }
    // Sum the groups: lanes with the same `sub` hold the same columns.
#pragma unroll
    for (int c = 0; c < Chunks; ++c)
#pragma unroll
      for (int v = 0; v < Vec; ++v) {
        for (std::uint32_t offset = width; offset < 32; offset *= 2)
          acc[c][v] += __shfl_xor_sync(0xffffffffu, acc[c][v], static_cast<int>(offset));
        acc[c][v] *= scale;
      }
    if (group == 0) {
#pragma unroll
      for (int c = 0; c < Chunks; ++c) {
        const std::uint32_t column = tile + (static_cast<std::uint32_t>(c) * width + sub) * Vec;
        if (column < p.dim) *reinterpret_cast<vec_t*>(out_row + column) = vec::make(acc[c]);
      }
    }
  }
}

// ---- Many tables in one launch, any storage ----

//! Row storage of a device table (cpu::storage's formats, byte for byte).
enum class row_format : std::uint32_t { fp32 = 0, fp16 = 1, int8_rowwise = 2 };

//! One table and its bags, as the multi-table kernel reads them.
struct table_bags {
  const unsigned char* data = nullptr;  // row r starts at data + r * row_bytes
  std::size_t rows = 0;
  std::size_t row_bytes = 0;
  std::uint32_t dim = 0;
  row_format format = row_format::fp32;
  std::uint32_t out_column = 0;  // first output column of this table
  const id_type* ids = nullptr;
  std::uint32_t num_ids = 0;
  const std::int64_t* offsets = nullptr;
  std::uint32_t num_offsets = 0;  // batch or batch + 1
  const float* weights = nullptr;  // nullable
};
static_assert(std::is_trivially_copyable_v<table_bags>);

//! Tables per launch: the descriptors travel as a kernel parameter (under the 4 KiB limit).
inline constexpr int max_tables_per_launch = 32;

struct multi_bag_params {
  table_bags tables[max_tables_per_launch];
  std::uint32_t num_tables = 0;
  std::uint32_t batch = 0;
  bool mean = false;
  float* out = nullptr;
  std::size_t out_stride = 0;
  unsigned long long* invalid_count = nullptr;  // nullable
};
static_assert(std::is_trivially_copyable_v<multi_bag_params>);
static_assert(sizeof(multi_bag_params) <= 4000, "kernel parameters must stay under 4 KiB");

//! Weighted value of column c of a row (fp32 / fp16: weight * value; int8: math::int8_term with
//! the pre-weighted scale and bias), the per-element formula of math::accumulate_row*.
__device__ inline float bag_term(row_format format, const unsigned char* row, std::uint32_t c, float weight,
                                 float weighted_scale, float weighted_bias) {
  switch (format) {
    case row_format::fp16:
      return weight * math::half_to_float(__ldg(reinterpret_cast<const unsigned short*>(row) + c));
    case row_format::int8_rowwise:
      return math::int8_term(weighted_scale, weighted_bias, __ldg(row + c));
    case row_format::fp32:
    default:
      return weight * __ldg(reinterpret_cast<const float*>(row) + c);
  }
}

//! One warp per (bag, table): warp w pools bag w / num_tables of table w % num_tables (adjacent
//! warps fill adjacent column ranges of one output row). Lane l owns columns l, l + 32, ... of a
//! tile of 32 * Chunks columns; wider rows loop over tiles. Offsets and ids get the defined
//! results of the fp32 kernel (clamped offsets, invalid ids pool as zero rows and are counted).
template <int Chunks, int BlockThreads>
__global__ void __launch_bounds__(BlockThreads) multi_table_bag_kernel(const __grid_constant__ multi_bag_params p) {
  constexpr int warps_per_block = BlockThreads / 32;
  const std::size_t warp = static_cast<std::size_t>(blockIdx.x) * warps_per_block + threadIdx.x / 32;
  if (warp >= static_cast<std::size_t>(p.batch) * p.num_tables) return;
  const std::uint32_t bag = static_cast<std::uint32_t>(warp / p.num_tables);
  const table_bags& t = p.tables[warp % p.num_tables];
  const std::uint32_t lane = threadIdx.x % 32;
  const std::int64_t n = t.num_ids;
  auto clamp = [n](std::int64_t v) { return v < 0 ? std::int64_t{0} : (v > n ? n : v); };
  const std::int64_t begin = bag < t.num_offsets ? clamp(t.offsets[bag]) : n;
  std::int64_t end = bag + 1 < t.num_offsets ? clamp(t.offsets[bag + 1]) : n;
  if (end < begin) end = begin;
  const float scale = p.mean && end > begin ? 1.0f / static_cast<float>(end - begin) : 1.0f;
  float* out_row = p.out + static_cast<std::size_t>(bag) * p.out_stride + t.out_column;
  for (std::uint32_t tile = 0; tile < t.dim; tile += 32u * Chunks) {
    float acc[Chunks] = {};
    for (std::int64_t i = begin; i < end; ++i) {
      const id_type id = t.ids[i];
      if (static_cast<std::uint64_t>(id) >= t.rows) {
        if (tile == 0 && lane == 0 && p.invalid_count != nullptr) atomicAdd(p.invalid_count, 1ull);
        continue;  // a zero row (mean still counts it)
      }
      const float weight = t.weights != nullptr ? t.weights[i] : 1.0f;
      const unsigned char* row = t.data + static_cast<std::size_t>(id) * t.row_bytes;
      float weighted_scale = 0.0f, weighted_bias = 0.0f;
      if (t.format == row_format::int8_rowwise) {
        float s = 0.0f, b = 0.0f;
        math::int8_row_scale_bias(row, t.dim, s, b);
        weighted_scale = weight * s;
        weighted_bias = weight * b;
      }
#pragma unroll
      for (int c = 0; c < Chunks; ++c) {
        const std::uint32_t column = tile + static_cast<std::uint32_t>(c) * 32u + lane;
        if (column < t.dim) acc[c] += bag_term(t.format, row, column, weight, weighted_scale, weighted_bias);
      }
    }
#pragma unroll
    for (int c = 0; c < Chunks; ++c) {
      const std::uint32_t column = tile + static_cast<std::uint32_t>(c) * 32u + lane;
      if (column < t.dim) out_row[column] = acc[c] * scale;
    }
  }
}

}  // namespace kernels
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
