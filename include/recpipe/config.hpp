// SPDX-License-Identifier: Apache-2.0
// recpipe: compiler detection, RECPIPE_HOST_DEVICE, namespace macros and assertions.
#pragma once

#include <recpipe/version.hpp>

#if __cplusplus < 202002L && !defined(_MSVC_LANG)
#error "recpipe requires C++20 (-std=c++20)"
#endif

//! Marks functions usable from host and device code; empty without nvcc, like EIGEN_DEVICE_FUNC.
#if defined(__CUDACC__)
#define RECPIPE_HOST_DEVICE __host__ __device__
#else
#define RECPIPE_HOST_DEVICE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define RECPIPE_RESTRICT __restrict__
#define RECPIPE_ALWAYS_INLINE inline __attribute__((always_inline))
#define RECPIPE_LIKELY(x) __builtin_expect(!!(x), 1)
#define RECPIPE_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define RECPIPE_PREFETCH(address) __builtin_prefetch((address), 0, 3)
#else
#define RECPIPE_RESTRICT
#define RECPIPE_ALWAYS_INLINE inline
#define RECPIPE_LIKELY(x) (x)
#define RECPIPE_UNLIKELY(x) (x)
#define RECPIPE_PREFETCH(address) ((void)0)
#endif

//! Versioned inline namespace: `recpipe::inline v0`.
#define RECPIPE_NAMESPACE_BEGIN \
  namespace recpipe {           \
  inline namespace v0 {
#define RECPIPE_NAMESPACE_END \
  }                           \
  }

//! Internal invariant check. Override by defining RECPIPE_ASSERT before including recpipe (like
//! eigen_assert); it disappears under NDEBUG. Argument checks that users can trigger never use it:
//! they throw recpipe::error.
#ifndef RECPIPE_ASSERT
#ifdef NDEBUG
#define RECPIPE_ASSERT(condition) ((void)0)
#else
#include <cassert>
#define RECPIPE_ASSERT(condition) assert(condition)
#endif
#endif
