// SPDX-License-Identifier: Apache-2.0
// cuda::column_residency, the bookkeeping of where each column lives during a cuda_backend run,
// driven through a host Transfer: "device memory" is host memory, and every copy, gather and
// synchronisation is counted. The claims checked here are the issue's: each column moves between
// host and device at most once each way per run, and the run synchronises once, at its end,
// unless a host stage needs a column only the device has.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <recpipe/core/batch.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/cuda/residency.hpp>

using namespace recpipe;

namespace {

struct copy_log {
  int allocations = 0, releases = 0, end_runs = 0;
  bool fail_next_sync = false;
};

// Device memory is malloc'ed host memory; downloads complete at synchronize(), as on a stream.
struct host_transfer {
  explicit host_transfer(copy_log* l) : log(l) {}
  copy_log* log;
  struct pending {
    void* host;
    std::vector<char> bytes;
  };
  std::vector<pending> queued;

  void* allocate(std::size_t bytes) {
    ++log->allocations;
    return std::malloc(bytes);
  }
  void release(void* p) noexcept {
    ++log->releases;
    std::free(p);
  }
  void upload(void* device, const void* host, std::size_t bytes) { std::memcpy(device, host, bytes); }
  void download(void* host, const void* device, std::size_t bytes) {
    const char* from = static_cast<const char*>(device);
    queued.push_back({host, std::vector<char>(from, from + bytes)});
  }
  void gather(void* dst, const void* src, std::size_t row_bytes, std::size_t src_rows, const std::int64_t* picks,
              std::size_t rows) {
    for (std::size_t i = 0; i < rows; ++i) {
      REQUIRE(picks[i] >= 0);
      REQUIRE(static_cast<std::size_t>(picks[i]) < src_rows);
      std::memcpy(static_cast<char*>(dst) + i * row_bytes,
                  static_cast<const char*>(src) + static_cast<std::size_t>(picks[i]) * row_bytes, row_bytes);
    }
  }
  void synchronize() {
    if (log->fail_next_sync) {
      log->fail_next_sync = false;
      queued.clear();
      throw std::runtime_error("device fault");
    }
    for (auto& p : queued) std::memcpy(p.host, p.bytes.data(), p.bytes.size());
    queued.clear();
  }
  void end_run() noexcept {
    ++log->end_runs;
    queued.clear();
  }
};

using residency = cuda::column_residency<host_transfer>;

// Host stages as the residency sees them: only their declared columns matter.
struct reorder_stage {  // a rule / filter: reads the candidates and may select them
  using reads = columns<col::candidates, col::score>;
  using writes = columns<>;
};
struct user_lookup_stage {  // writes a per-request column, no candidates involved
  using reads = columns<col::user_id>;
  using writes = columns<col::user_embedding>;
};
struct item_scorer_stage {  // reads the candidates but keeps them
  using reads = columns<col::candidates, col::item_embedding>;
  using writes = columns<col::score>;
};
RECPIPE_COLUMN(candidate_note, per_candidate, std::string);

}  // namespace

template <>
inline constexpr bool recpipe::cuda::host_stage_keeps_candidates<item_scorer_stage> = true;

namespace {

// Two requests with 3 and 2 candidates, item embeddings of width 2, scores.
auto scored_batch() {
  batch<col::user_id, col::candidates, col::item_embedding, col::score> b(2);
  b.get<col::user_id>() = {7, 9};
  b.get<col::candidates>().assign({0, 3, 5}, {10, 11, 12, 20, 21});
  b.get<col::item_embedding>() = matrix<float>({1, 1, 2, 2, 3, 3, 4, 4, 5, 5}, 5, 2);
  b.get<col::score>() = {0.1f, 0.3f, 0.2f, 0.9f, 0.8f};
  b.validate();
  return b;
}

}  // namespace

