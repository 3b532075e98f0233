// SPDX-License-Identifier: Apache-2.0
// recpipe: the library version. Checked in (not generated) so that `-I include` alone works, as
// with Eigen and hnswlib; CMake's configure fails if it differs from project(recpipe VERSION).
#pragma once

#define RECPIPE_VERSION_MAJOR 0
#define RECPIPE_VERSION_MINOR 1
#define RECPIPE_VERSION_PATCH 0
#define RECPIPE_VERSION_STRING "0.1.0"
