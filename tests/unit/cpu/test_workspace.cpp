// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu::workspace (the scratch stack passed down the kernels): nesting, alignment,
// growth that keeps earlier spans valid, no allocation once warm, one workspace per thread.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <vector>

#include <recpipe/cpu/workspace.hpp>

namespace cpu = recpipe::cpu;

namespace {
bool aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % cpu::workspace::alignment == 0; }

// One run of a nested workload: an outer buffer that stays filled while inner frames come and go.
// Returns false if an inner frame clobbered an outer buffer.
bool run_workload(cpu::workspace& ws, std::size_t scale) {
  const cpu::workspace::frame outer(ws);
  const std::span<float> a = ws.take<float>(1000 * scale);
  std::iota(a.begin(), a.end(), 0.0f);
  for (int call = 0; call < 3; ++call) {
    const cpu::workspace::frame inner(ws);
    const std::span<double> b = ws.take<double>(3000 * scale);
    std::fill(b.begin(), b.end(), -1.0);
    {
      const cpu::workspace::frame innermost(ws);
      const std::span<std::size_t> c = ws.take<std::size_t>(50000 * scale);
      std::fill(c.begin(), c.end(), std::size_t{7});
    }
    if (!std::all_of(b.begin(), b.end(), [](double v) { return v == -1.0; })) return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i] != static_cast<float>(i)) return false;
  return true;
}
}  // namespace

TEST_CASE("workspace: takes are 64-byte aligned, disjoint, and a frame gives them back") {
  cpu::workspace ws;
  CHECK(ws.blocks() == 0);
  CHECK(ws.in_use() == 0);
  {
    const cpu::workspace::frame frame(ws);
    const std::span<char> one = ws.take<char>(1);
    const std::span<float> floats = ws.take<float>(17);
    const std::span<std::uint64_t> ids = ws.take<std::uint64_t>(3);
    CHECK(one.size() == 1);
    CHECK(floats.size() == 17);
    CHECK(ids.size() == 3);
    CHECK(aligned(one.data()));
    CHECK(aligned(floats.data()));
    CHECK(aligned(ids.data()));
    // Each take is rounded up to whole cache lines, so no two spans share one.
    CHECK(reinterpret_cast<const char*>(floats.data()) >= one.data() + 64);
    CHECK(reinterpret_cast<const char*>(ids.data()) >= reinterpret_cast<const char*>(floats.data() + 17));
    CHECK(ws.in_use() == 64 + 128 + 64);
    CHECK(ws.take<float>(0).empty());  // takes nothing
    CHECK(ws.in_use() == 256);
  }
  CHECK(ws.in_use() == 0);
  const cpu::workspace::frame again(ws);
  const std::span<char> first = ws.take<char>(1);
  CHECK(ws.in_use() == 64);
  CHECK(aligned(first.data()));
}

TEST_CASE("workspace: nested frames restore the top in order") {
  cpu::workspace ws;
  const cpu::workspace::frame outer(ws);
  const std::span<float> a = ws.take<float>(100);
  std::fill(a.begin(), a.end(), 1.0f);
  const std::size_t after_a = ws.in_use();
  float* inner_first = nullptr;
  {
    const cpu::workspace::frame inner(ws);
    const std::span<float> b = ws.take<float>(100);
    inner_first = b.data();
    CHECK(b.data() != a.data());
    std::fill(b.begin(), b.end(), 2.0f);
    {
      const cpu::workspace::frame innermost(ws);
      const std::span<float> c = ws.take<float>(5);
      CHECK(c.data() != b.data());
      CHECK(ws.in_use() > after_a + 400);
    }
    CHECK(ws.in_use() == after_a + 448);  // 400 bytes rounded up to 7 cache lines
  }
  CHECK(ws.in_use() == after_a);
  {
    const cpu::workspace::frame inner(ws);
    CHECK(ws.take<float>(100).data() == inner_first);  // the same memory again
  }
  CHECK(std::all_of(a.begin(), a.end(), [](float v) { return v == 1.0f; }));
}

