// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: embedding-bag lookups with sum/mean pooling: one fp32 table, or many
// fp32 / fp16 / int8 row-wise tables in one launch.
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/detail/checks.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/dispatch/embedding_bag.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/math/embedding.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN

//! How a bag's rows are combined (the same meaning as cpu::pooling).
enum class pooling {
  sum,  //!< sum of (weighted) rows
  mean  //!< sum divided by the number of ids in the bag (an empty bag gives zeros)
};

//! @brief Pooled lookups over ragged bags on the GPU, with the semantics of cpu::embedding_bag
//! (and `torch.nn.functional.embedding_bag`): out[b] = pool over i in bag b of weights[i] * table[ids[i]].
//!
//! Bag b holds ids[offsets[b] .. end_b), end_b = offsets[b+1], or ids.size() for the last bag when
//! offsets has batch entries (PyTorch's default); offsets may have batch + 1 entries
//! (include_last_offset). The host cannot inspect device ids and offsets without a sync, so where
//! cpu::embedding_bag throws, this gives a defined result instead:
//! - each offset is clamped into [0, ids.size()], and a bag whose end is before its begin is empty;
//! - an id outside [0, table.rows()) contributes a zero row (mean still counts it) and adds 1 to
//!   `*invalid_count` when that counter is given, so the caller can reject the batch after its sync.
//! With valid input the result matches cpu::embedding_bag up to float summation order.
//!
//! @param table   [rows, dim] device fp32 table, any stride >= dim.
//! @param ids     device ids (int64).
//! @param offsets batch or batch + 1 device offsets.
//! @param weights empty, or one device weight per id.
//! @param mode    pooling::sum or pooling::mean.
//! @param out     [batch, dim] device output, any stride >= dim; every row is written.
//! @param invalid_count  empty, or one device counter that is incremented (not reset) per invalid id.
//! @return the launch's cudaError_t; never synchronises.
//! @throws recpipe::error on shape mismatches or null data, before touching the device.
//!
//! GPU notes: one warp per bag; rows narrower than 128 floats share the warp between several ids
//! (dim 64: two rows at a time per warp, four loads in flight per lane group); float4 loads when
//! dim, strides and pointers allow. Memory-bound: dim * 4 bytes read per id.
//! @code
//! recpipe::cuda::embedding_bag(backend, recpipe::matrix_view<const float>(d_table.data(), rows, 64),
//!                              d_ids.const_span(), d_offsets.const_span(), {}, recpipe::cuda::pooling::sum,
//!                              recpipe::matrix_view<float>(d_out.data(), batch, 64));
//! @endcode
inline cudaError_t embedding_bag(const cuda_backend& backend, matrix_view<const float> table,
                                 device_span<const id_type> ids, device_span<const std::int64_t> offsets,
                                 device_span<const float> weights, pooling mode, matrix_view<float> out,
                                 device_span<unsigned long long> invalid_count = {}) {
  constexpr const char* where = "cuda::embedding_bag";
  cuda::detail::check_device_matrix(where, "table", table);
  cuda::detail::check_device_matrix(where, "out", out);
  cuda::detail::check_device_span(where, "ids", ids);
  cuda::detail::check_device_span(where, "offsets", offsets);
  cuda::detail::check_device_span(where, "weights", weights);
  cuda::detail::check_device_span(where, "invalid_count", invalid_count);
  constexpr std::size_t int_max = static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max());
  if (out.cols() != table.cols())
    ::recpipe::detail::fail(where, ": out has ", out.cols(), " columns but the table's dim is ", table.cols());
  if (table.cols() > int_max) ::recpipe::detail::fail(where, ": dim ", table.cols(), " is larger than ", int_max);
  const std::size_t batch = out.rows();
  if (batch > int_max) ::recpipe::detail::fail(where, ": batch ", batch, " is larger than ", int_max);
  if (ids.size() > int_max) ::recpipe::detail::fail(where, ": ", ids.size(), " ids; at most ", int_max, " are supported");
  if (offsets.size() != batch && offsets.size() != batch + 1)
    ::recpipe::detail::fail(where, ": offsets has ", offsets.size(), " entries for ", batch, " bags (need ", batch,
                            " or ", batch + 1, ")");
  if (!weights.empty() && weights.size() != ids.size())
    ::recpipe::detail::fail(where, ": weights has ", weights.size(), " entries for ", ids.size(), " ids (need 0 or ",
                            ids.size(), ")");
  if (mode != pooling::sum && mode != pooling::mean)
    ::recpipe::detail::fail(where, ": mode ", static_cast<int>(mode), " is not pooling::sum or pooling::mean");
  kernels::embedding_bag_params p;
  p.table = table.data();
  p.table_rows = table.rows();
  p.table_stride = table.rows() > 1 ? table.stride() : table.cols();
  p.dim = static_cast<std::uint32_t>(table.cols());
  p.ids = ids.data();
  p.num_ids = static_cast<std::uint32_t>(ids.size());
  p.offsets = offsets.data();
  p.num_offsets = static_cast<std::uint32_t>(offsets.size());
  p.weights = weights.empty() ? nullptr : weights.data();
  p.mean = mode == pooling::mean;
  p.out = out.data();
  p.out_stride = out.rows() > 1 ? out.stride() : out.cols();
  p.batch = static_cast<std::uint32_t>(batch);
  p.invalid_count = invalid_count.empty() ? nullptr : invalid_count.data();
  return dispatch::embedding_bag(backend, p);
}

