// SPDX-License-Identifier: Apache-2.0
// Tests for recpipe::batch, ragged and make_batch: shapes, validation and candidate selection.
#include <doctest/doctest.h>

#include <recpipe/core/batch.hpp>

#include <type_traits>
#include <vector>

using namespace recpipe;

TEST_CASE("make_batch takes its size from the first column and validates the others") {
  auto requests = make_batch<col::user_id>(std::vector<id_type>{7, 42, 9});
  CHECK(requests.size() == 3);
  CHECK(requests.get<col::user_id>()[1] == 42);

  ragged<id_type> history({0, 1, 1, 3}, {5, 6, 7});
  auto both = make_batch<col::user_id, col::history>(std::vector<id_type>{1, 2, 3}, history);
  CHECK(both.get<col::history>().row(2).size() == 2);
  CHECK(both.get<col::history>().row(1).empty());

  ragged<id_type> short_history({0, 1}, {5});
  CHECK_THROWS_WITH_AS((make_batch<col::user_id, col::history>(std::vector<id_type>{1, 2}, short_history)),
                       "recpipe: batch: column 'history' has 1 rows but the batch has 2 requests", error);
}

TEST_CASE("ragged rejects offsets that do not partition the values") {
  CHECK_THROWS_AS(ragged<int>({1, 2}, {1, 2}), error);             // does not start at 0
  CHECK_THROWS_AS(ragged<int>({0, 2, 1}, {1, 2}), error);          // decreasing
  CHECK_THROWS_AS(ragged<int>({0, 1}, {1, 2}), error);             // does not end at size
  CHECK_THROWS_AS(ragged<int>({}, {}), error);                     // no offsets at all
  ragged<int> fine({0, 0, 2}, {3, 4});
  CHECK(fine.rows() == 2);
  CHECK(fine.total() == 2);
}

TEST_CASE("an empty batch is valid") {
  batch<col::user_id, col::history, col::user_embedding> empty_batch(0);
  CHECK_NOTHROW(empty_batch.validate());
  CHECK(empty_batch.empty());
  CHECK(empty_batch.candidate_count() == 0);
}

TEST_CASE("with() appends a new column and replaces an existing one") {
  auto requests = make_batch<col::user_id>(std::vector<id_type>{1, 2});
  auto more = std::move(requests).with<col::request_seed>(std::vector<std::uint64_t>{10, 20});
  static_assert(std::is_same_v<decltype(more), batch<col::user_id, col::request_seed>>);
  CHECK(more.get<col::request_seed>()[1] == 20);
  auto replaced = std::move(more).with<col::user_id>(std::vector<id_type>{3, 4});
  static_assert(std::is_same_v<decltype(replaced), batch<col::user_id, col::request_seed>>);
  CHECK(replaced.get<col::user_id>()[0] == 3);
}

TEST_CASE("validate checks per-candidate columns against the candidates") {
  batch<col::candidates, col::score, col::item_embedding> b(2);
  b.get<col::candidates>().assign({0, 2, 3}, {10, 11, 12});
  b.get<col::score>() = {0.5f, 0.25f};  // one short
  b.get<col::item_embedding>() = matrix<float>(3, 4);
  CHECK_THROWS_WITH_AS(b.validate(), "recpipe: batch: column 'score' has 2 entries but the batch has 3 candidates", error);
  b.get<col::score>().push_back(1.0f);
  CHECK_NOTHROW(b.validate());
  b.get<col::item_embedding>() = matrix<float>(2, 4);
  CHECK_THROWS_AS(b.validate(), error);
}

TEST_CASE("select_candidates applies one selection to every per-candidate column") {
  batch<col::candidates, col::score, col::item_embedding> b(2);
  b.get<col::candidates>().assign({0, 3, 5}, {10, 11, 12, 20, 21});
  b.get<col::score>() = {0.0f, 1.0f, 2.0f, 3.0f, 4.0f};
  matrix<float> features(5, 2);
  for (std::size_t i = 0; i < 5; ++i) features(i, 0) = features(i, 1) = static_cast<float>(i);
  b.get<col::item_embedding>() = features;

  b.select_candidates({0, 2, 3}, {2, 0, 4});  // request 0 keeps 12 then 10; request 1 keeps 21
  CHECK(b.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 2, 3});
  CHECK(b.get<col::candidates>().values() == std::vector<id_type>{12, 10, 21});
  CHECK(b.get<col::score>() == std::vector<float>{2.0f, 0.0f, 4.0f});
  CHECK(b.get<col::item_embedding>()(0, 1) == 2.0f);
  CHECK(b.get<col::item_embedding>()(2, 0) == 4.0f);
  CHECK_NOTHROW(b.validate());
}

RECPIPE_COLUMN(click_probability, per_candidate, float);

TEST_CASE("a user column declared in one line behaves like a standard one") {
  static_assert(column<click_probability>);
  static_assert(is_per_candidate_v<click_probability>);
  static_assert(std::is_same_v<column_storage_t<click_probability>, std::vector<float>>);
  CHECK(click_probability::name == "click_probability");
}