TEST_CASE("workspace: growth adds blocks and never moves memory already taken") {
  cpu::workspace ws;
  {
    const cpu::workspace::frame outer(ws);
    const std::span<float> small = ws.take<float>(1000);
    std::iota(small.begin(), small.end(), 0.0f);
    const std::size_t blocks_before = ws.blocks();
    // Far larger than the first block: needs a new one while `small` is still in use.
    const std::span<float> big = ws.take<float>(1 << 20);
    CHECK(ws.blocks() > blocks_before);
    CHECK(aligned(big.data()));
    std::fill(big.begin(), big.end(), -3.0f);
    {
      const cpu::workspace::frame inner(ws);
      const std::span<float> bigger = ws.take<float>(1 << 22);
      std::fill(bigger.begin(), bigger.end(), 5.0f);
    }
    for (std::size_t i = 0; i < small.size(); ++i) REQUIRE(small[i] == static_cast<float>(i));
    CHECK(std::all_of(big.begin(), big.end(), [](float v) { return v == -3.0f; }));
    CHECK(ws.blocks() >= 2);
  }
  // The stack is empty again: the blocks are merged into one at least as large as all of them.
  CHECK(ws.blocks() == 1);
  CHECK(ws.capacity() >= (std::size_t{1} << 22) * sizeof(float) + (std::size_t{1} << 20) * sizeof(float));
  CHECK(ws.in_use() == 0);
}

TEST_CASE("workspace: a warm workload allocates nothing") {
  cpu::workspace ws;
  CHECK(run_workload(ws, 1));
  CHECK(ws.blocks() == 1);
  const std::size_t allocations = ws.allocations(), capacity = ws.capacity();
  for (int run = 0; run < 20; ++run) REQUIRE(run_workload(ws, 1));
  CHECK(ws.allocations() == allocations);
  CHECK(ws.capacity() == capacity);
  CHECK(ws.blocks() == 1);
  // A smaller workload fits too; a larger one grows once, then is warm as well.
  CHECK(run_workload(ws, 0));
  CHECK(ws.allocations() == allocations);
  CHECK(run_workload(ws, 3));
  const std::size_t grown = ws.allocations();
  CHECK(grown > allocations);
  CHECK(ws.blocks() == 1);
  for (int run = 0; run < 5; ++run) REQUIRE(run_workload(ws, 3));
  CHECK(ws.allocations() == grown);
}

TEST_CASE("workspace: an exception unwinds the frames") {
  cpu::workspace ws;
  const auto throwing = [&] {
    const cpu::workspace::frame frame(ws);
    (void)ws.take<float>(4096);
    throw std::runtime_error("boom");
  };
  CHECK_THROWS_AS(throwing(), std::runtime_error);
  CHECK(ws.in_use() == 0);
  const cpu::workspace::frame frame(ws);
  CHECK_THROWS_WITH_AS(ws.take<double>(std::size_t(-1) / 4), doctest::Contains("cpu::workspace::take"), recpipe::error);
  CHECK(ws.in_use() == 0);
}

TEST_CASE("workspace: each thread has its own") {
  cpu::workspace& mine = cpu::workspace::for_this_thread();
  CHECK(&mine == &cpu::workspace::for_this_thread());
  constexpr int threads = 8;
  std::vector<const cpu::workspace*> seen(threads, nullptr);
  std::vector<int> ok(threads, 0);
  std::atomic<int> arrived{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      cpu::workspace& ws = cpu::workspace::for_this_thread();
      seen[static_cast<std::size_t>(t)] = &ws;
      bool good = true;
      for (int run = 0; run < 20 && good; ++run) {
        const cpu::workspace::frame frame(ws);
        const std::span<int> values = ws.take<int>(5000 + static_cast<std::size_t>(t) * 100);
        std::fill(values.begin(), values.end(), t);
        good = run_workload(ws, 1) && std::all_of(values.begin(), values.end(), [t](int v) { return v == t; });
      }
      ok[static_cast<std::size_t>(t)] = good && ws.in_use() == 0 ? 1 : 0;
      // All threads alive at once, so no two thread_local workspaces can share an address.
      arrived.fetch_add(1);
      while (arrived.load() < threads) std::this_thread::yield();
    });
  for (std::thread& t : pool) t.join();
  for (int t = 0; t < threads; ++t) {
    CHECK(ok[static_cast<std::size_t>(t)] == 1);
    CHECK(seen[static_cast<std::size_t>(t)] != &mine);
    for (int u = 0; u < t; ++u) CHECK(seen[static_cast<std::size_t>(t)] != seen[static_cast<std::size_t>(u)]);
  }
}
