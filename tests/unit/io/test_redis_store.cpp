// SPDX-License-Identifier: Apache-2.0
// Tests for recpipe::redis_feature_store against a real redis-server that each test starts on a
// free port (skipped with exit code 77 when redis-server is not installed): pipelines equal to the
// in-memory store, the cache, slow and killed servers, reconnects, malformed values, and a
// latency line per batch of 64.
#include <doctest/doctest.h>

#include <recpipe/core/batch.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/io/redis_store.hpp>
#include <recpipe/stages/lookup.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace recpipe;
using namespace std::chrono_literals;

namespace {
RECPIPE_COLUMN(item_price, per_candidate, float);

// A redis-server child process on 127.0.0.1:<free port>, no persistence, in a temp folder.
class redis_server {
 public:
  redis_server() {
    // The one CMake found; the environment variable RECPIPE_REDIS_SERVER overrides it ("" skips).
    std::string binary = RECPIPE_REDIS_SERVER;
    if (const char* chosen = std::getenv("RECPIPE_REDIS_SERVER")) binary = chosen;
    if (binary.empty() || access(binary.c_str(), X_OK) != 0) {
      std::printf("SKIPPED: redis-server is not installed (apt-get install redis-server); the Redis store tests need it\n");
      std::fflush(stdout);
      std::exit(77);
    }
    binary_ = binary;
    char folder[] = "/tmp/recpipe-redis-XXXXXX";
    REQUIRE(mkdtemp(folder) != nullptr);
    dir_ = folder;
    port_ = free_port();
    start();
  }
  ~redis_server() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  int port() const { return port_; }

  void start() {
    const std::string port = std::to_string(port_);
    std::fflush(nullptr);  // else the child's copy of buffered output is printed twice
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      // Only async-signal-safe calls here: other threads may have held locks at the fork.
      const int null = open("/dev/null", O_WRONLY);
      if (null >= 0) dup2(null, STDOUT_FILENO);
      execl(binary_.c_str(), binary_.c_str(), "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", dir_.c_str(), "--daemonize", "no", "--loglevel", "warning",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    // Ready when PING answers (2 s at most).
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (ping()) return;
      std::this_thread::sleep_for(5ms);
    }
    FAIL("redis-server did not answer PING on port " << port_);
  }
  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGCONT);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  void pause() { kill(pid_, SIGSTOP); }
  void resume() { kill(pid_, SIGCONT); }

  // Sets `key` to raw bytes (another writer's value).
  void set_raw(const std::string& key, const std::string& bytes) const {
    redisContext* context = redisConnect("127.0.0.1", port_);
    REQUIRE((context && !context->err));
    const char* argv[3] = {"SET", key.c_str(), bytes.data()};
    const std::size_t lengths[3] = {3, key.size(), bytes.size()};
    auto* reply = static_cast<redisReply*>(redisCommandArgv(context, 3, argv, lengths));
    REQUIRE(reply != nullptr);
    freeReplyObject(reply);
    redisFree(context);
  }

 private:
  bool ping() const {
    const timeval tv{0, 100000};
    redisContext* context = redisConnectWithTimeout("127.0.0.1", port_, tv);
    bool ok = false;
    if (context && !context->err) {
      auto* reply = static_cast<redisReply*>(redisCommand(context, "PING"));
      ok = reply && reply->type == REDIS_REPLY_STATUS;
      if (reply) freeReplyObject(reply);
    }
    if (context) redisFree(context);
    return ok;
  }
  static int free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    socklen_t length = sizeof address;
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    close(fd);
    return ntohs(address.sin_port);
  }

  std::string binary_, dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

redis_store_options options_for(const redis_server& server) {
  redis_store_options options;
  options.port = server.port();
  // Generous: a loaded CI machine (sanitizers, 2 cores) must not read as a slow server. The
  // slow-server test sets its own short timeout.
  options.connect_timeout = 2s;
  options.command_timeout = 2s;
  options.backoff_min = 5ms;
  options.backoff_max = 50ms;
  return options;
}