TEST_CASE("a device read uploads a column once per run, and a device write comes back once at the end") {
  copy_log log;
  residency columns{host_transfer(&log)};
  auto b = scored_batch();
  columns.begin();
  const auto first = columns.read<col::score>(b);
  const auto again = columns.read<col::score>(b);
  CHECK(first.data == again.data);
  CHECK(first.count == 5);
  CHECK(columns.counts().uploads == 1);
  CHECK(columns.counts().upload_bytes == 5 * sizeof(float));

  // A device stage rewrites the scores on the device: the host copy is stale until the run ends.
  const auto written = columns.write<col::score>(b);
  for (std::size_t i = 0; i < written.count; ++i) written.data[i] = 10.0f + static_cast<float>(i);
  CHECK_FALSE(columns.current_on_host<col::score>());
  CHECK(b.get<col::score>()[0] == doctest::Approx(0.1f));  // not copied back yet
  columns.finish(b);
  CHECK(b.get<col::score>() == std::vector<float>{10, 11, 12, 13, 14});
  CHECK(columns.counts().downloads == 1);
  CHECK(columns.counts().synchronizations == 1);
  CHECK(log.allocations == log.releases);  // every device copy released at the end of the run
  CHECK(log.end_runs == 1);
  CHECK(columns.depth() == 0);
}

TEST_CASE("lists carry their offsets to the device; a device selection gathers every per-candidate column") {
  copy_log log;
  residency columns{host_transfer(&log)};
  auto b = scored_batch();
  columns.begin();
  const auto candidates = columns.read<col::candidates>(b);
  REQUIRE(candidates.offsets != nullptr);
  CHECK(candidates.rows == 2);
  CHECK(candidates.offsets[0] == 0);
  CHECK(candidates.offsets[1] == 3);
  CHECK(candidates.offsets[2] == 5);
  const auto embeddings = columns.read<col::item_embedding>(b);
  CHECK(embeddings.rows == 5);
  CHECK(embeddings.cols == 2);

  // Keep request 0's candidates 1 and 2 (in that order) and request 1's candidate 3.
  const std::vector<std::int64_t> picks{1, 2, 3};
  columns.select_candidates(b, {0, 2, 3}, picks.data());
  CHECK(columns.counts().gathers == 3);  // ids, item_embedding and score; user_id is per request
  CHECK(b.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 2, 3});
  CHECK(b.get<col::score>().size() == 3);
  CHECK(b.get<col::item_embedding>().rows() == 3);
  const std::size_t uploads_before_finish = columns.counts().uploads;
  columns.finish(b);
  CHECK(b.get<col::candidates>().values() == std::vector<id_type>{11, 12, 20});
  CHECK(b.get<col::score>() == std::vector<float>{0.3f, 0.2f, 0.9f});
  CHECK(b.get<col::item_embedding>().values() == std::vector<float>{2, 2, 3, 3, 4, 4});
  CHECK(b.get<col::user_id>() == std::vector<id_type>{7, 9});  // per-request columns untouched
  CHECK(columns.counts().synchronizations == 1);
  CHECK(columns.counts().uploads == uploads_before_finish);
  CHECK(log.allocations == log.releases);
}

TEST_CASE("a host stage gets what it reads back from the device, and its changes drop the device copies") {
  copy_log log;
  residency columns{host_transfer(&log)};
  auto b = scored_batch();
  columns.begin();
  const auto scores = columns.write<col::score>(b);
  for (std::size_t i = 0; i < scores.count; ++i) scores.data[i] = static_cast<float>(i);
  (void)columns.read<col::item_embedding>(b);

  SUBCASE("a host stage that may select candidates") {
    columns.before_host_stage<reorder_stage>(b);
    CHECK(columns.counts().synchronizations == 1);  // it reads a column only the device had
    CHECK(b.get<col::score>() == std::vector<float>{0, 1, 2, 3, 4});
    columns.after_host_stage<reorder_stage>(b);
    CHECK_FALSE(columns.on_device<col::score>());
    CHECK_FALSE(columns.on_device<col::item_embedding>());  // per-candidate: may have been reordered
    const std::size_t uploads = columns.counts().uploads;
    (void)columns.read<col::item_embedding>(b);
    CHECK(columns.counts().uploads == uploads + 1);
  }
  SUBCASE("a host stage that keeps the candidates") {
    columns.before_host_stage<item_scorer_stage>(b);
    CHECK(columns.counts().synchronizations == 0);  // item_embedding is current on the host already
    columns.after_host_stage<item_scorer_stage>(b);
    CHECK_FALSE(columns.on_device<col::score>());  // it wrote the scores
    CHECK(columns.on_device<col::item_embedding>());
  }
  SUBCASE("a host stage that touches no candidate column") {
    columns.before_host_stage<user_lookup_stage>(b);
    columns.after_host_stage<user_lookup_stage>(b);
    CHECK(columns.counts().synchronizations == 0);
    CHECK(columns.on_device<col::score>());
    CHECK_FALSE(columns.current_on_host<col::score>());
  }
  columns.finish(b);
  CHECK(log.allocations == log.releases);
}

