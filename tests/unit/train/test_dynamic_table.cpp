// SPDX-License-Identifier: Apache-2.0
// recpipe tests: train/dynamic_table.hpp on one thread: exact keys, admission, TTL and budget
// eviction, deterministic init, counters, unknown ids, non-finite gradients, snapshots.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <recpipe/cpu/embedding.hpp>
#include <recpipe/train/dynamic_table.hpp>
#include <recpipe/train/optimizers.hpp>

#include "common/row_optimizers.hpp"

namespace cpu = recpipe::cpu;
namespace train = recpipe::train;
using recpipe::id_type;
using recpipe::matrix;

namespace {
constexpr id_type min_id = std::numeric_limits<id_type>::min();
constexpr id_type max_id = std::numeric_limits<id_type>::max();

std::string message_of(auto&& f) {
  try {
    f();
  } catch (const recpipe::error& e) {
    return e.what();
  }
  return "(no error)";
}

train::dynamic_table_config config(std::size_t dim, std::uint32_t admit_after = 1) {
  train::dynamic_table_config c;
  c.dim = dim;
  c.admit_after = admit_after;
  c.init = {train::row_init::distribution::uniform, 1.0f, 2024};
  c.name = "user";
  return c;
}

// One bag per id, sum pooling: out.row(i) = row of ids[i] (or zeros), through the training path.
matrix<float> pool_each(train::dynamic_table& t, const std::vector<id_type>& ids) {
  std::vector<id_type> offsets(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) offsets[i] = static_cast<id_type>(i);
  matrix<float> out(ids.size(), t.dim());
  t.pool(ids, offsets, {}, cpu::pooling::sum, out.view());
  return out;
}

std::vector<float> init_row(const train::dynamic_table& t, id_type id) {
  std::vector<float> row(t.dim());
  t.settings().init.fill(id, row);
  return row;
}

std::vector<float> read(const train::dynamic_table& t, id_type id) {
  std::vector<float> row(t.dim());
  t.read_row(id, row);
  return row;
}

std::map<id_type, std::vector<float>> all_rows(const train::dynamic_table& t) {
  std::map<id_type, std::vector<float>> rows;
  t.for_each_row([&](id_type id, std::span<const float> row, std::span<const float> state) {
    std::vector<float> v(row.begin(), row.end());
    v.insert(v.end(), state.begin(), state.end());
    CHECK(rows.emplace(id, std::move(v)).second);
  });
  return rows;
}
}  // namespace

TEST_CASE("dynamic_table: every 64-bit id gets its own row (no collisions modulo powers of two, extremes)") {
  auto opt = std::make_shared<recpipe::testing::sgd_rows>(1.0f);
  auto cfg = config(4);
  cfg.init.kind = train::row_init::distribution::zeros;
  train::dynamic_table t(cfg, opt);
  std::vector<id_type> ids = {0, 1, -1, min_id, max_id, min_id + 1, max_id - 1};
  for (int shift = 1; shift < 63; shift += 3) {  // equal modulo 2^k for every k < shift
    ids.push_back(id_type{1} << shift);
    ids.push_back(-(id_type{1} << shift));
    ids.push_back((id_type{1} << shift) + 7);
  }
  for (id_type k = 1; k <= 64; ++k) ids.push_back(k * 4096);  // all in one bucket of a 4096-row hash table
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  pool_each(t, ids);
  CHECK(t.size() == ids.size());
  CHECK(t.stats().admitted == ids.size());
  // Give row i the value -(i + 1) everywhere: SGD with lr 1 from zeros.
  matrix<float> grads(ids.size(), 4);
  for (std::size_t i = 0; i < ids.size(); ++i)
    for (float& g : grads.row(i)) g = float(i + 1);
  t.apply(ids, grads.view());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    CHECK(t.contains(ids[i]));
    for (float v : read(t, ids[i])) CHECK(v == -float(i + 1));
  }
  const auto rows = all_rows(t);
  REQUIRE(rows.size() == ids.size());
  std::size_t i = 0;
  for (const auto& [id, row] : rows) {  // std::map: ascending, as ids
    CHECK(id == ids[i]);
    CHECK(row[0] == -float(i + 1));
    ++i;
  }
  CHECK(!t.contains(5));
  CHECK(!t.contains(max_id - 2));
}

