// SPDX-License-Identifier: Apache-2.0
// The trained rows of examples/session_based: the session transformer (train::session_trainer)
// and GRU4Rec (train::gru4rec_model), trained in-process on split.train. Each fit records its
// epochs (seconds, processor seconds, loss) in `trained_runs` for the speed table, and the
// transformer keeps its trainable model for the serving and new-items sections.
#pragma once

#include "models.hpp"

#include <recpipe/cpu/threads.hpp>
#include <recpipe/models/session_transformer.hpp>
#include <recpipe/train/gru4rec_model.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/session_training.hpp>
#include <recpipe/train/session_transformer_model.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace session_example {

//! Knobs of the trained models (the defaults are the ones docs/session-based.md reports).
struct trained_options {
  // session transformer
  std::size_t dim = 64, layers = 2, heads = 2, ffn = 128, max_length = 50, batch = 128, epochs = 10;
  std::size_t negatives = 0;  //!< > 0: sampled softmax with that many log-Q corrected negatives
  double lr = 1e-3;
  // GRU4Rec
  std::size_t gru_embedding = 64, gru_hidden = 100, gru_batch = 32, gru_epochs = 10;
  double gru_lr = 1e-3;
  // both
  std::size_t threads = 2;  //!< transformer: batch split over replicas; GRU4Rec: BLAS threads
  std::uint64_t seed = 42;
  bool progress = true;     //!< epoch lines on stderr
};

//! What one trained model's fit did, per epoch.
struct trained_run {
  std::vector<double> seconds, cpu_seconds, loss;
  std::size_t threads = 0;
  double seconds_per_epoch() const {
    double s = 0;
    for (double v : seconds) s += v;
    return seconds.empty() ? 0 : s / static_cast<double>(seconds.size());
  }
  double cpu_seconds_per_epoch() const {
    double s = 0;
    for (double v : cpu_seconds) s += v;
    return cpu_seconds.empty() ? 0 : s / static_cast<double>(cpu_seconds.size());
  }
};

//! Filled by the fits: runs by table key, and the trained transformer.
struct trained_runs {
  std::map<std::string, trained_run> runs;
  std::shared_ptr<recpipe::train::session_transformer_model> transformer;
};

//! The frozen transformer as a const, thread-safe scorer for the evaluator.
struct transformer_scorer {
  recpipe::models::session_transformer model;
  void score_session(std::span<const id_type> prefix, std::span<float> scores) const {
    const std::size_t e = model.embedding_dim();
    std::vector<float> query(e);
    const std::size_t keep = std::min(prefix.size(), model.config().max_length);
    const id_type offsets[2] = {0, static_cast<id_type>(keep)};
    model.encode(offsets, prefix.subspan(prefix.size() - keep), {query.data(), 1, e});
    model.score_all_items({query.data(), 1, e}, {scores.data(), 1, scores.size()});
  }
};

inline recpipe::models::session_transformer_config transformer_config(const trained_options& o, std::size_t items) {
  recpipe::models::session_transformer_config c;
  c.num_items = items;
  c.embedding_dim = o.dim;
  c.max_length = o.max_length;
  c.num_heads = o.heads;
  c.ffn_dim = o.ffn;
  c.num_layers = o.layers;
  return c;
}

inline recpipe::train::session_training_options transformer_training(const trained_options& o, std::size_t threads,
                                                                     std::size_t epochs) {
  return {.batch_size = o.batch,
          .epochs = epochs,
          .objective = o.negatives == 0 ? recpipe::train::next_item_objective::full_softmax
                                        : recpipe::train::next_item_objective::sampled_softmax,
          .num_negatives = std::max<std::size_t>(o.negatives, 1),
          .threads = threads,
          .seed = o.seed,
          .progress = o.progress ? &std::cerr : nullptr};
}

inline std::string transformer_params(const trained_options& o) {
  std::ostringstream p;
  p << "E=" << o.dim << " layers=" << o.layers << " heads=" << o.heads << " ffn=" << o.ffn << " max_length=" << o.max_length
    << " pre-norm ReLU, tied item embeddings, batch=" << o.batch << " sessions, Adam lr=" << o.lr << ", " << o.epochs
    << " epochs, " << (o.negatives == 0 ? std::string("full softmax") : "sampled softmax K=" + std::to_string(o.negatives) + " log-Q")
    << ", " << o.threads << " threads (batch split)";
  return p.str();
}

