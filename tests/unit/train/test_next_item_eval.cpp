// SPDX-License-Identifier: Apache-2.0
// Tests for the next-item protocol: known ranks give known Recall@k / MRR@k, the three tie rules,
// NaN scores, unknown items, empty and one-click sessions, limits, threads, errors, and the
// baselines on the synthetic sessions (structure a learner can find: kNN beats popularity).
#include <doctest/doctest.h>

#include "common/file_fixtures.hpp"

#include <algorithm>
#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <recpipe/models/session_baselines.hpp>
#include <recpipe/train/next_item_eval.hpp>

namespace io = recpipe::io;
namespace train = recpipe::train;
using recpipe::id_type;

using recpipe::testing::error_of;

namespace {

// A test log over a catalog of n items (dense ids used as they are).
io::session_log make_log(std::size_t n, const std::vector<std::vector<id_type>>& sessions) {
  io::session_log log;
  for (std::size_t i = 0; i < n; ++i) log.vocabulary.add(static_cast<id_type>(i));
  for (std::size_t s = 0; s < sessions.size(); ++s) {
    log.session_ids.push_back(static_cast<id_type>(s));
    for (id_type i : sessions[s]) {
      log.items.push_back(i);
      log.times.push_back(static_cast<double>(log.items.size()));
    }
    log.offsets.push_back(static_cast<id_type>(log.items.size()));
  }
  return log;
}

// Scores that ignore the prefix: item 0 best, then 1, ...
struct fixed_scores {
  std::vector<float> values;
  void score_session(std::span<const id_type>, std::span<float> scores) const {
    std::copy(values.begin(), values.end(), scores.begin());
  }
};

}  // namespace

TEST_CASE("known ranks give known Recall@k and MRR@k") {
  const fixed_scores model{{0.5f, 0.4f, 0.3f, 0.2f, 0.1f}};
  // Predictions: {0} -> 1 (rank 2), {0, 1} -> 4 (rank 5), {3} -> 0 (rank 1). {2} and {} give none.
  const auto log = make_log(5, {{0, 1, 4}, {3, 0}, {2}, {}});
  const auto r = train::evaluate_next_item(model, log, 5, {.cutoffs = {1, 2, 5}, .threads = 1});
  CHECK(r.sessions == 4);
  CHECK(r.predictions == 3);
  CHECK(r.unknown_targets == 0);
  CHECK(r.mean_rank == doctest::Approx(8.0 / 3.0));
  CHECK(r.recall(1) == doctest::Approx(1.0 / 3.0));
  CHECK(r.mrr(1) == doctest::Approx(1.0 / 3.0));
  CHECK(r.recall(2) == doctest::Approx(2.0 / 3.0));
  CHECK(r.mrr(2) == doctest::Approx(0.5));
  CHECK(r.recall(5) == doctest::Approx(1.0));
  CHECK(r.mrr(5) == doctest::Approx((0.5 + 0.2 + 1.0) / 3.0));
  CHECK(r.at(2).hits == 2.0);
  CHECK(error_of([&] { (void)r.recall(20); }).find("cutoff 20 was not evaluated") != std::string::npos);
  // Only the first session: two predictions.
  const auto one = train::evaluate_next_item(model, log, 5, {.cutoffs = {5}, .max_sessions = 1});
  CHECK(one.sessions == 1);
  CHECK(one.predictions == 2);
  CHECK(one.mrr(5) == doctest::Approx(0.35));
}

