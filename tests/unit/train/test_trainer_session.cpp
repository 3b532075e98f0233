// SPDX-License-Identifier: Apache-2.0
// train::trainer with a pluggable step: the session transformer (full-softmax next-item loss) and
// the two-tower (sampled softmax with in-batch negatives) trained from streams on the trainer's
// own thread, with its batching, counters and bad-event handling.
#include <doctest/doctest.h>

#include <recpipe/models/session_transformer.hpp>
#include <recpipe/train/dynamic_table.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/session_transformer_model.hpp>
#include <recpipe/train/trainer.hpp>
#include <recpipe/train/two_tower_model.hpp>
#include "../../common/learning_fixtures.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

using namespace recpipe;

namespace {

// A click stream cut into sessions: the items one user clicked, in order.
struct session_event {
  std::vector<id_type> items;
  float label = 1.0f;  // a session that ended in a purchase; NaN marks a corrupt event
};

// One session = one example whose bag 0 holds the items. Empty sessions and ids outside the
// catalog throw recpipe::error, which the trainer counts as a bad event.
void featurize_session(const session_event& e, train::example_batch& b, std::size_t num_items) {
  if (e.items.empty()) detail::fail("featurize_session: empty session");
  for (id_type i : e.items)
    if (i < 0 || static_cast<std::size_t>(i) >= num_items) detail::fail("featurize_session: item ", i, " outside the catalog");
  b.begin_example(e.label);
  for (id_type i : e.items) b.add_id(0, i);
}

// The next-item step: zero grads, forward + full softmax CE + backward, then Adam only when
// every gradient is finite.
train::step_result next_item_step(train::session_transformer_model& model, train::dense_optimizer& opt,
                                  train::example_batch& b) {
  train::step_result r;
  r.examples = b.size();
  const cpu::bag_input sessions = b.inputs().sparse[0];
  model.zero_grad();
  r.loss = model.next_item_loss(sessions.offsets, sessions.ids,
                                train::session_transformer_model::next_item_targets(sessions.offsets, sessions.ids));
  r.skipped = !std::isfinite(r.loss) || !opt.step_if_finite(model.parameters());
  return r;
}

}  // namespace

TEST_CASE("trainer with a custom step trains the session transformer on its own thread from a click stream") {
  constexpr std::size_t n = 20;
  const models::session_transformer_config c = recpipe::testing::small_session_config(n);
  train::session_transformer_model model(c, 11);
  train::adam opt({.lr = 1e-2});

  // Sessions where item i is followed by (i + 1) mod n; every 50th event is bad (empty, NaN
  // label, unknown item).
  std::mt19937 rng(43);
  std::uniform_int_distribution<id_type> start(0, n - 1);
  std::uniform_int_distribution<int> length(2, 10);
  const auto make_session = [&] {
    session_event e;
    e.items.resize(static_cast<std::size_t>(length(rng)));
    id_type item = start(rng);
    for (auto& x : e.items) x = (item++) % static_cast<id_type>(n);
    return e;
  };
  constexpr int num_events = 16 * 70;
  int produced = 0, bad = 0;
  const auto source = [&]() -> std::optional<session_event> {
    if (produced == num_events) return std::nullopt;
    ++produced;
    session_event e = make_session();
    if (produced % 50 == 0) {
      switch (bad++ % 3) {
        case 0: e.items.clear(); break;
        case 1: e.label = std::numeric_limits<float>::quiet_NaN(); break;
        default: e.items[0] = static_cast<id_type>(n) + 5; break;
      }
    }
    return e;
  };

  std::vector<float> losses;
  train::trainer<train::session_transformer_model, session_event> t(
      model, train::batch_shape{.dense_dim = 0, .num_sparse = 1},
      [&](train::example_batch& b, std::vector<float>&) {
        const train::step_result r = next_item_step(model, opt, b);
        losses.push_back(r.loss);  // only the training thread writes it
        return r;
      },
      [](const session_event& e, train::example_batch& b) { featurize_session(e, b, n); },
      {.batch_size = 16, .progress = train::progress_mode::off});
  t.start(source);
  t.join();

  const train::trainer_stats s = t.stats();
  CHECK(s.events == static_cast<std::uint64_t>(num_events));
  CHECK(s.bad_events == static_cast<std::uint64_t>(bad));
  CHECK(bad == num_events / 50);
  CHECK(s.examples == s.events - s.bad_events);
  CHECK(s.skipped_steps == 0);
  CHECK(s.steps == losses.size());
  CHECK(std::isfinite(s.running_loss));
  CHECK(std::isnan(s.running_auc));  // the step gave no scores
  REQUIRE(losses.size() >= 60);
  MESSAGE("loss: first ", losses.front(), ", last ", losses.back(), ", running ", s.running_loss);
  CHECK(losses.front() > 2.5f);  // ~log(20) at the start
  CHECK(losses.back() < 0.3f * losses.front());

  // The frozen serving model ranks the true next item first for most fresh sessions.
  const models::session_transformer serving = t.with_model([](train::session_transformer_model& m) { return m.freeze(); });
  std::vector<id_type> offsets{0}, items;
  for (int b = 0; b < 32; ++b) {
    const session_event e = make_session();
    items.insert(items.end(), e.items.begin(), e.items.end());
    offsets.push_back(static_cast<id_type>(items.size()));
  }
  const std::size_t b = offsets.size() - 1;
  matrix<float> encoded(b, c.embedding_dim), scores(b, n);
  serving.encode(offsets, items, encoded.view());
  serving.score_all_items(encoded.view(), scores.view());
  std::size_t correct = 0;
  for (std::size_t r = 0; r < b; ++r) {
    const auto row = scores.row(r);
    const auto best = static_cast<id_type>(std::max_element(row.begin(), row.end()) - row.begin());
    correct += best == (items[static_cast<std::size_t>(offsets[r + 1] - 1)] + 1) % static_cast<id_type>(n);
  }
  MESSAGE("next item ranked first for ", correct, " of ", b, " sessions");
  CHECK(correct >= b * 8 / 10);
}

