// SPDX-License-Identifier: Apache-2.0
// One feature definition for serving and training (train/features.hpp): what a feature spec
// builds from columns, and no training/serving skew: batches logged at a pipeline's score stage
// train a model whose frozen copy, scored through the pipeline, gives the trainable forward's
// scores on the same columns (MLP over embeddings, DLRM over dynamic tables, DCN-v2).
#include <doctest/doctest.h>

#include <recpipe/core/versions.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/score.hpp>
#include <recpipe/train/dcn_v2_model.hpp>
#include <recpipe/train/dlrm_model.hpp>
#include <recpipe/train/dynamic_table.hpp>
#include <recpipe/train/features.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/mlp_model.hpp>
#include <recpipe/train/optimizers.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <vector>

using namespace recpipe;

namespace {

RECPIPE_COLUMN(watched, per_candidate, float);   // a second outcome, to train on another label
RECPIPE_COLUMN(category, per_candidate, id_type);  // an id per candidate
RECPIPE_COLUMN(age, per_request, float);           // a number per request

// The ranking features of the no-skew tests: user id and item id bags, user and item dense vectors.
using ranking_features = train::features<train::sparse<col::user_id>, train::sparse<col::candidates>,
                                         train::dense<col::user_features>, train::dense<col::item_features>>;
static_assert(std::is_same_v<ranking_features::reads,
                             columns<col::candidates, col::user_id, col::user_features, col::item_features>>);
static_assert(ranking_features::num_sparse == 2);
static_assert(train::feature_spec<ranking_features>);
static_assert(std::is_same_v<train::training_batch_t<ranking_features>,
                             batch<col::candidates, col::user_id, col::user_features, col::item_features, col::label>>);
static_assert(scoring_model<train::feature_scorer<ranking_features, train::frozen<models::dcn_v2>>>);

constexpr std::size_t user_dim = 3, item_dim = 2, emb_dim = 4, num_users = 6, num_items = 9;

// The world the pipeline serves: dense user and item features in feature stores.
struct world {
  feature_store<col::user_id, col::user_features> users{user_dim};
  feature_store<col::candidates, col::item_features> items{item_dim};
  std::vector<id_type> user_ids;  // what requests carry (dynamic tables: large, sparse ids)

  explicit world(id_type user_base) {
    std::mt19937 rng(11);
    std::normal_distribution<float> normal;
    for (std::size_t u = 0; u < num_users; ++u) {
      user_ids.push_back(user_base + static_cast<id_type>(u) * 7919);
      std::vector<float> v(user_dim);
      for (auto& x : v) x = normal(rng);
      users.insert(user_ids.back(), std::span<const float>(v));
    }
    for (std::size_t i = 0; i < num_items; ++i) {
      std::vector<float> v(item_dim);
      for (auto& x : v) x = normal(rng);
      items.insert(static_cast<id_type>(i), std::span<const float>(v));
    }
  }