TEST_CASE("ties: optimistic, expected under a random order, pessimistic") {
  // Target 2 ties with items 0 and 1; items 3, 4 score lower.
  const fixed_scores model{{1.0f, 1.0f, 1.0f, 0.0f, 0.0f}};
  const auto log = make_log(5, {{4, 2}});
  const auto opt = train::evaluate_next_item(model, log, 5, {.cutoffs = {2}, .ties = train::rank_ties::optimistic});
  CHECK(opt.recall(2) == 1.0);
  CHECK(opt.mrr(2) == 1.0);
  const auto exp = train::evaluate_next_item(model, log, 5, {.cutoffs = {2}, .ties = train::rank_ties::expected});
  CHECK(exp.recall(2) == doctest::Approx(2.0 / 3.0));
  CHECK(exp.mrr(2) == doctest::Approx((1.0 + 0.5) / 3.0));
  CHECK(exp.mean_rank == doctest::Approx(2.0));
  const auto pes = train::evaluate_next_item(model, log, 5, {.cutoffs = {2, 3}, .ties = train::rank_ties::pessimistic});
  CHECK(pes.recall(2) == 0.0);
  CHECK(pes.mrr(3) == doctest::Approx(1.0 / 3.0));
  // rank_of directly.
  const auto r = train::rank_of(std::vector<float>{0.5f, 2.f, 0.5f, 1.f}, 0);
  CHECK(r.higher == 2);
  CHECK(r.tied == 1);
  CHECK(error_of([] { (void)train::rank_of(std::vector<float>{1.f}, 1); }).find("outside [0, 1)") != std::string::npos);
}

TEST_CASE("NaN scores: a NaN target ranks last, NaN elsewhere never outranks") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const fixed_scores nan_target{{nan, 1.0f, 2.0f}};
  const auto log = make_log(3, {{1, 0}});
  for (auto ties : {train::rank_ties::optimistic, train::rank_ties::expected, train::rank_ties::pessimistic}) {
    const auto r = train::evaluate_next_item(nan_target, log, 3, {.cutoffs = {3}, .ties = ties});
    CHECK(r.predictions == 1);
    CHECK(r.nan_targets == 1);
    CHECK(r.recall(3) == 0.0);  // a miss even though the catalog fits in the cutoff
    CHECK(r.mean_rank == 3.0);
  }
  const fixed_scores nan_others{{0.1f, nan, nan}};
  const auto r = train::evaluate_next_item(nan_others, log, 3, {.cutoffs = {1}});
  CHECK(r.recall(1) == 1.0);
  CHECK(r.nan_targets == 0);
}

TEST_CASE("unknown items: targets skipped, prefix clicks left out, as the model sees") {
  std::vector<std::vector<id_type>> seen;
  std::mutex m;
  const auto model = [&](std::span<const id_type> prefix, std::span<float> scores) {
    {
      std::lock_guard<std::mutex> lock(m);
      seen.emplace_back(prefix.begin(), prefix.end());
    }
    for (std::size_t i = 0; i < scores.size(); ++i) scores[i] = -static_cast<float>(i);
  };
  // 7 and -1 are outside a catalog of 3.
  const auto log = make_log(3, {{0, 7, 1, -1, 2}});
  const auto r = train::evaluate_next_item(model, log, 3, {.cutoffs = {1, 3}});
  CHECK(r.predictions == 2);       // targets 1 and 2
  CHECK(r.unknown_targets == 2);   // 7 and -1
  CHECK(r.unknown_in_prefix == 2);
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == std::vector<id_type>{0});
  CHECK(seen[1] == std::vector<id_type>{0, 1});
  CHECK(r.recall(3) == 1.0);
  CHECK(r.recall(1) == 0.0);
  // A std::function works as well.
  const std::function<void(std::span<const id_type>, std::span<float>)> fn = [](std::span<const id_type>, std::span<float> s) {
    std::fill(s.begin(), s.end(), 0.0f);
  };
  CHECK(train::evaluate_next_item(fn, log, 3).predictions == 2);
}

TEST_CASE("bad options and model errors are reported on the calling thread") {
  const auto log = make_log(3, {{0, 1}, {1, 2}, {2, 0}});
  const fixed_scores model{{0, 1, 2}};
  CHECK(error_of([&] { train::evaluate_next_item(model, log, 0); }).find("num_items") != std::string::npos);
  CHECK(error_of([&] { train::evaluate_next_item(model, log, 3, {.cutoffs = {0}}); }).find("cutoffs") != std::string::npos);
  const auto throwing = [](std::span<const id_type> prefix, std::span<float>) {
    if (prefix.back() == 2) recpipe::detail::fail("test model: cannot score item 2");
  };
  CHECK(error_of([&] { train::evaluate_next_item(throwing, log, 3, {.threads = 3}); }).find("cannot score item 2") != std::string::npos);
  // An empty test log evaluates nothing.
  const auto none = train::evaluate_next_item(model, io::session_log{}, 3);
  CHECK(none.predictions == 0);
  CHECK(none.recall(20) == 0.0);
}

