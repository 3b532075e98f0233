// SPDX-License-Identifier: Apache-2.0
// train::trainer on its own thread: start/stop/join, with_model and stats() from another thread,
// errors carried to join(). Runs under ThreadSanitizer too (label concurrency).
#include <doctest/doctest.h>

#include <recpipe/train/mlp_model.hpp>
#include <recpipe/train/trainer.hpp>

#include "../../common/trainer_fixtures.hpp"

#include <chrono>
#include <functional>
#include <limits>
#include <optional>
#include <thread>

using namespace recpipe;
using recpipe::testing::event;
using recpipe::testing::fixture;
using recpipe::testing::synthetic_stream;

TEST_CASE("trainer: start/stop/join on its own thread, with_model between steps") {
  fixture f;
  train::trainer<train::mlp_model, event> t(f.model, f.sgd(), fixture::featurize, f.quiet(8));
  synthetic_stream endless(std::numeric_limits<std::size_t>::max());
  t.start(std::function<std::optional<event>()>(std::ref(endless)));
  CHECK_THROWS_AS(t.start([]() -> std::optional<event> { return std::nullopt; }), error);
  while (t.stats().steps < 5) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto frozen = t.with_model([](train::mlp_model& m) { return m.freeze(); });
  CHECK(frozen.id_maps.size() == 2);
  t.stop();
  t.join();
  CHECK_FALSE(t.running());
  const auto s = t.stats();
  CHECK(s.steps >= 5);
  CHECK(s.examples == s.events);  // the partial batch was trained at stop
}

TEST_CASE("trainer: an error in the source ends the thread and join rethrows it") {
  fixture f;
  train::trainer<train::mlp_model, event> t(f.model, f.sgd(), fixture::featurize, f.quiet());
  int calls = 0;
  t.start([&]() -> std::optional<event> {
    if (++calls > 3) throw error("recpipe: source broke");
    return event{1, 2, 1.0f, 0.0f, 0};
  });
  CHECK_THROWS_WITH_AS(t.join(), doctest::Contains("source broke"), error);
}

