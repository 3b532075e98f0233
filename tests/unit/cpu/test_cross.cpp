// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu/cross.hpp (DCN-v2 cross layers, DLRM dot interaction, FM term).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <recpipe/cpu/cross.hpp>
#include <recpipe/cpu/threads.hpp>
#include <recpipe/cpu/workspace.hpp>

#include "common/isa.hpp"
#include "unit/cpu/reference.hpp"

namespace cpu = recpipe::cpu;

namespace {
// x0 * (W xl + b) + xl in double, with W given as [d, d] or as up [d, r] * down [r, d]
std::vector<double> cross_reference(const std::vector<double>& x0, const std::vector<double>& xl, std::size_t batch,
                                    std::size_t d, const std::vector<double>& w, std::span<const float> bias) {
  std::vector<double> out(batch * d);
  for (std::size_t r = 0; r < batch; ++r)
    for (std::size_t o = 0; o < d; ++o) {
      double s = bias.empty() ? 0.0 : bias[o];
      for (std::size_t i = 0; i < d; ++i) s += w[o * d + i] * xl[r * d + i];
      out[r * d + o] = x0[r * d + o] * s + xl[r * d + o];
    }
  return out;
}
std::vector<double> to_double(const ref::buffer& b) {
  std::vector<double> v;
  for (float x : ref::flatten(b)) v.push_back(x);
  return v;
}
}  // namespace

TEST_CASE("cross_network matches a double reference, full rank, low rank and mixed") {
  std::mt19937 rng(10);
  for (std::size_t batch : {0u, 1u, 3u, 300u}) {
    for (std::size_t d : {1u, 7u, 40u}) {
      CAPTURE(batch); CAPTURE(d);
      const std::size_t rank = std::max<std::size_t>(1, d / 3);
      ref::buffer x0(batch, d, 1), w0(d, d), w2(d, d, 2), down(rank, d), up(d, rank), out(batch, d, 3);
      ref::fill(x0, rng);
      ref::fill(w0, rng, 0.3f);
      ref::fill(w2, rng, 0.3f);
      ref::fill(down, rng, 0.5f);
      ref::fill(up, rng, 0.5f);
      const auto b0 = ref::random_vector(d, rng), b1 = ref::random_vector(d, rng);
      const std::vector<cpu::cross_params> layers = {
          {w0.cview(), {}, {}, b0}, {{}, down.cview(), up.cview(), b1}, {w2.cview(), {}, {}, {}}};
      cpu::cross_network(x0.cview(), layers, out.view());
      // reference
      const auto x0d = to_double(x0);
      std::vector<double> wl0 = to_double(w0), wl2 = to_double(w2), wlow(d * d, 0.0);
      for (std::size_t o = 0; o < d; ++o)
        for (std::size_t i = 0; i < d; ++i)
          for (std::size_t k = 0; k < rank; ++k) wlow[o * d + i] += static_cast<double>(up(o, k)) * down(k, i);
      auto x = cross_reference(x0d, x0d, batch, d, wl0, b0);
      x = cross_reference(x0d, x, batch, d, wlow, b1);
      x = cross_reference(x0d, x, batch, d, wl2, {});
      CHECK(ref::max_rel_error(x, out) < 1e-5);
      // single layers, in place on xl
      ref::buffer xl = x0;
      cpu::cross_layer(x0.cview(), xl.cview(), w0.cview(), b0, xl.view());
      CHECK(ref::max_rel_error(cross_reference(x0d, x0d, batch, d, wl0, b0), xl) < 1e-5);
      xl = x0;
      cpu::cross_layer_low_rank(x0.cview(), xl.cview(), down.cview(), up.cview(), b1, xl.view());
      CHECK(ref::max_rel_error(cross_reference(x0d, x0d, batch, d, wlow, b1), xl) < 1e-5);
    }
  }
}

