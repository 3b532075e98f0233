// SPDX-License-Identifier: Apache-2.0
// recpipe tests: feature_store updated in place (insert, overwrite, append) while lookups read it
// (also run under ThreadSanitizer: keep it small).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include <recpipe/recpipe.hpp>

using namespace recpipe;

namespace {
constexpr std::size_t dim = 16;
constexpr id_type users = 64;                  // ids [0, users), plus hashed ids far above 2^24
constexpr id_type far = id_type{1} << 40;
constexpr int versions = 600;
}  // namespace

TEST_CASE("feature_store: lookups during in-place overwrites see whole rows, old or new") {
  feature_store<col::user_id, col::user_embedding> store(dim);
  // Only the even ids exist at first; the odd ones (and the hashed ones) arrive while serving.
  for (id_type u = 0; u < users; u += 2) store.insert(u, std::vector<float>(dim, 0.0f));

  std::atomic<bool> done{false};
  std::atomic<long> torn{0}, backwards{0}, rows_read{0}, bad_size{0};
  std::thread writer([&] {
    std::vector<float> row(dim);
    for (int v = 1; v <= versions; ++v) {
      std::fill(row.begin(), row.end(), static_cast<float>(v));
      for (id_type u = 0; u < users; ++u) {
        store.insert(u, row);
        store.insert(far + u, row);
      }
    }
    done.store(true);
  });

  const auto pipeline = lookup(store);
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&, t] {
      std::vector<float> last(static_cast<std::size_t>(2 * users), -1.0f);  // per id: the newest version seen
      std::vector<id_type> who;
      for (id_type u = 0; u < users; ++u) {
        who.push_back(u);
        who.push_back(far + u);
      }
      std::vector<float> row(dim);
      for (int round = 0; !done.load() || round < 3; ++round) {
        // Through the lookup stage, as a serving pipeline reads it...
        const auto out = pipeline(make_batch<col::user_id>(who));
        const auto& m = out.get<col::user_embedding>();
        if (m.rows() != who.size() || m.cols() != dim) ++bad_size;
        for (std::size_t i = 0; i < who.size() && i < m.rows(); ++i) {
          const auto r = m.row(i);
          if (!std::all_of(r.begin(), r.end(), [&](float x) { return x == r[0]; })) ++torn;
          // Unknown ids read as zeros (use_default); a version never goes backwards for one reader.
          if (r[0] < last[i]) ++backwards;
          last[i] = std::max(last[i], r[0]);
          ++rows_read;
        }
        // ... and through read_into.
        const id_type u = static_cast<id_type>((round * 7 + t) % users);
        if (store.read_into(u, row) && !std::all_of(row.begin(), row.end(), [&](float x) { return x == row[0]; }))
          ++torn;
      }
    });
  writer.join();
  for (auto& r : readers) r.join();
  CHECK(rows_read.load() > 0);
  CHECK(torn.load() == 0);
  CHECK(backwards.load() == 0);
  CHECK(bad_size.load() == 0);
  CHECK(store.size() == static_cast<std::size_t>(2 * users));
  std::vector<float> row(dim);
  REQUIRE(store.read_into(far + 3, row));
  CHECK(row[dim - 1] == static_cast<float>(versions));
}

TEST_CASE("feature_store: histories grow by append while lookups read them") {
  feature_store<col::user_id, col::history> histories;
  constexpr id_type people = 32;
  constexpr id_type clicks = 120;
  std::atomic<bool> done{false};
  std::atomic<long> inconsistent{0}, shrunk{0}, lists_read{0};
  std::thread writer([&] {
    // Click c of user u is item u * 1000 + c: a list read at any moment must be u*1000 + 0 .. n-1.
    for (id_type c = 0; c < clicks; ++c)
      for (id_type u = 0; u < people; ++u) histories.append(u, u * 1000 + c);
    done.store(true);
  });
  const auto pipeline = lookup(histories);
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&] {
      std::vector<id_type> who(static_cast<std::size_t>(people));
      for (id_type u = 0; u < people; ++u) who[static_cast<std::size_t>(u)] = u;
      std::vector<std::size_t> last(who.size(), 0);
      for (int round = 0; !done.load() || round < 3; ++round) {
        const auto out = pipeline(make_batch<col::user_id>(who));
        const auto& lists = out.get<col::history>();
        for (std::size_t i = 0; i < who.size(); ++i) {
          const auto list = lists.row(i);
          for (std::size_t c = 0; c < list.size(); ++c)
            if (list[c] != who[i] * 1000 + static_cast<id_type>(c)) ++inconsistent;
          if (list.size() < last[i]) ++shrunk;
          last[i] = list.size();
          ++lists_read;
        }
        histories.read(static_cast<id_type>(round % people), [&](std::span<const id_type> list) {
          for (std::size_t c = 0; c < list.size(); ++c)
            if (list[c] != static_cast<id_type>(round % people) * 1000 + static_cast<id_type>(c)) ++inconsistent;
        });
      }
    });
  writer.join();
  for (auto& r : readers) r.join();
  CHECK(lists_read.load() > 0);
  CHECK(inconsistent.load() == 0);
  CHECK(shrunk.load() == 0);
  CHECK(histories.size() == static_cast<std::size_t>(people));
  CHECK(histories.find(5).size() == static_cast<std::size_t>(clicks));
}

TEST_CASE("feature_store: single values, the missing-id policy and bad writes while serving") {
  feature_store<col::user_id, col::request_seed> seeds(1, on_missing::fail);
  seeds.insert(1, std::uint64_t{1});
  std::atomic<bool> done{false};
  std::atomic<long> errors{0}, wrong{0};
  std::thread writer([&] {
    for (std::uint64_t v = 2; v < 2000; ++v) {
      seeds.insert(1, v);
      if (v % 100 == 0) seeds.insert(static_cast<id_type>(v), v);
    }
    done.store(true);
  });
  std::thread reader([&] {
    const auto pipeline = lookup(seeds);
    std::uint64_t last = 0;
    while (!done.load()) {
      const auto out = pipeline(make_batch<col::user_id>(std::vector<id_type>{1}));
      const std::uint64_t v = out.get<col::request_seed>()[0];
      if (v < last || v == 0) ++wrong;
      last = v;
      try {
        (void)pipeline(make_batch<col::user_id>(std::vector<id_type>{5}));  // never inserted
      } catch (const recpipe::error&) {
        ++errors;
      }
    }
  });
  writer.join();
  reader.join();
  CHECK(wrong.load() == 0);
  CHECK(seeds.size() == 1 + 19);
  CHECK_THROWS_WITH_AS(seeds.insert(-1, std::uint64_t{3}),
                       "recpipe: feature_store<request_seed>: id -1 is negative; ids must be >= 0", error);
  feature_store<col::user_id, col::user_embedding> vectors(4);
  std::vector<float> three(3), out(3);
  CHECK_THROWS_AS(vectors.insert(1, three), error);
  CHECK_THROWS_AS(vectors.read_into(1, out), error);  // output too small for dim 4
  CHECK(vectors.size() == 0);
}
