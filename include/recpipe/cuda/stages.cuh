// SPDX-License-Identifier: Apache-2.0
// Pipeline stages on the GPU: stage_impl<Stage, cuda::cuda_backend>.
//
// Design (see docs/cuda.md, "Stages"): batch columns stay host containers, the interface every
// stage and user code speak, and the backend's column_residency (cuda/residency.hpp) keeps their
// device copies for the run. A device stage reads its input columns through it (uploaded through
// pinned staging only when the device has no current copy), enqueues its kernels and leaves its
// outputs on the device, marking the host copies stale; a device stage that selects candidates
// gathers every per-candidate column on the device. Nothing waits until the run ends (the
// pipeline's finish_run hook copies the stale columns back and synchronises once), except a host
// stage that reads a column only the device has, and filter_seen, whose kept counts the host
// needs for the batch's shape. Stages without a device implementation run their CPU stage_impl
// on the host inside the same run (hnswlib retrieval, feature-store / Redis lookups, rules...);
// a lookup from a cuda::device_feature_table (cuda/feature_table.cuh) runs on the device.
// Needs cuBLAS (exact retrieval's GEMM, the model scorers): link CUDA::cublas CUDA::cublasLt; the
// encode stage and the model scorers (cuda/score_stages.cuh, included at the end) bring the CPU
// models' headers (nlohmann_json).
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/cpu/stages/filter.hpp>
#include <recpipe/cpu/stages/lookup.hpp>
#include <recpipe/cpu/stages/order.hpp>
#include <recpipe/cpu/stages/retrieve.hpp>
#include <recpipe/cpu/stages/score.hpp>
#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/blas.cuh>
#include <recpipe/cuda/dense.cuh>
#include <recpipe/cuda/dot_score.cuh>
#include <recpipe/cuda/sampling.cuh>
#include <recpipe/cuda/session_transformer.cuh>
#include <recpipe/cuda/topk.cuh>
#include <recpipe/cuda/kernels/select.cuh>
#include <recpipe/math/random.hpp>
#include <recpipe/stages/session_encoder.hpp>
#include <recpipe/stages/transform.hpp>
#include <recpipe/stages/unroll.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda {

//! @brief Exact inner-product retrieval over a device-resident item matrix: the GPU counterpart
//! of cpu::exact_index for `retrieve<Query>(index, k)` run on a cuda_backend.
//!
//! Built once from host rows (copied to device memory from `backend`'s pool, which must outlive
//! the index). A search is one FP32 cuBLAS GEMM [requests, items] then cuda::top_k_rows, whose
//! order is cpu::top_k's (score desc, NaN last, then id asc). Not thread-safe (one cuBLAS handle).
//! @throws recpipe::error when ids and rows disagree in count, or dim is 0.
//! @code
//! recpipe::cuda::cuda_backend backend;
//! recpipe::cuda::exact_index items(backend, ids, catalog.item_vectors.view());
//! auto run = (retrieve<col::user_embedding>(items, 100) >> top_k(10)).run(batch, backend);
//! @endcode
class exact_index {
 public:
  exact_index(const cuda_backend& backend, std::span<const id_type> ids, matrix_view<const float> rows)
      : dim_(rows.cols()), size_(rows.rows()) {
    if (ids.size() != rows.rows())
      ::recpipe::detail::fail("cuda::exact_index: ", ids.size(), " ids but ", rows.rows(), " rows");
    if (dim_ == 0) ::recpipe::detail::fail("cuda::exact_index: rows have width 0");
    std::vector<float> packed(size_ * dim_);  // dense rows for the GEMM, whatever the host stride
    for (std::size_t r = 0; r < size_; ++r)
      for (std::size_t c = 0; c < dim_; ++c) packed[r * dim_ + c] = rows(r, c);
    items_ = to_device(backend, std::span<const float>(packed));
    ids_ = to_device(backend, ids);
    backend.synchronize();  // the pageable host copies must finish before `packed` goes away
  }

  std::size_t dim() const noexcept { return dim_; }
  std::size_t size() const noexcept { return size_; }
  matrix_view<const float> items() const noexcept { return {items_.data(), size_, dim_}; }
  device_span<const id_type> ids() const noexcept { return ids_.const_span(); }
  const blas_handle& blas() const noexcept { return blas_; }