  // `n` requests, each with 0..5 candidates (request 1 always has none).
  batch<col::user_id, col::candidates> requests(std::size_t n, std::mt19937& rng) const {
    batch<col::user_id, col::candidates> b(n);
    auto& candidates = b.get<col::candidates>();
    candidates.clear();
    for (std::size_t r = 0; r < n; ++r) {
      b.get<col::user_id>()[r] = user_ids[rng() % num_users];
      candidates.begin_row();
      const std::size_t count = r == 1 ? 0 : rng() % 6;
      for (std::size_t c = 0; c < count; ++c) candidates.push_back(static_cast<id_type>(rng() % num_items));
    }
    return b;
  }
};

// The outcome the model should learn: a fixed function of (user, item).
float outcome(id_type user, id_type item) { return (item % 3 == 0 || (user / 7919) % 3 == 0) ? 1.0f : 0.0f; }

template <class Batch>
std::vector<float> labels_of(const Batch& b) {
  std::vector<float> labels;
  const auto& candidates = b.template get<col::candidates>();
  for (std::size_t r = 0; r < b.size(); ++r)
    for (const id_type item : candidates.row(r)) labels.push_back(outcome(b.template get<col::user_id>()[r], item));
  return labels;
}

std::shared_ptr<train::fixed_table> fixed(std::size_t rows, std::uint64_t seed) {
  return std::make_shared<train::fixed_table>(
      train::fixed_table::config{.rows = rows, .dim = emb_dim, .init = {.scale = 0.3f, .seed = seed}},
      std::make_shared<train::row_sgd>(0.2));
}
// Zero-initialised rows: an id the snapshot does not hold yet is served its zero row, and the
// trainable table admits it on its first training forward; with a non-zero row_init that first
// forward would see the init row, not the zero row the pipeline scored with (see the report).
std::shared_ptr<train::dynamic_table> dynamic() {
  return std::make_shared<train::dynamic_table>(
      train::dynamic_table_config{.dim = emb_dim, .init = {.kind = train::row_init::distribution::zeros}},
      std::make_shared<train::row_sgd>(0.2));
}

// Serving output of the frozen model (probabilities when `sigmoid`) from a trainable logit.
float served_from_logit(float logit, bool sigmoid) { return sigmoid ? 1.0f / (1.0f + std::exp(-logit)) : logit; }

struct skew_report {
  std::size_t compared = 0;
  double max_diff = 0.0;
  std::size_t bitwise_equal = 0;
};

// Scores in `scored` (the pipeline's col::score) against the trainable model's forward over the
// same columns, built by the same feature spec.
template <class Model, class Batch>
void compare(Model& model, const Batch& scored, bool sigmoid, skew_report& report) {
  train::example_batch scratch;
  const train::model_inputs in = train::build_inputs(ranking_features{}, scored, scratch);
  REQUIRE(in.batch == scored.candidate_count());
  if (in.batch == 0) return;
  typename Model::workspace ws;
  const matrix_view<const float> logits = model.forward(in, ws);
  const auto& scores = scored.template get<col::score>();
  for (std::size_t c = 0; c < in.batch; ++c) {
    const float expected = served_from_logit(logits(c, 0), sigmoid);
    const double diff = std::abs(static_cast<double>(scores[c]) - expected);
    report.max_diff = std::max(report.max_diff, diff);
    report.bitwise_equal += scores[c] == expected;
    ++report.compared;
    CHECK(diff <= 1e-6);
  }
}

// Serves requests through lookup >> lookup >> log_features >> score >> top_k with a frozen copy
// of `model`, trains on the logged batches, re-freezes, and checks after every round that the
// pipeline's scores (the top-k kept and every logged candidate) equal the trainable forward's.
template <class Model>
void check_no_skew(Model& model, const world& w, bool sigmoid) {
  auto snapshot = model.freeze();
  std::vector<train::feature_batch_t<ranking_features>> log;
  const auto pipeline = lookup(w.users) >> lookup(w.items) >>
                        train::log_features<ranking_features>([&](auto logged) { log.push_back(std::move(logged)); }) >>
                        score(train::scorer<ranking_features>(snapshot)) >> top_k(3);
  train::adam adam({.lr = 0.02});
  typename Model::workspace ws;
  std::mt19937 rng(5);
  skew_report report;
  // A held-out set of logged examples, to see that training on the logged batches learns.
  const auto held_served = (lookup(w.users) >> lookup(w.items)).run(w.requests(64, rng));
  const auto held_out = train::label_batch<ranking_features>(held_served, labels_of(held_served));
  auto held_out_loss = [&] {
    train::example_batch ex;
    train::build_examples(ranking_features{}, held_out, ex);
    typename Model::workspace eval;
    const auto logits = model.forward(ex.inputs(), eval);
    std::vector<float> x(ex.size()), dx(ex.size());
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = logits(i, 0);
    return train::bce_with_logits(x, ex.labels(), dx);
  };
  const float first_loss = held_out_loss();
  for (int round = 0; round < 40; ++round) {
    const auto served = pipeline.run(w.requests(8, rng));
    REQUIRE(log.size() == static_cast<std::size_t>(round + 1));
    compare(model, served, sigmoid, report);  // the kept top 3 of each request
    // Every candidate the score stage saw, scored again by the score stage alone.
    compare(model, log.back() >> score(train::scorer<ranking_features>(snapshot)), sigmoid, report);

    auto logged = std::move(log.back()).with<col::label>(labels_of(log.back()));
    static_assert(std::is_same_v<decltype(logged), train::training_batch_t<ranking_features>>);
    const train::column_step_result r = train::train_step(model, ws, ranking_features{}, logged, train::optimizer_step(adam));
    CHECK(r.dropped == 0);
    CHECK_FALSE(r.skipped);
    CHECK(r.examples == logged.candidate_count());
    snapshot = model.freeze();  // the pipeline's scorer refers to `snapshot`: it now serves the new weights
  }
  const float last_loss = held_out_loss();
  MESSAGE("compared ", report.compared, " scores: ", report.bitwise_equal, " bitwise equal, max |diff| ", report.max_diff,
          "; held-out loss ", first_loss, " -> ", last_loss);
  CHECK(report.compared > 200);
  CHECK(last_loss < first_loss);  // the logged batches did train the model
}

}  // namespace

