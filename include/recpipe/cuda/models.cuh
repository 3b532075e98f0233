// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: device copies of the CPU ranking models (models::mlp, models::dcn_v2,
// models::dlrm, models::two_tower), built once per loaded model (the score stages keep them in
// cuda_backend::models(), keyed by `model.storage()`), whose forward composes the device kernels
// (cuda::mlp, cuda::cross_network, cuda::dot_interaction, cuda::embedding_bags) in the CPU model's
// order. Needs cuBLAS and cuBLASLt (link CUDA::cublas CUDA::cublasLt) and the host models' headers
// (nlohmann_json).
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/blas.cuh>
#include <recpipe/cuda/cross.cuh>
#include <recpipe/cuda/dense.cuh>
#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/detail/scratch.cuh>
#include <recpipe/cuda/embedding_bag.cuh>
#include <recpipe/cuda/kernels/models.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/models/dcn_v2.hpp>
#include <recpipe/models/dlrm.hpp>
#include <recpipe/models/mlp.hpp>
#include <recpipe/models/two_tower.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda::detail {

//! @brief The host-side checks of a CPU model's forward on host inputs, before they go to the
//! device (where an id outside its table would pool as a zero row instead of throwing): the dense
//! shape, the number of bag inputs, each bag's offsets (batch or batch + 1, from 0,
//! non-decreasing) and ids (in [0, rows_t)). The message starts with `where` and names the input.
//! @throws recpipe::error as the CPU model's forward would.
inline void check_host_inputs(const char* where, matrix_view<const float> dense, std::size_t dense_dim,
                              std::span<const std::size_t> table_rows, std::span<const cpu::bag_input> sparse,
                              std::size_t batch) {
  models::impl::check_batch_inputs(where, dense, dense_dim, table_rows.size(), sparse.size(), batch);
  for (std::size_t t = 0; t < sparse.size(); ++t) {
    const cpu::bag_input& in = sparse[t];
    try {
      cpu::impl::check_offsets("cpu::embedding_bag", in.offsets, in.ids.size(), batch);
      if (!in.weights.empty() && in.weights.size() != in.ids.size())
        ::recpipe::detail::fail("cpu::embedding_bag: weights has ", in.weights.size(), " entries for ", in.ids.size(),
                                " ids (need 0 or ", in.ids.size(), ")");
      for (std::size_t i = 0; i < in.ids.size(); ++i)
        if (static_cast<std::uint64_t>(in.ids[i]) >= table_rows[t])
          cpu::impl::bad_id("cpu::embedding_bag", i, in.ids[i], table_rows[t]);
    } catch (const error& e) {
      ::recpipe::detail::fail(where, ": inputs[", t, "]: ", e.what() + std::strlen("recpipe: "));
    }
  }
}

//! Device copies of a model's weights: every tensor packed (dense rows) into its own buffer from
//! the backend's pool. The host copies are staged in pageable memory; finish() waits for them.
class device_weights {
 public:
  explicit device_weights(const cuda_backend& backend) : backend_(&backend) {}

