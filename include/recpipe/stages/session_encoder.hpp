// SPDX-License-Identifier: Apache-2.0
// recpipe: the encode stage's adapter for session models (session-based recommendation).
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/ragged_view.hpp>
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
  //! The session model.
  const Model& model() const noexcept { return *model_; }

  template <class Batch>
  void encode(const Batch& batch, matrix_view<float> out) const {
    known_sessions(batch, [&](auto sessions) {
      if constexpr (requires { model_->encode(sessions, out); })
        model_->encode(sessions, out);
      else if constexpr (std::is_same_v<typename decltype(sessions)::offset_type, id_type>)
        model_->encode(sessions.offsets(), sessions.values(), out);
      else {  // a model that takes only id_type offsets, given the column's own offsets
        thread_local std::vector<id_type> offsets;
        offsets.assign(sessions.offsets().begin(), sessions.offsets().end());
        model_->encode(std::span<const id_type>(offsets), sessions.values(), out);
      }
    });
  }

  //! @brief Calls `use(sessions)` with the batch's sessions as a ragged_view of the items the
  //! model knows (ids in [0, num_items), time order kept): the column itself when every item is
  //! known (no copy), else a filtered copy (offsets and items of type id_type). The encode stage
  //! of every backend goes through it, so unknown items are skipped the same way everywhere.
  template <class Batch, class Use>
  void known_sessions(const Batch& batch, Use&& use) const {
    const auto& sessions = batch.template get<Session>();
    const auto known = static_cast<id_type>(model_->config().num_items);
    const auto& all = sessions.values();
    const auto is_known = [known](id_type item) { return item >= 0 && item < known; };
    // The common case, every item known: the model reads the column as it is.
    if constexpr (std::is_same_v<typename Session::value_type, id_type>) {
      if (std::all_of(all.begin(), all.end(), is_known)) {
        use(sessions.view());
        return;
      }
    }
    thread_local std::vector<id_type> offsets, items;  // reused across runs
    offsets.assign(1, 0);
    items.clear();
    for (std::size_t r = 0; r < sessions.rows(); ++r) {
      for (const id_type item : sessions.row(r))
        if (is_known(item)) items.push_back(item);
      offsets.push_back(static_cast<id_type>(items.size()));
    }
    use(ragged_view<const id_type, id_type>(offsets, items));
  }

 private:
  const Model* model_;
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
