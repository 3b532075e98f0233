// SPDX-License-Identifier: Apache-2.0
// The one translation unit with doctest's main(), linked into every test executable.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
