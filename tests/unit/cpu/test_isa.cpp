// SPDX-License-Identifier: Apache-2.0
// recpipe tests: the run-time isa choice can be lowered and restored, never raised past the CPU.
#include <doctest/doctest.h>

#include <string>

#include <recpipe/cpu/isa.hpp>

namespace cpu = recpipe::cpu;

TEST_CASE("cpu::set_isa lowers to portable and restores the previous choice") {
  const cpu::isa detected = cpu::detected_isa();
  MESSAGE("detected isa: " << cpu::to_string(detected) << ", active: " << cpu::to_string(cpu::active_isa()));
  const cpu::isa before = cpu::set_isa(cpu::isa::portable);
  CHECK(cpu::active_isa() == cpu::isa::portable);
  CHECK(cpu::set_isa(before) == cpu::isa::portable);
  CHECK(cpu::active_isa() == before);
}

TEST_CASE("cpu::set_isa refuses an isa the CPU lacks, naming it") {
  if (cpu::detected_isa() == cpu::isa::avx512) {
    MESSAGE("this CPU has AVX-512: the refusal cannot be shown here");
    CHECK(cpu::set_isa(cpu::isa::avx512) == cpu::active_isa());
    return;
  }
  CHECK_THROWS_WITH_AS(cpu::set_isa(cpu::isa::avx512), doctest::Contains("no avx512 kernels"), recpipe::error);
  CHECK(cpu::active_isa() == cpu::isa::portable);
}

TEST_CASE("cpu::to_string spells the isa as RECPIPE_ISA does") {
  CHECK(std::string(cpu::to_string(cpu::isa::portable)) == "portable");
  CHECK(std::string(cpu::to_string(cpu::isa::avx512)) == "avx512");
}
