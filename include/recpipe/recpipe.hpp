// SPDX-License-Identifier: Apache-2.0
// recpipe: the umbrella header for host code (the CPU backend and every stage, model and reader).
#pragma once

#include <recpipe/config.hpp>
#include <recpipe/version.hpp>

// core: columns, batches, stages, pipelines, metrics, errors
#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/describe.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/metrics.hpp>
#include <recpipe/core/pipeline.hpp>
#include <recpipe/core/types.hpp>

// cpu: the reference backend's kernels, indexes and feature store
#include <recpipe/cpu/attention.hpp>
#include <recpipe/cpu/cross.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/cpu/isa.hpp>
#include <recpipe/cpu/metric.hpp>
#include <recpipe/cpu/packed_gemm.hpp>
#include <recpipe/cpu/parallel.hpp>
#include <recpipe/cpu/sampling.hpp>
#include <recpipe/cpu/threads.hpp>
#include <recpipe/cpu/topk.hpp>

// io: model files and data
#include <recpipe/io/safetensors.hpp>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/io/synthetic_catalog.hpp>

// models: PyTorch-compatible models on the CPU kernels
#include <recpipe/models/dcn_v2.hpp>
#include <recpipe/models/dlrm.hpp>
#include <recpipe/models/mlp.hpp>
#include <recpipe/models/session_transformer.hpp>
#include <recpipe/models/two_tower.hpp>

// stages: the pipeline's building blocks
#include <recpipe/stages/cold_start.hpp>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/merge.hpp>
#include <recpipe/stages/mlp_scorer.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/rules.hpp>
#include <recpipe/stages/score.hpp>
#include <recpipe/stages/session_encoder.hpp>
#include <recpipe/stages/transform.hpp>
#include <recpipe/stages/unroll.hpp>
