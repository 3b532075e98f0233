// SPDX-License-Identifier: Apache-2.0
// A four-stage recommender whose user features live in Redis: retrieval from two indexes joined
// with `+`, filtering, scoring, and ordering with business rules, as one >> expression.
//
//   example_four_stage            50,000 items, 5,000 users (a few seconds)
//   example_four_stage --smoke    10,000 items, 1,000 users (ctest runs this)
//
// The example starts its own redis-server on a free port of 127.0.0.1 (no persistence, a temp
// folder), loads the user vectors into it through redis_feature_store, serves batches, and then
// kills the server mid-run to show the documented fallback: requests are still served (the users
// Redis could not answer for get the popular items of the cold-start path), counted in the
// store's metrics. Without redis-server (apt-get install redis-server), or built without hiredis,
// it says so and serves the user vectors from the in-memory feature_store instead.
#include <recpipe/core.hpp>
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/io/synthetic_catalog.hpp>
#include <recpipe/stages/cold_start.hpp>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/merge.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/rules.hpp>
#include <recpipe/stages/score.hpp>
#if RECPIPE_EXAMPLE_WITH_REDIS
#include <recpipe/io/redis_store.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <thread>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <span>
#include <string>
#include <vector>

namespace {
using namespace recpipe;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

#if RECPIPE_EXAMPLE_WITH_REDIS
// A redis-server child process on 127.0.0.1:<free port>, no persistence, in a temp folder; killed
// (SIGKILL) by kill() or at destruction. start() returns false with a reason when it cannot run.
class redis_server {
 public:
  redis_server() = default;
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;
  ~redis_server() {
    kill();
    if (!dir_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
    }
  }

  bool start(std::string& why) {
    // The one CMake found; the environment variable RECPIPE_REDIS_SERVER overrides it.
    std::string binary = RECPIPE_EXAMPLE_REDIS_SERVER;
    if (const char* chosen = std::getenv("RECPIPE_REDIS_SERVER")) binary = chosen;
    if (binary.empty() || access(binary.c_str(), X_OK) != 0) {
      why = "redis-server is not installed (apt-get install redis-server)";
      return false;
    }
    char folder[] = "/tmp/recpipe-four-stage-XXXXXX";
    if (mkdtemp(folder) == nullptr) {
      why = std::string("cannot make a temp folder: ") + std::strerror(errno);
      return false;
    }
    dir_ = folder;
    port_ = free_port();
    if (port_ <= 0) {
      why = "no free port on 127.0.0.1";
      return false;
    }
    const std::string port = std::to_string(port_);
    std::fflush(nullptr);  // else the child's copy of buffered output is printed twice
    pid_ = fork();
    if (pid_ < 0) {
      why = std::string("fork failed: ") + std::strerror(errno);
      return false;
    }
    if (pid_ == 0) {
      const int null = open("/dev/null", O_WRONLY);
      if (null >= 0) dup2(null, STDOUT_FILENO);
      execl(binary.c_str(), binary.c_str(), "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "", "--appendonly",
            "no", "--dir", dir_.c_str(), "--daemonize", "no", "--loglevel", "warning", static_cast<char*>(nullptr));
      _exit(127);
    }
    // Ready when PING answers (5 s at most: a loaded machine or a sanitizer build is slow).
    const auto deadline = clock_type::now() + std::chrono::seconds(5);
    while (clock_type::now() < deadline) {
      if (ping()) return true;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        why = "redis-server exited at start (status " + std::to_string(status) + ")";
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    kill();
    why = "redis-server did not answer PING on port " + port;
    return false;
  }
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  int port() const { return port_; }
  bool running() const { return pid_ > 0; }

 private:
  bool ping() const {
    const timeval tv{0, 100000};
    redisContext* context = redisConnectWithTimeout("127.0.0.1", port_, tv);
    bool ok = false;
    if (context != nullptr && context->err == 0) {
      auto* reply = static_cast<redisReply*>(redisCommand(context, "PING"));
      ok = reply != nullptr && reply->type == REDIS_REPLY_STATUS;
      if (reply != nullptr) freeReplyObject(reply);
    }
    if (context != nullptr) redisFree(context);
    return ok;
  }
  static int free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof address;
    int port = -1;
    if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0)
      port = ntohs(address.sin_port);
    close(fd);
    return port;
  }

