// SPDX-License-Identifier: Apache-2.0
// recpipe io: a feature store over Redis (hiredis), read by the `lookup` stage like feature_store.
// Needs hiredis: link recpipe::redis (CMake) or -lhiredis.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <pthread.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/feature_store.hpp>  // on_missing

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! Settings of a redis_feature_store. Durations of zero disable what they bound.
struct redis_store_options {
  std::string host = "127.0.0.1";
  int port = 6379;
  int database = 0;                //!< SELECT this database after connecting (0: the default one)
  std::string prefix;              //!< keys are "<prefix>:<id>"; empty: the value column's name
  std::chrono::milliseconds connect_timeout{100};  //!< redisConnectWithTimeout
  std::chrono::milliseconds command_timeout{50};   //!< per socket read/write (redisSetTimeout)
  std::size_t connections = 4;     //!< pool size: lookups running at once on different connections
  std::chrono::milliseconds cache_ttl{1000};       //!< how long a read value is served locally; 0: no cache
  std::size_t cache_capacity = 100000;             //!< ids held in the local cache at most; 0: no cache
  std::chrono::milliseconds backoff_min{10};       //!< first wait after a failure before Redis is tried again
  std::chrono::milliseconds backoff_max{1000};     //!< the wait doubles per failure up to this
  //! What a lookup does when Redis cannot answer (down, slow, error reply): serve the store's
  //! defaults for the ids it could not read (use_default, counted in `fallbacks`) or throw (fail).
  on_missing when_unavailable = on_missing::use_default;
};

//! Counters of a redis_feature_store (a snapshot; see redis_feature_store::metrics()).
struct redis_store_metrics {
  std::uint64_t batches = 0;       //!< lookup_batch calls with at least one id
  std::uint64_t ids = 0;           //!< ids looked up
  std::uint64_t cache_hits = 0;    //!< ids served from the local cache
  std::uint64_t cache_misses = 0;  //!< ids asked of Redis
  std::uint64_t round_trips = 0;   //!< MGET round trips that got an answer
  std::uint64_t missing = 0;       //!< ids Redis does not hold (and malformed values)
  std::uint64_t malformed = 0;     //!< values of the wrong byte length, treated as missing
  std::uint64_t fallbacks = 0;     //!< ids served defaults because Redis could not answer
  std::uint64_t errors = 0;        //!< failed connects, I/O errors and error replies (timeouts not included)
  std::uint64_t timeouts = 0;      //!< connects or commands that ran past their timeout
  std::uint64_t skipped = 0;       //!< batches not sent because Redis was backing off after a failure
  std::uint64_t reconnects = 0;    //!< connections (re)established
};

namespace detail {
// hiredis writes with write(2): a peer that closed its socket raises SIGPIPE, which kills a
// process by default. Block it on this thread for the call and swallow one raised meanwhile,
// without touching the process-wide disposition that the application owns.
class sigpipe_guard {
 public:
  sigpipe_guard() {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, &old_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~sigpipe_guard() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        const timespec zero{};
        sigtimedwait(&pipe, nullptr, &zero);
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  sigpipe_guard(const sigpipe_guard&) = delete;
  sigpipe_guard& operator=(const sigpipe_guard&) = delete;

 private:
  sigset_t old_{};
  bool was_pending_ = false;
};

inline timeval to_timeval(std::chrono::milliseconds ms) {
  const auto count = std::max<std::int64_t>(ms.count(), 1);
  return timeval{static_cast<time_t>(count / 1000), static_cast<suseconds_t>((count % 1000) * 1000)};
}

// hiredis 0.14 reports a socket timeout as REDIS_ERR_IO with EAGAIN; 1.x has REDIS_ERR_TIMEOUT.
inline bool redis_timed_out(const redisContext* context, int saved_errno) {
#ifdef REDIS_ERR_TIMEOUT
  if (context->err == REDIS_ERR_TIMEOUT) return true;
#endif
  if (context->err != REDIS_ERR_IO) return false;
  if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT || saved_errno == EINPROGRESS)
    return true;
  const std::string_view text(context->errstr);
  return text.find("temporarily unavailable") != std::string_view::npos || text.find("timed out") != std::string_view::npos;
}

struct redis_reply_deleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using redis_reply_ptr = std::unique_ptr<redisReply, redis_reply_deleter>;
}  // namespace detail

