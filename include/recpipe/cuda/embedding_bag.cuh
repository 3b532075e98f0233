// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: embedding-bag lookups with sum/mean pooling over an fp32 table.
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/detail/checks.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/dispatch/embedding_bag.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <limits>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>

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

RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
