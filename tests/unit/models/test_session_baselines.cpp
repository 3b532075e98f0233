// SPDX-License-Identifier: Apache-2.0
// Tests for the session baselines (most popular, item-kNN, V-SKNN) on a hand-made click log with
// hand-computed scores, and their bad input: empty prefixes, ids outside the catalog, wrong sizes.
#include <doctest/doctest.h>

#include "common/file_fixtures.hpp"

#include <cmath>
#include <string>
#include <vector>

#include <recpipe/models/session_baselines.hpp>

namespace io = recpipe::io;
namespace models = recpipe::models;
using recpipe::id_type;

using recpipe::testing::error_of;

namespace {

// Four sessions over items 0..3 (original ids equal dense ids: first appearance is 0, 1, 2, 3):
//   S0 {0, 1, 2}   S1 {0, 1}   S2 {1, 2, 3}   S3 {0, 0, 3}   (in time order)
io::session_log hand_log() {
  std::vector<io::session_click> clicks;
  const std::vector<std::vector<id_type>> sessions = {{0, 1, 2}, {0, 1}, {1, 2, 3}, {0, 0, 3}};
  double t = 0;
  for (std::size_t s = 0; s < sessions.size(); ++s)
    for (id_type item : sessions[s]) clicks.push_back({static_cast<id_type>(s), item, t += 10});
  auto log = io::make_session_log(clicks);
  REQUIRE(log.num_items() == 4);
  for (id_type i = 0; i < 4; ++i) REQUIRE(log.vocabulary.original(i) == i);
  return log;
}

template <class Model>
std::vector<float> scores_of(const Model& m, std::vector<id_type> prefix) {
  std::vector<float> s(m.num_items(), -1.0f);
  m.score_session(prefix, s);
  return s;
}

void check_close(const std::vector<float>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK_MESSAGE(got[i] == doctest::Approx(want[i]).epsilon(1e-6), "item " << i);
}

}  // namespace

TEST_CASE("most popular scores training clicks, whatever the prefix") {
  const auto log = hand_log();
  models::most_popular pop(log);
  CHECK(pop.num_items() == 4);
  check_close(scores_of(pop, {1, 2}), {4, 3, 2, 2});
  check_close(scores_of(pop, {}), {4, 3, 2, 2});
}

TEST_CASE("item-kNN: cosine of binary session vectors with lambda 0, scored by the last item") {
  const auto log = hand_log();
  // Supports (sessions containing): 0: 3, 1: 3, 2: 2, 3: 2.
  // Co-occurrence: (0,1) 2, (0,2) 1, (0,3) 1, (1,2) 2, (1,3) 1, (2,3) 1.
  models::item_knn knn(log, {.neighbors = 0, .lambda = 0.0, .alpha = 0.5});
  const double r6 = std::sqrt(6.0);
  check_close(scores_of(knn, {0, 2}), {1 / r6, 2 / r6, 0, 0.5});
  check_close(scores_of(knn, {2, 0}), {0, 2.0 / 3.0, 1 / r6, 1 / r6});
  CHECK(knn.similarity(0, 0) == 0.0f);  // an item is not its own neighbour
  CHECK(knn.similarity(1, 2) == doctest::Approx(2 / r6));
  // Neighbours most similar first, ties by smaller id.
  models::item_knn two(log, {.neighbors = 2, .lambda = 0.0, .alpha = 0.5});
  CHECK(std::vector<id_type>(two.neighbors(0).begin(), two.neighbors(0).end()) == std::vector<id_type>{1, 2});
  check_close(scores_of(two, {0}), {0, 2.0 / 3.0, 1 / r6, 0});
  // Regularised and asymmetric: sim(2, 1) = 2 / ((2 + 20)^0.25 (3 + 20)^0.75).
  models::item_knn reg(log, {.neighbors = 100, .lambda = 20.0, .alpha = 0.25});
  CHECK(reg.similarity(2, 1) == doctest::Approx(2.0 / (std::pow(22.0, 0.25) * std::pow(23.0, 0.75))));
  // An empty prefix scores 0 everywhere.
  check_close(scores_of(knn, {}), {0, 0, 0, 0});
}