TEST_CASE("features: one example per candidate, ids and dense values from the columns") {
  using spec = train::features<train::sparse<col::candidates>, train::dense<col::item_features>, train::sparse<col::user_id>,
                               train::sparse<col::history>, train::dense<age>, train::sparse<category>,
                               train::dense<col::user_features>, train::dense<col::retrieval_score>>;
  static_assert(spec::num_sparse == 4);
  batch<col::user_id, age, col::history, col::user_features, col::candidates, col::item_features, category, col::retrieval_score>
      b(2);
  b.get<col::user_id>() = {70, 42};
  b.get<age>() = {31.0f, 19.0f};
  b.get<col::history>().assign({0, 2, 2}, {5, 6});
  b.get<col::user_features>() = matrix<float>({1, 2, 3, 4}, 2, 2);
  b.get<col::candidates>().assign({0, 2, 3}, {8, 9, 10});
  b.get<col::item_features>() = matrix<float>({0.5f, 0.25f, 0.125f}, 3, 1);
  b.get<category>() = {100, 101, 102};
  b.get<col::retrieval_score>() = {0.9f, 0.8f, 0.7f};
  b.validate();

  train::example_batch ex;
  const train::model_inputs in = train::build_inputs(spec{}, b, ex);
  CHECK(in.batch == 3);
  REQUIRE(in.sparse.size() == 4);
  REQUIRE(in.dense.cols() == 1 + 1 + 2 + 1);  // item_features, age, user_features, retrieval_score (as listed)
  const float dense[3][5] = {{0.5f, 31, 1, 2, 0.9f}, {0.25f, 31, 1, 2, 0.8f}, {0.125f, 19, 3, 4, 0.7f}};
  for (std::size_t c = 0; c < 3; ++c)
    for (std::size_t j = 0; j < 5; ++j) CHECK(in.dense(c, j) == dense[c][j]);
  auto ids = [&](std::size_t t) { return std::vector<id_type>(in.sparse[t].ids.begin(), in.sparse[t].ids.end()); };
  auto offsets = [&](std::size_t t) { return std::vector<id_type>(in.sparse[t].offsets.begin(), in.sparse[t].offsets.end()); };
  CHECK(ids(0) == std::vector<id_type>{8, 9, 10});  // col::candidates: the candidate itself
  CHECK(ids(1) == std::vector<id_type>{70, 70, 42});  // per request: repeated per candidate
  CHECK(ids(2) == std::vector<id_type>{5, 6, 5, 6});  // a list: the request's whole list per candidate
  CHECK(offsets(2) == std::vector<id_type>{0, 2, 4, 4});
  CHECK(ids(3) == std::vector<id_type>{100, 101, 102});  // per candidate
  CHECK(in.sparse[0].weights.empty());

  // Training examples: the same inputs, with the labels of the label column.
  auto logged = std::move(b).with<col::label>({1.0f, 0.0f, 1.0f});
  train::example_batch labelled;
  CHECK(train::build_examples(spec{}, logged, labelled) == 0);
  CHECK(std::vector<float>(labelled.labels().begin(), labelled.labels().end()) == std::vector<float>{1, 0, 1});
  for (std::size_t c = 0; c < 3; ++c)
    for (std::size_t j = 0; j < 5; ++j) CHECK(labelled.dense()(c, j) == dense[c][j]);
  CHECK(std::vector<id_type>(labelled.ids(2).begin(), labelled.ids(2).end()) == ids(2));
}

TEST_CASE("no skew: MLP over embeddings trained on logged serving batches scores like the pipeline") {
  const world w(0);
  for (const bool sigmoid : {false, true}) {
    CAPTURE(sigmoid);
    train::mlp_model_config c{.dense_dim = user_dim + item_dim,
                              .tables = {{num_users * 7919, emb_dim}, {num_items, emb_dim}},
                              .hidden = {8, 4},
                              .sigmoid = sigmoid};
    train::mlp_model model(c, {fixed(num_users * 7919, 1), fixed(num_items, 2)}, 3);
    check_no_skew(model, w, sigmoid);
  }
}

