// SPDX-License-Identifier: Apache-2.0
// recpipe models: loading named parameters from safetensors with shape, dtype and NaN checks.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/cpu/workspace.hpp>
#include <recpipe/io/safetensors.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace models {

//! @brief How a model maps a safetensors file onto its parameters.
//!
//! Parameter names are the reference PyTorch module's `state_dict()` names, preceded by
//! `prefix` (so one file can hold several models, e.g. prefix "ranker.").
//!
//! **Non-finite weights.** A NaN or infinite value in any parameter is an error by default
//! (recpipe::io_error naming the file, the tensor and the first bad index): a NaN weight makes
//! every score it touches NaN, and serving such a model silently is worse than refusing it.
//! Set `allow_non_finite` to load anyway (e.g. to inspect a diverged checkpoint).
//!
//! **Extra tensors.** A tensor under `prefix` that the model does not use is an error by default
//! (it usually means the config does not match the checkpoint); `allow_extra_tensors` ignores them.
struct load_options {
  std::string prefix;
  bool allow_non_finite = false;
  bool allow_extra_tensors = false;
};

//! The weights of a loaded model: the mapped file plus float copies of tensors that were not
//! stored as F32. Shared by copies of a model, so copying a model is cheap.
struct parameter_storage {
  std::shared_ptr<const io::safetensors_file> file;
  std::vector<std::unique_ptr<std::vector<float>>> converted;  // node-stable: views point into them
};

//! @brief Hands out a model's parameters by name with the checks every loader needs: present,
//! expected shape, finite (see load_options), and finally that no tensor was left unused.
//!
//! F32 tensors are zero-copy views of the mapped file; F16 and BF16 weights are converted to
//! float once (F16 embedding tables stay F16 and are read by the fp16 embedding kernels).
//! Errors are recpipe::io_error: "recpipe: <component>: <file>: tensor '<name>': <problem>".
//! @code
//! recpipe::models::parameter_set params(file, "dlrm", options);
//! auto w = params.matrix("bot_l.0.weight", 64, 13);
//! params.finish();   // throws if the file holds tensors the model did not use
//! @endcode
class parameter_set {
 public:
  parameter_set(std::shared_ptr<const io::safetensors_file> file, std::string component, load_options options)
      : storage_(std::make_shared<parameter_storage>()), component_(std::move(component)), options_(std::move(options)) {
    if (!file) detail::fail(component_, ": no safetensors file given");
    storage_->file = std::move(file);
  }

  const io::safetensors_file& file() const { return *storage_->file; }
  const load_options& options() const { return options_; }
  const std::string& component() const { return component_; }

  //! A [rows, cols] float parameter (a rank-1 tensor of cols values also matches rows == 1).
  matrix_view<const float> matrix(const std::string& name, std::size_t rows, std::size_t cols) {
    const io::tensor_view& t = tensor(name, {rows, cols});
    return {floats(t).data(), rows, cols};
  }
  //! A [size] float parameter.
  std::span<const float> vector(const std::string& name, std::size_t size) {
    const io::tensor_view& t = tensor(name, {size});
    return floats(t);
  }
  //! A [rows, dim] embedding table; F32 and F16 are used in place, BF16/ints converted to float.
  cpu::embedding_table_view embedding(const std::string& name, std::size_t rows, std::size_t dim) {
    const io::tensor_view& t = tensor(name, {rows, dim});
    if (t.type == io::dtype::f16 && aligned(t, 2)) {
      check_finite(t);
      return cpu::embedding_table_view::fp16(reinterpret_cast<const std::uint16_t*>(t.bytes.data()), rows, dim);
    }
    return cpu::embedding_table_view::fp32({floats(t).data(), rows, dim});
  }
  //! True if the file holds prefix + name.
  bool contains(const std::string& name) const { return storage_->file->contains(options_.prefix + name); }

  //! Throws unless every tensor under the prefix was used (see load_options::allow_extra_tensors).
  //! Returns the storage the model keeps alive.
  std::shared_ptr<const parameter_storage> finish() {
    if (!options_.allow_extra_tensors) {
      for (const io::tensor_view& t : storage_->file->tensors()) {
        if (t.name.substr(0, options_.prefix.size()) != options_.prefix) continue;
        if (used_.count(std::string(t.name)) == 0)
          fail(t.name, "unexpected tensor (not a parameter of this ", component_,
               " config; set load_options::allow_extra_tensors to ignore it)");
      }
    }
    return storage_;
  }

  //! Throws io_error "<component>: <file>: tensor '<name>': <parts...>".
  template <class... Parts>
  [[noreturn]] void fail(std::string_view name, const Parts&... parts) const {
    detail::fail<io_error>(component_, ": ", storage_->file->path(), ": tensor '", name, "': ", parts...);
  }