//! @brief A device embedding table in one of cpu::storage's formats (same bytes, so a table
//! built on the host with cpu::embedding_table can be copied to the device as is).
//! @code
//! auto t = recpipe::cuda::device_table::int8_rowwise(d_bytes.data(), rows, dim);  // rows x (dim + 8) bytes
//! @endcode
struct device_table {
  kernels::row_format format = kernels::row_format::fp32;
  const void* data = nullptr;
  std::size_t rows = 0, dim = 0, row_bytes = 0;

  //! fp32 rows, any stride >= dim.
  static device_table fp32(matrix_view<const float> rows) {
    cuda::detail::check_device_matrix("cuda::device_table::fp32", "rows", rows);
    return {kernels::row_format::fp32, rows.data(), rows.rows(), rows.cols(),
            (rows.rows() > 1 ? rows.stride() : rows.cols()) * sizeof(float)};
  }
  //! `rows` contiguous rows of `dim` binary16 bit patterns.
  static device_table fp16(const std::uint16_t* data, std::size_t rows, std::size_t dim) {
    check("fp16", data, rows, dim);
    return {kernels::row_format::fp16, data, rows, dim, dim * sizeof(std::uint16_t)};
  }
  //! `rows` contiguous int8 row-wise rows: dim codes, then float scale and float bias (dim + 8 bytes).
  static device_table int8_rowwise(const std::uint8_t* data, std::size_t rows, std::size_t dim) {
    check("int8_rowwise", data, rows, dim);
    return {kernels::row_format::int8_rowwise, data, rows, dim, dim + math::int8_row_tail_bytes};
  }

 private:
  static void check(const char* what, const void* data, std::size_t rows, std::size_t dim) {
    if (data == nullptr && rows * dim != 0)
      ::recpipe::detail::fail("cuda::device_table::", what, ": data is null for a ", rows, " x ", dim, " table");
  }
};

//! The bags of one table: device ids, batch or batch + 1 offsets, optional per-id weights.
struct device_bags {
  device_span<const id_type> ids;
  device_span<const std::int64_t> offsets;
  device_span<const float> weights = {};
};