//! @brief Features keyed by id in Redis, read by the `lookup` stage exactly like feature_store:
//! `Key` is the id column (`col::user_id`, or `col::candidates` for item features), `Value` the
//! column the lookup writes (a vector, a list or one value per id).
//!
//! Layout: each id's value is one Redis string under `<prefix>:<id>` (decimal id), holding the raw
//! little-endian bytes of its values: dim() float32 values for a vector column (numpy's
//! `vector.astype('<f4').tobytes()`), any number of int64 ids for a list column, one value for a
//! single-value column.
//!
//! Reads: lookup_batch() serves the ids it finds in a small local cache (time-to-live and size
//! bound) and asks Redis for all the others with one MGET: one round trip per batch.
//!
//! When Redis is slow or down the request is still served: the ids it could not read get the
//! store's defaults (zeros, an empty list), counted in metrics().fallbacks, with `timeouts` or
//! `errors` counting the failure; after a failure Redis is not asked again for backoff_min
//! (doubling per failure up to backoff_max; those batches count as `skipped` and fall back at
//! once), then the next batch reconnects. Only `when_unavailable = on_missing::fail` makes a
//! lookup throw for an unavailable Redis. A batch waits at most about connect_timeout +
//! command_timeout per socket operation.
//!
//! Bad values: a value of the wrong byte length (another writer) is treated as missing and counted
//! in `malformed`; ids Redis does not hold follow the store's on_missing policy like feature_store
//! (zeros / an empty list, or a recpipe::error naming the id). Negative ids are never stored.
//!
//! Thread safety: any number of threads may call lookup_batch() and the writers at once. Each call
//! borrows one of `connections` hiredis connections (a free one if any, else it waits for one);
//! the cache is split into shards with their own locks; the counters are atomics.
//!
//! @code
//! recpipe::redis_store_options options;
//! options.port = 6379;
//! recpipe::redis_feature_store<recpipe::col::user_id, recpipe::col::user_embedding> users(64, options);
//! users.put(7, std::span<const float>(vector_of_64_floats));
//! auto pipeline = recpipe::lookup(users) >> recpipe::retrieve<recpipe::col::user_embedding>(index, 100);
//! @endcode
template <column Key, column Value>
class redis_feature_store {
  using columns_checked = detail::store_columns<Key, Value>;  // the same column rules as feature_store
  static_assert(std::is_trivially_copyable_v<typename Value::value_type>,
                "recpipe: REDIS_VALUE_NOT_TRIVIALLY_COPYABLE - Redis values are the raw bytes of the column's values");
  static_assert(std::endian::native == std::endian::little,
                "recpipe: REDIS_STORE_NEEDS_LITTLE_ENDIAN - values are stored as little-endian bytes");

 public:
  using key_column = Key;
  using value_column = Value;
  using value_type = typename Value::value_type;
  using clock = std::chrono::steady_clock;
  static constexpr bool holds_vectors = columns_checked::holds_vectors;
  static constexpr bool holds_lists = columns_checked::holds_lists;

