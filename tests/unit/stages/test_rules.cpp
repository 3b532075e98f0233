// SPDX-License-Identifier: Apache-2.0
// Tests for diversify, cap, pin, filter_in and filter_out: the documented orders and their bad input.
#include <doctest/doctest.h>

#include <recpipe/core/versions.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/rules.hpp>

#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <unordered_set>
#include <vector>

using namespace recpipe;

namespace {
using ranked = batch<col::user_id, col::candidates, col::score, col::item_embedding, col::item_category>;

//! One request: ids, scores, 2-d item vectors and categories.
ranked make_ranked(std::vector<id_type> ids, std::vector<float> scores, std::vector<std::vector<float>> vectors = {},
                   std::vector<id_type> categories = {}) {
  ranked b(1);
  b.get<col::user_id>() = {1};
  b.get<col::candidates>().assign({0, ids.size()}, ids);
  b.get<col::score>() = std::move(scores);
  b.get<col::item_embedding>() = matrix<float>(ids.size(), 2);
  for (std::size_t i = 0; i < vectors.size(); ++i)
    for (std::size_t j = 0; j < 2; ++j) b.get<col::item_embedding>()(i, j) = vectors[i][j];
  if (categories.empty()) categories.assign(ids.size(), 0);
  b.get<col::item_category>() = std::move(categories);
  b.validate();
  return b;
}
std::vector<id_type> ids_of(const ranked& b) { return b.get<col::candidates>().values(); }
const float not_a_number = std::numeric_limits<float>::quiet_NaN();
const float infinity = std::numeric_limits<float>::infinity();
}  // namespace

// ---------------------------------------------------------------------------------------------
// diversify

TEST_CASE("diversify with lambda 1 is exactly top_k, ties, NaN and infinities included") {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<id_type> ids;
    std::vector<float> scores;
    std::vector<std::vector<float>> vectors;
    for (id_type i = 0; i < 30; ++i) {
      ids.push_back((i * 7) % 30);
      scores.push_back(i % 5 == 0 ? 0.25f : std::round(u(rng) * 4.f) / 4.f);  // many ties
      vectors.push_back({u(rng), u(rng)});
    }
    scores[3] = not_a_number;
    scores[4] = infinity;
    scores[5] = -infinity;
    for (const std::size_t k : {1u, 7u, 30u, 50u}) {
      const auto mmr = make_ranked(ids, scores, vectors, ids) >> diversify(k, 1.0f);
      const auto best = make_ranked(ids, scores, vectors, ids) >> top_k(k);
      CHECK(ids_of(mmr) == ids_of(best));
      CHECK(mmr.get<col::item_category>() == ids_of(best));  // per-candidate columns follow
    }
  }
}

TEST_CASE("diversify picks the best item first, then trades relevance for novelty") {
  // 1 and 2 point the same way; 3 is orthogonal with a slightly lower score.
  const auto b = [] {
    return make_ranked({1, 2, 3}, {0.9f, 0.85f, 0.8f}, {{1.f, 0.f}, {1.f, 0.01f}, {0.f, 1.f}});
  };
  CHECK(ids_of(b() >> diversify(3, 1.0f)) == std::vector<id_type>{1, 2, 3});
  CHECK(ids_of(b() >> diversify(3, 0.5f)) == std::vector<id_type>{1, 3, 2});
  CHECK(ids_of(b() >> diversify(2, 0.0f)) == std::vector<id_type>{1, 3});  // first pick by score even at 0
  const auto out = b() >> diversify(2, 0.5f);
  // per-candidate columns follow the candidates
  CHECK(out.get<col::score>() == std::vector<float>{0.9f, 0.8f});
  CHECK(out.get<col::item_embedding>()(1, 1) == 1.f);
  CHECK(out.get<col::user_id>() == std::vector<id_type>{1});
}

