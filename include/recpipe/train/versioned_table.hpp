// SPDX-License-Identifier: Apache-2.0
// recpipe train: immutable versions of an embedding table made of shared row blocks, published
// from a training table at a cost proportional to the rows that changed (copy-on-write).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/train/fixed_table.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

// Design: copy-on-write row blocks, not a delta layer.
//
// A version is a vector of pointers to immutable blocks of `block_rows` rows each. Publishing
// the next version copies the pointer vector (a memcpy of 8 bytes per block), and for every
// block holding a changed row takes a new block and copies its rows from the training table;
// every other block is shared with the previous version. Both versions stay complete and
// independent: a reader pins one `shared_ptr<const table_version>` and reads any row with one
// pointer hop and no lock.
//
// Blocks carry no reference count: a per-block shared_ptr would make every publication touch
// every block's control block (one cache miss per block: about 25 ms for the 262,144 blocks of a
// 1 GiB table) and every release do it again. Instead a ledger shared by the publisher and its
// versions records, for each block a publication replaced, the version that created it and the
// one that replaced it; the block is needed only while a version in that range is alive. When a
// version is released (on any thread: a few set operations under a mutex, no freeing there), the
// blocks no live version needs go to a free list, which the next publication reuses (no
// allocation, no page faults) on the training thread.
//
// A delta layer (base table + hash map of changed rows, compacted now and then) publishes a
// little less (only the changed rows, no pointer vector), but every read first probes the delta
// map (a hash lookup on the serving path for every id), successive versions either chain deltas
// (reads get slower with every version until a compaction) or copy the accumulated delta (cost
// grows between compactions), and a compaction is a full-table copy at some point, i.e. a second
// copy of the table and a latency spike exactly what the issue forbids. Blocks keep reads at a
// fixed cost, make the publication cost depend only on the changed rows and the block count, and
// never need compaction. The price is the pointer vector (8 bytes per block) and that a changed
// row copies its whole block (`block_rows` rows): small blocks cost a longer vector, large blocks
// copy more bytes; bench/train/publish_cost.cpp measures both (8 rows, the default, did best
// on the 1 GiB table with 10,000 changed rows: ~10 ms of CPU and 23 MiB).

namespace impl {
// Who may free which block (see the design note). Shared by a publisher and its versions; it
// outlives all of them, and frees every block it still knows when it goes.
class block_ledger {
 public:
  explicit block_ledger(std::size_t block_floats) : block_floats_(block_floats) {}
  block_ledger(const block_ledger&) = delete;
  block_ledger& operator=(const block_ledger&) = delete;
  ~block_ledger() {
    for (auto& group : retired_)
      for (const retired_block& b : group.blocks) release(b.data);
    for (float* b : free_) release(b);
    for (float* b : reclaimed_) release(b);
    for (const float* b : orphans_) release(b);
  }

  float* take() {  // training thread
    if (free_.empty()) {
      std::lock_guard lock(mutex_);
      free_.swap(reclaimed_);
    }
    if (!free_.empty()) {
      float* b = free_.back();
      free_.pop_back();
      return b;
    }
    return static_cast<float*>(::operator new(block_floats_ * sizeof(float), std::align_val_t{64}));
  }
  void born(std::uint64_t version) {
    std::lock_guard lock(mutex_);
    live_.insert(version);
  }
  // Blocks that publication `version` replaced, each with the version that created it.
  void retire(std::uint64_t version, std::vector<std::pair<const float*, std::uint64_t>> replaced) {
    std::lock_guard lock(mutex_);
    retired_group group{version, {}};
    group.blocks.reserve(replaced.size());
    for (auto& [data, birth] : replaced) group.blocks.push_back({const_cast<float*>(data), birth});
    retired_.push_back(std::move(group));
    collect_locked();
  }
  // A version went away (any thread). The newest version hands over its blocks when it is the
  // last one of its publisher: nobody else frees them.
  void died(std::uint64_t version, std::vector<const float*>& blocks) {
    std::lock_guard lock(mutex_);
    live_.erase(version);
    if (version == newest_) orphans_.swap(blocks);
    collect_locked();
  }
  // Before the publisher drops its previous version (which then is not the newest any more).
  void set_newest(std::uint64_t version) {
    std::lock_guard lock(mutex_);
    newest_ = version;
  }
  // Keeps at most `keep` free blocks (training thread).
  void trim(std::size_t keep) {
    {
      std::lock_guard lock(mutex_);
      free_.insert(free_.end(), reclaimed_.begin(), reclaimed_.end());
      reclaimed_.clear();
    }
    while (free_.size() > keep) {
      release(free_.back());
      free_.pop_back();
    }
  }
  std::size_t retained_blocks() {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (const auto& g : retired_) n += g.blocks.size();
    return n;
  }
  std::size_t free_blocks() {
    std::lock_guard lock(mutex_);
    return free_.size() + reclaimed_.size();
  }