 private:
  static bool aligned(const io::tensor_view& t, std::size_t alignment) {
    return reinterpret_cast<std::uintptr_t>(t.bytes.data()) % alignment == 0;
  }

  const io::tensor_view& tensor(const std::string& name, std::initializer_list<std::size_t> shape) {
    const std::string full = options_.prefix + name;
    const io::tensor_view* t = storage_->file->find(full);
    if (t == nullptr) fail(full, "missing (the ", component_, " config needs it)");
    const std::vector<std::size_t> want(shape);
    const bool matches = std::vector<std::size_t>(t->shape.begin(), t->shape.end()) == want ||
                         (want.size() == 2 && want[0] == 1 && t->rank() == 1 && t->shape[0] == want[1]);
    if (!matches) fail(full, "shape is ", shape_text(t->shape), " but the config needs ", shape_text(want));
    used_.insert(full);
    return *t;
  }

  std::span<const float> floats(const io::tensor_view& t) {
    if (t.type == io::dtype::f32 && aligned(t, alignof(float))) {
      const std::span<const float> values = t.data<float>();
      check_finite(t.name, values);
      return values;
    }
    auto copy = std::make_unique<std::vector<float>>(t.to_float());
    check_finite(t.name, *copy);
    storage_->converted.push_back(std::move(copy));
    return *storage_->converted.back();
  }

  void check_finite(const io::tensor_view& t) {
    if (options_.allow_non_finite) return;
    const std::vector<float> values = t.to_float();
    check_finite(t.name, values);
  }
  void check_finite(std::string_view name, std::span<const float> values) const {
    if (options_.allow_non_finite) return;
    for (std::size_t i = 0; i < values.size(); ++i)
      if (!std::isfinite(values[i]))
        fail(name, "value ", values[i], " at flat index ", i,
             " is not finite (load_options::allow_non_finite = true loads it anyway)");
  }

  static std::string shape_text(std::span<const std::size_t> shape) {
    std::string text = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
    return text + "]";
  }

  std::shared_ptr<parameter_storage> storage_;
  std::string component_;
  load_options options_;
  std::set<std::string> used_;
};

//! Opens `path` for a model loader (a shared file, so several models may use one mapping).
inline std::shared_ptr<const io::safetensors_file> open_weights(const std::filesystem::path& path) {
  return std::make_shared<const io::safetensors_file>(io::safetensors_file::open(path));
}