TEST_CASE("no skew: DLRM over dynamic tables (unbounded user ids) trained on logged serving batches") {
  const world w(id_type{1} << 40);
  for (const bool sigmoid : {false, true}) {
    CAPTURE(sigmoid);
    models::dlrm_config c;
    c.dense_dim = user_dim + item_dim;
    c.embedding_dim = emb_dim;
    c.bottom = {8, emb_dim};
    c.table_rows = {0, 0};
    c.top = {8, 1};
    c.final_activation = sigmoid ? cpu::activation::sigmoid : cpu::activation::none;
    train::dlrm_model model(c, {dynamic(), dynamic()}, 4);
    check_no_skew(model, w, sigmoid);
  }
}

TEST_CASE("no skew: DCN-v2 (low-rank cross) trained on logged serving batches") {
  const world w(0);
  models::dcn_v2_config c;
  c.dense_dim = user_dim + item_dim;
  c.tables = {{num_users * 7919, emb_dim}, {num_items, emb_dim}};
  c.cross_layers = 2;
  c.rank = 3;
  c.deep = {8};
  c.sigmoid = true;
  train::dcn_v2_model model(c, {fixed(num_users * 7919, 1), fixed(num_items, 2)}, 5);
  check_no_skew(model, w, true);
}

TEST_CASE("a trainer publishes frozen versions into a slot the pipeline scores with; a wrong shape is refused") {
  const world w(0);
  models::dcn_v2_config c;
  c.dense_dim = user_dim + item_dim;
  c.tables = {{num_users * 7919, emb_dim}, {num_items, emb_dim}};
  c.cross_layers = 2;
  c.rank = 3;
  c.deep = {8};
  c.sigmoid = true;
  train::dcn_v2_model model(c, {fixed(num_users * 7919, 1), fixed(num_items, 2)}, 5);
  using frozen_t = decltype(model.freeze());
  version_registry versions;
  auto ranker = versions.add("ranker", std::make_shared<const frozen_t>(model.freeze()));
  std::vector<train::feature_batch_t<ranking_features>> log;
  const auto pipeline = lookup(w.users) >> lookup(w.items) >>
                        train::log_features<ranking_features>([&](auto logged) { log.push_back(std::move(logged)); }) >>
                        score(train::scorer<ranking_features>(ranker)) >> top_k(3);
  train::adam adam({.lr = 0.02});
  typename train::dcn_v2_model::workspace ws;
  std::mt19937 rng(5);
  skew_report report;
  for (int round = 0; round < 10; ++round) {
    const auto served = pipeline.run(w.requests(8, rng));
    compare(model, served, true, report);  // the run scored with the latest published version
    auto logged = std::move(log.back()).with<col::label>(labels_of(log.back()));
    train::train_step(model, ws, ranking_features{}, logged, train::optimizer_step(adam));
    CHECK(versions.publish(ranker, std::make_shared<const frozen_t>(model.freeze())) ==
          static_cast<std::uint64_t>(round + 1));
  }
  CHECK(report.compared > 20);

  // A version of another shape (a wider deep layer) is refused, naming the slot; runs keep serving
  // the current version, whose scores still match the trainable model.
  models::dcn_v2_config wider = c;
  wider.deep = {16};
  train::dcn_v2_model other(wider, {fixed(num_users * 7919, 1), fixed(num_items, 2)}, 5);
  CHECK_THROWS_WITH_AS(versions.publish(ranker, std::make_shared<const frozen_t>(other.freeze())),
                       doctest::Contains("slot 'ranker': the new version's config"), error);
  CHECK(versions.version() == 10);
  skew_report after;
  compare(model, pipeline.run(w.requests(8, rng)), true, after);
  CHECK(after.compared > 0);
}

