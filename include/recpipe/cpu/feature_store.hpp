// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: an in-memory feature store keyed by user or item id.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <shared_mutex>  // std::shared_lock
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

// A reader-writer lock for short critical sections (copying one row): readers pay two atomic
// adds on the shard's own cache line and never enter the kernel (std::shared_mutex costs about
// twice as much per row); a writer blocks new readers first (bit 0), so a stream of lookups
// cannot starve it, then waits for the readers inside to finish their copy. Writers are
// serialised by a std::mutex. Meets the SharedMutex requirements (std::shared_lock/unique_lock).
class row_lock {
 public:
  void lock_shared() noexcept {
    for (;;) {
      if ((state_.fetch_add(2, std::memory_order_acquire) & 1u) == 0) return;
      state_.fetch_sub(2, std::memory_order_relaxed);  // a writer is in or waiting: back off
      for (unsigned spins = 0; state_.load(std::memory_order_relaxed) & 1u; ++spins) backoff(spins);
    }
  }
  void unlock_shared() noexcept { state_.fetch_sub(2, std::memory_order_release); }
  void lock() {
    writers_.lock();
    state_.fetch_or(1u, std::memory_order_acquire);
    // Readers inside finish one row copy (well under a microsecond): spin rather than yield, so
    // that a loaded machine does not deschedule the writer while it holds back every reader.
    for (unsigned spins = 0; state_.load(std::memory_order_acquire) != 1u; ++spins) backoff(spins);
  }
  void unlock() noexcept {
    state_.fetch_and(~1u, std::memory_order_release);
    writers_.unlock();
  }

 private:
  // Busy-wait with the CPU's pause hint first; yield only after ~10 us (a descheduled thread).
  static void backoff(unsigned spins) noexcept {
    if (spins < 4096) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }

  std::atomic<std::uint32_t> state_{0};  // bit 0: a writer holds or waits; the rest: 2 x readers inside
  std::mutex writers_;
};

}  // namespace detail

//! What `lookup` does with an id the store does not hold.
enum class on_missing {
  use_default,  //!< zeros for vectors and values, an empty list for lists (documented, counted)
  fail,         //!< throw recpipe::error naming the id and the store's column
};

namespace detail {
//! The key and value columns a feature store may have (every store type checks them here: the
//! in-memory feature_store, io::redis_feature_store), and what the lookup stage reads of them.
template <column Key, column Value>
struct store_columns {
  static constexpr bool keyed_by_candidates = std::is_same_v<Key, col::candidates>;
  // READ THIS IF YOUR COMPILE BREAKS HERE: per-request keys (user_id) give per-request values;
  // the candidates column gives per-candidate values.
  static_assert(std::is_same_v<typename Key::value_type, id_type> &&
                    (Key::shape == column_shape::per_request || keyed_by_candidates),
                "recpipe: STORE_KEY_NOT_AN_ID_COLUMN - the key column must be a per-request id column or col::candidates");
  static_assert(keyed_by_candidates == is_per_candidate_v<Value>,
                "recpipe: LOOKUP_SHAPE_MISMATCH - a store keyed by col::candidates must hold a per-candidate column, and "
                "a store keyed by a per-request id must hold a per-request column");
  static constexpr bool holds_vectors =
      Value::shape == column_shape::per_request_vector || Value::shape == column_shape::per_candidate_vector;
  static constexpr bool holds_lists = Value::shape == column_shape::per_request_list;
};
}  // namespace detail

