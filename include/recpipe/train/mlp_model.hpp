// SPDX-License-Identifier: Apache-2.0
// recpipe train: an MLP over embedding bags (and dense features) with one logit, e.g. over user and item ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/models/dcn_v2.hpp>
#include <recpipe/models/parameters.hpp>
#include <recpipe/train/dcn_v2_model.hpp>
#include <recpipe/train/table.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief Shape of an mlp_model: x = cat(dense, bag_0, bag_1, ...) -> ReLU layers `hidden` ->
//! a linear head to one logit.
struct mlp_model_config {
  std::size_t dense_dim = 0;
  std::vector<models::table_config> tables;  //!< one per sparse feature: rows (a record for dynamic tables), dim
  cpu::pooling pooling = cpu::pooling::sum;
  std::vector<std::size_t> hidden;           //!< at least one layer
  bool sigmoid = true;                       //!< the frozen model outputs probabilities (forward() gives logits)

  //! The same network as a DCN-v2 without cross layers (what freeze() serves).
  models::dcn_v2_config to_dcn_v2() const {
    models::dcn_v2_config c;
    c.dense_dim = dense_dim;
    c.tables = tables;
    c.pooling = pooling;
    c.cross_layers = 0;
    c.deep = hidden;
    c.structure = models::dcn_structure::stacked;
    c.sigmoid = sigmoid;
    return c;
  }
};

//! @brief The "MLP over user and item embeddings" ranker: embedding bags (user id, item id,
//! optional extra bags such as genres) and dense features concatenated into a ReLU MLP with a
//! linear head to one logit.
//!
//! It is a DCN-v2 with zero cross layers, and freeze() serves it as models::dcn_v2 (so the
//! serving forward code is the same). Parameters therefore carry the DCN-v2 names:
//! `deep.layers.{2i}.weight|bias` and `head.weight` [1, hidden.back()], `head.bias` [1]; tables
//! freeze to `embeddings.{t}.weight`. Everything else (workspace, forward, backward, freeze,
//! initialisation, bad input) is dcn_v2_model's.
//! @code
//! recpipe::train::mlp_model_config c{.tables = {{0, 32}, {0, 32}}, .hidden = {64, 32}};
//! recpipe::train::mlp_model model(c, {user_table, item_table}, /*seed=*/7);
//! @endcode
class mlp_model : public dcn_v2_model {
 public:
  mlp_model(const mlp_model_config& config, std::vector<std::shared_ptr<trainable_table>> tables, std::uint64_t seed)
      : dcn_v2_model(config.to_dcn_v2(), std::move(tables), seed), mlp_config_(config) {}
  const mlp_model_config& mlp_config() const noexcept { return mlp_config_; }

 private:
  mlp_model_config mlp_config_;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
