// SPDX-License-Identifier: Apache-2.0
// Tests for unknown users: lookup(...).flag_missing() marks ids a store does not hold, and
// cold_start serves popular items to the flagged requests.
#include <doctest/doctest.h>

#include <recpipe/core/versions.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/stages/cold_start.hpp>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/order.hpp>

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

using namespace recpipe;

namespace {
RECPIPE_COLUMN(history_unknown, per_request, std::uint8_t);
using ordered = batch<col::user_id, col::user_unknown, col::history, col::candidates, col::score, col::item_embedding>;

ordered make_ordered() {
  ordered b(3);
  b.get<col::user_id>() = {0, 1, 2};
  b.get<col::user_unknown>() = {0, 1, 1};
  b.get<col::history>().assign({0, 0, 1, 1}, {3});  // user 1 saw item 3
  b.get<col::candidates>().assign({0, 2, 4, 5}, {10, 11, 12, 13, 14});
  b.get<col::score>() = {5.f, 4.f, 0.f, 0.f, 0.f};
  b.get<col::item_embedding>() = matrix<float>(5, 2, 1.0f);
  b.validate();
  return b;
}
}  // namespace

TEST_CASE("popular_items ranks by count, then id, and rejects bad lists") {
  const std::vector<id_type> clicks = {3, 7, 3, 9, 3, 7, -1};
  const auto popular = popular_items::from_interactions(clicks);
  CHECK(std::vector<id_type>(popular.ids().begin(), popular.ids().end()) == std::vector<id_type>{3, 7, 9});
  CHECK(std::vector<float>(popular.counts().begin(), popular.counts().end()) == std::vector<float>{3.f, 2.f, 1.f});

  const std::vector<id_type> tied = {8, 2, 5};
  const std::vector<double> equal = {1.0, 1.0, 4.0};
  const popular_items ranked(tied, equal);
  CHECK(std::vector<id_type>(ranked.ids().begin(), ranked.ids().end()) == std::vector<id_type>{5, 2, 8});

  const std::vector<id_type> twice = {1, 2, 1};
  const std::vector<double> counts3 = {1.0, 5.0, 3.0};
  CHECK_THROWS_WITH(popular_items(twice, counts3), doctest::Contains("appears twice"));
  const std::vector<double> bad = {1.0, std::numeric_limits<double>::quiet_NaN(), 1.0};
  CHECK_THROWS_WITH(popular_items(tied, bad), doctest::Contains("finite"));
  const std::vector<double> short_counts = {1.0};
  CHECK_THROWS_WITH(popular_items(tied, short_counts), doctest::Contains("3 ids but 1 counts"));
  const std::vector<id_type> negative = {-4};
  const std::vector<double> one = {1.0};
  CHECK_THROWS_WITH(popular_items(negative, one), doctest::Contains("negative"));
}

TEST_CASE("cold_start replaces only flagged requests, skips seen items, scores by count") {
  const std::vector<id_type> ids = {3, 20, 21, 22};
  const std::vector<double> counts = {9.0, 8.0, 7.0, 6.0};
  const popular_items popular(ids, counts);
  const auto out = make_ordered() >> cold_start(popular, 2);
  const auto& candidates = out.get<col::candidates>();
  CHECK(candidates.offsets() == std::vector<std::size_t>{0, 2, 4, 6});
  // request 0 is known: unchanged; request 1 saw item 3; request 2 saw nothing
  CHECK(candidates.values() == std::vector<id_type>{10, 11, 20, 21, 3, 20});
  CHECK(out.get<col::score>() == std::vector<float>{5.f, 4.f, 8.f, 7.f, 9.f, 8.f});
  // the known request keeps its item vectors; the popular items get zeros
  CHECK(out.get<col::item_embedding>().rows() == 6);
  CHECK(out.get<col::item_embedding>().row(0)[0] == 1.0f);
  CHECK(out.get<col::item_embedding>().row(2)[0] == 0.0f);
  CHECK_NOTHROW(out.validate());
}

