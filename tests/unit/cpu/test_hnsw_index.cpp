// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu::hnsw_index recall against exact search, deletions, threads and hostile index files.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <recpipe/cpu/exact_index.hpp>

#include "common/index_fixtures.hpp"
#include <recpipe/cpu/hnsw_index.hpp>

namespace {

using recpipe::testing::make_ids;
using recpipe::testing::random_matrix;

using recpipe::id_type;
using recpipe::metric;
using recpipe::cpu::exact_index;
using recpipe::cpu::hnsw_index;
namespace fs = std::filesystem;

// A fresh folder per test case under the test's build folder.
fs::path scratch_dir(const std::string& name) {
  const fs::path dir = fs::path(RECPIPE_TEST_BINARY_DIR) / "hnsw_index_scratch" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<unsigned char> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_bytes(const fs::path& path, const std::vector<unsigned char>& bytes) {
  // Never truncate an existing file: ext4 (auto_da_alloc) flushes a truncated-and-rewritten file
  // on close, which makes thousands of rewrites take seconds. Unlink first instead.
  fs::remove(path);
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Recomputes both checksums after a deliberate edit, so the edit reaches the structural checks
// (what a hostile file, as opposed to a corrupt one, would do).
void reseal(std::vector<unsigned char>& file) {
  constexpr std::size_t header = recpipe::detail::hnsw_file_header::size;
  const std::uint64_t body_size = file.size() - header;
  std::memcpy(file.data() + 56, &body_size, 8);
  const std::uint64_t body_sum = recpipe::detail::index_checksum(file.data() + header, file.size() - header);
  std::memcpy(file.data() + 64, &body_sum, 8);
  const std::uint64_t header_sum = recpipe::detail::index_checksum(file.data(), 72);
  std::memcpy(file.data() + 72, &header_sum, 8);
}

template <class T>
void poke(std::vector<unsigned char>& file, std::size_t offset, T value) {
  std::memcpy(file.data() + offset, &value, sizeof(T));
}

struct results {
  std::vector<id_type> ids;
  std::vector<float> scores;
  std::size_t count = 0;
  bool operator==(const results&) const = default;
};

results search(const hnsw_index& index, std::span<const float> q, std::size_t k) {
  results r{std::vector<id_type>(k), std::vector<float>(k), 0};
  r.count = index.search(q, k, r.ids, r.scores);
  r.ids.resize(r.count);
  r.scores.resize(r.count);
  return r;
}

}  // namespace

TEST_CASE("hnsw_index: recall@10 against exact search is above 0.95 for both metrics") {
  for (const metric kind : {metric::inner_product, metric::l2}) {
    CAPTURE(recpipe::metric_name(kind));
    const std::size_t n = 4000, dim = 32, k = 10;
    const auto items = random_matrix(n, dim, 11);
    const auto ids = make_ids(n);
    hnsw_index ann(dim, kind, 512, 16, 200, 7);  // small capacity: the adds grow it
    ann.add(ids, items.view());
    exact_index exact(dim, kind);
    exact.add(ids, items.view());
    CHECK(ann.size() == n);
    CHECK(ann.capacity() >= n);
    const auto queries = random_matrix(200, dim, 12);
    ann.set_ef(128);
    const double r = recpipe::cpu::recall_at_k(ann, exact, queries.view(), k);
    MESSAGE(recpipe::metric_name(kind), " recall@10 (ef 128) = ", r);
    CHECK(r > 0.95);

    // Every result is a real id with the exact score of that id, sorted best first.
    const std::set<id_type> valid(ids.begin(), ids.end());
    for (std::size_t q = 0; q < 20; ++q) {
      const results got = search(ann, queries.row(q), k);
      REQUIRE(got.count == k);
      for (std::size_t i = 0; i < k; ++i) {
        REQUIRE(valid.count(got.ids[i]) == 1);
        const std::size_t row = static_cast<std::size_t>((got.ids[i] - 100) / 3);
        double expected = 0;
        for (std::size_t j = 0; j < dim; ++j) {
          const double a = queries(q, j), b = items(row, j);
          expected += kind == metric::inner_product ? a * b : -(a - b) * (a - b);
        }
        CHECK(got.scores[i] == doctest::Approx(expected).epsilon(1e-4).scale(10.0));
        if (i > 0) CHECK(got.scores[i - 1] >= got.scores[i]);
      }
      CHECK(std::set<id_type>(got.ids.begin(), got.ids.end()).size() == k);  // no duplicates
    }
  }
}

TEST_CASE("hnsw_index: parallel batch add keeps recall") {
  const std::size_t n = 3000, dim = 16;
  const auto items = random_matrix(n, dim, 13);
  const auto ids = make_ids(n);
  hnsw_index ann(dim, metric::l2, n);
  ann.add(ids, items.view(), 2);
  exact_index exact(dim, metric::l2);
  exact.add(ids, items.view());
  CHECK(ann.size() == n);
  const auto queries = random_matrix(100, dim, 14);
  CHECK(recpipe::cpu::recall_at_k(ann, exact, queries.view(), 10) > 0.95);
}

TEST_CASE("hnsw_index: k = 0, k > size, empty index, per-call ef and search_batch") {
  hnsw_index index(4, metric::inner_product, 1);
  const std::vector<float> q = {1, 0, 0, 0};
  std::vector<id_type> out_ids(8, -1);
  std::vector<float> out_scores(8, 0);
  CHECK(index.size() == 0);
  CHECK(index.search(q, 5, out_ids, out_scores) == 0);
  CHECK(index.search(q, 0, {}, {}) == 0);

  const auto items = random_matrix(5, 4, 15);
  index.add(std::vector<id_type>{50, 10, 40, 20, 30}, items.view());
  CHECK(index.capacity() >= 5);
  CHECK(index.search(q, 0, {}, {}) == 0);
  CHECK(index.search(q, 1000, out_ids, out_scores) == 5);  // k > size returns size
  CHECK(std::multiset<id_type>(out_ids.begin(), out_ids.begin() + 5) == std::multiset<id_type>{10, 20, 30, 40, 50});
  CHECK(out_ids[5] == -1);
  CHECK(index.search(q, 3, out_ids, out_scores, 1) == 3);  // ef smaller than k: width is max(k, ef)

  const auto queries = random_matrix(6, 4, 16);
  recpipe::matrix<id_type> batch_ids(6, 3);
  recpipe::matrix<float> batch_scores(6, 3);
  REQUIRE(index.search_batch(queries.view(), 3, batch_ids.view(), batch_scores.view()) == 3);
  for (std::size_t r = 0; r < 6; ++r) {
    const results one = search(index, queries.row(r), 3);
    CHECK(std::vector<id_type>(batch_ids.row(r).begin(), batch_ids.row(r).end()) == one.ids);
    CHECK(std::vector<float>(batch_scores.row(r).begin(), batch_scores.row(r).end()) == one.scores);
  }
}

TEST_CASE("hnsw_index: removed ids are never returned, even when most items are removed") {
  const std::size_t n = 1000, dim = 8;
  const auto items = random_matrix(n, dim, 17);
  const auto ids = make_ids(n, 0, 1);
  hnsw_index index(dim, metric::l2, n, 8, 50, 3);
  index.add(ids, items.view());
  std::set<id_type> removed;
  // Remove 95%: the graph walk then finds too few live items and the scan fallback must kick in.
  for (id_type id = 0; id < static_cast<id_type>(n); ++id)
    if (id % 20 != 0) {
      CHECK(index.remove(id));
      removed.insert(id);
    }
  CHECK_FALSE(index.remove(1));     // already removed
  CHECK_FALSE(index.remove(5000));  // never added
  CHECK(index.size() == n / 20);
  CHECK_FALSE(index.contains(1));
  CHECK(index.contains(20));
  const auto queries = random_matrix(50, dim, 18);
  for (std::size_t q = 0; q < queries.rows(); ++q) {
    for (const std::size_t k : {std::size_t{1}, std::size_t{10}, std::size_t{50}, std::size_t{80}}) {
      const results got = search(index, queries.row(q), k);
      CHECK(got.count == std::min(k, index.size()));
      for (const id_type id : got.ids) CHECK(removed.count(id) == 0);
    }
  }
  // Re-adding a removed id revives it with its new vector.
  const std::vector<float> far(dim, 50.0f);
  index.add(7, far);
  CHECK(index.contains(7));
  CHECK(index.size() == n / 20 + 1);
  const results top = search(index, far, 1);
  CHECK(top.ids == std::vector<id_type>{7});
  CHECK(top.scores[0] == doctest::Approx(0.0).scale(1.0));
  // Replacing a live id's vector keeps the size.
  index.add(7, std::vector<float>(dim, -50.0f));
  CHECK(index.size() == n / 20 + 1);
  CHECK(search(index, std::vector<float>(dim, -50.0f), 1).ids == std::vector<id_type>{7});
}

TEST_CASE("hnsw_index: bad arguments throw recpipe::error naming the problem") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(hnsw_index(0), doctest::Contains("dim must be in [1, "), recpipe::error);
  CHECK_THROWS_WITH_AS(hnsw_index(4, metric::l2, 10, 1), doctest::Contains("M must be in [2, 10000] (got 1)"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(hnsw_index(4, metric::l2, 10, 16, 0), doctest::Contains("ef_construction must be at least 1"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(hnsw_index(4, static_cast<metric>(3)), doctest::Contains("unknown metric 3"), recpipe::error);
  // Rejected before any allocation is attempted.
  CHECK_THROWS_WITH_AS(hnsw_index(4, metric::l2, std::size_t{1} << 40), doctest::Contains("exceeds the limit"),
                       recpipe::error);

  hnsw_index index(3, metric::inner_product, 4);
  CHECK_THROWS_WITH_AS(index.add(1, std::vector<float>{1, 2}),
                       doctest::Contains("hnsw_index: add: vector for id 1 has dimension 2 but the index has dimension 3"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(index.add(-1, std::vector<float>{1, 2, 3}), doctest::Contains("id -1 is negative"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(index.add(1, std::vector<float>{1, nan, 3}), doctest::Contains("non-finite value"),
                       recpipe::error);
  CHECK_THROWS_AS(index.remove(-3), recpipe::error);
  CHECK_FALSE(index.contains(-3));
  recpipe::matrix<float> batch(2, 3, 1.0f);
  batch(1, 2) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(index.add(std::vector<id_type>{1, 2}, batch.view()), recpipe::error);
  CHECK(index.size() == 0);  // a bad batch adds nothing
  CHECK_THROWS_WITH_AS(index.add(std::vector<id_type>{1}, batch.view()), doctest::Contains("1 ids but 2 vectors"),
                       recpipe::error);
  CHECK_THROWS_AS(index.reserve(std::size_t{1} << 40), recpipe::error);

  index.add(1, std::vector<float>{1, 2, 3});
  index.add(2, std::vector<float>{3, 2, 1});
  std::vector<id_type> ids(2);
  std::vector<float> scores(2);
  CHECK_THROWS_WITH_AS(index.search(std::vector<float>{1, 2, 3, 4}, 1, ids, scores),
                       doctest::Contains("query has dimension 4 but the index has dimension 3"), recpipe::error);
  CHECK_THROWS_WITH_AS(index.search(std::vector<float>{nan, 2, 3}, 1, ids, scores),
                       doctest::Contains("non-finite value"), recpipe::error);
  CHECK_THROWS_WITH_AS(index.search(std::vector<float>{1, 2, 3}, 1, ids, scores, 0),
                       doctest::Contains("ef must be at least 1"), recpipe::error);
  CHECK_THROWS_WITH_AS(index.set_ef(0), doctest::Contains("ef must be at least 1"), recpipe::error);
  std::vector<id_type> one(1);
  std::vector<float> one_score(1);
  CHECK_THROWS_WITH_AS(index.search(std::vector<float>{1, 2, 3}, 2, one, one_score),
                       doctest::Contains("2 results are needed"), recpipe::error);
  recpipe::matrix<float> queries(2, 3, 1.0f);
  recpipe::matrix<id_type> narrow(2, 1);
  recpipe::matrix<float> narrow_scores(2, 1);
  CHECK_THROWS_WITH_AS(index.search_batch(queries.view(), 2, narrow.view(), narrow_scores.view()),
                       doctest::Contains("2 results per query are needed"), recpipe::error);

  hnsw_index moved(std::move(index));
  CHECK(moved.size() == 2);
  CHECK_THROWS_WITH_AS((void)index.size(), doctest::Contains("moved from"), recpipe::error);  // NOLINT(bugprone-use-after-move)
}

TEST_CASE("hnsw_index: save and load round trip gives identical results") {
  const fs::path dir = scratch_dir("round_trip");
  for (const metric kind : {metric::inner_product, metric::l2}) {
    CAPTURE(recpipe::metric_name(kind));
    const std::size_t n = 1500, dim = 12;
    const auto items = random_matrix(n, dim, 19);
    const auto ids = make_ids(n);
    hnsw_index index(dim, kind, n, 12, 100, 5);
    index.add(ids, items.view());
    for (std::size_t i = 0; i < n; i += 10) index.remove(ids[i]);
    const fs::path file = dir / (std::string(recpipe::metric_name(kind)) + ".hnsw");
    index.save(file);
    const hnsw_index loaded = hnsw_index::load(file);
    CHECK(loaded.dim() == dim);
    CHECK(loaded.metric() == kind);
    CHECK(loaded.m() == 12);
    CHECK(loaded.size() == index.size());
    CHECK_FALSE(loaded.contains(ids[0]));
    CHECK(loaded.contains(ids[1]));
    const auto queries = random_matrix(40, dim, 20);
    for (std::size_t q = 0; q < queries.rows(); ++q) CHECK(search(loaded, queries.row(q), 10) == search(index, queries.row(q), 10));
    // Load re-inserts live items that no link reaches (hnswlib's pruning can leave a few), so the
    // first reload may add elements; from then on save and load reproduce the file byte for byte.
    const fs::path again = dir / "again.hnsw", third = dir / "third.hnsw";
    loaded.save(again);
    hnsw_index::load(again).save(third);
    CHECK(read_bytes(third) == read_bytes(again));
    CHECK(read_bytes(again).size() >= read_bytes(file).size());
  }
  // The empty index round-trips too, and a loaded index accepts new items.
  hnsw_index empty(5, metric::l2);
  empty.save(dir / "empty.hnsw");
  hnsw_index reloaded = hnsw_index::load(dir / "empty.hnsw");
  CHECK(reloaded.size() == 0);
  reloaded.add(3, std::vector<float>{1, 2, 3, 4, 5});
  CHECK(search(reloaded, std::vector<float>{1, 2, 3, 4, 5}, 4).ids == std::vector<id_type>{3});
  // No temporary files are left behind.
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) files += entry.path().extension() == ".tmp";
  CHECK(files == 0);
}

TEST_CASE("hnsw_index: truncated, corrupt and hostile files throw recpipe::io_error") {
  const fs::path dir = scratch_dir("bad_files");
  const std::size_t dim = 6;
  hnsw_index index(dim, metric::inner_product, 64, 4, 20, 1);
  const auto items = random_matrix(60, dim, 21);
  index.add(make_ids(60, 0, 1), items.view());
  index.remove(5);
  const fs::path good = dir / "good.hnsw";
  index.save(good);
  const std::vector<unsigned char> original = read_bytes(good);
  REQUIRE(original.size() > 200);
  const fs::path bad = dir / "bad.hnsw";
  const auto expect_io_error = [&](const std::vector<unsigned char>& bytes, const char* fragment) {
    write_bytes(bad, bytes);
    CHECK_THROWS_WITH_AS(hnsw_index::load(bad), doctest::Contains(fragment), recpipe::io_error);
  };

  SUBCASE("missing file, directory, empty file") {
    CHECK_THROWS_WITH_AS(hnsw_index::load(dir / "nope.hnsw"), doctest::Contains("no such file"), recpipe::io_error);
    CHECK_THROWS_WITH_AS(hnsw_index::load(dir), doctest::Contains("not a regular file"), recpipe::io_error);
    expect_io_error({}, "is truncated");
    CHECK_THROWS_WITH_AS(index.save(dir / "no_such_dir" / "x.hnsw"), doctest::Contains("existing directory"),
                         recpipe::io_error);
  }
  SUBCASE("every truncation point") {
    for (std::size_t cut = 0; cut < original.size(); ++cut) {
      CAPTURE(cut);
      write_bytes(bad, std::vector<unsigned char>(original.begin(), original.begin() + static_cast<long>(cut)));
      CHECK_THROWS_AS(hnsw_index::load(bad), recpipe::io_error);
    }
    std::vector<unsigned char> longer = original;
    longer.push_back(0);
    expect_io_error(longer, "extra bytes");
  }
  SUBCASE("every flipped byte") {
    for (std::size_t at = 0; at < original.size(); ++at) {
      CAPTURE(at);
      std::vector<unsigned char> flipped = original;
      flipped[at] ^= 0x5a;
      write_bytes(bad, flipped);
      CHECK_THROWS_AS(hnsw_index::load(bad), recpipe::io_error);
    }
  }
  SUBCASE("wrong magic, version and huge sizes in the header") {
    std::vector<unsigned char> bytes = original;
    bytes[0] = 'X';
    expect_io_error(bytes, "bad magic");
    bytes = original;
    poke<std::uint32_t>(bytes, 8, 99);
    expect_io_error(bytes, "format version 99");
    bytes = original;
    poke<std::uint64_t>(bytes, 56, std::uint64_t{1} << 60);  // body size, header checksum stale
    expect_io_error(bytes, "header checksum mismatch");
    // Hostile: the same huge sizes with valid checksums are still refused before any allocation.
    bytes = original;
    reseal(bytes);
    poke<std::uint64_t>(bytes, 56, std::uint64_t{1} << 60);
    const std::uint64_t header_sum = recpipe::detail::index_checksum(bytes.data(), 72);
    poke(bytes, 72, header_sum);
    expect_io_error(bytes, "is truncated or has extra bytes");
    bytes = original;
    poke<std::uint64_t>(bytes, 24, std::uint64_t{1} << 62);  // count
    reseal(bytes);
    expect_io_error(bytes, "elements but the header says");
    bytes = original;
    poke<std::uint64_t>(bytes, 16, std::uint64_t{1} << 40);  // dim
    reseal(bytes);
    expect_io_error(bytes, "invalid header");
    bytes = original;
    poke<std::uint32_t>(bytes, 12, 9);  // metric
    reseal(bytes);
    expect_io_error(bytes, "unknown metric 9");
  }
  SUBCASE("hostile bodies with valid checksums") {
    constexpr std::size_t body = recpipe::detail::hnsw_file_header::size;
    constexpr std::size_t level0 = body + 96;
    const std::size_t element_bytes = (2 * 4 * 4 + 4) + dim * 4 + 8;  // M = 4
    std::vector<unsigned char> bytes = original;
    poke<std::size_t>(bytes, body + 16, 100000);  // element count inside the body
    reseal(bytes);
    expect_io_error(bytes, "body holds 100000 elements");
    bytes = original;
    poke<std::uint32_t>(bytes, level0 + 4, 1000000);  // first neighbour of element 0
    poke<std::uint16_t>(bytes, level0, 1);
    reseal(bytes);
    expect_io_error(bytes, "links to element 1000000");
    bytes = original;
    poke<std::uint16_t>(bytes, level0 + element_bytes, 60000);  // link count of element 1
    reseal(bytes);
    expect_io_error(bytes, "level-0 links");
    bytes = original;
    poke<float>(bytes, level0 + 2 * element_bytes + (2 * 4 * 4 + 4), std::numeric_limits<float>::quiet_NaN());
    reseal(bytes);
    expect_io_error(bytes, "non-finite vector value");
    bytes = original;
    poke<std::uint64_t>(bytes, level0 + element_bytes - 8, 1);  // label of element 0 := id of element 1
    reseal(bytes);
    expect_io_error(bytes, "appears twice");
    bytes = original;
    poke<std::uint64_t>(bytes, level0 + element_bytes - 8, std::uint64_t{1} << 63);  // negative as int64
    reseal(bytes);
    expect_io_error(bytes, "beyond the largest id");
    bytes = original;
    poke<std::uint32_t>(bytes, body + 52, 100000);  // entry point
    reseal(bytes);
    expect_io_error(bytes, "entry point");
    bytes = original;
    poke<int>(bytes, body + 48, 5000);  // max level
    reseal(bytes);
    expect_io_error(bytes, "max level 5000");
    bytes = original;
    bytes[level0 + 3] = 0x80;  // unknown flag bits
    reseal(bytes);
    expect_io_error(bytes, "unknown flag bits");
    bytes = original;
    poke<std::uint32_t>(bytes, level0 + 60 * element_bytes, 0xFFFFFFF1u);  // first upper-level list size
    reseal(bytes);
    expect_io_error(bytes, "link list");
  }
}

TEST_CASE("hnsw_index: concurrent searches with different ef agree with single-threaded results") {
  const std::size_t n = 3000, dim = 16, nq = 48, k = 10;
  const auto items = random_matrix(n, dim, 22);
  hnsw_index index(dim, metric::inner_product, n);
  index.add(make_ids(n), items.view());
  const auto queries = random_matrix(nq, dim, 23);
  const std::size_t efs[4] = {16, 64, 200, 10};
  std::vector<std::vector<results>> expected(4);
  for (std::size_t t = 0; t < 4; ++t)
    for (std::size_t q = 0; q < nq; ++q) {
      results r{std::vector<id_type>(k), std::vector<float>(k), 0};
      r.count = index.search(queries.row(q), k, r.ids, r.scores, efs[t]);
      expected[t].push_back(r);
    }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      results r{std::vector<id_type>(k), std::vector<float>(k), 0};
      for (int rep = 0; rep < 10; ++rep)
        for (std::size_t q = 0; q < nq; ++q) {
          r.count = index.search(queries.row(q), k, r.ids, r.scores, efs[t]);
          if (!(r == expected[t][q])) ++mismatches;
        }
    });
  for (auto& t : threads) t.join();
  CHECK(mismatches.load() == 0);
}

TEST_CASE("hnsw_index: searches run safely while another thread adds and removes") {
  const std::size_t dim = 8;
  const auto items = random_matrix(2000, dim, 24);
  hnsw_index index(dim, metric::l2, 16);  // tiny capacity: the writer forces resizes mid-search
  index.add(make_ids(500, 0, 1), items.view().middle_rows(0, 500));
  std::atomic<bool> done{false};
  std::atomic<int> invalid{0};
  std::thread writer([&] {
    for (std::size_t i = 500; i < 2000; ++i) {
      index.add(static_cast<id_type>(i), items.row(i));
      if (i % 4 == 0) index.remove(static_cast<id_type>(i - 400));
    }
    done = true;
  });
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&, t] {
      std::vector<id_type> ids(20);
      std::vector<float> scores(20);
      for (std::size_t q = static_cast<std::size_t>(t); !done; q = (q + 7) % 2000) {
        const std::size_t count = index.search(items.row(q), 20, ids, scores);
        for (std::size_t i = 0; i < count; ++i)
          if (ids[i] < 0 || ids[i] >= 2000) ++invalid;
      }
    });
  writer.join();
  for (auto& r : readers) r.join();
  CHECK(invalid.load() == 0);
  CHECK(index.size() == 2000 - 375);
}

namespace {

// Checks every search answer of a churned index against a model of the live items: exactly
// min(k, live) results, each a live id with its exact score, best first, no repeats.
void check_against_model(const hnsw_index& index, const std::map<id_type, std::vector<float>>& live,
                         std::span<const float> query, std::size_t k, const std::string& where) {
  const results got = search(index, query, k);
  REQUIRE_MESSAGE(got.count == std::min(k, live.size()), where);
  std::set<id_type> seen;
  for (std::size_t i = 0; i < got.count; ++i) {
    const auto found = live.find(got.ids[i]);
    REQUIRE_MESSAGE(found != live.end(), where, ": returned id ", got.ids[i], " is not live");
    REQUIRE_MESSAGE(seen.insert(got.ids[i]).second, where, ": id ", got.ids[i], " returned twice");
    float expected = 0;
    for (std::size_t j = 0; j < query.size(); ++j)
      expected += index.metric() == metric::l2 ? -(query[j] - found->second[j]) * (query[j] - found->second[j])
                                               : query[j] * found->second[j];
    REQUIRE_MESSAGE(std::abs(got.scores[i] - expected) <= 1e-4f * (1 + std::abs(expected)), where);
    if (i > 0) REQUIRE_MESSAGE(got.scores[i] <= got.scores[i - 1], where);
  }
}

}  // namespace

TEST_CASE("hnsw_index: the issue's churn (dim 1, M = 2, ef_construction = 4) does not crash") {
  // Found by a search over seeds against the previous code (hnswlib's addPoint): the re-adds read
  // selectedNeighbors.back() of an empty vector (heap-buffer-overflow under ASan).
  const float first[8] = {0.147647381f, -0.657337129f, -0.218060791f, 0.394533992f,
                          -0.85873735f, 0.651720047f,  0.717317462f,  -0.630648136f};
  const float then[8] = {-0.38835603f, 0.664660096f, -0.511982739f, 0.948991299f,
                         0.109196544f, -0.581672192f, 0.769876838f, -0.557887912f};
  for (const std::size_t keep : {8, 7}) {  // remove all of them, or all but one
    hnsw_index index(1, metric::l2, 8, 2, 4, 264);
    for (id_type id = 0; id < 8; ++id) index.add(id, std::vector<float>{first[id]});
    for (id_type id = 0; id < static_cast<id_type>(keep); ++id) index.remove(id);
    for (id_type id = 8; id < 16; ++id) index.add(id, std::vector<float>{then[id - 8]});
    for (id_type id = 0; id < 8; ++id) index.add(id, std::vector<float>{then[id]});  // re-add the removed ids
    CHECK(index.size() == 16);
    CHECK(search(index, std::vector<float>{0.1f}, 16).count == 16);
  }
}

// Random add / remove / re-add / search / parallel batch / save+load interleavings over many
// seeds, every M the issue names and small dimensions (ties in dim 1, the worst case for the
// neighbour heuristic). Any state in which hnswlib's insertion would read out of bounds is an
// ASan report here; every answer is checked against a model.
TEST_CASE("hnsw_index: randomized churn never crashes and every search stays exact about live ids") {
  const fs::path dir = scratch_dir("churn");
  std::size_t rounds = 0;
  for (std::uint32_t seed = 0; seed < 60; ++seed) {
    std::mt19937 rng(seed);
    const std::size_t m = std::array<std::size_t, 5>{2, 3, 4, 8, 16}[seed % 5];
    const std::size_t dim = 1 + rng() % 8;
    const std::size_t ef_construction = 1 + rng() % 12;
    const metric kind = seed % 2 == 0 ? metric::l2 : metric::inner_product;
    const id_type universe = 8 + static_cast<id_type>(rng() % 40);
    const std::string where = "seed " + std::to_string(seed) + " M " + std::to_string(m) + " dim " +
                              std::to_string(dim) + " efc " + std::to_string(ef_construction);
    hnsw_index index(dim, kind, 4, m, ef_construction, seed);
    std::map<id_type, std::vector<float>> live;
    std::uniform_int_distribution<int> coarse(-2, 2);  // few distinct values: many exact ties
    const auto vector = [&] {
      std::vector<float> v(dim);
      for (auto& x : v) x = static_cast<float>(coarse(rng)) * 0.5f;
      return v;
    };
    for (int op = 0; op < 300; ++op, ++rounds) {
      const unsigned what = rng() % 100;
      const auto id = static_cast<id_type>(rng() % static_cast<unsigned>(universe));
      if (what < 40) {
        auto v = vector();
        index.add(id, v);
        live[id] = std::move(v);
      } else if (what < 80) {
        CHECK(index.remove(id) == (live.erase(id) == 1));
      } else if (what < 82) {  // remove about 90% of what is live
        for (auto it = live.begin(); it != live.end();)
          if (rng() % 10 != 0) {
            REQUIRE(index.remove(it->first));
            it = live.erase(it);
          } else {
            ++it;
          }
      } else if (what < 85) {  // a batch with repeated ids, in parallel or not
        const std::size_t n = 1 + rng() % 12;
        std::vector<id_type> ids(n);
        recpipe::matrix<float> rows(n, dim);
        for (std::size_t i = 0; i < n; ++i) {
          ids[i] = static_cast<id_type>(rng() % static_cast<unsigned>(universe));
          const auto v = vector();
          std::copy(v.begin(), v.end(), rows.row(i).begin());
        }
        index.add(ids, rows.view(), 1 + rng() % 3);
        for (std::size_t i = 0; i < n; ++i) live[ids[i]].assign(rows.row(i).begin(), rows.row(i).end());
      } else if (what < 86) {  // save and load the churned graph, carry on with the loaded one
        index.save(dir / "churn.hnsw");
        index = hnsw_index::load(dir / "churn.hnsw");
      } else {
        check_against_model(index, live, vector(), 1 + rng() % 10, where);
      }
      REQUIRE_MESSAGE(index.size() == live.size(), where);
    }
    check_against_model(index, live, vector(), live.size() + 1, where);
  }
  CHECK(rounds == 60 * 300);
}

namespace {

// A hand-built hnswlib 0.6.2 body with a valid recpipe header and checksums: what a hostile file
// can look like once it passes the checksum checks.
struct hostile_element {
  float value = 0;  // dim 1
  id_type id = 0;
  bool deleted = false;
  std::vector<std::vector<std::uint32_t>> links;  // links[level]; levels = links.size() - 1
};

std::vector<unsigned char> build_index_file(const std::vector<hostile_element>& elements, std::uint32_t entry,
                                            int max_level, std::size_t m = 2) {
  std::vector<unsigned char> body;
  const auto put = [&](const auto& value) {
    const auto* p = reinterpret_cast<const unsigned char*>(&value);
    body.insert(body.end(), p, p + sizeof(value));
  };
  const std::size_t links0 = 2 * m * 4 + 4, data = 4, per_element = links0 + data + 8, links_up = m * 4 + 4;
  const std::size_t ef_construction = std::max<std::size_t>(4, m);
  put(std::size_t{0});
  put(std::max<std::size_t>(elements.size(), 1));
  put(elements.size());
  put(per_element);
  put(links0 + data);  // label offset
  put(links0);         // data offset
  put(max_level);
  put(entry);
  put(m);
  put(2 * m);
  put(m);
  put(1.0 / std::log(static_cast<double>(m)));
  put(ef_construction);
  const auto put_list = [&](const std::vector<std::uint32_t>& list, std::size_t slots, std::uint8_t flags) {
    put(static_cast<std::uint16_t>(list.size()));
    put(flags);
    put(std::uint8_t{0});
    for (std::size_t j = 0; j < slots; ++j) put(j < list.size() ? list[j] : std::uint32_t{0});
  };
  for (const auto& e : elements) {
    put_list(e.links[0], 2 * m, e.deleted ? 1 : 0);
    put(e.value);
    put(static_cast<std::uint64_t>(e.id));
  }
  for (const auto& e : elements) {
    put(static_cast<std::uint32_t>((e.links.size() - 1) * links_up));
    for (std::size_t level = 1; level < e.links.size(); ++level) put_list(e.links[level], m, 0);
  }
  recpipe::detail::hnsw_file_header h;
  h.kind = static_cast<std::uint32_t>(metric::l2);
  h.dim = 1;
  h.count = elements.size();
  h.m = m;
  h.ef_construction = ef_construction;
  h.seed = 7;
  h.body_size = body.size();
  h.body_checksum = recpipe::detail::index_checksum(body.data(), body.size());
  std::vector<unsigned char> file(recpipe::detail::hnsw_file_header::size + body.size());
  h.write(file.data());
  std::copy(body.begin(), body.end(), file.begin() + recpipe::detail::hnsw_file_header::size);
  return file;
}

}  // namespace

TEST_CASE("hnsw_index: hostile structures with valid checksums are refused or repaired at load") {
  const fs::path dir = scratch_dir("hostile_structures");
  const fs::path path = dir / "hostile.hnsw";
  const auto expect_io_error = [&](const std::vector<unsigned char>& file, const char* what) {
    write_bytes(path, file);
    CHECK_THROWS_WITH_AS(hnsw_index::load(path), doctest::Contains(what), recpipe::io_error);
  };
  SUBCASE("a well-formed hand-built file loads") {
    write_bytes(path, build_index_file({{1.0f, 5, false, {{1}}}, {3.0f, 6, false, {{0}, {}}}}, 1, 1));
    const hnsw_index index = hnsw_index::load(path);
    CHECK(index.size() == 2);
    CHECK(search(index, std::vector<float>{1.0f}, 2).ids == std::vector<id_type>{5, 6});
  }
  SUBCASE("an empty graph must have no entry point") {
    write_bytes(path, build_index_file({}, recpipe::detail::hnsw_no_entry_point, -1));
    hnsw_index empty = hnsw_index::load(path);
    empty.add(1, std::vector<float>{2.0f});  // the first add sets the entry point
    CHECK(search(empty, std::vector<float>{2.0f}, 1).ids == std::vector<id_type>{1});
    expect_io_error(build_index_file({}, 0, -1), "empty graph with entry point 0");
    expect_io_error(build_index_file({}, 5, -1), "empty graph with entry point 5");
  }
  SUBCASE("levels, link counts and link targets") {
    // Entry point below the top level.
    expect_io_error(build_index_file({{0.0f, 1, false, {{1}}}, {1.0f, 2, false, {{0}, {}}}}, 0, 1), "entry point 0 has level 0");
    // A level-1 link to an element that has no level 1.
    expect_io_error(build_index_file({{0.0f, 1, false, {{1}, {1}}}, {1.0f, 2, false, {{0}}}}, 0, 1),
                    "which is not on that level");
    // Three links at level 1 with M = 2.
    expect_io_error(build_index_file({{0.0f, 1, false, {{1}, {1, 1, 1}}}, {1.0f, 2, false, {{0}, {}}}}, 0, 1),
                    "3 links at level 1");
    // A level-0 link past the element count.
    expect_io_error(build_index_file({{0.0f, 1, false, {{2}}}, {1.0f, 2, false, {{0}}}}, 0, 0), "links to element 2");
    // An element above the max level.
    expect_io_error(build_index_file({{0.0f, 1, false, {{1}}}, {1.0f, 2, false, {{0}, {}, {}}}}, 0, 0), "above the max level");
  }
  SUBCASE("live items unreachable from the entry point and a deleted island: load repairs, adds never crash") {
    // 0 = entry (level 1, live) -> level 1 -> 1 (deleted); 1 and 2 form a deleted island on level
    // 0 that the greedy descent for a query near 10 walks into; 3 is live and linked; 4 is live
    // and linked from nowhere. hnswlib's insertion from inside the island found no candidate.
    const std::vector<hostile_element> elements = {
        {0.0f, 100, false, {{3}, {1}}},
        {10.0f, 101, true, {{2}, {0}}},
        {11.0f, 102, true, {{1}}},
        {1.0f, 103, false, {{0}}},
        {20.0f, 104, false, {{}}},
    };
    write_bytes(path, build_index_file(elements, 0, 1));
    hnsw_index index = hnsw_index::load(path);
    CHECK(index.size() == 3);
    CHECK(search(index, std::vector<float>{20.0f}, 1).ids == std::vector<id_type>{104});
    // 104 was re-inserted at load: the saved graph reaches every live item from its entry point.
    index.save(path);
    {
      const std::vector<unsigned char> saved = read_bytes(path);
      constexpr std::size_t header = recpipe::detail::hnsw_file_header::size;
      const auto h = recpipe::detail::hnsw_file_header::read(saved.data(), path.string());
      std::vector<std::uint32_t> unreachable{99};
      CHECK(recpipe::detail::validate_hnsw_body(saved.data() + header, saved.size() - header, h, path.string(),
                                                &unreachable) == 3);  // 1, 2 and 104's old element
      CHECK(unreachable.empty());
    }
    for (id_type id = 0; id < 40; ++id) index.add(id, std::vector<float>{10.0f + 0.05f * static_cast<float>(id)});
    CHECK(index.size() == 43);
    const results all = search(index, std::vector<float>{10.5f}, 43);
    CHECK(all.count == 43);
    CHECK(std::set<id_type>(all.ids.begin(), all.ids.end()).size() == 43);
    index.save(path);
    CHECK(hnsw_index::load(path).size() == 43);
  }
}
