// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu::hnsw_index's inner product through the L2 reduction (recall, exact scores,
// max_norm and overflows, files), filtered search (search_filtered) and the add progress callback.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <numeric>
#include <set>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/io/synthetic_catalog.hpp>

#include "common/index_fixtures.hpp"

namespace {
using recpipe::id_type;
using recpipe::metric;
using recpipe::testing::make_ids;
using recpipe::testing::random_matrix;
using recpipe::cpu::exact_index;
using recpipe::cpu::hnsw_index;
using recpipe::cpu::hnsw_options;
namespace fs = std::filesystem;

std::vector<id_type> iota_ids(std::size_t n) {
  std::vector<id_type> ids(n);
  std::iota(ids.begin(), ids.end(), id_type{0});
  return ids;
}

// hnswlib 0.8 has a search-time filter functor (searchKnn's third parameter); 0.6.2 has none.
template <class F>
struct third_parameter {
  using type = void;
};
template <class R, class C, class A, class B, class T>
struct third_parameter<R (C::*)(A, B, T) const> {
  using type = std::remove_pointer_t<T>;
};
using hnswlib_filter = typename third_parameter<decltype(&hnswlib::HierarchicalNSW<float>::searchKnn)>::type;

}  // namespace

TEST_CASE("hnsw_index: the L2 reduction reaches recall@500 >= 0.95 on a 20k synthetic catalog (quickstart settings)") {
  recpipe::io::synthetic_catalog_config config;
  config.items = 20'000;
  config.users = 100;
  const auto catalog = recpipe::io::synthetic_catalog::generate(config);
  const auto ids = iota_ids(config.items);
  hnsw_index ann(config.dim, metric::inner_product, {.capacity = config.items, .m = 32, .ef_construction = 200});
  CHECK(ann.mips_reduction());
  ann.add(ids, catalog.item_vectors.view(), 2);
  ann.set_ef(600);
  exact_index exact(config.dim, metric::inner_product, config.items);
  exact.add(ids, catalog.item_vectors.view());
  const double r500 = recpipe::cpu::recall_at_k(ann, exact, catalog.user_vectors.view(), 500);
  const double r10 = recpipe::cpu::recall_at_k(ann, exact, catalog.user_vectors.view(), 10);
  MESSAGE("L2 reduction, 20k items, M 32, ef 600: recall@10 ", r10, ", recall@500 ", r500);
  CHECK(r500 >= 0.95);
  CHECK(r10 >= 0.95);
  CHECK(ann.norm_overflows() == 0);
  CHECK(ann.max_norm() > 1.0f);  // 1.25 x the longest item vector (longer than 1: popular items)
}

TEST_CASE("hnsw_index: with the L2 reduction scores are exact inner products and R is fixed by the first add") {
  const std::size_t n = 500, dim = 8;
  const auto items = random_matrix(n, dim, 3);
  const auto ids = make_ids(n);
  hnsw_index index(dim, metric::inner_product, {.capacity = 16, .norm_headroom = 2.0f});
  CHECK(index.max_norm() == 0.0f);
  index.add(ids, items.view());
  float longest = 0;
  for (std::size_t i = 0; i < n; ++i) longest = std::max(longest, recpipe::detail::mips_norm(items.row(i)));
  CHECK(index.max_norm() == doctest::Approx(2.0 * longest));
  const auto queries = random_matrix(10, dim, 4);
  std::vector<id_type> out(20);
  std::vector<float> scores(20);
  for (std::size_t q = 0; q < queries.rows(); ++q) {
    REQUIRE(index.search(queries.row(q), 20, out, scores, 100) == 20);
    for (std::size_t i = 0; i < 20; ++i) {
      const std::size_t row = static_cast<std::size_t>((out[i] - 100) / 3);
      double dot = 0;
      for (std::size_t d = 0; d < dim; ++d) dot += static_cast<double>(queries(q, d)) * items(row, d);
      CHECK(scores[i] == doctest::Approx(dot).epsilon(1e-5));
    }
  }
  // l2 and the direct graph have no R.
  CHECK_FALSE(hnsw_index(dim, metric::l2).mips_reduction());
  CHECK_FALSE(hnsw_index(dim, metric::inner_product, {.mips_reduction = false}).mips_reduction());
}