 private:
  std::size_t dim_, size_;
  device_buffer<float> items_;
  device_buffer<id_type> ids_;
  blas_handle blas_;
};

namespace detail {

//! True for stages with a device stage_impl below; every other stage with a CPU implementation
//! runs on the host inside a cuda_backend run.
template <class Stage>
inline constexpr bool device_stage = false;

template <class T>
struct dot_scorer_columns {
  static constexpr bool value = false;
};
template <class Q, class I>
struct dot_scorer_columns<dot_product_scorer<Q, I>> {
  static constexpr bool value = true;
  using query = Q;
  using item = I;
};
template <class T>
inline constexpr bool is_dot_product_scorer = dot_scorer_columns<T>::value;

template <class Query, class Ref>
inline constexpr bool device_stage<retrieve_stage<exact_index, Query, Ref>> = true;
template <class Score>
inline constexpr bool device_stage<top_k_stage<Score>> = true;
template <class Score>
inline constexpr bool device_stage<softmax_sample_stage<Score>> = true;
template <class History>
inline constexpr bool device_stage<filter_seen_stage<History>> = true;
//! Scoring models with a device score stage_impl besides dot_product_scorer: mlp_scorer over a
//! models::mlp and train::feature_scorer over a frozen MLP / DCN-v2 / DLRM / two-tower
//! (specialised in cuda/score_stages.cuh).
template <class Model>
inline constexpr bool device_scorer = false;
template <class ModelRef, class Out>
inline constexpr bool device_stage<score_stage<ModelRef, Out>> =
    is_dot_product_scorer<typename score_stage<ModelRef, Out>::model_type> ||
    device_scorer<typename score_stage<ModelRef, Out>::model_type>;

template <class T>
struct transformer_encoder_columns {
  static constexpr bool value = false;
};
template <class Session>
struct transformer_encoder_columns<session_encoder<models::session_transformer, Session>> {
  static constexpr bool value = true;
  using session = Session;
};
//! True for the encoders the GPU runs: session_encoder over a models::session_transformer.
template <class T>
inline constexpr bool is_transformer_encoder = transformer_encoder_columns<T>::value;
template <class ModelRef, class Out>
inline constexpr bool device_stage<encode_stage<ModelRef, Out>> =
    is_transformer_encoder<typename encode_stage<ModelRef, Out>::model_type>;

//! The cuBLAS handle a backend's device stages share (one per backend: a backend serves one
//! thread at a time, and handles are not thread-safe).
inline blas_handle& stage_blas(cuda_backend& backend) { return backend.resource<blas_handle>(); }

inline constexpr int select_block = 256;

inline unsigned grid_for(std::size_t threads) {
  return static_cast<unsigned>((threads + select_block - 1) / select_block);
}

template <class C>
device_span<const typename C::value_type> values_of(const resident_column<const typename C::value_type>& column) {
  return {column.data, column.count};
}

// top_k and softmax_sample: the device writes k (id, score) slots per request; the kept slots
// (min(k, segment size), the CPU stages' count) become flat positions, and every per-candidate
// column is gathered by them on the device. The new row partition is known on the host.
template <class Score, class Batch, class Device>
void device_select(Batch& batch, std::size_t k, cuda_backend& backend, Device&& device_call) {
  const std::size_t n = batch.size();
  const auto& host_candidates = batch.template get<col::candidates>();
  const std::size_t total = host_candidates.total();
  if (n == 0 || total == 0) return;  // nothing to order: no CUDA call
  run_columns& columns = backend.columns();
  const auto ids = columns.read<col::candidates>(batch);
  const auto scores = columns.read<Score>(batch);
  std::vector<std::size_t> new_offsets(n + 1, 0);
  for (std::size_t r = 0; r < n; ++r) {
    const std::size_t size = host_candidates.row_size(r);
    new_offsets[r + 1] = new_offsets[r] + (size < k ? size : k);
  }
  const std::size_t picked = new_offsets[n];
  std::int64_t* picks = columns.scratch<std::int64_t>(picked);
  if (k > 0) {
    id_type* slot_ids = columns.scratch<id_type>(n * k);
    float* slot_scores = columns.scratch<float>(n * k);
    const device_span<const std::int64_t> offsets(ids.offsets, n + 1);
    RECPIPE_CUDA_TRY(device_call(device_span<const float>(scores.data, scores.count),
                                 device_span<const id_type>(ids.data, ids.count), offsets,
                                 device_span<id_type>(slot_ids, n * k), device_span<float>(slot_scores, n * k)));
    const std::vector<std::int64_t> signed_offsets(new_offsets.begin(), new_offsets.end());
    const std::int64_t* d_new_offsets = columns.upload_scratch(std::span<const std::int64_t>(signed_offsets));
    kernels::slots_to_picks_kernel<select_block><<<grid_for(n * k), select_block, 0, backend.stream()>>>(
        scores.data, ids.data, ids.offsets, static_cast<std::uint32_t>(n), static_cast<std::uint32_t>(k), slot_ids,
        slot_scores, d_new_offsets, picks);
    RECPIPE_CUDA_TRY(cudaGetLastError());
  }
  columns.select_candidates(batch, std::move(new_offsets), picks);
}

}  // namespace detail