 private:
  struct retired_block {
    float* data;
    std::uint64_t birth;
  };
  struct retired_group {
    std::uint64_t replaced_at;
    std::vector<retired_block> blocks;
  };
  void release(const float* b) const { ::operator delete(const_cast<float*>(b), std::align_val_t{64}); }
  // A block born at b and replaced at r serves versions [b, r): free once none of them is live.
  void collect_locked() {
    for (auto& group : retired_) {
      auto keep = group.blocks.begin();
      for (const retired_block& b : group.blocks) {
        const auto it = live_.lower_bound(b.birth);
        if (it != live_.end() && *it < group.replaced_at) *keep++ = b;
        else reclaimed_.push_back(b.data);
      }
      group.blocks.erase(keep, group.blocks.end());
    }
    retired_.erase(std::remove_if(retired_.begin(), retired_.end(), [](const retired_group& g) { return g.blocks.empty(); }),
                   retired_.end());
  }

  std::size_t block_floats_;
  std::mutex mutex_;
  std::set<std::uint64_t> live_;
  std::vector<retired_group> retired_;
  std::vector<float*> reclaimed_;  // freed by died/retire, handed to the training thread
  std::vector<float*> free_;       // training thread only
  std::vector<const float*> orphans_;
  std::uint64_t newest_ = 0;
};
}  // namespace impl

//! @brief One immutable version of an embedding table: `rows()` rows of `dim()` floats stored in
//! blocks of `block_rows()` rows that later versions share when their rows did not change.
//!
//! Made by table_publisher. Every accessor is const and thread-safe; a version never changes
//! after publication. Row r lives in block r / block_rows() at row r % block_rows().
//! @code
//! std::shared_ptr<const recpipe::train::table_version> v = publisher.publish(table);
//! std::span<const float> row = v->row(7);
//! v->lookup(ids, out.view());                                  // out[i] = row ids[i]
//! v->pool(ids, offsets, {}, recpipe::cpu::pooling::sum, bags.view());
//! @endcode
class table_version {
 public:
  using block = const float*;

  table_version(const table_version&) = delete;
  table_version& operator=(const table_version&) = delete;
  ~table_version() {
    if (!ledger_) return;
    ledger_->died(version_, blocks_);
  }

  std::size_t rows() const noexcept { return rows_; }
  std::size_t dim() const noexcept { return dim_; }
  std::size_t block_rows() const noexcept { return block_rows_; }
  std::size_t block_count() const noexcept { return blocks_.size(); }
  //! The publication number: 1 for the first version of a publisher, +1 for each later one.
  std::uint64_t version() const noexcept { return version_; }
  //! The blocks (shared with other versions where their rows did not change).
  std::span<const block> blocks() const noexcept { return blocks_; }
  //! Bytes of row data this version's blocks hold (shared blocks included).
  std::size_t block_bytes() const noexcept { return rows_ * dim_ * sizeof(float); }

  //! True when `id` is a row of this version ([0, rows())).
  bool contains(id_type id) const noexcept { return id >= 0 && static_cast<std::uint64_t>(id) < rows_; }

  //! @brief Row `id`. @throws recpipe::error for an id outside [0, rows()).
  std::span<const float> row(id_type id) const {
    if (!contains(id))
      detail::fail("train::table_version: row ", id, " is outside [0, ", rows_, ") (version ", version_, ")");
    return row_unchecked(static_cast<std::size_t>(id));
  }
  //! Row r without the range check (r < rows()).
  std::span<const float> row_unchecked(std::size_t r) const noexcept {
    return {blocks_[r / block_rows_] + (r % block_rows_) * dim_, dim_};
  }

