// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: a device copy of a CPU models::session_transformer (needs the host
// model's headers: Eigen, nlohmann_json; cuda/transformer.cuh alone does not).
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/transformer.cuh>

#include <recpipe/cpu/attention.hpp>
#include <recpipe/models/session_transformer.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_CUDA_NAMESPACE_BEGIN

//! @brief The cuda::session_transformer_spec of a CPU model's config (the same fields).
//! @code
//! auto spec = recpipe::cuda::spec_of(model.config());
//! @endcode
inline session_transformer_spec spec_of(const models::session_transformer_config& c) {
  session_transformer_spec s;
  s.num_items = c.num_items;
  s.embedding_dim = c.embedding_dim;
  s.max_length = c.max_length;
  s.num_heads = c.num_heads;
  s.ffn_dim = c.ffn_dim;
  s.num_layers = c.num_layers;
  s.activation = c.activation;
  s.norm_first = c.norm_first;
  s.embedding_scale = c.embedding_scale;
  s.eps = c.eps;
  s.query_only_norm = c.query_only_norm;
  s.input_norm = c.input_norm;
  s.final_norm = c.final_norm;
  s.left_padding = c.padding == models::session_padding::left;
  s.positions = models::to_position_rule(c.positions);
  s.attend_to_padding = c.attend_to_padding;
  s.timeline_mask = c.timeline_mask;
  s.padding_id = c.padding_id;
  return s;
}

//! @brief A device copy of `model` for cuda::session_transformer::encode (weights copied once
//! into the backend's pool, queued on its stream; `model` may go away afterwards, the backend
//! must outlive the copy). Its encode gives the CPU model's encode up to summation order.
//! @throws cuda_error when the allocation or copy fails.
//! @code
//! auto cpu_model = recpipe::models::session_transformer::load("sasrec.safetensors");
//! recpipe::cuda::session_transformer gpu = recpipe::cuda::to_device(backend, cpu_model);
//! @endcode
inline session_transformer to_device(const cuda_backend& backend, const models::session_transformer& model) {
  session_transformer_host_weights w;
  w.item_embedding = model.item_embeddings();
  w.position_embedding = model.position_embeddings();
  w.input_norm_weight = model.input_norm_weight();
  w.input_norm_bias = model.input_norm_bias();
  w.final_norm_weight = model.final_norm_weight();
  w.final_norm_bias = model.final_norm_bias();
  for (const cpu::transformer_layer_weights& l : model.layers()) {
    session_transformer_host_layer h;
    h.in_proj_weight = l.attention.in_proj_weight;
    h.in_proj_bias = l.attention.in_proj_bias;
    h.out_proj_weight = l.attention.out_proj_weight;
    h.out_proj_bias = l.attention.out_proj_bias;
    h.linear1_weight = l.linear1_weight;
    h.linear1_bias = l.linear1_bias;
    h.linear2_weight = l.linear2_weight;
    h.linear2_bias = l.linear2_bias;
    h.norm1_weight = l.norm1_weight;
    h.norm1_bias = l.norm1_bias;
    h.norm2_weight = l.norm2_weight;
    h.norm2_bias = l.norm2_bias;
    w.layers.push_back(h);
  }
  return session_transformer(backend, spec_of(model.config()), w);
}

RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
