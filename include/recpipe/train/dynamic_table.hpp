// SPDX-License-Identifier: Apache-2.0
// recpipe train: a collision-free embedding table over any 64-bit id, with frequency admission,
// TTL and row-budget eviction, trained by one thread while serving threads read it.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <numeric>
#include <shared_mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/math/embedding.hpp>
#include <recpipe/train/row_init.hpp>
#include <recpipe/train/table.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! Settings of a dynamic_table.
struct dynamic_table_config {
  std::size_t dim = 0;               //!< row width (>= 1)
  row_init init = {};                //!< initial row values, a pure function of (seed, id)
  std::string name = "table";        //!< named in error messages
  std::uint32_t admit_after = 1;     //!< an id gets a row at its n-th training sighting (0 and 1: the first)
  std::int64_t ttl = 0;              //!< evict_expired drops rows unused for >= ttl clock units; 0: never
  std::size_t max_rows = 0;          //!< row budget; admitting beyond it evicts the least recently used; 0: none
  std::size_t max_pending = 1 << 20; //!< ids counted towards admission at once (bounds the counter memory)
  std::size_t shards = 64;           //!< lock shards, a power of two
};

//! A snapshot of a dynamic_table's counters (totals since construction unless noted).
struct dynamic_table_stats {
  std::uint64_t rows = 0;                //!< rows held now
  std::uint64_t admitted = 0;            //!< rows created (admissions and load_row of new ids)
  std::uint64_t evicted = 0;             //!< rows removed (= evicted_ttl + evicted_budget)
  std::uint64_t evicted_ttl = 0;         //!< removed by evict_expired
  std::uint64_t evicted_budget = 0;      //!< removed to stay within max_rows
  std::uint64_t unknown_lookups = 0;     //!< training lookups (pool) of ids without a row
  std::uint64_t serving_unknown_lookups = 0;  //!< serving lookups (lookup, pool_serving, read_row) of ids without a row
  std::uint64_t pending = 0;             //!< ids being counted towards admission now
  std::uint64_t pending_dropped = 0;     //!< partial counts forgotten because max_pending was reached
  std::uint64_t skipped_unknown = 0;     //!< apply rows skipped: the id holds no row
  std::uint64_t skipped_nonfinite = 0;   //!< apply rows skipped: gradient or updated values not finite
};

//! @brief A dense serving copy of a dynamic_table: rows in ascending id order plus one zero row
//! (the last) that every id without a row maps to, so translated ids pool exactly as the dynamic
//! table serves them (unknown id = zero row).
//! @code
//! auto copy = table.serving_copy(recpipe::cpu::storage::fp16);
//! copy.to_rows(ids, rows);   // ids -> row numbers of copy.table
//! recpipe::cpu::embedding_bag(copy.table.view(), rows, offsets, {}, recpipe::cpu::pooling::sum, out.view());
//! @endcode
struct dynamic_serving_table {
  cpu::embedding_table table;                    //!< ids.size() + 1 rows; the last is zeros
  std::vector<id_type> ids;                      //!< ids[r] is served by row r, ascending
  std::unordered_map<id_type, id_type> index;    //!< id -> row

  //! The row serving `id`: its own, or the zero row (ids.size()) when it has none.
  id_type row_of(id_type id) const {
    const auto it = index.find(id);
    return it == index.end() ? static_cast<id_type>(ids.size()) : it->second;
  }
  //! rows[i] = row_of(ids_in[i]). @throws recpipe::error if the sizes differ.
  void to_rows(std::span<const id_type> ids_in, std::span<id_type> rows) const {
    if (rows.size() != ids_in.size())
      detail::fail("train::dynamic_serving_table::to_rows: rows holds ", rows.size(), " entries for ", ids_in.size(), " ids");
    for (std::size_t i = 0; i < ids_in.size(); ++i) rows[i] = row_of(ids_in[i]);
  }
};

