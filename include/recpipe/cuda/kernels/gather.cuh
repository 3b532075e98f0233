// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA kernels: row gather (dst row i = src row picks[i]), how a device stage that selects
// candidates moves every per-candidate column without a trip to the host.
#pragma once

#include <recpipe/cuda/detail/config.cuh>

#include <cstddef>
#include <cstdint>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN
namespace kernels {

//! One thread per word of the output: rows of `row_words` Words (4-byte words when the row size
//! and both pointers allow it, else bytes). A pick outside [0, src_rows) writes zeros: the picks
//! come from recpipe's own kernels, so this is a guard, not a documented result.
template <class Word, int BlockThreads>
__global__ void __launch_bounds__(BlockThreads)
    gather_rows_kernel(Word* dst, const Word* src, std::uint64_t row_words, const std::int64_t* picks,
                       std::uint64_t rows, std::uint64_t src_rows) {
  const std::uint64_t i = static_cast<std::uint64_t>(blockIdx.x) * BlockThreads + threadIdx.x;
  if (i >= rows * row_words) return;
  const std::uint64_t row = i / row_words, word = i % row_words;
  const std::int64_t from = picks[row];
  dst[i] = (from >= 0 && static_cast<std::uint64_t>(from) < src_rows) ? src[static_cast<std::uint64_t>(from) * row_words + word]
                                                                        : Word{};
}

}  // namespace kernels
RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
