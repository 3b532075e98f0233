// SPDX-License-Identifier: Apache-2.0
// Closes prologue.hpp.
#ifndef RECPIPE_PROLOGUE_OPEN
#error "recpipe: epilogue.hpp without prologue.hpp"
#endif
#undef RECPIPE_PROLOGUE_OPEN

#if defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#pragma pop_macro("max")
#pragma pop_macro("min")
