// SPDX-License-Identifier: Apache-2.0
// recpipe: the encode stage's adapter for session models (session-based recommendation).
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <span>
#include <vector>

#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! What session_encoder needs of a model: models::session_transformer, or anything alike.
template <class Model>
concept session_model = requires(const Model& m, std::span<const id_type> ids, matrix_view<float> out) {
  { m.config().num_items } -> std::convertible_to<std::size_t>;
  { m.embedding_dim() } -> std::convertible_to<std::size_t>;
  m.encode(ids, ids, out);
};

//! @brief Turns a session model (e.g. recpipe::models::session_transformer loaded from PyTorch)
//! into a model for the `encode` stage: each request's `Session` items (`col::session_items` by
//! default, in time order) become its query vector, ready for `retrieve`.
//!
//! Items the model does not know (ids outside [0, num_items), such as items added to the catalog
//! after training) are skipped rather than failing the batch; a session left empty encodes to the
//! zero vector. The model is held by reference and must outlive the pipeline.
//!
//! @code
//! auto model = recpipe::models::session_transformer::load("sasrec.safetensors");
//! auto next_items = recpipe::encode(recpipe::session_encoder(model))
//!                >> recpipe::retrieve(item_index, 200)
//!                >> recpipe::filter_seen<recpipe::col::session_items>()
//!                >> recpipe::top_k<recpipe::col::retrieval_score>(20);
//! @endcode
template <session_model Model, column Session = col::session_items>
class session_encoder {
  static_assert(Session::shape == column_shape::per_request_list,
                "recpipe: SESSION_COLUMN_NOT_A_LIST - session_encoder reads a per_request_list column of item ids");

 public:
  using reads = columns<Session>;

  explicit session_encoder(const Model& model) : model_(&model) {}
  std::size_t output_dim() const { return model_->embedding_dim(); }

  template <class Batch>
  void encode(const Batch& batch, matrix_view<float> out) const {
    const auto& sessions = batch.template get<Session>();
    const auto known = static_cast<id_type>(model_->config().num_items);
    // The common case, every item known: the model reads the column as it is (no copy).
    if constexpr (requires { model_->encode(sessions.view(), out); }) {
      const auto& all = sessions.values();
      if (std::all_of(all.begin(), all.end(), [known](id_type item) { return item >= 0 && item < known; })) {
        model_->encode(sessions.view(), out);
        return;
      }
    }
    thread_local std::vector<id_type> offsets, items;  // reused across runs
    offsets.assign(1, 0);
    items.clear();
    for (std::size_t r = 0; r < sessions.rows(); ++r) {
      for (const id_type item : sessions.row(r))
        if (item >= 0 && item < known) items.push_back(item);
      offsets.push_back(static_cast<id_type>(items.size()));
    }
    model_->encode(offsets, items, out);
  }

 private:
  const Model* model_;
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