TEST_CASE("cross_network: a caller's workspace: same result, outer buffers kept, nothing allocated once warm") {
  std::mt19937 rng(12);
  const std::size_t batch = 300, d = 24, rank = 5;  // 300 rows: two blocks of the portable path
  ref::buffer x0(batch, d), w0(d, d), down(rank, d), up(d, rank), want(batch, d), got(batch, d);
  ref::fill(x0, rng);
  ref::fill(w0, rng, 0.3f);
  ref::fill(down, rng, 0.5f);
  ref::fill(up, rng, 0.5f);
  const auto b0 = ref::random_vector(d, rng);
  const std::vector<cpu::cross_params> layers = {{w0.cview(), {}, {}, b0}, {{}, down.cview(), up.cview(), {}}};
  cpu::cross_network(x0.cview(), layers, want.view());  // the thread's workspace
  cpu::workspace ws;
  {
    // A caller's buffer taken before the call stays intact: the kernel's frame sits above it.
    const cpu::workspace::frame frame(ws);
    const std::span<float> mine = ws.take<float>(1000);
    std::fill(mine.begin(), mine.end(), 42.0f);
    cpu::cross_network(x0.cview(), layers, got.view(), ws);
    CHECK(std::all_of(mine.begin(), mine.end(), [](float v) { return v == 42.0f; }));
    CHECK(ws.in_use() == 4032);  // 4000 bytes rounded up to whole cache lines
  }
  CHECK(ws.in_use() == 0);
  CHECK(got.storage == want.storage);
  const std::size_t allocations = ws.allocations();
  for (int run = 0; run < 3; ++run) cpu::cross_network(x0.cview(), layers, got.view(), ws);
  cpu::cross_layer(x0.cview(), x0.cview(), w0.cview(), b0, got.view(), ws);
  CHECK(ws.allocations() == allocations);
  CHECK(ws.blocks() == 1);
}

