// SPDX-License-Identifier: Apache-2.0
// The host half of cuda::device_feature_table (no nvcc, no GPU): the per-key search the device
// kernel runs, the sorted index, the construction checks, the snapshot of a feature_store, and
// the table as a lookup store on the CPU backend (the same pipeline a cuda_backend run executes
// with device rows), also published through a slot.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include <recpipe/core/pipeline.hpp>
#include <recpipe/core/versions.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/cuda/feature_table_host.hpp>
#include <recpipe/stages/lookup.hpp>

using namespace recpipe;
using recpipe::cuda::host_feature_table;

namespace feature_table_test {
RECPIPE_COLUMN(item_bias, per_candidate, float);
RECPIPE_COLUMN(user_bias, per_request, float);
}  // namespace feature_table_test

TEST_CASE("sorted_find is std::lower_bound plus an equality test") {
  CHECK(cuda::sorted_find(nullptr, 0, 3) == -1);
  const std::vector<id_type> one = {7};
  CHECK(cuda::sorted_find(one.data(), 1, 7) == 0);
  CHECK(cuda::sorted_find(one.data(), 1, 6) == -1);
  CHECK(cuda::sorted_find(one.data(), 1, 8) == -1);
  std::mt19937 rng(3);
  for (std::size_t size : {2u, 3u, 31u, 64u, 1000u}) {
    std::vector<id_type> ids(size);
    std::uniform_int_distribution<id_type> pick(0, static_cast<id_type>(size * 4));
    for (auto& id : ids) id = pick(rng);
    ids.push_back(std::numeric_limits<id_type>::max());
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    for (id_type key = -2; key <= static_cast<id_type>(size * 4 + 2); ++key) {
      const auto it = std::lower_bound(ids.begin(), ids.end(), key);
      const std::int64_t expected = it != ids.end() && *it == key ? it - ids.begin() : -1;
      REQUIRE(cuda::sorted_find(ids.data(), ids.size(), key) == expected);
    }
    CHECK(cuda::sorted_find(ids.data(), ids.size(), std::numeric_limits<id_type>::max()) ==
          static_cast<std::int64_t>(ids.size() - 1));
    CHECK(cuda::sorted_find(ids.data(), ids.size(), std::numeric_limits<id_type>::min()) == -1);
  }
}

TEST_CASE("lookup_lanes: a power of two covering the row, at most a warp") {
  CHECK(cuda::lookup_lanes(0) == 1);
  CHECK(cuda::lookup_lanes(1) == 1);
  CHECK(cuda::lookup_lanes(2) == 2);
  CHECK(cuda::lookup_lanes(3) == 4);
  CHECK(cuda::lookup_lanes(17) == 32);
  CHECK(cuda::lookup_lanes(32) == 32);
  CHECK(cuda::lookup_lanes(1000) == 32);
  static_assert(cuda::lookup_lanes(5) == 8);
}