TEST_CASE("V-SKNN: linear position decay, dot-product similarity, k neighbours, recent sample") {
  const auto log = hand_log();
  // Prefix {0, 2}: weights 0 -> 1/2, 2 -> 1. Similarities: S0 1.5, S1 0.5, S2 1.0, S3 0.5.
  models::vsknn k2(log, {.k = 2, .sample_size = 0});
  check_close(scores_of(k2, {0, 2}), {1.5, 2.5, 2.5, 1.0});  // S0 and S2 vote
  const auto n = k2.neighbours(std::vector<id_type>{0, 2});
  REQUIRE(n.size() == 2);
  CHECK(n[0].first == doctest::Approx(1.5));
  CHECK(n[0].second == 0);
  // k = 3: S1 and S3 tie at 0.5; the more recent (S3) wins.
  models::vsknn k3(log, {.k = 3, .sample_size = 0});
  check_close(scores_of(k3, {0, 2}), {2.0, 2.5, 2.5, 1.5});
  // A sample of the 2 most recent candidate sessions (S2, S3), all of them neighbours.
  models::vsknn sampled(log, {.k = 100, .sample_size = 2});
  check_close(scores_of(sampled, {0, 2}), {0.5, 1.0, 1.0, 1.5});
  // A repeated item keeps the weight of its latest position: {2, 0, 2} -> 2: 1, 0: 2/3.
  models::vsknn all(log, {.k = 100, .sample_size = 0});
  // S0 5/3, S1 2/3, S2 1, S3 2/3.
  check_close(scores_of(all, {2, 0, 2}), {5.0 / 3 + 2.0 / 3 + 2.0 / 3, 5.0 / 3 + 2.0 / 3 + 1, 5.0 / 3 + 1, 1 + 2.0 / 3});
  // Weightings.
  CHECK(models::vsknn::weight(models::vsknn_weighting::linear, 1, 4) == doctest::Approx(0.25));
  CHECK(models::vsknn::weight(models::vsknn_weighting::div, 1, 4) == doctest::Approx(0.25));
  CHECK(models::vsknn::weight(models::vsknn_weighting::div, 3, 4) == doctest::Approx(0.5));
  CHECK(models::vsknn::weight(models::vsknn_weighting::quadratic, 2, 4) == doctest::Approx(0.25));
  CHECK(models::vsknn::weight(models::vsknn_weighting::same, 1, 4) == 1.0);
  // Same weighting: S-KNN with the size of the overlap as similarity.
  models::vsknn same(log, {.k = 1, .sample_size = 0, .weighting = models::vsknn_weighting::same});
  check_close(scores_of(same, {0, 2}), {2, 2, 2, 0});  // S0 overlaps in both items
  check_close(scores_of(all, {}), {0, 0, 0, 0});
}

TEST_CASE("baselines: bad input gets an error that names it") {
  const auto log = hand_log();
  models::most_popular pop(log);
  models::item_knn knn(log);
  models::vsknn vs(log);
  std::vector<float> short_scores(3);
  const std::vector<id_type> out_of_range = {1, 4}, negative = {-1};
  for (const std::string& e : {error_of([&] { pop.score_session(std::vector<id_type>{1}, short_scores); }),
                               error_of([&] { knn.score_session(std::vector<id_type>{1}, short_scores); }),
                               error_of([&] { vs.score_session(std::vector<id_type>{1}, short_scores); })})
    CHECK(e.find("scores has 3 entries but the catalog has 4") != std::string::npos);
  std::vector<float> scores(4);
  CHECK(error_of([&] { knn.score_session(out_of_range, scores); }).find("prefix[1] = 4") != std::string::npos);
  CHECK(error_of([&] { vs.score_session(out_of_range, scores); }).find("prefix[1] = 4") != std::string::npos);
  CHECK(error_of([&] { pop.score_session(negative, scores); }).find("prefix[0] = -1") != std::string::npos);
  CHECK(error_of([&] { models::vsknn(log, {.k = 0}); }).find("k must be") != std::string::npos);
  CHECK(error_of([&] { models::item_knn(log, {.lambda = -1}); }).find("lambda") != std::string::npos);
  CHECK(error_of([&] { models::item_knn(log, {.alpha = 2}); }).find("alpha") != std::string::npos);
  CHECK(error_of([&] { (void)knn.neighbors(9); }).find("outside the catalog") != std::string::npos);
  // An empty training log: a catalog of 0 items; only an empty scores span fits.
  const io::session_log empty;
  models::item_knn none(empty);
  models::vsknn none_vs(empty);
  std::vector<float> nothing;
  none.score_session({}, nothing);
  none_vs.score_session({}, nothing);
  CHECK(none.num_items() == 0);
}
