// SPDX-License-Identifier: Apache-2.0
// recpipe: a scoring model that runs an MLP over each (request, candidate) pair's features.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <span>
#include <vector>

#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! What mlp_scorer needs of a network: models::mlp, or anything with the same three members.
template <class Network>
concept feed_forward_network = requires(const Network& n, matrix_view<const float> x, matrix_view<float> y) {
  { n.input_dim() } -> std::convertible_to<std::size_t>;
  { n.output_dim() } -> std::convertible_to<std::size_t>;
  n.forward(x, y);
};

//! @brief Scores each candidate with a feed-forward network (e.g. recpipe::models::mlp loaded
//! from PyTorch) over the concatenation [request's `Query` vector, candidate's `Item` vector].
//!
//! The network's input_dim must be the sum of the two widths and its output_dim 1; otherwise
//! `score` throws recpipe::error naming the widths. All candidates of a batch go through the
//! network as one matrix, so the dense layers run as GEMMs. The network is held by reference.
//!
//! @code
//! auto ranker = recpipe::models::mlp::load("ranker.safetensors");   // [user 32 | item 32] -> 1
//! auto pipeline = ... >> recpipe::lookup(item_vectors) >> recpipe::score(recpipe::mlp_scorer(ranker)) >> ...;
//! @endcode
template <feed_forward_network Network, column Query = col::user_embedding, column Item = col::item_embedding>
class mlp_scorer {
 public:
  using reads = columns<col::candidates, Query, Item>;

  explicit mlp_scorer(const Network& network) : network_(&network) {
    if (network.output_dim() != 1)
      detail::fail("mlp_scorer: the network must have one output (it has ", network.output_dim(), ")");
  }

  //! The network (what the CUDA backend copies to the device once, cuda/score_stages.cuh).
  const Network& network() const noexcept { return *network_; }

  template <class Batch>
  void score(const Batch& batch, std::span<float> out) const {
    const auto& queries = batch.template get<Query>();
    const auto& items = batch.template get<Item>();
    const auto& offsets = batch.template get<col::candidates>().offsets();
    const std::size_t n = batch.candidate_count();
    if (n == 0) return;
    const std::size_t width = queries.cols() + items.cols();
    if (width != network_->input_dim())
      detail::fail("mlp_scorer: '", Query::name, "' (", queries.cols(), ") + '", Item::name, "' (", items.cols(),
                   ") = ", width, " features but the network's input_dim is ", network_->input_dim());
    thread_local std::vector<float> features;  // reused across runs: no allocation once warm
    features.resize(n * width);
    for (std::size_t r = 0; r < batch.size(); ++r) {
      const auto query = queries.row(r);
      for (std::size_t c = offsets[r]; c < offsets[r + 1]; ++c) {
        float* row = features.data() + c * width;
        std::copy(query.begin(), query.end(), row);
        const auto item = items.row(c);
        std::copy(item.begin(), item.end(), row + query.size());
      }
    }
    network_->forward(matrix_view<const float>(features.data(), n, width), matrix_view<float>(out.data(), n, 1));
  }

 private:
  const Network* network_;
};

//! `make_mlp_scorer<col::user_features, col::item_features>(ranker)` picks other columns
//! (`mlp_scorer(ranker)` uses user_embedding and item_embedding).
template <column Query = col::user_embedding, column Item = col::item_embedding, feed_forward_network Network>
mlp_scorer<Network, Query, Item> make_mlp_scorer(const Network& network) {
  return mlp_scorer<Network, Query, Item>(network);
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