  matrix_view<const float> matrix(matrix_view<const float> host) {
    std::vector<float> packed(host.rows() * host.cols());
    for (std::size_t r = 0; r < host.rows(); ++r)
      for (std::size_t c = 0; c < host.cols(); ++c) packed[r * host.cols() + c] = host(r, c);
    const float* data = keep(std::move(packed));
    return {data, host.rows(), host.cols()};
  }
  device_span<const float> vector(std::span<const float> host) {
    const float* data = keep(std::vector<float>(host.begin(), host.end()));
    return {data, host.size()};
  }
  //! The table's rows in its own format (fp32, fp16 or int8 row-wise), packed.
  device_table table(const cpu::embedding_table_view& host) {
    std::size_t row_bytes = 0;
    kernels::row_format format = kernels::row_format::fp32;
    switch (host.type()) {
      case cpu::storage::fp32: row_bytes = host.dim() * sizeof(float); break;
      case cpu::storage::fp16:
        row_bytes = host.dim() * sizeof(std::uint16_t);
        format = kernels::row_format::fp16;
        break;
      case cpu::storage::int8_rowwise:
        row_bytes = host.dim() + math::int8_row_tail_bytes;
        format = kernels::row_format::int8_rowwise;
        break;
    }
    std::vector<std::uint8_t> packed(host.rows() * row_bytes);
    for (std::size_t r = 0; r < host.rows(); ++r) std::memcpy(packed.data() + r * row_bytes, host.row(r), row_bytes);
    staged_bytes_.push_back(std::move(packed));
    bytes_.push_back(to_device(*backend_, std::span<const std::uint8_t>(staged_bytes_.back())));
    return {format, bytes_.back().data(), host.rows(), host.dim(), row_bytes};
  }
  //! A CPU MLP's layers as device layers (same activations).
  std::vector<linear_layer> mlp(const models::mlp& model) {
    std::vector<linear_layer> layers;
    for (const cpu::linear_layer& l : model.layers()) layers.push_back({matrix(l.weight), vector(l.bias), l.act});
    return layers;
  }
  //! Waits for the copies (the staged host copies are freed), so the host model may go away.
  void finish() {
    backend_->synchronize();
    staged_.clear();
    staged_bytes_.clear();
  }
  std::size_t bytes() const noexcept {
    std::size_t total = 0;
    for (const auto& b : floats_) total += b.size() * sizeof(float);
    for (const auto& b : bytes_) total += b.size();
    return total;
  }

 private:
  const float* keep(std::vector<float> host) {
    staged_.push_back(std::move(host));
    floats_.push_back(to_device(*backend_, std::span<const float>(staged_.back())));
    return floats_.back().data();
  }

  const cuda_backend* backend_;
  std::vector<device_buffer<float>> floats_;
  std::vector<device_buffer<std::uint8_t>> bytes_;
  std::vector<std::vector<float>> staged_;  // pageable sources, alive until finish()
  std::vector<std::vector<std::uint8_t>> staged_bytes_;
};

inline pooling to_device_pooling(cpu::pooling p) { return p == cpu::pooling::mean ? pooling::mean : pooling::sum; }

inline std::vector<std::size_t> rows_of(std::span<const cpu::embedding_table_view> tables) {
  std::vector<std::size_t> rows;
  for (const auto& t : tables) rows.push_back(t.rows());
  return rows;
}

// Copies dense [batch, d] (device, any stride) into the first d columns of out (device).
inline cudaError_t copy_columns(const cuda_backend& backend, matrix_view<const float> in, matrix_view<float> out) {
  if (in.rows() == 0 || in.cols() == 0) return cudaSuccess;
  return cudaMemcpy2DAsync(out.data(), row_stride(out) * sizeof(float), in.data(), row_stride(in) * sizeof(float),
                           in.cols() * sizeof(float), in.rows(), cudaMemcpyDeviceToDevice, backend.stream());
}

inline constexpr int model_block = 256;
inline unsigned model_grid(std::size_t threads) {
  return static_cast<unsigned>((threads + model_block - 1) / model_block);
}

//! Rows of `in` that hold a NaN make their rows of `out` NaN (see kernels::nan_rows_kernel: the
//! CPU models' NaN in, NaN out, whatever cuBLASLt's fused ReLU does with NaN).
inline cudaError_t propagate_nan(const cuda_backend& backend, matrix_view<const float> in, matrix_view<float> out) {
  if (in.rows() == 0 || in.cols() == 0) return cudaSuccess;
  kernels::nan_rows_kernel<model_block><<<model_grid(in.rows()), model_block, 0, backend.stream()>>>(
      in.data(), in.rows(), in.cols(), row_stride(in), out.data(), out.cols(), row_stride(out));
  return cudaGetLastError();
}

