// SPDX-License-Identifier: Apache-2.0
// recpipe stages: score (one score per candidate) and encode (one vector per request) with a model.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include <recpipe/core/matrix.hpp>
#include <recpipe/core/pipeline.hpp>
#include <recpipe/detail/component.hpp>
#include <recpipe/detail/meta.hpp>
#include <recpipe/detail/name.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

namespace detail {
inline constexpr std::string_view score_prefix = "score";
inline constexpr std::string_view encode_prefix = "encode";
}  // namespace detail

//! @brief What `score` needs of a model: `using reads = columns<...>` (the columns it reads) and
//! `template <class Batch> void score(const Batch&, std::span<float> out) const`, writing one score
//! per candidate (out.size() == batch.candidate_count()), in candidate order.
template <class Model>
concept scoring_model = requires { typename Model::reads; };

//! The description of a scoring stage: which model, which output column.
template <class ModelRef, column Out>
struct score_stage : stage<score_stage<ModelRef, Out>> {
  using model_type = typename detail::component<ModelRef>::value_type;
  static_assert(Out::shape == column_shape::per_candidate && std::is_same_v<typename Out::value_type, float>,
                "recpipe: SCORE_COLUMN_NOT_PER_CANDIDATE_FLOAT - score writes a per_candidate column of float");
  using reads = detail::list_union_t<columns<col::candidates>, typename model_type::reads>;
  using writes = columns<Out>;
  static constexpr std::string_view name = detail::stage_name_v<&detail::score_prefix, &Out::name>;

  template <class M>
  explicit score_stage(M&& model) : model_(std::forward<M>(model)) {}
  //! The model (for a slot: the version this run pinned).
  const model_type& model() const { return model_.get(); }
  void pin_versions(detail::run_pins& pins) const { model_.pin(pins); }

 private:
  detail::component<ModelRef> model_;
};

//! @brief Scores every candidate with a model and writes `Out` (`col::score` by default).
//!
//! How the model is held: a named model by reference (it must outlive the pipeline); a temporary
//! is moved into the stage; a `std::shared_ptr<Model>` is shared (the pipeline keeps it alive); a
//! `recpipe::slot<Model>` (core/versions.hpp) reads the version the run pinned, so a trainer can
//! publish new versions while the pipeline serves. NaN scores are kept: ordering stages rank them last.
//!
//! @code
//! auto ranked = recpipe::score(recpipe::dot_product_scorer<>{}) >> recpipe::top_k(10);
//! @endcode
template <column Out = col::score, class Model>
score_stage<detail::component_ref_t<Model>, Out> score(Model&& model) {
  static_assert(scoring_model<typename detail::component<detail::component_ref_t<Model>>::value_type>,
                "recpipe: NOT_A_SCORING_MODEL - score() needs a model with `using reads = columns<...>` and "
                "`void score(const Batch&, std::span<float>) const`");
  return score_stage<detail::component_ref_t<Model>, Out>(std::forward<Model>(model));
}

//! The description of an encoding stage: which model, which output column.
template <class ModelRef, column Out>
struct encode_stage : stage<encode_stage<ModelRef, Out>> {
  using model_type = typename detail::component<ModelRef>::value_type;
  static_assert(Out::shape == column_shape::per_request_vector && std::is_same_v<typename Out::value_type, float>,
                "recpipe: ENCODE_COLUMN_NOT_A_FLOAT_VECTOR - encode writes a per_request_vector column of float");
  using reads = typename model_type::reads;
  using writes = columns<Out>;
  static constexpr std::string_view name = detail::stage_name_v<&detail::encode_prefix, &Out::name>;

  template <class M>
  explicit encode_stage(M&& model) : model_(std::forward<M>(model)) {}
  //! The model (for a slot: the version this run pinned).
  const model_type& model() const { return model_.get(); }
  void pin_versions(detail::run_pins& pins) const { model_.pin(pins); }

 private:
  detail::component<ModelRef> model_;
};

//! @brief Encodes each request into a vector with a model (a user tower, a session transformer)
//! and writes `Out` (`col::query_vector` by default). The model provides `using reads`,
//! `std::size_t output_dim() const` and
//! `template <class Batch> void encode(const Batch&, recpipe::matrix_view<float> out) const`.
//! The model is held as in score(): by reference, by value, shared_ptr or slot.
//!
//! @code
//! auto session_based = recpipe::encode(session_model) >> recpipe::retrieve(index, 200);
//! @endcode
template <column Out = col::query_vector, class Model>
encode_stage<detail::component_ref_t<Model>, Out> encode(Model&& model) {
  return encode_stage<detail::component_ref_t<Model>, Out>(std::forward<Model>(model));
}

//! @brief The simplest scoring model: the dot product of a per-request vector (`Query`) and each
//! candidate's vector (`Item`). Throws recpipe::error when their widths differ.
template <column Query = col::user_embedding, column Item = col::item_embedding>
struct dot_product_scorer {
  using reads = columns<col::candidates, Query, Item>;

  template <class Batch>
  void score(const Batch& batch, std::span<float> out) const {
    const auto& queries = batch.template get<Query>();
    const auto& items = batch.template get<Item>();
    const auto& offsets = batch.template get<col::candidates>().offsets();
    if (batch.candidate_count() > 0 && queries.cols() != items.cols())
      detail::fail("dot_product_scorer: '", Query::name, "' has width ", queries.cols(), " but '", Item::name,
                   "' has width ", items.cols());
    using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const auto dim = static_cast<Eigen::Index>(items.cols());
    for (std::size_t r = 0; r < batch.size(); ++r) {
      const auto count = static_cast<Eigen::Index>(offsets[r + 1] - offsets[r]);
      if (count == 0) continue;
      // One matrix-vector product per request: the request's candidate rows times its query.
      Eigen::Map<const row_major> block(items.row(offsets[r]).data(), count, dim);
      Eigen::Map<const Eigen::VectorXf> query(queries.row(r).data(), dim);
      Eigen::Map<Eigen::VectorXf>(out.data() + offsets[r], count).noalias() = block * query;
    }
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
#include <recpipe/cpu/stages/score.hpp>