//! @brief A trainable embedding table that maps ANY 64-bit id to its own row, with no hash
//! collisions: an exact key map (every id value is a valid key, negative ones and INT64_MIN
//! included), never a fixed array of rows indexed by a hash.
//!
//! **Admission** (Monolith's frequency filter): an id gets a row at its `admit_after`-th sighting
//! in training lookups (`pool`; each occurrence in `ids` is one sighting, and that sighting
//! already reads the new row). Before that it reads as a zero row and `apply` skips it. Counting
//! is exact per id in a bounded counter map of at most `max_pending` ids; when it is full the id
//! seen least recently loses its partial count (counted in `pending_dropped`). An exact map
//! rather than a count-min sketch: a sketch's over-counts would admit rare ids early, which is
//! what the filter is for; the bounded map only ever delays admission. An evicted row's count is
//! gone: the id needs `admit_after` new sightings.
//!
//! **Initial values** come from `init.fill(id, row)`, a pure function of (seed, id), so a row's
//! first values do not depend on admission order, eviction or the thread count. Optimizer state
//! (`optimizer.state_size(dim)` floats) is stored beside each row and set by `init_state`.
//!
//! **Eviction**: the table has a clock (`advance_clock(now)`, any unit, e.g. event-time seconds;
//! it never goes backwards: an earlier `now` is ignored). Training use (`pool`, `apply`) stamps a
//! row with the clock. `evict_expired(now)` removes rows unused for `ttl` or more (last use <=
//! now - ttl). With `max_rows`, admitting a new id into a full table first evicts the least
//! recently used row, so rows never exceed `max_rows` (nor counter entries `max_pending`).
//!
//! **Concurrency**: ONE trainer thread calls the writers (`pool`, `apply`, `advance_clock`,
//! `evict_expired`, `load_row`); any number of serving threads call the const readers (`lookup`,
//! `read_row`, `contains`, `pool_serving`, `for_each_row`, `serving_copy`, `stats`, `size`),
//! which never admit, count sightings or stamp rows; an id without a row reads as zeros and
//! is counted in `serving_unknown_lookups`. Rows live in `shards` shards, each an
//! `std::unordered_map` (id -> row record) guarded by a `std::shared_mutex`. A reader holds its
//! shard's shared lock only while it finds and copies ONE row; the writer computes every new
//! row outside any lock and holds the exclusive lock only to copy it in (dim + state floats), to
//! link a new record or to unlink an evicted one. When a shard's map would rehash, the writer
//! builds the grown map aside and swaps it in under the lock (O(1)), so no rehash ever runs
//! while a reader waits. A row record has a stable address and is freed only after it has been
//! unlinked under the exclusive lock, so a reader never sees a freed or half-written row. The
//! chosen locks over per-row seqlocks: readers must also walk the map, which a seqlock alone
//! cannot protect, and the critical sections are a few hundred nanoseconds either way. A reader
//! can still wait longer if the OS preempts the writer inside its critical section.
//! @code
//! recpipe::train::dynamic_table users({.dim = 16, .admit_after = 2, .ttl = 86400, .max_rows = 1'000'000},
//!                                     std::make_shared<my_adagrad>(0.05f));
//! users.advance_clock(event_time);
//! users.pool(ids, offsets, {}, recpipe::cpu::pooling::sum, out.view());   // trainer thread
//! users.apply(unique_ids, grads.view());
//! users.lookup(ids, rows.view());                                         // any serving thread
//! users.evict_expired(event_time);
//! @endcode
class dynamic_table final : public trainable_table {
 public:
  //! @throws recpipe::error for dim 0, a shard count that is not a power of two, max_pending 0
  //! with admit_after > 1, a negative ttl, or a null optimizer.
  dynamic_table(dynamic_table_config cfg, std::shared_ptr<row_optimizer> optimizer)
      : cfg_(std::move(cfg)), optimizer_(std::move(optimizer)) {
    const auto bad = [&](const auto&... parts) { detail::fail("train::dynamic_table \"", cfg_.name, "\": ", parts...); };
    if (!optimizer_) bad("the row optimizer is null");
    if (cfg_.dim == 0) bad("dim must be at least 1");
    if (cfg_.shards == 0 || (cfg_.shards & (cfg_.shards - 1)) != 0) bad("shards must be a power of two (got ", cfg_.shards, ")");
    if (cfg_.ttl < 0) bad("ttl must be >= 0 (got ", cfg_.ttl, ")");
    if (cfg_.admit_after > 1 && cfg_.max_pending == 0) bad("max_pending must be at least 1 when admit_after > 1");
    state_size_ = optimizer_->state_size(cfg_.dim);
    width_ = cfg_.dim + state_size_;
    shards_.reserve(cfg_.shards);
    for (std::size_t s = 0; s < cfg_.shards; ++s) shards_.push_back(std::make_unique<shard>());
    scratch_.resize(width_);
  }
  dynamic_table(const dynamic_table&) = delete;
  dynamic_table& operator=(const dynamic_table&) = delete;
  ~dynamic_table() override {
    for (record* r = lru_head_; r != nullptr;) {
      record* next = r->next;
      delete r;
      r = next;
    }
  }