inline void check_out(const char* where, matrix_view<float> out, std::size_t cols) {
  check_device_matrix(where, "out", out);
  if (out.cols() != cols) ::recpipe::detail::fail(where, ": out has ", out.cols(), " columns but the model outputs ", cols);
}

}  // namespace cuda::detail
RECPIPE_NAMESPACE_END

RECPIPE_CUDA_NAMESPACE_BEGIN

//! @brief A device copy of a models::mlp: its layers uploaded once (stream-ordered, from the
//! backend's pool, which must outlive the copy), forward = cuda::mlp (cuBLASLt GEMMs with the
//! bias and ReLU in the epilogue; the CPU model's activations). The values are the CPU forward's
//! up to the GEMMs' summation order. Not thread-safe (one cuBLAS handle): one run at a time.
//! @throws cuda_error when an allocation or copy fails.
//! @code
//! auto ranker = recpipe::models::mlp::load("ranker.safetensors");
//! recpipe::cuda::device_mlp gpu(backend, ranker);
//! gpu.forward(backend, d_x, d_y);  // device [batch, input_dim] -> device [batch, output_dim]
//! @endcode
class device_mlp {
 public:
  device_mlp(const cuda_backend& backend, const models::mlp& model)
      : input_dim_(model.input_dim()), output_dim_(model.output_dim()), weights_(backend) {
    layers_ = weights_.mlp(model);
    weights_.finish();
  }
  std::size_t input_dim() const noexcept { return input_dim_; }
  std::size_t output_dim() const noexcept { return output_dim_; }
  std::span<const linear_layer> layers() const noexcept { return layers_; }
  //! Device memory the weights take.
  std::size_t bytes() const noexcept { return weights_.bytes(); }

  //! @brief y = MLP(x) on the device. @param x [batch, input_dim]; @param y [batch, output_dim],
  //! not overlapping x. @return the first launch error; never synchronises.
  //! @throws recpipe::error naming the argument whose shape disagrees.
  cudaError_t forward(const cuda_backend& backend, matrix_view<const float> x, matrix_view<float> y) const {
    if (x.cols() != input_dim_)
      ::recpipe::detail::fail("cuda::device_mlp: forward: x has ", x.cols(), " columns but the model's input_dim is ",
                              input_dim_);
    if (x.rows() == 0) return cudaSuccess;
    RECPIPE_CUDA_RETURN_IF_ERROR(mlp(backend, blas_, x, layers_, y));
    return cuda::detail::propagate_nan(backend, x, y);
  }

 private:
  std::size_t input_dim_, output_dim_;
  cuda::detail::device_weights weights_;
  std::vector<linear_layer> layers_;
  blas_handle blas_;
};

//! @brief A device copy of a models::dcn_v2 (tables in their own row format, cross layers full
//! or low rank, deep MLP, head), forward as the CPU model: x0 = [dense | embedding bags], then
//! stacked head(deep(cross(x0))) or parallel head([cross(x0) | deep(x0)]), sigmoid when the
//! config says so. Values: the CPU's up to summation order. Not thread-safe (one cuBLAS handle).
//! @code
//! recpipe::cuda::device_dcn_v2 gpu(backend, ranker);
//! std::vector<recpipe::cuda::device_bags> bags = {{d_ids0, d_offsets0}, {d_ids1, d_offsets1}};
//! gpu.forward(backend, d_dense, bags, d_out);  // d_out: [batch, 1]
//! @endcode
class device_dcn_v2 {
 public:
  device_dcn_v2(const cuda_backend& backend, const models::dcn_v2& model)
      : config_(model.config()), table_rows_(cuda::detail::rows_of(model.tables())), weights_(backend) {
    for (const auto& t : model.tables()) tables_.push_back(weights_.table(t));
    for (const cpu::cross_params& c : model.cross()) {
      cross_params d;
      if (!c.weight.empty()) d.weight = weights_.matrix(c.weight);
      if (!c.down.empty()) d.down = weights_.matrix(c.down);
      if (!c.up.empty()) d.up = weights_.matrix(c.up);
      d.bias = weights_.vector(c.bias);
      cross_.push_back(d);
    }
    deep_ = weights_.mlp(model.deep());
    head_ = {weights_.matrix(model.head_weight()), weights_.vector(model.head_bias()),
             config_.sigmoid ? math::activation::sigmoid : math::activation::none};
    weights_.finish();
  }
  const models::dcn_v2_config& config() const noexcept { return config_; }
  std::size_t output_dim() const noexcept { return 1; }
  std::size_t num_sparse_features() const noexcept { return tables_.size(); }
  std::size_t bytes() const noexcept { return weights_.bytes(); }

