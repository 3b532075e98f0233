// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA layer: nvcc guard, arch-tagged namespace macros and launch-check helpers.
#pragma once

#if !defined(__CUDACC__)
#error "recpipe: the recpipe/cuda headers (.cuh) need nvcc; include <recpipe/recpipe.hpp> from host-only code"
#endif

#include <cuda_runtime_api.h>

#include <recpipe/config.hpp>

// Kernels defined in headers and built for different -arch lists in different translation units
// would otherwise violate the ODR (same mangled name, different fat binaries). Like
// CUB_NAMESPACE_BEGIN, everything that instantiates a kernel lives in an inline namespace named
// after __CUDA_ARCH_LIST__ (e.g. `arch_800_900`). Types shared with host code (cuda_error,
// cuda_backend, device_buffer) stay outside it so that they are the same type in every TU.
#define RECPIPE_CUDA_DETAIL_CAT_(a, b) a##b
#define RECPIPE_CUDA_DETAIL_CAT(a, b) RECPIPE_CUDA_DETAIL_CAT_(a, b)
#define RECPIPE_CUDA_DETAIL_COUNT_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, n, ...) n
#define RECPIPE_CUDA_DETAIL_COUNT(...) RECPIPE_CUDA_DETAIL_COUNT_(__VA_ARGS__, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define RECPIPE_CUDA_DETAIL_NS1(a) arch_##a
#define RECPIPE_CUDA_DETAIL_NS2(a, b) arch_##a##_##b
#define RECPIPE_CUDA_DETAIL_NS3(a, b, c) arch_##a##_##b##_##c
#define RECPIPE_CUDA_DETAIL_NS4(a, b, c, d) arch_##a##_##b##_##c##_##d
#define RECPIPE_CUDA_DETAIL_NS5(a, b, c, d, e) arch_##a##_##b##_##c##_##d##_##e
#define RECPIPE_CUDA_DETAIL_NS6(a, b, c, d, e, f) arch_##a##_##b##_##c##_##d##_##e##_##f
#define RECPIPE_CUDA_DETAIL_NS7(a, b, c, d, e, f, g) arch_##a##_##b##_##c##_##d##_##e##_##f##_##g
#define RECPIPE_CUDA_DETAIL_NS8(a, b, c, d, e, f, g, h) arch_##a##_##b##_##c##_##d##_##e##_##f##_##g##_##h
#define RECPIPE_CUDA_DETAIL_NS9(a, b, c, d, e, f, g, h, i) arch_##a##_##b##_##c##_##d##_##e##_##f##_##g##_##h##_##i
#define RECPIPE_CUDA_DETAIL_NS10(a, b, c, d, e, f, g, h, i, j) \
  arch_##a##_##b##_##c##_##d##_##e##_##f##_##g##_##h##_##i##_##j
#define RECPIPE_CUDA_DETAIL_NS(...) \
  RECPIPE_CUDA_DETAIL_CAT(RECPIPE_CUDA_DETAIL_NS, RECPIPE_CUDA_DETAIL_COUNT(__VA_ARGS__))(__VA_ARGS__)

//! Name of the arch-tagged inline namespace (`arch_900` for -arch=sm_90).
#if defined(RECPIPE_CUDA_ABI_NAMESPACE)
// user override, e.g. for compilers that do not define __CUDA_ARCH_LIST__
#elif defined(__CUDA_ARCH_LIST__)
#define RECPIPE_CUDA_ABI_NAMESPACE RECPIPE_CUDA_DETAIL_NS(__CUDA_ARCH_LIST__)
#else
#define RECPIPE_CUDA_ABI_NAMESPACE arch_unknown
#endif

//! Opens `recpipe::v0::cuda::arch_<list>` (kernels, dispatch and the public entries that launch them).
#define RECPIPE_CUDA_NAMESPACE_BEGIN \
  RECPIPE_NAMESPACE_BEGIN            \
  namespace cuda {                   \
  inline namespace RECPIPE_CUDA_ABI_NAMESPACE {
#define RECPIPE_CUDA_NAMESPACE_END \
  }                                \
  }                                \
  RECPIPE_NAMESPACE_END

//! Define RECPIPE_DEBUG_SYNC to synchronise after every launch (like CUB_DEBUG_SYNC): slow, but an
//! asynchronous fault is then reported by the launch that caused it.
#if defined(RECPIPE_DEBUG_SYNC)
#define RECPIPE_CUDA_DETAIL_DEBUG_SYNC(stream) cudaStreamSynchronize(stream)
#else
#define RECPIPE_CUDA_DETAIL_DEBUG_SYNC(stream) cudaSuccess
#endif

//! On async paths: evaluate a cudaError_t expression and return it from the enclosing function
//! when it is not cudaSuccess. Never throws.
#define RECPIPE_CUDA_RETURN_IF_ERROR(expr)     \
  do {                                         \
    const cudaError_t recpipe_status_ = (expr); \
    if (recpipe_status_ != cudaSuccess)        \
      return recpipe_status_;                  \
  } while (false)

//! After a <<<...>>> launch: returns the launch error (cudaPeekAtLastError) or, under
//! RECPIPE_DEBUG_SYNC, the kernel's execution error.
#define RECPIPE_CUDA_RETURN_IF_LAUNCH_FAILED(stream)                 \
  do {                                                               \
    RECPIPE_CUDA_RETURN_IF_ERROR(cudaPeekAtLastError());             \
    RECPIPE_CUDA_RETURN_IF_ERROR(RECPIPE_CUDA_DETAIL_DEBUG_SYNC(stream)); \
  } while (false)
