// SPDX-License-Identifier: Apache-2.0
// A session-based pipeline: encode(session_encoder(transformer)) >> retrieve >> filter_seen >> top_k.
#include <doctest/doctest.h>

#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/score.hpp>
#include <recpipe/stages/session_encoder.hpp>

#include "common/tiny_models.hpp"

#include <algorithm>
#include <vector>

using namespace recpipe;

TEST_CASE("a session pipeline encodes sessions with the transformer and retrieves unseen items") {
  const auto model = models::session_transformer::load(testing::as_file(testing::tiny_session_weights()),
                                                       testing::tiny_session_config());
  // The item index holds the model's own item embeddings (the tied-weights next-item setup).
  const auto weights = testing::tiny_session_weights();
  cpu::exact_index items(8);
  const auto file = testing::as_file(weights);
  const auto table = file->at("item_embedding.weight").to_float();
  for (id_type i = 0; i < 20; ++i)
    items.add(i, std::span<const float>(table.data() + i * 8, 8));

  const auto next_items = encode(session_encoder(model)) >> retrieve(items, 6) >> filter_seen<col::session_items>() >>
                          top_k<col::retrieval_score>(3);
  batch<col::session_items> sessions(3);
  sessions.get<col::session_items>().assign({0, 3, 6, 6}, {4, 7, 4, 2, 999, -5});
  const auto out = next_items.run(sessions);

  // Reference: the model and the index called directly, with the unknown ids dropped by hand.
  matrix<float> query(3, 8);
  model.encode(std::vector<id_type>{0, 3, 4, 4}, std::vector<id_type>{4, 7, 4, 2}, query.view());
  for (std::size_t r = 0; r < 3; ++r) {
    std::vector<id_type> ids(6);
    std::vector<float> scores(6);
    const std::size_t found = items.search(query.row(r), 6, ids, scores);
    const auto seen = sessions.get<col::session_items>().row(r);
    std::vector<id_type> expected;
    for (std::size_t i = 0; i < found && expected.size() < 3; ++i)
      if (std::find(seen.begin(), seen.end(), ids[i]) == seen.end()) expected.push_back(ids[i]);
    const auto got = out.get<col::candidates>().row(r);
    CHECK(std::vector<id_type>(got.begin(), got.end()) == expected);
  }
  // The empty session encodes to zeros: every item scores 0 and the lowest ids win the tie.
  const auto empty = out.get<col::candidates>().row(2);
  CHECK(std::vector<id_type>(empty.begin(), empty.end()) == std::vector<id_type>{0, 1, 2});
}