TEST_CASE("cross kernels reject bad shapes naming the layer and argument") {
  ref::buffer x0(4, 8), w(8, 8), wbad(8, 7), down(3, 8), upbad(8, 4), out(4, 8);
  std::vector<float> bias(7);
  const std::vector<cpu::cross_params> bad_weight = {{w.cview(), {}, {}, {}}, {wbad.cview(), {}, {}, {}}};
  CHECK_THROWS_WITH_AS(cpu::cross_network(x0.cview(), bad_weight, out.view()),
                       doctest::Contains("layer 1 weight must be 8 x 8"), recpipe::error);
  const std::vector<cpu::cross_params> bad_rank = {{{}, down.cview(), upbad.cview(), {}}};
  CHECK_THROWS_WITH_AS(cpu::cross_network(x0.cview(), bad_rank, out.view()), doctest::Contains("low rank needs"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::cross_layer(x0.cview(), x0.cview(), w.cview(), bias, out.view()),
                       doctest::Contains("bias must be empty or hold 8"), recpipe::error);
  const std::vector<cpu::cross_params> ok = {{w.cview(), {}, {}, {}}};
  CHECK_THROWS_WITH_AS(cpu::cross_network(x0.cview(), ok, x0.view()), doctest::Contains("out must not be x0"),
                       recpipe::error);
  ref::buffer small(3, 8);
  CHECK_THROWS_WITH_AS(cpu::cross_layer(x0.cview(), small.cview(), w.cview(), {}, out.view()),
                       doctest::Contains("xl must be 4 x 8"), recpipe::error);
}

TEST_CASE("cross_network on packed layers matches the double reference and the portable path, 1 and 2 threads") {
  std::mt19937 rng(13);
  const std::size_t threads_before = cpu::impl::thread_pool::instance().size();
  struct shape {
    std::size_t batch, d;
  };
  std::vector<shape> shapes;
  for (std::size_t batch : {0u, 1u, 7u, 64u, 300u})
    for (std::size_t d : {1u, 3u, 17u, 100u}) shapes.push_back({batch, d});
  for (shape s : {shape{4096, 17}, shape{1, 512}, shape{7, 512}, shape{64, 512}}) shapes.push_back(s);
  for (int threads : {1, 2}) {
    cpu::set_num_threads(threads);
    for (const shape sh : shapes) {
      const std::size_t batch = sh.batch, d = sh.d;
      // ranks 1, d / 3 and d (low rank may be as wide as d)
      for (std::size_t rank : {std::size_t{1}, std::max<std::size_t>(1, d / 3), d}) {
        if (d >= 512 && rank != d / 3) continue;  // one rank at the widest d keeps the reference quick
        CAPTURE(threads); CAPTURE(batch); CAPTURE(d); CAPTURE(rank);
        ref::buffer x0(batch, d, 3), w0(d, d, 1), w2(d, d), down(rank, d), up(d, rank, 2), out(batch, d, 5);
        ref::fill(x0, rng);
        ref::fill(w0, rng, 1.0f / std::sqrt(static_cast<float>(d)));
        ref::fill(w2, rng, 1.0f / std::sqrt(static_cast<float>(d)));
        ref::fill(down, rng, 1.0f / std::sqrt(static_cast<float>(d)));
        ref::fill(up, rng, 1.0f / std::sqrt(static_cast<float>(rank)));
        const auto b0 = ref::random_vector(d, rng), b1 = ref::random_vector(d, rng);
        const auto x0d = to_double(x0);
        std::vector<double> wl0 = to_double(w0), wl2 = to_double(w2), wlow(d * d, 0.0);
        for (std::size_t o = 0; o < d; ++o)
          for (std::size_t i = 0; i < d; ++i)
            for (std::size_t k = 0; k < rank; ++k) wlow[o * d + i] += static_cast<double>(up(o, k)) * down(k, i);
        // 1, 2 and 3 layers: the ping-pong between out and scratch lands in out for either parity
        const std::vector<cpu::cross_params> all = {
            {w0.cview(), {}, {}, b0}, {{}, down.cview(), up.cview(), b1}, {w2.cview(), {}, {}, {}}};
        for (std::size_t count : {1u, 2u, 3u}) {
          CAPTURE(count);
          const std::span<const cpu::cross_params> layers(all.data(), count);
          const cpu::packed_cross_network packed(layers);
          for (std::size_t l = 0; l < count; ++l) CHECK(cpu::impl::cross_is_packed(packed.layers()[l]));
          auto want = cross_reference(x0d, x0d, batch, d, wl0, b0);
          if (count > 1) want = cross_reference(x0d, want, batch, d, wlow, b1);
          if (count > 2) want = cross_reference(x0d, want, batch, d, wl2, {});
          std::vector<std::vector<float>> results;
          const recpipe::testing::isa_guard guard;
          for (cpu::isa choice : recpipe::testing::available_isas()) {
            CAPTURE(cpu::to_string(choice));
            cpu::set_isa(choice);
            ref::fill(out, rng);
            const float pad = batch ? out(0, d) : 0.0f;  // the stride padding past row 0 is not written
            cpu::cross_network(x0.cview(), packed.layers(), out.view());
            CHECK(ref::max_rel_error(want, out) < 1e-5);
            if (batch) CHECK(out(0, d) == pad);
            results.push_back(ref::flatten(out));
          }
          if (results.size() == 2)
            CHECK(ref::max_rel_error(std::vector<double>(results[0].begin(), results[0].end()), results[1]) < 1e-5);
        }
      }
    }
  }
  cpu::set_num_threads(static_cast<int>(threads_before));
}

TEST_CASE("packed cross layers: shape errors name the layer and the packed argument") {
  ref::buffer x0(4, 8), w(8, 8), w7(7, 8), down(3, 8), up(8, 3), out(4, 8);
  const cpu::packed_linear packed7(w7.cview()), packed_down(down.cview());
  const std::vector<cpu::cross_params> bad_weight = {{w.cview(), {}, {}, {}, &packed7}};
  CHECK_THROWS_WITH_AS(cpu::cross_network(x0.cview(), bad_weight, out.view()),
                       doctest::Contains("layer 0 packed_weight is 7 x 8 but must be 8 x 8"), recpipe::error);
  const std::vector<cpu::cross_params> bad_up = {{{}, down.cview(), up.cview(), {}, nullptr, &packed_down, &packed_down}};
  CHECK_THROWS_WITH_AS(cpu::cross_network(x0.cview(), bad_up, out.view()),
                       doctest::Contains("layer 0 packed_up is 3 x 8 but must be 8 x 3"), recpipe::error);
  const std::vector<cpu::cross_params> mixed = {{w.cview(), {}, {}, {}}, {w7.cview(), {}, {}, {}}};
  CHECK_THROWS_WITH_AS(cpu::packed_cross_network{mixed}, doctest::Contains("layer 1 weight must be 8 x 8"),
                       recpipe::error);
  // a network packed for d = 8 run on x0 of width 4
  const std::vector<cpu::cross_params> ok = {{w.cview(), {}, {}, {}}};
  const cpu::packed_cross_network packed(ok);
  ref::buffer x4(4, 4), out4(4, 4);
  CHECK_THROWS_WITH_AS(cpu::cross_network(x4.cview(), packed.layers(), out4.view()),
                       doctest::Contains("layer 0 weight must be 4 x 4"), recpipe::error);
  CHECK(packed.bytes() == 32 * 8 * sizeof(float));
}

TEST_CASE("dot_interaction follows PyTorch-DLRM's lower-triangle order, with and without the diagonal") {
  std::mt19937 rng(11);
  for (std::size_t f : {1u, 2u, 5u, 27u})
    for (std::size_t d : {1u, 3u, 16u, 33u})
      for (bool self : {false, true}) {
        CAPTURE(f); CAPTURE(d); CAPTURE(self);
        const std::size_t batch = 5, pairs = cpu::interaction_size(f, self);
        CHECK(pairs == (self ? f * (f + 1) / 2 : f * (f - 1) / 2));
        ref::buffer feats(batch, f * d, 1), out(batch, pairs + 4);  // extra columns: writes go to a sub-view
        ref::fill(feats, rng);
        ref::fill(out, rng);
        const float sentinel = out(0, pairs);
        cpu::dot_interaction(feats.cview(), f, self, recpipe::matrix_view<float>(out.data(), batch, pairs, out.stride));
        std::vector<double> want;
        std::vector<float> got;
        for (std::size_t b = 0; b < batch; ++b) {
          std::size_t k = 0;
          for (std::size_t i = 0; i < f; ++i)
            for (std::size_t j = 0; j < i + (self ? 1 : 0); ++j, ++k) {
              REQUIRE(recpipe::math::interaction_index(i, j, self) == k);  // the order the CUDA kernel writes in
              double s = 0;
              for (std::size_t c = 0; c < d; ++c) s += static_cast<double>(feats(b, i * d + c)) * feats(b, j * d + c);
              want.push_back(s);
              got.push_back(out(b, k));
            }
        }
        CHECK(ref::max_rel_error(want, got) < 1e-5);
        CHECK(out(0, pairs) == sentinel);
      }
  ref::buffer feats(2, 10), out(2, 3);
  CHECK_THROWS_WITH_AS(cpu::dot_interaction(feats.cview(), 3, false, out.view()), doctest::Contains("not a multiple of num_features = 3"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::dot_interaction(feats.cview(), 0, false, out.view()), doctest::Contains("num_features = 0"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::dot_interaction(feats.cview(), 5, false, out.view()), doctest::Contains("out must be 2 x 10"),
                       recpipe::error);
}

TEST_CASE("fm_second_order equals the sum of pairwise dot products") {
  std::mt19937 rng(12);
  for (std::size_t f : {1u, 2u, 9u})
    for (std::size_t d : {1u, 8u, 17u}) {
      ref::buffer feats(4, f * d, 2);
      ref::fill(feats, rng);
      std::vector<float> out(4);
      cpu::fm_second_order(feats.cview(), f, out);
      std::vector<double> want(4, 0.0);
      for (std::size_t b = 0; b < 4; ++b)
        for (std::size_t i = 0; i < f; ++i)
          for (std::size_t j = 0; j < i; ++j)
            for (std::size_t c = 0; c < d; ++c) want[b] += static_cast<double>(feats(b, i * d + c)) * feats(b, j * d + c);
      double peak = 0, err = 0;
      for (std::size_t b = 0; b < 4; ++b) {
        peak = std::max(peak, std::abs(want[b]));
        err = std::max(err, std::abs(want[b] - out[b]));
      }
      // the (sum)^2 - sum of squares form cancels: bound relative to the sum of squares
      double squares = 0;
      for (float v : ref::flatten(feats)) squares += static_cast<double>(v) * v;
      CHECK(err <= 1e-5 * std::max(peak, squares / 4));
      // The per-column form the CUDA kernel sums (math::fm_column) gives the same term.
      for (std::size_t b = 0; b < 4; ++b) {
        float column_sum = 0;
        for (std::size_t k = 0; k < d; ++k) column_sum += recpipe::math::fm_column(&feats(b, 0), f, d, k);
        CHECK(std::abs(0.5 * column_sum - want[b]) <= 1e-5 * std::max(peak, squares / 4));
      }
    }
  ref::buffer feats(3, 6);
  std::vector<float> out(2);
  CHECK_THROWS_WITH_AS(cpu::fm_second_order(feats.cview(), 2, out), doctest::Contains("out holds 2 values for 3 rows"),
                       recpipe::error);
}
