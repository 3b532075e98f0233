// SPDX-License-Identifier: Apache-2.0
// Tests for version_registry and slots: publishing, pinning one generation per run, freeing old
// generations, refusing incompatible versions, and stages that own their components.
#include <doctest/doctest.h>

#include <recpipe/core/versions.hpp>
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/score.hpp>

#include <memory>
#include <span>
#include <string>
#include <vector>

using namespace recpipe;

namespace {

RECPIPE_COLUMN(seen_version, per_request, float);

//! Scores every candidate with its version number, so the output says which version a run used.
struct version_scorer {
  using reads = columns<col::candidates>;
  float version = 0;
  template <class Batch>
  void score(const Batch&, std::span<float> out) const {
    for (float& s : out) s = version;
  }
};

//! Encodes every request as [version], a 1-wide query vector.
struct version_encoder {
  using reads = columns<col::user_embedding>;
  float version = 0;
  std::size_t output_dim() const { return 1; }
  template <class Batch>
  void encode(const Batch& batch, matrix_view<float> out) const {
    for (std::size_t r = 0; r < batch.size(); ++r) out.row(r)[0] = version;
  }
};

using user_vectors = feature_store<col::user_id, col::user_embedding>;

std::shared_ptr<const user_vectors> vectors_of_version(float version, std::size_t users = 4, std::size_t dim = 2) {
  auto store = std::make_shared<user_vectors>(dim);
  const std::vector<float> row(dim, version);
  for (std::size_t u = 0; u < users; ++u) store->insert(static_cast<id_type>(u), std::span<const float>(row));
  return store;
}

cpu::exact_index ones_index(std::size_t items) {
  cpu::exact_index index(1);
  const std::vector<float> one{1.0f};
  for (std::size_t i = 0; i < items; ++i) index.add(static_cast<id_type>(i), std::span<const float>(one));
  return index;
}

//! Publishes the next version of both slots while the run is between two stages, then records the
//! version the run's encoder slot reads: the run must keep reading the version it pinned.
struct publish_midway : stage<publish_midway> {
  using reads = columns<col::query_vector>;
  using writes = columns<seen_version>;
  static constexpr std::string_view name = "publish_midway";
  version_registry* registry;
  slot<version_encoder> encoder;
  slot<version_scorer> scorer;
};

}  // namespace

template <>
struct recpipe::stage_impl<publish_midway, cpu_backend> {
  template <class Batch>
  static auto run(const publish_midway& s, Batch&& batch, cpu_backend&) {
    const float next = s.encoder.current()->version + 1;
    auto tx = s.registry->begin();
    tx.set(s.encoder, std::make_shared<const version_encoder>(version_encoder{next}));
    tx.set(s.scorer, std::make_shared<const version_scorer>(version_scorer{next}));
    tx.commit();
    std::vector<float> seen(batch.size(), s.encoder.get().version);
    return std::forward<Batch>(batch).template with<seen_version>(std::move(seen));
  }
};

TEST_CASE("a published version is seen by the next run, and a run never mixes versions") {
  version_registry versions;
  auto users = versions.add("users", vectors_of_version(1));
  auto encoder = versions.add("encoder", std::make_shared<const version_encoder>(version_encoder{1}));
  auto scorer = versions.add("scorer", std::make_shared<const version_scorer>(version_scorer{1}));
  CHECK(versions.version() == 0);
  CHECK(versions.slot_count() == 3);
  const cpu::exact_index index = ones_index(20);

  auto recommend = lookup(users) >> encode(encoder) >> retrieve(index, 5) >>
                   publish_midway{{}, &versions, encoder, scorer} >> score(scorer) >> top_k(3);
  auto out = recommend.run(make_batch<col::user_id>(std::vector<id_type>{0, 1, 2}));
  // The run pinned version 0 (values 1) and read it in every stage, although version 1 (values 2)
  // was committed between its encode and its score.
  CHECK(versions.version() == 1);
  for (std::size_t r = 0; r < out.size(); ++r) {
    CHECK(out.get<seen_version>()[r] == 1.0f);
    CHECK(out.get<col::query_vector>().row(r)[0] == 1.0f);
    CHECK(out.get<col::user_embedding>().row(r)[0] == 1.0f);
  }
  for (float s : out.get<col::score>()) CHECK(s == 1.0f);

  // The next run sees the published scorer and encoder (values 2) and publishes 3 midway.
  auto again = recommend.run(make_batch<col::user_id>(std::vector<id_type>{3}));
  CHECK(again.get<seen_version>()[0] == 2.0f);
  CHECK(again.get<col::query_vector>().row(0)[0] == 2.0f);
  CHECK(again.get<col::user_embedding>().row(0)[0] == 1.0f);  // users were never republished
  for (float s : again.get<col::score>()) CHECK(s == 2.0f);
  CHECK(versions.version() == 2);
  CHECK(versions.publications() == 2);
}