//! @brief Features keyed by id, read by the `lookup` stage: `Key` is the column holding the ids
//! (`col::user_id` for per-request features, `col::candidates` for per-item features) and `Value`
//! is the column the lookup writes.
//!
//! Value shapes: a vector per id (per_request_vector / per_candidate_vector, fixed `dim`), a list
//! per id (per_request_list, e.g. a user's history, which `append` grows one click at a time), or
//! one value per id. Ids are spread over 64 shards (id mod 64); within a shard, ids below 2^24
//! are found through a direct table (one load), others through a hash map.
//!
//! **Thread safety** (updating features while pipelines serve): `insert`, `append`, `read`,
//! `read_into`, `contains`, `size` and the `lookup` stage may all run at the same time from any
//! number of threads. Each shard has a reader-writer lock: writers hold it exclusively while they
//! change a row, readers hold it shared while they *copy* a row out (`read_into`, `read`, which
//! the `lookup` stage uses), so a reader sees a row either entirely before or entirely after a
//! write, never a mix. Writers to different shards do not wait for each other. `find` and
//! `find_or_apply_policy` return spans into the store: they are valid only until the next write
//! to the store, so use them only when no writer runs (build, then serve).
//!
//! @code
//! recpipe::feature_store<recpipe::col::user_id, recpipe::col::user_embedding> users(64);
//! users.insert(7, std::span<const float>(vector_of_64_floats));
//! auto pipeline = recpipe::lookup(users) >> ...;
//! // later, while the pipeline serves, from a trainer thread:
//! users.insert(7, std::span<const float>(updated_vector));
//! @endcode
template <column Key, column Value>
class feature_store {
  using columns_checked = detail::store_columns<Key, Value>;

 public:
  using key_column = Key;
  using value_column = Value;
  using value_type = typename Value::value_type;
  static constexpr bool holds_vectors = columns_checked::holds_vectors;
  static constexpr bool holds_lists = columns_checked::holds_lists;

  //! @param dim     width of each vector (ignored for lists and single values; must be >= 1 for vectors)
  //! @param missing what lookups do with unknown ids
  explicit feature_store(std::size_t dim = 1, on_missing missing = on_missing::use_default)
      : dim_(holds_vectors ? dim : 1), missing_(missing), shards_(std::make_unique<shard[]>(shard_count)) {
    if (holds_vectors && dim == 0) detail::fail("feature_store<", Value::name, ">: dim must be at least 1");
  }
  feature_store(feature_store&& other) noexcept
      : dim_(other.dim_), missing_(other.missing_), count_(other.count_.load()), shards_(std::move(other.shards_)) {}
  feature_store& operator=(feature_store&& other) noexcept {
    dim_ = other.dim_;
    missing_ = other.missing_;
    count_.store(other.count_.load());
    shards_ = std::move(other.shards_);
    return *this;
  }

  std::size_t dim() const { return dim_; }
  //! Number of ids held (safe while writers run).
  std::size_t size() const { return count_.load(std::memory_order_acquire); }
  on_missing missing_policy() const { return missing_; }

  //! Inserts or replaces the features of `id` (a vector of dim() values, or a list). Safe while
  //! lookups read the store: they see the old or the new row, never a mix.
  //! @throws recpipe::error for a negative id or a vector of the wrong width.
  //! @code users.insert(7, std::span<const float>(vector)); @endcode
  void insert(id_type id, std::span<const value_type> values) {
    static_assert(holds_vectors || holds_lists, "recpipe: STORE_HOLDS_SINGLE_VALUES - use insert(id, value)");
    if constexpr (holds_vectors) {
      if (values.size() != dim_)
        detail::fail("feature_store<", Value::name, ">: id ", id, " has ", values.size(), " values but the store's dim is ", dim_);
    }
    check_id(id);
    shard& sh = shard_of(id);
    const std::unique_lock lock(sh.mutex);
    const std::size_t slot = slot_for_insert(sh, id);
    if constexpr (holds_vectors) {
      std::copy(values.begin(), values.end(), sh.data.begin() + static_cast<std::ptrdiff_t>(slot * dim_));
    } else {
      sh.lists[slot].assign(values.begin(), values.end());
    }
  }
  void insert(id_type id, std::initializer_list<value_type> values) { insert(id, std::span<const value_type>(values.begin(), values.size())); }
  //! Inserts or replaces the single value of `id` (safe while lookups read).
  //! @code seeds.insert(3, std::uint64_t{99}); @endcode
  void insert(id_type id, const value_type& value) {
    static_assert(!holds_vectors && !holds_lists, "recpipe: STORE_HOLDS_VECTORS - use insert(id, span)");
    check_id(id);
    shard& sh = shard_of(id);
    const std::unique_lock lock(sh.mutex);
    sh.data[slot_for_insert(sh, id)] = value;
  }