//! The session transformer row ("transformer").
inline void add_transformer(std::vector<model_spec>& specs, const trained_options& o, std::shared_ptr<trained_runs> runs) {
  specs.push_back({"transformer", "session transformer", transformer_params(o), true,
                   [o, runs](const recpipe::io::session_split& split) {
                     namespace train = recpipe::train;
                     auto model = std::make_shared<train::session_transformer_model>(
                         transformer_config(o, split.num_items()), o.seed);
                     train::adam optimizer({.lr = o.lr});
                     // Two threads split the batch over two model replicas; the BLAS stays on one
                     // thread per replica (docs/session-based.md compares the two ways).
                     recpipe::cpu::set_num_threads(1);
                     train::session_trainer trainer(*model, optimizer, transformer_training(o, o.threads, o.epochs));
                     if (o.progress) std::fprintf(stderr, "session transformer: %s\n", transformer_params(o).c_str());
                     trained_run& run = runs->runs["transformer"];
                     run.threads = o.threads;
                     for (const auto& s : trainer.fit(train::session_list(split.train))) {
                       run.seconds.push_back(s.seconds);
                       run.cpu_seconds.push_back(s.cpu_seconds);
                       run.loss.push_back(s.loss);
                     }
                     runs->transformer = model;
                     return wrap(transformer_scorer{model->freeze()});
                   }});
}

inline std::string gru4rec_params(const trained_options& o) {
  std::ostringstream p;
  p << "embedding=" << o.gru_embedding << " hidden=" << o.gru_hidden << " 1 GRU layer, output embeddings (untied), "
    << "session-parallel batch=" << o.gru_batch << ", full softmax, Adam lr=" << o.gru_lr << " (rows: lazy Adam), " << o.gru_epochs
    << " epochs, " << o.threads << " BLAS threads";
  return p.str();
}

//! The GRU4Rec row ("gru4rec").
inline void add_gru4rec(std::vector<model_spec>& specs, const trained_options& o, std::shared_ptr<trained_runs> runs) {
  specs.push_back({"gru4rec", "GRU4Rec", gru4rec_params(o), true, [o, runs](const recpipe::io::session_split& split) {
                     namespace train = recpipe::train;
                     const std::size_t n = split.num_items();
                     const auto rows = [&] { return std::make_shared<train::lazy_adam>(train::lazy_adam_options{.lr = o.gru_lr}); };
                     train::gru4rec_model model({.num_items = n, .embedding_dim = o.gru_embedding, .hidden_size = o.gru_hidden},
                                                {.loss = train::gru4rec_loss::full_softmax}, rows(), rows(), o.seed);
                     train::adam optimizer({.lr = o.gru_lr});
                     recpipe::cpu::set_num_threads(static_cast<int>(o.threads));
                     train::session_parallel_batches batches(split.train.offsets, split.train.items, o.gru_batch, o.seed);
                     train::session_batch batch;
                     trained_run& run = runs->runs["gru4rec"];
                     run.threads = o.threads;
                     if (o.progress) std::fprintf(stderr, "GRU4Rec: %s\n", gru4rec_params(o).c_str());
                     for (std::size_t epoch = 1; epoch <= o.gru_epochs; ++epoch) {
                       const auto start = std::chrono::steady_clock::now();
                       const std::clock_t cpu_start = std::clock();
                       if (epoch > 1) batches.restart();
                       double loss = 0;
                       std::size_t rows_seen = 0;
                       while (batches.next(batch)) {
                         const auto r = model.train_step(batch, [&](auto params) { optimizer.step(params); });
                         if (!r.skipped) {
                           loss += static_cast<double>(r.loss) * static_cast<double>(r.examples);
                           rows_seen += r.examples;
                         }
                       }
                       run.seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
                       run.cpu_seconds.push_back(static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC);
                       run.loss.push_back(rows_seen ? loss / static_cast<double>(rows_seen) : 0.0);
                       if (o.progress)
                         std::fprintf(stderr, "epoch %zu/%zu  loss %.4f  %.2f s (cpu %.2f s)\n", epoch, o.gru_epochs, run.loss.back(),
                                      run.seconds.back(), run.cpu_seconds.back());
                     }
                     recpipe::cpu::set_num_threads(1);
                     return wrap(model.freeze());
                   }});
}

}  // namespace session_example