  //! @brief out[i] = row ids[i] (cpu::embedding_lookup over the blocks).
  //! @throws recpipe::error naming the position of an id outside [0, rows()), or a wrong out shape.
  void lookup(std::span<const id_type> ids, matrix_view<float> out) const {
    if (out.rows() != ids.size() || out.cols() != dim_)
      detail::fail("train::table_version: lookup: out must be ", ids.size(), " x ", dim_, " (got ", out.rows(), " x ",
                   out.cols(), ")");
    check_ids("lookup", ids);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const auto r = row_unchecked(static_cast<std::size_t>(ids[i]));
      std::copy(r.begin(), r.end(), out.row(i).begin());
    }
  }

  //! @brief Pooled lookups over ragged bags with cpu::embedding_bag's rules (offsets with batch or
  //! batch + 1 entries, offsets[0] = 0, non-decreasing; optional per-id weights; sum or mean, an
  //! empty bag gives zeros). Single-threaded.
  //! @throws recpipe::error for bad offsets, weights or shapes, or an id outside [0, rows());
  //! nothing is written then.
  void pool(std::span<const id_type> ids, std::span<const id_type> offsets, std::span<const float> weights,
            cpu::pooling mode, matrix_view<float> out) const {
    const std::size_t batch = out.rows();
    if (out.cols() != dim_)
      detail::fail("train::table_version: pool: out has ", out.cols(), " columns but the table's dim is ", dim_);
    cpu::impl::check_offsets("train::table_version: pool", offsets, ids.size(), batch);
    if (!weights.empty() && weights.size() != ids.size())
      detail::fail("train::table_version: pool: ", weights.size(), " weights for ", ids.size(), " ids");
    const auto end_of = [&](std::size_t b) {
      return b + 1 < offsets.size() ? offsets[b + 1] : static_cast<id_type>(ids.size());
    };
    check_ids("pool", ids);
    for (std::size_t b = 0; b < batch; ++b) {
      const std::span<float> acc = out.row(b);
      std::fill(acc.begin(), acc.end(), 0.0f);
      const auto begin = static_cast<std::size_t>(offsets[b]), end = static_cast<std::size_t>(end_of(b));
      for (std::size_t i = begin; i < end; ++i) {
        const float w = weights.empty() ? 1.0f : weights[i];
        const float* r = row_unchecked(static_cast<std::size_t>(ids[i])).data();
        for (std::size_t c = 0; c < dim_; ++c) acc[c] += w * r[c];
      }
      if (mode == cpu::pooling::mean && end > begin) {
        const float scale = 1.0f / static_cast<float>(end - begin);
        for (float& v : acc) v *= scale;
      }
    }
  }

  //! A contiguous fp32 copy of every row (export, tests); costs a full copy of the table.
  matrix<float> to_matrix() const {
    matrix<float> out(rows_, dim_);
    for (std::size_t r = 0; r < rows_; ++r) {
      const auto src = row_unchecked(r);
      std::copy(src.begin(), src.end(), out.row(r).begin());
    }
    return out;
  }

 private:
  friend class table_publisher;
  table_version() = default;

  void check_ids(const char* what, std::span<const id_type> ids) const {
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (!contains(ids[i]))
        detail::fail("train::table_version: ", what, ": ids[", i, "] = ", ids[i], " is outside [0, ", rows_, ")");
  }

  std::size_t rows_ = 0, dim_ = 0, block_rows_ = 1;
  std::uint64_t version_ = 0;
  std::vector<const float*> blocks_;
  std::shared_ptr<impl::block_ledger> ledger_;
};

//! What one table_publisher::publish did.
struct publish_stats {
  std::uint64_t version = 0;         //!< the version made
  bool full = false;                 //!< every block was copied (first version, or all rows dirty)
  std::size_t changed_rows = 0;      //!< rows reported changed
  std::size_t copied_blocks = 0;     //!< blocks allocated and copied
  std::size_t shared_blocks = 0;     //!< blocks shared with the previous version
  std::size_t copied_bytes = 0;      //!< row bytes copied (copied_blocks x block bytes)
  std::size_t pointer_bytes = 0;     //!< bytes of the new version's block-pointer vector
  double seconds = 0.0;              //!< wall time of the publication
  //! Memory the new version adds while the previous one is still alive.
  std::size_t extra_bytes() const noexcept { return copied_bytes + pointer_bytes; }
};