  std::size_t dim() const override { return cfg_.dim; }
  std::size_t state_size() const { return state_size_; }
  const std::string& name() const { return cfg_.name; }
  const dynamic_table_config& settings() const { return cfg_; }
  row_optimizer& optimizer() override { return *optimizer_; }
  const std::shared_ptr<row_optimizer>& optimizer_ptr() const { return optimizer_; }
  //! Rows held now (any thread).
  std::size_t size() const { return static_cast<std::size_t>(rows_.load(std::memory_order_relaxed)); }
  //! The clock that stamps rows (writer thread).
  std::int64_t clock() const { return clock_; }

  //! A snapshot of the counters (any thread; each counter is read atomically, not all at once).
  dynamic_table_stats stats() const {
    dynamic_table_stats s;
    s.rows = rows_.load(std::memory_order_relaxed);
    s.admitted = admitted_.load(std::memory_order_relaxed);
    s.evicted_ttl = evicted_ttl_.load(std::memory_order_relaxed);
    s.evicted_budget = evicted_budget_.load(std::memory_order_relaxed);
    s.evicted = s.evicted_ttl + s.evicted_budget;
    s.unknown_lookups = unknown_lookups_.load(std::memory_order_relaxed);
    s.serving_unknown_lookups = serving_unknown_.load(std::memory_order_relaxed);
    s.pending = pending_count_.load(std::memory_order_relaxed);
    s.pending_dropped = pending_dropped_.load(std::memory_order_relaxed);
    s.skipped_unknown = skipped_unknown_.load(std::memory_order_relaxed);
    s.skipped_nonfinite = skipped_nonfinite_.load(std::memory_order_relaxed);
    return s;
  }

  // ---- writer (trainer thread) -------------------------------------------------------------

  //! Moves the clock to `now` (ignored when earlier than the clock). Writer thread.
  void advance_clock(std::int64_t now) { clock_ = std::max(clock_, now); }

  //! @brief Advances the clock to `now`, then evicts every row whose last training use is at or
  //! before now - ttl. Returns the rows evicted (0 when ttl is 0). Writer thread.
  std::size_t evict_expired(std::int64_t now) {
    advance_clock(now);
    if (cfg_.ttl == 0) return 0;
    if (clock_ < std::numeric_limits<std::int64_t>::min() + cfg_.ttl) return 0;  // nothing can be that old
    const std::int64_t cutoff = clock_ - cfg_.ttl;
    std::size_t evicted = 0;
    // Stamps only grow (the clock is monotone), so the LRU tail is also the oldest stamp.
    while (lru_tail_ != nullptr && lru_tail_->last_used <= cutoff) {
      evict(lru_tail_);
      evicted_ttl_.fetch_add(1, std::memory_order_relaxed);
      ++evicted;
    }
    return evicted;
  }

  //! @brief Training forward: pools bags as cpu::embedding_bag (offsets, weights and mean rules
  //! alike; mean divides by the bag's id count, ids without a row included) into out [batch, dim].
  //! Every id occurrence is a sighting towards admission; admitted rows are stamped with the clock.
  //! Ids without a row read as zeros (counted in unknown_lookups). Writer thread.
  //! @throws recpipe::error (naming the table) for bad offsets, weights or out shape, before any
  //! sighting is counted.
  void pool(std::span<const id_type> ids, std::span<const id_type> offsets, std::span<const float> weights,
            cpu::pooling mode, matrix_view<float> out) override {
    check_pool("pool", ids, offsets, weights, out);
    pool_rows(ids, offsets, weights, mode, out, [&](id_type id) -> const float* {
      record* r = sight(id);
      return r ? r->data.get() : nullptr;
    });
  }