TEST_CASE("host_feature_table sorts ids, keeps each row with its id, applies the missing policy") {
  const std::vector<id_type> ids = {30, 4, id_type{1} << 40, 17};
  const std::vector<float> values = {3, 3.5f, 4, 4.5f, 9, 9.5f, 1, 1.5f};
  const matrix_view<const float> rows(values.data(), 4, 2);
  host_feature_table<col::candidates, col::item_embedding> table(ids, rows);
  CHECK(table.size() == 4);
  CHECK(table.dim() == 2);
  CHECK(table.missing_policy() == on_missing::use_default);
  CHECK(std::vector<id_type>(table.ids().begin(), table.ids().end()) == std::vector<id_type>{4, 17, 30, id_type{1} << 40});
  CHECK(std::vector<float>(table.values().begin(), table.values().end()) ==
        std::vector<float>{4, 4.5f, 1, 1.5f, 3, 3.5f, 9, 9.5f});
  CHECK(table.rows()(2, 1) == 3.5f);
  CHECK(table.position(30) == 2);
  CHECK(table.contains(id_type{1} << 40));
  CHECK_FALSE(table.contains(5));
  CHECK_FALSE(table.contains(-1));
  CHECK(table.find(17)[0] == 1.0f);
  CHECK(table.find(5).empty());
  CHECK(table.find_or_apply_policy(5).empty());

  host_feature_table<col::candidates, col::item_embedding> strict(ids, rows, on_missing::fail);
  CHECK(strict.find_or_apply_policy(30)[1] == 3.5f);
  CHECK_THROWS_WITH_AS(strict.find_or_apply_policy(5),
                       "recpipe: lookup: id 5 is not in the device feature table for column 'item_embedding'", error);

  // An empty table is allowed: every lookup misses.
  host_feature_table<col::user_id, col::user_embedding> empty({}, matrix_view<const float>(nullptr, 0, 3));
  CHECK(empty.size() == 0);
  CHECK(empty.dim() == 3);
  CHECK(empty.find(0).empty());
}