TEST_CASE("diversify: brute-force MMR reference on random requests") {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int trial = 0; trial < 10; ++trial) {
    std::vector<id_type> ids;
    std::vector<float> scores;
    std::vector<std::vector<float>> vectors;
    for (id_type i = 0; i < 12; ++i) {
      ids.push_back(i);
      scores.push_back(u(rng));
      vectors.push_back({u(rng), u(rng)});
    }
    const float lambda = 0.3f;
    std::vector<id_type> expected;
    std::vector<bool> taken(12, false);
    for (int step = 0; step < 5; ++step) {
      double best_value = -1e300;
      std::size_t best = 0;
      for (std::size_t i = 0; i < 12; ++i) {
        if (taken[i]) continue;
        double penalty = 0;
        bool any = false;
        for (std::size_t j = 0; j < 12; ++j) {
          if (!taken[j]) continue;
          const double dot = vectors[i][0] * vectors[j][0] + vectors[i][1] * vectors[j][1];
          const double cosine = dot / std::hypot(vectors[i][0], vectors[i][1]) / std::hypot(vectors[j][0], vectors[j][1]);
          penalty = any ? std::max(penalty, cosine) : cosine;
          any = true;
        }
        const double value = lambda * scores[i] - (1 - lambda) * penalty;
        if (value > best_value) best_value = value, best = i;
      }
      taken[best] = true;
      expected.push_back(ids[best]);
    }
    CHECK(ids_of(make_ranked(ids, scores, vectors) >> diversify(5, lambda)) == expected);
  }
}

TEST_CASE("diversify: bad input") {
  CHECK_THROWS_WITH_AS(diversify(0, 0.5f), "recpipe: diversify: k must be at least 1 (got 0)", error);
  CHECK_THROWS_WITH_AS(diversify(3, 1.5f), "recpipe: diversify: lambda must be in [0, 1] (got 1.5)", error);
  CHECK_THROWS_WITH_AS(diversify(3, -0.1f), "recpipe: diversify: lambda must be in [0, 1] (got -0.1)", error);
  CHECK_THROWS_AS(diversify(3, not_a_number), error);
  // empty candidate lists and an empty batch
  ranked empty_rows(3);
  const auto none = empty_rows >> diversify(4, 0.5f);
  CHECK(none.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 0, 0, 0});
  CHECK((ranked(0) >> diversify(4, 0.5f)).size() == 0);
  // NaN scores rank last; zero and NaN vectors have no direction (cosine 0), nothing crashes
  const auto odd = make_ranked({1, 2, 3, 4}, {not_a_number, 0.5f, 0.4f, 0.3f},
                               {{1.f, 0.f}, {0.f, 0.f}, {not_a_number, 1.f}, {1.f, 0.f}}) >>
                   diversify(4, 0.5f);
  CHECK(ids_of(odd) == std::vector<id_type>{2, 3, 4, 1});
  // a score column shorter than the candidates is an error naming it (a batch handed in directly)
  auto broken = make_ranked({1, 2, 3}, {0.1f, 0.2f, 0.3f});
  broken.get<col::score>().pop_back();
  CHECK_THROWS_WITH_AS(broken >> diversify(2, 0.5f),
                       "recpipe: diversify: column 'score' has 2 entries but the batch has 3 candidates", error);
}

// ---------------------------------------------------------------------------------------------
// cap

TEST_CASE("cap keeps the n best of each category, in score order") {
  const auto b = [] {
    return make_ranked({1, 2, 3, 4, 5, 6}, {0.1f, 0.9f, 0.8f, 0.7f, 0.6f, 0.5f}, {}, {7, 7, 7, 8, 8, 9});
  };
  const auto out = b() >> cap(2);
  CHECK(ids_of(out) == std::vector<id_type>{2, 3, 4, 5, 6});
  CHECK(out.get<col::score>() == std::vector<float>{0.9f, 0.8f, 0.7f, 0.6f, 0.5f});
  CHECK(out.get<col::item_category>() == std::vector<id_type>{7, 7, 8, 8, 9});
  CHECK(ids_of(b() >> cap(1)) == std::vector<id_type>{2, 4, 6});
  CHECK(ids_of(b() >> cap(100)) == std::vector<id_type>{2, 3, 4, 5, 6, 1});
  // current_order: the first n of each category as they stand, order kept
  CHECK(ids_of(b() >> cap<col::item_category, current_order>(1)) == std::vector<id_type>{1, 4, 6});
  // NaN scores rank last, so they are the ones capped
  const auto nan_last = make_ranked({1, 2, 3}, {not_a_number, 0.2f, 0.1f}, {}, {5, 5, 5}) >> cap(2);
  CHECK(ids_of(nan_last) == std::vector<id_type>{2, 3});
}