  //! @brief Hands grads.row(i) to the optimizer for the row of ids[i], stamping it; ids without a
  //! row are skipped (skipped_unknown), as are non-finite gradient rows and updates that would
  //! leave a non-finite value (skipped_nonfinite; the row keeps its old values). Ids should be
  //! unique (a repeated id is updated once per occurrence). Writer thread.
  //! @throws recpipe::error (naming the table) if grads is not [ids.size(), dim].
  void apply(std::span<const id_type> ids, matrix_view<const float> grads) override {
    if (grads.rows() != ids.size() || (grads.cols() != cfg_.dim && !ids.empty()))
      fail("apply: grads must be ", ids.size(), " x ", cfg_.dim, " (got ", grads.rows(), " x ", grads.cols(), ")");
    if (grads.rows() > 1 && grads.stride() < grads.cols())
      fail("apply: grads has stride ", grads.stride(), " smaller than its ", grads.cols(), " columns");
    const std::span<float> row(scratch_.data(), cfg_.dim), st(scratch_.data() + cfg_.dim, state_size_);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      record* r = find(ids[i]);
      if (r == nullptr) {
        skipped_unknown_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      const std::span<const float> grad = grads.row(i);
      if (!all_finite(grad)) {
        skipped_nonfinite_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      // The single writer may read its rows without a lock; the update runs on a copy so the
      // exclusive lock covers only the copy back (and a non-finite result is never published).
      std::memcpy(scratch_.data(), r->data.get(), width_ * sizeof(float));
      optimizer_->update_row(row, st, grad);
      if (!all_finite(scratch_)) {
        skipped_nonfinite_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      {
        std::unique_lock lock(shard_of(r->id).mutex);
        std::memcpy(r->data.get(), scratch_.data(), width_ * sizeof(float));
      }
      touch(r);
    }
  }

  //! @brief Sets the row of `id` to `row` and its optimizer state to `state` (empty: init_state),
  //! creating the row if needed without counting sightings (restoring a snapshot). The row is
  //! stamped with the clock; a new row may evict the least recently used one (max_rows). Writer thread.
  //! @throws recpipe::error for wrong sizes or non-finite values.
  void load_row(id_type id, std::span<const float> row, std::span<const float> state = {}) {
    if (row.size() != cfg_.dim) fail("load_row: row holds ", row.size(), " floats, dim is ", cfg_.dim);
    if (!state.empty() && state.size() != state_size_)
      fail("load_row: state holds ", state.size(), " floats, the optimizer needs ", state_size_);
    if (!all_finite(row) || !all_finite(state)) fail("load_row: the values of id ", id, " are not all finite");
    std::copy(row.begin(), row.end(), scratch_.begin());
    if (state.empty()) {
      if (state_size_) optimizer_->init_state({scratch_.data() + cfg_.dim, state_size_});
    } else {
      std::copy(state.begin(), state.end(), scratch_.begin() + static_cast<std::ptrdiff_t>(cfg_.dim));
    }
    record* r = find(id);
    if (r == nullptr) {
      drop_pending(id);
      r = admit(id);
    }
    {
      std::unique_lock lock(shard_of(id).mutex);
      std::memcpy(r->data.get(), scratch_.data(), width_ * sizeof(float));
    }
    touch(r);
  }

  // ---- readers (any thread) ----------------------------------------------------------------

  //! True when `id` holds a row now.
  bool contains(id_type id) const {
    const shard& s = shard_of(id);
    std::shared_lock lock(s.mutex);
    return s.map.find(id) != s.map.end();
  }

  //! @brief Copies the row of `id` into out (dim floats), or zeros (counted) when it has none.
  //! Returns whether it had a row. Never admits or stamps. @throws recpipe::error for a wrong size.
  bool read_row(id_type id, std::span<float> out) const {
    if (out.size() != cfg_.dim) fail("read_row: out holds ", out.size(), " floats, dim is ", cfg_.dim);
    if (copy_row(id, out.data())) return true;
    serving_unknown_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  //! @brief out.row(i) = row of ids[i], or zeros for ids without a row (counted). Returns how
  //! many ids had a row. Serving threads. @throws recpipe::error if out is not [ids.size(), dim].
  std::size_t lookup(std::span<const id_type> ids, matrix_view<float> out) const {
    cpu::impl::check_view("train::dynamic_table::lookup", "out", out);
    if (out.rows() != ids.size() || out.cols() != cfg_.dim)
      fail("lookup: out must be ", ids.size(), " x ", cfg_.dim, " (got ", out.rows(), " x ", out.cols(), ")");
    std::size_t found = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) found += copy_row(ids[i], out.data() + i * out.stride()) ? 1 : 0;
    if (found != ids.size()) serving_unknown_.fetch_add(ids.size() - found, std::memory_order_relaxed);
    return found;
  }

  //! @brief Serving forward: the same pooling as `pool`, but const: no sightings, no admission, no
  //! stamps; ids without a row read as zeros (counted). Serving threads.
  //! @throws recpipe::error (naming the table) for bad offsets, weights or out shape.
  void pool_serving(std::span<const id_type> ids, std::span<const id_type> offsets, std::span<const float> weights,
                    cpu::pooling mode, matrix_view<float> out) const {
    check_pool("pool_serving", ids, offsets, weights, out);
    std::size_t unknown = 0;
    const std::size_t dim = cfg_.dim;
    // Each row is accumulated under its shard's shared lock (no row copy).
    pool_bags(ids, offsets, weights, mode, out, [&](id_type id, float w, float* acc) {
      const shard& s = shard_of(id);
      std::shared_lock lock(s.mutex);
      const auto it = s.map.find(id);
      if (it == s.map.end()) {
        ++unknown;
        return;
      }
      math::accumulate_row(it->second->data.get(), w, acc, dim);
    });
    if (unknown) serving_unknown_.fetch_add(unknown, std::memory_order_relaxed);
  }

  //! @brief Calls f(id, row, state) for every row (spans of dim and state_size() floats), shard
  //! by shard in ascending id order within a shard. Each shard is copied under its shared lock,
  //! then visited without it, so f may be slow; rows written while it runs may appear old or new
  //! (call it from the trainer thread between steps for a consistent snapshot). Any thread; f
  //! must not call the table's writers.
  //! @code
  //! table.for_each_row([&](recpipe::id_type id, std::span<const float> row, std::span<const float> state) { ... });
  //! @endcode
  template <class F>
  void for_each_row(F&& f) const {
    std::vector<id_type> ids;
    std::vector<float> values;
    std::vector<std::size_t> order;
    for (const auto& s : shards_) {
      ids.clear();
      values.clear();
      {
        std::shared_lock lock(s->mutex);
        ids.reserve(s->map.size());
        values.reserve(s->map.size() * width_);
        for (const auto& [id, r] : s->map) {
          ids.push_back(id);
          values.insert(values.end(), r->data.get(), r->data.get() + width_);
        }
      }
      order.resize(ids.size());
      std::iota(order.begin(), order.end(), std::size_t{0});
      std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ids[a] < ids[b]; });
      for (std::size_t k : order) {
        const float* v = values.data() + k * width_;
        f(ids[k], std::span<const float>(v, cfg_.dim), std::span<const float>(v + cfg_.dim, state_size_));
      }
    }
  }