TEST_CASE("dynamic_table: an id is admitted at exactly its n-th training sighting") {
  auto opt = std::make_shared<recpipe::testing::sgd_rows>(1.0f);
  train::dynamic_table t(config(3, 3), opt);
  const id_type id = -42;
  const std::vector<float> zeros(3, 0.0f);
  matrix<float> g(1, 3, 1.0f);
  const std::vector<id_type> one = {id};
  for (int seen = 1; seen <= 2; ++seen) {
    const auto out = pool_each(t, one);
    CHECK(std::vector<float>(out.row(0).begin(), out.row(0).end()) == zeros);
    CHECK(!t.contains(id));
    CHECK(t.stats().pending == 1);
    t.apply(one, g.view());  // not held: skipped, no row created
    CHECK(!t.contains(id));
  }
  CHECK(t.stats().unknown_lookups == 2);
  CHECK(t.stats().skipped_unknown == 2);
  const auto out = pool_each(t, one);  // third sighting: admitted, and it already reads the row
  CHECK(t.contains(id));
  CHECK(std::vector<float>(out.row(0).begin(), out.row(0).end()) == init_row(t, id));
  CHECK(t.stats().pending == 0);
  CHECK(t.stats().admitted == 1);
  // Serving reads never count sightings.
  train::dynamic_table s(config(3, 2), opt);
  matrix<float> rows(1, 3);
  for (int k = 0; k < 5; ++k) s.lookup(one, rows.view());
  CHECK(!s.contains(id));
  CHECK(s.stats().serving_unknown_lookups == 5);
  CHECK(s.stats().pending == 0);

  SUBCASE("sightings within one batch count one by one") {
    train::dynamic_table b(config(3, 3), opt);
    const std::vector<id_type> ids = {7, 7, 7, 7}, offsets = {0};
    matrix<float> pooled(1, 3);
    b.pool(ids, offsets, {}, cpu::pooling::sum, pooled.view());  // zeros, zeros, row, row
    const auto row = init_row(b, 7);
    for (std::size_t c = 0; c < 3; ++c) CHECK(pooled(0, c) == row[c] + row[c]);
    CHECK(b.stats().unknown_lookups == 2);
  }
  SUBCASE("admit_after 0 and 1 both admit at the first sighting") {
    for (std::uint32_t n : {0u, 1u}) {
      train::dynamic_table b(config(3, n), opt);
      pool_each(b, one);
      CHECK(b.contains(id));
      CHECK(b.stats().unknown_lookups == 0);
    }
  }
}

TEST_CASE("dynamic_table: the admission counters are bounded by max_pending (least recently seen dropped)") {
  auto opt = std::make_shared<recpipe::testing::sgd_rows>();
  auto cfg = config(2, 2);
  cfg.max_pending = 50;
  train::dynamic_table t(cfg, opt);
  std::vector<id_type> ids(1000);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<id_type>(i) * 1'000'003;
  pool_each(t, ids);
  CHECK(t.stats().pending == 50);
  CHECK(t.stats().pending_dropped == 950);
  CHECK(t.size() == 0);
  // The 50 most recent keep their count: one more sighting admits them; an older one starts over.
  const std::vector<id_type> recent = {ids[999], ids[950]}, old = {ids[0]};
  pool_each(t, recent);
  CHECK(t.contains(ids[999]));
  CHECK(t.contains(ids[950]));
  pool_each(t, old);
  CHECK(!t.contains(ids[0]));
  pool_each(t, old);
  CHECK(t.contains(ids[0]));
}

TEST_CASE("dynamic_table: initial rows depend only on (seed, id), not on admission order or eviction") {
  auto opt = std::make_shared<recpipe::testing::counting_sgd>();
  std::vector<id_type> ids;
  for (id_type k = 0; k < 200; ++k) ids.push_back(k * 7919 - 100000);
  ids.push_back(min_id);
  ids.push_back(max_id);
  train::dynamic_table first(config(8), opt), last(config(8), opt);
  pool_each(first, ids);
  std::vector<id_type> reversed(ids.rbegin(), ids.rend());
  pool_each(last, reversed);
  for (id_type id : ids) {
    CHECK(read(first, id) == read(last, id));
    CHECK(read(first, id) == init_row(first, id));
  }
  // State comes from init_state beside each row.
  for (const auto& [id, v] : all_rows(first)) CHECK(v[8] == 7.0f);
  // Evicted and re-admitted: the same initial values again.
  auto cfg = config(8);
  cfg.max_rows = 1;
  train::dynamic_table tiny(cfg, opt);
  const std::vector<id_type> a = {ids[5]}, b = {ids[6]};
  pool_each(tiny, a);
  matrix<float> g(1, 8, 1.0f);
  tiny.apply(a, g.view());
  CHECK(read(tiny, ids[5]) != init_row(tiny, ids[5]));
  pool_each(tiny, b);  // evicts a
  CHECK(!tiny.contains(ids[5]));
  pool_each(tiny, a);
  CHECK(read(tiny, ids[5]) == init_row(tiny, ids[5]));
}