  //! @brief Appends one value to the list of `id` (a new id starts with an empty list): a user's
  //! history grows by one click. Amortised O(1); safe while lookups read the store.
  //! @throws recpipe::error for a negative id.
  //! @code histories.append(user, clicked_item); @endcode
  void append(id_type id, const value_type& value) {
    static_assert(holds_lists, "recpipe: STORE_HOLDS_NO_LISTS - append is for list stores (e.g. col::history)");
    check_id(id);
    shard& sh = shard_of(id);
    const std::unique_lock lock(sh.mutex);
    sh.lists[slot_for_insert(sh, id)].push_back(value);
  }

  //! True if `id` is held (safe while writers run). @code if (users.contains(7)) { ... } @endcode
  bool contains(id_type id) const {
    if (id < 0) return false;
    const shard& sh = shard_of(id);
    const std::shared_lock lock(sh.mutex);
    return slot_of(sh, id) != npos;
  }

  //! @brief Calls `visit(std::span<const value_type>)` with the row of `id` while holding its
  //! shard's shared lock (copy what you need inside `visit`; do not call back into the store).
  //! @return false, without calling `visit`, when the id is unknown.
  //! @code histories.read(user, [&](std::span<const recpipe::id_type> h) { seen.assign(h.begin(), h.end()); }); @endcode
  template <class Visit>
  bool read(id_type id, Visit&& visit) const {
    if (id < 0) return false;
    const shard& sh = shard_of(id);
    const std::shared_lock lock(sh.mutex);
    const std::size_t slot = slot_of(sh, id);
    if (slot == npos) return false;
    visit(row_of(sh, slot));
    return true;
  }

  //! @brief Copies the vector (or single value) of `id` into `out` (dim() values), consistently
  //! even while writers run. @return false, leaving `out` unchanged, when the id is unknown.
  //! @throws recpipe::error if `out` holds fewer than dim() values.
  //! @code std::vector<float> v(users.dim()); bool found = users.read_into(7, v); @endcode
  bool read_into(id_type id, std::span<value_type> out) const {
    static_assert(!holds_lists, "recpipe: STORE_HOLDS_LISTS - lists vary in length: use read(id, visit)");
    if (out.size() < dim_)
      detail::fail("feature_store<", Value::name, ">: read_into: output holds ", out.size(), " values but dim is ", dim_);
    return read(id, [&](std::span<const value_type> row) { std::copy(row.begin(), row.end(), out.begin()); });
  }

  //! @brief `read` applying the missing-id policy: an unknown id calls `visit` with an empty span
  //! (use_default) or throws (fail). Used by the `lookup` stage.
  //! @throws recpipe::error naming the id and the column under on_missing::fail.
  template <class Visit>
  void read_or_apply_policy(id_type id, Visit&& visit) const {
    if (read(id, visit)) return;
    if (missing_ == on_missing::fail)
      detail::fail("lookup: id ", id, " is not in the feature store for column '", Value::name, "'");
    visit(std::span<const value_type>{});
  }

  //! The vector or list of `id`; an empty span when the id is unknown. The span points into the
  //! store: valid until the next write, so not for use while writers run (use `read`/`read_into`).
  std::span<const value_type> find(id_type id) const {
    if (id < 0) return {};
    const shard& sh = shard_of(id);
    const std::shared_lock lock(sh.mutex);
    const std::size_t slot = slot_of(sh, id);
    if (slot == npos) return {};
    return row_of(sh, slot);
  }

  //! @brief Calls `visit(id, std::span<const value_type>)` for every id held, in no particular
  //! order, each shard under its shared lock (a row is never seen half-written; an id inserted
  //! meanwhile may or may not be visited). Do not call back into the store from `visit`. Used to
  //! snapshot a store, e.g. into a cuda::device_feature_table.
  //! @code
  //! std::size_t held = 0;
  //! users.for_each([&](recpipe::id_type, std::span<const float>) { ++held; });
  //! @endcode
  template <class Visit>
  void for_each(Visit&& visit) const {
    for (std::size_t s = 0; s < shard_count; ++s) {
      const shard& sh = shards_[s];
      const std::shared_lock lock(sh.mutex);
      for (std::size_t at = 0; at < sh.direct.size(); ++at)
        if (sh.direct[at] != unused) visit(static_cast<id_type>((at << shard_bits) | s), row_of(sh, sh.direct[at]));
      for (const auto& [id, slot] : sh.hashed) visit(id, row_of(sh, slot));
    }
  }