//! @brief True for the host stages recpipe knows keep col::candidates as they are (so their device
//! copies survive them): scorers, lookups, transforms and unroll.
template <class ModelRef, class Out>
inline constexpr bool host_stage_keeps_candidates<score_stage<ModelRef, Out>> = true;
template <class Store, class Ref, class Flag>
inline constexpr bool host_stage_keeps_candidates<lookup_stage<Store, Ref, Flag>> = true;
template <class... Ops>
inline constexpr bool host_stage_keeps_candidates<transform_stage<Ops...>> = true;
template <class Out, class... Sources>
inline constexpr bool host_stage_keeps_candidates<unroll_stage<Out, Sources...>> = true;
template <class ModelRef, class Out>
inline constexpr bool host_stage_keeps_candidates<encode_stage<ModelRef, Out>> = true;

}  // namespace cuda

//! Stages without a device implementation run their CPU stage_impl on the host, so a cuda_backend
//! run may mix hnswlib retrieval, store lookups and rules with device stages. Before the stage,
//! the columns it reads that only the device has come back (one synchronisation); after it, the
//! device copies of what it changed are dropped.
template <class Stage>
  requires(!cuda::detail::device_stage<Stage> && has_stage_impl<Stage, cpu_backend>)
struct stage_impl<Stage, cuda::cuda_backend> {
  template <class Batch>
  static auto run(const Stage& stage, Batch&& batch, cuda::cuda_backend& backend) {
    cuda::run_columns& columns = backend.columns();
    columns.before_host_stage<Stage>(batch);
    cpu_backend host;
    auto out = stage_impl<Stage, cpu_backend>::run(stage, std::forward<Batch>(batch), host);
    columns.after_host_stage<Stage>(out);
    return out;
  }
};