std::vector<float> vector_of(id_type id, std::size_t dim) {
  std::vector<float> v(dim);
  for (std::size_t j = 0; j < dim; ++j) v[j] = static_cast<float>(id) + 0.25f * static_cast<float>(j);
  return v;
}

template <class Store>
matrix<float> read_vectors(const Store& store, std::vector<id_type> ids) {
  matrix<float> out;
  store.lookup_batch(ids, out);
  return out;
}
}  // namespace

TEST_CASE("a pipeline over Redis returns the same columns as over the in-memory store") {
  redis_server server;
  auto options = options_for(server);
  constexpr std::size_t dim = 8;
  feature_store<col::user_id, col::user_embedding> users_memory(dim);
  redis_feature_store<col::user_id, col::user_embedding> users_redis(dim, options);
  feature_store<col::user_id, col::history> histories_memory;
  redis_feature_store<col::user_id, col::history> histories_redis(1, options);
  feature_store<col::candidates, col::item_embedding> items_memory(dim);
  redis_feature_store<col::candidates, col::item_embedding> items_redis(dim, options);
  feature_store<col::candidates, item_price> prices_memory;
  redis_feature_store<col::candidates, item_price> prices_redis(1, options);

  std::vector<id_type> user_ids;
  for (id_type u = 0; u < 20; ++u) {
    user_ids.push_back(u);
    users_memory.insert(u, vector_of(u, dim));
    std::vector<id_type> history;
    for (id_type k = 0; k < u % 5; ++k) history.push_back(100 + u * 10 + k);
    histories_memory.insert(u, history);
    histories_redis.put(u, history);
  }
  {  // put_many of all rows at once
    std::vector<float> flat;
    for (const id_type u : user_ids) {
      const auto row = vector_of(u, dim);
      flat.insert(flat.end(), row.begin(), row.end());
    }
    CHECK_THROWS_AS(users_redis.put_many(user_ids, std::span<const float>(flat).first(dim)), error);
    users_redis.put_many(user_ids, flat);
  }
  for (id_type item = 1000; item < 1050; ++item) {
    items_memory.insert(item, vector_of(item, dim));
    items_redis.put(item, vector_of(item, dim));
    prices_memory.insert(item, static_cast<float>(item) * 0.5f);
    prices_redis.put(item, static_cast<float>(item) * 0.5f);
  }

  // Unknown users (50, 2^40) and a negative id, unknown and repeated candidates.
  const std::vector<id_type> request_users{3, 50, 7, id_type{1} << 40, -2, 19};
  ragged<id_type> candidates;
  for (std::size_t r = 0; r < request_users.size(); ++r) {
    std::vector<id_type> row;
    for (id_type k = 0; k < static_cast<id_type>(r) + 2; ++k) row.push_back(1000 + (static_cast<id_type>(r) * 7 + k * 3) % 60);
    row.push_back(1001);
    candidates.push_row(std::span<const id_type>(row));
  }
  auto memory = lookup(users_memory) >> lookup(histories_memory) >> lookup(items_memory) >> lookup(prices_memory);
  auto redis = lookup(users_redis) >> lookup(histories_redis) >> lookup(items_redis) >> lookup(prices_redis);
  for (int pass = 0; pass < 2; ++pass) {  // the second pass is served from the cache
    const auto expected = make_batch<col::user_id, col::candidates>(request_users, candidates) >> memory;
    const auto got = make_batch<col::user_id, col::candidates>(request_users, candidates) >> redis;
    CHECK(got.get<col::user_embedding>().values() == expected.get<col::user_embedding>().values());
    CHECK(got.get<col::user_embedding>().rows() == request_users.size());
    CHECK(got.get<col::history>().offsets() == expected.get<col::history>().offsets());
    CHECK(got.get<col::history>().values() == expected.get<col::history>().values());
    CHECK(got.get<col::item_embedding>().values() == expected.get<col::item_embedding>().values());
    CHECK(got.get<item_price>() == expected.get<item_price>());
  }
  const auto m = items_redis.metrics();
  CHECK(m.batches == 2);
  CHECK(m.round_trips == 1);  // one MGET for the whole first batch; the second came from the cache
  CHECK(m.cache_hits == candidates.total());
  CHECK(m.missing > 0);
  CHECK(m.fallbacks == 0);
  CHECK(m.errors == 0);
  CHECK(m.timeouts == 0);
  CHECK(users_redis.metrics().missing == 6);  // 50, 2^40 and -2, in each of the two passes

  // An empty batch reads nothing.
  matrix<float> empty;
  users_redis.lookup_batch({}, empty);
  CHECK(empty.rows() == 0);
}

