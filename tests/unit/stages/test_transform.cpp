// SPDX-License-Identifier: Apache-2.0
// Tests for the transform stage and the per-value rules it shares with the trainer
// (math/features.hpp): values, op chaining, bad input, and training/serving parity (the trainer's
// online_features and a trainer-side featurizer give the values the serving stage gives).
#include <doctest/doctest.h>

#include <recpipe/core/describe.hpp>
#include <recpipe/core/versions.hpp>
#include <recpipe/math/features.hpp>
#include <recpipe/stages/transform.hpp>
#include <recpipe/train/online_features.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace recpipe;

namespace {
RECPIPE_COLUMN(price, per_candidate, float);
RECPIPE_COLUMN(price_z, per_candidate, float);
RECPIPE_COLUMN(log_price, per_candidate, float);
RECPIPE_COLUMN(price_bucket, per_candidate, id_type);
RECPIPE_COLUMN(item_index, per_candidate, id_type);
RECPIPE_COLUMN(user_bucket, per_request, id_type);
RECPIPE_COLUMN(user_x_item, per_candidate, id_type);
RECPIPE_COLUMN(user_count, per_request, float);
RECPIPE_COLUMN(user_rate, per_request, float);
RECPIPE_COLUMN(item_count, per_candidate, float);
RECPIPE_COLUMN(item_rate, per_candidate, float);
RECPIPE_COLUMN(age, per_request, float);
RECPIPE_COLUMN(age_bucket, per_request, std::int32_t);
RECPIPE_COLUMN(history_index, per_request_list, id_type);
RECPIPE_COLUMN(embedding_z, per_request_vector, float);
RECPIPE_COLUMN(country, per_request, id_type);
RECPIPE_COLUMN(country_x_user, per_request, id_type);

constexpr float qnan = std::numeric_limits<float>::quiet_NaN();
constexpr float inf = std::numeric_limits<float>::infinity();

using request_batch = batch<col::user_id, col::candidates, price>;
request_batch make_requests() {
  request_batch b(3);
  b.get<col::user_id>() = {7, 8, 9};
  b.get<col::candidates>().assign({0, 3, 3, 5}, {10, 11, 12, 10, 99});
  b.get<price>() = {1.0f, -2.0f, qnan, inf, 40.0f};
  b.validate();
  return b;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }
}  // namespace

TEST_CASE("math rules: vocabulary, hashing, crossing") {
  const math::vocabulary v({42, 7, 1000});
  CHECK(v.index(42) == 1);
  CHECK(v.index(7) == 2);
  CHECK(v.index(1000) == 3);
  CHECK(v.index(5) == math::oov_index);
  CHECK(v.rows() == 4);
  CHECK_THROWS_WITH_AS(math::vocabulary({1, 2, 1}), doctest::Contains("value 1 appears twice"), recpipe::error);

  const std::vector<std::int64_t> seen = {5, 3, 5, 9, 3, 5, 8};
  const auto fitted = math::vocabulary::fit(seen);  // 5 (x3), 3 (x2), then 8 and 9 (x1, by value)
  CHECK(std::vector<std::int64_t>(fitted.values().begin(), fitted.values().end()) == std::vector<std::int64_t>{5, 3, 8, 9});
  CHECK(math::vocabulary::fit(seen, 2).size() == 2);

  // Hashes are fixed numbers (the same on every platform): a model trained on them serves them.
  CHECK(math::mix64(0) == 0xe220a8397b1dcdafull);
  for (std::int64_t x : {std::int64_t{-5}, std::int64_t{0}, std::int64_t{123456789}}) {
    CHECK(math::hash_bucket(x, 10) >= 0);
    CHECK(math::hash_bucket(x, 10) < 10);
    CHECK(math::hash_bucket(x, 1) == 0);
  }
  CHECK(math::hash_cross(1, 2, 1'000'003) != math::hash_cross(2, 1, 1'000'003));
  CHECK_THROWS_WITH_AS(math::hash_bucket(1, 0), doctest::Contains("buckets must be at least 1"), recpipe::error);
  CHECK_THROWS_WITH_AS(math::hash_cross(1, 2, 0), doctest::Contains("buckets must be at least 1"), recpipe::error);
}

