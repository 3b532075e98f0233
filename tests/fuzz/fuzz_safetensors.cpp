// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: io::safetensors_file, from bytes and through mmap (the input written to a
// temp file). Both paths must agree (accept/reject, tensors, metadata); every accepted tensor is
// read through every accessor.
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <recpipe/io/safetensors.hpp>

#include "fuzz_common.hpp"

namespace {

// Everything a reader sees of a file, as text, so the two ways of opening it can be compared.
std::string exercise(const recpipe::io::safetensors_file& file) {
  std::string summary = std::to_string(file.tensor_count()) + ";";
  for (const auto& [key, value] : file.metadata()) summary += key + "=" + value + ";";
  for (const recpipe::io::tensor_view& t : file.tensors()) {
    recpipe_fuzz::expect(file.find(t.name) == &t, "find(name) returns the listed tensor");
    recpipe_fuzz::expect(t.bytes.size() == t.numel() * recpipe::io::dtype_size(t.type), "bytes match numel");
    summary += std::string(t.name) + ":" + std::string(recpipe::io::dtype_name(t.type)) + ":";
    for (std::size_t d : t.shape) summary += std::to_string(d) + ",";
    const std::vector<float> values = t.to_float();
    std::uint32_t mix = 0;
    for (float v : values) {
      std::uint32_t bits = 0;
      std::memcpy(&bits, &v, 4);
      mix = mix * 31 + bits;
    }
    summary += std::to_string(mix) + ";";
    try {
      const auto m = t.as_matrix();
      recpipe_fuzz::expect(m.rows() * m.cols() == t.numel(), "as_matrix covers every element");
    } catch (const recpipe::error&) {
    }
    try {
      (void)t.data<std::int64_t>();
    } catch (const recpipe::error&) {
    }
  }
  return summary;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::optional<std::string> from_memory, from_file;
  try {
    std::vector<std::byte> bytes(size);
    if (size > 0) std::memcpy(bytes.data(), data, size);
    from_memory = exercise(recpipe::io::safetensors_file::from_bytes(std::move(bytes), "fuzz"));
  } catch (const recpipe::error&) {
  }
  const std::filesystem::path path = recpipe_fuzz::temp_path("input.safetensors");
  recpipe_fuzz::write_file(path, data, size);
  try {
    from_file = exercise(recpipe::io::safetensors_file::open(path));
  } catch (const recpipe::error&) {
  }
  recpipe_fuzz::expect(from_memory.has_value() == from_file.has_value(), "from_bytes and open agree on accepting");
  if (from_memory) recpipe_fuzz::expect(*from_memory == *from_file, "from_bytes and open read the same file");
  return 0;
}
