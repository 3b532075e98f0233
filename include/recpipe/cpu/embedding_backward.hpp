// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: backward of the pooled embedding-bag lookup (sparse row gradients and
// per-sample-weight gradients).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/dense_backward.hpp>
#include <recpipe/cpu/workspace.hpp>
#include <recpipe/cpu/embedding.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! @brief The gradient of one embedding table for a batch: only the rows the batch touched.
//!
//! ids holds each distinct id once, in the order the batch first used it (deterministic, so the
//! optimizer updates rows in a reproducible order); rows[i] is dL/d(row ids[i]). Reuse one object
//! across batches: its vectors keep their allocation, so steady-state training does not allocate.
struct sparse_gradient {
  std::vector<id_type> ids;
  matrix<float> rows;  //!< [ids.size(), dim]

  //! Scratch of embedding_bag_backward (id -> slot hash table, slot of each input position).
  std::vector<id_type> table_keys;
  std::vector<std::size_t> table_slots;
  std::vector<std::size_t> position_slots;

  std::size_t size() const { return ids.size(); }
  void clear() {
    ids.clear();
    rows.resize(0, rows.cols());
  }
};

namespace impl {
// End of the ids that belong to some bag (ids past it are ignored by the forward pass too).
inline std::size_t bag_ids_end(std::span<const id_type> offsets, std::size_t ids, std::size_t batch) {
  if (batch == 0) return 0;
  return offsets.size() == batch ? ids : static_cast<std::size_t>(offsets[batch]);
}
inline std::size_t bag_end(std::span<const id_type> offsets, std::size_t b, std::size_t ids) {
  return b + 1 < offsets.size() ? static_cast<std::size_t>(offsets[b + 1]) : ids;
}

// Assigns each distinct id among ids[0, count) a slot in first-seen order: out.ids, and
// out.position_slots[i] = slot of ids[i]. An open-addressing table (linear probing, at most half
// full) in out's own vectors rather than std::unordered_map: no node allocation per id, so a
// reused sparse_gradient stops allocating, and probing a flat array is cache friendly.
inline void assign_slots(std::span<const id_type> ids, std::size_t count, sparse_gradient& out) {
  std::size_t capacity = 16;
  while (capacity < 2 * count) capacity *= 2;
  constexpr std::size_t empty = std::numeric_limits<std::size_t>::max();
  out.table_keys.resize(capacity);
  out.table_slots.assign(capacity, empty);
  out.position_slots.resize(count);
  out.ids.clear();
  const std::size_t mask = capacity - 1;
  int bits = 0;
  while ((std::size_t{1} << bits) < capacity) ++bits;
  for (std::size_t i = 0; i < count; ++i) {
    const id_type id = ids[i];
    // Fibonacci hashing: sequential ids spread over the table.
    std::size_t h = static_cast<std::size_t>((static_cast<std::uint64_t>(id) * 0x9E3779B97F4A7C15ull) >> (64 - bits));
    while (out.table_slots[h] != empty && out.table_keys[h] != id) h = (h + 1) & mask;
    if (out.table_slots[h] == empty) {
      out.table_keys[h] = id;
      out.table_slots[h] = out.ids.size();
      out.ids.push_back(id);
    }
    out.position_slots[i] = out.table_slots[h];
  }
}
}  // namespace impl

//! @brief Backward of cpu::embedding_bag with respect to the table: the gradient of every row the
//! batch used, as PyTorch's sparse embedding_bag gradient coalesced.
//!
//! Same bag semantics as the forward: bag b holds ids[offsets[b] .. end_b) (offsets with batch or
//! batch + 1 entries), each id's contribution is scaled by its per-sample weight (if any) and,
//! for mean, by 1 / (ids in the bag); an empty bag contributes nothing. rows[slot of ids[i]] +=
//! weight_i * scale_b * dout[b]. Ids are keys only (no table here), so any value is accepted; the
//! table the gradient is applied to checks them. Ids outside every bag get no row.
//! @param per_sample_weights  empty, or one weight per id
//! @param dout                [batch, dim], the gradient of the pooled output
//! @param out                 overwritten (ids, rows [unique ids, dim]); reuse it across calls
//! @throws recpipe::error for bad offsets or a weights size other than 0 or ids.size().
//! @code
//! recpipe::cpu::sparse_gradient grad;
//! recpipe::cpu::embedding_bag_backward(ids, offsets, {}, recpipe::cpu::pooling::mean, dout.view(), grad);
//! // grad.ids[i] is a row id, grad.rows.row(i) its gradient
//! @endcode
inline void embedding_bag_backward(std::span<const id_type> ids, std::span<const id_type> offsets,
                                   std::span<const float> per_sample_weights, pooling mode,
                                   matrix_view<const float> dout, sparse_gradient& out) {
  constexpr const char* where = "cpu::embedding_bag_backward";
  impl::check_view(where, "dout", dout);
  const std::size_t batch = dout.rows(), dim = dout.cols();
  impl::check_offsets(where, offsets, ids.size(), batch);
  if (!per_sample_weights.empty() && per_sample_weights.size() != ids.size())
    detail::fail(where, ": per_sample_weights has ", per_sample_weights.size(), " entries for ", ids.size(),
                 " ids (need 0 or ", ids.size(), ")");
  const std::size_t used = impl::bag_ids_end(offsets, ids.size(), batch);
  impl::assign_slots(ids, used, out);
  out.rows.resize(out.ids.size(), dim);
  std::fill(out.rows.values().begin(), out.rows.values().end(), 0.0f);
  for (std::size_t b = 0; b < batch; ++b) {
    const auto begin = static_cast<std::size_t>(offsets[b]);
    const std::size_t end = impl::bag_end(offsets, b, ids.size());
    if (end == begin) continue;
    const float scale = mode == pooling::mean ? 1.0f / static_cast<float>(end - begin) : 1.0f;
    const float* g = dout.data() + b * dout.stride();
    for (std::size_t i = begin; i < end; ++i) {
      const float w = per_sample_weights.empty() ? scale : per_sample_weights[i] * scale;
      float* row = out.rows.data() + out.position_slots[i] * dim;
      for (std::size_t c = 0; c < dim; ++c) row[c] += w * g[c];
    }
  }
}