  //! @param dim     width of each vector (ignored for lists and single values; must be >= 1 for vectors)
  //! @param options where Redis is, timeouts, cache and fallback (see redis_store_options)
  //! @param missing what lookups do with ids Redis does not hold
  //! Connects lazily: constructing a store never fails because Redis is down.
  //! @throws recpipe::error for dim 0 with a vector column, 0 connections or a port outside 1..65535.
  explicit redis_feature_store(std::size_t dim, redis_store_options options = {},
                               on_missing missing = on_missing::use_default)
      : dim_(holds_vectors ? dim : 1), missing_(missing), options_(std::move(options)),
        connections_(options_.connections) {
    if (holds_vectors && dim == 0) detail::fail("redis_feature_store<", Value::name, ">: dim must be at least 1");
    if (options_.connections == 0) detail::fail("redis_feature_store<", Value::name, ">: connections must be at least 1");
    if (options_.port <= 0 || options_.port > 65535)
      detail::fail("redis_feature_store<", Value::name, ">: port ", options_.port, " is outside 1..65535");
    if (options_.prefix.empty()) options_.prefix = std::string(Value::name);
    if (options_.backoff_max < options_.backoff_min) options_.backoff_max = options_.backoff_min;
    backoff_ns_.store(std::chrono::nanoseconds(options_.backoff_min).count(), std::memory_order_relaxed);
    const std::size_t per_shard = (options_.cache_capacity + cache_shards - 1) / cache_shards;
    cache_enabled_ = options_.cache_ttl.count() > 0 && options_.cache_capacity > 0;
    for (auto& shard : shards_) shard.capacity = std::max<std::size_t>(per_shard, 1);
  }
  redis_feature_store(const redis_feature_store&) = delete;
  redis_feature_store& operator=(const redis_feature_store&) = delete;

  std::size_t dim() const { return dim_; }
  on_missing missing_policy() const { return missing_; }
  const redis_store_options& options() const { return options_; }
  //! The Redis key of `id`: "<prefix>:<id>".
  std::string key_of(id_type id) const { return options_.prefix + ":" + std::to_string(id); }

  //! @brief Reads the features of `keys` into `out` (what the lookup stage calls once per batch):
  //! a matrix of keys.size() x dim() rows, a ragged list with one row per key, or one value per key.
  //! Unknown ids follow on_missing; ids Redis could not answer for follow `when_unavailable`.
  //! `defaulted`, when given, is resized to keys.size() and set to 1 where the id got the default
  //! value (unknown, malformed or unavailable), 0 where its stored value was read (what
  //! `lookup(store).flag_missing()` reports).
  //! @code
  //! recpipe::matrix<float> rows;
  //! users.lookup_batch(std::vector<recpipe::id_type>{7, 8}, rows);  // rows is 2 x 64
  //! @endcode
  void lookup_batch(std::span<const id_type> keys, column_storage_t<Value>& out,
                    std::vector<std::uint8_t>* defaulted = nullptr) const {
    const std::size_t n = keys.size();
    // Where each id's bytes come from: the cache (kept alive by `held`), a reply, or nowhere.
    struct source {
      const char* bytes = nullptr;
      std::size_t count = 0;  // values, not bytes
      bool found = false;
    };
    std::vector<source> sources(n);
    std::vector<std::shared_ptr<const std::vector<value_type>>> held;
    std::vector<std::size_t> ask;  // positions to read from Redis
    ask.reserve(n);
    if (n != 0) {
      batches_.fetch_add(1, std::memory_order_relaxed);
      ids_.fetch_add(n, std::memory_order_relaxed);
    }

    const auto now = clock::now();
    std::uint64_t hits = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (keys[i] < 0) continue;  // never stored: missing
      if (cache_enabled_) {
        if (auto cached = cache_get(keys[i], now)) {
          ++hits;
          if (*cached) {
            sources[i] = {reinterpret_cast<const char*>((*cached)->data()), (*cached)->size(), true};
            held.push_back(std::move(*cached));
          }
          continue;
        }
      }
      ask.push_back(i);
    }
    cache_hits_.fetch_add(hits, std::memory_order_relaxed);

    detail::redis_reply_ptr reply;
    bool answered = ask.empty();
    if (!ask.empty()) {
      cache_misses_.fetch_add(ask.size(), std::memory_order_relaxed);
      reply = read_many(keys, ask);
      answered = reply != nullptr;
    }