  //! @brief A dense serving copy in `type` (fp32, fp16 or int8 row-wise) of the rows held now, in
  //! ascending id order, plus a trailing zero row for unknown ids (see dynamic_serving_table).
  //! Any thread (see for_each_row about consistency).
  dynamic_serving_table serving_copy(cpu::storage type) const {
    std::vector<std::pair<id_type, std::vector<float>>> rows;
    for_each_row([&](id_type id, std::span<const float> row, std::span<const float>) {
      rows.emplace_back(id, std::vector<float>(row.begin(), row.end()));
    });
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    matrix<float> dense(rows.size() + 1, cfg_.dim);
    dynamic_serving_table out{cpu::embedding_table(type, 0, cfg_.dim), {}, {}};
    out.ids.reserve(rows.size());
    out.index.reserve(rows.size());
    for (std::size_t r = 0; r < rows.size(); ++r) {
      std::copy(rows[r].second.begin(), rows[r].second.end(), dense.row(r).begin());
      out.ids.push_back(rows[r].first);
      out.index.emplace(rows[r].first, static_cast<id_type>(r));
    }
    out.table = cpu::embedding_table::from_fp32(dense.view(), type);
    return out;
  }

 private:
  // A row and its optimizer state (data: dim + state_size floats, fixed address for the row's
  // life) plus writer-only bookkeeping. Readers touch only `data`, under the shard lock.
  struct record {
    id_type id = 0;
    std::int64_t last_used = 0;
    record* prev = nullptr;  // LRU list: prev is more recent
    record* next = nullptr;
    std::unique_ptr<float[]> data;
  };
  struct id_hash {
    std::size_t operator()(id_type id) const noexcept {
      return static_cast<std::size_t>(row_init::mix(static_cast<std::uint64_t>(id) ^ 0x2545f4914f6cdd1dull));
    }
  };
  using map_type = std::unordered_map<id_type, record*, id_hash>;
  // One cache line at least per shard: readers on different shards do not share lock lines.
  struct alignas(64) shard {
    mutable std::shared_mutex mutex;
    map_type map;
  };
  struct pending_entry {
    std::uint32_t count = 0;
    std::list<id_type>::iterator position;
  };

  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    detail::fail("train::dynamic_table \"", cfg_.name, "\": ", parts...);
  }
  static bool all_finite(std::span<const float> values) {
    for (float v : values)
      if (!std::isfinite(v)) return false;
    return true;
  }

  shard& shard_of(id_type id) const {
    // High bits of a different mix than the map's hash, so a shard's ids spread over its buckets.
    const std::uint64_t h = row_init::mix(static_cast<std::uint64_t>(id));
    return *shards_[static_cast<std::size_t>(h >> 32) & (cfg_.shards - 1)];
  }

  // Writer-side find: the only thread that changes maps may read them without a lock.
  record* find(id_type id) const {
    const shard& s = shard_of(id);
    const auto it = s.map.find(id);
    return it == s.map.end() ? nullptr : it->second;
  }

  bool copy_row(id_type id, float* out) const {
    const shard& s = shard_of(id);
    {
      std::shared_lock lock(s.mutex);
      const auto it = s.map.find(id);
      if (it != s.map.end()) {
        std::memcpy(out, it->second->data.get(), cfg_.dim * sizeof(float));
        return true;
      }
    }
    std::fill(out, out + cfg_.dim, 0.0f);
    return false;
  }

  void check_pool(const char* what, std::span<const id_type> ids, std::span<const id_type> offsets,
                  std::span<const float> weights, matrix_view<float> out) const {
    try {
      cpu::impl::check_view(what, "out", out);
      if (out.cols() != cfg_.dim)
        detail::fail(what, ": out has ", out.cols(), " columns but the table's dim is ", cfg_.dim);
      cpu::impl::check_offsets(what, offsets, ids.size(), out.rows());
      if (!weights.empty() && weights.size() != ids.size())
        detail::fail(what, ": weights has ", weights.size(), " entries for ", ids.size(), " ids (need 0 or ", ids.size(), ")");
    } catch (const error& e) {
      fail(e.what() + std::strlen("recpipe: "));
    }
  }

  // Bag loop shared by pool and pool_serving: add(id, weight, acc) accumulates one row.
  template <class Add>
  void pool_bags(std::span<const id_type> ids, std::span<const id_type> offsets, std::span<const float> weights,
                 cpu::pooling mode, matrix_view<float> out, Add&& add) const {
    const std::size_t dim = cfg_.dim;
    for (std::size_t b = 0; b < out.rows(); ++b) {
      const auto begin = static_cast<std::size_t>(offsets[b]);
      const std::size_t end = b + 1 < offsets.size() ? static_cast<std::size_t>(offsets[b + 1]) : ids.size();
      float* acc = out.data() + b * out.stride();
      std::fill(acc, acc + dim, 0.0f);
      for (std::size_t i = begin; i < end; ++i) add(ids[i], weights.empty() ? 1.0f : weights[i], acc);
      if (mode == cpu::pooling::mean && end > begin) {
        const float inverse = 1.0f / static_cast<float>(end - begin);
        for (std::size_t c = 0; c < dim; ++c) acc[c] *= inverse;
      }
    }
  }
  template <class RowOf>
  void pool_rows(std::span<const id_type> ids, std::span<const id_type> offsets, std::span<const float> weights,
                 cpu::pooling mode, matrix_view<float> out, RowOf&& row_of) {
    const std::size_t dim = cfg_.dim;
    pool_bags(ids, offsets, weights, mode, out, [&](id_type id, float w, float* acc) {
      if (const float* row = row_of(id)) math::accumulate_row(row, w, acc, dim);
    });
  }

  // One training sighting of id: its row (stamped), or nullptr while it waits for admission.
  record* sight(id_type id) {
    if (record* r = find(id)) {
      touch(r);
      return r;
    }
    if (cfg_.admit_after > 1) {
      auto it = pending_.find(id);
      if (it == pending_.end()) {
        if (pending_.size() >= cfg_.max_pending) {
          pending_.erase(pending_order_.back());
          pending_order_.pop_back();
          pending_dropped_.fetch_add(1, std::memory_order_relaxed);
        }
        pending_order_.push_front(id);
        it = pending_.emplace(id, pending_entry{0, pending_order_.begin()}).first;
      } else {
        pending_order_.splice(pending_order_.begin(), pending_order_, it->second.position);
      }
      if (++it->second.count < cfg_.admit_after) {
        pending_count_.store(pending_.size(), std::memory_order_relaxed);
        unknown_lookups_.fetch_add(1, std::memory_order_relaxed);
        return nullptr;
      }
      pending_order_.erase(it->second.position);
      pending_.erase(it);
      pending_count_.store(pending_.size(), std::memory_order_relaxed);
    }
    return admit(id);
  }

  void drop_pending(id_type id) {
    const auto it = pending_.find(id);
    if (it == pending_.end()) return;
    pending_order_.erase(it->second.position);
    pending_.erase(it);
    pending_count_.store(pending_.size(), std::memory_order_relaxed);
  }

  // Creates id's row (initialised outside any lock), evicting the LRU row first when full.
  record* admit(id_type id) {
    if (cfg_.max_rows != 0 && rows_.load(std::memory_order_relaxed) >= cfg_.max_rows && lru_tail_ != nullptr) {
      evict(lru_tail_);
      evicted_budget_.fetch_add(1, std::memory_order_relaxed);
    }
    auto owned = std::make_unique<record>();
    owned->id = id;
    owned->data = std::make_unique<float[]>(width_);
    cfg_.init.fill(id, {owned->data.get(), cfg_.dim});
    if (state_size_) optimizer_->init_state({owned->data.get() + cfg_.dim, state_size_});
    record* r = owned.get();
    shard& s = shard_of(id);
    if (static_cast<double>(s.map.size() + 1) > static_cast<double>(s.map.bucket_count()) * s.map.max_load_factor()) {
      // Grow aside and swap: the O(n) rehash never runs under the lock readers wait on.
      map_type grown;
      grown.reserve(std::max<std::size_t>(16, 2 * (s.map.size() + 1)));
      grown.insert(s.map.begin(), s.map.end());
      grown.emplace(id, r);
      {
        std::unique_lock lock(s.mutex);
        s.map.swap(grown);
      }
    } else {
      std::unique_lock lock(s.mutex);
      s.map.emplace(id, r);
    }
    owned.release();
    r->last_used = clock_;
    link_front(r);
    rows_.fetch_add(1, std::memory_order_relaxed);
    admitted_.fetch_add(1, std::memory_order_relaxed);
    return r;
  }

  void evict(record* r) {
    {
      std::unique_lock lock(shard_of(r->id).mutex);
      shard_of(r->id).map.erase(r->id);
    }
    unlink(r);
    delete r;  // no reader can hold it: readers use rows only under the shard lock
    rows_.fetch_sub(1, std::memory_order_relaxed);
  }

  void touch(record* r) {
    r->last_used = clock_;
    if (r == lru_head_) return;
    unlink(r);
    link_front(r);
  }
  void link_front(record* r) {
    r->prev = nullptr;
    r->next = lru_head_;
    if (lru_head_) lru_head_->prev = r;
    lru_head_ = r;
    if (!lru_tail_) lru_tail_ = r;
  }
  void unlink(record* r) {
    (r->prev ? r->prev->next : lru_head_) = r->next;
    (r->next ? r->next->prev : lru_tail_) = r->prev;
    r->prev = r->next = nullptr;
  }

  dynamic_table_config cfg_;
  std::shared_ptr<row_optimizer> optimizer_;
  std::size_t state_size_ = 0, width_ = 0;
  std::vector<std::unique_ptr<shard>> shards_;

  // Writer-only state.
  std::int64_t clock_ = 0;
  record* lru_head_ = nullptr;  // most recently used
  record* lru_tail_ = nullptr;
  std::unordered_map<id_type, pending_entry, id_hash> pending_;
  std::list<id_type> pending_order_;  // front: seen most recently
  std::vector<float> scratch_;

  // Counters: written by the writer (serving_unknown_ by readers), read by stats() anywhere.
  std::atomic<std::uint64_t> rows_{0}, admitted_{0}, evicted_ttl_{0}, evicted_budget_{0}, unknown_lookups_{0},
      pending_count_{0}, pending_dropped_{0}, skipped_unknown_{0}, skipped_nonfinite_{0};
  mutable std::atomic<std::uint64_t> serving_unknown_{0};
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
