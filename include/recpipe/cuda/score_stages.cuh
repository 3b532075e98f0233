// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: the score stage on the GPU for the model scorers (included by
// cuda/stages.cuh; see docs/cuda.md, "Stages").
//
// - mlp_scorer over a models::mlp: the [request's Query row | candidate's Item row] pairs are
//   built on the device from the device columns (no host round trip), then cuda::device_mlp.
// - train::feature_scorer over a train::frozen MLP / DCN-v2 / DLRM / two-tower (what
//   `score(train::scorer<Features>(frozen))` builds): the model inputs are built on the host by
//   train::build_inputs, exactly as the CPU stage does (the feature columns usually come from host
//   lookups), the frozen id maps applied on the host, the dense values and bags uploaded once, the
//   device model run; the scores stay on the device.
// The device model is made once per loaded model version (backend.models(), keyed by the model's
// storage): a run that finds it uploads no weights; a newly published frozen version uploads once.
// Every other scoring model (user scorers) runs on the host through the generic wrapper.
#pragma once

#include <recpipe/cuda/stages.cuh>

#include <recpipe/cuda/models.cuh>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/core/batch.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/stages/mlp_scorer.hpp>
#include <recpipe/stages/score.hpp>
#include <recpipe/train/features.hpp>
#include <recpipe/train/freeze.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda::detail {

template <class T>
struct mlp_scorer_columns {
  static constexpr bool value = false;
};
template <class Q, class I>
struct mlp_scorer_columns<mlp_scorer<models::mlp, Q, I>> {
  static constexpr bool value = true;
  using query = Q;
  using item = I;
};

template <class S>
inline constexpr bool device_serving_model =
    std::is_same_v<S, models::mlp> || std::is_same_v<S, models::dcn_v2> || std::is_same_v<S, models::dlrm> ||
    std::is_same_v<S, models::two_tower>;

template <class T>
struct feature_scorer_model {
  static constexpr bool value = false;
};
template <class Features, class S, class Ref>
struct feature_scorer_model<train::feature_scorer<Features, train::frozen<S>, Ref>> {
  static constexpr bool value = device_serving_model<S>;
  using serving = S;
};

template <class Q, class I>
inline constexpr bool device_scorer<mlp_scorer<models::mlp, Q, I>> = true;
template <class Features, class S, class Ref>
inline constexpr bool device_scorer<train::feature_scorer<Features, train::frozen<S>, Ref>> = device_serving_model<S>;

//! The device model of a serving model type.
template <class S>
struct device_model_of;
template <>
struct device_model_of<models::mlp> {
  using type = device_mlp;
};
template <>
struct device_model_of<models::dcn_v2> {
  using type = device_dcn_v2;
};
template <>
struct device_model_of<models::dlrm> {
  using type = device_dlrm;
};
template <>
struct device_model_of<models::two_tower> {
  using type = device_two_tower;
};

//! @brief The device copy of `model` from the backend's model cache (made, i.e. uploaded, only
//! when this loaded version has none yet).
template <class S>
std::shared_ptr<typename device_model_of<S>::type> device_model(cuda_backend& backend, const S& model) {
  using device = typename device_model_of<S>::type;
  return backend.models().get<device>(model.storage(), [&] { return device(backend, model); });
}

//! @brief The checks a frozen serving model's CPU forward makes of host inputs (what
//! train::frozen::forward passes it, ids already mapped), with the same messages, so that the GPU
//! stage throws before any device work where the CPU stage throws.
inline void check_serving_inputs(const models::mlp& model, matrix_view<const float> dense,
                                 std::span<const cpu::bag_input>, std::size_t) {
  if (dense.cols() != model.input_dim())
    ::recpipe::detail::fail("mlp: forward: x has ", dense.cols(), " columns but the model's input_dim is ",
                            model.input_dim());
}
inline void check_serving_inputs(const models::dcn_v2& model, matrix_view<const float> dense,
                                 std::span<const cpu::bag_input> sparse, std::size_t batch) {
  check_host_inputs("dcn_v2: forward", dense, model.config().dense_dim, rows_of(model.tables()), sparse, batch);
}
inline void check_serving_inputs(const models::dlrm& model, matrix_view<const float> dense,
                                 std::span<const cpu::bag_input> sparse, std::size_t batch) {
  check_host_inputs("dlrm: forward", dense, model.config().dense_dim, rows_of(model.tables()), sparse, batch);
  if (model.output_dim() != 1)
    ::recpipe::detail::fail("dlrm: forward: out has 1 columns but the model outputs ", model.output_dim());
}
//! two_tower: the combined inputs train::frozen splits (user dense columns, then item; user bags,
//! then item bags). A dense width other than the towers' sum throws (the CPU split would read past
//! the user columns).
inline void check_serving_inputs(const models::two_tower& model, matrix_view<const float> dense,
                                 std::span<const cpu::bag_input> sparse, std::size_t batch) {
  const models::two_tower_config& c = model.config();
  const std::size_t nu = c.user.tables.size();
  if (sparse.size() != nu + c.item.tables.size())
    ::recpipe::detail::fail("train::frozen<two_tower>: forward: ", sparse.size(), " bag inputs for ", nu, " + ",
                            c.item.tables.size(), " tower features");
  if (dense.cols() != c.user.dense_dim + c.item.dense_dim)
    ::recpipe::detail::fail("train::frozen<two_tower>: forward: ", dense.cols(),
                            " dense values per candidate but the towers take ", c.user.dense_dim, " + ",
                            c.item.dense_dim);
  const std::size_t du = c.user.dense_dim;
  check_host_inputs("two_tower: encode", matrix_view<const float>(dense.data(), batch, du, dense.stride()),
                    c.user.dense_dim, rows_of(model.user_tower().tables()), sparse.first(nu), batch);
  check_host_inputs("two_tower: encode",
                    matrix_view<const float>(dense.data() == nullptr ? nullptr : dense.data() + du, batch,
                                             c.item.dense_dim, dense.stride()),
                    c.item.dense_dim, rows_of(model.item_tower().tables()), sparse.subspan(nu), batch);
}

}  // namespace cuda::detail

