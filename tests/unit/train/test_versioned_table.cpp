// SPDX-License-Identifier: Apache-2.0
// recpipe tests: train/versioned_table.hpp (copy-on-write table versions) and fixed_table's dirty
// rows: shared and copied blocks, old versions unchanged, serving through lookup and pooling.
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <recpipe/cpu/embedding.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/versioned_table.hpp>

namespace cpu = recpipe::cpu;
namespace train = recpipe::train;
namespace col = recpipe::col;
using recpipe::id_type;
using recpipe::matrix;

namespace {
train::fixed_table make_table(std::size_t rows, std::size_t dim) {
  return train::fixed_table({.rows = rows, .dim = dim, .init = {train::row_init::distribution::uniform, 0.5f, 7}, .name = "t"},
                            std::make_shared<train::row_sgd>(0.5));
}
// One sgd step on `ids` with a gradient of all ones.
void step(train::fixed_table& t, const std::vector<id_type>& ids) {
  t.optimizer().begin_step();
  matrix<float> grads(ids.size(), t.dim());
  for (std::size_t i = 0; i < ids.size(); ++i) std::fill(grads.row(i).begin(), grads.row(i).end(), 1.0f);
  t.apply(ids, grads.view());
}
bool same_rows(const train::table_version& v, const train::fixed_table& t) {
  for (std::size_t r = 0; r < t.rows(); ++r) {
    const auto a = v.row(static_cast<id_type>(r));
    const auto b = t.weights().row(r);
    if (!std::equal(a.begin(), a.end(), b.begin(), b.end())) return false;
  }
  return true;
}
std::string message_of(auto&& f) {
  try {
    f();
  } catch (const recpipe::error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_CASE("fixed_table: take_dirty_rows lists each row apply changed once, then starts empty") {
  auto t = make_table(200, 4);
  auto first = t.take_dirty_rows();
  CHECK(first.all);  // a new table was never published
  CHECK(t.take_dirty_rows().rows.empty());
  CHECK_FALSE(t.take_dirty_rows().all);
  step(t, {5, 130, 64});
  step(t, {130, 7});
  CHECK(t.dirty_row_count() == 4);
  auto dirty = t.take_dirty_rows();
  CHECK_FALSE(dirty.all);
  CHECK(dirty.rows == std::vector<std::size_t>{5, 130, 64, 7});
  CHECK(t.dirty_row_count() == 0);
  step(t, {64, 65});  // neighbours in the bitmap word cleared above come back correctly
  CHECK(t.take_dirty_rows().rows == std::vector<std::size_t>{64, 65});
  // A non-finite gradient leaves the row untouched and clean.
  t.optimizer().begin_step();
  matrix<float> bad(1, 4);
  bad.row(0)[0] = std::numeric_limits<float>::quiet_NaN();
  t.apply(std::vector<id_type>{9}, bad.view());
  CHECK(t.dirty_row_count() == 0);
  t.mark_dirty(3);
  CHECK(t.take_dirty_rows().rows == std::vector<std::size_t>{3});
  CHECK(message_of([&] { t.mark_dirty(200); }) ==
        "recpipe: train::fixed_table \"t\": mark_dirty: row 200 is outside [0, 200)");
  t.mark_all_dirty();
  CHECK(t.dirty_row_count() == 200);
  CHECK(t.take_dirty_rows().all);
  t.reset();
  CHECK(t.take_dirty_rows().all);
}

TEST_CASE("table_publisher: the next version copies only changed blocks, old versions stay as they were") {
  auto t = make_table(100, 3);  // 100 rows in blocks of 16: 7 blocks, the last one partial
  train::table_publisher publisher({.block_rows = 16});
  auto v1 = publisher.publish(t);
  CHECK(v1->version() == 1);
  CHECK(v1->block_count() == 7);
  const float* before_ptr6 = v1->blocks()[6];
  CHECK(publisher.last_stats().full);
  CHECK(same_rows(*v1, t));
  const matrix<float> before = v1->to_matrix();

  step(t, {3, 5, 99});  // blocks 0 and 6
  auto v2 = publisher.publish(t);
  CHECK(v2->version() == 2);
  CHECK(publisher.last_stats().copied_blocks == 2);
  CHECK(publisher.last_stats().shared_blocks == 5);
  CHECK(publisher.last_stats().copied_bytes == (16 + 4) * 3 * sizeof(float));
  CHECK(publisher.last_stats().pointer_bytes == 7 * sizeof(train::table_version::block));
  CHECK(same_rows(*v2, t));
  for (std::size_t b = 0; b < 7; ++b)
    CHECK((v1->blocks()[b] == v2->blocks()[b]) == (b != 0 && b != 6));
  // v1 still reads the rows it was published with.
  const matrix<float> again = v1->to_matrix();
  CHECK(std::equal(before.data(), before.data() + 300, again.data()));
  CHECK(v1->row(3)[0] != v2->row(3)[0]);

  // Nothing changed: a new version sharing every block.
  auto v3 = publisher.publish(t);
  CHECK(publisher.last_stats().copied_blocks == 0);
  CHECK(v3->blocks()[0] == v2->blocks()[0]);
  // v1's replaced blocks are held while v1 lives, and handed back for reuse when it goes.
  CHECK(publisher.retained_blocks() == 2);
  const float* old_block = v1->blocks()[0];
  v1.reset();
  CHECK(publisher.retained_blocks() == 0);
  CHECK(publisher.free_blocks() == 2);
  step(t, {20});
  publisher.publish(t);  // reuses a freed block
  CHECK(publisher.free_blocks() == 1);
  CHECK((publisher.current()->blocks()[1] == old_block || publisher.current()->blocks()[1] == before_ptr6));
  // mark_all_dirty publishes a full copy.
  t.mark_all_dirty();
  publisher.publish(t);
  CHECK(publisher.last_stats().full);
  CHECK(publisher.current()->version() == 5);
}

TEST_CASE("table_publisher: random steps, every version equals the table at its publication") {
  auto t = make_table(1000, 5);
  train::table_publisher publisher({.block_rows = 32});
  std::mt19937 rng(11);
  std::vector<std::shared_ptr<const train::table_version>> versions;
  std::vector<matrix<float>> expected;
  for (int round = 0; round < 12; ++round) {
    std::set<id_type> ids;
    for (int i = 0; i < 20; ++i) ids.insert(static_cast<id_type>(rng() % 1000));
    step(t, std::vector<id_type>(ids.begin(), ids.end()));
    versions.push_back(publisher.publish(t));
    matrix<float> copy(1000, 5);
    std::copy(t.weights().data(), t.weights().data() + 5000, copy.data());
    expected.push_back(std::move(copy));
  }
  for (std::size_t v = 0; v < versions.size(); ++v) {
    const matrix<float> got = versions[v]->to_matrix();
    CHECK(std::equal(got.data(), got.data() + 5000, expected[v].data()));
  }
}

TEST_CASE("table_publisher: any row source, and bad input gets a clear error") {
  matrix<float> rows(10, 2);
  std::iota(rows.data(), rows.data() + 20, 0.0f);
  train::table_publisher publisher({.block_rows = 4});
  auto v1 = publisher.publish(rows.view(), {});
  rows.row(9)[1] = -1.0f;
  const std::vector<std::size_t> changed = {9, 9};
  auto v2 = publisher.publish(rows.view(), changed);
  CHECK(publisher.last_stats().copied_blocks == 1);
  CHECK(v2->row(9)[1] == -1.0f);
  CHECK(v1->row(9)[1] == 19.0f);

  const std::vector<std::size_t> outside = {10};
  CHECK(message_of([&] { publisher.publish(rows.view(), outside); }) ==
        "recpipe: train::table_publisher: changed[0] = 10 is outside [0, 10)");
  matrix<float> wider(10, 3);
  CHECK(message_of([&] { publisher.publish(wider.view(), {}); }) ==
        "recpipe: train::table_publisher: rows is 10 x 3 but the published versions are 10 x 2 (a publisher serves "
        "one table shape)");
  CHECK(publisher.current() == v2);  // failed publications publish nothing
  auto other = make_table(11, 2);
  CHECK(message_of([&] { publisher.publish(other); }) ==
        "recpipe: train::table_publisher: t is 11 x 2 but the published versions are 10 x 2 (a publisher serves one "
        "table shape)");
  CHECK(other.take_dirty_rows().all);  // the failed publish did not take the dirty set
  CHECK(message_of([] { train::table_publisher({.block_rows = 0}); }) ==
        "recpipe: train::table_publisher: block_rows must be at least 1");
  CHECK(message_of([&] { (void)v2->row(10); }) == "recpipe: train::table_version: row 10 is outside [0, 10) (version 2)");
  CHECK(message_of([&] { (void)v2->row(-1); }) == "recpipe: train::table_version: row -1 is outside [0, 10) (version 2)");
}

TEST_CASE("table_version: lookup and pool match cpu::embedding_lookup and cpu::embedding_bag") {
  auto t = make_table(300, 8);
  train::table_publisher publisher({.block_rows = 16});
  publisher.publish(t);
  step(t, {1, 17, 250});
  auto v = publisher.publish(t);
  const std::vector<id_type> ids = {250, 1, 17, 299, 0, 1};
  matrix<float> got(6, 8), want(6, 8);
  v->lookup(ids, got.view());
  cpu::embedding_lookup(t.view(), ids, want.view());
  CHECK(std::equal(got.data(), got.data() + 48, want.data()));

  const std::vector<id_type> offsets = {0, 2, 2};
  const std::vector<float> weights = {0.5f, 2.0f, -1.0f, 1.0f, 3.0f, 0.25f};
  for (auto mode : {cpu::pooling::sum, cpu::pooling::mean}) {
    for (bool weighted : {false, true}) {
      matrix<float> a(3, 8), b(3, 8);
      const std::span<const float> w = weighted ? std::span<const float>(weights) : std::span<const float>();
      v->pool(ids, offsets, w, mode, a.view());
      cpu::embedding_bag(t.view(), ids, offsets, w, mode, b.view());
      for (std::size_t i = 0; i < 24; ++i) CHECK(a.data()[i] == doctest::Approx(b.data()[i]).epsilon(1e-6));
    }
  }
  matrix<float> out(2, 8);
  CHECK(message_of([&] { v->lookup(std::vector<id_type>{0, 300}, out.view()); }) ==
        "recpipe: train::table_version: lookup: ids[1] = 300 is outside [0, 300)");
  CHECK(message_of([&] { v->pool(ids, std::vector<id_type>{1, 2}, {}, cpu::pooling::sum, out.view()); }) ==
        "recpipe: train::table_version: pool: offsets[0] must be 0 (got 1)");
  CHECK(message_of([&] { v->pool(ids, std::vector<id_type>{0, 7}, {}, cpu::pooling::sum, out.view()); }) ==
        "recpipe: train::table_version: pool: offsets[1] = 7 is outside [0, 6]");
  matrix<float> narrow(2, 3);
  CHECK(message_of([&] { v->pool(ids, offsets, {}, cpu::pooling::sum, narrow.view()); }) ==
        "recpipe: train::table_version: pool: out has 3 columns but the table's dim is 8");
}

TEST_CASE("table_version_store: a version serves the lookup stage, keyed by the chosen column") {
  auto t = make_table(50, 4);
  train::table_publisher publisher;
  auto v1 = publisher.publish(t);
  train::table_version_store<col::user_id, col::user_embedding> users(v1);
  CHECK(users.dim() == 4);
  CHECK(users.size() == 50);
  const auto out = recpipe::lookup(users)(recpipe::make_batch<col::user_id>(std::vector<id_type>{3, 49, 77, -2}));
  const auto& emb = out.get<col::user_embedding>();
  CHECK(std::equal(emb.row(0).begin(), emb.row(0).end(), t.weights().row(3).begin()));
  CHECK(std::equal(emb.row(1).begin(), emb.row(1).end(), t.weights().row(49).begin()));
  for (float x : emb.row(2)) CHECK(x == 0.0f);  // unknown id: zeros (use_default)
  for (float x : emb.row(3)) CHECK(x == 0.0f);

  // A new version in a new store; the old store keeps serving its own version.
  step(t, {3});
  train::table_version_store<col::user_id, col::user_embedding> users2(publisher.publish(t), recpipe::on_missing::fail);
  CHECK(users2.find(3)[0] != users.find(3)[0]);
  CHECK(users.find(3)[0] == v1->row(3)[0]);
  CHECK(message_of([&] { (void)recpipe::lookup(users2)(recpipe::make_batch<col::user_id>(std::vector<id_type>{50})); }) ==
        "recpipe: lookup: id 50 is not in the table version 2 for column 'user_embedding' (rows [0, 50))");
  CHECK(message_of([] { train::table_version_store<col::user_id, col::user_embedding> s(nullptr); }) ==
        "recpipe: train::table_version_store<user_embedding>: the table version is null");
}

TEST_CASE("table_publisher: versions outlive the publisher and may be released in any order") {
  // Under ASan this also proves that no block is freed while a version still reads it.
  std::mt19937 rng(5);
  for (int trial = 0; trial < 4; ++trial) {
    auto t = make_table(200, 3);
    std::vector<std::pair<std::shared_ptr<const train::table_version>, matrix<float>>> alive;
    const auto check_all = [&] {
      for (const auto& [v, want] : alive) {
        const matrix<float> got = v->to_matrix();
        CHECK(std::equal(got.data(), got.data() + 600, want.data()));
      }
    };
    {
      train::table_publisher publisher({.block_rows = 8});
      for (int round = 0; round < 10; ++round) {
        step(t, {static_cast<id_type>(rng() % 200), static_cast<id_type>(rng() % 200)});
        if (round == 5) t.mark_all_dirty();
        auto v = publisher.publish(t);
        matrix<float> want(200, 3);
        std::copy(t.weights().data(), t.weights().data() + 600, want.data());
        alive.emplace_back(std::move(v), std::move(want));
        if (rng() % 2) alive.erase(alive.begin() + static_cast<std::ptrdiff_t>(rng() % alive.size()));
        check_all();
      }
    }  // the publisher goes first
    while (!alive.empty()) {
      alive.erase(alive.begin() + static_cast<std::ptrdiff_t>(rng() % alive.size()));
      check_all();
    }
  }
}