//! Settings of a table_publisher.
struct table_publisher_options {
  std::size_t block_rows = 8;  //!< rows per block (>= 1); see bench/train/publish_cost.cpp
};

//! @brief Makes successive immutable table_version objects from a training table, copying only
//! the blocks that hold changed rows (see the design note at the top of this header).
//!
//! The first publication copies every row; each later one copies the blocks of the rows
//! reported changed (fixed_table::take_dirty_rows() when publishing a fixed_table) and shares
//! every other block with the previous version. The rows and dim must stay those of the first
//! publication. Publish between training steps, from the training thread (the publisher reads
//! the training weights); the versions it returns may be read by any thread.
//! @code
//! recpipe::train::table_publisher publisher;             // blocks of 8 rows
//! auto v1 = publisher.publish(items);                    // full copy
//! trainer.step(...);                                     // apply() marks rows dirty
//! auto v2 = publisher.publish(items);                    // copies the dirty rows' blocks only
//! slot.publish(v2);                                      // e.g. into the lead's version registry
//! @endcode
class table_publisher {
 public:
  using options = table_publisher_options;

  explicit table_publisher(options o = {}) : o_(o) {
    if (o_.block_rows == 0) detail::fail("train::table_publisher: block_rows must be at least 1");
  }
  // One publisher per chain of versions: a copy would publish into the same ledger twice.
  table_publisher(const table_publisher&) = delete;
  table_publisher& operator=(const table_publisher&) = delete;
  table_publisher(table_publisher&&) noexcept = default;
  table_publisher& operator=(table_publisher&&) noexcept = default;

  //! @brief The next version of `table`: takes its dirty rows (take_dirty_rows) and copies their
  //! blocks. @throws recpipe::error if the table's shape differs from the first publication's;
  //! the table's dirty set is then left as it was.
  std::shared_ptr<const table_version> publish(fixed_table& table) {
    check_shape(table.rows(), table.dim(), table.name().c_str());
    fixed_table::dirty_rows dirty = table.take_dirty_rows();
    if (dirty.all) return publish_all(table.weights());
    return publish(table.weights(), dirty.rows);
  }

  //! @brief The next version from any row source: `rows` is the whole table [rows, dim] now, and
  //! `changed` lists the rows that differ from the last published version (any order, repeats
  //! allowed). The first publication copies everything whatever `changed` says.
  //! @throws recpipe::error for a shape other than the first publication's or a changed row
  //! outside [0, rows); nothing is published then.
  std::shared_ptr<const table_version> publish(matrix_view<const float> rows, std::span<const std::size_t> changed) {
    const auto start = std::chrono::steady_clock::now();
    check_shape(rows.rows(), rows.cols(), "rows");
    if (!current_) return publish_all(rows);
    for (std::size_t i = 0; i < changed.size(); ++i)
      if (changed[i] >= rows.rows())
        detail::fail("train::table_publisher: changed[", i, "] = ", changed[i], " is outside [0, ", rows.rows(), ")");
    auto next = make_version(rows.rows(), rows.cols());
    next->blocks_ = current_->blocks_;  // 8 bytes per block, no reference counts
    // A block is copied once even when several of its rows changed: mark blocks first.
    marks_.assign((next->blocks_.size() + 63) / 64, 0);
    publish_stats s;
    s.version = next->version_;
    s.changed_rows = changed.size();
    std::vector<std::pair<const float*, std::uint64_t>> replaced;
    replaced.reserve(std::min(changed.size(), next->blocks_.size()));
    for (std::size_t r : changed) {
      const std::size_t b = r / o_.block_rows;
      std::uint64_t& word = marks_[b / 64];
      const std::uint64_t bit = std::uint64_t{1} << (b % 64);
      if (word & bit) continue;
      word |= bit;
      replaced.emplace_back(next->blocks_[b], births_[b]);
      next->blocks_[b] = fill_block(rows, b);
      births_[b] = next->version_;
      ++s.copied_blocks;
      s.copied_bytes += block_row_count(rows.rows(), b) * rows.cols() * sizeof(float);
    }
    s.shared_blocks = next->blocks_.size() - s.copied_blocks;
    s.pointer_bytes = next->blocks_.capacity() * sizeof(table_version::block);
    return install(std::move(next), std::move(replaced), s, start);
  }