  //! The CPU forward's checks of host inputs (dense shape, bag count, offsets, ids in range).
  //! @throws recpipe::error naming the input ("dcn_v2: forward: ...").
  void check_inputs(matrix_view<const float> dense, std::span<const cpu::bag_input> sparse, std::size_t batch) const {
    cuda::detail::check_host_inputs("dcn_v2: forward", dense, config_.dense_dim, table_rows_, sparse, batch);
  }

  //! @brief out = DCN-v2(dense, sparse) on the device.
  //! @param dense [batch, dense_dim] device (any stride; ignored when dense_dim is 0)
  //! @param sparse one device_bags per table (batch or batch + 1 offsets); device ids are not
  //!        checked here: an id outside its table pools as a zero row (check_inputs on the host
  //!        copies throws as the CPU does).
  //! @param out [batch, 1] device. @return the first launch error; never synchronises.
  cudaError_t forward(const cuda_backend& backend, matrix_view<const float> dense, std::span<const device_bags> sparse,
                      matrix_view<float> out) const {
    constexpr const char* where = "cuda::device_dcn_v2: forward";
    const std::size_t batch = out.rows(), d = config_.input_dim(), deep_out = config_.deep.back();
    cuda::detail::check_out(where, out, 1);
    if (sparse.size() != tables_.size())
      ::recpipe::detail::fail(where, ": the model has ", tables_.size(), " sparse features but ", sparse.size(),
                              " bag inputs were given");
    if (config_.dense_dim > 0 && (dense.rows() != batch || dense.cols() != config_.dense_dim))
      ::recpipe::detail::fail(where, ": dense must be ", batch, " x ", config_.dense_dim, " (got ", dense.rows(), " x ",
                              dense.cols(), ")");
    if (batch == 0) return cudaSuccess;
    cuda::detail::scratch scratch(backend);
    float *x0_data = nullptr, *mid = nullptr, *hidden = nullptr;
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&x0_data, batch * d));
    const matrix_view<float> x0(x0_data, batch, d);
    if (config_.dense_dim > 0) RECPIPE_CUDA_RETURN_IF_ERROR(cuda::detail::copy_columns(backend, dense, x0));
    if (!tables_.empty())
      RECPIPE_CUDA_RETURN_IF_ERROR(embedding_bags(backend, tables_, sparse, cuda::detail::to_device_pooling(config_.pooling),
                                                  {x0_data + config_.dense_dim, batch, d - config_.dense_dim, d}));
    if (config_.structure == models::dcn_structure::stacked) {
      RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&mid, batch * d));
      RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&hidden, batch * deep_out));
      RECPIPE_CUDA_RETURN_IF_ERROR(cross_network(backend, blas_, x0, cross_, {mid, batch, d}));
      RECPIPE_CUDA_RETURN_IF_ERROR(mlp(backend, blas_, {mid, batch, d}, deep_, {hidden, batch, deep_out}));
      RECPIPE_CUDA_RETURN_IF_ERROR(linear(backend, blas_, {hidden, batch, deep_out}, head_.weight, head_.bias, out, head_.act));
      return cuda::detail::propagate_nan(backend, x0, out);
    }
    const std::size_t width = d + deep_out;  // [cross(x0) | deep(x0)]: the head is one product
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&mid, batch * width));
    RECPIPE_CUDA_RETURN_IF_ERROR(cross_network(backend, blas_, x0, cross_, {mid, batch, d, width}));
    RECPIPE_CUDA_RETURN_IF_ERROR(mlp(backend, blas_, x0, deep_, {mid + d, batch, deep_out, width}));
    RECPIPE_CUDA_RETURN_IF_ERROR(linear(backend, blas_, {mid, batch, width}, head_.weight, head_.bias, out, head_.act));
    return cuda::detail::propagate_nan(backend, x0, out);
  }

 private:
  models::dcn_v2_config config_;
  std::vector<std::size_t> table_rows_;
  cuda::detail::device_weights weights_;
  std::vector<device_table> tables_;
  std::vector<cross_params> cross_;
  std::vector<linear_layer> deep_;
  linear_layer head_;
  blas_handle blas_;
};