  //! Like find(), applying the missing-id policy: an empty span (use_default) or an error (fail).
  //! Same validity rule as find().
  std::span<const value_type> find_or_apply_policy(id_type id) const {
    auto found = find(id);
    if (found.empty() && missing_ == on_missing::fail && !contains(id))
      detail::fail("lookup: id ", id, " is not in the feature store for column '", Value::name, "'");
    return found;
  }

 private:
  static constexpr std::size_t npos = std::numeric_limits<std::size_t>::max();
  static constexpr unsigned shard_bits = 6;
  static constexpr std::size_t shard_count = std::size_t{1} << shard_bits;
  static constexpr id_type direct_limit = id_type{1} << 24;  // 64 MiB of slots at most over all shards
  static constexpr std::uint32_t unused = std::numeric_limits<std::uint32_t>::max();

  // One shard: its own lock and storage, so a write blocks only the readers of its shard, and
  // growing one shard's arrays never moves rows that readers of other shards are copying.
  struct alignas(64) shard {  // own cache line: readers of one shard do not slow another's
    mutable detail::row_lock mutex;
    std::vector<std::uint32_t> direct;  // (id >> shard_bits) -> slot, for id < direct_limit
    std::unordered_map<id_type, std::size_t> hashed;
    std::vector<value_type> data;  // vectors: slot * dim; single values: slot
    std::vector<std::vector<value_type>> lists;
    std::size_t count = 0;
  };

  void check_id(id_type id) const {
    if (id < 0) detail::fail("feature_store<", Value::name, ">: id ", id, " is negative; ids must be >= 0");
  }
  shard& shard_of(id_type id) { return shards_[static_cast<std::size_t>(id) & (shard_count - 1)]; }
  const shard& shard_of(id_type id) const { return shards_[static_cast<std::size_t>(id) & (shard_count - 1)]; }

  std::span<const value_type> row_of(const shard& sh, std::size_t slot) const {
    if constexpr (holds_vectors) return {sh.data.data() + slot * dim_, dim_};
    else if constexpr (holds_lists) return {sh.lists[slot].data(), sh.lists[slot].size()};
    else return {sh.data.data() + slot, 1};
  }

  // Caller holds the shard's lock (shared or exclusive); id >= 0.
  static std::size_t slot_of(const shard& sh, id_type id) {
    if (id < direct_limit) {
      const auto at = static_cast<std::size_t>(id) >> shard_bits;
      return at < sh.direct.size() && sh.direct[at] != unused ? sh.direct[at] : npos;
    }
    const auto it = sh.hashed.find(id);
    return it == sh.hashed.end() ? npos : it->second;
  }

  // Caller holds the shard's exclusive lock; id >= 0.
  std::size_t slot_for_insert(shard& sh, id_type id) {
    if (const std::size_t existing = slot_of(sh, id); existing != npos) return existing;
    const std::size_t slot = sh.count;
    if (id < direct_limit) {
      const auto at = static_cast<std::size_t>(id) >> shard_bits;
      if (at >= sh.direct.size()) sh.direct.resize(std::max(at + 1, sh.direct.size() * 2), unused);
      sh.direct[at] = static_cast<std::uint32_t>(slot);
    } else {
      sh.hashed.emplace(id, slot);
    }
    if constexpr (holds_vectors) sh.data.resize((slot + 1) * dim_);
    else if constexpr (holds_lists) sh.lists.emplace_back();
    else sh.data.resize(slot + 1);
    ++sh.count;
    count_.fetch_add(1, std::memory_order_acq_rel);
    return slot;
  }

  std::size_t dim_;
  on_missing missing_;
  std::atomic<std::size_t> count_{0};
  std::unique_ptr<shard[]> shards_;
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