TEST_CASE("the missing-id policy and bad writes") {
  redis_server server;
  auto options = options_for(server);
  redis_feature_store<col::user_id, col::user_embedding> strict(2, options, on_missing::fail);
  strict.put(1, {1.f, 2.f});
  CHECK(read_vectors(strict, {1}).values() == std::vector<float>{1.f, 2.f});
  CHECK_THROWS_WITH_AS(read_vectors(strict, {1, 42}),
                       "recpipe: lookup: id 42 is not in the Redis feature store for column 'user_embedding' (key "
                       "'user_embedding:42')",
                       error);
  CHECK_THROWS_WITH_AS(strict.put(3, {1.f}), "recpipe: redis_feature_store<user_embedding>: id 3 has 1 values but the store's dim is 2",
                       error);
  CHECK_THROWS_AS(strict.put(-1, {1.f, 2.f}), error);
  CHECK_THROWS_AS((redis_feature_store<col::user_id, col::user_embedding>(0, options)), error);
  options.connections = 0;
  CHECK_THROWS_AS((redis_feature_store<col::user_id, col::user_embedding>(2, options)), error);

  // An empty list is a known value, not a missing one.
  redis_feature_store<col::user_id, col::history> lists(1, options_for(server), on_missing::fail);
  lists.put(7, std::span<const id_type>{});
  ragged<id_type> out;
  lists.lookup_batch(std::vector<id_type>{7}, out);
  CHECK(out.rows() == 1);
  CHECK(out.row_size(0) == 0);
  lists.erase(7);
  CHECK_THROWS_AS(lists.lookup_batch(std::vector<id_type>{7}, out), error);

  // flag_missing: the lookup stage marks ids that got the default (unknown or unavailable), and
  // a known, empty list is not flagged.
  redis_feature_store<col::user_id, col::user_embedding> lenient(2, options_for(server));
  lenient.put(1, {1.f, 2.f});
  lists.put(7, std::span<const id_type>{});
  batch<col::user_id> requests(3);
  requests.get<col::user_id>() = {1, 42, 7};
  const auto flagged = requests >> lookup(lenient).flag_missing();
  CHECK(flagged.get<col::user_unknown>() == std::vector<std::uint8_t>{0, 1, 1});
  std::vector<std::uint8_t> defaulted;
  redis_feature_store<col::user_id, col::history> lenient_lists(1, options_for(server));
  lenient_lists.lookup_batch(std::vector<id_type>{7, 8}, out, &defaulted);
  CHECK(defaulted == std::vector<std::uint8_t>{0, 1});

  // Another database keeps its own keys; a database Redis does not have falls back, counted.
  auto db1 = options_for(server);
  db1.database = 1;
  redis_feature_store<col::user_id, col::user_embedding> other(2, db1);
  other.put(1, {9.f, 9.f});
  CHECK(read_vectors(other, {1}).values() == std::vector<float>{9.f, 9.f});
  CHECK(read_vectors(strict, {1}).values() == std::vector<float>{1.f, 2.f});
  db1.database = 999;
  redis_feature_store<col::user_id, col::user_embedding> no_such_db(2, db1);
  CHECK(read_vectors(no_such_db, {1}).values() == std::vector<float>{0.f, 0.f});
  CHECK(no_such_db.metrics().errors == 1);
  CHECK(no_such_db.metrics().fallbacks == 1);
}

