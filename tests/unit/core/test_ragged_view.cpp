// SPDX-License-Identifier: Apache-2.0
// Tests for the one check of offsets (check_offsets) and ragged_view.
#include <doctest/doctest.h>

#include <recpipe/core/column.hpp>
#include <recpipe/core/ragged_view.hpp>
#include <recpipe/core/types.hpp>

#include <cstddef>
#include <vector>

using namespace recpipe;

TEST_CASE("check_offsets names the first bad offset, for signed and unsigned offsets") {
  const std::vector<std::size_t> good = {0, 2, 2, 5};
  CHECK_NOTHROW(check_offsets<std::size_t>("t", good, 5));
  CHECK_THROWS_WITH_AS(check_offsets<std::size_t>("t", good, 6), "recpipe: t: offsets[3] = 5 must equal the number of values = 6",
                       error);
  const std::vector<std::size_t> none;
  CHECK_THROWS_WITH_AS(check_offsets<std::size_t>("t", none, 0), "recpipe: t: offsets must have rows + 1 entries (got 0)", error);
  CHECK_NOTHROW(check_offsets<std::size_t>("t", none, 0, last_offset::may_be_implicit));

  const std::vector<id_type> negative = {0, -1, 3};
  CHECK_THROWS_WITH_AS(check_offsets<id_type>("t", negative, 3), "recpipe: t: offsets[1] = -1 is outside [0, 3]", error);
  const std::vector<id_type> decreasing = {0, 2, 1, 3};
  CHECK_THROWS_WITH_AS(check_offsets<id_type>("t", decreasing, 3),
                       "recpipe: t: offsets must not decrease (offsets[2] = 1 < offsets[1] = 2)", error);
  const std::vector<id_type> not_from_zero = {1, 3};
  CHECK_THROWS_WITH_AS(check_offsets<id_type>("t", not_from_zero, 3), "recpipe: t: offsets[0] must be 0 (got 1)", error);
  const std::vector<id_type> last_negative = {0, -4};
  CHECK_THROWS_WITH_AS(check_offsets<id_type>("t", last_negative, 3, last_offset::equals_total, "items.size()"),
                       "recpipe: t: offsets[1] = -4 must equal items.size() = 3", error);
  // PyTorch's embedding_bag layout: the last bag may run to the end.
  const std::vector<id_type> implicit = {0, 2};
  CHECK_NOTHROW(check_offsets<id_type>("t", implicit, 5, last_offset::may_be_implicit));
  const std::vector<id_type> beyond = {0, 7};
  CHECK_THROWS_WITH_AS(check_offsets<id_type>("t", beyond, 5, last_offset::may_be_implicit),
                       "recpipe: t: offsets[1] = 7 is outside [0, 5]", error);
}

TEST_CASE("ragged_view reads rows without copying, and a ragged column hands one out") {
  ragged<id_type> sessions;
  sessions.push_row({{12, 7, 99}});
  sessions.push_row({});
  sessions.push_row({{4, 4}});
  const ragged_view<const id_type> view = sessions.view();
  CHECK(view.rows() == 3);
  CHECK(view.total() == 5);
  CHECK(view.row_size(1) == 0);
  CHECK(view.row(2).data() == sessions.values().data() + 3);
  CHECK_NOTHROW(view.check("sessions"));

  const std::vector<id_type> offsets = {0, 1, 4};
  const std::vector<id_type> items = {1, 2, 3};
  const ragged_view<const id_type, id_type> broken(offsets, items);
  CHECK_THROWS_WITH_AS(broken.check("encode", "items.size()"), "recpipe: encode: offsets[2] = 4 must equal items.size() = 3",
                       error);
  CHECK(ragged_view<const id_type>().rows() == 0);
  CHECK_THROWS_WITH_AS(sessions.assign({0, 3, 2, 3}, {1, 2, 3}, "history"),
                       "recpipe: history: offsets must not decrease (offsets[2] = 2 < offsets[1] = 3)", error);
}