TEST_CASE("a host column changed behind the residency's back is uploaded again") {
  copy_log log;
  residency columns{host_transfer(&log)};
  auto b = scored_batch();
  columns.begin();
  (void)columns.read<col::score>(b);
  b.get<col::score>() = std::vector<float>{5, 4, 3, 2, 1};  // new storage: a different host buffer
  const auto fresh = columns.read<col::score>(b);
  CHECK(columns.counts().uploads == 2);
  CHECK(fresh.data[0] == 5.0f);
  columns.finish(b);
}

TEST_CASE("nested runs finish once; an aborted run copies nothing back and releases everything") {
  copy_log log;
  residency columns{host_transfer(&log)};
  auto b = scored_batch();
  columns.begin();  // the pipeline's run
  columns.begin();  // a stage inside it
  const auto scores = columns.write<col::score>(b);
  scores.data[0] = 42.0f;
  columns.finish(b);  // the stage's level: nothing moves
  CHECK(columns.counts().downloads == 0);
  CHECK(columns.depth() == 1);
  columns.abort();  // the pipeline's level unwinds after an exception
  CHECK(columns.depth() == 0);
  CHECK(b.get<col::score>()[0] == doctest::Approx(0.1f));
  CHECK(log.allocations == log.releases);
  CHECK_FALSE(columns.on_device<col::score>());
}

TEST_CASE("a failing synchronisation at the end of a run throws and leaves no device copies behind") {
  copy_log log;
  residency columns{host_transfer(&log)};
  auto b = scored_batch();
  columns.begin();
  (void)columns.write<col::score>(b);
  log.fail_next_sync = true;
  CHECK_THROWS_WITH(columns.finish(b), "device fault");
  CHECK(columns.depth() == 0);
  CHECK(log.allocations == log.releases);
  // The next run starts clean.
  columns.begin();
  (void)columns.read<col::score>(b);
  columns.finish(b);
  CHECK(log.allocations == log.releases);
}

TEST_CASE("a per-candidate column that cannot move to the device is selected on the host from downloaded picks") {
  copy_log log;
  residency columns{host_transfer(&log)};
  batch<col::candidates, candidate_note, col::score> b(1);
  b.get<col::candidates>().assign({0, 3}, {1, 2, 3});
  b.get<candidate_note>() = {"a", "b", "c"};
  b.get<col::score>() = {1, 2, 3};
  columns.begin();
  const std::vector<std::int64_t> picks{2, 0};
  columns.select_candidates(b, {0, 2}, picks.data());
  CHECK(columns.counts().synchronizations == 1);  // the picks had to come to the host
  CHECK(b.get<candidate_note>() == std::vector<std::string>{"c", "a"});
  columns.finish(b);
  CHECK(b.get<col::score>() == std::vector<float>{3, 1});
  CHECK(b.get<col::candidates>().values() == std::vector<id_type>{3, 1});
}

TEST_CASE("a run that never touched the device makes no transfer call at all") {
  copy_log log;
  residency columns{host_transfer(&log)};
  auto b = scored_batch();
  columns.begin();
  columns.before_host_stage<reorder_stage>(b);
  columns.after_host_stage<reorder_stage>(b);
  columns.finish(b);
  CHECK(columns.counts().synchronizations == 0);
  CHECK(log.allocations == 0);
}

TEST_CASE("finish without begin is an error, not a silent no-op") {
  copy_log log;
  residency columns{host_transfer(&log)};
  auto b = scored_batch();
  CHECK_THROWS_WITH(columns.finish(b), doctest::Contains("finish without begin"));
}
