// SPDX-License-Identifier: Apache-2.0
// Tests for stage composition with >>, pipeline runs, metrics, thread safety and allocations.
#include <doctest/doctest.h>

#include <recpipe/core/pipeline.hpp>

#include <atomic>
#include <cstdlib>
#include <new>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace recpipe;

// Counts heap allocations made by this process, to show that a warm pipeline's allocations do not
// grow with the number of requests.
namespace {
std::atomic<long> allocations{0};
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // the replacements below pair malloc with free
#endif
void* operator new(std::size_t bytes) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(bytes == 0 ? 1 : bytes)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

RECPIPE_COLUMN(doubled, per_request, id_type);
RECPIPE_COLUMN(plus_one, per_request, id_type);

struct double_ids : stage<double_ids> {
  using reads = columns<col::user_id>;
  using writes = columns<doubled>;
  static constexpr std::string_view name = "double_ids";
};
struct add_one : stage<add_one> {
  using reads = columns<doubled>;
  using writes = columns<plus_one>;
  static constexpr std::string_view name = "add_one";
};

template <>
struct recpipe::stage_impl<double_ids, cpu_backend> {
  template <class Batch>
  static auto run(const double_ids&, Batch&& batch, cpu_backend&) {
    const auto& ids = batch.template get<col::user_id>();
    std::vector<id_type> out(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) out[i] = 2 * ids[i];
    return std::forward<Batch>(batch).template with<doubled>(std::move(out));
  }
};
template <>
struct recpipe::stage_impl<add_one, cpu_backend> {
  template <class Batch>
  static auto run(const add_one&, Batch&& batch, cpu_backend&) {
    const auto& in = batch.template get<doubled>();
    std::vector<id_type> out(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) out[i] = in[i] + 1;
    return std::forward<Batch>(batch).template with<plus_one>(std::move(out));
  }
};

TEST_CASE(">> composes flat pipelines and is associative") {
  auto left = (double_ids{} >> add_one{}) >> add_one{};
  auto right = double_ids{} >> (add_one{} >> add_one{});
  static_assert(std::is_same_v<decltype(left), decltype(right)>);
  static_assert(std::is_same_v<decltype(left), pipeline<double_ids, add_one, add_one>>);
  static_assert(is_stage_v<decltype(left)>);
  static_assert(!is_stage_v<int>);
  // The pipeline reads only what no stage provides, and writes the union of its stages' outputs.
  static_assert(std::is_same_v<decltype(left)::reads, columns<col::user_id>>);
  static_assert(std::is_same_v<decltype(left)::writes, columns<doubled, plus_one>>);
  CHECK(decltype(left)::stage_names[1] == "add_one");
}

TEST_CASE("batch >> stage, batch >> pipeline and run give the same result") {
  const auto requests = make_batch<col::user_id>(std::vector<id_type>{1, 5, -3});
  auto p = double_ids{} >> add_one{};
  auto via_shift = requests >> p;
  auto via_run = p.run(requests);
  auto step_by_step = (requests >> double_ids{}) >> add_one{};
  CHECK(via_shift.get<plus_one>() == std::vector<id_type>{3, 11, -5});
  CHECK(via_run.get<plus_one>() == via_shift.get<plus_one>());
  CHECK(step_by_step.get<plus_one>() == via_shift.get<plus_one>());
  CHECK(requests.size() == 3);  // an lvalue batch is copied, not consumed
}

TEST_CASE("a pipeline records per-stage statistics and per-run reports") {
  auto p = double_ids{} >> add_one{};
  run_report<2> report;
  for (int i = 0; i < 10; ++i) p.run(make_batch<col::user_id>(std::vector<id_type>{1, 2}), report);
  const auto stats = p.stats();
  CHECK(stats[0].name == "double_ids");
  CHECK(stats[0].runs == 10);
  CHECK(stats[1].runs == 10);
  CHECK(stats[1].p99_us >= stats[1].p50_us);
  CHECK(p.total_stats().runs == 10);
  CHECK(report.stage_names[1] == "add_one");
  CHECK(report.total().count() >= 0);
  p.reset_stats();
  CHECK(p.stats()[0].runs == 0);
  auto copy = p;  // a copy starts with its own, empty statistics
  copy.run(make_batch<col::user_id>(std::vector<id_type>{1}));
  CHECK(copy.stats()[0].runs == 1);
  CHECK(p.stats()[0].runs == 0);
}

TEST_CASE("run validates the request batch before the first stage") {
  auto p = double_ids{} >> add_one{};
  batch<col::user_id> broken(3);
  broken.get<col::user_id>().resize(2);
  CHECK_THROWS_WITH_AS(p.run(broken), "recpipe: batch: column 'user_id' has 2 values but the batch has 3 requests", error);
  CHECK(p.stats()[0].runs == 0);
}

TEST_CASE("an empty batch runs through every stage") {
  auto p = double_ids{} >> add_one{};
  auto out = p.run(batch<col::user_id>(0));
  CHECK(out.size() == 0);
  CHECK(out.get<plus_one>().empty());
}

TEST_CASE("many threads may run one pipeline at once") {
  const auto p = double_ids{} >> add_one{};
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        const id_type id = t * 1000 + i;
        auto out = p.run(make_batch<col::user_id>(std::vector<id_type>{id, id + 1}));
        if (out.get<plus_one>()[0] != 2 * id + 1 || out.get<plus_one>()[1] != 2 * id + 3) ++wrong;
      }
    });
  for (auto& thread : threads) thread.join();
  CHECK(wrong.load() == 0);
  CHECK(p.stats()[0].runs == 2000);
}

