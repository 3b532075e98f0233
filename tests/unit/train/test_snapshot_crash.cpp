// SPDX-License-Identifier: Apache-2.0
// recpipe tests: train/snapshot.hpp crash safety. A forked child writes snapshot N+1 and is
// SIGKILLed after a random delay (seeded) somewhere inside the write; the parent then checks that
// LATEST names a complete snapshot (N, or N+1 when the child got that far) that loads and equals
// the state it was written from, that every snap-* directory is complete, and that the next
// write cleans the leftovers up.
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <recpipe/train/snapshot.hpp>

#include "common/snapshot_fixtures.hpp"

namespace train = recpipe::train;
namespace fs = std::filesystem;
using recpipe::testing::flatten;
using recpipe::testing::same_bits;
using recpipe::testing::snapshot_state;
using recpipe::testing::temp_dir;

namespace {
std::uint64_t version_of(const fs::path& dir) { return std::stoull(dir.filename().string().substr(5)); }
}  // namespace

TEST_CASE("snapshot: a writer killed at random points never damages the latest snapshot") {
  // Tables big enough that a write takes a few milliseconds (several files, each fsynced).
  constexpr std::size_t rows = 20000, dim = 16;
  temp_dir root("snapshot-crash");
  snapshot_state s(1, rows, dim);
  s.step(0);
  train::write_snapshot(root.path, 1, s.parts(), {.keep = 0});
  std::map<std::uint64_t, std::vector<float>> expected;
  expected[1] = flatten(s);

  // How long one write takes here (sanitizers, a loaded machine): the kill delays span it twice over, so that some writers finish.
  double write_us = 0;
  {
    temp_dir probe("snapshot-crash-probe");
    const auto start = std::chrono::steady_clock::now();
    train::write_snapshot(probe.path, 1, s.parts());
    write_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  }
  MESSAGE("one snapshot write takes ", write_us, " us");

  std::mt19937 rng(20261130);
  int interrupted = 0, completed = 0;
  std::uint64_t latest = 1;
  for (int round = 1; round <= 10; ++round) {
    s.step(round);
    const std::uint64_t next = latest + 1;
    expected[next] = flatten(s);
    const auto delay = std::chrono::microseconds(static_cast<long>(std::uniform_real_distribution<double>(0.0, 2.0)(rng) * write_us));
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      try {
        train::write_snapshot(root.path, next, s.parts(), {.keep = 0});
      } catch (...) {
        ::_exit(3);
      }
      ::_exit(0);
    }
    std::this_thread::sleep_for(delay);
    ::kill(child, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    const bool finished = WIFEXITED(status);
    if (finished) CHECK(WEXITSTATUS(status) == 0);

    // LATEST names a complete snapshot: the previous one, or the new one if the child got past
    // the pointer's rename.
    const fs::path dir = train::latest_snapshot(root.path);
    const std::uint64_t v = version_of(dir);
    CHECK((v == latest || v == next));
    if (finished) CHECK(v == next);
    snapshot_state restored(77, rows, dim);
    const train::snapshot_info info = train::load_snapshot(dir, restored.parts());
    CHECK(info.model_version == v);
    CHECK(same_bits(flatten(restored), expected[v]));
    // Every directory named like a snapshot is complete (verify checks manifest, sizes, CRCs).
    for (const auto& e : fs::directory_iterator(root.path)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("snap-", 0) == 0) CHECK_NOTHROW(train::verify_snapshot(e.path()));
    }
    if (v == next) {
      ++completed;
      latest = next;
    } else {
      ++interrupted;
    }
  }
  MESSAGE(interrupted, " writers killed before LATEST moved, ", completed, " got that far");
  CHECK(interrupted >= 1);

  // The next write succeeds over the leftovers and removes them.
  s.step(99);
  train::write_snapshot(root.path, latest + 1, s.parts(), {.keep = 0});
  for (const auto& e : fs::directory_iterator(root.path)) {
    const std::string name = e.path().filename().string();
    CHECK_MESSAGE(name.rfind(".tmp-", 0) != 0, name);
    CHECK_MESSAGE(name.rfind(".old-", 0) != 0, name);
  }
  snapshot_state restored(78, rows, dim);
  train::load_latest_snapshot(root.path, restored.parts());
  CHECK(same_bits(flatten(restored), flatten(s)));
}