TEST_CASE("train_step on columns equals train_step on the examples the features build") {
  const world w(0);
  std::mt19937 rng(9);
  const auto pipeline = lookup(w.users) >> lookup(w.items);
  const auto served = pipeline.run(w.requests(6, rng));
  const auto logged = train::label_batch<ranking_features>(served, labels_of(served));
  static_assert(std::is_same_v<std::remove_cvref_t<decltype(logged)>, train::training_batch_t<ranking_features>>);

  train::mlp_model_config c{.dense_dim = user_dim + item_dim, .tables = {{num_users * 7919, emb_dim}, {num_items, emb_dim}}, .hidden = {8}};
  train::mlp_model a(c, {fixed(num_users * 7919, 1), fixed(num_items, 2)}, 3), b(c, {fixed(num_users * 7919, 1), fixed(num_items, 2)}, 3);
  train::sgd sgd_a({.lr = 0.1}), sgd_b({.lr = 0.1});
  train::mlp_model::workspace ws_a, ws_b;
  std::vector<float> logits_a, logits_b;
  const auto ra = train::train_step(a, ws_a, ranking_features{}, logged, train::optimizer_step(sgd_a), &logits_a);
  train::example_batch ex;
  train::build_examples(ranking_features{}, logged, ex);
  const auto rb = train::train_step(b, ws_b, ex, train::optimizer_step(sgd_b), &logits_b);
  CHECK(ra.loss == rb.loss);
  CHECK(logits_a == logits_b);
  const auto pa = a.parameters(), pb = b.parameters();
  for (std::size_t i = 0; i < pa.size(); ++i) CHECK(pa[i]->value == pb[i]->value);
}

TEST_CASE("train_step on columns: another label column, bad labels and features, empty batches") {
  const world w(0);
  std::mt19937 rng(13);
  auto served = (lookup(w.users) >> lookup(w.items)).run(w.requests(5, rng));
  const std::size_t n = served.candidate_count();
  REQUIRE(n >= 4);
  train::mlp_model_config c{.dense_dim = user_dim + item_dim, .tables = {{num_users * 7919, emb_dim}, {num_items, emb_dim}}, .hidden = {8}};
  train::mlp_model model(c, {fixed(num_users * 7919, 1), fixed(num_items, 2)}, 3);
  train::mlp_model::workspace ws;
  train::sgd sgd({.lr = 0.1});

  SUBCASE("a label column of your own") {
    auto logged = train::label_batch<ranking_features, watched>(served, std::vector<float>(n, 1.0f));
    const auto r = train::train_step<watched>(model, ws, ranking_features{}, logged, train::optimizer_step(sgd));
    CHECK(r.examples == n);
    CHECK(std::isfinite(r.loss));
  }
  SUBCASE("labels outside [0, 1] and non-finite features are left out and counted") {
    std::vector<float> labels(n, 0.0f);
    labels[0] = std::numeric_limits<float>::quiet_NaN();
    labels[1] = 2.0f;
    labels[2] = -0.5f;
    auto logged = train::label_batch<ranking_features>(served, labels);
    logged.get<col::item_features>()(3, 0) = std::numeric_limits<float>::infinity();
    const auto r = train::train_step(model, ws, ranking_features{}, logged, train::optimizer_step(sgd));
    CHECK(r.dropped == 4);
    CHECK(r.examples == n - 4);
    CHECK(std::isfinite(r.loss));
    for (auto* p : model.parameters())
      for (float v : p->value) REQUIRE(std::isfinite(v));
    // Serving passes a non-finite feature through: that candidate scores NaN, the others do not.
    const auto frozen = model.freeze();
    const auto scored = logged >> score(train::scorer<ranking_features>(frozen));
    CHECK(std::isnan(scored.get<col::score>()[3]));
    CHECK(std::isfinite(scored.get<col::score>()[4]));
  }
  SUBCASE("every candidate dropped, or no candidates at all: nothing happens, loss NaN") {
    auto all_bad = train::label_batch<ranking_features>(served, std::vector<float>(n, 7.0f));
    const auto r = train::train_step(model, ws, ranking_features{}, all_bad, train::optimizer_step(sgd));
    CHECK(r.dropped == n);
    CHECK(r.examples == 0);
    CHECK(std::isnan(r.loss));
    train::training_batch_t<ranking_features> empty(0);
    const auto e = train::train_step(model, ws, ranking_features{}, empty, train::optimizer_step(sgd));
    CHECK(e.examples == 0);
    CHECK(std::isnan(e.loss));
    train::training_batch_t<ranking_features> no_candidates(3);  // three requests, no candidates
    const auto z = train::train_step(model, ws, ranking_features{}, no_candidates, train::optimizer_step(sgd));
    CHECK(z.examples == 0);
  }
  SUBCASE("mismatches are errors that name the problem") {
    CHECK_THROWS_WITH_AS(train::label_batch<ranking_features>(served, std::vector<float>(n + 1, 0.0f)),
                         doctest::Contains("train::label_batch: "), error);
    auto logged = std::move(served).with<col::label>(std::vector<float>(n, 0.0f));
    logged.get<col::label>().pop_back();
    CHECK_THROWS_WITH_AS(train::train_step(model, ws, ranking_features{}, logged, train::optimizer_step(sgd)),
                         doctest::Contains("column 'label' has"), error);
    logged.get<col::label>().push_back(0.0f);
    using narrow = train::features<train::sparse<col::user_id>, train::sparse<col::candidates>, train::dense<col::item_features>>;
    CHECK_THROWS_WITH_AS(train::train_step(model, ws, narrow{}, logged, train::optimizer_step(sgd)),
                         doctest::Contains("the features give 2 dense values per candidate but the model takes 5"), error);
    using one_bag = train::features<train::sparse<col::candidates>, train::dense<col::user_features>, train::dense<col::item_features>>;
    CHECK_THROWS_WITH_AS(train::train_step(model, ws, one_bag{}, logged, train::optimizer_step(sgd)),
                         doctest::Contains("the features give 1 sparse features but the model has 2"), error);
    // A hand-built batch whose columns disagree is an error naming the column, in training and serving.
    logged.get<col::item_features>() = matrix<float>(1, item_dim);
    CHECK_THROWS_WITH_AS(train::train_step(model, ws, ranking_features{}, logged, train::optimizer_step(sgd)),
                         doctest::Contains("column 'item_features' has 1 entries"), error);
    const auto frozen = model.freeze();
    CHECK_THROWS_WITH_AS(logged >> score(train::scorer<ranking_features>(frozen)),
                         doctest::Contains("column 'item_features' has 1 entries"), error);
  }
}