TEST_CASE("hnsw_index: a vector longer than max_norm is an overflow: added and found, or rejected when asked") {
  const std::size_t dim = 4;
  hnsw_index index(dim, metric::inner_product, {.max_norm = 2.0f});
  index.add(1, std::vector<float>{1, 0, 0, 0});
  index.add(2, std::vector<float>{0, 1, 0, 0});
  CHECK(index.max_norm() == 2.0f);  // given, not taken from the first add
  CHECK(index.norm_overflows() == 0);
  index.add(3, std::vector<float>{5, 0, 0, 0});  // norm 5 > 2
  CHECK(index.norm_overflows() == 1);
  std::vector<id_type> out(1);
  std::vector<float> scores(1);
  REQUIRE(index.search(std::vector<float>{1, 0, 0, 0}, 1, out, scores) == 1);
  CHECK(out[0] == 3);
  CHECK(scores[0] == 5.0f);

  hnsw_index strict(dim, metric::inner_product, {.max_norm = 2.0f, .reject_norm_overflow = true});
  strict.add(1, std::vector<float>{1, 0, 0, 0});
  CHECK_THROWS_WITH_AS(strict.add(3, std::vector<float>{5, 0, 0, 0}), doctest::Contains("above the index's max_norm 2"),
                       recpipe::error);
  recpipe::matrix<float> batch(2, dim, 0.0f);
  batch(0, 0) = 1;
  batch(1, 1) = 3;
  const std::vector<id_type> batch_ids{7, 8};
  CHECK_THROWS_WITH_AS(strict.add(batch_ids, batch.view()), doctest::Contains("id 8 has norm 3"), recpipe::error);
  CHECK(strict.size() == 1);  // a rejected batch adds nothing
  CHECK_FALSE(strict.contains(7));

  // A first add of zero vectors leaves R unfixed; the next nonzero add fixes it.
  hnsw_index zeros(dim, metric::inner_product);
  zeros.add(1, std::vector<float>{0, 0, 0, 0});
  CHECK(zeros.max_norm() == 0.0f);
  zeros.add(2, std::vector<float>{0, 2, 0, 0});
  CHECK(zeros.max_norm() == doctest::Approx(2.5f));
  CHECK(zeros.norm_overflows() == 0);

  CHECK_THROWS_WITH_AS(hnsw_index(dim, metric::inner_product, {.max_norm = -1.0f}), doctest::Contains("max_norm must be"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(hnsw_index(dim, metric::inner_product, {.norm_headroom = 0.5f}),
                       doctest::Contains("norm_headroom must be"), recpipe::error);
}

TEST_CASE("hnsw_index: an L2-reduction index saves and loads with identical results and its max_norm") {
  const fs::path dir = fs::path(RECPIPE_TEST_BINARY_DIR) / "hnsw_mips_scratch";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::size_t n = 800, dim = 10;
  const auto items = random_matrix(n, dim, 8);
  const auto ids = make_ids(n);
  hnsw_index index(dim, metric::inner_product, {.capacity = n, .m = 8, .ef_construction = 64});
  index.add(ids, items.view());
  index.remove(ids[3]);
  index.save(dir / "mips.hnsw");
  hnsw_index loaded = hnsw_index::load(dir / "mips.hnsw");
  CHECK(loaded.mips_reduction());
  CHECK(loaded.metric() == metric::inner_product);
  CHECK(loaded.dim() == dim);
  CHECK(loaded.max_norm() == doctest::Approx(index.max_norm()).epsilon(1e-5));
  const auto queries = random_matrix(20, dim, 9);
  std::vector<id_type> a(10), b(10);
  std::vector<float> sa(10), sb(10);
  for (std::size_t q = 0; q < queries.rows(); ++q) {
    index.search(queries.row(q), 10, a, sa, 50);
    loaded.search(queries.row(q), 10, b, sb, 50);
    CHECK(a == b);
    CHECK(sa == sb);
  }
  loaded.add(5000, std::vector<float>(dim, 0.1f));  // adds after a load use the recovered R
  CHECK(loaded.contains(5000));
  CHECK(loaded.norm_overflows() == 0);
  fs::remove_all(dir);
}

TEST_CASE("hnsw_index: search_filtered returns exactly k allowed items when k exist, all of them otherwise") {
  for (const bool reduce : {true, false}) {
    CAPTURE(reduce);
    const std::size_t n = 2000, dim = 12;
    const auto items = random_matrix(n, dim, 5);
    const auto ids = iota_ids(n);
    hnsw_index index(dim, metric::inner_product, {.capacity = n, .m = 12, .mips_reduction = reduce});
    index.add(ids, items.view());
    for (id_type id = 0; id < 100; ++id) index.remove(id);  // removed items are never returned
    exact_index exact(dim, metric::inner_product);
    exact.add(ids, items.view());
    const auto queries = random_matrix(10, dim, 6);
    std::vector<id_type> out(50), truth(n);
    std::vector<float> scores(50), truth_scores(n);
    std::size_t hits = 0;
    for (std::size_t q = 0; q < queries.rows(); ++q) {
      // Only multiples of 7 above 100: 271 eligible items.
      const auto allowed = [](id_type id) { return id >= 100 && id % 7 == 0; };
      REQUIRE(index.search_filtered(queries.row(q), 50, allowed, out, scores, 64) == 50);
      CHECK(std::set<id_type>(out.begin(), out.end()).size() == 50);
      for (const id_type id : out) CHECK(allowed(id));
      exact.search(queries.row(q), n, truth, truth_scores);
      std::vector<id_type> best;
      for (const id_type id : truth)
        if (allowed(id) && best.size() < 50) best.push_back(id);
      for (const id_type id : out) hits += std::find(best.begin(), best.end(), id) != best.end();
    }
    MESSAGE("filtered recall@50 (ef 64, 14% of items allowed): ", static_cast<double>(hits) / 500.0);
    CHECK(hits >= 450);

    // Fewer allowed than k: all of them; none allowed: nothing, no error.
    const std::unordered_set<id_type> few{150, 1999, 42 /* removed */};
    REQUIRE(index.search_filtered(queries.row(0), 50, [&](id_type id) { return few.contains(id); }, out, scores) == 2);
    CHECK(std::set<id_type>(out.begin(), out.begin() + 2) == std::set<id_type>{150, 1999});
    CHECK(index.search_filtered(queries.row(0), 50, [](id_type) { return false; }, out, scores) == 0);
    CHECK_THROWS_WITH_AS(index.search_filtered(queries.row(0), 50, [](id_type) { return true; }, out, scores, 0),
                         doctest::Contains("ef must be at least 1"), recpipe::error);
  }
  hnsw_index empty(3, metric::l2);
  std::vector<id_type> out(5);
  std::vector<float> scores(5);
  CHECK(empty.search_filtered(std::vector<float>{1, 2, 3}, 5, [](id_type) { return true; }, out, scores) == 0);
}

namespace {
// A template, so that the branch for hnswlib 0.6 (Filter = void) is discarded.
template <class Filter>
void check_filter_functor() {
  if constexpr (std::is_void_v<Filter>) {
    MESSAGE("hnswlib 0.6 has no BaseFilterFunctor; scripts/check-hnswlib-0.8 runs this case against 0.8");
  } else {
    struct odd_only : Filter {
      bool operator()(hnswlib::labeltype id) override { return id % 2 == 1; }
    };
    hnsw_index index(2, metric::l2);
    for (id_type i = 0; i < 50; ++i) index.add(i, std::vector<float>{static_cast<float>(i), 0});
    odd_only odd;
    Filter& functor = odd;
    std::vector<id_type> out(3);
    std::vector<float> scores(3);
    REQUIRE(index.search_filtered(std::vector<float>{10, 0}, 3, functor, out, scores) == 3);
    CHECK(std::set<id_type>(out.begin(), out.end()) == std::set<id_type>{9, 11, 7});
  }
}
}  // namespace

TEST_CASE("hnsw_index: search_filtered takes hnswlib 0.8's filter functor (a message with hnswlib 0.6)") {
  check_filter_functor<hnswlib_filter>();
}

TEST_CASE("hnsw_index: add reports progress every 1% and once at the end") {
  const std::size_t n = 1000, dim = 4;
  const auto items = random_matrix(n, dim, 12);
  const auto ids = make_ids(n);
  for (const std::size_t threads : {1, 2}) {
    hnsw_index index(dim, metric::inner_product, {.capacity = n, .m = 8, .ef_construction = 32});
    std::vector<std::size_t> seen;
    index.add(ids, items.view(), threads, [&](std::size_t done, std::size_t total) {
      CHECK(total == n);
      seen.push_back(done);
    });
    REQUIRE(!seen.empty());
    CHECK(seen.size() >= (threads == 1 ? 100 : 50));  // with 2 threads a call can report a later count
    CHECK(seen.size() <= 101);
    CHECK(seen.back() == n);
    CHECK(std::is_sorted(seen.begin(), seen.end()));
  }
  // A callback that throws stops the add with its exception.
  hnsw_index index(dim, metric::l2);
  CHECK_THROWS_WITH_AS(index.add(ids, items.view(), 1, [](std::size_t done, std::size_t) {
    if (done >= 50) throw recpipe::error("stop");
  }), doctest::Contains("stop"), recpipe::error);
  CHECK(index.size() == 50);
}
