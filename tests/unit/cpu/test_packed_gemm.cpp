// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu/packed_gemm.hpp (weights packed once, AVX-512 GEMM with a fused epilogue).
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include <recpipe/cpu/packed_gemm.hpp>
#include <recpipe/cpu/threads.hpp>

#include "common/isa.hpp"
#include "unit/cpu/reference.hpp"

namespace cpu = recpipe::cpu;

namespace {
// y = x w^T + b in double
std::vector<double> linear_reference(const ref::buffer& x, const ref::buffer& w, std::span<const float> bias) {
  std::vector<double> out(x.rows * w.rows);
  for (std::size_t r = 0; r < x.rows; ++r)
    for (std::size_t o = 0; o < w.rows; ++o) {
      double s = bias.empty() ? 0.0 : bias[o];
      for (std::size_t i = 0; i < x.cols; ++i) s += static_cast<double>(w(o, i)) * x(r, i);
      out[r * w.rows + o] = s;
    }
  return out;
}

// Runs body under every isa this CPU has (portable first), restoring the choice afterwards.
template <class Body>
void for_each_isa(Body body) {
  const recpipe::testing::isa_guard guard;
  for (cpu::isa choice : recpipe::testing::available_isas()) {
    cpu::set_isa(choice);
    CAPTURE(cpu::to_string(choice));
    body(choice);
  }
}
}  // namespace

TEST_CASE("packed_linear keeps every weight, zero-pads the last panel and aligns panels to 64 bytes") {
  std::mt19937 rng(20);
  for (std::size_t n : {1u, 3u, 17u, 32u, 33u, 100u})
    for (std::size_t k : {1u, 5u, 64u}) {
      CAPTURE(n); CAPTURE(k);
      ref::buffer w(n, k, 3);  // strided source
      ref::fill(w, rng);
      const cpu::packed_linear packed(w.cview());
      CHECK(packed.rows() == n);
      CHECK(packed.cols() == k);
      CHECK(packed.panels() == (n + 31) / 32);
      CHECK(packed.bytes() == packed.panels() * 32 * k * sizeof(float));
      for (std::size_t o = 0; o < n; ++o)
        for (std::size_t i = 0; i < k; ++i) CHECK(packed.at(o, i) == w(o, i));
      for (std::size_t o = n; o < packed.panels() * 32; ++o)
        for (std::size_t i = 0; i < k; ++i) CHECK(packed.at(o, i) == 0.0f);
      for (std::size_t p = 0; p < packed.panels(); ++p)
        CHECK(reinterpret_cast<std::uintptr_t>(packed.panel(p)) % 64 == 0);
    }
  const cpu::packed_linear empty(recpipe::matrix_view<const float>{});
  CHECK(empty.rows() == 0);
  CHECK(empty.panels() == 0);
  CHECK(empty.bytes() == 0);
}

TEST_CASE("linear on a packed weight matches a double reference on both isas, 1 and 2 threads") {
  std::mt19937 rng(21);
  const std::size_t threads_before = cpu::impl::thread_pool::instance().size();
  for (int threads : {1, 2}) {
    cpu::set_num_threads(threads);
    CAPTURE(threads);
    for (std::size_t n : {1u, 3u, 17u, 32u, 100u, 512u})
      for (std::size_t k : {1u, 3u, 17u, 100u, 512u})
        for (std::size_t batch : {0u, 1u, 7u, 13u, 64u}) {
          if (n * k * batch > 512u * 512u * 13u) continue;  // keeps the double reference quick
          CAPTURE(n); CAPTURE(k); CAPTURE(batch);
          ref::buffer x(batch, k, 2), w(n, k), y(batch, n, 5);
          ref::fill(x, rng);
          ref::fill(w, rng, 0.5f);
          const auto bias = ref::random_vector(n, rng);
          const cpu::packed_linear packed(w.cview());
          for (bool with_bias : {true, false}) {
            const std::span<const float> b = with_bias ? std::span<const float>(bias) : std::span<const float>();
            const auto want = linear_reference(x, w, b);
            std::vector<std::vector<float>> results;
            for_each_isa([&](cpu::isa) {
              ref::fill(y, rng);
              const float pad = batch > 0 ? y.data()[n] : 0.0f;  // first padding float of row 0, must survive
              cpu::linear(x.cview(), packed, b, y.view());
              CHECK(ref::max_rel_error(want, y) < 1e-5);
              if (batch > 0) CHECK(y.data()[n] == pad);
              results.push_back(ref::flatten(y));
            });
            // both bodies agree with each other as well as with the reference
            if (results.size() == 2) CHECK(ref::max_rel_error(std::vector<double>(results[0].begin(), results[0].end()), results[1]) < 1e-5);
          }
        }
  }
  cpu::set_num_threads(static_cast<int>(threads_before));
}

TEST_CASE("linear on a packed weight rejects mismatched shapes naming the argument") {
  ref::buffer w(6, 4), x(3, 4), xbad(3, 5), y(3, 6), ybad(3, 5);
  const cpu::packed_linear packed(w.cview());
  std::vector<float> bias(5);
  CHECK_THROWS_WITH_AS(cpu::linear(xbad.cview(), packed, {}, y.view()),
                       doctest::Contains("packed weight is [6, 4] but x has 5 columns"), recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::linear(x.cview(), packed, bias, y.view()), doctest::Contains("bias must be empty or hold 6"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(cpu::linear(x.cview(), packed, {}, ybad.view()), doctest::Contains("y must be 3 x 6"),
                       recpipe::error);
  const recpipe::matrix_view<const float> bad_stride(w.data(), 2, 4, 3);
  CHECK_THROWS_WITH_AS(cpu::packed_linear{bad_stride}, doctest::Contains("weight has stride 3"), recpipe::error);
}