namespace impl {
// The JSON config a model kind stored in the file's metadata ("recpipe.model" / "recpipe.config",
// or "<prefix>recpipe.model" / "<prefix>recpipe.config" for a prefixed model).
inline nlohmann::json config_from_metadata(const io::safetensors_file& file, const std::string& kind,
                                           const std::string& prefix) {
  const auto model = file.metadata_value(prefix + "recpipe.model");
  const auto config = file.metadata_value(prefix + "recpipe.config");
  if (!model || !config)
    detail::fail<io_error>(kind, ": ", file.path(), ": metadata has no '", prefix, "recpipe.model' and '", prefix,
                           "recpipe.config' entries (pass the config in code instead)");
  if (*model != kind)
    detail::fail<io_error>(kind, ": ", file.path(), ": metadata says the file holds a '", *model, "', not a '", kind, "'");
  try {
    nlohmann::json parsed = nlohmann::json::parse(*config);
    if (!parsed.is_object()) detail::fail<io_error>(kind, ": ", file.path(), ": recpipe.config is not a JSON object");
    return parsed;
  } catch (const nlohmann::json::exception& e) {
    detail::fail<io_error>(kind, ": ", file.path(), ": recpipe.config is not valid JSON (", e.what(), ")");
  }
}

// Typed reads from a config object with messages that name the model and the field.
inline const nlohmann::json& field(const nlohmann::json& j, const char* kind, const char* name) {
  const auto it = j.find(name);
  if (it == j.end()) detail::fail(kind, ": config: field '", name, "' is missing");
  return *it;
}
inline std::size_t size_field(const nlohmann::json& j, const char* kind, const char* name) {
  const nlohmann::json& v = field(j, kind, name);
  if (!v.is_number_unsigned()) detail::fail(kind, ": config: field '", name, "' must be a non-negative integer");
  return v.get<std::size_t>();
}
inline std::vector<std::size_t> sizes_field(const nlohmann::json& j, const char* kind, const char* name) {
  const nlohmann::json& v = field(j, kind, name);
  if (!v.is_array()) detail::fail(kind, ": config: field '", name, "' must be an array of positive integers");
  std::vector<std::size_t> out;
  for (const auto& e : v) {
    if (!e.is_number_unsigned() || e.get<std::size_t>() == 0)
      detail::fail(kind, ": config: field '", name, "' must be an array of positive integers");
    out.push_back(e.get<std::size_t>());
  }
  return out;
}
inline bool bool_field(const nlohmann::json& j, const char* kind, const char* name, bool fallback) {
  const auto it = j.find(name);
  if (it == j.end()) return fallback;
  if (!it->is_boolean()) detail::fail(kind, ": config: field '", name, "' must be true or false");
  return it->get<bool>();
}
inline float float_field(const nlohmann::json& j, const char* kind, const char* name, float fallback) {
  const auto it = j.find(name);
  if (it == j.end()) return fallback;
  if (!it->is_number()) detail::fail(kind, ": config: field '", name, "' must be a number");
  // A JSON number beyond float's range (e.g. 1e300) would silently become inf.
  const double value = it->get<double>();
  if (std::abs(value) > static_cast<double>(std::numeric_limits<float>::max()))
    detail::fail(kind, ": config: field '", name, "' is ", value, ", outside the range of float");
  return static_cast<float>(value);
}
inline std::string string_field(const nlohmann::json& j, const char* kind, const char* name, const char* fallback) {
  const auto it = j.find(name);
  if (it == j.end()) return fallback;
  if (!it->is_string()) detail::fail(kind, ": config: field '", name, "' must be a string");
  return it->get<std::string>();
}
inline cpu::activation parse_activation(const std::string& name, const char* kind) {
  if (name == "none") return cpu::activation::none;
  if (name == "relu") return cpu::activation::relu;
  if (name == "gelu") return cpu::activation::gelu;
  if (name == "gelu_tanh") return cpu::activation::gelu_tanh;
  if (name == "sigmoid") return cpu::activation::sigmoid;
  detail::fail(kind, ": config: unknown activation '", name, "' (none, relu, gelu, gelu_tanh, sigmoid)");
}
inline const char* activation_name(cpu::activation act) {
  switch (act) {
    case cpu::activation::none: return "none";
    case cpu::activation::relu: return "relu";
    case cpu::activation::gelu: return "gelu";
    case cpu::activation::gelu_tanh: return "gelu_tanh";
    case cpu::activation::sigmoid: return "sigmoid";
  }
  return "none";
}
inline cpu::pooling parse_pooling(const std::string& name, const char* kind) {
  if (name == "sum") return cpu::pooling::sum;
  if (name == "mean") return cpu::pooling::mean;
  detail::fail(kind, ": config: unknown pooling '", name, "' (sum, mean)");
}

// Batch size of a model call: out.rows(); checks dense and sparse agree with it.
inline void check_batch_inputs(const char* where, matrix_view<const float> dense, std::size_t dense_dim,
                               std::size_t num_sparse, std::size_t given_sparse, std::size_t batch) {
  if (dense_dim > 0 && (dense.rows() != batch || dense.cols() != dense_dim))
    detail::fail(where, ": dense must be ", batch, " x ", dense_dim, " (got ", dense.rows(), " x ", dense.cols(), ")");
  if (dense_dim == 0 && dense.cols() != 0)
    detail::fail(where, ": the model has no dense features but dense has ", dense.cols(), " columns");
  if (given_sparse != num_sparse)
    detail::fail(where, ": the model has ", num_sparse, " sparse features but ", given_sparse, " bag inputs were given");
}

// Copies dense [batch, d] into the first d columns of out.
inline void copy_columns(matrix_view<const float> in, matrix_view<float> out) {
  for (std::size_t r = 0; r < in.rows(); ++r) std::copy_n(in.data() + r * in.stride(), in.cols(), out.data() + r * out.stride());
}
}  // namespace impl

//! One embedding table of a model: `rows` ids of width `dim`.
struct table_config {
  std::size_t rows = 0;
  std::size_t dim = 0;
  friend bool operator==(const table_config&, const table_config&) = default;
};

namespace impl {
inline std::vector<table_config> tables_field(const nlohmann::json& j, const char* kind, const char* name) {
  const nlohmann::json& v = field(j, kind, name);
  if (!v.is_array()) detail::fail(kind, ": config: field '", name, "' must be an array of [rows, dim] pairs");
  std::vector<table_config> out;
  for (const auto& e : v) {
    if (!e.is_array() || e.size() != 2 || !e[0].is_number_unsigned() || !e[1].is_number_unsigned() ||
        e[0].get<std::size_t>() == 0 || e[1].get<std::size_t>() == 0)
      detail::fail(kind, ": config: field '", name, "' must be an array of [rows, dim] pairs of positive integers");
    out.push_back({e[0].get<std::size_t>(), e[1].get<std::size_t>()});
  }
  return out;
}
inline nlohmann::json tables_json(std::span<const table_config> tables) {
  nlohmann::json out = nlohmann::json::array();
  for (const table_config& t : tables) out.push_back({t.rows, t.dim});
  return out;
}
}  // namespace impl

}  // namespace models
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
