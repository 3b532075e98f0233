// SPDX-License-Identifier: Apache-2.0
// recpipe io: a validating, memory-mapped, zero-copy safetensors reader.
#pragma once

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/io/safetensors_dtype.hpp>
#include <recpipe/io/safetensors_writer.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace io {

static_assert(std::endian::native == std::endian::little,
              "recpipe: SAFETENSORS_NEEDS_LITTLE_ENDIAN - the format stores little-endian values and "
              "the reader hands out zero-copy views");

//! Largest JSON header the reader accepts (the reference implementation's limit, 100 MB):
//! a hostile length field can never make the reader allocate or parse more than this.
inline constexpr std::uint64_t safetensors_max_header_bytes = 100'000'000;
//! Largest tensor rank accepted.
inline constexpr std::size_t safetensors_max_rank = 16;

//! @brief One tensor inside a safetensors_file: a zero-copy view of its bytes plus name, dtype
//! and shape. Valid while the file object that produced it is alive (moving the file is fine).
//!
//! @code
//! auto file = recpipe::io::safetensors_file::open("model.safetensors");
//! recpipe::io::tensor_view w = file.at("mlp.layers.0.weight");      // F32 [out, in]
//! recpipe::matrix_view<const float> m = w.as_matrix();               // zero copy
//! std::vector<float> any = file.at("emb.weight").to_float();         // F16/BF16/int -> float copy
//! @endcode
struct tensor_view {
  std::string_view name;                 //!< the tensor's key in the header
  dtype type = dtype::f32;               //!< element type
  std::span<const std::size_t> shape;    //!< dimensions, outermost first; empty for a scalar
  std::span<const std::byte> bytes;      //!< the raw little-endian elements
  std::string_view file;                 //!< the file's path or label, for error messages

  //! Number of elements (product of shape; 1 for a scalar).
  std::size_t numel() const noexcept { return bytes.size() / dtype_size(type); }
  std::size_t rank() const noexcept { return shape.size(); }

  //! Zero-copy typed view. T must match the dtype exactly (float for F32, int8_t, int32_t,
  //! int64_t). Throws io_error on a dtype mismatch, or when the data is not aligned for T
  //! (only possible in files written without the standard ordering; use to_float() then).
  template <class T>
  std::span<const T> data() const {
    static_assert(dtype_of<T>.has_value(),
                  "recpipe: SAFETENSORS_NO_NATIVE_TYPE - data<T>() supports float, int8_t, int32_t, "
                  "int64_t; read F16/BF16 with to_float()");
    if (type != *dtype_of<T>)
      detail::fail<io_error>("safetensors: ", file, ": tensor '", name, "': dtype is ", dtype_name(type),
                             ", not ", dtype_name(*dtype_of<T>));
    if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(T) != 0)
      detail::fail<io_error>("safetensors: ", file, ": tensor '", name, "': data is not ", alignof(T),
                             "-byte aligned, so it cannot be viewed in place (use to_float())");
    return {reinterpret_cast<const T*>(bytes.data()), numel()};
  }

  //! Zero-copy F32 matrix: rank 2 gives shape[0] x shape[1]; rank 1 gives one row.
  //! Throws io_error for other ranks or dtypes.
  matrix_view<const float> as_matrix() const {
    const std::span<const float> values = data<float>();
    if (rank() == 2) return {values.data(), shape[0], shape[1]};
    if (rank() == 1) return {values.data(), 1, shape[0]};
    detail::fail<io_error>("safetensors: ", file, ": tensor '", name, "': rank ", rank(),
                           " cannot be viewed as a matrix (need rank 1 or 2)");
  }

  //! Converts every element to float into `out` (size numel()); any dtype.
  void to_float(std::span<float> out) const {
    const std::size_t n = numel();
    if (out.size() != n)
      detail::fail<io_error>("safetensors: ", file, ": tensor '", name, "': to_float needs an output of ", n,
                             " elements (got ", out.size(), ")");
    const std::byte* src = bytes.data();
    // memcpy per element: the source may be unaligned and the compiler turns this into plain loads.
    auto convert = [&]<class Raw>(auto&& to) {
      for (std::size_t i = 0; i < n; ++i) {
        Raw raw;
        std::memcpy(&raw, src + i * sizeof(Raw), sizeof(Raw));
        out[i] = to(raw);
      }
    };
    switch (type) {
      case dtype::f32: convert.template operator()<float>([](float v) { return v; }); break;
      case dtype::f16: convert.template operator()<std::uint16_t>(half_to_float); break;
      case dtype::bf16: convert.template operator()<std::uint16_t>(bfloat16_to_float); break;
      case dtype::i8: convert.template operator()<std::int8_t>([](std::int8_t v) { return float(v); }); break;
      case dtype::i32: convert.template operator()<std::int32_t>([](std::int32_t v) { return float(v); }); break;
      case dtype::i64:
        convert.template operator()<std::int64_t>([](std::int64_t v) { return static_cast<float>(v); });
        break;
    }
  }
  //! Converts every element to float (a copy).
  std::vector<float> to_float() const {
    std::vector<float> out(numel());
    to_float(out);
    return out;
  }
};