TEST_CASE("cap: bad input and a custom column") {
  CHECK_THROWS_WITH_AS(cap(0), doctest::Contains("cap: n must be at least 1 (got 0)"), error);
  ranked empty_rows(2);
  CHECK((empty_rows >> cap(1)).get<col::candidates>().offsets() == std::vector<std::size_t>{0, 0, 0});
  auto broken = make_ranked({1, 2}, {0.1f, 0.2f});
  broken.get<col::item_category>().push_back(3);
  CHECK_THROWS_WITH_AS(broken >> cap(1), "recpipe: cap: column 'item_category' has 3 entries but the batch has 2 candidates",
                       error);
}

namespace {
RECPIPE_COLUMN(brand, per_candidate, int);
}

TEST_CASE("cap over a user-declared column and another score") {
  batch<col::candidates, col::retrieval_score, brand> b(2);
  b.get<col::candidates>().assign({0, 3, 4}, {1, 2, 3, 4});
  b.get<col::retrieval_score>() = {0.3f, 0.2f, 0.1f, 0.5f};
  b.get<brand>() = {1, 1, 2, 1};
  const auto out = b >> cap<brand, col::retrieval_score>(1);
  CHECK(out.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 2, 3});
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{1, 3, 4});
}

// ---------------------------------------------------------------------------------------------
// pin

TEST_CASE("pin moves an item to a position, the others keep their order") {
  const auto b = [] { return make_ranked({10, 20, 30, 40, 50}, {5.f, 4.f, 3.f, 2.f, 1.f}); };
  const auto out = b() >> pin(40, 1);
  CHECK(ids_of(out) == std::vector<id_type>{10, 40, 20, 30, 50});
  CHECK(out.get<col::score>() == std::vector<float>{5.f, 2.f, 4.f, 3.f, 1.f});
  CHECK(ids_of(b() >> pin(10, 4)) == std::vector<id_type>{20, 30, 40, 50, 10});
  // past the end: last
  CHECK(ids_of(b() >> pin(20, 99)) == std::vector<id_type>{10, 30, 40, 50, 20});
  // absent (never retrieved or filtered out): nothing changes, nothing is invented
  const auto absent = b() >> pin(77, 0);
  CHECK(ids_of(absent) == std::vector<id_type>{10, 20, 30, 40, 50});
  CHECK(absent.get<col::score>().size() == 5);
  // already there: unchanged
  CHECK(ids_of(b() >> pin(30, 2)) == std::vector<id_type>{10, 20, 30, 40, 50});
}

TEST_CASE("pin collisions: one stage places pins in the order given, successive stages let the later win") {
  const auto b = [] { return make_ranked({10, 20, 30, 40, 50}, {5.f, 4.f, 3.f, 2.f, 1.f}); };
  CHECK(ids_of(b() >> pin({{50, 0}, {40, 0}})) == std::vector<id_type>{50, 40, 10, 20, 30});
  CHECK(ids_of(b() >> pin({{50, 4}, {40, 4}})) == std::vector<id_type>{10, 20, 30, 40, 50});  // none after: before
  CHECK(ids_of(b() >> pin({{50, 1}, {50, 3}})) == std::vector<id_type>{10, 50, 20, 30, 40});  // second pin ignored
  CHECK(ids_of(b() >> pin({{77, 0}, {40, 0}})) == std::vector<id_type>{40, 10, 20, 30, 50});  // absent pin frees its slot
  CHECK(ids_of(b() >> pin(50, 0) >> pin(40, 0)) == std::vector<id_type>{40, 50, 10, 20, 30});
  // duplicates of an item: its first occurrence is pinned
  CHECK(ids_of(make_ranked({1, 2, 1}, {3.f, 2.f, 1.f}) >> pin(1, 2)) == std::vector<id_type>{2, 1, 1});
}

TEST_CASE("pin: bad input") {
  CHECK_THROWS_WITH_AS(pin(-1, 0), "recpipe: pin: item -1 is not a valid id (ids are >= 0)", error);
  ranked empty_rows(2);
  CHECK((empty_rows >> pin(1, 0)).get<col::candidates>().total() == 0);
  CHECK(ids_of(make_ranked({1}, {0.f}) >> pin({})) == std::vector<id_type>{1});
  auto broken = make_ranked({1, 2}, {0.1f, 0.2f});
  broken.get<col::item_embedding>() = matrix<float>(5, 2);
  CHECK_THROWS_WITH_AS(broken >> pin(2, 0),
                       "recpipe: pin: column 'item_embedding' has 5 entries but the batch has 2 candidates", error);
}