//! @brief cpu::embedding_bags on the GPU: table t's bags go to columns [dim_0 + ... + dim_{t-1},
//! + dim_t) of out [batch, sum of dims]; fp32, fp16 and int8 row-wise tables may be mixed, and up
//! to 32 tables go in one launch (one warp per bag and table; more tables take more launches).
//! Each element is math's formula (half_to_float, int8_term with the row's scale and bias).
//! Offsets and ids get the defined results of embedding_bag (clamped offsets; an id outside
//! [0, rows) pools as a zero row, mean still counts it, and `*invalid_count` is incremented).
//! @param out device [batch, sum of dims], any stride >= its columns; every element is written.
//! @return the first launch error; never synchronises.
//! @throws recpipe::error if tables and inputs differ in count, the dims do not add up to
//!         out.cols(), or an input's sizes are wrong (the message names its index).
//! GPU notes: lanes read consecutive columns (coalesced 2-byte / 1-byte loads for fp16 / int8;
//! not yet vectorised like the fp32 single-table kernel).
//! @code
//! std::vector<recpipe::cuda::device_table> tables = {t0, t1};
//! std::vector<recpipe::cuda::device_bags> inputs = {{ids0, offsets0}, {ids1, offsets1}};
//! recpipe::cuda::embedding_bags(backend, tables, inputs, recpipe::cuda::pooling::sum, out);
//! @endcode
inline cudaError_t embedding_bags(const cuda_backend& backend, std::span<const device_table> tables,
                                  std::span<const device_bags> inputs, pooling mode, matrix_view<float> out,
                                  device_span<unsigned long long> invalid_count = {}) {
  constexpr const char* where = "cuda::embedding_bags";
  if (tables.size() != inputs.size())
    ::recpipe::detail::fail(where, ": ", tables.size(), " tables but ", inputs.size(), " inputs");
  cuda::detail::check_device_matrix(where, "out", out);
  cuda::detail::check_device_span(where, "invalid_count", invalid_count);
  if (mode != pooling::sum && mode != pooling::mean)
    ::recpipe::detail::fail(where, ": mode ", static_cast<int>(mode), " is not pooling::sum or pooling::mean");
  constexpr std::size_t int_max = static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max());
  const std::size_t batch = out.rows();
  if (batch > int_max) ::recpipe::detail::fail(where, ": batch ", batch, " is larger than ", int_max);
  std::size_t total = 0;
  for (const auto& t : tables) total += t.dim;
  if (total != out.cols())
    ::recpipe::detail::fail(where, ": the tables' dims add up to ", total, " but out has ", out.cols(), " columns");
  if (total > int_max) ::recpipe::detail::fail(where, ": ", total, " output columns; at most ", int_max);
  for (std::size_t t = 0; t < inputs.size(); ++t) {
    const device_bags& in = inputs[t];
    cuda::detail::check_device_span(where, "inputs[t].ids", in.ids);
    cuda::detail::check_device_span(where, "inputs[t].offsets", in.offsets);
    cuda::detail::check_device_span(where, "inputs[t].weights", in.weights);
    if (tables[t].data == nullptr && tables[t].rows * tables[t].dim != 0)
      ::recpipe::detail::fail(where, ": tables[", t, "] has no data");
    if (in.ids.size() > int_max)
      ::recpipe::detail::fail(where, ": inputs[", t, "] has ", in.ids.size(), " ids; at most ", int_max);
    if (in.offsets.size() != batch && in.offsets.size() != batch + 1)
      ::recpipe::detail::fail(where, ": inputs[", t, "].offsets has ", in.offsets.size(), " entries for ", batch,
                              " bags (need ", batch, " or ", batch + 1, ")");
    if (!in.weights.empty() && in.weights.size() != in.ids.size())
      ::recpipe::detail::fail(where, ": inputs[", t, "].weights has ", in.weights.size(), " entries for ",
                              in.ids.size(), " ids (need 0 or ", in.ids.size(), ")");
  }
  kernels::multi_bag_params p;
  p.batch = static_cast<std::uint32_t>(batch);
  p.mean = mode == pooling::mean;
  p.out = out.data();
  p.out_stride = out.rows() > 1 ? out.stride() : out.cols();
  p.invalid_count = invalid_count.empty() ? nullptr : invalid_count.data();
  std::size_t column = 0;
  for (std::size_t first = 0; first < tables.size(); first += kernels::max_tables_per_launch) {
    p.num_tables = 0;
    for (std::size_t t = first; t < tables.size() && t < first + kernels::max_tables_per_launch; ++t) {
      kernels::table_bags& d = p.tables[p.num_tables++];
      d.data = static_cast<const unsigned char*>(tables[t].data);
      d.rows = tables[t].rows;
      d.row_bytes = tables[t].row_bytes;
      d.dim = static_cast<std::uint32_t>(tables[t].dim);
      d.format = tables[t].format;
      d.out_column = static_cast<std::uint32_t>(column);
      d.ids = inputs[t].ids.data();
      d.num_ids = static_cast<std::uint32_t>(inputs[t].ids.size());
      d.offsets = inputs[t].offsets.data();
      d.num_offsets = static_cast<std::uint32_t>(inputs[t].offsets.size());
      d.weights = inputs[t].weights.empty() ? nullptr : inputs[t].weights.data();
      column += tables[t].dim;
    }
    RECPIPE_CUDA_RETURN_IF_ERROR(dispatch::embedding_bags(backend, p));
  }
  return cudaSuccess;
}

RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
