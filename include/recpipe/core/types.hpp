// SPDX-License-Identifier: Apache-2.0
// recpipe: basic value types shared by every layer.
#pragma once

#include <cstdint>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! Identifier of a user, an item or a session. Signed 64-bit, like PyTorch's index tensors;
//! negative values are never valid ids (hnswlib and FAISS use -1 for "no result").
using id_type = std::int64_t;

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
