// SPDX-License-Identifier: Apache-2.0
// Tests for the retrieve stage: k, dimensions, non-finite queries, and both index kinds.
#include <doctest/doctest.h>

#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/retrieve.hpp>

#include "common/catalog.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
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

// ---- Filtered retrieval: excluding<history>() and where(predicate) refill to k ----
namespace {
using with_history = batch<col::user_id, col::query_vector, col::history>;
using retrieved = batch<col::user_id, col::query_vector, col::history, col::candidates, col::retrieval_score>;
with_history queries_with_history(const std::vector<std::vector<float>>& rows, std::vector<std::size_t> offsets,
                                  std::vector<id_type> seen) {
  with_history b(rows.size());
  b.get<col::query_vector>() = matrix<float>(rows.size(), rows[0].size());
  for (std::size_t r = 0; r < rows.size(); ++r)
    for (std::size_t d = 0; d < rows[r].size(); ++d) b.get<col::query_vector>()(r, d) = rows[r][d];
  b.get<col::history>().assign(std::move(offsets), std::move(seen));
  return b;
}
// 30 items on a line: item i has vector (i, 1), so the query (1, 0) ranks them 29, 28, ..., 0.
template <class Index>
void add_line(Index& index) {
  for (id_type i = 0; i < 30; ++i) index.add(i, std::vector<float>{static_cast<float>(i), 1.0f});
}
std::vector<id_type> expected_unseen(std::size_t k, const std::vector<id_type>& seen, id_type parity = -1) {
  std::vector<id_type> out;
  for (id_type i = 29; i >= 0 && out.size() < k; --i)
    if (std::find(seen.begin(), seen.end(), i) == seen.end() && (parity < 0 || i % 2 == parity)) out.push_back(i);
  return out;
}
}  // namespace

TEST_CASE_TEMPLATE("retrieve(...).excluding<history>() returns exactly k unseen items when k exist", Index,
                   cpu::exact_index, cpu::hnsw_index) {
  Index index(2, metric::inner_product);
  add_line(index);
  // Request 0 saw the 8 best items, request 1 nothing, request 2 saw 25 of the 30.
  std::vector<id_type> seen0{29, 28, 27, 26, 25, 24, 23, 22};
  std::vector<id_type> seen2;
  for (id_type i = 0; i < 25; ++i) seen2.push_back(i);
  std::vector<id_type> all = seen0;
  all.insert(all.end(), seen2.begin(), seen2.end());
  const retrieved out = queries_with_history({{1, 0}, {1, 0}, {1, 0}}, {0, 8, 8, 33}, all) >>
                   retrieve(index, 5).template excluding<col::history>();
  const auto& c = out.get<col::candidates>();
  CHECK(std::vector<id_type>(c.row(0).begin(), c.row(0).end()) == expected_unseen(5, seen0));
  CHECK(std::vector<id_type>(c.row(1).begin(), c.row(1).end()) == expected_unseen(5, {}));
  CHECK(std::vector<id_type>(c.row(2).begin(), c.row(2).end()) == expected_unseen(5, seen2));  // exactly the 5 left
  CHECK(out.get<col::retrieval_score>().size() == 15);
  CHECK(out.get<col::retrieval_score>()[0] == 21.0f);  // the true inner product of item 21
}

TEST_CASE_TEMPLATE("filtered retrieval: fewer eligible than k gives all of them, none eligible gives none", Index,
                   cpu::exact_index, cpu::hnsw_index) {
  Index index(2, metric::inner_product);
  add_line(index);
  std::vector<id_type> everything;
  for (id_type i = 0; i < 30; ++i) everything.push_back(i);
  std::vector<id_type> all_but_three(everything.begin() + 3, everything.end());  // 0, 1, 2 stay eligible
  std::vector<id_type> seen = everything;
  seen.insert(seen.end(), all_but_three.begin(), all_but_three.end());
  const retrieved out = queries_with_history({{1, 0}, {1, 0}}, {0, 30, 57}, seen) >>
                   retrieve(index, 10).template excluding<col::history>();
  const auto& c = out.get<col::candidates>();
  CHECK(c.row(0).empty());  // everything filtered: an empty list, no error
  CHECK(std::vector<id_type>(c.row(1).begin(), c.row(1).end()) == std::vector<id_type>{2, 1, 0});

  // A predicate, alone and combined with the history; an empty index; a predicate that rejects all.
  const retrieved even = queries_with_history({{1, 0}}, {0, 2}, {28, 26}) >>
                    retrieve(index, 4).template excluding<col::history>().where([](id_type id) { return id % 2 == 0; });
  const auto& e = even.get<col::candidates>();
  CHECK(std::vector<id_type>(e.row(0).begin(), e.row(0).end()) == expected_unseen(4, {28, 26}, 0));
  const retrieved none = queries_with_history({{1, 0}}, {0, 0}, {}) >> retrieve(index, 4).where([](id_type) { return false; });
  CHECK(none.get<col::candidates>().row(0).empty());
  Index empty(2, metric::inner_product);
  const retrieved from_empty = queries_with_history({{1, 0}}, {0, 1}, {3}) >> retrieve(empty, 4).template excluding<col::history>();
  CHECK(from_empty.get<col::candidates>().row(0).empty());
}

TEST_CASE("filtered hnsw retrieval on a larger catalog returns k unseen items that match exact filtered retrieval") {
  const std::size_t n = 3000, dim = 16;
  matrix<float> vectors(n, dim);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (auto& x : vectors.values()) x = normal(rng);
  std::vector<id_type> ids(n);
  std::iota(ids.begin(), ids.end(), id_type{0});
  cpu::hnsw_index ann(dim, metric::inner_product, n);
  cpu::exact_index exact(dim, metric::inner_product);
  ann.add(ids, vectors.view());
  exact.add(ids, vectors.view());
  ann.set_ef(200);
  // History: the exact top 40 of each query, so the answer must come from beyond them.
  std::vector<std::vector<float>> rows;
  std::vector<std::size_t> offsets{0};
  std::vector<id_type> seen;
  for (std::size_t q = 0; q < 20; ++q) {
    rows.emplace_back(vectors.row(q).begin(), vectors.row(q).end());
    std::vector<id_type> top(40);
    std::vector<float> scores(40);
    exact.search(vectors.row(q), 40, top, scores);
    seen.insert(seen.end(), top.begin(), top.end());
    offsets.push_back(seen.size());
  }
  const auto got = queries_with_history(rows, offsets, seen) >> retrieve(ann, 10).excluding<col::history>();
  const auto truth = queries_with_history(rows, offsets, seen) >> retrieve(exact, 10).excluding<col::history>();
  std::size_t hits = 0;
  for (std::size_t q = 0; q < 20; ++q) {
    const auto row = got.get<col::candidates>().row(q);
    REQUIRE(row.size() == 10);
    for (const id_type id : row) {
      CHECK(std::find(seen.begin() + static_cast<std::ptrdiff_t>(offsets[q]), seen.begin() + static_cast<std::ptrdiff_t>(offsets[q + 1]), id) ==
            seen.begin() + static_cast<std::ptrdiff_t>(offsets[q + 1]));
      const auto t = truth.get<col::candidates>().row(q);
      hits += std::find(t.begin(), t.end(), id) != t.end();
    }
  }
  MESSAGE("filtered hnsw recall@10 against filtered exact retrieval: ", static_cast<double>(hits) / 200.0);
  CHECK(hits >= 180);
}