TEST_CASE("dynamic_table: rows unused for ttl are evicted, the clock never goes back") {
  auto opt = std::make_shared<recpipe::testing::sgd_rows>();
  auto cfg = config(2);
  cfg.ttl = 10;
  train::dynamic_table t(cfg, opt);
  const std::vector<id_type> a = {1}, b = {2}, c = {3};
  t.advance_clock(100);
  pool_each(t, a);
  t.advance_clock(105);
  pool_each(t, b);
  pool_each(t, c);
  t.advance_clock(108);
  matrix<float> g(1, 2, 1.0f);
  t.apply(c, g.view());  // apply is a use too
  CHECK(t.evict_expired(109) == 0);
  CHECK(t.evict_expired(110) == 1);  // a: last used at 100, unused for 10
  CHECK(!t.contains(1));
  CHECK(t.contains(2));
  t.advance_clock(50);  // ignored
  CHECK(t.clock() == 110);
  CHECK(t.evict_expired(3) == 0);  // an earlier now is the current clock
  CHECK(t.evict_expired(115) == 1);  // b
  CHECK(t.contains(3));
  CHECK(t.evict_expired(118) == 1);  // c
  CHECK(t.size() == 0);
  const auto s = t.stats();
  CHECK(s.evicted_ttl == 3);
  CHECK(s.evicted == 3);
  CHECK(s.evicted_budget == 0);
  CHECK(s.admitted == 3);
  // ttl 0: nothing expires.
  train::dynamic_table never(config(2), opt);
  pool_each(never, a);
  CHECK(never.evict_expired(max_id) == 0);
  CHECK(never.contains(1));
  // Extreme clocks do not overflow.
  train::dynamic_table extreme(cfg, opt);
  extreme.advance_clock(min_id);
  pool_each(extreme, a);
  CHECK(extreme.evict_expired(min_id + 5) == 0);
  CHECK(extreme.evict_expired(max_id) == 1);
}

TEST_CASE("dynamic_table: a row budget keeps memory bounded, evicting the least recently used") {
  auto opt = std::make_shared<recpipe::testing::counting_sgd>();
  auto cfg = config(4);
  cfg.max_rows = 100;
  train::dynamic_table t(cfg, opt);
  std::vector<id_type> batch(50);
  for (int step = 0; step < 200; ++step) {
    for (std::size_t i = 0; i < batch.size(); ++i) batch[i] = static_cast<id_type>(step * 50 + static_cast<int>(i));
    batch[0] = -5;  // one hot id, used every step, is never the least recent
    pool_each(t, batch);
    CHECK(t.size() <= 100);
  }
  const auto s = t.stats();
  CHECK(s.rows == 100);
  CHECK(s.admitted == 1 + 200 * 49);
  CHECK(s.evicted_budget == s.admitted - 100);
  CHECK(s.evicted == s.evicted_budget);
  CHECK(t.contains(-5));
  CHECK(t.contains(199 * 50 + 49));
  CHECK(t.contains(198 * 50 + 1));   // the previous batch is still within the budget
  CHECK(t.contains(197 * 50 + 49));   // -5 + 2 x 49 + the most recent of the batch before
  CHECK(!t.contains(197 * 50 + 48));  // older ones are gone
  CHECK(all_rows(t).size() == 100);
}

