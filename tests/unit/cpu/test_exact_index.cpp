// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu::exact_index against a naive double-precision reference, its bad-input handling and recall helpers.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <recpipe/cpu/exact_index.hpp>

#include "common/index_fixtures.hpp"

namespace {

using recpipe::testing::make_ids;
using recpipe::testing::random_matrix;

using recpipe::id_type;
using recpipe::metric;
using recpipe::cpu::exact_index;

// Naive double-precision score with the documented convention.
double reference_score(metric kind, std::span<const float> q, std::span<const float> x) {
  double acc = 0;
  for (std::size_t j = 0; j < q.size(); ++j) {
    if (kind == metric::inner_product)
      acc += static_cast<double>(q[j]) * x[j];
    else
      acc -= (static_cast<double>(q[j]) - x[j]) * (static_cast<double>(q[j]) - x[j]);
  }
  return acc;
}

struct scored {
  double score;
  id_type id;
};

// Reference top-k: score desc then id asc, in double precision.
std::vector<scored> reference_top_k(metric kind, const recpipe::matrix<float>& items, const std::vector<id_type>& ids,
                                    std::span<const float> q, std::size_t k) {
  std::vector<scored> all;
  for (std::size_t i = 0; i < ids.size(); ++i) all.push_back({reference_score(kind, q, items.row(i)), ids[i]});
  std::sort(all.begin(), all.end(), [](const scored& a, const scored& b) {
    return a.score != b.score ? a.score > b.score : a.id < b.id;
  });
  all.resize(std::min(k, all.size()));
  return all;
}

}  // namespace

TEST_CASE("exact_index matches a naive reference for both metrics") {
  for (const metric kind : {metric::inner_product, metric::l2}) {
    CAPTURE(recpipe::metric_name(kind));
    const std::size_t n = 500, dim = 24, k = 10;
    const auto items = random_matrix(n, dim, 1);
    const auto ids = make_ids(n);
    exact_index index(dim, kind);
    index.add(ids, items.view());
    CHECK(index.size() == n);
    CHECK(index.dim() == dim);
    CHECK(index.metric() == kind);
    const auto queries = random_matrix(20, dim, 2);
    for (std::size_t q = 0; q < queries.rows(); ++q) {
      std::vector<id_type> out_ids(k);
      std::vector<float> out_scores(k);
      REQUIRE(index.search(queries.row(q), k, out_ids, out_scores) == k);
      const auto expected = reference_top_k(kind, items, ids, queries.row(q), k);
      for (std::size_t i = 0; i < k; ++i) {
        // Scores agree to float rounding; the id order then agrees too unless two items are
        // within rounding of each other, which random normal data makes vanishingly rare.
        CHECK(out_scores[i] == doctest::Approx(expected[i].score).epsilon(1e-4).scale(10.0));
        CHECK(out_ids[i] == expected[i].id);
        if (i > 0) CHECK(out_scores[i - 1] >= out_scores[i]);
        if (kind == metric::l2) CHECK(out_scores[i] <= 0.0f);
      }
    }
  }
}

TEST_CASE("exact_index: k = 0, k > size and the empty index") {
  exact_index index(4, metric::inner_product);
  const std::vector<float> q = {1, 2, 3, 4};
  std::vector<id_type> out_ids(8, -1);
  std::vector<float> out_scores(8, 0);
  CHECK(index.search(q, 5, out_ids, out_scores) == 0);  // empty
  CHECK(index.search(q, 0, {}, {}) == 0);

  const auto items = random_matrix(3, 4, 3);
  index.add(std::vector<id_type>{5, 9, 2}, items.view());
  CHECK(index.search(q, 0, {}, {}) == 0);
  CHECK(index.search(q, 100, out_ids, out_scores) == 3);  // k > size returns size
  std::multiset<id_type> got(out_ids.begin(), out_ids.begin() + 3);
  CHECK(got == std::multiset<id_type>{2, 5, 9});
  CHECK(out_ids[3] == -1);  // nothing written past the count
}

TEST_CASE("exact_index: identical scores break ties by id ascending") {
  exact_index index(2, metric::inner_product);
  const std::vector<float> v = {1, 1};
  for (const id_type id : {40, 3, 17, 8}) index.add(id, v);
  std::vector<id_type> out_ids(4);
  std::vector<float> out_scores(4);
  REQUIRE(index.search(v, 4, out_ids, out_scores) == 4);
  CHECK(out_ids == std::vector<id_type>{3, 8, 17, 40});
}

