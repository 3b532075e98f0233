// SPDX-License-Identifier: Apache-2.0
// recpipe core: columns, batches, stages, pipelines, metrics, errors and versioned slots; no
// kernels, models, JSON, Eigen or hnswlib. Include it with the stage, index and store headers a
// translation unit uses instead of the umbrella <recpipe/recpipe.hpp>, which parses every model
// and reader (compile times per header: docs/compile-time.md).
#pragma once

#include <recpipe/config.hpp>
#include <recpipe/version.hpp>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/describe.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/metrics.hpp>
#include <recpipe/core/pipeline.hpp>
#include <recpipe/core/ragged_view.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/core/versions.hpp>