  //! A full copy as the next version (first publication, or after rows changed untracked).
  std::shared_ptr<const table_version> publish_all(matrix_view<const float> rows) {
    const auto start = std::chrono::steady_clock::now();
    check_shape(rows.rows(), rows.cols(), "rows");
    auto next = make_version(rows.rows(), rows.cols());
    const std::size_t blocks = (rows.rows() + o_.block_rows - 1) / o_.block_rows;
    std::vector<std::pair<const float*, std::uint64_t>> replaced;
    if (current_) {
      replaced.reserve(blocks);
      for (std::size_t b = 0; b < blocks; ++b) replaced.emplace_back(current_->blocks_[b], births_[b]);
    }
    next->blocks_.resize(blocks);
    for (std::size_t b = 0; b < blocks; ++b) next->blocks_[b] = fill_block(rows, b);
    births_.assign(blocks, next->version_);
    publish_stats s;
    s.version = next->version_;
    s.full = true;
    s.changed_rows = rows.rows();
    s.copied_blocks = blocks;
    s.copied_bytes = rows.rows() * rows.cols() * sizeof(float);
    s.pointer_bytes = next->blocks_.capacity() * sizeof(table_version::block);
    return install(std::move(next), std::move(replaced), s, start);
  }

  //! The last version published (null before the first).
  const std::shared_ptr<const table_version>& current() const noexcept { return current_; }
  //! What the last publication did.
  const publish_stats& last_stats() const noexcept { return stats_; }
  const options& settings() const noexcept { return o_; }
  //! Blocks replaced by a publication but still held for an older version that is alive.
  std::size_t retained_blocks() const { return ledger_ ? ledger_->retained_blocks() : 0; }
  //! Blocks freed by released versions, kept for the next publication to reuse (ask from the
  //! publishing thread).
  std::size_t free_blocks() const { return ledger_ ? ledger_->free_blocks() : 0; }

 private:
  std::shared_ptr<table_version> make_version(std::size_t rows, std::size_t dim) {
    if (!ledger_) ledger_ = std::make_shared<impl::block_ledger>(o_.block_rows * dim);
    auto next = std::shared_ptr<table_version>(new table_version());
    next->rows_ = rows;
    next->dim_ = dim;
    next->block_rows_ = o_.block_rows;
    next->version_ = current_ ? current_->version_ + 1 : 1;
    return next;
  }
  std::shared_ptr<const table_version> install(std::shared_ptr<table_version> next,
                                               std::vector<std::pair<const float*, std::uint64_t>> replaced,
                                               publish_stats& s, std::chrono::steady_clock::time_point start) {
    // Registered last: nothing above throws once blocks are taken... except allocation, and a
    // version that never reaches the ledger must not free anything (ledger_ stays null in it).
    next->ledger_ = ledger_;
    ledger_->born(next->version_);
    ledger_->set_newest(next->version_);
    ledger_->retire(next->version_, std::move(replaced));
    current_ = std::move(next);
    // Free blocks beyond what a publication like this one takes stay with the system.
    ledger_->trim(std::max<std::size_t>(s.copied_blocks, 1024));
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    stats_ = s;
    return current_;
  }
  void check_shape(std::size_t rows, std::size_t dim, const char* what) const {
    if (dim == 0) detail::fail("train::table_publisher: ", what, " has 0 columns");
    if (current_ && (rows != current_->rows() || dim != current_->dim()))
      detail::fail("train::table_publisher: ", what, " is ", rows, " x ", dim, " but the published versions are ",
                   current_->rows(), " x ", current_->dim(), " (a publisher serves one table shape)");
  }
  std::size_t block_row_count(std::size_t rows, std::size_t b) const {
    return std::min(o_.block_rows, rows - b * o_.block_rows);
  }
  const float* fill_block(matrix_view<const float> rows, std::size_t b) {
    const std::size_t first = b * o_.block_rows, n = block_row_count(rows.rows(), b), dim = rows.cols();
    float* data = ledger_->take();  // every block is full size, so row_unchecked needs no bound
    if (rows.stride() == dim) {
      std::memcpy(data, rows.row(first).data(), n * dim * sizeof(float));
    } else {
      for (std::size_t i = 0; i < n; ++i) std::memcpy(data + i * dim, rows.row(first + i).data(), dim * sizeof(float));
    }
    if (n < o_.block_rows) std::fill(data + n * dim, data + o_.block_rows * dim, 0.0f);
    return data;
  }

