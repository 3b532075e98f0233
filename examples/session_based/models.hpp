// SPDX-License-Identifier: Apache-2.0
// The rows of examples/session_based: each model is a `model_spec` (a name, its hyperparameters
// and a fit function that returns something with score_session). To add a model (the session
// transformer, GRU4Rec), write a function like add_baselines below in its own header and call it
// from main.cpp's make_specs(): a few lines per row.
#pragma once

#include <recpipe/models/session_baselines.hpp>
#include <recpipe/train/next_item_eval.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace session_example {

using recpipe::id_type;

//! What the table needs from a fitted model.
struct session_model {
  virtual ~session_model() = default;
  virtual void score_session(std::span<const id_type> prefix, std::span<float> scores) const = 0;
};

//! Wraps any model with a const score_session.
template <class Model>
struct model_adapter final : session_model {
  explicit model_adapter(Model m) : model(std::move(m)) {}
  void score_session(std::span<const id_type> prefix, std::span<float> scores) const override {
    model.score_session(prefix, scores);
  }
  Model model;
};

template <class Model>
std::unique_ptr<session_model> wrap(Model m) {
  return std::make_unique<model_adapter<Model>>(std::move(m));
}

//! One row: fit(split) trains on split.train (it may use split.test only for logging, never for
//! choices); the runner times fit and evaluates the result on split.test.
struct model_spec {
  std::string key;     //!< selects the row with --models (pop, iknn, vsknn, ...)
  std::string name;    //!< printed in the table
  std::string params;  //!< hyperparameters, printed under the table
  bool thread_safe = true;  //!< false: evaluated on one thread
  std::function<std::unique_ptr<session_model>(const recpipe::io::session_split&)> fit;
};

//! Command-line knobs of the baselines.
struct baseline_options {
  recpipe::models::item_knn_config item_knn{};
  recpipe::models::vsknn_config vsknn{};
};

inline const char* weighting_name(recpipe::models::vsknn_weighting w) {
  switch (w) {
    case recpipe::models::vsknn_weighting::same: return "same";
    case recpipe::models::vsknn_weighting::div: return "div";
    case recpipe::models::vsknn_weighting::quadratic: return "quadratic";
    default: return "linear";
  }
}

//! Most popular, item-kNN and V-SKNN.
inline void add_baselines(std::vector<model_spec>& specs, const baseline_options& o) {
  specs.push_back({"pop", "popularity", "item click counts in train", true, [](const recpipe::io::session_split& split) {
                     return wrap(recpipe::models::most_popular(split.train));
                   }});
  std::ostringstream knn;
  knn << "neighbors=" << o.item_knn.neighbors << " lambda=" << o.item_knn.lambda << " alpha=" << o.item_knn.alpha
      << " (scores by the last item)";
  specs.push_back({"iknn", "item-kNN", knn.str(), true, [cfg = o.item_knn](const recpipe::io::session_split& split) {
                     return wrap(recpipe::models::item_knn(split.train, cfg));
                   }});
  std::ostringstream vs;
  vs << "k=" << o.vsknn.k << " sample_size=" << o.vsknn.sample_size << " (most recent) weighting="
     << weighting_name(o.vsknn.weighting);
  specs.push_back({"vsknn", "V-SKNN", vs.str(), true, [cfg = o.vsknn](const recpipe::io::session_split& split) {
                     return wrap(recpipe::models::vsknn(split.train, cfg));
                   }});
}

}  // namespace session_example
