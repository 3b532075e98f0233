// SPDX-License-Identifier: Apache-2.0
// Training on a batch that lacks a column the features read (item features were never looked
// up), though it has its labels.
// EXPECT: recpipe: TRAINING_BATCH_LACKS_FEATURE_COLUMN
// EXPECT: TRAINING_BATCH_LACKS_FEATURE_COLUMN<recpipe::(v0::)?batch<.*>, recpipe::(v0::)?col::item_features>
#include <memory>
#include <vector>

#include <recpipe/train/features.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/mlp_model.hpp>
#include <recpipe/train/optimizers.hpp>

int main() {
  using namespace recpipe;
  using item_features = train::features<train::sparse<col::candidates>, train::dense<col::item_features>>;
  train::mlp_model model({.dense_dim = 2, .tables = {{10, 4}}, .hidden = {4}},
                         {std::make_shared<train::fixed_table>(train::fixed_table::config{.rows = 10, .dim = 4},
                                                               std::make_shared<train::row_sgd>(0.1))},
                         1);
  train::mlp_model::workspace ws;
  train::sgd sgd;
#ifdef RECPIPE_SHOULD_FAIL
  batch<col::candidates, col::label> logged(1);
  logged.get<col::candidates>().assign({0, 2}, {3, 4});
#else
  batch<col::candidates, col::item_features, col::label> logged(1);
  logged.get<col::candidates>().assign({0, 2}, {3, 4});
  logged.get<col::item_features>() = matrix<float>(2, 2);
#endif
  logged.get<col::label>() = {1.0f, 0.0f};
  auto r = train::train_step(model, ws, item_features{}, logged, train::optimizer_step(sgd));
  return r.examples == 2 ? 0 : 1;
}
