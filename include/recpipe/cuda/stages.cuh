// SPDX-License-Identifier: Apache-2.0
// Pipeline stages on the GPU: stage_impl<Stage, cuda::cuda_backend>.
//
// Design (see docs/cuda.md, "Stages"): batch columns stay host containers, the interface every
// stage already speaks. A device stage stages its input columns into stream-ordered buffers from
// the backend's pool, enqueues its kernels on the backend's stream, copies its outputs back and
// synchronises once at its end (the next stage may be a host stage reading those columns). So a
// device stage round-trips its own columns: NOT yet the issue's "once per run" target, which
// needs a device-resident column type in batch<> (see docs/cuda.md). Stages without a device
// implementation run their CPU stage_impl on the host inside the same run (hnswlib retrieval,
// feature-store / Redis lookups, filters, rules, cold start).
// Needs cuBLAS (exact retrieval's GEMM): link CUDA::cublas.
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
#include <recpipe/cuda/topk.cuh>
#include <recpipe/math/random.hpp>

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
template <class ModelRef, class Out>
inline constexpr bool device_stage<score_stage<ModelRef, Out>> =
    is_dot_product_scorer<typename score_stage<ModelRef, Out>::model_type>;

inline std::vector<std::int64_t> signed_offsets(const std::vector<std::size_t>& offsets) {
  return {offsets.begin(), offsets.end()};
}

// Maps the device top-k's (id, score) slots back to candidate positions of each request, for
// batch::select_candidates (which keeps every per-candidate column aligned). The first unused
// position with that id and bitwise-equal score: duplicates of an id rank by position on both
// backends, so this is the position the device picked.
template <class Batch>
void select_device_picks(Batch& batch, std::span<const float> scores, std::size_t k, const std::vector<id_type>& out_ids,
                         const std::vector<float>& out_scores) {
  const auto& candidates = batch.template get<col::candidates>();
  const auto& ids = candidates.values();
  const auto& offsets = candidates.offsets();
  const std::size_t n = batch.size();
  std::vector<std::size_t> new_offsets(n + 1, 0), picks;
  std::vector<char> used;
  const auto same = [](float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; };
  for (std::size_t r = 0; r < n; ++r) {
    const std::size_t begin = offsets[r], end = offsets[r + 1];
    used.assign(end - begin, 0);
    for (std::size_t slot = r * k; slot < r * k + k && slot - r * k < end - begin; ++slot) {
      for (std::size_t at = begin; at < end; ++at)
        if (!used[at - begin] && ids[at] == out_ids[slot] && same(scores[at], out_scores[slot])) {
          used[at - begin] = 1;
          picks.push_back(at);
          break;
        }
    }
    new_offsets[r + 1] = picks.size();
  }
  batch.select_candidates(std::move(new_offsets), picks);
}

}  // namespace detail
}  // namespace cuda

//! Stages without a device implementation run their CPU stage_impl on the host (columns are host
//! containers), so a cuda_backend run may mix hnswlib retrieval, store lookups and rules with
//! device stages.
template <class Stage>
  requires(!cuda::detail::device_stage<Stage> && has_stage_impl<Stage, cpu_backend>)
struct stage_impl<Stage, cuda::cuda_backend> {
  template <class Batch>
  static auto run(const Stage& stage, Batch&& batch, cuda::cuda_backend&) {
    cpu_backend host;
    return stage_impl<Stage, cpu_backend>::run(stage, std::forward<Batch>(batch), host);
  }
};

//! Exact retrieval on the GPU: one GEMM of the batch's queries against the device items, then a
//! device top-k per request. Same guarantees as the CPU stage (non-finite queries: no candidates;
//! a wrong query width throws).
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
    std::vector<id_type> ids(n * k, -1);
    std::vector<float> scores(n * k);
    if (n > 0 && items > 0) {
      std::vector<float> packed(n * index.dim());
      for (std::size_t r = 0; r < n; ++r)
        for (std::size_t c = 0; c < index.dim(); ++c) packed[r * index.dim() + c] = queries(r, c);
      auto d_queries = cuda::to_device(backend, std::span<const float>(packed));
      cuda::device_buffer<float> d_scores(backend, n * items);
      cuda::device_buffer<id_type> d_ids(backend, n * k);
      cuda::device_buffer<float> d_best(backend, n * k);
      RECPIPE_CUDA_TRY(cuda::linear(backend, index.blas(), matrix_view<const float>(d_queries.data(), n, index.dim()),
                                    index.items(), {}, matrix_view<float>(d_scores.data(), n, items)));
      RECPIPE_CUDA_TRY(cuda::top_k_rows(backend, d_scores.const_span(), n, items, index.ids(), k, d_ids.span(),
                                        d_best.span()));
      RECPIPE_CUDA_TRY(cuda::copy_to_host(backend, d_ids.const_span(), std::span<id_type>(ids)));
      RECPIPE_CUDA_TRY(cuda::copy_to_host(backend, d_best.const_span(), std::span<float>(scores)));
      backend.synchronize();  // host columns: the next stage may read them on the CPU
    }
    std::vector<std::size_t> offsets(n + 1, 0);
    std::size_t written = 0;
    for (std::size_t r = 0; r < n; ++r) {
      bool finite = true;
      for (std::size_t c = 0; c < queries.cols(); ++c) finite = finite && std::isfinite(queries(r, c));
      for (std::size_t i = 0; finite && i < kept; ++i) {
        ids[written] = ids[r * k + i];
        scores[written] = scores[r * k + i];
        ++written;
      }
      offsets[r + 1] = written;
    }
    ids.resize(written);
    scores.resize(written);
    ragged<id_type> candidates;
    candidates.assign(std::move(offsets), std::move(ids), col::candidates::name);
    return std::forward<Batch>(batch)
        .template with<col::candidates>(std::move(candidates))
        .template with<col::retrieval_score>(std::move(scores));
  }
};

