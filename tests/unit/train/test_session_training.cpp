// SPDX-License-Identifier: Apache-2.0
// recpipe tests: train/session_training.hpp (the epoch loop, batched next-item evaluation) and the
// session transformer's sampled softmax and score_session: gradients against finite
// differences, evaluation against a prefix-by-prefix loop, two threads = one thread, learning on
// synthetic sessions with both objectives, bad input.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <recpipe/models/session_transformer.hpp>
#include <recpipe/io/sessions.hpp>
#include <recpipe/train/next_item_eval.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/session_training.hpp>
#include <recpipe/train/session_transformer_model.hpp>
#include "../../common/learning_fixtures.hpp"

namespace train = recpipe::train;
namespace models = recpipe::models;
using recpipe::id_type;
using recpipe::matrix;

using recpipe::testing::perturb;

namespace {

// Synthetic sessions of `items` items: each next click is (previous * 7 + 3) mod items with
// probability 0.9, else a random item; lengths 2 to 12 (some longer than max_length 8).
train::session_list synthetic(std::mt19937& rng, std::size_t sessions, id_type items) {
  train::session_list out;
  std::uniform_int_distribution<id_type> item(0, items - 1);
  std::uniform_int_distribution<int> length(2, 12);
  std::uniform_real_distribution<double> u(0, 1);
  for (std::size_t s = 0; s < sessions; ++s) {
    std::vector<id_type> v(static_cast<std::size_t>(length(rng)));
    v[0] = item(rng);
    for (std::size_t t = 1; t < v.size(); ++t) v[t] = u(rng) < 0.9 ? (v[t - 1] * 7 + 3) % items : item(rng);
    out.add(v);
  }
  return out;
}

}  // namespace

TEST_CASE("next_item_loss_sampled: gradients match finite differences; all negatives = full softmax") {
  std::mt19937 rng(7);
  const auto config = recpipe::testing::small_session_config(23);
  train::session_transformer_model model(config, 3);
  perturb(model, rng);
  model.loss_chunk_rows = 5;
  const train::session_list s = synthetic(rng, 6, 23);
  const auto targets = train::session_transformer_model::next_item_targets(s.offsets, s.items);
  std::vector<id_type> negatives{1, 5, 5, 9, 22, 0, 13, 4};
  std::vector<float> log_q(23);
  for (std::size_t i = 0; i < log_q.size(); ++i) log_q[i] = -3.0f - 0.05f * static_cast<float>(i);
  model.zero_grad();
  const float loss = model.next_item_loss_sampled(s.offsets, s.items, targets, negatives, log_q);
  CHECK(loss > 0.0f);
  train::session_transformer_model probe = model;
  model.for_each_parameter([&](train::parameter& p) {
    CAPTURE(p.name);
    std::vector<std::size_t> order(p.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::partial_sort(order.begin(), order.begin() + 3, order.end(),
                      [&](std::size_t a, std::size_t b) { return std::fabs(p.grad[a]) > std::fabs(p.grad[b]); });
    const float peak = std::fabs(p.grad[order[0]]);
    CHECK(peak > 0.0f);
    for (std::size_t k = 0; k < 3; ++k) {
      const std::size_t i = order[k];
      train::parameter& q = *probe.find(p.name);
      const float saved = q.value[i], h = 1e-2f;
      q.value[i] = saved + h;
      const double plus = probe.next_item_loss_sampled(s.offsets, s.items, targets, negatives, log_q);
      q.value[i] = saved - h;
      const double minus = probe.next_item_loss_sampled(s.offsets, s.items, targets, negatives, log_q);
      q.value[i] = saved;
      const double numeric = (plus - minus) / (2.0 * h);
      CAPTURE(numeric);
      CHECK(std::fabs(numeric - p.grad[i]) <= 2e-2 * peak + 1e-4);
    }
  });
  // Bad input names the problem; no negatives leaves only the positive: loss 0.
  const std::vector<id_type> outside{1, 23};
  CHECK_THROWS_WITH_AS(model.next_item_loss_sampled(s.offsets, s.items, targets, outside, log_q),
                       doctest::Contains("negatives[1] = 23 is outside [0, 23)"), recpipe::error);
  const std::vector<float> short_log_q(5);
  CHECK_THROWS_WITH_AS(model.next_item_loss_sampled(s.offsets, s.items, targets, negatives, short_log_q),
                       doctest::Contains("log_q has 5 values"), recpipe::error);
  {
    train::session_transformer_model lone = model;
    lone.zero_grad();
    CHECK(lone.next_item_loss_sampled(s.offsets, s.items, targets, {}, log_q) == doctest::Approx(0.0f));
  }
  // Every item once as a negative and no correction: the target's own negative entry is an
  // accidental hit, so the softmax runs over the catalog exactly once: the full softmax loss.
  std::vector<id_type> all(23);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<id_type>(i);
  train::session_transformer_model a = model, b = model;
  a.zero_grad();
  b.zero_grad();
  const float sampled = a.next_item_loss_sampled(s.offsets, s.items, targets, all, {});
  const float full = b.next_item_loss(s.offsets, s.items, targets);
  CHECK(sampled == doctest::Approx(full).epsilon(1e-5));
  const auto& ga = a.find("item_embedding.weight")->grad;
  const auto& gb = b.find("item_embedding.weight")->grad;
  double worst = 0;
  for (std::size_t i = 0; i < ga.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(ga[i] - gb[i])));
  CHECK(worst < 1e-5);
}

