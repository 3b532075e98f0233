// SPDX-License-Identifier: Apache-2.0
// recpipe: the exception types thrown on the host.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! @brief Every run-time error recpipe throws on the host derives from this.
//!
//! Messages name the component, the argument and the problem, e.g.
//! `recpipe: retrieve: k must be at least 1 (got 0)`.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

//! An ANN index could not be built, searched, saved or loaded (wraps hnswlib's exceptions).
class index_error : public error {
 public:
  using error::error;
};

//! A file (safetensors, index, data set) is missing, truncated or malformed.
class io_error : public error {
 public:
  using error::error;
};

namespace detail {
//! Builds a message from pieces: concat("k must be >= 1 (got ", k, ")").
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

//! Throws ErrorType("recpipe: " + pieces...).
template <class ErrorType = error, class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw ErrorType(concat("recpipe: ", parts...));
}
}  // namespace detail

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
