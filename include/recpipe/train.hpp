// SPDX-License-Identifier: Apache-2.0
// recpipe: the umbrella header for in-process training (train/ and the backward kernels beside
// their forward twins in cpu/). Separate from <recpipe/recpipe.hpp> so that a serving-only
// translation unit does not pay for it.
#pragma once

#include <recpipe/config.hpp>

// backward passes (CPU)
#include <recpipe/cpu/attention_backward.hpp>
#include <recpipe/cpu/cross_backward.hpp>
#include <recpipe/cpu/dense_backward.hpp>
#include <recpipe/cpu/embedding_backward.hpp>

// parameters, losses, metrics, optimizers
#include <recpipe/train/losses.hpp>
#include <recpipe/train/metrics.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/parameter.hpp>

// embedding tables
#include <recpipe/train/dynamic_table.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/row_init.hpp>
#include <recpipe/train/table.hpp>

// trainable models and freezing them into serving models
#include <recpipe/train/dcn_v2_model.hpp>
#include <recpipe/train/dense_mlp_model.hpp>
#include <recpipe/train/dlrm_model.hpp>
#include <recpipe/train/freeze.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/mlp_model.hpp>
#include <recpipe/train/model.hpp>
#include <recpipe/train/session_transformer_model.hpp>
#include <recpipe/train/two_tower_model.hpp>

// features shared by serving and training, the trainer and its sources
#include <recpipe/train/csv_source.hpp>
#include <recpipe/train/features.hpp>
#include <recpipe/train/online_features.hpp>
#include <recpipe/train/trainer.hpp>
