// SPDX-License-Identifier: Apache-2.0
// recpipe: what this translation unit was compiled with (version, BLAS, vector ISA, CUDA).
#pragma once

#include <string>

#include <recpipe/config.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! The choices the compiler flags made, readable at run time (a service logs them at start-up).
struct build_options {
  const char* version = RECPIPE_VERSION_STRING;
  //! Large dense products use OpenBLAS cblas_sgemm (RECPIPE_HAS_CBLAS=1, link -lopenblas); else Eigen.
  bool cblas =
#if defined(RECPIPE_HAS_CBLAS)
      true;
#else
      false;
#endif
  //! AVX-512 kernels compiled in (-march=native or -mavx512f -mavx512bw ...); else portable loops.
  bool avx512 =
#if defined(__AVX512F__) && defined(__AVX512BW__)
      true;
#else
      false;
#endif
  bool avx2 =
#if defined(__AVX2__)
      true;
#else
      false;
#endif
};

//! @brief One line describing the build, e.g. "recpipe 0.1.0; dense: OpenBLAS; ISA: AVX-512".
//! With a plain `-I include` build (no CMake) RECPIPE_HAS_CBLAS is off unless defined: this line
//! says so, and how to turn it on.
//! @code std::puts(recpipe::build_info().c_str()); @endcode
inline std::string build_info() {
  const build_options o;
  // Appends only: GCC 12 at -O2 reports a false -Warray-bounds inside std::string's
  // operator+(string&&, const char*) when this header comes through a precompiled header.
  std::string line = "recpipe ";
  line += o.version;
  line += "; dense products: ";
  line += o.cblas ? "OpenBLAS (RECPIPE_HAS_CBLAS)"
                  : "Eigen (define RECPIPE_HAS_CBLAS=1 and link -lopenblas for OpenBLAS)";
  line += "; ISA: ";
  line += o.avx512 ? "AVX-512" : o.avx2 ? "AVX2 (AVX-512 kernels off: -march=native on an AVX-512 CPU)"
                                        : "baseline x86-64 (vector kernels off: compile with -march=native)";
  return line;
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