//! @brief mlp_scorer over a models::mlp on the GPU: one block per request writes its candidates'
//! [Query row | Item row] pairs from the device columns, then cuda::device_mlp (cached per loaded
//! model); the scores stay on the device. Same checks and messages as the CPU scorer (a width
//! that does not add up to the network's input_dim throws); an empty batch makes no CUDA call.
//! @code
//! auto ranker = recpipe::models::mlp::load("ranker.safetensors");  // [user 32 | item 32] -> 1
//! auto ranked = (recpipe::lookup(items) >> recpipe::score(recpipe::mlp_scorer(ranker)) >> recpipe::top_k(10))
//!                   .run(requests, backend);                      // backend: a cuda::cuda_backend
//! @endcode
template <class ModelRef, class Out>
  requires cuda::detail::mlp_scorer_columns<typename score_stage<ModelRef, Out>::model_type>::value
struct stage_impl<score_stage<ModelRef, Out>, cuda::cuda_backend> {
  template <class Batch>
  static auto run(const score_stage<ModelRef, Out>& stage, Batch&& batch, cuda::cuda_backend& backend) {
    using model = cuda::detail::mlp_scorer_columns<typename score_stage<ModelRef, Out>::model_type>;
    using Query = typename model::query;
    using Item = typename model::item;
    const models::mlp& network = stage.model().network();
    const std::size_t total = batch.candidate_count();
    std::size_t q_cols = 0, i_cols = 0;
    {
      const auto& queries = batch.template get<Query>();
      const auto& items = batch.template get<Item>();
      q_cols = queries.cols();
      i_cols = items.cols();
      if (total > 0 && q_cols + i_cols != network.input_dim())
        ::recpipe::detail::fail("mlp_scorer: '", Query::name, "' (", q_cols, ") + '", Item::name, "' (", i_cols, ") = ",
                                q_cols + i_cols, " features but the network's input_dim is ", network.input_dim());
      if (total > 0 && items.rows() != total)
        ::recpipe::detail::fail("mlp_scorer: '", Item::name, "' has ", items.rows(), " rows but the batch has ", total,
                                " candidates");
      if (total > 0 && queries.rows() != batch.size())
        ::recpipe::detail::fail("mlp_scorer: '", Query::name, "' has ", queries.rows(), " rows but the batch has ",
                                batch.size(), " requests");
    }
    auto out = std::forward<Batch>(batch).template with<Out>(std::vector<float>(total));
    if (total == 0) return out;
    cuda::run_columns& columns = backend.columns();
    const std::size_t n = out.size(), width = q_cols + i_cols;
    const auto gpu = cuda::detail::device_model(backend, network);
    const auto q = columns.read<Query>(out);
    const auto it = columns.read<Item>(out);
    const auto candidates = columns.read<col::candidates>(out);
    float* features = columns.scratch<float>(total * width);
    constexpr int block = cuda::detail::model_block;
    cuda::kernels::pair_concat_kernel<block><<<static_cast<unsigned>(n), block, 0, backend.stream()>>>(
        q.data, q_cols, q_cols, it.data, i_cols, i_cols, candidates.offsets, features);
    RECPIPE_CUDA_TRY(cudaGetLastError());
    const auto d_out = columns.write<Out>(out);
    RECPIPE_CUDA_TRY(gpu->forward(backend, matrix_view<const float>(features, total, width),
                                  matrix_view<float>(d_out.data, total, 1)));
    return out;
  }
};