//! Exact retrieval on the GPU: one GEMM of the batch's queries against the device items, then a
//! device top-k per request; the candidates and their scores stay on the device. Same guarantees
//! as the CPU stage (non-finite queries: no candidates; a wrong query width throws). A query only
//! the device holds (from a device stage) costs one synchronisation, to learn which rows are
//! finite.
template <class Query, class Ref>
struct stage_impl<retrieve_stage<cuda::exact_index, Query, Ref>, cuda::cuda_backend> {
  template <class Batch>
  static auto run(const retrieve_stage<cuda::exact_index, Query, Ref>& stage, Batch&& batch,
                  cuda::cuda_backend& backend) {
    static_assert(!std::remove_cvref_t<Batch>::template contains<col::candidates>,
                  "recpipe: CANDIDATES_ALREADY_PRESENT - retrieve runs on a batch without col::candidates; "
                  "merge several sources in one custom stage");
    const auto& queries = batch.template get<Query>();
    const cuda::exact_index& index = stage.index();
    const std::size_t n = batch.size(), items = index.size();
    if (n > 0 && queries.cols() != index.dim())
      ::recpipe::detail::fail("retrieve: query column '", Query::name, "' has width ", queries.cols(),
                              " but the index has dim ", index.dim());
    const std::size_t k = stage.k(), kept = k < items ? k : items;
    cuda::run_columns& columns = backend.columns();
    std::vector<std::uint8_t> finite(n, 1);
    const bool searched = n > 0 && items > 0 && k > 0;
    cuda::resident_column<const float> d_queries;
    if (searched) {
      d_queries = columns.read<Query>(batch);
      if (columns.current_on_host<Query>()) {
        for (std::size_t r = 0; r < n; ++r)
          for (std::size_t c = 0; c < queries.cols(); ++c) finite[r] = finite[r] && std::isfinite(queries(r, c));
      } else {
        std::uint8_t* d_finite = columns.scratch<std::uint8_t>(n);
        cuda::kernels::finite_rows_kernel<cuda::detail::select_block>
            <<<cuda::detail::grid_for(n), cuda::detail::select_block, 0, backend.stream()>>>(
                d_queries.data, static_cast<std::uint32_t>(n), static_cast<std::uint32_t>(index.dim()), d_finite);
        RECPIPE_CUDA_TRY(cudaGetLastError());
        columns.download(std::span<std::uint8_t>(finite), d_finite);
        columns.synchronize();
      }
    } else {
      finite.assign(n, 0);
    }
    std::vector<std::size_t> offsets(n + 1, 0);
    std::vector<std::int64_t> picks;
    for (std::size_t r = 0; r < n; ++r) {
      for (std::size_t i = 0; finite[r] && i < kept; ++i) picks.push_back(static_cast<std::int64_t>(r * k + i));
      offsets[r + 1] = picks.size();
    }
    const std::size_t total = picks.size();
    ragged<id_type> candidates;
    candidates.assign(std::move(offsets), std::vector<id_type>(total), col::candidates::name);
    auto out = std::forward<Batch>(batch)
                   .template with<col::candidates>(std::move(candidates))
                   .template with<col::retrieval_score>(std::vector<float>(total));
    if (total == 0) return out;  // no CUDA call for an empty result
    const auto d_ids = columns.write<col::candidates>(out);
    const auto d_scores = columns.write<col::retrieval_score>(out);
    cuda::device_buffer<float> d_all(backend, n * items);
    cuda::device_buffer<id_type> d_best_ids(backend, n * k);
    cuda::device_buffer<float> d_best(backend, n * k);
    RECPIPE_CUDA_TRY(cuda::linear(backend, index.blas(), matrix_view<const float>(d_queries.data, n, index.dim()),
                                  index.items(), {}, matrix_view<float>(d_all.data(), n, items)));
    RECPIPE_CUDA_TRY(cuda::top_k_rows(backend, d_all.const_span(), n, items, index.ids(), k, d_best_ids.span(),
                                      d_best.span()));
    const std::int64_t* d_picks = columns.upload_scratch(std::span<const std::int64_t>(picks));
    columns.gather(d_ids.data, d_best_ids.data(), sizeof(id_type), n * k, d_picks, total);
    columns.gather(d_scores.data, d_best.data(), sizeof(float), n * k, d_picks, total);
    return out;
  }
};

//! dot_product_scorer on the GPU: cuda::dot_scores over the device query rows and candidate rows;
//! the scores stay on the device.
template <class ModelRef, class Out>
  requires cuda::detail::is_dot_product_scorer<typename score_stage<ModelRef, Out>::model_type>
struct stage_impl<score_stage<ModelRef, Out>, cuda::cuda_backend> {
  template <class Batch>
  static auto run(const score_stage<ModelRef, Out>& stage, Batch&& batch, cuda::cuda_backend& backend) {
    using model = cuda::detail::dot_scorer_columns<typename score_stage<ModelRef, Out>::model_type>;
    (void)stage;
    const std::size_t total = batch.candidate_count();
    {
      const auto& queries = batch.template get<typename model::query>();
      const auto& items = batch.template get<typename model::item>();
      if (total > 0 && queries.cols() != items.cols())
        ::recpipe::detail::fail("dot_product_scorer: '", model::query::name, "' has width ", queries.cols(),
                                " but '", model::item::name, "' has width ", items.cols());
      if (items.rows() != total)
        ::recpipe::detail::fail("dot_product_scorer: '", model::item::name, "' has ", items.rows(),
                                " rows but the batch has ", total, " candidates");
    }
    auto out = std::forward<Batch>(batch).template with<Out>(std::vector<float>(total));
    if (total == 0) return out;
    cuda::run_columns& columns = backend.columns();
    const std::size_t n = out.size();
    const auto q = columns.read<typename model::query>(out);
    const auto it = columns.read<typename model::item>(out);
    const auto candidates = columns.read<col::candidates>(out);
    std::vector<id_type> rows(total);
    for (std::size_t i = 0; i < total; ++i) rows[i] = static_cast<id_type>(i);  // candidate i's row is row i
    const id_type* d_rows = columns.upload_scratch(std::span<const id_type>(rows));
    const auto d_out = columns.write<Out>(out);
    RECPIPE_CUDA_TRY(cuda::dot_scores(backend, matrix_view<const float>(q.data, n, q.cols),
                                      matrix_view<const float>(it.data, total, it.cols),
                                      cuda::device_span<const id_type>(d_rows, total),
                                      cuda::device_span<const std::int64_t>(candidates.offsets, n + 1),
                                      cuda::device_span<float>(d_out.data, total)));
    return out;
  }
};

