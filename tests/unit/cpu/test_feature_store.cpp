// SPDX-License-Identifier: Apache-2.0
// Tests for recpipe::feature_store: vectors, lists, single values, unknown and hostile ids.
#include <doctest/doctest.h>

#include <recpipe/cpu/feature_store.hpp>

#include <vector>

using namespace recpipe;

TEST_CASE("vector features by id, direct and hashed ids") {
  feature_store<col::user_id, col::user_embedding> store(3);
  store.insert(5, {1.f, 2.f, 3.f});
  store.insert(id_type{1} << 40, {4.f, 5.f, 6.f});  // beyond the direct table: hashed
  CHECK(store.size() == 2);
  CHECK(store.find(5)[2] == 3.f);
  CHECK(store.find(id_type{1} << 40)[0] == 4.f);
  CHECK(store.find(6).empty());
  CHECK(store.find(-1).empty());
  store.insert(5, {7.f, 8.f, 9.f});  // replace
  CHECK(store.size() == 2);
  CHECK(store.find(5)[0] == 7.f);
}

TEST_CASE("bad inserts name the problem") {
  feature_store<col::user_id, col::user_embedding> store(3);
  CHECK_THROWS_WITH_AS(store.insert(1, {1.f, 2.f}),
                       "recpipe: feature_store<user_embedding>: id 1 has 2 values but the store's dim is 3", error);
  CHECK_THROWS_WITH_AS(store.insert(-4, {1.f, 2.f, 3.f}),
                       "recpipe: feature_store<user_embedding>: id -4 is negative; ids must be >= 0", error);
  CHECK_THROWS_AS((feature_store<col::user_id, col::user_embedding>(0)), error);
}

TEST_CASE("lists and single values") {
  feature_store<col::user_id, col::history> histories;
  histories.insert(1, {10, 11, 12});
  histories.insert(2, std::span<const id_type>{});
  histories.insert(1, {13});  // replaced
  CHECK(histories.find(1).size() == 1);
  CHECK(histories.find(1)[0] == 13);
  CHECK(histories.contains(2));
  CHECK(histories.find(2).empty());

  feature_store<col::user_id, col::request_seed> seeds;
  seeds.insert(3, std::uint64_t{99});
  CHECK(seeds.find(3)[0] == 99);
}

TEST_CASE("the missing-id policy") {
  feature_store<col::user_id, col::user_embedding> lenient(2);
  CHECK(lenient.find_or_apply_policy(42).empty());
  feature_store<col::user_id, col::user_embedding> strict(2, on_missing::fail);
  strict.insert(1, {1.f, 1.f});
  CHECK(strict.find_or_apply_policy(1).size() == 2);
  CHECK_THROWS_WITH_AS(strict.find_or_apply_policy(42),
                       "recpipe: lookup: id 42 is not in the feature store for column 'user_embedding'", error);
  feature_store<col::user_id, col::history> strict_lists(1, on_missing::fail);
  strict_lists.insert(7, std::span<const id_type>{});
  CHECK(strict_lists.find_or_apply_policy(7).empty());  // known, empty: not an error
  CHECK_THROWS_AS(strict_lists.find_or_apply_policy(8), error);
}
