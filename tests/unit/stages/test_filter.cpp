// SPDX-License-Identifier: Apache-2.0
// Tests for filter_seen and filter: order kept, per-candidate columns compacted alike.
#include <doctest/doctest.h>

#include <recpipe/stages/filter.hpp>

#include <vector>

using namespace recpipe;

namespace {
using scored = batch<col::user_id, col::history, col::candidates, col::score>;
scored make_scored() {
  scored b(3);
  b.get<col::user_id>() = {0, 1, 2};
  b.get<col::history>().assign({0, 2, 2, 5}, {11, 99, 20, 21, 22});
  b.get<col::candidates>().assign({0, 3, 5, 7}, {10, 11, 12, 20, 21, 20, 22});
  b.get<col::score>() = {0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f};
  b.validate();
  return b;
}
}  // namespace

TEST_CASE("filter_seen drops history items and keeps the rest in order") {
  const auto out = make_scored() >> filter_seen();
  CHECK(out.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 2, 4, 4});
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{10, 12, 20, 21});
  CHECK(out.get<col::score>() == std::vector<float>{0.f, 2.f, 3.f, 4.f});
  CHECK_NOTHROW(out.validate());
}

TEST_CASE("filter_seen over session items") {
  batch<col::session_items, col::candidates> b(1);
  b.get<col::session_items>().assign({0, 2}, {5, 5});
  b.get<col::candidates>().assign({0, 3}, {4, 5, 6});
  const auto out = b >> filter_seen<col::session_items>();
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{4, 6});
}

TEST_CASE("filter accepts item, (request, item) and (batch, request, item) predicates") {
  const auto even = make_scored() >> filter([](id_type item) { return item % 2 == 0; });
  CHECK(even.get<col::candidates>().values() == std::vector<id_type>{10, 12, 20, 20, 22});
  CHECK(even.get<col::score>() == std::vector<float>{0.f, 2.f, 3.f, 5.f, 6.f});

  const auto first_request_only = make_scored() >> filter([](std::size_t request, id_type) { return request == 0; });
  CHECK(first_request_only.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 3, 3, 3});

  const auto above_user = make_scored() >> filter<col::user_id>([](const auto& b, std::size_t request, id_type item) {
                            return item > 10 + 10 * b.template get<col::user_id>()[request];
                          });
  CHECK(above_user.get<col::candidates>().values() == std::vector<id_type>{11, 12, 21});
}

TEST_CASE("filtering everything leaves empty, valid rows") {
  const auto none = make_scored() >> filter([](id_type) { return false; });
  CHECK(none.get<col::candidates>().total() == 0);
  CHECK(none.get<col::score>().empty());
  CHECK_NOTHROW(none.validate());
}