//! @brief encode(session_encoder(transformer)) on the GPU: cuda::session_transformer's encode (the
//! fused attention kernel, cuBLAS GEMMs), writing the query vectors on the device, where a
//! following retrieve or score reads them. The model's weights are copied to the device by the
//! first run that uses them (backend.models(), keyed by the model's storage(): a new version
//! uploads once). The host lays the sessions out in the model's window (as the CPU model does),
//! so a session column only the device holds comes back first; items the model does not know
//! are skipped as on the CPU (session_encoder::known_sessions). Same results as the CPU stage up
//! to summation order.
template <class ModelRef, class Out>
  requires cuda::detail::is_transformer_encoder<typename encode_stage<ModelRef, Out>::model_type>
struct stage_impl<encode_stage<ModelRef, Out>, cuda::cuda_backend> {
  template <class Batch>
  static auto run(const encode_stage<ModelRef, Out>& stage, Batch&& batch, cuda::cuda_backend& backend) {
    cuda::run_columns& columns = backend.columns();
    columns.before_host_stage<encode_stage<ModelRef, Out>>(batch);  // the window layout reads host ids
    const auto& encoder = stage.model();
    const models::session_transformer& model = encoder.model();
    const std::size_t n = batch.size(), dim = model.embedding_dim();
    auto out = std::forward<Batch>(batch).template with<Out>(matrix<float>(n, dim));
    if (n == 0) return out;  // no CUDA call for an empty batch
    const std::shared_ptr<cuda::session_transformer> gpu = backend.models().get<cuda::session_transformer>(
        model.storage(), [&] { return cuda::to_device(backend, model); });
    const auto d_out = columns.write<Out>(out);
    cuda::blas_handle& blas = cuda::detail::stage_blas(backend);
    encoder.known_sessions(out, [&](auto sessions) {
      RECPIPE_CUDA_TRY(gpu->encode(backend, blas, sessions, matrix_view<float>(d_out.data, n, dim)));
    });
    return out;
  }
};