TEST_CASE("dynamic_table: unknown ids read as zero rows and are counted, pooling matches cpu::embedding_bag") {
  auto opt = std::make_shared<recpipe::testing::sgd_rows>();
  train::dynamic_table t(config(5, 1), opt);
  const std::vector<id_type> known = {10, -20, 30};
  pool_each(t, known);
  const std::vector<id_type> ids = {10, 99, -20, 10, 30, 77};
  const std::vector<id_type> offsets = {0, 2, 2, 4};
  const std::vector<float> weights = {1.0f, 5.0f, -2.0f, 0.5f, 3.0f, 1.0f};
  // Reference: a dense table with the known rows and a zero row for the unknown ids.
  matrix<float> dense(4, 5);
  std::vector<id_type> mapped;
  for (id_type id : ids) {
    const auto it = std::find(known.begin(), known.end(), id);
    mapped.push_back(it == known.end() ? 3 : it - known.begin());
  }
  for (std::size_t r = 0; r < 3; ++r) t.read_row(known[r], dense.row(r));
  for (auto mode : {cpu::pooling::sum, cpu::pooling::mean}) {
    for (bool weighted : {false, true}) {
      const std::span<const float> w = weighted ? std::span<const float>(weights) : std::span<const float>();
      matrix<float> want(4, 5), serving(4, 5), training(4, 5);
      cpu::embedding_bag(cpu::embedding_table_view::fp32(dense.view()), mapped, offsets, w, mode, want.view());
      t.pool_serving(ids, offsets, w, mode, serving.view());
      for (std::size_t i = 0; i < want.size(); ++i) CHECK(serving.values()[i] == doctest::Approx(want.values()[i]));
      train::dynamic_table fresh(config(5, 1), opt);  // training pool admits 99 and 77
      pool_each(fresh, known);
      const auto before = fresh.stats().admitted;
      fresh.pool(ids, offsets, w, mode, training.view());
      CHECK(fresh.stats().admitted == before + 2);
    }
  }
  const auto serving_unknown = t.stats().serving_unknown_lookups;
  CHECK(serving_unknown == 8);  // 2 unknown ids x 4 pool_serving calls
  matrix<float> rows(6, 5, 9.0f);
  CHECK(t.lookup(ids, rows.view()) == 4);
  for (float v : rows.row(1)) CHECK(v == 0.0f);
  for (float v : rows.row(5)) CHECK(v == 0.0f);
  CHECK(std::vector<float>(rows.row(0).begin(), rows.row(0).end()) == read(t, 10));
  CHECK(t.stats().serving_unknown_lookups == serving_unknown + 2);
  std::vector<float> row(5, 1.0f);
  CHECK(!t.read_row(12345, row));
  for (float v : row) CHECK(v == 0.0f);
  CHECK(t.size() == 3);
  CHECK(t.stats().unknown_lookups == 0);
}

TEST_CASE("dynamic_table: apply touches only the batch's rows, non-finite gradients skip and count") {
  auto opt = std::make_shared<recpipe::testing::counting_sgd>(0.5f);
  train::dynamic_table t(config(3), opt);
  std::vector<id_type> ids;
  for (id_type k = 0; k < 40; ++k) ids.push_back(k * 31 - 600);
  pool_each(t, ids);
  const auto before = all_rows(t);
  const std::vector<id_type> batch = {ids[3], ids[17], ids[29], 424242 /* not held */};
  matrix<float> g(4, 3, 2.0f);
  g(1, 2) = std::numeric_limits<float>::quiet_NaN();
  t.optimizer().begin_step();
  t.apply(batch, g.view());
  const auto after = all_rows(t);
  REQUIRE(after.size() == before.size());
  for (const auto& [id, v] : after) {
    const auto& old = before.at(id);
    if (id == ids[3] || id == ids[29]) {
      for (std::size_t c = 0; c < 3; ++c) CHECK(v[c] == old[c] - 1.0f);
      CHECK(v[3] == old[3] + 1.0f);  // state updated beside its row
      CHECK(v[4] == 2.0f);
    } else {
      CHECK(v == old);  // ids[17] (NaN gradient) included
    }
  }
  auto s = t.stats();
  CHECK(s.skipped_nonfinite == 1);
  CHECK(s.skipped_unknown == 1);
  CHECK(!t.contains(424242));
  // A NaN learning rate: the update is not finite, the rows keep their values.
  opt->lr = std::numeric_limits<float>::quiet_NaN();
  matrix<float> ones(4, 3, 1.0f);
  t.apply(batch, ones.view());
  CHECK(all_rows(t) == after);
  CHECK(t.stats().skipped_nonfinite == 4);
  // Shape errors name the table.
  matrix<float> wrong(4, 2);
  CHECK(message_of([&] { t.apply(batch, wrong.view()); }).find("\"user\": apply: grads must be 4 x 3 (got 4 x 2)") !=
        std::string::npos);
  t.apply({}, matrix<float>(0, 3).view());
}