TEST_CASE("math rules: normalize, bucketize, log1p, counts") {
  const math::normalization n(3.0, 2.0);
  CHECK(n(5.0) == 1.0f);
  CHECK(std::isnan(n(qnan)));
  CHECK(n(inf) == inf);
  CHECK_THROWS_WITH_AS(math::normalization(0.0, 0.0), doctest::Contains("std must be finite and > 0 (got 0)"), recpipe::error);
  CHECK_THROWS_AS(math::normalization(0.0, -1.0), recpipe::error);
  CHECK_THROWS_AS(math::normalization(0.0, qnan), recpipe::error);
  CHECK_THROWS_WITH_AS(math::normalization(qnan, 1.0), doctest::Contains("mean must be finite"), recpipe::error);
  const auto fitted = math::normalization::fit(std::vector<float>{1.0f, 3.0f, qnan, inf});
  CHECK(fitted.mean() == 2.0);
  CHECK(fitted.stddev() == 1.0);
  CHECK(math::normalization::fit(std::vector<float>{4.0f, 4.0f}).stddev() == 1.0);  // constant: std 1, not 0
  CHECK_THROWS_WITH_AS(math::normalization::fit(std::vector<float>{qnan}), doctest::Contains("no finite value"), recpipe::error);

  const math::bucket_boundaries b({0.0, 10.0, 20.0});
  CHECK(b.index(-1.0) == 0);
  CHECK(b.index(0.0) == 1);
  CHECK(b.index(9.9) == 1);
  CHECK(b.index(10.0) == 2);
  CHECK(b.index(25.0) == 3);
  CHECK(b.index(-inf) == 0);
  CHECK(b.index(inf) == 3);
  CHECK(b.index(qnan) == 4);
  CHECK(b.missing_bucket() == 4);
  CHECK(b.buckets() == 5);
  CHECK_THROWS_WITH_AS(math::bucket_boundaries({0.0, 5.0, 3.0}),
                       doctest::Contains("boundaries must increase strictly, but boundaries[2] = 3 follows boundaries[1] = 5"),
                       recpipe::error);
  CHECK_THROWS_AS(math::bucket_boundaries({1.0, 1.0}), recpipe::error);
  CHECK_THROWS_WITH_AS(math::bucket_boundaries({}), doctest::Contains("no boundaries"), recpipe::error);
  CHECK_THROWS_WITH_AS(math::bucket_boundaries({0.0, qnan}), doctest::Contains("boundaries[1] = nan is not finite"),
                       recpipe::error);

  CHECK(math::log1p_clamped(-3.0) == 0.0f);
  CHECK(math::log1p_clamped(-inf) == 0.0f);
  CHECK(math::log1p_clamped(std::exp(1.0) - 1.0) == doctest::Approx(1.0));
  CHECK(math::log1p_clamped(inf) == inf);
  CHECK(std::isnan(math::log1p_clamped(qnan)));

  math::count_table t;
  CHECK(t.prior() == 0.5);
  t.observe(1, 1.0f);
  t.observe(1, 0.0f);
  t.observe(2, 1.0f);
  CHECK(t.counts(1).events == 2);
  CHECK(t.counts(3).events == 0);
  CHECK(t.prior() == doctest::Approx(2.0 / 3.0));
  CHECK(math::log_count(0) == 0.0f);
  CHECK(math::target_encoding(t.counts(3), t.prior(), 10.0) == static_cast<float>(2.0 / 3.0));  // unseen: the prior
  CHECK(math::target_encoding({}, 0.25, 0.0) == 0.25f);                                          // m = 0, unseen
  CHECK_THROWS_WITH_AS(t.observe(1, qnan), doctest::Contains("label must be finite and in [0, 1]"), recpipe::error);
  CHECK_THROWS_AS(t.observe(1, 2.0f), recpipe::error);
  CHECK(t.total().events == 3);  // unchanged by the refused events
  t.set(4, {10, 5.0});
  CHECK(t.total().events == 13);
  t.set(4, {2, 1.0});
  CHECK(t.total().events == 5);
  CHECK(t.total().likes == 3.0);
  CHECK_THROWS_WITH_AS(t.set(5, {1, 2.0}), doctest::Contains("likes must be finite and in [0, events = 1]"), recpipe::error);
  CHECK_THROWS_WITH_AS(math::check_smoothing(-1.0, "x"), doctest::Contains("x: smoothing must be finite and >= 0"),
                       recpipe::error);
}