TEST_CASE("host_feature_table names what is wrong with its input") {
  using table = host_feature_table<col::candidates, col::item_embedding>;
  const std::vector<float> values = {1, 2, 3, 4, 5, 6};
  const matrix_view<const float> rows(values.data(), 3, 2);
  const std::vector<id_type> three = {1, 2, 3};
  CHECK_THROWS_WITH_AS(table(std::vector<id_type>{1, 2}, rows),
                       "recpipe: cuda::device_feature_table<item_embedding>: 2 ids but 3 rows", error);
  CHECK_THROWS_WITH_AS(table(three, matrix_view<const float>(values.data(), 3, 0)),
                       "recpipe: cuda::device_feature_table<item_embedding>: rows have width 0", error);
  CHECK_THROWS_WITH_AS(table(std::vector<id_type>{1, -5, 3}, rows),
                       "recpipe: cuda::device_feature_table<item_embedding>: id -5 is negative; ids must be >= 0", error);
  CHECK_THROWS_WITH_AS(table(std::vector<id_type>{9, 2, 9}, rows),
                       "recpipe: cuda::device_feature_table<item_embedding>: id 9 appears twice", error);
  std::vector<float> bad = values;
  bad[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(table(three, matrix_view<const float>(bad.data(), 3, 2)),
                       "recpipe: cuda::device_feature_table<item_embedding>: the row of id 2 holds nan at column 1; "
                       "rows must be finite",
                       error);
  bad[3] = 4;
  bad[4] = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(table(three, matrix_view<const float>(bad.data(), 3, 2)),
                       "recpipe: cuda::device_feature_table<item_embedding>: the row of id 3 holds -inf at column 0; "
                       "rows must be finite",
                       error);
  using scalars = host_feature_table<col::candidates, feature_table_test::item_bias>;
  CHECK_THROWS_WITH_AS(scalars(three, rows),
                       "recpipe: cuda::device_feature_table<item_bias>: 'item_bias' holds one value per id but rows "
                       "have width 2",
                       error);
  const scalars biases(three, std::span<const float>(values.data(), 3));
  CHECK(biases.dim() == 1);
  CHECK(biases.find(3)[0] == 3.0f);
}

TEST_CASE("host_feature_table snapshots a feature_store (direct and hashed ids) with its policy") {
  feature_store<col::user_id, col::user_embedding> store(2, on_missing::fail);
  const id_type far = id_type{1} << 33;  // beyond the store's direct table: hashed
  for (id_type id : {id_type{0}, id_type{63}, id_type{64}, id_type{1000}, far}) {
    const std::vector<float> row = {static_cast<float>(id % 1000), 0.5f};
    store.insert(id, row);
  }
  std::size_t visited = 0;
  store.for_each([&](id_type id, std::span<const float> row) {
    ++visited;
    CHECK(row.size() == 2);
    CHECK(row[0] == static_cast<float>(id % 1000));
  });
  CHECK(visited == 5);
  const host_feature_table<col::user_id, col::user_embedding> table(store);
  CHECK(std::vector<id_type>(table.ids().begin(), table.ids().end()) ==
        std::vector<id_type>{0, 63, 64, 1000, far});
  CHECK(table.missing_policy() == on_missing::fail);
  for (id_type id : table.ids()) {
    const auto a = table.find(id), b = store.find(id);
    CHECK(std::equal(a.begin(), a.end(), b.begin(), b.end()));
  }
  feature_store<col::user_id, feature_table_test::user_bias> biases;
  biases.insert(4, 0.25f);
  const host_feature_table<col::user_id, feature_table_test::user_bias> bias_table(biases);
  CHECK(bias_table.find(4)[0] == 0.25f);
}

TEST_CASE("host_feature_table is a lookup store: same columns as a feature_store, flags, fail, slot") {
  feature_store<col::candidates, col::item_embedding> store(3);
  std::vector<id_type> ids;
  std::vector<float> values;
  for (id_type id = 0; id < 50; ++id) {
    const std::vector<float> row = {static_cast<float>(id), -static_cast<float>(id), 0.25f};
    store.insert(id * 7 + 2, row);
    ids.push_back(id * 7 + 2);
    values.insert(values.end(), row.begin(), row.end());
  }
  const host_feature_table<col::candidates, col::item_embedding> table(ids, matrix_view<const float>(values.data(), 50, 3));
  batch<col::user_id, col::candidates> requests(3);
  requests.get<col::user_id>() = {1, 2, 3};
  requests.get<col::candidates>().assign({0, 3, 3, 6}, {9, 5, 101, 2, 346, 23});  // 5, 101 and 346 unknown
  const auto from_store = lookup(store).flag_missing()(requests);
  const auto from_table = lookup(table).flag_missing()(requests);
  CHECK(from_table.get<col::item_embedding>().values() == from_store.get<col::item_embedding>().values());
  CHECK(from_table.get<col::item_unknown>() == std::vector<std::uint8_t>{0, 1, 1, 0, 1, 0});
  CHECK(from_table.get<col::item_unknown>() == from_store.get<col::item_unknown>());

  const host_feature_table<col::candidates, col::item_embedding> strict(ids, matrix_view<const float>(values.data(), 50, 3),
                                                                       on_missing::fail);
  CHECK_THROWS_WITH_AS((void)lookup(strict)(requests),
                       "recpipe: lookup: id 5 is not in the device feature table for column 'item_embedding'", error);

  // Serving while training: a new table version is published through a slot.
  version_registry versions;
  using table_type = host_feature_table<col::candidates, col::item_embedding>;
  auto published = versions.add("items", std::make_shared<const table_type>(table));
  const auto pipeline = lookup(published);
  CHECK(pipeline(requests).get<col::item_embedding>().values() == from_store.get<col::item_embedding>().values());
  for (auto& v : values) v += 1.0f;
  versions.publish(published, std::make_shared<const table_type>(ids, matrix_view<const float>(values.data(), 50, 3)));
  CHECK(pipeline(requests).get<col::item_embedding>()(0, 0) == 2.0f);  // id 9 is row 1: 1 + 1

  // Scalar values, per request.
  const std::vector<id_type> users = {3, 1};
  const std::vector<float> bias = {0.5f, -1.0f};
  const host_feature_table<col::user_id, feature_table_test::user_bias> user_bias(users, std::span<const float>(bias));
  const auto with_bias = lookup(user_bias).flag_missing()(requests);
  CHECK(with_bias.get<feature_table_test::user_bias>() == std::vector<float>{-1.0f, 0.0f, 0.5f});
  CHECK(with_bias.get<col::user_unknown>() == std::vector<std::uint8_t>{0, 1, 0});
}
