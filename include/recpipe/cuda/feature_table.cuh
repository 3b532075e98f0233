// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA layer: a feature table whose rows live in device memory, and the `lookup` stage
// that reads it on the GPU inside a cuda_backend run.
//
// Why: a lookup of item features after a device retrieve / filter / top-k would otherwise run on
// the host, and its keys (col::candidates) exist only on the device: one synchronisation to bring
// them back, then the looked-up rows go up again for the scorer. With the rows on the device the
// lookup is one kernel between the two, and the run still synchronises once, at its end.
// The table is immutable: serving while training publishes a new one through a
// recpipe::slot<cuda::device_feature_table<...>>, which `lookup(slot)` reads per run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/feature_table_host.hpp>
#include <recpipe/cuda/kernels/lookup.cuh>
#include <recpipe/cuda/stages.cuh>
#include <recpipe/stages/lookup.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda {

//! @brief Features keyed by id with their rows in device memory: the store of a `lookup` that runs
//! on the GPU in a cuda_backend run, and on the host (from its host rows) in a cpu_backend run, so
//! the same pipeline runs on both.
//!
//! `Key`: a per-request id column (col::user_id) or col::candidates; `Value`: a float vector column
//! (per_request_vector / per_candidate_vector) or a float single-value column (per_request /
//! per_candidate). Built from ids and rows (any order), or as a snapshot of a feature_store; the
//! ids are sorted (cuda::host_feature_table, which also checks the input), and the sorted ids and
//! rows are copied into device memory from `backend`'s pool once, at construction, which waits for
//! the copies (one synchronisation). `backend` must outlive the table. Immutable afterwards: any
//! number of runs, on any backend sharing the device, may read it at once.
//! Unknown ids: zero rows under on_missing::use_default (flagged by `.flag_missing()`), or a
//! recpipe::error naming the first unknown id under on_missing::fail.
//! Memory: size() ids (8 bytes each) plus size() * dim() floats on the device, the same on the host.
//! @throws recpipe::error when ids and rows disagree in count, a row has the wrong width, an id is
//! negative or appears twice, or a row holds NaN / inf (see host_feature_table); cuda_error when
//! device memory runs out.
//! @code
//! recpipe::cuda::cuda_backend backend;
//! recpipe::cuda::device_feature_table<recpipe::col::candidates, recpipe::col::item_embedding> items(
//!     backend, item_ids, item_rows.view());
//! recpipe::cuda::exact_index index(backend, item_ids, item_rows.view());
//! auto ranked = (recpipe::lookup(user_vectors) >> recpipe::retrieve<recpipe::col::user_embedding>(index, 300) >>
//!                recpipe::lookup(items) >> recpipe::score(recpipe::dot_product_scorer<>{}) >> recpipe::top_k(10))
//!                   .run(requests, backend);  // the item lookup runs on the device: no extra sync
//! @endcode
template <column Key, column Value>
class device_feature_table {
 public:
  using host_table = host_feature_table<Key, Value>;
  using key_column = Key;
  using value_column = Value;
  using value_type = typename host_table::value_type;
  static constexpr bool holds_vectors = host_table::holds_vectors;
  static constexpr bool holds_lists = false;

  //! Rows `rows.row(i)` belong to `ids[i]`.
  device_feature_table(const cuda_backend& backend, std::span<const id_type> ids, matrix_view<const float> rows,
                       on_missing missing = on_missing::use_default)
      : host_(ids, rows, missing) {
    upload(backend);
  }
  //! One value per id (single-value columns).
  device_feature_table(const cuda_backend& backend, std::span<const id_type> ids, std::span<const float> values,
                       on_missing missing = on_missing::use_default)
      : host_(ids, values, missing) {
    upload(backend);
  }
  //! A snapshot of `store` (every id it holds now, its missing-id policy).
  device_feature_table(const cuda_backend& backend, const feature_store<Key, Value>& store) : host_(store) {
    upload(backend);
  }

  // ----- the lookup store interface (host rows; what a cpu_backend run reads) -----
  std::size_t dim() const noexcept { return host_.dim(); }
  std::size_t size() const noexcept { return host_.size(); }
  on_missing missing_policy() const noexcept { return host_.missing_policy(); }
  bool contains(id_type id) const noexcept { return host_.contains(id); }
  std::span<const float> find(id_type id) const noexcept { return host_.find(id); }
  std::span<const float> find_or_apply_policy(id_type id) const { return host_.find_or_apply_policy(id); }
  template <class Visit>
  void read_or_apply_policy(id_type id, Visit&& visit) const {
    host_.read_or_apply_policy(id, std::forward<Visit>(visit));
  }
  const host_table& host() const noexcept { return host_; }

  // ----- device data -----
  //! The sorted ids on the device.
  device_span<const id_type> device_ids() const noexcept { return ids_.const_span(); }
  //! The rows on the device, size() x dim(), in the order of device_ids().
  matrix_view<const float> device_rows() const noexcept { return {rows_.data(), host_.size(), host_.dim()}; }