TEST_CASE("dynamic_table: bad arguments give errors that name the table and the problem") {
  auto opt = std::make_shared<recpipe::testing::sgd_rows>();
  train::dynamic_table t(config(3), opt);
  matrix<float> out(2, 3), narrow(2, 2);
  const std::vector<id_type> ids = {1, 2, 3}, bad_offsets = {1, 2}, offsets = {0, 1};
  const std::vector<float> two_weights = {1.0f, 2.0f};
  auto has = [](const std::string& m, const std::string& part) {
    INFO(m);
    CHECK(m.find(part) != std::string::npos);
  };
  has(message_of([&] { t.pool(ids, bad_offsets, {}, cpu::pooling::sum, out.view()); }), "\"user\": pool: offsets[0] must be 0");
  has(message_of([&] { t.pool(ids, offsets, {}, cpu::pooling::sum, narrow.view()); }), "\"user\": pool: out has 2 columns");
  has(message_of([&] { t.pool(ids, offsets, two_weights, cpu::pooling::sum, out.view()); }), "weights has 2 entries for 3 ids");
  has(message_of([&] { t.pool_serving(ids, bad_offsets, {}, cpu::pooling::sum, out.view()); }), "\"user\": pool_serving: offsets");
  CHECK(t.stats().unknown_lookups == 0);  // nothing was counted on the failed calls
  CHECK(t.size() == 0);
  has(message_of([&] { t.lookup(ids, out.view()); }), "lookup: out must be 3 x 3 (got 2 x 3)");
  std::vector<float> row(2);
  has(message_of([&] { t.read_row(1, row); }), "read_row: out holds 2 floats, dim is 3");
  has(message_of([&] { t.load_row(1, row); }), "load_row: row holds 2 floats");
  const std::vector<float> nan_row = {1.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f};
  has(message_of([&] { t.load_row(1, nan_row); }), "not all finite");
  auto cfg = config(0);
  has(message_of([&] { train::dynamic_table x(cfg, opt); }), "dim must be at least 1");
  cfg = config(2);
  cfg.shards = 48;
  has(message_of([&] { train::dynamic_table x(cfg, opt); }), "shards must be a power of two (got 48)");
  cfg = config(2);
  cfg.ttl = -1;
  has(message_of([&] { train::dynamic_table x(cfg, opt); }), "ttl must be >= 0");
  cfg = config(2, 3);
  cfg.max_pending = 0;
  has(message_of([&] { train::dynamic_table x(cfg, opt); }), "max_pending must be at least 1");
  has(message_of([&] { train::dynamic_table x(config(2), nullptr); }), "optimizer is null");
  // Empty batches.
  matrix<float> none(0, 3);
  t.pool({}, {}, {}, cpu::pooling::sum, none.view());
  t.pool_serving({}, {}, {}, cpu::pooling::mean, none.view());
  CHECK(t.lookup({}, none.view()) == 0);
}

TEST_CASE("dynamic_table: load_row restores rows and state, serving copies are dense with a zero row") {
  auto opt = std::make_shared<recpipe::testing::counting_sgd>();
  auto cfg = config(4, 5);
  train::dynamic_table t(cfg, opt);
  const std::vector<id_type> ids = {max_id, -3, 0, min_id, 1 << 20};
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::vector<float> row = {float(i), -float(i), 0.5f * float(i), 1.0f};
    const std::vector<float> state = {float(10 + i), 1.0f};
    if (i % 2 == 0)
      t.load_row(ids[i], row, state);
    else
      t.load_row(ids[i], row);  // state from init_state
  }
  CHECK(t.size() == ids.size());
  CHECK(t.stats().admitted == ids.size());
  const auto rows = all_rows(t);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto& v = rows.at(ids[i]);
    CHECK(v[0] == float(i));
    CHECK(v[4] == (i % 2 == 0 ? float(10 + i) : 7.0f));
  }
  // Overwriting an existing row keeps the count of rows.
  const std::vector<float> row = {9, 9, 9, 9};
  t.load_row(-3, row);
  CHECK(read(t, -3) == row);
  CHECK(t.size() == ids.size());

  for (auto [type, tolerance] : {std::pair{cpu::storage::fp32, 0.0f}, std::pair{cpu::storage::fp16, 4e-3f},
                                 std::pair{cpu::storage::int8_rowwise, 4e-2f}}) {
    const auto copy = t.serving_copy(type);
    REQUIRE(copy.ids.size() == ids.size());
    CHECK(std::is_sorted(copy.ids.begin(), copy.ids.end()));
    CHECK(copy.table.rows() == ids.size() + 1);
    CHECK(copy.table.type() == type);
    const std::vector<id_type> query = {0, 424242, min_id, max_id, -3};
    std::vector<id_type> mapped(query.size());
    copy.to_rows(query, mapped);
    CHECK(mapped[1] == static_cast<id_type>(ids.size()));  // the zero row
    matrix<float> served(query.size(), 4), direct(query.size(), 4);
    cpu::embedding_lookup(copy.table.view(), mapped, served.view());
    t.lookup(query, direct.view());
    for (std::size_t i = 0; i < served.size(); ++i) CHECK(std::abs(served.values()[i] - direct.values()[i]) <= tolerance);
    for (float v : served.row(1)) CHECK(v == 0.0f);
    std::vector<id_type> short_rows(2);
    CHECK_THROWS_AS(copy.to_rows(query, short_rows), recpipe::error);
  }
  // An empty table still has its zero row.
  train::dynamic_table empty(config(4), opt);
  const auto copy = empty.serving_copy(cpu::storage::int8_rowwise);
  CHECK(copy.table.rows() == 1);
  CHECK(copy.row_of(5) == 0);
}