    std::uint64_t missing = 0, malformed = 0;
    if (answered && reply) {
      for (std::size_t j = 0; j < ask.size(); ++j) {
        const std::size_t i = ask[j];
        const redisReply* element = reply->element[j];
        std::shared_ptr<const std::vector<value_type>> to_cache;
        if (element->type == REDIS_REPLY_STRING) {
          const auto bytes = static_cast<std::size_t>(element->len);
          if (well_formed(bytes)) {
            sources[i] = {element->str, bytes / sizeof(value_type), true};
            if (cache_enabled_) {
              auto copy = std::make_shared<std::vector<value_type>>(bytes / sizeof(value_type));
              if (bytes != 0) std::memcpy(copy->data(), element->str, bytes);
              to_cache = std::move(copy);
              cache_put(keys[i], std::move(to_cache), now);
            }
            continue;
          }
          ++malformed;  // not cached: the writer may fix it
          continue;
        }
        if (cache_enabled_) cache_put(keys[i], nullptr, now);  // absent: remember that too
      }
    }
    if (malformed != 0) malformed_.fetch_add(malformed, std::memory_order_relaxed);
    if (!answered) {
      fallbacks_.fetch_add(ask.size(), std::memory_order_relaxed);
      if (options_.when_unavailable == on_missing::fail)
        detail::fail("redis_feature_store<", Value::name, ">: Redis at ", options_.host, ":", options_.port,
                     " could not be read (", last_failure(), "); ", ask.size(), " ids not served (when_unavailable = fail)");
    }
    // Ids Redis answered for without a usable value, and negative ids.
    std::vector<char> unavailable;
    if (!answered) {
      unavailable.assign(n, 0);
      for (const std::size_t i : ask) unavailable[i] = 1;
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (sources[i].found || (!unavailable.empty() && unavailable[i])) continue;
      ++missing;
      if (missing_ == on_missing::fail)
        detail::fail("lookup: id ", keys[i], " is not in the Redis feature store for column '", Value::name, "' (key '",
                     key_of(keys[i]), "')");
    }
    if (missing != 0) missing_count_.fetch_add(missing, std::memory_order_relaxed);