//! @brief A device copy of a models::dlrm: bottom MLP over the dense features, sum-pooled bags,
//! dot interaction (cuda::dot_interaction, self_interaction as configured), top MLP over
//! [bottom output | interactions] with the configured final activation. Values: the CPU's up to
//! summation order. Not thread-safe (one cuBLAS handle).
//! @code
//! recpipe::cuda::device_dlrm gpu(backend, dlrm);
//! gpu.forward(backend, d_dense, bags, d_out);  // d_out: [batch, output_dim]
//! @endcode
class device_dlrm {
 public:
  device_dlrm(const cuda_backend& backend, const models::dlrm& model)
      : config_(model.config()), table_rows_(cuda::detail::rows_of(model.tables())), weights_(backend) {
    bottom_ = weights_.mlp(model.bottom());
    for (const auto& t : model.tables()) tables_.push_back(weights_.table(t));
    top_ = weights_.mlp(model.top());
    weights_.finish();
  }
  const models::dlrm_config& config() const noexcept { return config_; }
  std::size_t output_dim() const noexcept { return config_.top.back(); }
  std::size_t num_sparse_features() const noexcept { return tables_.size(); }
  std::size_t bytes() const noexcept { return weights_.bytes(); }

  //! The CPU forward's checks of host inputs. @throws recpipe::error ("dlrm: forward: ...").
  void check_inputs(matrix_view<const float> dense, std::span<const cpu::bag_input> sparse, std::size_t batch) const {
    cuda::detail::check_host_inputs("dlrm: forward", dense, config_.dense_dim, table_rows_, sparse, batch);
  }