TEST_CASE("the local cache: hits, time-to-live and size bound") {
  redis_server server;
  auto options = options_for(server);
  options.cache_ttl = 400ms;  // long enough for two writes on a loaded machine
  redis_feature_store<col::user_id, col::user_embedding> cached(2, options);
  auto uncached_options = options_for(server);
  uncached_options.cache_ttl = 0ms;
  redis_feature_store<col::user_id, col::user_embedding> writer(2, uncached_options);  // another process
  writer.put(1, {1.f, 1.f});

  CHECK(read_vectors(cached, {1, 2}).values() == std::vector<float>{1.f, 1.f, 0.f, 0.f});
  CHECK(cached.metrics().cache_misses == 2);
  writer.put(1, {5.f, 5.f});
  writer.put(2, {6.f, 6.f});
  // Within the TTL the cache answers, absent ids included.
  CHECK(read_vectors(cached, {1, 2}).values() == std::vector<float>{1.f, 1.f, 0.f, 0.f});
  CHECK(cached.metrics().cache_hits == 2);
  CHECK(cached.metrics().round_trips == 1);
  std::this_thread::sleep_for(450ms);
  CHECK(read_vectors(cached, {1, 2}).values() == std::vector<float>{5.f, 5.f, 6.f, 6.f});
  CHECK(cached.metrics().cache_misses == 4);
  // This store's own writes drop its cached copy at once.
  cached.put(1, {7.f, 7.f});
  CHECK(read_vectors(cached, {1}).values() == std::vector<float>{7.f, 7.f});
  // The uncached store asks Redis every time.
  read_vectors(writer, {1, 2});
  read_vectors(writer, {1, 2});
  CHECK(writer.metrics().cache_hits == 0);
  CHECK(writer.metrics().round_trips == 2);

  auto small_options = options_for(server);
  small_options.cache_capacity = 32;
  redis_feature_store<col::user_id, col::user_embedding> small(2, small_options);
  std::vector<id_type> many(300);
  for (std::size_t i = 0; i < many.size(); ++i) many[i] = static_cast<id_type>(i);
  read_vectors(small, many);
  CHECK(small.cache_size() <= 32);
  CHECK(small.cache_size() > 0);
  small.clear_cache();
  CHECK(small.cache_size() == 0);
}

TEST_CASE("a slow server: timeouts, defaults served and counted, then recovery") {
  redis_server server;
  auto options = options_for(server);
  options.cache_ttl = 0ms;  // every batch asks Redis
  options.backoff_min = options.backoff_max = 300ms;  // long enough to see a skipped batch on a loaded machine
  options.command_timeout = 100ms;
  redis_feature_store<col::user_id, col::user_embedding> users(2, options);
  users.put(1, {1.f, 2.f});
  CHECK(read_vectors(users, {1}).values() == std::vector<float>{1.f, 2.f});

  server.pause();  // SIGSTOP: the socket accepts, nothing answers
  const auto started = std::chrono::steady_clock::now();
  CHECK(read_vectors(users, {1, 3}).values() == std::vector<float>{0.f, 0.f, 0.f, 0.f});
  CHECK(std::chrono::steady_clock::now() - started < 1s);
  auto m = users.metrics();
  CHECK(m.timeouts == 1);
  CHECK(m.fallbacks == 2);
  CHECK(m.missing == 0);  // unavailable is not missing
  // Straight after a failure the store backs off: no wait, defaults again.
  CHECK(read_vectors(users, {1}).values() == std::vector<float>{0.f, 0.f});
  CHECK(users.metrics().skipped == 1);
  CHECK(users.metrics().fallbacks == 3);

  // when_unavailable = fail throws instead.
  auto failing_options = options;
  failing_options.when_unavailable = on_missing::fail;
  redis_feature_store<col::user_id, col::user_embedding> failing(2, failing_options);
  CHECK_THROWS_AS(read_vectors(failing, {1}), error);

  server.resume();
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  std::vector<float> got;
  while (std::chrono::steady_clock::now() < deadline) {
    got = read_vectors(users, {1}).values();
    if (got == std::vector<float>{1.f, 2.f}) break;
    std::this_thread::sleep_for(10ms);
  }
  CHECK(got == std::vector<float>{1.f, 2.f});
  CHECK(users.metrics().reconnects >= 2);
}