    if (defaulted != nullptr) {
      defaulted->resize(n);
      for (std::size_t i = 0; i < n; ++i) (*defaulted)[i] = sources[i].found ? 0 : 1;
    }
    // Copy into the column in key order.
    if constexpr (holds_vectors) {
      out.resize(n, dim_);
      for (std::size_t i = 0; i < n; ++i) {
        auto row = out.row(i);
        if (sources[i].found) std::memcpy(row.data(), sources[i].bytes, dim_ * sizeof(value_type));
        else std::fill(row.begin(), row.end(), value_type{});
      }
    } else if constexpr (holds_lists) {
      std::size_t total = 0;
      for (const auto& s : sources) total += s.count;
      out.clear();
      out.reserve(n, total);
      std::vector<value_type> row;
      for (std::size_t i = 0; i < n; ++i) {
        row.resize(sources[i].count);
        if (!row.empty()) std::memcpy(row.data(), sources[i].bytes, row.size() * sizeof(value_type));
        out.push_row(std::span<const value_type>(row));
      }
    } else {
      out.assign(n, value_type{});
      for (std::size_t i = 0; i < n; ++i)
        if (sources[i].found) std::memcpy(&out[i], sources[i].bytes, sizeof(value_type));
    }
  }

  //! Writes the features of `id` (dim() values for a vector column, any number for a list, one
  //! for a single-value column) and drops it from this store's cache (other processes' caches
  //! see it after their cache_ttl).
  //! @throws recpipe::error for a negative id, a wrong width, or when Redis cannot be written.
  void put(id_type id, std::span<const value_type> values) {
    const id_type ids[1] = {id};
    write(std::span<const id_type>(ids, 1), [&](std::size_t) { return values; });
  }
  void put(id_type id, std::initializer_list<value_type> values) {
    put(id, std::span<const value_type>(values.begin(), values.size()));
  }
  //! Writes the single value of `id` (a single-value column).
  void put(id_type id, const value_type& value)
    requires(!holds_vectors && !holds_lists)
  {
    put(id, std::span<const value_type>(&value, 1));
  }
  //! Writes many ids in one pipelined round trip: `rows` holds ids.size() rows of dim() values
  //! (a vector column) or ids.size() single values.
  //! @code
  //! items.put_many(ids, flat_rows);  // flat_rows.size() == ids.size() * items.dim()
  //! @endcode
  void put_many(std::span<const id_type> ids, std::span<const value_type> rows) {
    static_assert(!holds_lists, "recpipe: STORE_HOLDS_LISTS - use put_many(ids, ragged)");
    if (rows.size() != ids.size() * dim_)
      detail::fail("redis_feature_store<", Value::name, ">::put_many: ", ids.size(), " ids need ", ids.size() * dim_,
                   " values but got ", rows.size());
    write(ids, [&](std::size_t i) { return rows.subspan(i * dim_, dim_); });
  }
  //! Writes one list per id (a list column), in one pipelined round trip.
  void put_many(std::span<const id_type> ids, const ragged<value_type>& lists) {
    static_assert(holds_lists, "recpipe: STORE_HOLDS_NO_LISTS - use put_many(ids, span)");
    if (lists.rows() != ids.size())
      detail::fail("redis_feature_store<", Value::name, ">::put_many: ", ids.size(), " ids but ", lists.rows(), " lists");
    write(ids, [&](std::size_t i) { return lists.row(i); });
  }
  //! Deletes `id` from Redis and from this store's cache.
  void erase(id_type id) {
    const std::string key = key_of(id);
    const char* argv[2] = {"DEL", key.c_str()};
    const std::size_t lengths[2] = {3, key.size()};
    run_writes(1, [&](redisContext* context, std::size_t) { return redisAppendCommandArgv(context, 2, argv, lengths); });
    cache_drop(id);
  }

  //! A snapshot of the counters.
  redis_store_metrics metrics() const {
    redis_store_metrics m;
    m.batches = batches_.load(std::memory_order_relaxed);
    m.ids = ids_.load(std::memory_order_relaxed);
    m.cache_hits = cache_hits_.load(std::memory_order_relaxed);
    m.cache_misses = cache_misses_.load(std::memory_order_relaxed);
    m.round_trips = round_trips_.load(std::memory_order_relaxed);
    m.missing = missing_count_.load(std::memory_order_relaxed);
    m.malformed = malformed_.load(std::memory_order_relaxed);
    m.fallbacks = fallbacks_.load(std::memory_order_relaxed);
    m.errors = errors_.load(std::memory_order_relaxed);
    m.timeouts = timeouts_.load(std::memory_order_relaxed);
    m.skipped = skipped_.load(std::memory_order_relaxed);
    m.reconnects = reconnects_.load(std::memory_order_relaxed);
    return m;
  }
  //! Empties the local cache (e.g. after a bulk write by another process).
  void clear_cache() {
    for (auto& shard : shards_) {
      std::lock_guard lock(shard.mutex);
      shard.entries.clear();
    }
  }
  //! Ids in the local cache now (expired ones included until they are evicted).
  std::size_t cache_size() const {
    std::size_t total = 0;
    for (auto& shard : shards_) {
      std::lock_guard lock(shard.mutex);
      total += shard.entries.size();
    }
    return total;
  }

 private:
  static constexpr std::size_t cache_shards = 16;
  using cached_value = std::shared_ptr<const std::vector<value_type>>;  // null: Redis holds no value

  struct connection {
    std::mutex mutex;
    redisContext* context = nullptr;
    std::uint64_t epoch = 0;  // failure_epoch_ when connected: older connections predate a failure
    ~connection() {
      if (context) redisFree(context);
    }
  };
  struct cache_entry {
    clock::time_point expires;
    cached_value value;
  };
  struct cache_shard {
    mutable std::mutex mutex;
    std::unordered_map<id_type, cache_entry> entries;
    std::size_t capacity = 1;
    clock::time_point last_sweep{};
  };

  bool well_formed(std::size_t bytes) const {
    if constexpr (holds_lists) return bytes % sizeof(value_type) == 0;
    else return bytes == dim_ * sizeof(value_type);
  }

  // --- cache --------------------------------------------------------------------------------
  cache_shard& shard_of(id_type id) const { return shards_[std::hash<id_type>{}(id) % cache_shards]; }

  // The cached value (possibly null: known absent), or nothing when not cached or expired.
  std::optional<cached_value> cache_get(id_type id, clock::time_point now) const {
    auto& shard = shard_of(id);
    std::lock_guard lock(shard.mutex);
    const auto it = shard.entries.find(id);
    if (it == shard.entries.end()) return std::nullopt;
    if (it->second.expires <= now) {
      shard.entries.erase(it);
      return std::nullopt;
    }
    return it->second.value;
  }
  void cache_put(id_type id, cached_value value, clock::time_point now) const {
    auto& shard = shard_of(id);
    std::lock_guard lock(shard.mutex);
    if (shard.entries.size() >= shard.capacity && !shard.entries.contains(id)) {
      // Full: drop expired entries (at most once per quarter TTL, so a full cache of live
      // entries does not rescan per insert), else any one entry.
      if (now - shard.last_sweep >= options_.cache_ttl / 4) {
        std::erase_if(shard.entries, [&](const auto& entry) { return entry.second.expires <= now; });
        shard.last_sweep = now;
      }
      if (shard.entries.size() >= shard.capacity) shard.entries.erase(shard.entries.begin());
    }
    shard.entries[id] = cache_entry{now + options_.cache_ttl, std::move(value)};
  }
  void cache_drop(id_type id) const {
    auto& shard = shard_of(id);
    std::lock_guard lock(shard.mutex);
    shard.entries.erase(id);
  }

  // --- connections ----------------------------------------------------------------------------
  // A free connection if any (starting from this thread's own), else wait for this thread's own.
  std::unique_lock<std::mutex> borrow(connection*& picked) const {
    const std::size_t count = connections_.size();
    const std::size_t home = std::hash<std::thread::id>{}(std::this_thread::get_id()) % count;
    for (std::size_t k = 0; k < count; ++k) {
      auto& candidate = connections_[(home + k) % count];
      std::unique_lock lock(candidate.mutex, std::try_to_lock);
      if (lock.owns_lock()) {
        picked = &candidate;
        return lock;
      }
    }
    picked = &connections_[home];
    return std::unique_lock(picked->mutex);
  }

  // Connects `c` if it has no live context. False (counted) when Redis cannot be reached.
  bool ensure_connected(connection& c) const {
    // After any failure every pooled connection reconnects once: a restarted server has
    // dropped the others' sockets too, and each would otherwise fail one batch of its own.
    const std::uint64_t epoch = failure_epoch_.load(std::memory_order_acquire);
    if (c.context && c.epoch == epoch) return true;
    drop(c);
    const timeval connect_timeout = detail::to_timeval(options_.connect_timeout);
    redisContext* context = redisConnectWithTimeout(options_.host.c_str(), options_.port, connect_timeout);
    const int saved_errno = errno;
    if (!context || context->err) {
      if (context && detail::redis_timed_out(context, saved_errno)) timeouts_.fetch_add(1, std::memory_order_relaxed);
      else errors_.fetch_add(1, std::memory_order_relaxed);
      remember_failure(context ? context->errstr : "out of memory allocating a hiredis context");
      if (context) redisFree(context);
      return false;
    }
    if (redisSetTimeout(context, detail::to_timeval(options_.command_timeout)) != REDIS_OK) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      remember_failure("redisSetTimeout failed");
      redisFree(context);
      return false;
    }
    c.context = context;
    c.epoch = epoch;
    if (options_.database != 0) {
      const std::string db = std::to_string(options_.database);
      const char* argv[2] = {"SELECT", db.c_str()};
      const std::size_t lengths[2] = {6, db.size()};
      detail::redis_reply_ptr reply;
      if (redisAppendCommandArgv(context, 2, argv, lengths) != REDIS_OK || !get_reply(c, reply) ||
          reply->type == REDIS_REPLY_ERROR) {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
          errors_.fetch_add(1, std::memory_order_relaxed);
          remember_failure(std::string_view(reply->str, reply->len));
        }
        drop(c);
        return false;
      }
    }
    reconnects_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  // Reads one reply; on failure counts it, frees the context (its stream is out of step) and
  // starts the backoff.
  bool get_reply(connection& c, detail::redis_reply_ptr& reply) const {
    void* raw = nullptr;
    const int status = redisGetReply(c.context, &raw);
    const int saved_errno = errno;
    if (status != REDIS_OK || raw == nullptr) {
      if (detail::redis_timed_out(c.context, saved_errno)) timeouts_.fetch_add(1, std::memory_order_relaxed);
      else errors_.fetch_add(1, std::memory_order_relaxed);
      remember_failure(c.context->errstr);
      if (raw) freeReplyObject(raw);
      drop(c);
      return false;
    }
    reply.reset(static_cast<redisReply*>(raw));
    return true;
  }
  void drop(connection& c) const {
    if (c.context) redisFree(c.context);
    c.context = nullptr;
  }

  // Backoff shared by all connections: one failure means Redis is down or slow for everyone.
  bool backing_off(clock::time_point now) const {
    return now.time_since_epoch().count() < retry_at_ns_.load(std::memory_order_acquire);
  }
  void remember_failure(std::string_view what) const {
    const auto wait = backoff_ns_.load(std::memory_order_relaxed);
    retry_at_ns_.store((clock::now() + std::chrono::nanoseconds(wait)).time_since_epoch().count(), std::memory_order_release);
    const auto longest = std::chrono::nanoseconds(options_.backoff_max).count();
    backoff_ns_.store(std::min<std::int64_t>(wait * 2, longest), std::memory_order_relaxed);
    failure_epoch_.fetch_add(1, std::memory_order_acq_rel);
    std::lock_guard lock(failure_mutex_);
    last_failure_.assign(what);
  }
  void remember_success() const {
    backoff_ns_.store(std::chrono::nanoseconds(options_.backoff_min).count(), std::memory_order_relaxed);
  }
  std::string last_failure() const {
    std::lock_guard lock(failure_mutex_);
    return last_failure_.empty() ? std::string("backing off after a failure") : last_failure_;
  }

  // One MGET for keys[ask]; null when Redis could not answer (counted).
  detail::redis_reply_ptr read_many(std::span<const id_type> keys, const std::vector<std::size_t>& ask) const {
    if (backing_off(clock::now())) {
      skipped_.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    // "<prefix>:<id>" for every asked id, in one buffer.
    std::string text;
    text.reserve(ask.size() * (options_.prefix.size() + 12));
    std::vector<std::size_t> ends;
    ends.reserve(ask.size());
    for (const std::size_t i : ask) {
      text += options_.prefix;
      text += ':';
      text += std::to_string(keys[i]);
      ends.push_back(text.size());
    }
    std::vector<const char*> argv(ask.size() + 1);
    std::vector<std::size_t> lengths(ask.size() + 1);
    argv[0] = "MGET";
    lengths[0] = 4;
    std::size_t begin = 0;
    for (std::size_t j = 0; j < ask.size(); ++j) {
      argv[j + 1] = text.data() + begin;
      lengths[j + 1] = ends[j] - begin;
      begin = ends[j];
    }

    detail::sigpipe_guard guard;
    connection* c = nullptr;
    auto lock = borrow(c);
    if (backing_off(clock::now())) {  // another thread failed while this one waited
      skipped_.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    if (!ensure_connected(*c)) return nullptr;
    if (redisAppendCommandArgv(c->context, static_cast<int>(argv.size()), argv.data(), lengths.data()) != REDIS_OK) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      remember_failure(c->context->errstr);
      drop(*c);
      return nullptr;
    }
    detail::redis_reply_ptr reply;
    if (!get_reply(*c, reply)) return nullptr;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != ask.size()) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      remember_failure(reply->type == REDIS_REPLY_ERROR ? std::string_view(reply->str, reply->len)
                                                        : std::string_view("MGET answered with something other than an array"));
      return nullptr;
    }
    round_trips_.fetch_add(1, std::memory_order_relaxed);
    remember_success();
    return reply;
  }

  // Pipelines one SET per id (row(i) gives its values) and reads every reply; throws on failure.
  template <class RowOf>
  void write(std::span<const id_type> ids, RowOf row_of) {
    std::vector<std::string> keys(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0) detail::fail("redis_feature_store<", Value::name, ">: id ", ids[i], " is negative; ids must be >= 0");
      const auto values = row_of(i);
      if (!holds_lists && values.size() != dim_)
        detail::fail("redis_feature_store<", Value::name, ">: id ", ids[i], " has ", values.size(),
                     " values but the store's dim is ", dim_);
      keys[i] = key_of(ids[i]);
    }
    run_writes(ids.size(), [&](redisContext* context, std::size_t i) {
      const auto values = row_of(i);
      const char* argv[3] = {"SET", keys[i].c_str(), reinterpret_cast<const char*>(values.data())};
      const std::size_t lengths[3] = {3, keys[i].size(), values.size() * sizeof(value_type)};
      if (values.empty()) argv[2] = "";
      return redisAppendCommandArgv(context, 3, argv, lengths);
    });
    for (const id_type id : ids) cache_drop(id);
  }

  // Pipelines `count` commands and reads their replies; throws on failure. A connection that
  // broke since its last use (server restarted) fails once: the writes are retried on a fresh one
  // (SET and DEL are idempotent).
  template <class Append>
  void run_writes(std::size_t count, Append append) const {
    if (count == 0) return;
    detail::sigpipe_guard guard;
    connection* c = nullptr;
    auto lock = borrow(c);
    std::string what;
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool fresh = c->context == nullptr || c->epoch != failure_epoch_.load(std::memory_order_acquire);
      if (!ensure_connected(*c))
        detail::fail("redis_feature_store<", Value::name, ">: cannot connect to Redis at ", options_.host, ":",
                     options_.port, " (", last_failure(), ")");
      if (try_writes(*c, count, append, what)) {
        remember_success();
        retry_at_ns_.store(0, std::memory_order_release);  // a write that worked ends any backoff
        return;
      }
      if (fresh) break;  // failed on a new connection: Redis itself is failing
    }
    detail::fail("redis_feature_store<", Value::name, ">: writing to Redis at ", options_.host, ":", options_.port,
                 " failed (", what, ")");
  }
  template <class Append>
  bool try_writes(connection& c, std::size_t count, Append& append, std::string& what) const {
    for (std::size_t i = 0; i < count; ++i) {
      if (append(c.context, i) != REDIS_OK) {
        what = c.context->errstr;
        drop(c);
        return false;
      }
    }
    for (std::size_t i = 0; i < count; ++i) {
      detail::redis_reply_ptr reply;
      if (!get_reply(c, reply)) {
        what = last_failure();
        return false;
      }
      if (reply->type == REDIS_REPLY_ERROR) {  // Redis refused (read-only replica, out of memory): not retried
        drop(c);  // replies still pending would put the stream out of step
        detail::fail("redis_feature_store<", Value::name, ">: Redis refused a write: ", std::string_view(reply->str, reply->len));
      }
    }
    return true;
  }

  std::size_t dim_;
  on_missing missing_;
  redis_store_options options_;
  bool cache_enabled_ = false;
  mutable std::vector<connection> connections_;
  mutable std::array<cache_shard, cache_shards> shards_;
  mutable std::atomic<std::int64_t> retry_at_ns_{0}, backoff_ns_{0};
  mutable std::atomic<std::uint64_t> failure_epoch_{0};
  mutable std::mutex failure_mutex_;
  mutable std::string last_failure_;
  mutable std::atomic<std::uint64_t> batches_{0}, ids_{0}, cache_hits_{0}, cache_misses_{0}, round_trips_{0},
      missing_count_{0}, malformed_{0}, fallbacks_{0}, errors_{0}, timeouts_{0}, skipped_{0}, reconnects_{0};
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