  //! @brief out = DLRM(dense, sparse) on the device; inputs as device_dcn_v2::forward (dense_dim
  //! is at least 1); out [batch, output_dim]. @return the first launch error; never synchronises.
  cudaError_t forward(const cuda_backend& backend, matrix_view<const float> dense, std::span<const device_bags> sparse,
                      matrix_view<float> out) const {
    constexpr const char* where = "cuda::device_dlrm: forward";
    const std::size_t batch = out.rows(), d = config_.embedding_dim, f = config_.num_features();
    cuda::detail::check_out(where, out, output_dim());
    if (sparse.size() != tables_.size())
      ::recpipe::detail::fail(where, ": the model has ", tables_.size(), " sparse features but ", sparse.size(),
                              " bag inputs were given");
    if (dense.rows() != batch || dense.cols() != config_.dense_dim)
      ::recpipe::detail::fail(where, ": dense must be ", batch, " x ", config_.dense_dim, " (got ", dense.rows(), " x ",
                              dense.cols(), ")");
    if (batch == 0) return cudaSuccess;
    cuda::detail::scratch scratch(backend);
    float *features = nullptr, *top_in = nullptr;
    const std::size_t width = config_.top_input_dim();
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&features, batch * f * d));
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&top_in, batch * width));
    // features [batch, f * d] = [x | bag_0 | ...]: the layout dot_interaction reads.
    RECPIPE_CUDA_RETURN_IF_ERROR(mlp(backend, blas_, dense, bottom_, {features, batch, d, f * d}));
    if (!tables_.empty())
      RECPIPE_CUDA_RETURN_IF_ERROR(
          embedding_bags(backend, tables_, sparse, pooling::sum, {features + d, batch, (f - 1) * d, f * d}));
    RECPIPE_CUDA_RETURN_IF_ERROR(
        cuda::detail::copy_columns(backend, {features, batch, d, f * d}, {top_in, batch, width}));
    RECPIPE_CUDA_RETURN_IF_ERROR(dot_interaction(backend, {features, batch, f * d}, f, config_.self_interaction,
                                                 {top_in + d, batch, width - d, width}));
    RECPIPE_CUDA_RETURN_IF_ERROR(mlp(backend, blas_, {top_in, batch, width}, top_, out));
    RECPIPE_CUDA_RETURN_IF_ERROR(cuda::detail::propagate_nan(backend, dense, out));
    return cuda::detail::propagate_nan(backend, {features + d, batch, (f - 1) * d, f * d}, out);
  }

 private:
  models::dlrm_config config_;
  std::vector<std::size_t> table_rows_;
  cuda::detail::device_weights weights_;
  std::vector<linear_layer> bottom_, top_;
  std::vector<device_table> tables_;
  blas_handle blas_;
};

//! @brief A device copy of a models::two_tower: each tower's tables and MLP, forward = row-wise
//! <user tower, item tower> of paired inputs; towers L2-normalised when the model normalises
//! (math::inverse_l2_norm, the CPU's formula). Not thread-safe (one cuBLAS handle).
//! @code
//! recpipe::cuda::device_two_tower gpu(backend, model);
//! gpu.forward(backend, d_user_dense, user_bags, d_item_dense, item_bags, d_out);  // [batch, 1]
//! @endcode
class device_two_tower {
 public:
  device_two_tower(const cuda_backend& backend, const models::two_tower& model)
      : config_(model.config()), weights_(backend) {
    user_ = tower(model.user_tower());
    item_ = tower(model.item_tower());
    weights_.finish();
  }
  const models::two_tower_config& config() const noexcept { return config_; }
  std::size_t output_dim() const noexcept { return config_.user.dims.back(); }
  std::size_t bytes() const noexcept { return weights_.bytes(); }

  //! The CPU forward's checks of the host inputs of both towers. @throws recpipe::error
  //! ("two_tower: encode: ...").
  void check_inputs(matrix_view<const float> user_dense, std::span<const cpu::bag_input> user_sparse,
                    matrix_view<const float> item_dense, std::span<const cpu::bag_input> item_sparse,
                    std::size_t batch) const {
    cuda::detail::check_host_inputs("two_tower: encode", user_dense, config_.user.dense_dim, user_.rows, user_sparse,
                                    batch);
    cuda::detail::check_host_inputs("two_tower: encode", item_dense, config_.item.dense_dim, item_.rows, item_sparse,
                                    batch);
  }

  //! @brief One tower's vectors on the device: out [batch, output_dim] (any stride).
  cudaError_t encode_users(const cuda_backend& backend, matrix_view<const float> dense,
                           std::span<const device_bags> sparse, matrix_view<float> out) const {
    return encode(backend, user_, config_.user, dense, sparse, out);
  }
  cudaError_t encode_items(const cuda_backend& backend, matrix_view<const float> dense,
                           std::span<const device_bags> sparse, matrix_view<float> out) const {
    return encode(backend, item_, config_.item, dense, sparse, out);
  }

