// SPDX-License-Identifier: Apache-2.0
// Tests for unroll: each candidate gets its request's features, kept aligned by later stages; bad input.
#include <doctest/doctest.h>

#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/unroll.hpp>

#include <cmath>
#include <limits>
#include <vector>

using namespace recpipe;

namespace {
RECPIPE_COLUMN(age, per_request, float);
RECPIPE_COLUMN(context, per_candidate_vector, float);

using requests = batch<col::user_id, col::history, col::user_features, age, col::candidates, col::score>;
requests make_requests() {
  requests b(3);
  b.get<col::user_id>() = {7, 8, 9};
  b.get<col::history>().assign({0, 1, 1, 1}, {11});
  b.get<col::user_features>() = matrix<float>({1, 2, 3, 4, 5, 6}, 3, 2);
  b.get<age>() = {30.f, 40.f, 50.f};
  b.get<col::candidates>().assign({0, 3, 3, 5}, {10, 11, 12, 20, 21});  // request 1 has none
  b.get<col::score>() = {0.f, 1.f, 2.f, 4.f, 3.f};
  b.validate();
  return b;
}
}  // namespace

TEST_CASE("unroll copies each request's features to each of its candidates") {
  const auto out = make_requests() >> unroll(2);
  const auto& u = out.get<col::candidate_user_features>();
  REQUIRE(u.rows() == 5);
  REQUIRE(u.cols() == 2);
  CHECK(u.values() == std::vector<float>{1, 2, 1, 2, 1, 2, 5, 6, 5, 6});
  CHECK_NOTHROW(out.validate());
  CHECK(decltype(unroll())::name == "unroll(candidate_user_features)");
}

TEST_CASE("unroll concatenates several sources and per-request scalars, into a column of one's own") {
  const auto out = make_requests() >> unroll<col::user_features, age>(3);
  CHECK(out.get<col::candidate_user_features>().values() ==
        std::vector<float>{1, 2, 30, 1, 2, 30, 1, 2, 30, 5, 6, 50, 5, 6, 50});
  const auto mine = make_requests() >> unroll_into<context, age>();
  CHECK(mine.get<context>().values() == std::vector<float>{30, 30, 30, 50, 50});
}

TEST_CASE("unrolled rows stay with their candidates through filters and ordering") {
  const auto pipeline = unroll() >> filter_seen() >> top_k(1);
  const auto out = pipeline.run(make_requests());
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{12, 20});
  CHECK(out.get<col::candidate_user_features>().values() == std::vector<float>{1, 2, 5, 6});
}

TEST_CASE("unroll with no candidates gives an empty column of the features' width") {
  auto none = make_requests();
  none.get<col::candidates>().assign({0, 0, 0, 0}, {});
  none.get<col::score>().clear();
  const auto out = std::move(none) >> unroll(2);
  CHECK(out.get<col::candidate_user_features>().rows() == 0);
  CHECK(out.get<col::candidate_user_features>().cols() == 2);

  const auto empty = batch<col::user_features, col::candidates>(0) >> unroll();
  CHECK(empty.get<col::candidate_user_features>().rows() == 0);
  // Features never looked up (width 0) are fine while there is nothing to unroll.
  const auto nothing = batch<col::user_features, col::candidates>(2) >> unroll();
  CHECK(nothing.get<col::candidate_user_features>().rows() == 0);
}

TEST_CASE("unroll rejects widths that do not match, features never looked up and misaligned rows") {
  CHECK_THROWS_WITH_AS(make_requests() >> unroll(128),
                       "recpipe: unroll: 'user_features' (2) = 2 features but 128 are expected", recpipe::error);
  CHECK_THROWS_WITH_AS((make_requests() >> unroll<col::user_features, age>(4)),
                       "recpipe: unroll: 'user_features' (2) + 'age' (1) = 3 features but 4 are expected", recpipe::error);

  batch<col::user_features, col::candidates> unfilled(1);  // user_features is 1 x 0
  unfilled.get<col::candidates>().assign({0, 2}, {1, 2});
  CHECK_THROWS_WITH_AS(std::move(unfilled) >> unroll(),
                       "recpipe: unroll: the request features have width 0 (were they looked up?) but there are 2 candidates",
                       recpipe::error);

  auto short_rows = make_requests();
  short_rows.get<col::user_features>() = matrix<float>({1, 2}, 1, 2);
  CHECK_THROWS_WITH_AS(std::move(short_rows) >> unroll(),
                       "recpipe: unroll: 'user_features' has 1 rows but the batch has 3 requests", recpipe::error);
  // Through a pipeline the batch is validated first, so the same mistake is caught there.
  auto via_pipeline = make_requests();
  via_pipeline.get<col::user_features>() = matrix<float>({1, 2}, 1, 2);
  CHECK_THROWS_AS((unroll() >> top_k(1)).run(std::move(via_pipeline)), recpipe::error);
}

TEST_CASE("unroll copies NaN and infinity as they are") {
  auto b = make_requests();
  b.get<col::user_features>()(0, 0) = std::numeric_limits<float>::quiet_NaN();
  b.get<col::user_features>()(2, 1) = std::numeric_limits<float>::infinity();
  const auto out = std::move(b) >> unroll();
  const auto& u = out.get<col::candidate_user_features>();
  CHECK(std::isnan(u(2, 0)));
  CHECK(std::isinf(u(4, 1)));
}
