// SPDX-License-Identifier: Apache-2.0
// recpipe: umbrella header with the CUDA backend (needs nvcc); includes the host library too.
#pragma once

#if !defined(__CUDACC__)
#error "recpipe: <recpipe/cuda.cuh> needs nvcc; host-only code includes <recpipe/recpipe.hpp>"
#endif

#if __has_include(<recpipe/recpipe.hpp>)
#include <recpipe/recpipe.hpp>
#endif

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/dot_score.cuh>
#include <recpipe/cuda/embedding_bag.cuh>
#include <recpipe/cuda/error.cuh>
#include <recpipe/cuda/sampling.cuh>
#include <recpipe/cuda/topk.cuh>
// Not included here (they need CUDA::cublas): <recpipe/cuda/dense.cuh>, <recpipe/cuda/cross.cuh>.
