// SPDX-License-Identifier: Apache-2.0
// build_info() reports the version and the choices the compiler flags made.
#include <doctest/doctest.h>

#include <recpipe/build_info.hpp>
#include <recpipe/version.hpp>

#include <string>

TEST_CASE("build_info names the version, the BLAS and the ISA this TU was built with") {
  const std::string line = recpipe::build_info();
  CHECK(line.find(std::string("recpipe ") + RECPIPE_VERSION_STRING) == 0);
  const recpipe::build_options o;
#if defined(RECPIPE_HAS_CBLAS)
  CHECK(o.cblas);
  CHECK(line.find("OpenBLAS (RECPIPE_HAS_CBLAS)") != std::string::npos);
#else
  CHECK_FALSE(o.cblas);
  CHECK(line.find("define RECPIPE_HAS_CBLAS=1") != std::string::npos);
#endif
  CHECK(line.find("ISA: ") != std::string::npos);
  CHECK(std::string(RECPIPE_VERSION_STRING) ==
        std::to_string(RECPIPE_VERSION_MAJOR) + "." + std::to_string(RECPIPE_VERSION_MINOR) + "." +
            std::to_string(RECPIPE_VERSION_PATCH));
}