TEST_CASE("an old generation is freed when the last run holding it ends") {
  version_registry versions;
  auto scorer = versions.add("scorer", std::make_shared<const version_scorer>(version_scorer{1}));
  CHECK(versions.live_generations() == 1);
  std::weak_ptr<const version_scorer> first = scorer.current();
  {
    detail::run_scope run;  // what a pipeline run does when it starts
    scorer.pin(run.pins());
    versions.publish(scorer, std::make_shared<const version_scorer>(version_scorer{2}));
    CHECK(versions.live_generations() == 2);  // the run still holds generation 0
    CHECK(scorer.get().version == 1.0f);
    CHECK(scorer.pinned_version() == 0);
    CHECK(scorer.current()->version == 2.0f);
    CHECK_FALSE(first.expired());
  }
  CHECK(versions.live_generations() == 1);
  CHECK(first.expired());
}

TEST_CASE("slot reads outside a run, incompatible versions and foreign slots are errors") {
  version_registry versions, other;
  auto users = versions.add("users", vectors_of_version(1, 4, 2));
  auto foreign = other.add("users", vectors_of_version(1, 4, 2));
  CHECK_THROWS_WITH_AS(users.get(), doctest::Contains("outside a pipeline run"), error);
  CHECK_THROWS_WITH_AS(versions.add("users", vectors_of_version(1)), doctest::Contains("exists already"), error);
  CHECK_THROWS_WITH_AS(versions.add("null", std::shared_ptr<const user_vectors>{}), doctest::Contains("null"), error);

  // A store of another width may not replace the serving one (dim() is checked by default).
  CHECK_THROWS_WITH_AS(versions.publish(users, vectors_of_version(2, 4, 3)),
                       doctest::Contains("has dim 3 but the serving version has dim 2"), error);
  CHECK(versions.version() == 0);
  CHECK(users.current()->dim() == 2);

  // A refused slot refuses the whole transaction: nothing of it is published.
  auto scorer = versions.add("scorer", std::make_shared<const version_scorer>(version_scorer{1}));
  auto tx = versions.begin();
  tx.set(scorer, std::make_shared<const version_scorer>(version_scorer{2}));
  tx.set(users, vectors_of_version(2, 4, 5));
  CHECK_THROWS_AS(tx.commit(), error);
  CHECK(scorer.current()->version == 1.0f);
  CHECK(versions.version() == 0);

  CHECK_THROWS_WITH_AS(versions.begin().set(foreign, vectors_of_version(2)), doctest::Contains("another registry"),
                       error);

  // A custom check: versions must grow.
  auto strict = versions.add<version_scorer>(
      "strict", std::make_shared<const version_scorer>(version_scorer{5}),
      [](const version_scorer& current, const version_scorer& next) {
        if (next.version <= current.version) detail::fail("strict: versions must grow");
      });
  CHECK_THROWS_WITH_AS(versions.publish(strict, std::make_shared<const version_scorer>(version_scorer{4})),
                       doctest::Contains("versions must grow"), error);
  CHECK(versions.publish(strict, std::make_shared<const version_scorer>(version_scorer{6})) == 1);
}

namespace {
// A factory returning a pipeline over components it created: with shared_ptr the pipeline owns
// them (with references this would read freed memory).
auto make_owned_pipeline() {
  auto index = std::make_shared<cpu::exact_index>(ones_index(10));
  auto users = std::make_shared<user_vectors>(1);
  const std::vector<float> one{1.0f};
  users->insert(7, std::span<const float>(one));
  return lookup(users) >> retrieve<col::user_embedding>(index, 4) >> score(std::make_shared<version_scorer>()) >>
         top_k(2);
}
}  // namespace

TEST_CASE("stages given std::shared_ptr own their components") {
  auto recommend = make_owned_pipeline();
  auto out = recommend.run(make_batch<col::user_id>(std::vector<id_type>{7}));
  CHECK(out.get<col::candidates>().row(0).size() == 2);
  CHECK_THROWS_WITH_AS(lookup(std::shared_ptr<user_vectors>{}), doctest::Contains("null"), error);
}

TEST_CASE("a stage run on its own pins its slot for that run") {
  version_registry versions;
  auto scorer = versions.add("scorer", std::make_shared<const version_scorer>(version_scorer{3}));
  const cpu::exact_index index = ones_index(3);
  auto scored = (make_batch<col::user_id>(std::vector<id_type>{0}) >>
                 lookup(vectors_of_version(1, 2, 1)) >> retrieve<col::user_embedding>(index, 3)) >>
                score(scorer);
  for (float s : scored.get<col::score>()) CHECK(s == 3.0f);
  CHECK(versions.live_generations() == 1);
}