//! @brief Backward of cpu::embedding_bags (several tables pooled into one [batch, sum of dims]
//! output): out[t] receives table t's sparse gradient from columns [dim_0 + ... + dim_{t-1},
//! + dim_t) of dout, with each input's own per-id weights.
//! @param inputs  one per table (ids, offsets, weights), as given to embedding_bags
//! @param dims    each table's dim, in the same order
//! @param out     one per table; each is overwritten (reuse them across calls)
//! @throws recpipe::error if the counts differ, the dims do not add up to dout.cols(), or an
//! input is invalid (the message names its index).
//! @code
//! std::vector<recpipe::cpu::sparse_gradient> grads(inputs.size());
//! recpipe::cpu::embedding_bags_backward(inputs, dims, recpipe::cpu::pooling::sum, dout.view(), grads);
//! @endcode
inline void embedding_bags_backward(std::span<const bag_input> inputs, std::span<const std::size_t> dims,
                                    pooling mode, matrix_view<const float> dout, std::span<sparse_gradient> out) {
  constexpr const char* where = "cpu::embedding_bags_backward";
  if (inputs.size() != dims.size() || inputs.size() != out.size())
    detail::fail(where, ": ", inputs.size(), " inputs, ", dims.size(), " dims and ", out.size(),
                 " gradients (need one of each per table)");
  impl::check_view(where, "dout", dout);
  std::size_t total = 0;
  for (std::size_t dim : dims) total += dim;
  if (total != dout.cols())
    detail::fail(where, ": the tables' dims add up to ", total, " but dout has ", dout.cols(), " columns");
  std::size_t column = 0;
  for (std::size_t t = 0; t < inputs.size(); ++t) {
    try {
      embedding_bag_backward(inputs[t].ids, inputs[t].offsets, inputs[t].weights, mode,
                             {dout.data() + column, dout.rows(), dims[t], dout.stride()}, out[t]);
    } catch (const error& e) {
      detail::fail(where, ": inputs[", t, "]: ", e.what() + std::strlen("recpipe: "));
    }
    column += dims[t];
  }
}

//! @brief Backward of cpu::embedding_bag with respect to its per-sample weights, as the
//! per_sample_weights gradient of torch.nn.functional.embedding_bag: dweights[i] =
//! <row ids[i], dout[b]> (times 1 / bag size for mean) for id i in bag b; 0 for ids in no bag.
//!
//! @param table     the table the forward pass read (any storage; rows are decoded to float)
//! @param dout      [batch, dim]
//! @param dweights  [ids.size()], overwritten
//! @throws recpipe::error for bad offsets, an id outside [0, rows) (naming its position), or a
//! wrong dout / dweights shape.
//! @code
//! recpipe::cpu::embedding_bag_weights_backward(table.view(), ids, offsets, recpipe::cpu::pooling::sum,
//!                                              dout.view(), dweights);
//! @endcode
inline void embedding_bag_weights_backward(const embedding_table_view& table, std::span<const id_type> ids,
                                           std::span<const id_type> offsets, pooling mode,
                                           matrix_view<const float> dout, std::span<float> dweights,
                                           workspace& ws = workspace::for_this_thread()) {
  constexpr const char* where = "cpu::embedding_bag_weights_backward";
  impl::check_view(where, "dout", dout);
  if (dout.cols() != table.dim())
    detail::fail(where, ": dout has ", dout.cols(), " columns but the table's dim is ", table.dim());
  const std::size_t batch = dout.rows(), dim = table.dim();
  impl::check_offsets(where, offsets, ids.size(), batch);
  if (dweights.size() != ids.size())
    detail::fail(where, ": dweights holds ", dweights.size(), " values for ", ids.size(), " ids");
  std::fill(dweights.begin(), dweights.end(), 0.0f);
  const workspace::frame frame(ws);
  float* row = ws.take<float>(dim).data();  // one decoded row
  for (std::size_t b = 0; b < batch; ++b) {
    const auto begin = static_cast<std::size_t>(offsets[b]);
    const std::size_t end = impl::bag_end(offsets, b, ids.size());
    if (end == begin) continue;
    const float scale = mode == pooling::mean ? 1.0f / static_cast<float>(end - begin) : 1.0f;
    const float* g = dout.data() + b * dout.stride();
    for (std::size_t i = begin; i < end; ++i) {
      const id_type id = ids[i];
      if (static_cast<std::uint64_t>(id) >= table.rows()) impl::bad_id(where, i, id, table.rows());
      std::fill_n(row, dim, 0.0f);
      table.accumulate(static_cast<std::size_t>(id), 1.0f, row);
      float dot = 0.0f;
      for (std::size_t c = 0; c < dim; ++c) dot += row[c] * g[c];
      dweights[i] = dot * scale;
    }
  }
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
