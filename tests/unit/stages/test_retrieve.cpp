// SPDX-License-Identifier: Apache-2.0
// Tests for the retrieve stage: k, dimensions, non-finite queries, and both index kinds.
#include <doctest/doctest.h>

#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/retrieve.hpp>

#include "common/catalog.hpp"

#include <cmath>
#include <limits>
#include <vector>

using namespace recpipe;

namespace {
batch<col::user_id, col::query_vector> queries(std::vector<std::vector<float>> rows) {
  batch<col::user_id, col::query_vector> b(rows.size());
  b.get<col::query_vector>() = matrix<float>(rows.size(), rows.empty() ? 0 : rows[0].size());
  for (std::size_t r = 0; r < rows.size(); ++r)
    for (std::size_t d = 0; d < rows[r].size(); ++d) b.get<col::query_vector>()(r, d) = rows[r][d];
  return b;
}
}  // namespace

TEST_CASE("retrieve returns k candidates, best first, with scores") {
  cpu::exact_index index(2, metric::inner_product);
  index.add(10, std::vector<float>{1, 0});
  index.add(11, std::vector<float>{0, 1});
  index.add(12, std::vector<float>{2, 2});
  const auto out = queries({{1, 0}, {0, 3}}) >> retrieve(index, 2);
  CHECK(out.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 2, 4});
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{12, 10, 12, 11});
  CHECK(out.get<col::retrieval_score>() == std::vector<float>{2, 1, 6, 3});
}

TEST_CASE("k above the catalog returns every item; k = 0 is refused") {
  cpu::exact_index index(2, metric::l2);
  index.add(1, std::vector<float>{0, 0});
  index.add(2, std::vector<float>{3, 4});
  const auto out = queries({{0, 0}}) >> retrieve(index, 1000);
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{1, 2});
  CHECK(out.get<col::retrieval_score>() == std::vector<float>{0, -25});  // minus squared distance
  CHECK_THROWS_WITH_AS(retrieve(index, 0), "recpipe: retrieve: k must be at least 1 (got 0)", error);
}

TEST_CASE("a query of the wrong width is an error naming both widths") {
  cpu::exact_index index(3, metric::inner_product);
  index.add(1, std::vector<float>{0, 0, 1});
  CHECK_THROWS_WITH_AS(queries({{1, 0}}) >> retrieve(index, 1),
                       "recpipe: retrieve: query column 'query_vector' has width 2 but the index has dim 3", error);
}

TEST_CASE("NaN or infinite queries get no candidates; other requests are unaffected") {
  cpu::exact_index index(2, metric::inner_product);
  index.add(1, std::vector<float>{1, 0});
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const auto out = queries({{nan, 0}, {1, 1}, {inf, 0}}) >> retrieve(index, 5);
  CHECK(out.get<col::candidates>().row(0).empty());
  CHECK(out.get<col::candidates>().row(1).size() == 1);
  CHECK(out.get<col::candidates>().row(2).empty());
}

TEST_CASE("an empty index returns no candidates") {
  cpu::exact_index index(2, metric::inner_product);
  const auto out = queries({{1, 0}}) >> retrieve(index, 5);
  CHECK(out.get<col::candidates>().total() == 0);
}

TEST_CASE("hnsw retrieval agrees with exact retrieval on most results") {
  testing::small_catalog catalog(500, 30);
  cpu::hnsw_index ann(testing::small_catalog::dim, metric::inner_product, 500);
  for (std::size_t i = 0; i < 500; ++i) ann.add(static_cast<id_type>(i), catalog.items.find(static_cast<id_type>(i)));
  ann.set_ef(100);
  batch<col::user_id> users(30);
  for (std::size_t u = 0; u < 30; ++u) users.get<col::user_id>()[u] = static_cast<id_type>(u);
  const auto with_vectors = users >> lookup(catalog.users);
  const auto approx = with_vectors >> retrieve<col::user_embedding>(ann, 10);
  const auto exact = with_vectors >> retrieve<col::user_embedding>(catalog.index, 10);
  std::size_t hits = 0;
  for (std::size_t r = 0; r < 30; ++r)
    for (id_type id : approx.get<col::candidates>().row(r)) {
      const auto truth = exact.get<col::candidates>().row(r);
      hits += std::find(truth.begin(), truth.end(), id) != truth.end();
    }
  CHECK(static_cast<double>(hits) / 300.0 >= 0.9);
  for (id_type id : approx.get<col::candidates>().values()) CHECK((id >= 0 && id < 500));
}