  //! @brief out[b] = <user tower(b), item tower(b)> on the device; out [batch, 1].
  //! @return the first launch error; never synchronises.
  cudaError_t forward(const cuda_backend& backend, matrix_view<const float> user_dense,
                      std::span<const device_bags> user_sparse, matrix_view<const float> item_dense,
                      std::span<const device_bags> item_sparse, matrix_view<float> out) const {
    cuda::detail::check_out("cuda::device_two_tower: forward", out, 1);
    const std::size_t batch = out.rows(), d = output_dim();
    if (batch == 0) return cudaSuccess;
    cuda::detail::scratch scratch(backend);
    float *users = nullptr, *items = nullptr;
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&users, batch * d));
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&items, batch * d));
    RECPIPE_CUDA_RETURN_IF_ERROR(encode_users(backend, user_dense, user_sparse, {users, batch, d}));
    RECPIPE_CUDA_RETURN_IF_ERROR(encode_items(backend, item_dense, item_sparse, {items, batch, d}));
    constexpr int block = cuda::detail::model_block;
    kernels::row_dot_kernel<block><<<cuda::detail::model_grid(batch), block, 0, backend.stream()>>>(
        users, d, items, d, batch, d, out.data(), cuda::detail::row_stride(out));
    return cudaGetLastError();
  }

 private:
  struct device_tower {
    std::vector<std::size_t> rows;
    std::vector<device_table> tables;
    std::vector<linear_layer> layers;
    bool normalize = true;
  };

  device_tower tower(const models::tower& host) {
    device_tower t;
    t.rows = cuda::detail::rows_of(host.tables());
    for (const auto& table : host.tables()) t.tables.push_back(weights_.table(table));
    t.layers = weights_.mlp(host.network());
    t.normalize = host.normalized();
    return t;
  }

  cudaError_t encode(const cuda_backend& backend, const device_tower& t, const models::tower_config& c,
                     matrix_view<const float> dense, std::span<const device_bags> sparse, matrix_view<float> out) const {
    constexpr const char* where = "cuda::device_two_tower: encode";
    const std::size_t batch = out.rows(), width = c.input_dim();
    cuda::detail::check_out(where, out, c.dims.back());
    if (sparse.size() != t.tables.size())
      ::recpipe::detail::fail(where, ": the tower has ", t.tables.size(), " sparse features but ", sparse.size(),
                              " bag inputs were given");
    if (c.dense_dim > 0 && (dense.rows() != batch || dense.cols() != c.dense_dim))
      ::recpipe::detail::fail(where, ": dense must be ", batch, " x ", c.dense_dim, " (got ", dense.rows(), " x ",
                              dense.cols(), ")");
    if (batch == 0) return cudaSuccess;
    cuda::detail::scratch scratch(backend);
    float* x = nullptr;
    RECPIPE_CUDA_RETURN_IF_ERROR(scratch.allocate(&x, batch * width));
    if (c.dense_dim > 0) RECPIPE_CUDA_RETURN_IF_ERROR(cuda::detail::copy_columns(backend, dense, {x, batch, width}));
    if (!t.tables.empty())
      RECPIPE_CUDA_RETURN_IF_ERROR(embedding_bags(backend, t.tables, sparse, cuda::detail::to_device_pooling(c.pooling),
                                                  {x + c.dense_dim, batch, width - c.dense_dim, width}));
    RECPIPE_CUDA_RETURN_IF_ERROR(mlp(backend, blas_, {x, batch, width}, t.layers, out));
    RECPIPE_CUDA_RETURN_IF_ERROR(cuda::detail::propagate_nan(backend, {x, batch, width}, out));
    if (!t.normalize) return cudaSuccess;
    constexpr int block = cuda::detail::model_block;
    kernels::l2_normalize_rows_kernel<block><<<cuda::detail::model_grid(batch), block, 0, backend.stream()>>>(
        out.data(), batch, out.cols(), cuda::detail::row_stride(out));
    return cudaGetLastError();
  }

  models::two_tower_config config_;
  cuda::detail::device_weights weights_;
  device_tower user_, item_;
  blas_handle blas_;
};

RECPIPE_CUDA_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