//! filter_seen on the GPU: one block per request flags each candidate whose id is absent from the
//! request's history row and numbers the kept ones with a block scan (CUB); the kept candidates
//! are gathered on the device. The host needs the kept counts for the batch's shape: one
//! synchronisation.
template <class History>
struct stage_impl<filter_seen_stage<History>, cuda::cuda_backend> {
  template <class Batch>
  static auto run(const filter_seen_stage<History>&, Batch&& batch, cuda::cuda_backend& backend) {
    ::recpipe::detail::check_stage_input(batch, "filter_seen");
    const std::size_t n = batch.size(), total = batch.candidate_count();
    if (n == 0 || total == 0 || batch.template get<History>().total() == 0) return std::forward<Batch>(batch);
    cuda::run_columns& columns = backend.columns();
    const auto ids = columns.read<col::candidates>(batch);
    const auto history = columns.read<History>(batch);
    std::int64_t* sparse_picks = columns.scratch<std::int64_t>(total);
    std::int64_t* d_kept = columns.scratch<std::int64_t>(n);
    constexpr int block = cuda::detail::select_block;
    cuda::kernels::unseen_compact_kernel<block><<<static_cast<unsigned>(n), block, 0, backend.stream()>>>(
        ids.data, ids.offsets, history.data, history.offsets, sparse_picks, d_kept);
    RECPIPE_CUDA_TRY(cudaGetLastError());
    std::vector<std::int64_t> kept(n);
    columns.download(std::span<std::int64_t>(kept), d_kept);
    columns.synchronize();  // the batch's new shape is a device result
    std::vector<std::size_t> offsets(n + 1, 0);
    for (std::size_t r = 0; r < n; ++r) offsets[r + 1] = offsets[r] + static_cast<std::size_t>(kept[r]);
    if (offsets.back() == total) return std::forward<Batch>(batch);  // nothing seen: columns unchanged, as on the CPU
    const std::vector<std::int64_t> signed_offsets(offsets.begin(), offsets.end());
    const std::int64_t* d_new_offsets = columns.upload_scratch(std::span<const std::int64_t>(signed_offsets));
    std::int64_t* picks = columns.scratch<std::int64_t>(offsets.back());
    if (offsets.back() > 0) {
      cuda::kernels::pack_picks_kernel<block><<<static_cast<unsigned>(n), block, 0, backend.stream()>>>(
          sparse_picks, ids.offsets, d_new_offsets, picks);
      RECPIPE_CUDA_TRY(cudaGetLastError());
    }
    columns.select_candidates(batch, std::move(offsets), picks);
    return std::forward<Batch>(batch);
  }
};

//! top_k on the GPU (cuda::top_k: the CPU order, score desc, NaN last, then id asc); every
//! per-candidate column follows on the device.
template <class Score>
struct stage_impl<top_k_stage<Score>, cuda::cuda_backend> {
  template <class Batch>
  static auto run(const top_k_stage<Score>& stage, Batch&& batch, cuda::cuda_backend& backend) {
    ::recpipe::detail::check_stage_input(batch, "top_k");
    const std::size_t k = stage.k();
    cuda::detail::device_select<Score>(batch, k, backend, [&](auto scores, auto ids, auto offsets, auto out_ids,
                                                              auto out_scores) {
      return cuda::top_k(backend, scores, ids, offsets, k, out_ids, out_scores);
    });
    return std::forward<Batch>(batch);
  }
};

//! softmax_sample on the GPU (cuda::softmax_sample: the CPU stage's math::sampling_key per
//! (request key, item id); request keys are col::request_seed, else col::user_id, else the row).
//! The device returns the draw's slots (id, score); the stage keeps those candidates in that order.
template <class Score>
struct stage_impl<softmax_sample_stage<Score>, cuda::cuda_backend> {
  template <class Batch>
  static auto run(const softmax_sample_stage<Score>& stage, Batch&& batch, cuda::cuda_backend& backend) {
    ::recpipe::detail::check_stage_input(batch, "softmax_sample");
    using batch_type = std::remove_cvref_t<Batch>;
    std::vector<std::uint64_t> keys(batch.size());
    for (std::size_t r = 0; r < batch.size(); ++r) {
      std::uint64_t request_key = r;
      if constexpr (batch_type::template contains<col::request_seed>)
        request_key = batch.template get<col::request_seed>()[r];
      else if constexpr (batch_type::template contains<col::user_id>)
        request_key = static_cast<std::uint64_t>(batch.template get<col::user_id>()[r]);
      keys[r] = request_key;
    }
    const std::size_t k = stage.k();
    cuda::detail::device_select<Score>(batch, k, backend, [&](auto scores, auto ids, auto offsets, auto out_ids,
                                                              auto out_scores) {
      const std::uint64_t* d_keys = backend.columns().upload_scratch(std::span<const std::uint64_t>(keys));
      return cuda::softmax_sample(backend, scores, ids, offsets, cuda::device_span<const std::uint64_t>(d_keys, keys.size()),
                                  k, stage.temperature(), stage.seed(), out_ids, out_scores);
    });
    return std::forward<Batch>(batch);
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
// lookup(cuda::device_feature_table) on the device (it includes this header first).
#include <recpipe/cuda/feature_table.cuh>

// The model scorers on the GPU (MLP, DCN-v2, DLRM, two-tower): after the generic host wrapper,
// which they bypass (detail::device_scorer).
#include <recpipe/cuda/score_stages.cuh>
