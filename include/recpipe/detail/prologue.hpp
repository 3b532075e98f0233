// SPDX-License-Identifier: Apache-2.0
// Included at the top of every recpipe header body (after its own #includes); paired with
// epilogue.hpp. No include guard on purpose: it runs once per header.
#ifdef RECPIPE_PROLOGUE_OPEN
#error "recpipe: prologue.hpp included twice without epilogue.hpp (a header includes another inside its body)"
#endif
#define RECPIPE_PROLOGUE_OPEN

#include <recpipe/config.hpp>

// windows.h style min/max macros would break std::min/std::numeric_limits<>::max below.
#pragma push_macro("min")
#pragma push_macro("max")
#undef min
#undef max

#if defined(__clang__)
#pragma clang diagnostic push
#elif defined(__GNUC__)
#pragma GCC diagnostic push
#endif