TEST_CASE("exact_index: remove, replace and re-add") {
  const std::size_t dim = 8;
  const auto items = random_matrix(50, dim, 4);
  auto ids = make_ids(50, 0, 1);
  exact_index index(dim, metric::l2);
  index.add(ids, items.view());
  // Remove every third item (exercises the move-last-row-into-the-hole path).
  std::set<id_type> removed;
  for (id_type id = 0; id < 50; id += 3) {
    CHECK(index.remove(id));
    removed.insert(id);
  }
  CHECK_FALSE(index.remove(0));    // already removed
  CHECK_FALSE(index.remove(999));  // never added
  CHECK(index.size() == 50 - removed.size());
  for (std::size_t i = 0; i < 50; ++i) {
    const auto id = static_cast<id_type>(i);
    CHECK(index.contains(id) == (removed.count(id) == 0));
    if (!removed.count(id)) CHECK(index.item_vector(id) == std::vector<float>(items.row(i).begin(), items.row(i).end()));
  }
  // Each remaining item is its own nearest neighbour at distance 0; removed ones never come back.
  for (std::size_t i = 0; i < 50; ++i) {
    std::vector<id_type> out_ids(50);
    std::vector<float> out_scores(50);
    const std::size_t n = index.search(items.row(i), 50, out_ids, out_scores);
    CHECK(n == index.size());
    for (std::size_t r = 0; r < n; ++r) CHECK(removed.count(out_ids[r]) == 0);
    if (!removed.count(static_cast<id_type>(i))) {
      CHECK(out_ids[0] == static_cast<id_type>(i));
      CHECK(out_scores[0] == doctest::Approx(0.0).scale(1.0));
    }
  }
  // Replacing the vector of an existing id changes its score, not the size.
  const std::vector<float> far(dim, 100.0f);
  index.add(1, far);
  CHECK(index.size() == 50 - removed.size());
  std::vector<id_type> top(1);
  std::vector<float> top_score(1);
  index.search(far, 1, top, top_score);
  CHECK(top[0] == 1);
  // A removed id can be added again.
  index.add(0, far);
  CHECK(index.contains(0));
  CHECK_THROWS_AS(index.item_vector(3), recpipe::index_error);
}

TEST_CASE("exact_index: search_batch equals search and blocks large batches") {
  for (const metric kind : {metric::inner_product, metric::l2}) {
    CAPTURE(recpipe::metric_name(kind));
    // 60000 items make the batch path split 200 queries into blocks of 69 (16 MiB score buffer).
    const std::size_t n = 60000, dim = 4, nq = 200, k = 5;
    const auto items = random_matrix(n, dim, 5);
    exact_index index(dim, kind, n);
    index.add(make_ids(n), items.view());
    // Queries in a strided view (stride 7 > 4 columns).
    std::vector<float> storage(nq * 7, -1.0f);
    const auto dense = random_matrix(nq, dim, 6);
    for (std::size_t q = 0; q < nq; ++q) std::copy_n(dense.row(q).data(), dim, storage.data() + q * 7);
    const recpipe::matrix_view<const float> queries(storage.data(), nq, dim, 7);
    recpipe::matrix<id_type> ids(nq, k);
    recpipe::matrix<float> scores(nq, k);
    REQUIRE(index.search_batch(queries, k, ids.view(), scores.view()) == k);
    for (std::size_t q = 0; q < nq; ++q) {
      std::vector<id_type> one_ids(k);
      std::vector<float> one_scores(k);
      index.search(queries.row(q), k, one_ids, one_scores);
      for (std::size_t i = 0; i < k; ++i) {
        // GEMM and GEMV may round differently; the ids must agree and scores to rounding.
        CHECK(ids(q, i) == one_ids[i]);
        CHECK(scores(q, i) == doctest::Approx(one_scores[i]).epsilon(1e-5).scale(1.0));
      }
    }
  }
}