// The @code example of train::features in train/features.hpp, with its free names defined.
namespace doc_example {
void run() {
  const world w(0);
  const auto& user_store = w.users;
  const auto& item_store = w.items;
  std::mt19937 rng(17);
  const auto requests = w.requests(4, rng);
  models::dlrm_config config;
  config.dense_dim = user_dim + item_dim;
  config.embedding_dim = emb_dim;
  config.bottom = {emb_dim};
  config.table_rows = {num_users * 7919, num_items};
  config.top = {4, 1};
  auto user_table = fixed(num_users * 7919, 1), item_table = fixed(num_items, 2);
  std::size_t shown_candidates = 0;
  {
    // ---- begin: the header's example, verbatim (but `clicks`, defined where the outcomes are known)
    using namespace recpipe;
    using ranking_features = train::features<train::sparse<col::user_id>, train::sparse<col::candidates>,
                                             train::dense<col::user_features>, train::dense<col::item_features>>;
    train::dlrm_model model(config, {user_table, item_table}, /*seed=*/1);  // dense_dim: user + item widths
    auto snapshot = model.freeze();
    std::vector<train::feature_batch_t<ranking_features>> logged;       // a thread-safe queue in a server
    auto serve = lookup(user_store) >> lookup(item_store)
               >> train::log_features<ranking_features>([&](auto seen) { logged.push_back(std::move(seen)); })
               >> score(train::scorer<ranking_features>(snapshot)) >> top_k(10);
    auto shown = serve.run(requests);                                    // requests: user_id, candidates
    // ... once the outcomes of the logged candidates are known (one label per candidate):
    const std::vector<float> clicks = labels_of(logged.back());
    auto examples = std::move(logged.back()).with<col::label>(clicks);   // training_batch_t<ranking_features>
    train::dlrm_model::workspace ws;
    train::adam adam({.lr = 1e-3});
    auto step = train::train_step(model, ws, ranking_features{}, examples, train::optimizer_step(adam));
    snapshot = model.freeze();  // between runs: the score stage now serves the new weights
    // ---- end
    static_assert(std::is_same_v<decltype(examples), train::training_batch_t<ranking_features>>);
    CHECK(step.examples == requests.candidate_count());
    CHECK_FALSE(step.skipped);
    shown_candidates = shown.candidate_count();
  }
  CHECK(shown_candidates == requests.candidate_count());  // fewer than 10 per request: top_k keeps all
}
}  // namespace doc_example

TEST_CASE("the example of train/features.hpp compiles and runs") { doc_example::run(); }