// ---------------------------------------------------------------------------------------------
// filter_in / filter_out

TEST_CASE("filter_in keeps members, filter_out drops them, order and columns follow") {
  const auto b = [] { return make_ranked({10, 20, 30, 40}, {4.f, 3.f, 2.f, 1.f}); };
  const auto in = b() >> filter_in({40, 20, 99});
  CHECK(ids_of(in) == std::vector<id_type>{20, 40});
  CHECK(in.get<col::score>() == std::vector<float>{3.f, 1.f});
  const auto out = b() >> filter_out({40, 20, 99});
  CHECK(ids_of(out) == std::vector<id_type>{10, 30});
  CHECK(out.get<col::item_embedding>().rows() == 2);
  // any set with contains(): std::unordered_set, std::set, held by reference, value or shared_ptr
  const std::unordered_set<id_type> blocked{10};
  CHECK(ids_of(b() >> filter_out(blocked)) == std::vector<id_type>{20, 30, 40});
  CHECK(ids_of(b() >> filter_in(std::set<id_type>{30})) == std::vector<id_type>{30});
  auto shared = std::make_shared<const id_set>(id_set{30, 10});
  const auto stage = filter_out(shared);
  shared.reset();  // the stage keeps it alive
  CHECK(ids_of(b() >> stage) == std::vector<id_type>{20, 40});
  // empty sets: filter_in drops everything (valid empty rows), filter_out keeps everything
  const auto none = b() >> filter_in(id_set{});
  CHECK(none.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 0});
  CHECK(none.get<col::score>().empty());
  CHECK(ids_of(b() >> filter_out(id_set{})) == std::vector<id_type>{10, 20, 30, 40});
  // id_set drops negative ids and duplicates
  CHECK(id_set{3, -1, 3, 2}.ids() == std::vector<id_type>{2, 3});
}

TEST_CASE("filter_in / filter_out: bad input") {
  CHECK_THROWS_WITH_AS(filter_out(std::shared_ptr<const id_set>()), "recpipe: a stage was given a null std::shared_ptr",
                       error);
  ranked wrong(2);
  wrong.get<col::candidates>().assign({0, 0}, {});  // one candidate row for two requests
  CHECK_THROWS_WITH_AS(wrong >> filter_in({1}), "recpipe: filter_in: column 'candidates' has 1 rows but the batch has 2 requests",
                       error);
  CHECK((ranked(0) >> filter_out({1})).size() == 0);
  // negative (invalid) candidate ids are never members of an id_set: filter_in drops them
  CHECK(ids_of(make_ranked({-1, 5}, {1.f, 2.f}) >> filter_in({5})) == std::vector<id_type>{5});
}

TEST_CASE("filter_out over a versioned slot: an operator swaps the block list live") {
  version_registry lists;
  auto blocked = lists.add("blocked", std::make_shared<const id_set>(id_set{10}));
  auto serve = top_k(10) >> filter_out(blocked);
  const auto b = make_ranked({10, 20, 30}, {3.f, 2.f, 1.f});
  CHECK(ids_of(serve.run(b)) == std::vector<id_type>{20, 30});
  lists.publish(blocked, std::make_shared<const id_set>(id_set{20, 30}));
  CHECK(ids_of(serve.run(b)) == std::vector<id_type>{10});
  CHECK(serve.stage_names[1] == "filter_out");
}

TEST_CASE("rules in a pipeline: filter_out >> cap >> diversify >> pin") {
  batch<col::candidates, col::score, col::item_embedding, col::item_category> b(2);
  b.get<col::candidates>().assign({0, 5, 5}, {1, 2, 3, 4, 5});
  b.get<col::score>() = {0.9f, 0.8f, 0.7f, 0.6f, 0.5f};
  b.get<col::item_embedding>() = matrix<float>(5, 2);
  for (std::size_t i = 0; i < 5; ++i) b.get<col::item_embedding>()(i, i % 2) = 1.f;
  b.get<col::item_category>() = {1, 1, 1, 2, 2};
  const auto rules = filter_out({2}) >> cap(1) >> diversify(3, 0.5f) >> pin(5, 0);
  const auto out = rules.run(b);
  CHECK(out.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 2, 2});
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{1, 4});  // 5 was capped: the pin is a no-op
}