TEST_CASE("a warm pipeline's allocations do not grow with the number of requests") {
  const auto p = double_ids{} >> add_one{};
  const auto count_for = [&](std::size_t n) {
    std::vector<id_type> ids(n, 3);
    auto requests = make_batch<col::user_id>(std::move(ids));
    p.run(requests);  // warm
    const long before = allocations.load();
    auto out = p.run(std::move(requests));
    const long used = allocations.load() - before;
    CHECK(out.size() == n);
    return used;
  };
  const long for_one = count_for(1), for_many = count_for(4096);
  CHECK(for_one == for_many);  // a fixed number per batch (one buffer per output column), none per request
  CHECK(for_one <= 4);
}

struct nothing : stage<nothing> {
  using reads = columns<>;
  using writes = columns<>;
  static constexpr std::string_view name = "nothing";
};

TEST_CASE("describe: a pipeline prints its stages and the columns each reads and adds") {
  const auto p = double_ids{} >> add_one{} >> add_one{};
  const std::string expected =
      "pipeline of 3 stages (reads: user_id; adds: doubled, plus_one)\n"
      "  1. double_ids  reads: user_id  adds: doubled\n"
      "  2. add_one  reads: doubled  adds: plus_one\n"
      "  3. add_one  reads: doubled  adds: plus_one\n";
  CHECK(p.describe() == expected);
  std::ostringstream os;
  os << p;
  CHECK(os.str() == expected);
  // One stage alone, and a stage that reads and adds nothing.
  CHECK(describe(add_one{}) == "add_one  reads: doubled  adds: plus_one\n");
  CHECK(describe(nothing{}) == "nothing  reads: -  adds: -\n");
  CHECK(pipeline<nothing>(nothing{}).describe() == "pipeline of 1 stage (reads: -; adds: -)\n  1. nothing  reads: -  adds: -\n");
}

// A backend with per-run state (as the CUDA backend's device copies of columns): the pipeline calls
// its hooks around the whole run and around each stage, and only the outermost level finishes.
namespace {
struct hooked_backend {
  static constexpr std::string_view name = "hooked";
  int depth = 0, begins = 0, outer_finishes = 0, aborts = 0;
  std::size_t finished_size = 0;
  bool throw_in_add_one = false;
  void begin_run() {
    ++depth;
    ++begins;
  }
  template <class Batch>
  void finish_run(Batch& batch) {
    if (--depth == 0) {
      ++outer_finishes;
      finished_size = batch.size();
    }
  }
  void abort_run() noexcept {
    --depth;
    ++aborts;
  }
};
}  // namespace

template <>
struct recpipe::stage_impl<double_ids, hooked_backend> {
  template <class Batch>
  static auto run(const double_ids& s, Batch&& batch, hooked_backend&) {
    cpu_backend host;
    return stage_impl<double_ids, cpu_backend>::run(s, std::forward<Batch>(batch), host);
  }
};
template <>
struct recpipe::stage_impl<add_one, hooked_backend> {
  template <class Batch>
  static auto run(const add_one& s, Batch&& batch, hooked_backend& backend) {
    if (backend.throw_in_add_one) detail::fail("add_one: asked to fail");
    cpu_backend host;
    return stage_impl<add_one, cpu_backend>::run(s, std::forward<Batch>(batch), host);
  }
};

TEST_CASE("a backend's run hooks: begin and finish around the run and each stage, abort when a stage throws") {
  static_assert(backend_with_run_hooks<hooked_backend>);
  static_assert(!backend_with_run_hooks<cpu_backend>);
  hooked_backend backend;
  const auto p = double_ids{} >> add_one{};
  const auto out = p.run(make_batch<col::user_id>(std::vector<id_type>{1, 2, 3}), backend);
  CHECK(out.get<plus_one>() == std::vector<id_type>{3, 5, 7});
  CHECK(backend.begins == 3);  // the run and its two stages
  CHECK(backend.outer_finishes == 1);
  CHECK(backend.finished_size == 3);
  CHECK(backend.depth == 0);

  // A stage on its own is a run.
  (void)double_ids{}(make_batch<col::user_id>(std::vector<id_type>{4}), backend);
  CHECK(backend.outer_finishes == 2);

  backend.throw_in_add_one = true;
  CHECK_THROWS_WITH(p.run(make_batch<col::user_id>(std::vector<id_type>{1}), backend), doctest::Contains("add_one: asked to fail"));
  CHECK(backend.aborts == 2);  // the stage's level and the run's
  CHECK(backend.depth == 0);
  CHECK(backend.outer_finishes == 2);
}