TEST_CASE("score_session equals the frozen serving model's scores; evaluate_next_item equals a prefix loop") {
  std::mt19937 rng(8);
  const auto config = recpipe::testing::small_session_config(23);
  train::session_transformer_model model(config, 4);
  perturb(model, rng);
  const models::session_transformer serving = model.freeze();
  const train::session_list s = synthetic(rng, 12, 23);
  std::vector<float> scores(23);
  matrix<float> encoded(1, 16), served(1, 23);
  double hits = 0, rr = 0;
  std::size_t predictions = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto session = s.session(i);
    for (std::size_t t = 1; t < session.size(); ++t) {
      const auto prefix = session.first(t);
      model.score_session(prefix, scores);
      const id_type offsets[2] = {0, static_cast<id_type>(t)};
      serving.encode(offsets, prefix, encoded.view());
      serving.score_all_items(encoded.view(), served.view());
      for (std::size_t j = 0; j < 23; ++j) REQUIRE(scores[j] == doctest::Approx(served(0, j)).epsilon(1e-4));
      const float target = scores[static_cast<std::size_t>(session[t])];
      const auto rank = 1 + std::count_if(scores.begin(), scores.end(), [&](float v) { return v > target; });
      if (rank <= 5) {
        hits += 1;
        rr += 1.0 / static_cast<double>(rank);
      }
      ++predictions;
    }
  }
  const train::next_item_metrics m = train::evaluate_next_item_batched(model, s, 5, 3);  // several batches
  CHECK(m.predictions == predictions);
  CHECK(m.recall == doctest::Approx(hits / static_cast<double>(predictions)));
  CHECK(m.mrr == doctest::Approx(rr / static_cast<double>(predictions)));
  // The same numbers as the library's prefix-by-prefix protocol (next_item_eval.hpp) at k = 5.
  recpipe::io::session_log log;
  log.offsets = s.offsets;
  log.items = s.items;
  log.session_ids.resize(s.size());
  log.times.assign(s.items.size(), 0.0);
  const auto reference = train::evaluate_next_item(
      [&](std::span<const id_type> prefix, std::span<float> out) { model.score_session(prefix, out); }, log, 23,
      {.cutoffs = {5}, .threads = 1});
  CHECK(reference.predictions == predictions);
  CHECK(reference.recall(5) == doctest::Approx(m.recall));
  CHECK(reference.mrr(5) == doctest::Approx(m.mrr));
  // Empty prefix: all zero; bad input is an error naming the problem.
  model.score_session({}, scores);
  for (float v : scores) CHECK(v == 0.0f);
  const std::vector<id_type> unknown{3, 23};
  CHECK_THROWS_WITH_AS(model.score_session(unknown, scores), doctest::Contains("outside [0, 23)"), recpipe::error);
  std::vector<float> short_scores(5);
  const std::vector<id_type> ok{3};
  CHECK_THROWS_WITH_AS(model.score_session(ok, short_scores), doctest::Contains("scores has 5 values"), recpipe::error);
  // Sessions of one item or none give no prediction.
  train::session_list tiny;
  tiny.add(std::vector<id_type>{4});
  tiny.add(std::vector<id_type>{});
  CHECK(train::evaluate_next_item_batched(model, tiny).predictions == 0);
  CHECK_THROWS_AS(train::evaluate_next_item_batched(model, s, 0), recpipe::error);
}

TEST_CASE("session_trainer: two threads make the same update as one") {
  std::mt19937 rng(9);
  const auto config = recpipe::testing::small_session_config(23);
  const train::session_list s = synthetic(rng, 40, 23);
  for (auto objective : {train::next_item_objective::full_softmax, train::next_item_objective::sampled_softmax}) {
    train::session_transformer_model one(config, 5), two(config, 5);
    train::adam opt1({.lr = 1e-2}), opt2({.lr = 1e-2});
    train::session_trainer t1(one, opt1, {.batch_size = 16, .epochs = 2, .objective = objective, .num_negatives = 10, .threads = 1});
    train::session_trainer t2(two, opt2, {.batch_size = 16, .epochs = 2, .objective = objective, .num_negatives = 10, .threads = 2});
    const auto r1 = t1.fit(s), r2 = t2.fit(s);
    REQUIRE(r1.size() == 2);
    CHECK(r1[1].loss == doctest::Approx(r2[1].loss).epsilon(1e-3));
    CHECK(r1[1].positions == r2[1].positions);
    CHECK(r1[1].steps == 3);
    double worst = 0;
    const auto& a = one.find("item_embedding.weight")->value;
    const auto& b = two.find("item_embedding.weight")->value;
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(a[i] - b[i])));
    CHECK(worst < 1e-3);
  }
}

