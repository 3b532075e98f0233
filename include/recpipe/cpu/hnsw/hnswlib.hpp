// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend, HNSW index: the one place that includes hnswlib's headers.
#pragma once

// hnswlib 0.6.2 defines non-inline functions and globals (cpuid, AVXCapable, InnerProductSIMD16Ext,
// ...) in hnswlib.h and space_*.h whenever SSE is on, so two translation units that include it
// fail to link. recpipe brings its own distance spaces (Eigen-vectorised, hnsw/space.hpp), so it includes
// hnswlib with NO_MANUAL_VECTORIZATION, which removes exactly those definitions.
#if !defined(NO_MANUAL_VECTORIZATION)
#define NO_MANUAL_VECTORIZATION
#define RECPIPE_UNDEF_NO_MANUAL_VECTORIZATION
#endif
#include <hnswlib/hnswlib.h>
#if defined(RECPIPE_UNDEF_NO_MANUAL_VECTORIZATION)
#undef NO_MANUAL_VECTORIZATION
#undef RECPIPE_UNDEF_NO_MANUAL_VECTORIZATION
#endif