  //! @brief Enqueues the lookup of `keys` (device ids) on `backend`'s stream: row i of `out`
  //! (keys.size() x dim() floats, dense) is the row of keys[i], or zeros when the table does not
  //! hold it; `flags` (empty, or keys.size() values) gets 1 for those, else 0; `misses` (null, or
  //! one device lookup_misses initialised to its defaults) counts them and records the first.
  //! The missing-id policy is the caller's to apply (the lookup stage does). No synchronisation.
  //! @return the launch's cudaError_t. @throws recpipe::error when `out` or `flags` is too small.
  //! @code
  //! RECPIPE_CUDA_TRY(items.gather(backend, d_keys.const_span(), d_rows.span()));
  //! @endcode
  cudaError_t gather(const cuda_backend& backend, device_span<const id_type> keys, device_span<float> out,
                     device_span<std::uint8_t> flags = {}, lookup_misses* misses = nullptr) const {
    const std::size_t n = keys.size(), d = host_.dim();
    if (out.size() < n * d)
      ::recpipe::detail::fail("cuda::device_feature_table<", Value::name, ">::gather: out holds ", out.size(),
                              " floats but ", n, " keys x dim ", d, " need ", n * d);
    if (!flags.empty() && flags.size() < n)
      ::recpipe::detail::fail("cuda::device_feature_table<", Value::name, ">::gather: flags hold ", flags.size(),
                              " values but there are ", n, " keys");
    if (n == 0) return cudaSuccess;
    constexpr int block = 256;
    const unsigned lanes = lookup_lanes(d);
    const std::uint64_t threads = static_cast<std::uint64_t>(n) * lanes;
    const auto blocks = static_cast<unsigned>((threads + block - 1) / block);
    kernels::lookup_rows_kernel<block><<<blocks, block, 0, backend.stream()>>>(
        keys.data(), n, ids_.data(), host_.size(), rows_.data(), static_cast<std::uint32_t>(d), lanes, out.data(),
        flags.empty() ? nullptr : flags.data(), misses);
    const cudaError_t launched = cudaGetLastError();
    if (launched != cudaSuccess || misses == nullptr) return launched;
    kernels::first_missing_id_kernel<<<1, 1, 0, backend.stream()>>>(keys.data(), misses);
    return cudaGetLastError();
  }

 private:
  void upload(const cuda_backend& backend) {
    ids_ = to_device(backend, host_.ids());
    rows_ = to_device(backend, host_.values());
    // The copies come from pageable host memory that outlives them; waiting here makes the table
    // usable from any stream at once.
    if (!host_.ids().empty()) backend.synchronize();
  }

  host_table host_;
  device_buffer<id_type> ids_;
  device_buffer<float> rows_;
};

namespace detail {
template <class K, class V, class Ref, class Flag>
inline constexpr bool device_stage<lookup_stage<device_feature_table<K, V>, Ref, Flag>> = true;
}  // namespace detail

}  // namespace cuda

//! @brief `lookup(device_feature_table)` on the GPU: the keys (a per-request id column, or the
//! candidates, uploaded only when the device has no copy) are looked up in one kernel (a binary
//! search of each key in the table's sorted device ids, then its row or zeros), which writes the
//! value column, and with `.flag_missing()` the flag column, on the device. Same results as the
//! CPU stage over the table's host rows.
//! Synchronisation: none under on_missing::use_default. Under on_missing::fail, keys current on
//! the host are checked there before any device work (no synchronisation); keys only the device
//! holds (e.g. candidates of a device retrieve) are counted by the kernel and the host waits once
//! for the count, then throws recpipe::error naming the first unknown id in batch order.
template <class K, class V, class Ref, class Flag>
struct stage_impl<lookup_stage<cuda::device_feature_table<K, V>, Ref, Flag>, cuda::cuda_backend> {
  using table_type = cuda::device_feature_table<K, V>;
  static constexpr bool flags = !std::is_void_v<Flag>;

  template <class Batch>
  static auto run(const lookup_stage<table_type, Ref, Flag>& stage, Batch&& batch, cuda::cuda_backend& backend) {
    const table_type& table = stage.store();
    cuda::run_columns& columns = backend.columns();
    std::span<const id_type> host_keys;
    if constexpr (std::is_same_v<K, col::candidates>) {
      const auto& ids = batch.template get<col::candidates>().values();
      host_keys = {ids.data(), ids.size()};
    } else {
      const auto& ids = batch.template get<K>();
      host_keys = {ids.data(), ids.size()};
    }
    const std::size_t n = host_keys.size();
    const bool strict = table.missing_policy() == on_missing::fail;
    const bool keys_on_host = columns.current_on_host<K>();
    if (strict && keys_on_host)  // the host has the keys: no device round trip to learn of a miss
      for (const id_type key : host_keys)
        if (!table.contains(key)) table_type::host_table::missing_id(key);

    column_storage_t<V> values;
    if constexpr (table_type::holds_vectors)
      values.resize(n, table.dim());
    else
      values.assign(n, 0.0f);
    auto out = [&] {
      if constexpr (flags)
        return std::forward<Batch>(batch).template with<V>(std::move(values)).template with<Flag>(
            std::vector<std::uint8_t>(n));
      else
        return std::forward<Batch>(batch).template with<V>(std::move(values));
    }();
    if (n == 0) return out;  // no CUDA call for no keys

    const auto keys = columns.read<K>(out);
    const auto d_values = columns.write<V>(out);
    cuda::device_span<std::uint8_t> d_flags;
    if constexpr (flags) {
      const auto written = columns.write<Flag>(out);
      d_flags = {written.data, written.count};
    }
    cuda::lookup_misses* d_misses = nullptr;
    if (strict && !keys_on_host) {
      const cuda::lookup_misses none{};
      d_misses = const_cast<cuda::lookup_misses*>(
          columns.upload_scratch(std::span<const cuda::lookup_misses>(&none, 1)));
    }
    RECPIPE_CUDA_TRY(table.gather(backend, cuda::device_span<const id_type>(keys.data, n),
                                  cuda::device_span<float>(d_values.data, n * table.dim()), d_flags, d_misses));
    if (d_misses != nullptr) {
      cuda::lookup_misses misses;
      columns.download(std::span<cuda::lookup_misses>(&misses, 1), d_misses);
      columns.synchronize();  // the one wait of a strict lookup on device keys
      if (misses.count > 0) table_type::host_table::missing_id(misses.first_id);
    }
    return out;
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