TEST_CASE("dynamic_table: counters add up over a mixed workload") {
  auto opt = std::make_shared<recpipe::testing::sgd_rows>();
  auto cfg = config(2, 2);
  cfg.ttl = 5;
  cfg.max_rows = 3;
  train::dynamic_table t(cfg, opt);
  const std::vector<id_type> ids = {1, 2, 3, 4, 1, 2, 3, 4};  // each id twice: admitted at the 2nd
  t.advance_clock(0);
  pool_each(t, ids);
  auto s = t.stats();
  CHECK(s.unknown_lookups == 4);
  CHECK(s.admitted == 4);
  CHECK(s.evicted_budget == 1);  // the 4th admission evicts the least recent (1)
  CHECK(s.rows == 3);
  CHECK(!t.contains(1));
  CHECK(t.evict_expired(5) == 3);
  s = t.stats();
  CHECK(s.rows == 0);
  CHECK(s.evicted == 4);
  CHECK(s.evicted_ttl == 3);
  CHECK(s.pending == 0);
  CHECK(s.admitted - s.evicted == s.rows);
}

TEST_CASE("dynamic_table: with train/optimizers.hpp's row optimizers, state lives and dies with its row") {
  auto opt = std::make_shared<train::lazy_adam>(train::lazy_adam_options{.lr = 0.05});
  auto cfg = config(4);
  cfg.max_rows = 2;
  train::dynamic_table t(cfg, opt);
  CHECK(t.state_size() == 8);
  const std::vector<id_type> a = {min_id}, b = {-1};
  pool_each(t, a);
  std::vector<float> row = init_row(t, min_id), state(8, 0.0f);
  matrix<float> g(1, 4);
  for (int step = 1; step <= 3; ++step) {
    for (std::size_t c = 0; c < 4; ++c) g(0, c) = 0.3f * float(step) - 0.2f * float(c);
    t.optimizer().begin_step();
    t.apply(a, g.view());
    opt->update_row(row, state, g.row(0));
    const auto rows = all_rows(t);
    CHECK(std::vector<float>(rows.at(min_id).begin(), rows.at(min_id).begin() + 4) == row);
    CHECK(std::vector<float>(rows.at(min_id).begin() + 4, rows.at(min_id).end()) == state);
  }
  // Evicted by the budget, re-admitted: fresh row and fresh (zero) moments.
  pool_each(t, b);
  const std::vector<id_type> c = {42};
  pool_each(t, c);
  CHECK(!t.contains(min_id));
  pool_each(t, a);
  const auto rows = all_rows(t);
  CHECK(std::vector<float>(rows.at(min_id).begin(), rows.at(min_id).begin() + 4) == init_row(t, min_id));
  for (std::size_t k = 4; k < 12; ++k) CHECK(rows.at(min_id)[k] == 0.0f);
  // An optimizer error (SparseAdam before its first begin_step) propagates; no row is half-written.
  auto fresh = std::make_shared<train::lazy_adam>();
  train::dynamic_table u(config(4), fresh);
  pool_each(u, a);
  CHECK_THROWS_AS(u.apply(a, g.view()), recpipe::error);
  CHECK(read(u, min_id) == init_row(u, min_id));
}
