// SPDX-License-Identifier: Apache-2.0
// recpipe tests: kernels give identical results on 1 and several threads, errors cross threads, concurrent callers are safe.
#include <doctest/doctest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include <recpipe/cpu/attention.hpp>
#include <recpipe/cpu/cross.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/cpu/threads.hpp>
#include <recpipe/cpu/topk.hpp>

#include "unit/cpu/reference.hpp"

namespace cpu = recpipe::cpu;
using recpipe::id_type;

namespace {
struct bag_case {
  ref::buffer table{5000, 32};
  std::vector<id_type> ids, offsets;
  bag_case() {
    std::mt19937 rng(50);
    ref::fill(table, rng);
    std::uniform_int_distribution<id_type> pick(0, 4999);
    for (std::size_t b = 0; b < 600; ++b) {
      offsets.push_back(static_cast<id_type>(ids.size()));
      for (std::size_t i = 0; i < 20 + b % 7; ++i) ids.push_back(pick(rng));
    }
  }
  std::vector<float> run() const {
    ref::buffer out(offsets.size(), 32);
    cpu::embedding_bag(cpu::embedding_table_view::fp32(table.cview()), ids, offsets, {}, cpu::pooling::mean, out.view());
    return ref::flatten(out);
  }
};
}  // namespace

TEST_CASE("bags, interaction, attention and top_k_rows are bit-identical on 1 and 3 threads") {
  bag_case bags;
  std::mt19937 rng(51);
  ref::buffer feats(700, 27 * 16);
  ref::fill(feats, rng);
  const auto interaction = [&] {
    ref::buffer z(700, cpu::interaction_size(27, false));
    cpu::dot_interaction(feats.cview(), 27, false, z.view());
    std::vector<float> fm(700);
    cpu::fm_second_order(feats.cview(), 27, fm);
    auto v = ref::flatten(z);
    v.insert(v.end(), fm.begin(), fm.end());
    return v;
  };
  const std::size_t e = 16, len = 30, sessions = 40;
  ref::buffer x(sessions * len, e), in_w(3 * e, e), out_w(e, e);
  ref::fill(x, rng);
  ref::fill(in_w, rng);
  ref::fill(out_w, rng);
  std::vector<std::size_t> lengths(sessions);
  for (std::size_t b = 0; b < sessions; ++b) lengths[b] = 1 + b % len;
  const auto attention = [&] {
    ref::buffer y(sessions * len, e);
    cpu::multi_head_attention(x.cview(), lengths, len, {in_w.cview(), {}, out_w.cview(), {}, 2}, true, y.view());
    return ref::flatten(y);
  };
  ref::buffer scores(64, 5000);
  ref::fill(scores, rng);
  const auto rows = [&] {
    recpipe::matrix<id_type> ids(64, 10);
    recpipe::matrix<float> best(64, 10);
    cpu::top_k_rows(scores.cview(), 10, ids.view(), best.view());
    return ids.values();
  };
  cpu::set_num_threads(1);
  const auto b1 = bags.run();
  const auto i1 = interaction();
  const auto a1 = attention();
  const auto r1 = rows();
  cpu::set_num_threads(3);
  CHECK(cpu::num_threads() == 3);
  CHECK(bags.run() == b1);
  CHECK(interaction() == i1);
  // attention's projections go through OpenBLAS, whose threaded sgemm may round differently:
  // compare within float rounding; the pool's own part is exact (bags, interaction, top-k).
  std::vector<double> a1d(a1.begin(), a1.end());
  const auto a3 = attention();
  CHECK(ref::max_rel_error(a1d, a3) < 1e-6);
#if defined(RECPIPE_HAS_CBLAS)
  openblas_set_num_threads(1);  // with single-threaded GEMMs the pool's split must be exact
  CHECK(attention() == a1);
  openblas_set_num_threads(3);
#endif
  CHECK(rows() == r1);

  SUBCASE("a bad id found by a worker thread reaches the caller as recpipe::error") {
    bag_case bad;
    bad.ids[bad.ids.size() - 3] = 5000;
    CHECK_THROWS_WITH_AS(bad.run(), doctest::Contains("is outside [0, 5000)"), recpipe::error);
    CHECK(bags.run() == b1);  // the pool still works afterwards
  }
  SUBCASE("many threads may call kernels at once") {
    std::atomic<int> mismatches{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < 4; ++t)
      callers.emplace_back([&] {
        for (int i = 0; i < 5; ++i) mismatches += bags.run() != b1 ? 1 : 0;
      });
    for (auto& c : callers) c.join();
    CHECK(mismatches.load() == 0);
  }
  cpu::set_num_threads(1);
}