TEST_CASE("transform: every op writes its column with the documented values") {
  math::count_table items;
  items.observe(10, 1.0f);
  items.observe(10, 1.0f);
  items.observe(11, 0.0f);
  const auto t = transform(ops::categorify<col::candidates, item_index>(math::vocabulary({11, 10})),
                           ops::hash_bucket<col::user_id, user_bucket>(1000), ops::log1p<price, log_price>(),
                           ops::normalize<log_price, price_z>(1.0, 0.5),  // reads what log1p wrote
                           ops::bucketize<price, price_bucket>({0.0, 10.0}),
                           ops::cross<col::user_id, col::candidates, user_x_item>(1'000'003),
                           ops::count_encode<col::candidates, item_count>(items),
                           ops::target_encode<col::candidates, item_rate>(items, 2.0));
  // The stage reads only what no earlier op writes.
  static_assert(std::is_same_v<decltype(t)::reads, columns<col::candidates, col::user_id, price>>);
  static_assert(std::is_same_v<decltype(t)::writes,
                               columns<item_index, user_bucket, log_price, price_z, price_bucket, user_x_item, item_count, item_rate>>);

  const auto out = make_requests() >> t;
  CHECK_NOTHROW(out.validate());
  CHECK(out.get<item_index>() == std::vector<id_type>{2, 1, 0, 2, 0});  // 12 and 99 unknown -> 0
  CHECK(out.get<user_bucket>() ==
        std::vector<id_type>{math::hash_bucket(7, 1000), math::hash_bucket(8, 1000), math::hash_bucket(9, 1000)});
  const auto& lp = out.get<log_price>();
  CHECK(lp[0] == static_cast<float>(std::log1p(1.0)));
  CHECK(lp[1] == 0.0f);  // -2 clamps to 0
  CHECK(std::isnan(lp[2]));
  CHECK(lp[3] == inf);
  const auto& z = out.get<price_z>();
  CHECK(z[1] == -2.0f);
  CHECK(std::isnan(z[2]));
  CHECK(out.get<price_bucket>() == std::vector<id_type>{1, 0, 3, 2, 2});  // NaN -> bucket 3 (2 boundaries + 1)
  CHECK(out.get<user_x_item>() == std::vector<id_type>{math::hash_cross(7, 10, 1'000'003), math::hash_cross(7, 11, 1'000'003),
                                                       math::hash_cross(7, 12, 1'000'003), math::hash_cross(9, 10, 1'000'003),
                                                       math::hash_cross(9, 99, 1'000'003)});
  const auto& counts = out.get<item_count>();
  CHECK(counts[0] == static_cast<float>(std::log1p(2.0)));
  CHECK(counts[2] == 0.0f);  // unseen item
  const auto& rates = out.get<item_rate>();
  const double prior = 2.0 / 3.0;
  CHECK(rates[0] == static_cast<float>((2.0 + 2.0 * prior) / (2.0 + 2.0)));
  CHECK(rates[1] == static_cast<float>((0.0 + 2.0 * prior) / (1.0 + 2.0)));
  CHECK(rates[2] == static_cast<float>(prior));  // unseen item: the prior
}