  std::string dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

void print_redis_metrics(const redis_store_metrics& m) {
  std::printf("  batches %llu, ids %llu, cache hits %llu, cache misses %llu, MGET round trips %llu, missing %llu,\n"
              "  fallbacks %llu, errors %llu, timeouts %llu, skipped (backing off) %llu, connections made %llu\n",
              static_cast<unsigned long long>(m.batches), static_cast<unsigned long long>(m.ids),
              static_cast<unsigned long long>(m.cache_hits), static_cast<unsigned long long>(m.cache_misses),
              static_cast<unsigned long long>(m.round_trips), static_cast<unsigned long long>(m.missing),
              static_cast<unsigned long long>(m.fallbacks), static_cast<unsigned long long>(m.errors),
              static_cast<unsigned long long>(m.timeouts), static_cast<unsigned long long>(m.skipped),
              static_cast<unsigned long long>(m.reconnects));
}
#else
class redis_server {  // built without hiredis: never running
 public:
  void kill() {}
  bool running() const { return false; }
};
#endif

struct settings {
  bool smoke = false;
  std::size_t batch_size = 64, batches = 40, recommendations = 10;
};

// Builds the indexes and the other stores, the pipeline over `user_vectors` (a Redis store or the
// in-memory one), serves batches and prints what happened. `server` is killed mid-run when it runs.
// (A template over the user store, so its batches are dependent types: hence `.template get<...>()`.)
template <class UserStore>
int serve(const io::synthetic_catalog& catalog, UserStore& user_vectors, redis_server& server, const settings& s) {
  const auto& config = catalog.config;
  auto start = clock_type::now();

  // In-memory stores: histories, item vectors, and each item's topic as its category (for cap).
  feature_store<col::user_id, col::history> histories;
  for (std::size_t u = 0; u < config.users; ++u) histories.insert(static_cast<id_type>(u), catalog.histories.row(u));
  feature_store<col::candidates, col::item_embedding> item_vectors(config.dim);
  feature_store<col::candidates, col::item_category> categories;
  std::vector<id_type> item_ids(config.items);
  std::iota(item_ids.begin(), item_ids.end(), id_type{0});
  for (std::size_t i = 0; i < config.items; ++i) {
    item_vectors.insert(item_ids[i], catalog.item_vectors.row(i));
    categories.insert(item_ids[i], static_cast<id_type>(catalog.item_topic[i]));
  }

  // Retriever 1: HNSW over the whole catalog. Retriever 2: exact search over the 1,000 trending
  // items (the most popular ones), which a taste-based ANN search alone would often miss.
  cpu::hnsw_index ann(config.dim, metric::inner_product, config.items, /*M=*/16, /*ef_construction=*/100);
  ann.add(item_ids, catalog.item_vectors.view(), /*threads=*/2);
  ann.set_ef(300);
  std::vector<id_type> by_popularity = item_ids;
  std::stable_sort(by_popularity.begin(), by_popularity.end(), [&](id_type a, id_type b) {
    return catalog.item_popularity[static_cast<std::size_t>(a)] > catalog.item_popularity[static_cast<std::size_t>(b)];
  });
  const std::size_t trending_count = std::min<std::size_t>(1000, config.items);
  std::vector<id_type> trending_ids(by_popularity.begin(), by_popularity.begin() + static_cast<std::ptrdiff_t>(trending_count));
  matrix<float> trending_vectors(trending_count, config.dim);
  for (std::size_t i = 0; i < trending_count; ++i)
    std::copy_n(catalog.item_vectors.row(static_cast<std::size_t>(trending_ids[i])).begin(), config.dim,
                trending_vectors.row(i).begin());
  cpu::exact_index trending(config.dim, metric::inner_product, trending_count);
  trending.add(trending_ids, trending_vectors.view());

  // Business rules: a block list (every 97th item is out of stock), a sponsored item (the 50th
  // most popular) pinned at position 2 where it survived the rules, cold start from the clicks.
  std::vector<id_type> out_of_stock;
  for (id_type i = 0; i < static_cast<id_type>(config.items); i += 97) out_of_stock.push_back(i);
  const id_set blocked(std::move(out_of_stock));
  const id_type sponsored = by_popularity[std::min<std::size_t>(49, config.items - 1)];
  const auto& clicks = catalog.histories.values();
  const auto popular = popular_items::from_interactions(std::span<const id_type>(clicks.data(), clicks.size()));
  std::printf("stores, HNSW index (M 16, ef 300) and the trending index (%zu items) built in %.2f s\n", trending_count,
              seconds_since(start));

  // The recommender: one expression, checked by the compiler.
  // clang-format off
  const auto recommend =
      lookup(user_vectors).flag_missing() >> lookup(histories)            // features: user vector (Redis), history
      >> (retrieve<col::user_embedding>(ann, 200)                          // 1. retrieval: ANN over the catalog
          + retrieve<col::user_embedding>(trending, 50))                   //    + exact over trending, de-duplicated
      >> filter_seen() >> filter_out(blocked)                              // 2. filtering: seen, out of stock
      >> lookup(item_vectors) >> lookup(categories)                        //    item vectors, categories
      >> score(dot_product_scorer<>{})                                     // 3. scoring
      >> cap(3) >> diversify(s.recommendations, 0.7f) >> pin(sponsored, 2)  // 4. ordering: <= 3 per topic, MMR, ad
      >> cold_start(popular, s.recommendations);                           // unknown users: the most popular
  // clang-format on
  std::printf("\nthe pipeline (recommend.describe()):\n%s\n", recommend.describe().c_str());

  // Serve: every user once (Redis reads), then the same users again (the local cache).
  std::vector<id_type> users(s.batch_size);
  start = clock_type::now();
  auto result = recommend.run(batch<col::user_id>(0));
  std::size_t served = 0, sponsored_shown = 0;
  for (std::size_t b = 0; b < s.batches; ++b) {
    for (std::size_t i = 0; i < s.batch_size; ++i)
      users[i] = static_cast<id_type>((b * s.batch_size + i) % (s.batches * s.batch_size / 2) % config.users);
    result = recommend.run(make_batch<col::user_id>(users));
    served += result.size();
    const auto& recs = result.template get<col::candidates>();
    for (std::size_t r = 0; r < result.size(); ++r)
      if (recs.offsets()[r] + 2 < recs.offsets()[r + 1] && recs.values()[recs.offsets()[r] + 2] == sponsored) ++sponsored_shown;
  }
  const double seconds = seconds_since(start);

  std::printf("recommendations for the last batch's first users (item:topic score):\n");
  const auto& recs = result.template get<col::candidates>();
  const auto& scores = result.template get<col::score>();
  for (std::size_t r = 0; r < 4 && r < result.size(); ++r) {
    const auto user = static_cast<std::size_t>(result.template get<col::user_id>()[r]);
    std::printf("  user %5zu:", user);
    for (std::size_t at = recs.offsets()[r]; at < recs.offsets()[r + 1]; ++at)
      std::printf(" %lld:%u %.2f", static_cast<long long>(recs.values()[at]),
                  catalog.item_topic[static_cast<std::size_t>(recs.values()[at])], static_cast<double>(scores[at]));
    std::printf("\n");
  }
  const auto cold = recommend.run(make_batch<col::user_id>(std::vector<id_type>{static_cast<id_type>(config.users + 7)}));
  std::printf("  new user %zu (unknown, flagged by the lookup):", config.users + 7);
  for (const id_type item : cold.template get<col::candidates>().values()) std::printf(" %lld", static_cast<long long>(item));
  std::printf("  (cold start: the most clicked items)\n");
  std::printf("sponsored item %lld (topic %u) pinned at position 2 for %zu of %zu requests (a pin never brings back\n"
              "  an item that retrieval, a filter or a rule removed)\n",
              static_cast<long long>(sponsored), catalog.item_topic[static_cast<std::size_t>(sponsored)], sponsored_shown,
              served);

  std::printf("\nper-stage latency over %zu batches of %zu users (%.0f users/s on one thread):\n", s.batches, s.batch_size,
              static_cast<double>(s.batches * s.batch_size) / seconds);
  std::printf("  %-34s %8s %10s %10s\n", "stage", "runs", "p50 (us)", "p99 (us)");
  for (const auto& st : recommend.stats())
    std::printf("  %-34.*s %8llu %10.1f %10.1f\n", static_cast<int>(st.name.size()), st.name.data(),
                static_cast<unsigned long long>(st.runs), st.p50_us, st.p99_us);
  const auto total = recommend.total_stats();
  std::printf("  %-34s %8llu %10.1f %10.1f\n", "whole pipeline", static_cast<unsigned long long>(total.runs), total.p50_us,
              total.p99_us);

  if constexpr (requires { user_vectors.metrics(); }) {
#if RECPIPE_EXAMPLE_WITH_REDIS
    std::printf("\nRedis store metrics (each user read once from Redis, then from the local cache):\n");
    print_redis_metrics(user_vectors.metrics());

    // The fallback: kill the server mid-run. The local cache would still serve the users it holds
    // for cache_ttl, so empty it: every id of the next batches must go to Redis, which is gone.
    const auto before = user_vectors.metrics();
    server.kill();
    user_vectors.clear_cache();
    std::printf("\nredis-server killed (SIGKILL) mid-run; serving 3 more batches:\n");
    for (std::size_t b = 0; b < 3; ++b) {
      for (std::size_t i = 0; i < s.batch_size; ++i) users[i] = static_cast<id_type>((b * s.batch_size + i) % config.users);
      const auto down = recommend.run(make_batch<col::user_id>(users));
      std::size_t with_items = 0, flagged = 0;
      for (std::size_t r = 0; r < down.size(); ++r) {
        with_items += down.template get<col::candidates>().row(r).size() == s.recommendations ? 1 : 0;
        flagged += down.template get<col::user_unknown>()[r];
      }
      std::printf("  batch %zu: %zu requests served, %zu with %zu items, %zu served the cold-start defaults\n", b + 1,
                  down.size(), with_items, s.recommendations, flagged);
    }
    const auto after = user_vectors.metrics();
    std::printf("  counted: fallbacks +%llu, errors +%llu, timeouts +%llu, skipped +%llu (nothing thrown)\n",
                static_cast<unsigned long long>(after.fallbacks - before.fallbacks),
                static_cast<unsigned long long>(after.errors - before.errors),
                static_cast<unsigned long long>(after.timeouts - before.timeouts),
                static_cast<unsigned long long>(after.skipped - before.skipped));
    if (after.fallbacks == before.fallbacks) {
      std::fprintf(stderr, "error: the killed server produced no fallbacks\n");
      return 1;
    }
#endif
  } else {
    (void)server;
    std::printf("\n(in-memory user store: no Redis metrics and no server to kill)\n");
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) s.smoke = true;
    else {
      std::fprintf(stderr, "usage: %s [--smoke]\n", argv[0]);
      return 2;
    }
  }
  io::synthetic_catalog_config config;
  config.items = s.smoke ? 10'000 : 50'000;
  config.users = s.smoke ? 1'000 : 5'000;
  if (s.smoke) s.batches = 8;

