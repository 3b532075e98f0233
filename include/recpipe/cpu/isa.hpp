// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: run-time choice of the instruction set for the hand-written kernels.
//
// recpipe is header-only, so its kernels compile with the caller's flags; a service built for
// baseline x86-64 would otherwise get SSE2 loops on an AVX-512 server (the DLRM interaction ran
// 2.7x slower at -O2 than at -march=native). The hot kernels therefore carry an AVX-512 body
// compiled with a function-level target attribute and pick it at run time when the CPU (and the
// OS, through XCR0) supports it, whatever -march the caller used.
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

#include <recpipe/core/errors.hpp>

// Kernels with an AVX-512 body exist only where the compiler can emit it from a target
// attribute: GCC and Clang on x86-64, outside nvcc's host pass (the .cu translation units use the
// portable bodies; the GPU does their heavy work).
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(__CUDACC__) && \
    !defined(RECPIPE_NO_AVX512)
#define RECPIPE_HAS_AVX512_KERNELS 1
#include <immintrin.h>
//! Marks a function whose body uses AVX-512 (F, VL, BW, DQ) and FMA intrinsics. Call it only
//! after cpu::active_isa() == cpu::isa::avx512.
#define RECPIPE_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")))
#else
#define RECPIPE_HAS_AVX512_KERNELS 0
#define RECPIPE_TARGET_AVX512
#endif

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! The instruction sets recpipe has kernel bodies for, narrowest first.
enum class isa {
  portable,  //!< plain C++ loops, vectorised as far as the caller's -march allows
  avx512     //!< AVX-512 F/VL/BW/DQ + FMA bodies, chosen at run time
};

//! @brief The widest isa this CPU and build support (computed once).
//! @code
//! if (recpipe::cpu::detected_isa() == recpipe::cpu::isa::avx512) { /* fast path available */ }
//! @endcode
inline isa detected_isa() {
#if RECPIPE_HAS_AVX512_KERNELS
  static const isa detected = [] {
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("fma");  // every AVX-512 CPU has F16C (Clang 14 cannot ask)
    return avx512 ? isa::avx512 : isa::portable;
  }();
  return detected;
#else
  return isa::portable;
#endif
}

namespace impl {
inline std::atomic<int>& isa_choice() {
  // RECPIPE_ISA=portable in the environment turns the AVX-512 bodies off (to compare, or to rule
  // them out when debugging); anything else keeps the detected isa.
  static std::atomic<int> choice{[] {
    const char* env = std::getenv("RECPIPE_ISA");
    return static_cast<int>(env != nullptr && std::strcmp(env, "portable") == 0 ? isa::portable : detected_isa());
  }()};
  return choice;
}
}  // namespace impl

//! @brief The isa the kernels use now: detected_isa(), unless lowered by set_isa or by
//! RECPIPE_ISA=portable in the environment.
inline isa active_isa() { return static_cast<isa>(impl::isa_choice().load(std::memory_order_relaxed)); }

//! @brief Chooses the kernel bodies (tests run both and compare). Returns the previous choice.
//! @throws recpipe::error if `choice` is wider than detected_isa().
//! @code
//! auto previous = recpipe::cpu::set_isa(recpipe::cpu::isa::portable);
//! // ... run kernels on the portable bodies ...
//! recpipe::cpu::set_isa(previous);
//! @endcode
inline isa set_isa(isa choice) {
  if (static_cast<int>(choice) > static_cast<int>(detected_isa()))
    detail::fail("cpu::set_isa: this CPU or build has no ", choice == isa::avx512 ? "avx512" : "?",
                 " kernels (detected: portable)");
  return static_cast<isa>(impl::isa_choice().exchange(static_cast<int>(choice)));
}

//! The name of an isa, as RECPIPE_ISA spells it.
inline const char* to_string(isa value) { return value == isa::avx512 ? "avx512" : "portable"; }

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
