// SPDX-License-Identifier: Apache-2.0
// recpipe io: writes safetensors files (model snapshots, exported weights).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/io/safetensors_dtype.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace io {

//! @brief Collects tensors and metadata, then writes them in the safetensors format.
//!
//! The output follows the reference writer: tensors ordered by element size (largest first)
//! then name, so every tensor is naturally aligned; the JSON header padded with spaces to a
//! multiple of 8 bytes. `write` goes through a temporary file and a rename, so a reader never
//! sees a half-written snapshot. Tensors are copied when added.
//!
//! @code
//! recpipe::io::safetensors_writer out;
//! out.set_metadata("recpipe.model", "mlp");
//! std::vector<float> w(12);
//! out.add("layers.0.weight", std::span<const float>(w), {3, 4});
//! out.write("mlp.safetensors");
//! @endcode
class safetensors_writer {
 public:
  //! Sets a `__metadata__` entry (string to string), replacing an earlier value.
  void set_metadata(std::string key, std::string value) { metadata_[std::move(key)] = std::move(value); }

  //! Adds a tensor of `type` and `shape` from its raw little-endian bytes. Throws recpipe::error
  //! for an empty or reserved name, a name already added, or a byte count that does not match.
  void add(std::string name, dtype type, std::vector<std::size_t> shape, std::span<const std::byte> bytes) {
    if (name.empty()) detail::fail("safetensors_writer: add: tensor name is empty");
    if (name == "__metadata__") detail::fail("safetensors_writer: add: '__metadata__' is reserved");
    if (std::any_of(tensors_.begin(), tensors_.end(), [&](const pending& t) { return t.name == name; }))
      detail::fail("safetensors_writer: add: tensor '", name, "' was already added");
    std::size_t numel = 1;
    for (std::size_t extent : shape) numel *= extent;
    if (numel * dtype_size(type) != bytes.size())
      detail::fail("safetensors_writer: add: tensor '", name, "': shape needs ", numel * dtype_size(type),
                   " bytes of ", dtype_name(type), " but ", bytes.size(), " were given");
    tensors_.push_back({std::move(name), type, std::move(shape), {bytes.begin(), bytes.end()}});
  }

  //! Adds a tensor of float, int8_t, int32_t or int64_t values.
  template <class T>
  void add(std::string name, std::span<const T> values, std::vector<std::size_t> shape) {
    static_assert(dtype_of<T>.has_value(), "recpipe: SAFETENSORS_NO_NATIVE_TYPE - add<T> takes float, int8_t, "
                                           "int32_t or int64_t; pass F16/BF16 as bytes");
    add(std::move(name), *dtype_of<T>, std::move(shape), std::as_bytes(values));
  }

  //! Adds a float matrix as an F32 tensor of shape [rows, cols] (any stride).
  void add(std::string name, matrix_view<const float> values) {
    std::vector<float> packed;
    packed.reserve(values.rows() * values.cols());
    for (std::size_t r = 0; r < values.rows(); ++r) packed.insert(packed.end(), values.row(r).begin(), values.row(r).end());
    add(std::move(name), std::span<const float>(packed), {values.rows(), values.cols()});
  }

  //! Adds float values converted to F16 or BF16 (round to nearest even).
  void add_converted(std::string name, dtype type, std::span<const float> values, std::vector<std::size_t> shape) {
    if (type != dtype::f16 && type != dtype::bf16)
      detail::fail("safetensors_writer: add_converted: tensor '", name, "': target dtype must be F16 or BF16, not ",
                   dtype_name(type));
    std::vector<std::uint16_t> bits(values.size());
    for (std::size_t i = 0; i < values.size(); ++i)
      bits[i] = type == dtype::f16 ? float_to_half(values[i]) : float_to_bfloat16(values[i]);
    add(std::move(name), type, std::move(shape), std::as_bytes(std::span<const std::uint16_t>(bits)));
  }

  std::size_t tensor_count() const noexcept { return tensors_.size(); }

  //! The complete file image. Throws recpipe::error when a tensor name or metadata entry is not
  //! valid UTF-8 (the JSON header cannot hold it).
  std::vector<std::byte> to_bytes() const {
    std::vector<const pending*> order;
    for (const pending& t : tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const pending* a, const pending* b) {
      if (dtype_size(a->type) != dtype_size(b->type)) return dtype_size(a->type) > dtype_size(b->type);
      return a->name < b->name;
    });
    nlohmann::json header = nlohmann::json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::size_t offset = 0;
    for (const pending* t : order) {
      header[t->name] = {{"dtype", dtype_name(t->type)}, {"shape", t->shape},
                         {"data_offsets", {offset, offset + t->bytes.size()}}};
      offset += t->bytes.size();
    }
    std::string text;
    try {
      text = header.dump();
    } catch (const nlohmann::json::exception& e) {
      // dump() throws for strings that are not UTF-8, which the format's JSON header cannot hold
      // (found by tests/fuzz/fuzz_model_config: a config text with invalid UTF-8 escaped as a
      // nlohmann exception instead of a recpipe::error).
      detail::fail("safetensors_writer: a tensor name or metadata entry is not valid UTF-8 (", e.what(), ")");
    }
    text.resize((text.size() + 7) / 8 * 8, ' ');  // data buffer starts 8-byte aligned
    std::vector<std::byte> out(8 + text.size() + offset);
    const std::uint64_t length = text.size();
    for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<std::byte>((length >> (8 * i)) & 0xffu);
    std::memcpy(out.data() + 8, text.data(), text.size());
    std::byte* data = out.data() + 8 + text.size();
    for (const pending* t : order) {
      if (!t->bytes.empty()) std::memcpy(data, t->bytes.data(), t->bytes.size());
      data += t->bytes.size();
    }
    return out;
  }

  //! Writes the file atomically (temporary file in the same folder, then rename). Throws
  //! recpipe::io_error naming the path if anything fails.
  void write(const std::filesystem::path& path) const {
    const std::vector<std::byte> image = to_bytes();
    std::filesystem::path temporary = path;
    temporary += ".tmp";
    {
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      if (!out) detail::fail<io_error>("safetensors_writer: ", path.string(), ": cannot create ", temporary.string());
      out.write(reinterpret_cast<const char*>(image.data()), static_cast<std::streamsize>(image.size()));
      out.flush();
      if (!out) detail::fail<io_error>("safetensors_writer: ", path.string(), ": write failed");
    }
    std::error_code ec;
    std::filesystem::rename(temporary, path, ec);
    if (ec) {
      std::filesystem::remove(temporary, ec);
      detail::fail<io_error>("safetensors_writer: ", path.string(), ": cannot rename the temporary file into place");
    }
  }

 private:
  struct pending {
    std::string name;
    dtype type;
    std::vector<std::size_t> shape;
    std::vector<std::byte> bytes;
  };
  std::map<std::string, std::string> metadata_;
  std::vector<pending> tensors_;
};

}  // namespace io
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