//! dot_product_scorer on the GPU: cuda::dot_scores over the batch's query rows and candidate rows.
template <class ModelRef, class Out>
  requires cuda::detail::is_dot_product_scorer<typename score_stage<ModelRef, Out>::model_type>
struct stage_impl<score_stage<ModelRef, Out>, cuda::cuda_backend> {
  template <class Batch>
  static auto run(const score_stage<ModelRef, Out>& stage, Batch&& batch, cuda::cuda_backend& backend) {
    using model = cuda::detail::dot_scorer_columns<typename score_stage<ModelRef, Out>::model_type>;
    (void)stage;
    const std::size_t total = batch.candidate_count();
    std::vector<float> scores(total);
    if (total > 0) {
      const auto& queries = batch.template get<typename model::query>();
      const auto& items = batch.template get<typename model::item>();
      if (queries.cols() != items.cols())
        ::recpipe::detail::fail("dot_product_scorer: '", model::query::name, "' has width ", queries.cols(),
                                " but '", model::item::name, "' has width ", items.cols());
      const std::size_t n = batch.size(), dim = queries.cols();
      std::vector<float> q(n * dim), it(total * dim);
      for (std::size_t r = 0; r < n; ++r)
        for (std::size_t c = 0; c < dim; ++c) q[r * dim + c] = queries(r, c);
      for (std::size_t r = 0; r < total; ++r)
        for (std::size_t c = 0; c < dim; ++c) it[r * dim + c] = items(r, c);
      std::vector<id_type> rows(total);
      for (std::size_t i = 0; i < total; ++i) rows[i] = static_cast<id_type>(i);  // candidate i's row is row i
      const auto offsets = cuda::detail::signed_offsets(batch.template get<col::candidates>().offsets());
      auto d_q = cuda::to_device(backend, std::span<const float>(q));
      auto d_items = cuda::to_device(backend, std::span<const float>(it));
      auto d_rows = cuda::to_device(backend, std::span<const id_type>(rows));
      auto d_offsets = cuda::to_device(backend, std::span<const std::int64_t>(offsets));
      cuda::device_buffer<float> d_out(backend, total);
      RECPIPE_CUDA_TRY(cuda::dot_scores(backend, matrix_view<const float>(d_q.data(), n, dim),
                                        matrix_view<const float>(d_items.data(), total, dim), d_rows.const_span(),
                                        d_offsets.const_span(), d_out.span()));
      RECPIPE_CUDA_TRY(cuda::copy_to_host(backend, d_out.const_span(), std::span<float>(scores)));
      backend.synchronize();  // also keeps the pageable host sources alive until the copies ran
    }
    return std::forward<Batch>(batch).template with<Out>(std::move(scores));
  }
};

namespace cuda::detail {

// top_k and softmax_sample share everything but the device call.
template <class Score, class Batch, class Device>
void device_select(Batch& batch, std::size_t k, cuda_backend& backend, Device&& device_call) {
  const auto& candidates = batch.template get<col::candidates>();
  const std::size_t n = batch.size(), total = candidates.total();
  if (n == 0) return;
  const auto& scores = batch.template get<Score>();
  std::vector<id_type> out_ids(n * k, -1);
  std::vector<float> out_scores(n * k);
  if (total > 0) {
    const auto offsets = signed_offsets(candidates.offsets());
    auto d_scores = to_device(backend, std::span<const float>(scores.data(), scores.size()));
    auto d_ids = to_device(backend, std::span<const id_type>(candidates.values().data(), total));
    auto d_offsets = to_device(backend, std::span<const std::int64_t>(offsets));
    device_buffer<id_type> d_out_ids(backend, n * k);
    device_buffer<float> d_out_scores(backend, n * k);
    RECPIPE_CUDA_TRY(device_call(d_scores.const_span(), d_ids.const_span(), d_offsets.const_span(), d_out_ids.span(),
                                 d_out_scores.span()));
    RECPIPE_CUDA_TRY(copy_to_host(backend, d_out_ids.const_span(), std::span<id_type>(out_ids)));
    RECPIPE_CUDA_TRY(copy_to_host(backend, d_out_scores.const_span(), std::span<float>(out_scores)));
    backend.synchronize();
  }
  select_device_picks(batch, std::span<const float>(scores.data(), scores.size()), k, out_ids, out_scores);
}

}  // namespace cuda::detail

//! top_k on the GPU (cuda::top_k: the CPU order, score desc, NaN last, then id asc).
template <class Score>
struct stage_impl<top_k_stage<Score>, cuda::cuda_backend> {
  template <class Batch>
  static auto run(const top_k_stage<Score>& stage, Batch&& batch, cuda::cuda_backend& backend) {
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
      auto d_keys = cuda::to_device(backend, std::span<const std::uint64_t>(keys));
      return cuda::softmax_sample(backend, scores, ids, offsets, d_keys.const_span(), k, stage.temperature(),
                                  stage.seed(), out_ids, out_scores);
    });
    return std::forward<Batch>(batch);
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