TEST_CASE("a server killed mid-run: lookups keep serving from threads, then reconnect") {
  redis_server server;
  auto options = options_for(server);
  options.cache_ttl = 0ms;
  options.connections = 2;
  redis_feature_store<col::candidates, col::item_embedding> items(4, options);
  std::vector<id_type> ids(64);
  std::vector<float> flat;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<id_type>(i);
    const auto row = vector_of(ids[i], 4);
    flat.insert(flat.end(), row.begin(), row.end());
  }
  items.put_many(ids, flat);

  std::atomic<bool> done{false};
  std::atomic<int> wrong{0}, thrown{0}, served{0};
  auto reader = [&] {
    while (!done.load()) {
      try {
        const auto got = read_vectors(items, ids);
        // Each row is either the stored vector or the default zeros.
        for (std::size_t i = 0; i < ids.size(); ++i) {
          const auto row = got.row(i);
          const auto want = vector_of(ids[i], 4);
          const bool zero = row[0] == 0.f && row[1] == 0.f && row[2] == 0.f && row[3] == 0.f;
          if (!zero && !std::equal(row.begin(), row.end(), want.begin())) wrong.fetch_add(1);
        }
        served.fetch_add(1);
      } catch (...) {
        thrown.fetch_add(1);
      }
    }
  };
  std::thread a(reader), b(reader);
  std::this_thread::sleep_for(100ms);
  server.stop();  // SIGKILL
  std::this_thread::sleep_for(200ms);
  const auto down = items.metrics();
  server.start();  // same port, empty (no persistence)
  items.put_many(ids, flat);
  std::this_thread::sleep_for(200ms);
  done = true;
  a.join();
  b.join();
  CHECK(wrong.load() == 0);
  CHECK(thrown.load() == 0);
  CHECK(served.load() > 10);
  CHECK(down.fallbacks > 0);
  CHECK(down.errors > 0);
  CHECK(read_vectors(items, ids).values() == flat);  // recovered
  CHECK(items.metrics().reconnects >= 2);

  // A store pointed at a port where nothing listens: constructed fine, serves defaults.
  server.stop();
  redis_feature_store<col::candidates, col::item_embedding> nowhere(4, options);
  CHECK(read_vectors(nowhere, {1, 2}).values() == std::vector<float>(8, 0.f));
  CHECK(nowhere.metrics().errors == 1);
  CHECK(nowhere.metrics().fallbacks == 2);
  CHECK_THROWS_AS(nowhere.put(1, {1.f, 2.f, 3.f, 4.f}), error);  // writes do throw
}