  options o_;
  std::shared_ptr<impl::block_ledger> ledger_;
  std::shared_ptr<const table_version> current_;
  std::vector<std::uint64_t> births_;  // the version that made each block of current_
  publish_stats stats_;
  std::vector<std::uint64_t> marks_;
};

//! @brief A table_version read by the `lookup` stage as a feature store: `Key` holds the ids
//! (`col::user_id`, or `col::candidates` for item features) and `Value` is the vector column the
//! lookup writes (`col::user_embedding`, `col::item_embedding`, ...). Id i reads row i; other ids
//! follow the on_missing policy (zeros, or a recpipe::error naming the id).
//!
//! Holds its version by shared_ptr, so the rows stay alive while a pipeline holds the store;
//! make a new store (cheap: one pointer) for each new version, e.g. in the slot the trainer
//! publishes. Any number of threads may look up at once.
//! @code
//! recpipe::train::table_version_store<recpipe::col::user_id, recpipe::col::user_embedding> users(v2);
//! auto pipeline = recpipe::lookup(users) >> ...;
//! @endcode
template <column Key, column Value>
class table_version_store {
  static constexpr bool keyed_by_candidates = std::is_same_v<Key, col::candidates>;
  // READ THIS IF YOUR COMPILE BREAKS HERE: a table version holds float vectors; the key must be an
  // id column (per request) or col::candidates with a per-candidate vector value.
  static_assert(std::is_same_v<typename Key::value_type, id_type> &&
                    (Key::shape == column_shape::per_request || keyed_by_candidates),
                "recpipe: STORE_KEY_NOT_AN_ID_COLUMN - the key column must be a per-request id column or col::candidates");
  static_assert(std::is_same_v<typename Value::value_type, float> &&
                    (Value::shape == column_shape::per_request_vector || Value::shape == column_shape::per_candidate_vector),
                "recpipe: STORE_VALUE_NOT_A_FLOAT_VECTOR - a table version serves float vector columns");
  static_assert(keyed_by_candidates == is_per_candidate_v<Value>,
                "recpipe: LOOKUP_SHAPE_MISMATCH - a store keyed by col::candidates must hold a per-candidate column, and "
                "a store keyed by a per-request id must hold a per-request column");

 public:
  using key_column = Key;
  using value_column = Value;
  using value_type = float;
  static constexpr bool holds_vectors = true;
  static constexpr bool holds_lists = false;

  //! @throws recpipe::error if `version` is null.
  explicit table_version_store(std::shared_ptr<const table_version> version, on_missing missing = on_missing::use_default)
      : version_(std::move(version)), missing_(missing) {
    if (!version_) detail::fail("train::table_version_store<", Value::name, ">: the table version is null");
  }

  std::size_t dim() const noexcept { return version_->dim(); }
  std::size_t size() const noexcept { return version_->rows(); }
  on_missing missing_policy() const noexcept { return missing_; }
  const std::shared_ptr<const table_version>& version() const noexcept { return version_; }

  bool contains(id_type id) const noexcept { return version_->contains(id); }
  //! Row `id`, or an empty span when the id is outside [0, size()).
  std::span<const float> find(id_type id) const noexcept {
    if (!version_->contains(id)) return {};
    return version_->row_unchecked(static_cast<std::size_t>(id));
  }
  //! find() applying the missing-id policy: an empty span (use_default) or an error (fail).
  std::span<const float> find_or_apply_policy(id_type id) const {
    if (version_->contains(id)) return version_->row_unchecked(static_cast<std::size_t>(id));
    if (missing_ == on_missing::fail)
      detail::fail("lookup: id ", id, " is not in the table version ", version_->version(), " for column '",
                   Value::name, "' (rows [0, ", version_->rows(), "))");
    return {};
  }

 private:
  std::shared_ptr<const table_version> version_;
  on_missing missing_;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
