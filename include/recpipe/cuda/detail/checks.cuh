// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA layer: host-side argument checks shared by the public entries.
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/detail/config.cuh>

#include <cstddef>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda::detail {

template <class T>
void check_device_span(const char* where, const char* name, device_span<T> span) {
  if (!span.empty() && span.data() == nullptr)
    ::recpipe::detail::fail(where, ": ", name, " has ", span.size(), " entries but no data");
}

template <class T>
void check_device_matrix(const char* where, const char* name, const matrix_view<T>& m) {
  if (m.rows() > 1 && m.stride() < m.cols())
    ::recpipe::detail::fail(where, ": ", name, " has stride ", m.stride(), " smaller than its ", m.cols(), " columns");
  if (!m.empty() && m.data() == nullptr)
    ::recpipe::detail::fail(where, ": ", name, " is ", m.rows(), " x ", m.cols(), " but has no data");
}

}  // namespace cuda::detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
