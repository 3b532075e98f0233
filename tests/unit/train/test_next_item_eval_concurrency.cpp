// SPDX-License-Identifier: Apache-2.0
// The next-item evaluator's threads share one const model and the test log: run under
// ThreadSanitizer by scripts/test (label `concurrency`). Metrics must not depend on the thread count.
#include <doctest/doctest.h>

#include <recpipe/models/session_baselines.hpp>
#include <recpipe/train/next_item_eval.hpp>

namespace io = recpipe::io;
namespace train = recpipe::train;

TEST_CASE("evaluate_next_item: 1 and 4 threads over shared baselines agree") {
  const auto split = io::preprocess_sessions(io::synthetic_sessions({.sessions = 600, .items = 120, .seed = 11}),
                                             {.min_item_support = 1, .test_days = 2.0});
  REQUIRE(split.test.num_sessions() > 50);
  const recpipe::models::item_knn knn(split.train);
  const recpipe::models::vsknn vs(split.train, {.k = 30, .sample_size = 100});
  for (int model = 0; model < 2; ++model) {
    const auto run = [&](std::size_t threads) {
      const train::next_item_eval_options o{.cutoffs = {5, 20}, .threads = threads};
      return model == 0 ? train::evaluate_next_item(knn, split.test, split.num_items(), o)
                        : train::evaluate_next_item(vs, split.test, split.num_items(), o);
    };
    const auto one = run(1), four = run(4);
    CHECK(four.threads == 4);
    CHECK(one.predictions == four.predictions);
    CHECK(one.at(5).hits == four.at(5).hits);
    CHECK(one.at(20).hits == four.at(20).hits);
    CHECK(one.mrr(20) == doctest::Approx(four.mrr(20)).epsilon(1e-12));
  }
}
