// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: the thread count of the BLAS behind the dense kernels.
#pragma once

#include <atomic>

#include <recpipe/core/errors.hpp>
#include <recpipe/cpu/parallel.hpp>

#if defined(RECPIPE_HAS_CBLAS)
#include <cblas.h>
#endif
#include <Eigen/Core>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

namespace impl {
inline std::atomic<int>& blas_threads() {
  static std::atomic<int> threads{0};  // 0: not set yet
  return threads;
}
}  // namespace impl

//! @brief Sets how many threads one kernel call may use: OpenBLAS (and Eigen, when built with
//! OpenMP) inside large products, and recpipe's own pool for bags, interaction, attention and
//! per-row top-k (the caller's thread plus threads - 1 workers). Until it is called recpipe's own
//! kernels run on the calling thread only. Benchmarks set it equal to `at::set_num_threads`.
//! A call that finds the pool busy (another thread's kernel) runs on its own thread.
//! @throws recpipe::error if threads < 1.
//! @code
//! recpipe::cpu::set_num_threads(2);
//! @endcode
inline void set_num_threads(int threads) {
  if (threads < 1) detail::fail("cpu::set_num_threads: threads must be at least 1 (got ", threads, ")");
#if defined(RECPIPE_HAS_CBLAS)
  openblas_set_num_threads(threads);
#endif
  Eigen::setNbThreads(threads);
  impl::thread_pool::instance().resize(static_cast<std::size_t>(threads));
  impl::blas_threads().store(threads);
}

//! @brief The count last given to set_num_threads, or 0 if it was never called (library default).
inline int num_threads() { return impl::blas_threads().load(); }

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