//! @brief `score(train::scorer<Features>(frozen))` on the GPU for a frozen models::mlp, dcn_v2,
//! dlrm or two_tower: train::build_inputs on the host (the CPU stage's code: no serving skew),
//! the frozen id maps applied on the host (unknown ids read the zero row), the CPU forward's
//! checks on the host inputs (shapes, offsets, ids in range: the same errors), one upload of the
//! dense values and bags, the device model's forward (cuda/models.cuh; made once per frozen
//! version, so a slot's new version uploads once). The scores stay on the device.
//! @code
//! auto frozen = model.freeze();   // train::dcn_v2_model
//! auto ranked = (recpipe::lookup(users) >> recpipe::lookup(items)
//!                >> recpipe::score(recpipe::train::scorer<ranking_features>(frozen)) >> recpipe::top_k(10))
//!                   .run(requests, backend);   // backend: a cuda::cuda_backend
//! @endcode
template <class ModelRef, class Out>
  requires cuda::detail::feature_scorer_model<typename score_stage<ModelRef, Out>::model_type>::value
struct stage_impl<score_stage<ModelRef, Out>, cuda::cuda_backend> {
  template <class Batch>
  static auto run(const score_stage<ModelRef, Out>& stage, Batch&& batch, cuda::cuda_backend& backend) {
    using Stage = score_stage<ModelRef, Out>;
    using serving = typename cuda::detail::feature_scorer_model<typename Stage::model_type>::serving;
    cuda::run_columns& columns = backend.columns();
    columns.template before_host_stage<Stage>(batch);  // feature columns only the device holds come back
    const auto& scorer = stage.model();
    const train::frozen<serving>& frozen = scorer.model();
    const std::size_t total = batch.candidate_count();
    thread_local train::example_batch scratch;  // reused across runs: no allocation once warm
    train::model_inputs in;
    if (total > 0) in = train::build_inputs(scorer.features(), std::as_const(batch), scratch);
    auto out = std::forward<Batch>(batch).template with<Out>(std::vector<float>(total));
    if (total == 0) return out;  // no CUDA call
    if (in.sparse.size() != frozen.id_maps.size())
      ::recpipe::detail::fail("train::frozen: forward: the model has ", frozen.id_maps.size(),
                              " sparse features but ", in.sparse.size(), " bag inputs were given");
    std::vector<cpu::bag_input> bags(in.sparse.begin(), in.sparse.end());
    std::vector<std::vector<id_type>> mapped(bags.size());
    for (std::size_t t = 0; t < bags.size(); ++t) {
      if (!frozen.id_maps[t]) continue;
      mapped[t] = frozen.map_ids(t, bags[t].ids);
      bags[t].ids = mapped[t];
    }
    // The CPU forward's checks, on the host model: a bad input throws before any device work.
    cuda::detail::check_serving_inputs(frozen.model, in.dense, bags, total);
    const std::size_t dense_cols = in.dense.cols();
    const auto gpu = cuda::detail::device_model(backend, frozen.model);
    // One upload of the inputs: dense rows packed, then each bag's ids, offsets and weights.
    const float* d_dense = nullptr;
    if (dense_cols > 0) {
      if (in.dense.stride() == dense_cols) {
        d_dense = columns.upload_scratch(std::span<const float>(in.dense.data(), total * dense_cols));
      } else {
        std::vector<float> packed(total * dense_cols);
        for (std::size_t r = 0; r < total; ++r)
          for (std::size_t c = 0; c < dense_cols; ++c) packed[r * dense_cols + c] = in.dense(r, c);
        d_dense = columns.upload_scratch(std::span<const float>(packed));
      }
    }
    std::vector<cuda::device_bags> d_bags(bags.size());
    for (std::size_t t = 0; t < bags.size(); ++t) {
      d_bags[t].ids = {columns.upload_scratch(bags[t].ids), bags[t].ids.size()};
      d_bags[t].offsets = {columns.upload_scratch(bags[t].offsets), bags[t].offsets.size()};
      if (!bags[t].weights.empty()) d_bags[t].weights = {columns.upload_scratch(bags[t].weights), bags[t].weights.size()};
    }
    const matrix_view<const float> dense(d_dense, total, dense_cols);
    const auto d_out = columns.write<Out>(out);
    const matrix_view<float> scores(d_out.data, total, 1);
    if constexpr (std::is_same_v<serving, models::mlp>) {
      RECPIPE_CUDA_TRY(gpu->forward(backend, dense, scores));
    } else if constexpr (std::is_same_v<serving, models::two_tower>) {
      const models::two_tower_config& c = gpu->config();
      const std::span<const cuda::device_bags> all = d_bags;
      const std::size_t nu = c.user.tables.size();
      const std::size_t user_cols = c.user.dense_dim;
      const matrix_view<const float> user_dense(d_dense, total, user_cols, dense_cols);
      const matrix_view<const float> item_dense(d_dense == nullptr ? nullptr : d_dense + user_cols, total,
                                                c.item.dense_dim, dense_cols);
      RECPIPE_CUDA_TRY(gpu->forward(backend, user_dense, all.first(nu), item_dense, all.subspan(nu), scores));
    } else {
      RECPIPE_CUDA_TRY(gpu->forward(backend, dense, d_bags, scores));
    }
    return out;
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
