// SPDX-License-Identifier: Apache-2.0
// recpipe tests: cpu::dot_interaction gives the same answers on its AVX-512 and portable bodies,
// against a double reference, on shapes that hit every edge of the 4 x 4 tile and the 16-float tail.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include <recpipe/cpu/cross.hpp>
#include <recpipe/cpu/isa.hpp>
#include <recpipe/cpu/threads.hpp>

#include "common/isa.hpp"
#include "unit/cpu/reference.hpp"

namespace cpu = recpipe::cpu;

namespace {
using recpipe::testing::isa_guard;

std::vector<double> reference(const ref::buffer& feats, std::size_t f, std::size_t d, bool self) {
  std::vector<double> want;
  for (std::size_t b = 0; b < feats.rows; ++b)
    for (std::size_t i = 0; i < f; ++i)
      for (std::size_t j = 0; j < i + (self ? 1 : 0); ++j) {
        double s = 0;
        for (std::size_t c = 0; c < d; ++c) s += static_cast<double>(feats(b, i * d + c)) * feats(b, j * d + c);
        want.push_back(s);
      }
  return want;
}
}  // namespace

TEST_CASE("dot_interaction: every isa matches the double reference, including tile and tail edges") {
  isa_guard guard;
  const std::vector<cpu::isa> isas = recpipe::testing::available_isas();
  if (isas.size() == 1) MESSAGE("no AVX-512 on this CPU: only the portable body is tested");
  std::mt19937 rng(31);
  for (std::size_t f : {1u, 2u, 3u, 4u, 5u, 8u, 9u, 27u, 33u})
    for (std::size_t d : {1u, 7u, 15u, 16u, 17u, 32u, 100u, 128u})
      for (bool self : {false, true})
        for (std::size_t batch : {1u, 3u}) {
          CAPTURE(f); CAPTURE(d); CAPTURE(self); CAPTURE(batch);
          const std::size_t pairs = cpu::interaction_size(f, self);
          ref::buffer feats(batch, f * d, 3);  // unaligned start, padded stride
          ref::fill(feats, rng);
          const auto want = reference(feats, f, d, self);
          std::vector<std::vector<float>> results;
          for (cpu::isa choice : isas) {
            CAPTURE(cpu::to_string(choice));
            cpu::set_isa(choice);
            ref::buffer out(batch, pairs + 5);  // the 5 columns past the sub-view must stay untouched
            for (auto& v : out.storage) v = -7.0f;
            cpu::dot_interaction(feats.cview(), f, self, recpipe::matrix_view<float>(out.data(), batch, pairs, out.stride));
            std::vector<float> got;
            for (std::size_t b = 0; b < batch; ++b) {
              for (std::size_t k = 0; k < pairs; ++k) got.push_back(out(b, k));
              for (std::size_t k = pairs; k < pairs + 5; ++k) CHECK(out(b, k) == -7.0f);
            }
            CHECK(out.storage.front() == -7.0f);  // the float before the view
            CHECK(ref::max_rel_error(want, got) < 1e-5);
            results.push_back(std::move(got));
          }
          if (results.size() == 2) CHECK(ref::max_rel_error(std::vector<double>(results[0].begin(), results[0].end()), results[1]) < 1e-5);
        }
}

TEST_CASE("dot_interaction: the AVX-512 body splits rows over threads with the same answer") {
  isa_guard guard;
  std::mt19937 rng(32);
  ref::buffer feats(301, 27 * 64);
  ref::fill(feats, rng);
  const std::size_t pairs = cpu::interaction_size(27, false);
  ref::buffer one(301, pairs), two(301, pairs);
  cpu::set_num_threads(1);
  cpu::dot_interaction(feats.cview(), 27, false, one.view());
  cpu::set_num_threads(2);
  cpu::dot_interaction(feats.cview(), 27, false, two.view());
  cpu::set_num_threads(1);
  CHECK(one.storage == two.storage);
  CHECK(ref::max_rel_error(reference(feats, 27, 64, false), one) < 1e-5);
}

TEST_CASE("dot_interaction: an empty batch writes nothing and d = 0 gives zeros") {
  isa_guard guard;
  ref::buffer feats(0, 27 * 8), out(0, cpu::interaction_size(27, false));
  cpu::dot_interaction(feats.cview(), 27, false, out.view());
  CHECK(out.rows == 0);
  ref::buffer no_dims(2, 0), zeros(2, cpu::interaction_size(4, true));
  for (auto& v : zeros.storage) v = 5.0f;
  cpu::dot_interaction(no_dims.cview(), 4, true, zeros.view());
  for (std::size_t b = 0; b < 2; ++b)
    for (std::size_t k = 0; k < zeros.cols; ++k) CHECK(zeros(b, k) == 0.0f);
}