TEST_CASE("transform: lists, vectors, per-request crosses and replacing a column") {
  batch<col::user_id, country, col::history, col::user_embedding, age> b(2);
  b.get<col::user_id>() = {1, 2};
  b.get<country>() = {33, 44};
  b.get<col::history>().assign({0, 2, 3}, {5, 6, 5});
  b.get<col::user_embedding>() = matrix<float>({1, 3, 5, 7}, 2, 2);
  b.get<age>() = {17.0f, qnan};
  const auto out = b >> transform(ops::categorify<col::history, history_index>(math::vocabulary({6})),
                                  ops::normalize<col::user_embedding, embedding_z>(4.0, 2.0),
                                  ops::cross<country, col::user_id, country_x_user>(97),
                                  ops::bucketize<age, age_bucket>({18.0, 65.0}),
                                  ops::log1p<age, age>());  // in place: replaces age
  CHECK(out.get<history_index>().offsets() == std::vector<std::size_t>{0, 2, 3});
  CHECK(out.get<history_index>().values() == std::vector<id_type>{0, 1, 0});
  CHECK(out.get<embedding_z>().values() == std::vector<float>{-1.5f, -0.5f, 0.5f, 1.5f});
  CHECK(out.get<embedding_z>().cols() == 2);
  CHECK(out.get<country_x_user>() == std::vector<id_type>{math::hash_cross(33, 1, 97), math::hash_cross(44, 2, 97)});
  CHECK(out.get<age_bucket>() == std::vector<std::int32_t>{0, 3});
  CHECK(out.get<age>()[0] == static_cast<float>(std::log1p(17.0)));
  CHECK(std::isnan(out.get<age>()[1]));
}

TEST_CASE("transform: empty batches and requests without candidates") {
  math::count_table store;
  const auto t = transform(ops::cross<col::user_id, col::candidates, user_x_item>(10), ops::log1p<price, log_price>(),
                           ops::target_encode<col::user_id, user_rate>(store, 1.0));
  const auto none = request_batch(0) >> t;
  CHECK(none.size() == 0);
  CHECK(none.get<user_x_item>().empty());
  CHECK(none.get<user_rate>().empty());
  request_batch empty_lists(2);
  empty_lists.get<col::user_id>() = {1, 2};
  const auto out = empty_lists >> t;
  CHECK(out.get<user_x_item>().empty());
  CHECK(out.get<user_rate>() == std::vector<float>{0.5f, 0.5f});  // empty store: prior 0.5
  CHECK_NOTHROW(out.validate());
}