  auto start = clock_type::now();
  const auto catalog = io::synthetic_catalog::generate(config);
  std::printf("catalog: %zu items, %zu users, dim %zu, %zu topics (seed %llu) in %.2f s\n", config.items, config.users,
              config.dim, config.topics, static_cast<unsigned long long>(config.seed), seconds_since(start));

  redis_server server;
#if RECPIPE_EXAMPLE_WITH_REDIS
  std::string why;
  if (server.start(why)) {
    redis_store_options options;
    options.port = server.port();
    options.connect_timeout = std::chrono::milliseconds(500);  // generous: a loaded machine is not a slow server
    options.command_timeout = std::chrono::milliseconds(500);
    options.cache_ttl = std::chrono::seconds(60);  // long enough that the second pass is served from the cache
    options.backoff_min = std::chrono::milliseconds(50);
    options.backoff_max = std::chrono::milliseconds(500);
    redis_feature_store<col::user_id, col::user_embedding> user_vectors(config.dim, options);
    start = clock_type::now();
    std::vector<id_type> ids(config.users);
    std::iota(ids.begin(), ids.end(), id_type{0});
    const auto& values = catalog.user_vectors.values();
    user_vectors.put_many(ids, std::span<const float>(values.data(), config.users * config.dim));
    std::printf("redis-server started on 127.0.0.1:%d; %zu user vectors loaded (keys '%s') in %.2f s\n", server.port(),
                config.users, user_vectors.key_of(0).c_str(), seconds_since(start));
    return serve(catalog, user_vectors, server, s);
  }
  std::printf("%s: falling back to the in-memory feature_store for the user vectors\n", why.c_str());
#else
  std::printf("built without hiredis (apt-get install libhiredis-dev): the user vectors are served by the in-memory "
              "feature_store\n");
#endif
  feature_store<col::user_id, col::user_embedding> user_vectors(config.dim);
  for (std::size_t u = 0; u < config.users; ++u) user_vectors.insert(static_cast<id_type>(u), catalog.user_vectors.row(u));
  return serve(catalog, user_vectors, server, s);
}