TEST_CASE("exact_index: bad input throws recpipe::error naming the problem") {
  exact_index index(3, metric::inner_product);
  const std::vector<float> ok = {1, 2, 3};
  const std::vector<float> short_vector = {1, 2};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(exact_index(0), doctest::Contains("dim must be at least 1"), recpipe::error);
  CHECK_THROWS_WITH_AS(exact_index(3, static_cast<metric>(7)), doctest::Contains("unknown metric 7"), recpipe::error);
  CHECK_THROWS_WITH_AS(index.add(1, short_vector), doctest::Contains("has dimension 2 but the index has dimension 3"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(index.add(-4, ok), doctest::Contains("id -4 is negative"), recpipe::error);
  CHECK_THROWS_WITH_AS(index.add(1, std::vector<float>{1, nan, 3}), doctest::Contains("non-finite value"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(index.add(1, std::vector<float>{1, 2, inf}), doctest::Contains("at position 2"), recpipe::error);
  CHECK_THROWS_AS(index.remove(-1), recpipe::error);
  CHECK(index.size() == 0);

  // A batch with one bad row adds nothing.
  recpipe::matrix<float> batch(3, 3, 1.0f);
  batch(2, 1) = nan;
  CHECK_THROWS_AS(index.add(std::vector<id_type>{1, 2, 3}, batch.view()), recpipe::error);
  CHECK(index.size() == 0);
  CHECK_THROWS_WITH_AS(index.add(std::vector<id_type>{1, 2}, batch.view()), doctest::Contains("2 ids but 3 vectors"),
                       recpipe::error);
  recpipe::matrix<float> wide(2, 4, 1.0f);
  CHECK_THROWS_WITH_AS(index.add(std::vector<id_type>{1, 2}, wide.view()),
                       doctest::Contains("vectors have dimension 4 but the index has dimension 3"), recpipe::error);

  index.add(1, ok);
  index.add(2, ok);
  std::vector<id_type> out_ids(2);
  std::vector<float> out_scores(2);
  CHECK_THROWS_WITH_AS(index.search(short_vector, 1, out_ids, out_scores),
                       doctest::Contains("query has dimension 2 but the index has dimension 3"), recpipe::error);
  CHECK_THROWS_WITH_AS(index.search(std::vector<float>{nan, 0, 0}, 1, out_ids, out_scores),
                       doctest::Contains("query has a non-finite value"), recpipe::error);
  std::vector<id_type> tiny_ids(1);
  std::vector<float> tiny_scores(1);
  CHECK_THROWS_WITH_AS(index.search(ok, 2, tiny_ids, tiny_scores), doctest::Contains("2 results are needed"),
                       recpipe::error);

  recpipe::matrix<float> queries(2, 3, 1.0f);
  recpipe::matrix<id_type> few_rows(1, 2);
  recpipe::matrix<float> few_rows_scores(1, 2);
  CHECK_THROWS_WITH_AS(index.search_batch(queries.view(), 2, few_rows.view(), few_rows_scores.view()),
                       doctest::Contains("there are 2 queries"), recpipe::error);
  recpipe::matrix<id_type> narrow(2, 1);
  recpipe::matrix<float> narrow_scores(2, 1);
  CHECK_THROWS_WITH_AS(index.search_batch(queries.view(), 2, narrow.view(), narrow_scores.view()),
                       doctest::Contains("2 results per query are needed"), recpipe::error);
  recpipe::matrix<float> wrong_dim(2, 2, 1.0f);
  recpipe::matrix<id_type> out2(2, 2);
  recpipe::matrix<float> out2_scores(2, 2);
  CHECK_THROWS_WITH_AS(index.search_batch(wrong_dim.view(), 2, out2.view(), out2_scores.view()),
                       doctest::Contains("query has dimension 2"), recpipe::error);
  // An empty batch is fine and writes nothing.
  CHECK(index.search_batch(recpipe::matrix_view<const float>(), 2, recpipe::matrix_view<id_type>(),
                           recpipe::matrix_view<float>()) == 2);

  exact_index moved_to(std::move(index));
  CHECK(moved_to.size() == 2);
  CHECK_THROWS_WITH_AS((void)index.size(), doctest::Contains("moved from"), recpipe::error);  // NOLINT(bugprone-use-after-move)
}

TEST_CASE("exact_index: concurrent searches agree with single-threaded results") {
  const std::size_t n = 3000, dim = 16, nq = 64, k = 10;
  const auto items = random_matrix(n, dim, 7);
  exact_index index(dim, metric::inner_product);
  index.add(make_ids(n), items.view());
  const auto queries = random_matrix(nq, dim, 8);
  recpipe::matrix<id_type> expected(nq, k);
  recpipe::matrix<float> expected_scores(nq, k);
  for (std::size_t q = 0; q < nq; ++q) index.search(queries.row(q), k, expected.row(q), expected_scores.row(q));

  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::vector<id_type> ids(k);
      std::vector<float> scores(k);
      for (int rep = 0; rep < 20; ++rep)
        for (std::size_t q = static_cast<std::size_t>(t); q < nq; q += 2) {
          index.search(queries.row(q), k, ids, scores);
          for (std::size_t i = 0; i < k; ++i)
            if (ids[i] != expected(q, i) || scores[i] != expected_scores(q, i)) ++mismatches;
        }
    });
  for (auto& t : threads) t.join();
  CHECK(mismatches.load() == 0);
}

TEST_CASE("recall and recall_at_k") {
  using recpipe::cpu::recall;
  CHECK(recall(std::vector<id_type>{1, 2, 3, 4}, std::vector<id_type>{4, 9, 1}) == doctest::Approx(0.5));
  CHECK(recall(std::vector<id_type>{}, std::vector<id_type>{1}) == 1.0);
  CHECK(recall(std::vector<id_type>{1}, std::vector<id_type>{}) == 0.0);

  const auto items = random_matrix(200, 8, 9);
  exact_index a(8, metric::inner_product), b(8, metric::inner_product);
  a.add(make_ids(200), items.view());
  b.add(make_ids(200), items.view());
  const auto queries = random_matrix(10, 8, 10);
  CHECK(recpipe::cpu::recall_at_k(a, b, queries.view(), 10) == 1.0);
  // Half the items missing from the "approximate" side: recall drops below 1.
  for (id_type id : make_ids(100)) b.remove(id);
  const double partial = recpipe::cpu::recall_at_k(b, a, queries.view(), 10);
  CHECK(partial < 1.0);
  CHECK(partial > 0.0);
  exact_index other_dim(4, metric::inner_product);
  CHECK_THROWS_WITH_AS(recpipe::cpu::recall_at_k(other_dim, a, queries.view(), 10), doctest::Contains("dimension 4"),
                       recpipe::error);
  exact_index other_metric(8, metric::l2);
  CHECK_THROWS_WITH_AS(recpipe::cpu::recall_at_k(other_metric, a, queries.view(), 10), doctest::Contains("metric l2"),
                       recpipe::error);
}