TEST_CASE("baselines on synthetic sessions: kNN finds the structure, popularity does not, and threads agree") {
  const auto split = io::preprocess_sessions(
      io::synthetic_sessions({.sessions = 1500, .items = 200, .noise = 0.2, .seed = 3}), {.min_item_support = 1, .test_days = 1.0});
  REQUIRE(split.test.num_sessions() > 100);
  recpipe::models::most_popular pop(split.train);
  recpipe::models::item_knn knn(split.train);
  recpipe::models::vsknn vs(split.train, {.k = 50, .sample_size = 300});
  const train::next_item_eval_options one{.cutoffs = {20}, .threads = 1};
  const auto r_pop = train::evaluate_next_item(pop, split.test, split.num_items(), one);
  const auto r_knn = train::evaluate_next_item(knn, split.test, split.num_items(), one);
  const auto r_vs = train::evaluate_next_item(vs, split.test, split.num_items(), one);
  MESSAGE("synthetic R@20 pop " << r_pop.recall() << " item-kNN " << r_knn.recall() << " V-SKNN " << r_vs.recall());
  CHECK(r_knn.recall() > r_pop.recall() + 0.3);
  CHECK(r_vs.recall() > r_pop.recall() + 0.2);
  CHECK(r_knn.recall() < 1.0);
  // The thread count does not change the metrics.
  const auto r_vs3 = train::evaluate_next_item(vs, split.test, split.num_items(), {.cutoffs = {20}, .threads = 3});
  CHECK(r_vs3.threads == 3);
  CHECK(r_vs3.predictions == r_vs.predictions);
  CHECK(r_vs3.at(20).hits == r_vs.at(20).hits);
  CHECK(r_vs3.mrr() == doctest::Approx(r_vs.mrr()).epsilon(1e-12));
  // The table helper.
  std::vector<train::next_item_row> rows = {{"popularity", "", 0.01, r_pop}, {"item-kNN", "neighbors=100", 0.02, r_knn}};
  std::ostringstream out;
  train::print_next_item_table(out, rows, 20);
  CHECK(out.str().find("| model      | Recall@20 | MRR@20 |") != std::string::npos);
  CHECK(out.str().find("item-kNN: neighbors=100") != std::string::npos);
}

TEST_CASE("baselines on the YOOCHOOSE sample match the independent Python reference (skipped when absent)") {
  const std::filesystem::path dir = std::filesystem::path(RECPIPE_TEST_DATA_DIR) / "yoochoose-rsc15-100k";
  if (!std::filesystem::exists(dir / "yoochoose-clicks-100k_train_full.txt")) {
    MESSAGE("yoochoose-rsc15-100k not found under " << RECPIPE_TEST_DATA_DIR << ": skipped");
    return;
  }
  const auto split = io::read_session_rec_folder(dir);
  // `python3 tools/session_baselines_reference.py ../shared/data/yoochoose-rsc15-100k` (pure Python,
  // written separately from the C++) prints these hits and MRR@20 over 10,152 predictions. MRR
  // agrees to 1e-5: V-SKNN's similarities are summed in another order there, which moves a few
  // near-tied items by one rank.
  struct expected {
    double hits, mrr;
  };
  const auto check = [&](const auto& model, expected want) {
    const auto r = train::evaluate_next_item(model, split.test, split.num_items());
    CHECK(r.predictions == 10'152);
    CHECK(r.at(20).hits == want.hits);
    CHECK(r.mrr(20) == doctest::Approx(want.mrr).epsilon(1e-4));
  };
  check(recpipe::models::most_popular(split.train), {908, 0.026351});
  check(recpipe::models::item_knn(split.train), {4906, 0.201036});
  check(recpipe::models::vsknn(split.train), {7177, 0.356784});
}