TEST_CASE("transform: bad parameters and inconsistent batches are errors naming the problem") {
  CHECK_THROWS_WITH_AS((ops::normalize<price, price_z>(0.0, 0.0)), doctest::Contains("std must be finite and > 0"), recpipe::error);
  CHECK_THROWS_WITH_AS((ops::bucketize<price, price_bucket>({3.0, 1.0})), doctest::Contains("boundaries must increase strictly"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS((ops::hash_bucket<col::user_id, user_bucket>(0)), doctest::Contains("ops::hash_bucket: buckets"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS((ops::cross<col::user_id, col::candidates, user_x_item>(0)), doctest::Contains("ops::cross: buckets"),
                       recpipe::error);
  math::count_table store;
  CHECK_THROWS_WITH_AS((ops::target_encode<col::user_id, user_rate>(store, -1.0)),
                       doctest::Contains("ops::target_encode: smoothing must be finite and >= 0"), recpipe::error);
  CHECK_THROWS_AS((ops::count_encode<col::user_id, user_count>(std::shared_ptr<math::count_table>())), recpipe::error);

  // A per-request column shorter than the requests (a batch no pipeline validated).
  request_batch b = make_requests();
  b.get<col::user_id>().pop_back();
  CHECK_THROWS_WITH_AS(b >> transform(ops::cross<col::user_id, col::candidates, user_x_item>(10)),
                       doctest::Contains("column 'user_id' has 2 values for 3 requests"), recpipe::error);
  // A per-candidate column shorter than the candidates: a unary op mirrors it (no read past its
  // end); the pipeline's batch check names it.
  // Through a pipeline, the batch check runs first.
  b = make_requests();
  b.get<price>().pop_back();
  CHECK((b >> transform(ops::log1p<price, log_price>())).get<log_price>().size() == 4);
  auto p = transform(ops::log1p<price, log_price>()) >> transform(ops::normalize<log_price, price_z>(0.0, 1.0));
  CHECK_THROWS_WITH_AS(p.run(b), doctest::Contains("price"), recpipe::error);
}

TEST_CASE("transform: a store held shared or through a slot") {
  auto shared = std::make_shared<math::count_table>();
  shared->observe(7, 1.0f);
  version_registry versions;
  auto counts = versions.add("user counts", std::make_shared<math::count_table>());
  const auto out = make_requests() >> transform(ops::count_encode<col::user_id, user_count>(shared),
                                                ops::target_encode<col::user_id, user_rate>(counts, 0.0));
  CHECK(out.get<user_count>() == std::vector<float>{static_cast<float>(std::log1p(1.0)), 0.0f, 0.0f});
  CHECK(out.get<user_rate>() == std::vector<float>{0.5f, 0.5f, 0.5f});
  auto next = std::make_shared<math::count_table>();
  next->observe(8, 0.0f);
  versions.publish(counts, next);
  const auto after = make_requests() >> transform(ops::target_encode<col::user_id, user_rate>(counts, 0.0));
  // The next run reads the published table: user 8's rate is 0/1, the others get its prior 0.
  CHECK(after.get<user_rate>() == std::vector<float>{0.0f, 0.0f, 0.0f});
}

TEST_CASE("training/serving parity: the trainer's online_features and the transform stage give identical values") {
  // The trainer replays a stream: predict (online_features::dense), then observe. The serving
  // pipeline reads the same state's count tables through the transform stage. Every value must be
  // bit-identical, at every point of the stream.
  train::online_features f({.smoothing = 5.0});
  const auto serve = transform(ops::count_encode<col::user_id, user_count>(f.user_counts()),
                               ops::target_encode<col::user_id, user_rate>(f.user_counts(), 5.0),
                               ops::count_encode<col::candidates, item_count>(f.item_counts()),
                               ops::target_encode<col::candidates, item_rate>(f.item_counts(), 5.0));
  std::mt19937 rng(11);
  for (int event = 0; event < 300; ++event) {
    const id_type user = static_cast<id_type>(rng() % 7), item = static_cast<id_type>(rng() % 13);
    float trained[train::online_features::dense_dim];
    f.dense(user, item, event, trained);
    batch<col::user_id, col::candidates> request(1);
    request.get<col::user_id>() = {user};
    request.get<col::candidates>().assign({0, 1}, {item});
    const auto served = std::move(request) >> serve;
    REQUIRE(same_bits(served.get<user_count>()[0], trained[0]));
    REQUIRE(same_bits(served.get<item_count>()[0], trained[1]));
    REQUIRE(same_bits(served.get<user_rate>()[0], trained[2]));
    REQUIRE(same_bits(served.get<item_rate>()[0], trained[3]));
    f.observe(user, item, static_cast<float>(rng() % 2), event);
  }
}

TEST_CASE("training/serving parity: a trainer featurizing with the math rules matches the stage") {
  // What a trainer does offline: fit the vocabulary, statistics and boundaries on its data, then
  // featurize each example with the per-value rules. The serving stage, built from the same fitted
  // objects, must give the same values for the same inputs, unknown and non-finite ones included.
  std::mt19937 rng(3);
  std::vector<std::int64_t> train_items;
  std::vector<float> train_prices;
  for (int i = 0; i < 500; ++i) {
    train_items.push_back(static_cast<std::int64_t>(rng() % 40));
    train_prices.push_back(static_cast<float>(rng() % 1000) / 10.0f - 5.0f);
  }
  const auto vocab = std::make_shared<const math::vocabulary>(math::vocabulary::fit(train_items, 3));
  const auto stats = math::normalization::fit(train_prices);
  const std::vector<double> edges = {0.0, 10.0, 50.0};
  const math::bucket_boundaries bounds(edges);

  request_batch b(20);
  std::vector<std::size_t> offsets = {0};
  std::vector<id_type> ids;
  std::vector<float> prices;
  for (std::size_t r = 0; r < 20; ++r) {
    b.get<col::user_id>()[r] = static_cast<id_type>(rng() % 100) - 50;
    const std::size_t n = rng() % 4;
    for (std::size_t c = 0; c < n; ++c) {
      ids.push_back(static_cast<id_type>(rng() % 60));  // 40 .. 59 never trained on
      const unsigned kind = rng() % 10;
      prices.push_back(kind == 0 ? qnan : kind == 1 ? -inf : static_cast<float>(rng() % 2000) / 10.0f - 50.0f);
    }
    offsets.push_back(ids.size());
  }
  b.get<col::candidates>().assign(offsets, ids);
  b.get<price>() = prices;
  const auto out = b >> transform(ops::categorify<col::candidates, item_index>(vocab), ops::normalize<price, price_z>(stats),
                                  ops::log1p<price, log_price>(), ops::bucketize<price, price_bucket>(edges),
                                  ops::cross<col::user_id, col::candidates, user_x_item>(4096));
  for (std::size_t r = 0; r < 20; ++r)
    for (std::size_t c = offsets[r]; c < offsets[r + 1]; ++c) {
      // The trainer's side: one call per value.
      CHECK(out.get<item_index>()[c] == vocab->index(ids[c]));
      CHECK(same_bits(out.get<price_z>()[c], stats(prices[c])));
      CHECK(same_bits(out.get<log_price>()[c], math::log1p_clamped(prices[c])));
      CHECK(out.get<price_bucket>()[c] == bounds.index(prices[c]));
      CHECK(out.get<user_x_item>()[c] == math::hash_cross(b.get<col::user_id>()[r], ids[c], 4096));
    }
}

TEST_CASE("transform: describe lists the ops") {
  math::count_table store;
  const auto t = transform(ops::hash_bucket<col::user_id, user_bucket>(100), ops::log1p<price, log_price>(),
                           ops::normalize<log_price, price_z>(1.5, 0.25), ops::bucketize<price, price_bucket>({0.0, 10.0}),
                           ops::categorify<col::candidates, item_index>(math::vocabulary({4, 5})),
                           ops::cross<col::user_id, col::candidates, user_x_item>(64),
                           ops::count_encode<col::candidates, item_count>(store),
                           ops::target_encode<col::user_id, user_rate>(store, 20.0));
  CHECK(describe(t) ==
        "transform  reads: user_id, price, candidates  adds: user_bucket, log_price, price_z, price_bucket, item_index, "
        "user_x_item, item_count, user_rate\n"
        "  hash_bucket(user_id -> user_bucket, 100 buckets)\n"
        "  log1p(price -> log_price, negatives -> 0)\n"
        "  normalize(log_price -> price_z, mean 1.5, std 0.25)\n"
        "  bucketize(price -> price_bucket, 2 boundaries, NaN -> 3)\n"
        "  categorify(candidates -> item_index, 2 values, unknown -> 0)\n"
        "  cross(user_id x candidates -> user_x_item, 64 buckets)\n"
        "  count_encode(candidates -> item_count, log1p(events))\n"
        "  target_encode(user_id -> user_rate, smoothing 20)\n");
}
