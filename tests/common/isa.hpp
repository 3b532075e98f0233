// SPDX-License-Identifier: Apache-2.0
// Shared by the kernel tests: every instruction set this CPU can run, and a guard that restores
// the choice when a test ends (also through a failed check or an exception).
#pragma once

#include <vector>

#include <recpipe/cpu/isa.hpp>

namespace recpipe::testing {

//! The portable bodies always, then the AVX-512 ones where the CPU has them.
inline std::vector<cpu::isa> available_isas() {
  std::vector<cpu::isa> isas = {cpu::isa::portable};
  if (cpu::detected_isa() == cpu::isa::avx512) isas.push_back(cpu::isa::avx512);
  return isas;
}

//! Restores the isa chosen before the test.
struct isa_guard {
  cpu::isa saved = cpu::active_isa();
  isa_guard() = default;
  isa_guard(const isa_guard&) = delete;
  isa_guard& operator=(const isa_guard&) = delete;
  ~isa_guard() { cpu::set_isa(saved); }
};

}  // namespace recpipe::testing
