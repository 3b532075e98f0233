// SPDX-License-Identifier: Apache-2.0
// incremental_training: the library's trainable models (train::mlp_model, train::dcn_v2_model)
// behind the experiment's model interface: fixed tables with row SGD for user, item (and genre)
// ids, dense SGD, train::train_step one event at a time.
#pragma once

#include "models.hpp"

#include <recpipe/train/dcn_v2_model.hpp>
#include <recpipe/train/dlrm_model.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/mlp_model.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/trainer.hpp>

#include <memory>
#include <type_traits>
#include <vector>

namespace experiment {

//! Hyperparameters of the library models in the experiment.
struct library_config {
  std::size_t dim = 16;                   // embedding width of every table
  std::vector<std::size_t> deep{64, 32};  // ReLU layers before the linear head
  std::size_t cross_layers = 2;           // DCN-v2 only (full rank, stacked)
  std::size_t bottom = 32;                // DLRM only: bottom MLP bottom -> dim
  float lr = 0.05f;                       // row SGD of the tables
  float dense_lr = 0.01f;                 // SGD of the dense weights
  float init = 0.1f;                      // rows ~ N(0, init), deterministic per (table seed, id)
  std::uint64_t seed = 1;
};

//! @brief A train::mlp_model, train::dcn_v2_model or train::dlrm_model (Net) on the stream:
//! sparse features user id, item id (and the genre bag for the rich set: mean-pooled, DLRM
//! summed), dense features the logged online features (rich set only; DLRM, which needs a dense
//! input for its bottom MLP, gets a constant 1 with ids only, so that the dots of the bottom
//! output with the embeddings can play the part of user and item biases). Trained by
//! train::train_step on batches of one event, so every interval makes the same number of updates
//! and only their timing differs.
template <class Net>
class library_model final : public model {
 public:
  library_model(const stream& s, feature_set f, library_config c) : rich_(f == feature_set::rich), c_(std::move(c)) {
    using recpipe::train::fixed_table;
    using recpipe::train::row_init;
    const std::size_t rows[] = {s.users, s.items, s.genres.rows()};
    const char* names[] = {"user", "item", "genre"};
    for (std::size_t t = 0; t < (rich_ ? 3u : 2u); ++t) {
      fixed_table::config tc{rows[t], c_.dim, row_init{row_init::distribution::normal, c_.init, c_.seed + 101 * t}, names[t]};
      tables_.push_back(std::make_shared<fixed_table>(tc, std::make_shared<recpipe::train::row_sgd>(c_.lr)));
    }
    net_ = make_net();
    batch_ = recpipe::train::example_batch(dense_width(), tables_.size());
  }
  library_model(const library_model& other) : model(other), rich_(other.rich_), c_(other.c_) {
    // A deep copy: new tables (own row optimizer), a new net over them with the same weights.
    for (const auto& t : other.tables_) {
      auto copy = std::make_shared<recpipe::train::fixed_table>(t->settings(), std::make_shared<recpipe::train::row_sgd>(c_.lr));
      const auto from = t->weights();
      auto to = copy->weights();
      std::copy(from.data(), from.data() + from.rows() * from.cols(), to.data());
      tables_.push_back(std::move(copy));
    }
    net_ = make_net();
    const auto mine = net_->parameters(), theirs = other.net_->parameters();
    for (std::size_t i = 0; i < mine.size(); ++i) mine[i]->value = theirs[i]->value;
    batch_ = recpipe::train::example_batch(dense_width(), tables_.size());
  }

  float predict(const stream& s, std::size_t e) override {
    batch_.clear();
    fill(s, e);
    return sigmoid(net_->forward(batch_.inputs(), ws_)(0, 0));
  }
  void train(const stream& s, std::span<const std::uint32_t> events) override {
    for (std::uint32_t e : events) {
      batch_.clear();
      fill(s, e);
      (void)recpipe::train::train_step(*net_, ws_, batch_, [&](std::span<recpipe::train::parameter* const> p) { dense_opt_.step(p); });
    }
  }
  std::unique_ptr<model> clone() const override { return std::make_unique<library_model>(*this); }
  std::size_t parameters() const override {
    std::size_t n = 0;
    for (const auto& t : tables_) n += t->rows() * t->dim();
    for (const auto* p : net_->parameters()) n += p->size();
    return n;
  }

 private:
  static constexpr bool is_dlrm = std::is_same_v<Net, recpipe::train::dlrm_model>;
  std::size_t dense_width() const { return rich_ ? dense_dim : (is_dlrm ? 1 : 0); }

  std::unique_ptr<Net> make_net() const {
    std::vector<recpipe::models::table_config> tc;
    std::vector<std::shared_ptr<recpipe::train::trainable_table>> tables;
    for (const auto& t : tables_) {
      tc.push_back({t->rows(), t->dim()});
      tables.push_back(t);
    }
    if constexpr (std::is_same_v<Net, recpipe::train::mlp_model>) {
      recpipe::train::mlp_model_config mc;
      mc.dense_dim = dense_width();
      mc.tables = tc;
      mc.pooling = recpipe::cpu::pooling::mean;
      mc.hidden = c_.deep;
      return std::make_unique<Net>(mc, std::move(tables), c_.seed);
    } else if constexpr (is_dlrm) {
      recpipe::models::dlrm_config dc;
      dc.dense_dim = dense_width();
      dc.embedding_dim = c_.dim;
      dc.bottom = {c_.bottom, c_.dim};
      for (const auto& t : tables_) dc.table_rows.push_back(t->rows());
      dc.top = c_.deep;
      dc.top.push_back(1);
      return std::make_unique<Net>(dc, std::move(tables), c_.seed);
    } else {
      recpipe::models::dcn_v2_config dc;
      dc.dense_dim = dense_width();
      dc.tables = tc;
      dc.pooling = recpipe::cpu::pooling::mean;
      dc.cross_layers = c_.cross_layers;
      dc.deep = c_.deep;
      return std::make_unique<Net>(dc, std::move(tables), c_.seed);
    }
  }

  // The event's example: ids and, for the rich set, genre bag and logged dense features.
  void fill(const stream& s, std::size_t e) {
    const event& ev = s.events[e];
    batch_.begin_example(ev.label);
    batch_.add_id(0, static_cast<id_type>(ev.user));
    batch_.add_id(1, static_cast<id_type>(ev.item));
    if (rich_) {
      for (id_type g : s.bag(e)) batch_.add_id(2, g);
      const auto row = batch_.dense_row();
      std::copy(s.dense[e].begin(), s.dense[e].end(), row.begin());
    } else if constexpr (is_dlrm) {
      batch_.dense_row()[0] = 1.0f;
    }
  }

  bool rich_;
  library_config c_;
  std::vector<std::shared_ptr<recpipe::train::fixed_table>> tables_;
  std::unique_ptr<Net> net_;
  recpipe::train::sgd dense_opt_{recpipe::train::sgd_options{.lr = static_cast<double>(c_.dense_lr)}};
  recpipe::train::example_batch batch_;
  typename Net::workspace ws_;
};

}  // namespace experiment