TEST_CASE("cold_start edge cases: nobody cold, short and empty lists, k = 0") {
  const std::vector<id_type> ids = {3};
  const std::vector<double> counts = {1.0};
  const popular_items only_seen(ids, counts);
  auto nobody = make_ordered();
  nobody.get<col::user_unknown>() = {0, 0, 0};
  const auto same = std::move(nobody) >> cold_start(only_seen, 5);
  CHECK(same.get<col::candidates>().values() == std::vector<id_type>{10, 11, 12, 13, 14});

  const auto short_list = make_ordered() >> cold_start(only_seen, 5);  // user 1 saw the only item
  CHECK(short_list.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 2, 2, 3});

  const popular_items empty;
  const auto none = make_ordered() >> cold_start(empty, 3);
  CHECK(none.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 2, 2, 2});
  CHECK_NOTHROW(none.validate());

  CHECK_THROWS_WITH(cold_start(only_seen, 0), doctest::Contains("k must be at least 1"));
}

TEST_CASE("flag_missing marks unknown users for vector and list stores") {
  feature_store<col::user_id, col::user_embedding> vectors(2);
  const std::vector<float> row = {1.0f, 2.0f};
  vectors.insert(7, row);
  feature_store<col::user_id, col::history> histories;
  const std::vector<id_type> none;
  histories.insert(7, none);  // known, with an empty history: not flagged

  batch<col::user_id> requests(3);
  requests.get<col::user_id>() = {7, 8, -3};
  const auto out = requests >> lookup(vectors).flag_missing();
  CHECK(out.get<col::user_unknown>() == std::vector<std::uint8_t>{0, 1, 1});
  CHECK(out.get<col::user_embedding>().row(1)[0] == 0.0f);

  const auto lists = requests >> lookup(histories).flag_missing<history_unknown>();
  CHECK(lists.get<history_unknown>() == std::vector<std::uint8_t>{0, 1, 1});

  feature_store<col::candidates, col::item_embedding> items(2);
  items.insert(10, row);
  batch<col::candidates> with_candidates(1);
  with_candidates.get<col::candidates>().assign({0, 2}, {10, 11});
  const auto per_item = with_candidates >> lookup(items).flag_missing();
  CHECK(per_item.get<col::item_unknown>() == std::vector<std::uint8_t>{0, 1});
}

TEST_CASE("the cold-start path in a pipeline, with the popular list published through a slot") {
  feature_store<col::user_id, col::user_embedding> vectors(2);
  const std::vector<float> row = {1.0f, 0.0f};
  vectors.insert(1, row);
  version_registry registry;
  const std::vector<id_type> first_ids = {100, 101};
  const std::vector<double> first_counts = {2.0, 1.0};
  auto popular = registry.add("popular", std::make_shared<const popular_items>(first_ids, first_counts));

  // A stand-in for retrieval + scoring: every request gets candidates 1 and 2 scored by the
  // first coordinate of its user vector (0 for unknown users).
  const auto recommend =
      lookup(vectors).flag_missing() >>
      filter<col::user_embedding>([](const auto&, std::size_t, id_type) { return true; }) >> top_k(1) >>
      cold_start(popular, 1);
  (void)recommend;

  batch<col::user_id, col::candidates, col::score> requests(2);
  requests.get<col::user_id>() = {1, 5};
  requests.get<col::candidates>().assign({0, 2, 4}, {1, 2, 1, 2});
  requests.get<col::score>() = {0.5f, 0.9f, 0.0f, 0.0f};
  auto out = recommend.run(requests);
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{2, 100});
  CHECK(out.get<col::score>() == std::vector<float>{0.9f, 2.0f});

  const std::vector<id_type> next_ids = {200};
  const std::vector<double> next_counts = {5.0};
  registry.publish(popular, std::make_shared<const popular_items>(next_ids, next_counts));
  out = recommend.run(requests);
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{2, 200});
}