//! @brief A safetensors file, memory-mapped read-only and fully validated when opened.
//!
//! Layout: 8-byte little-endian header length N, N bytes of JSON, then the data buffer.
//! Before any tensor is handed out the reader checks: the file holds at least 8 bytes; N is at
//! most 100 MB and fits inside the file; the JSON is well formed, is an object and its keys are
//! unique; `__metadata__`, if present, maps strings to strings; every other entry has a supported
//! `dtype`, a `shape` of non-negative integers (rank <= 16, no overflow) and `data_offsets`
//! [begin, end] with begin <= end <= buffer size and end - begin = numel * dtype size; and the
//! tensors, ordered by offset, tile the buffer exactly (no overlap, no gap, no trailing bytes),
//! as the reference implementation requires. Every violation throws recpipe::io_error naming the
//! file, the tensor and the problem.
//!
//! Thread safety: a const safetensors_file may be read from any number of threads.
//!
//! @code
//! auto file = recpipe::io::safetensors_file::open("dlrm.safetensors");
//! for (const recpipe::io::tensor_view& t : file.tensors()) std::cout << t.name << '\n';
//! std::string config = file.metadata().at("recpipe.config");
//! std::span<const float> bias = file.at("top_mlp.layers.0.bias").data<float>();
//! @endcode
class safetensors_file {
 public:
  //! Memory-maps `path` read-only and validates it. Throws io_error if it cannot be opened or
  //! is malformed.
  static safetensors_file open(const std::filesystem::path& path) {
    safetensors_file file;
    file.state_->label = path.string();
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      detail::fail<io_error>("safetensors: ", file.state_->label, ": cannot open (", std::strerror(errno), ")");
    struct stat info {};
    if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
      ::close(fd);
      detail::fail<io_error>("safetensors: ", file.state_->label, ": not a regular file");
    }
    const auto size = static_cast<std::size_t>(info.st_size);
    if (size > 0) {
      void* address = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (address == MAP_FAILED) {
        const int code = errno;
        ::close(fd);
        detail::fail<io_error>("safetensors: ", file.state_->label, ": mmap failed (", std::strerror(code), ")");
      }
      file.state_->mapping = static_cast<const std::byte*>(address);
      file.state_->mapping_size = size;
    }
    ::close(fd);  // the mapping keeps the pages alive
    file.state_->bytes = {file.state_->mapping, size};
    file.parse();
    return file;
  }

  //! Validates an in-memory file image (e.g. a snapshot received over the network); the file
  //! owns `bytes`. `label` names it in error messages.
  static safetensors_file from_bytes(std::vector<std::byte> bytes, std::string label = "<memory>") {
    safetensors_file file;
    file.state_->label = std::move(label);
    file.state_->owned = std::move(bytes);
    file.state_->bytes = file.state_->owned;
    file.parse();
    return file;
  }

  //! The path (or label) given when opening.
  const std::string& path() const noexcept { return state_->label; }
  //! Total size of the file in bytes.
  std::size_t size_bytes() const noexcept { return state_->bytes.size(); }
  //! The `__metadata__` map (empty when absent).
  const std::map<std::string, std::string>& metadata() const noexcept { return state_->metadata; }
  //! The metadata value for `key`, or nullopt.
  std::optional<std::string> metadata_value(const std::string& key) const {
    const auto it = state_->metadata.find(key);
    return it == state_->metadata.end() ? std::nullopt : std::optional<std::string>(it->second);
  }
  //! Every tensor, in data-offset order.
  std::span<const tensor_view> tensors() const noexcept { return state_->views; }
  std::size_t tensor_count() const noexcept { return state_->views.size(); }
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  //! The tensor called `name`, or nullptr.
  const tensor_view* find(std::string_view name) const {
    const auto it = state_->by_name.find(name);
    return it == state_->by_name.end() ? nullptr : &state_->views[it->second];
  }
  //! The tensor called `name`; throws io_error naming the file when there is none.
  const tensor_view& at(std::string_view name) const {
    if (const tensor_view* found = find(name)) return *found;
    detail::fail<io_error>("safetensors: ", state_->label, ": tensor '", name, "': not found");
  }

 private:
  struct state {
    std::string label;
    const std::byte* mapping = nullptr;
    std::size_t mapping_size = 0;
    std::vector<std::byte> owned;
    std::span<const std::byte> bytes;
    std::map<std::string, std::string> metadata;
    // Names and shapes live in node-stable containers so the string_views and spans handed out
    // in tensor_view stay valid however the vectors grow.
    std::vector<std::unique_ptr<std::string>> names;
    std::vector<std::unique_ptr<std::vector<std::size_t>>> shapes;
    std::vector<tensor_view> views;
    std::unordered_map<std::string_view, std::size_t> by_name;

    state() = default;
    state(const state&) = delete;
    state& operator=(const state&) = delete;
    ~state() {
      if (mapping != nullptr) ::munmap(const_cast<std::byte*>(mapping), mapping_size);
    }
  };

  struct parsed_entry {
    std::string name;
    dtype type;
    std::vector<std::size_t> shape;
    std::uint64_t begin, end;
  };

  safetensors_file() : state_(std::make_unique<state>()) {}

  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    detail::fail<io_error>("safetensors: ", state_->label, ": ", parts...);
  }

  void parse() {
    const std::span<const std::byte> bytes = state_->bytes;
    if (bytes.size() < 8) fail("truncated: ", bytes.size(), " bytes, but the header length alone takes 8");
    std::uint64_t header_length = 0;
    std::memcpy(&header_length, bytes.data(), 8);
    if (header_length > safetensors_max_header_bytes)
      fail("header length ", header_length, " exceeds the limit of ", safetensors_max_header_bytes, " bytes");
    if (header_length > bytes.size() - 8)
      fail("header length ", header_length, " runs past the end of the file (", bytes.size() - 8,
           " bytes follow the length field)");
    if (header_length < 2) fail("header length ", header_length, " is too short for a JSON object");
    const auto* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
    const std::span<const std::byte> buffer = bytes.subspan(8 + header_length);

    nlohmann::json header;
    std::vector<std::string> keys;
    try {
      // The callback sees each top-level key before nlohmann's object would silently keep only the
      // last duplicate, and it stops hostile nesting early (tensors need depth 3 at most).
      header = nlohmann::json::parse(
          header_begin, header_begin + header_length,
          [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
            if (depth > 3) fail("header: JSON nested deeper than a safetensors header can be");
            if (event == nlohmann::json::parse_event_t::key && depth == 1) keys.push_back(parsed.get<std::string>());
            return true;
          });
    } catch (const nlohmann::json::exception& e) {
      fail("header is not valid JSON (", e.what(), ")");
    }
    if (!header.is_object()) fail("header is JSON but not an object");
    std::sort(keys.begin(), keys.end());
    if (const auto dup = std::adjacent_find(keys.begin(), keys.end()); dup != keys.end())
      fail("tensor '", *dup, "': name appears more than once in the header");

    std::vector<parsed_entry> entries;
    entries.reserve(header.size());
    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__") {
        if (!value.is_object()) fail("__metadata__: must be an object of strings");
        for (const auto& [meta_key, meta_value] : value.items()) {
          if (!meta_value.is_string()) fail("__metadata__: value of '", meta_key, "' is not a string");
          state_->metadata.emplace(meta_key, meta_value.get<std::string>());
        }
        continue;
      }
      entries.push_back(parse_entry(key, value, buffer.size()));
    }

    // The tensors must tile the buffer: sorted by begin, each starts where the previous ended.
    std::sort(entries.begin(), entries.end(), [](const parsed_entry& a, const parsed_entry& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    std::uint64_t covered = 0;
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const parsed_entry& e = entries[i];
      if (e.begin < covered)
        fail("tensor '", e.name, "': data_offsets [", e.begin, ", ", e.end, ") overlap tensor '", entries[i - 1].name,
             "' (which ends at ", covered, ")");
      if (e.begin > covered)
        fail("tensor '", e.name, "': data_offsets start at ", e.begin, " but the previous tensor ends at ", covered,
             " (gap in the data buffer)");
      covered = e.end;
    }
    if (covered != buffer.size())
      fail("data buffer holds ", buffer.size(), " bytes but the tensors cover only ", covered,
           " (trailing bytes or a missing tensor)");

    state_->views.reserve(entries.size());
    for (parsed_entry& e : entries) {
      state_->names.push_back(std::make_unique<std::string>(std::move(e.name)));
      state_->shapes.push_back(std::make_unique<std::vector<std::size_t>>(std::move(e.shape)));
      tensor_view view;
      view.name = *state_->names.back();
      view.type = e.type;
      view.shape = *state_->shapes.back();
      view.bytes = buffer.subspan(static_cast<std::size_t>(e.begin), static_cast<std::size_t>(e.end - e.begin));
      view.file = state_->label;
      state_->by_name.emplace(view.name, state_->views.size());
      state_->views.push_back(view);
    }
  }

  parsed_entry parse_entry(const std::string& name, const nlohmann::json& value, std::size_t buffer_size) const {
    if (!value.is_object()) fail("tensor '", name, "': header entry is not an object");
    for (const auto& [field, ignored] : value.items()) {
      (void)ignored;
      if (field != "dtype" && field != "shape" && field != "data_offsets")
        fail("tensor '", name, "': unknown field '", field, "'");
    }
    const auto dtype_it = value.find("dtype");
    if (dtype_it == value.end() || !dtype_it->is_string()) fail("tensor '", name, "': missing or non-string 'dtype'");
    const std::string dtype_text = dtype_it->get<std::string>();
    const std::optional<dtype> type = parse_dtype(dtype_text);
    if (!type)
      fail("tensor '", name, "': unsupported dtype '", dtype_text, "' (supported: F32, F16, BF16, I8, I32, I64)");

    const auto shape_it = value.find("shape");
    if (shape_it == value.end() || !shape_it->is_array()) fail("tensor '", name, "': missing or non-array 'shape'");
    if (shape_it->size() > safetensors_max_rank)
      fail("tensor '", name, "': rank ", shape_it->size(), " exceeds the limit of ", safetensors_max_rank);
    std::vector<std::size_t> shape;
    std::uint64_t numel = 1;
    for (const auto& dim : *shape_it) {
      if (!dim.is_number_unsigned()) fail("tensor '", name, "': shape entry ", dim.dump(), " is not a non-negative integer");
      const auto extent = dim.get<std::uint64_t>();
      if (extent != 0 && numel > std::numeric_limits<std::uint64_t>::max() / extent)
        fail("tensor '", name, "': shape overflows 64 bits");
      numel *= extent;
      shape.push_back(static_cast<std::size_t>(extent));
    }
    if (numel > std::numeric_limits<std::uint64_t>::max() / dtype_size(*type))
      fail("tensor '", name, "': shape overflows 64 bits");
    const std::uint64_t expected_bytes = numel * dtype_size(*type);

    const auto offsets_it = value.find("data_offsets");
    if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned())
      fail("tensor '", name, "': 'data_offsets' must be two non-negative integers [begin, end]");
    const auto begin = (*offsets_it)[0].get<std::uint64_t>();
    const auto end = (*offsets_it)[1].get<std::uint64_t>();
    if (begin > end) fail("tensor '", name, "': data_offsets [", begin, ", ", end, "] has begin after end");
    if (end > buffer_size)
      fail("tensor '", name, "': data_offsets end ", end, " is out of range (data buffer holds ", buffer_size,
           " bytes)");
    if (end - begin != expected_bytes)
      fail("tensor '", name, "': shape and dtype ", dtype_text, " need ", expected_bytes, " bytes but data_offsets span ",
           end - begin);
    return parsed_entry{name, *type, std::move(shape), begin, end};
  }

  std::unique_ptr<state> state_;
};

}  // namespace io
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