TEST_CASE("trainer with a custom step trains the two-tower with sampled softmax and in-batch negatives") {
  constexpr std::size_t n = 30;
  train::two_tower_model model = recpipe::testing::small_retrieval_two_tower();
  train::adam adam({.lr = 0.01});

  // A stream of (user, item) clicks: each user clicks one favourite item; every 40th event has a
  // NaN weight (a corrupt event).
  struct click {
    id_type user = 0, item = 0;
    float weight = 1.0f;
  };
  auto favourite = [](std::size_t u) { return static_cast<id_type>((u * 7 + 3) % n); };
  std::mt19937 gen(4);
  constexpr int num_events = 16 * 200;
  int produced = 0, bad = 0;
  const auto source = [&]() -> std::optional<click> {
    if (produced == num_events) return std::nullopt;
    ++produced;
    const std::size_t u = gen() % n;
    click e{static_cast<id_type>(u), favourite(u)};
    if (produced % 40 == 0) {
      e.weight = std::numeric_limits<float>::quiet_NaN();
      ++bad;
    }
    return e;
  };

  std::vector<float> losses;
  std::vector<id_type> item_ids;
  train::trainer<train::two_tower_model, click> t(
      model, train::batch_shape{.dense_dim = 0, .num_sparse = 2},
      [&, ws = std::make_shared<train::two_tower_model::workspace>()](train::example_batch& b, std::vector<float>&) {
        const std::span<const id_type> items = b.inputs().sparse[1].ids;  // one item per pair
        item_ids.assign(items.begin(), items.end());
        const train::step_result r = train::train_step_sampled_softmax(model, *ws, b, item_ids, {}, train::optimizer_step(adam));
        losses.push_back(r.loss);
        return r;
      },
      [](const click& e, train::example_batch& b) {
        b.begin_example(1.0f);
        b.add_id(0, e.user, e.weight);
        b.add_id(1, e.item);
      },
      {.batch_size = 16, .progress = train::progress_mode::off});
  t.start(source);
  t.join();

  const train::trainer_stats s = t.stats();
  CHECK(s.events == static_cast<std::uint64_t>(num_events));
  CHECK(s.bad_events == static_cast<std::uint64_t>(bad));
  CHECK(s.examples == s.events - s.bad_events);
  CHECK(s.skipped_steps == 0);
  REQUIRE(losses.size() >= 190);
  float first = 0, last = 0;
  for (std::size_t i = 0; i < 10; ++i) {
    first += losses[i] / 10;
    last += losses[losses.size() - 1 - i] / 10;
  }
  MESSAGE("sampled-softmax loss: first 10 steps ", first, ", last 10 ", last);
  CHECK(last < 0.5f * first);
}

TEST_CASE("trainer with a custom step: a missing step is refused and an error the step throws ends the thread") {
  train::session_transformer_model model(
      [] {
        models::session_transformer_config c;
        c.num_items = 5;
        c.embedding_dim = 4;
        c.max_length = 4;
        c.num_heads = 1;
        c.ffn_dim = 4;
        c.num_layers = 1;
        return c;
      }(),
      1);
  const auto featurize = [](const session_event& e, train::example_batch& b) {
    b.begin_example(e.label);
    for (id_type i : e.items) b.add_id(0, i);
  };
  CHECK_THROWS_WITH_AS((train::trainer<train::session_transformer_model, session_event>(model, {0, 1}, {}, featurize)),
                       doctest::Contains("no step given"), recpipe::error);
  train::adam opt({.lr = 1e-2});
  train::trainer<train::session_transformer_model, session_event> t(
      model, {0, 1}, [&](train::example_batch& b, std::vector<float>&) { return next_item_step(model, opt, b); }, featurize,
      {.batch_size = 2, .progress = train::progress_mode::off});
  // This featurizer does not check ids: the model's own check throws inside the step.
  int produced = 0;
  t.start([&]() -> std::optional<session_event> {
    if (produced++ == 4) return std::nullopt;
    return session_event{{1, 2, produced == 3 ? id_type{9} : id_type{3}}};
  });
  CHECK_THROWS_WITH_AS(t.join(), doctest::Contains("outside [0, 5)"), recpipe::error);
  CHECK(t.stats().steps == 1);
}
