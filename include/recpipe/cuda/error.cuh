// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA layer: cuda_error and RECPIPE_CUDA_TRY for host synchronisation points.
#pragma once

#include <recpipe/cuda/detail/config.cuh>

#include <cuda_runtime_api.h>

#include <recpipe/core/errors.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda {

//! @brief A CUDA runtime call failed. Thrown on the host only, at synchronisation points and by
//! constructors that allocate; asynchronous entry points return the cudaError_t instead.
//!
//! what() reads `CUDA ERROR: <file>:<line>: <error name>: <error string>`, e.g.
//! `CUDA ERROR: topk.cu:42: cudaErrorMemoryAllocation: out of memory`.
//!
//! @code
//! try {
//!   RECPIPE_CUDA_TRY(cudaStreamSynchronize(stream));
//! } catch (const recpipe::cuda::cuda_error& e) {
//!   if (e.code() == cudaErrorMemoryAllocation) shrink_batch();
//! }
//! @endcode
class cuda_error : public error {
 public:
  cuda_error(cudaError_t code, const char* file, int line)
      : error(::recpipe::detail::concat("CUDA ERROR: ", file, ":", line, ": ", cudaGetErrorName(code), ": ",
                             cudaGetErrorString(code))),
        code_(code) {}

  //! The runtime's status code.
  cudaError_t code() const noexcept { return code_; }

 private:
  cudaError_t code_;
};

namespace detail {
//! Throws cuda_error for `code` unless it is cudaSuccess. The runtime keeps the last
//! non-sticky error around and reports it from the next unrelated call; clear it first
//! (stdexec STDEXEC_TRY_CUDA_API does the same).
inline void throw_if_error(cudaError_t code, const char* file, int line) {
  if (code == cudaSuccess) return;
  (void)cudaGetLastError();
  throw cuda_error(code, file, line);
}
}  // namespace detail

}  // namespace cuda
RECPIPE_NAMESPACE_END

//! @brief Evaluates a CUDA runtime call on the host and throws recpipe::cuda::cuda_error, naming
//! this file and line, when it fails.
//!
//! @code
//! RECPIPE_CUDA_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
//! @endcode
#define RECPIPE_CUDA_TRY(expr) ::recpipe::cuda::detail::throw_if_error((expr), __FILE__, __LINE__)

#include <recpipe/detail/epilogue.hpp>