TEST_CASE("session_trainer learns synthetic sessions with full and sampled softmax, with progress lines") {
  std::mt19937 rng(10);
  const id_type items = 40;
  const train::session_list train_sessions = synthetic(rng, 300, items), valid = synthetic(rng, 60, items);
  for (auto objective : {train::next_item_objective::full_softmax, train::next_item_objective::sampled_softmax}) {
    CAPTURE(static_cast<int>(objective));
    train::session_transformer_model model(recpipe::testing::small_session_config(static_cast<std::size_t>(items)), 6);
    const double before = train::evaluate_next_item_batched(model, valid, 5).recall;
    train::adam opt({.lr = 1e-2});
    std::ostringstream progress;
    train::session_trainer trainer(model, opt,
                                   {.batch_size = 32, .epochs = 6, .objective = objective, .num_negatives = 16,
                                    .eval_k = 5, .progress = &progress});
    const auto stats = trainer.fit(train_sessions, &valid);
    MESSAGE(progress.str());
    REQUIRE(stats.size() == 6);
    CHECK(stats.back().loss < 0.5 * stats.front().loss);
    CHECK(stats.back().validated);
    // The rule covers 90% of the clicks: Recall@5 well above chance (5 / 40) and the start.
    CHECK(before < 0.35);
    CHECK(stats.back().validation.recall > 0.8);
    CHECK(stats.back().validation.mrr > 0.6);
    CHECK(progress.str().find("epoch 6/6  loss ") != std::string::npos);
    CHECK(progress.str().find("valid Recall@5 ") != std::string::npos);
  }
}

TEST_CASE("session_trainer: bad input and steps without a label") {
  const auto config = recpipe::testing::small_session_config(23);
  train::session_transformer_model model(config, 5);
  train::adam opt({.lr = 1e-2});
  CHECK_THROWS_WITH_AS(train::session_trainer(model, opt, {.batch_size = 0}), doctest::Contains("batch_size"), recpipe::error);
  CHECK_THROWS_WITH_AS(train::session_trainer(model, opt, {.threads = 0}), doctest::Contains("threads"), recpipe::error);
  CHECK_THROWS_AS(train::session_trainer(model, opt, {.objective = train::next_item_objective::sampled_softmax, .num_negatives = 0}),
                  recpipe::error);
  train::session_trainer trainer(model, opt, {.threads = 2});
  // Unknown item ids are an error naming the click; nothing is written.
  train::session_list bad;
  bad.add(std::vector<id_type>{1, 2});
  bad.add(std::vector<id_type>{3, 99});
  const auto before = model.find("item_embedding.weight")->value;
  CHECK_THROWS_WITH_AS(trainer.step(bad), doctest::Contains("item 99 (click 3)"), recpipe::error);
  CHECK(model.find("item_embedding.weight")->value == before);
  // Empty batches and sessions of one item: no labelled position, no step.
  train::session_list singles;
  singles.add(std::vector<id_type>{1});
  singles.add(std::vector<id_type>{});
  CHECK(trainer.step(singles).second == 0);
  CHECK(trainer.step(train::session_list{}).second == 0);
  CHECK(model.find("item_embedding.weight")->value == before);
  CHECK(opt.steps() == 0);
  // Non-finite weights: the step is skipped and counted.
  model.find("final_norm.weight")->value[0] = std::numeric_limits<float>::quiet_NaN();
  train::session_list ok;
  ok.add(std::vector<id_type>{1, 2, 3});
  const auto [loss, positions] = trainer.step(ok);
  CHECK(positions == 2);
  CHECK(std::isnan(loss));
  CHECK(trainer.skipped() == 1);
  CHECK(opt.steps() == 0);
}

TEST_CASE("add_items grows the catalog; training with a fresh optimizer learns the new items") {
  std::mt19937 rng(11);
  const auto config = recpipe::testing::small_session_config(20);
  train::session_transformer_model model(config, 5);
  const auto before = model.find("item_embedding.weight")->value;
  model.add_items(4, 9);
  CHECK(model.config().num_items == 24);
  const train::parameter& table = *model.find("item_embedding.weight");
  REQUIRE(table.shape[0] == 24);
  REQUIRE(table.value.size() == 24 * 16);
  CHECK(std::equal(before.begin(), before.end(), table.value.begin()));  // old rows kept
  CHECK(table.grad.size() == 24 * 16);
  // The new items (20..23) follow a rule: 20 -> 21 -> 22 -> 23.
  train::session_list s;
  for (int i = 0; i < 40; ++i) s.add(std::vector<id_type>{20, 21, 22, 23});
  train::adam opt({.lr = 1e-2});
  train::session_trainer trainer(model, opt, {.batch_size = 8, .epochs = 5});
  trainer.fit(s);
  std::vector<float> scores(24);
  model.score_session(std::vector<id_type>{20, 21}, scores);
  CHECK(std::max_element(scores.begin(), scores.end()) - scores.begin() == 22);
  CHECK(model.freeze().config().num_items == 24);
  model.add_items(0, 1);  // nothing
  CHECK(model.config().num_items == 24);
}