TEST_CASE("malformed values from another writer are treated as missing, never a crash") {
  redis_server server;
  auto options = options_for(server);
  redis_feature_store<col::user_id, col::user_embedding> users(2, options);
  users.put(1, {1.f, 2.f});
  server.set_raw("user_embedding:2", "abcde");                       // 5 bytes, not 8
  server.set_raw("user_embedding:3", std::string(16, '\x01'));       // 4 floats, not 2
  server.set_raw("user_embedding:4", "");                            // empty
  CHECK(read_vectors(users, {1, 2, 3, 4}).values() == std::vector<float>{1.f, 2.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f});
  CHECK(users.metrics().malformed == 3);
  CHECK(users.metrics().missing == 3);
  CHECK(users.cache_size() == 1);  // malformed values are not cached

  redis_feature_store<col::user_id, col::history> histories(1, options);
  server.set_raw("history:9", "1234567");  // 7 bytes: not whole int64 ids
  server.set_raw("history:8", std::string(16, '\0'));
  ragged<id_type> lists;
  histories.lookup_batch(std::vector<id_type>{9, 8}, lists);
  CHECK(lists.row_size(0) == 0);
  CHECK(lists.row_size(1) == 2);
  CHECK(histories.metrics().malformed == 1);

  // A key of another Redis type reads as absent (MGET answers nil for it).
  redisContext* context = redisConnect("127.0.0.1", server.port());
  REQUIRE((context && !context->err));
  freeReplyObject(redisCommand(context, "HSET user_embedding:5 a b"));
  redisFree(context);
  CHECK(read_vectors(users, {5}).values() == std::vector<float>{0.f, 0.f});

  redis_feature_store<col::user_id, col::user_embedding> strict(2, options, on_missing::fail);
  CHECK_THROWS_AS(read_vectors(strict, {2}), error);
}

TEST_CASE("latency per batch of 64: in-memory store, Redis, Redis with the cache") {
  redis_server server;
  constexpr std::size_t dim = 64, batch = 64, items_count = 10000;
  auto options = options_for(server);
  options.cache_ttl = 0ms;
  redis_feature_store<col::candidates, col::item_embedding> uncached(dim, options);
  auto cached_options = options_for(server);
  cached_options.cache_ttl = 60s;
  cached_options.cache_capacity = items_count;
  redis_feature_store<col::candidates, col::item_embedding> cached(dim, cached_options);
  feature_store<col::candidates, col::item_embedding> memory(dim);
  std::vector<id_type> all(items_count);
  std::vector<float> flat(items_count * dim);
  std::mt19937 random(7);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (std::size_t i = 0; i < items_count; ++i) {
    all[i] = static_cast<id_type>(i);
    for (std::size_t j = 0; j < dim; ++j) flat[i * dim + j] = uniform(random);
    memory.insert(all[i], std::span<const float>(flat).subspan(i * dim, dim));
  }
  uncached.put_many(all, flat);

  std::vector<ragged<id_type>> requests(200);
  std::uniform_int_distribution<id_type> pick(0, static_cast<id_type>(items_count) - 1);
  for (auto& request : requests) {
    std::vector<id_type> row(batch);
    for (auto& id : row) id = pick(random);
    request.push_row(std::span<const id_type>(row));
  }
  // Median per batch (the shared machine is noisy; a mean would measure its other tenants).
  auto time_per_batch = [&](const auto& store, int rounds) {
    const auto pipeline = lookup(store);
    float sink = 0;
    std::vector<double> times;
    for (int round = 0; round < rounds; ++round)
      for (const auto& request : requests) {
        auto in = make_batch<col::user_id, col::candidates>(std::vector<id_type>{1}, request);
        const auto started = std::chrono::steady_clock::now();
        const auto out = std::move(in) >> pipeline;
        times.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count());
        sink += out.template get<col::item_embedding>()(0, 0);
      }
    CHECK(sink == sink);
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  };
  time_per_batch(cached, 1);  // warm the cache
  const double memory_us = time_per_batch(memory, 5), uncached_us = time_per_batch(uncached, 2),
               cached_us = time_per_batch(cached, 5);
  std::printf("redis_store latency per batch of %zu ids, dim %zu (median): in-memory feature_store %.1f us, "
              "Redis MGET (no cache) %.1f us, Redis with the local cache (all hits) %.1f us\n",
              batch, dim, memory_us, uncached_us, cached_us);
  CHECK(uncached.metrics().round_trips == 2 * requests.size());
  CHECK(cached.metrics().cache_hits >= 5 * batch * requests.size());
  CHECK(uncached.metrics().fallbacks == 0);
}
