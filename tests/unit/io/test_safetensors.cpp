// SPDX-License-Identifier: Apache-2.0
// Tests for the safetensors reader and writer: round trips, dtypes, and crafted hostile files.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <recpipe/io/safetensors.hpp>

namespace io = recpipe::io;

namespace {

// A file image from a raw header text and a data buffer, with an explicit header length field.
std::vector<std::byte> craft(const std::string& header, std::size_t data_bytes, std::uint64_t length_field) {
  std::vector<std::byte> out(8 + header.size() + data_bytes, std::byte{0});
  std::memcpy(out.data(), &length_field, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}
std::vector<std::byte> craft(const std::string& header, std::size_t data_bytes) {
  return craft(header, data_bytes, header.size());
}

// Checks that loading `image` throws io_error whose message contains every fragment.
void expect_io_error(const std::vector<std::byte>& image, std::initializer_list<const char*> fragments) {
  bool thrown = false;
  try {
    (void)io::safetensors_file::from_bytes(image, "crafted.safetensors");
  } catch (const recpipe::io_error& e) {
    thrown = true;
    const std::string message = e.what();
    CHECK(message.find("recpipe: safetensors: crafted.safetensors") == 0);
    for (const char* fragment : fragments) {
      INFO("message: ", message);
      CHECK(message.find(fragment) != std::string::npos);
    }
  }
  CHECK(thrown);
}

std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::path(RECPIPE_TEST_BINARY_DIR) / name;
}

}  // namespace

TEST_CASE("dtype names, sizes and parsing") {
  CHECK(io::dtype_size(io::dtype::bf16) == 2);
  CHECK(io::dtype_size(io::dtype::i64) == 8);
  CHECK(io::parse_dtype("F32") == io::dtype::f32);
  CHECK(io::parse_dtype("I8") == io::dtype::i8);
  CHECK_FALSE(io::parse_dtype("F64").has_value());
  CHECK_FALSE(io::parse_dtype("f32").has_value());
  CHECK(io::dtype_name(io::dtype::bf16) == "BF16");
}

TEST_CASE("fp16 and bf16 conversions are exact where representable and round to nearest even") {
  for (float v : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.9604644775390625e-08f, 0.333251953125f}) {
    CHECK(io::half_to_float(io::float_to_half(v)) == v);
  }
  CHECK(io::float_to_half(1.0f) == 0x3c00);
  CHECK(io::float_to_half(-2.0f) == 0xc000);
  CHECK(std::isinf(io::half_to_float(io::float_to_half(1e6f))));
  CHECK(std::isnan(io::half_to_float(io::float_to_half(NAN))));
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1.0).
  CHECK(io::float_to_half(1.0f + 0x1p-11f) == 0x3c00);
  CHECK(io::float_to_half(1.0f + 3 * 0x1p-11f) == 0x3c02);
  for (float v : {0.0f, 1.0f, -3.0f, 1.5f, 0x1p100f, -0x1.8p-100f}) CHECK(io::bfloat16_to_float(io::float_to_bfloat16(v)) == v);
  CHECK(io::float_to_bfloat16(1.0f) == 0x3f80);
  CHECK(io::float_to_bfloat16(1.0f + 0x1p-8f) == 0x3f80);  // tie to even
  CHECK(std::isnan(io::bfloat16_to_float(io::float_to_bfloat16(NAN))));
}

TEST_CASE("writer and reader round-trip every dtype, metadata, scalars and empty tensors") {
  io::safetensors_writer writer;
  writer.set_metadata("recpipe.model", "mlp");
  writer.set_metadata("format", "pt");
  const std::vector<float> f32 = {1.0f, -2.0f, 3.5f, 4.25f, -0.0f, 1e-7f};
  const std::vector<std::int8_t> i8 = {-128, 0, 127};
  const std::vector<std::int32_t> i32 = {-5, 7};
  const std::vector<std::int64_t> i64 = {std::numeric_limits<std::int64_t>::min(), 42, 1LL << 40};
  const std::vector<float> halves = {0.5f, -1.25f, 2048.0f};
  const std::vector<float> scalar = {7.0f};
  writer.add("w", std::span<const float>(f32), {2, 3});
  writer.add("bytes", std::span<const std::int8_t>(i8), {3});
  writer.add("ints", std::span<const std::int32_t>(i32), {2, 1});
  writer.add("longs", std::span<const std::int64_t>(i64), {3});
  writer.add_converted("half", io::dtype::f16, halves, {3});
  writer.add_converted("brain", io::dtype::bf16, halves, {1, 3});
  writer.add("scalar", std::span<const float>(scalar), {});
  writer.add("empty", std::span<const float>(), {0, 4});
  CHECK(writer.tensor_count() == 8);

  const auto path = temp_path("round_trip.safetensors");
  writer.write(path);
  for (int source = 0; source < 2; ++source) {
    const io::safetensors_file file =
        source == 0 ? io::safetensors_file::open(path) : io::safetensors_file::from_bytes(writer.to_bytes());
    CHECK(file.tensor_count() == 8);
    CHECK(file.metadata().at("recpipe.model") == "mlp");
    CHECK(file.metadata_value("format") == "pt");
    CHECK_FALSE(file.metadata_value("absent").has_value());

    const io::tensor_view& w = file.at("w");
    CHECK(w.type == io::dtype::f32);
    REQUIRE(w.rank() == 2);
    CHECK(w.shape[0] == 2);
    CHECK(w.shape[1] == 3);
    const auto m = w.as_matrix();
    CHECK(m.rows() == 2);
    CHECK(m(1, 1) == f32[4]);
    CHECK(std::signbit(m(1, 1)));
    // Largest dtypes first, so every tensor is naturally aligned.
    CHECK(reinterpret_cast<std::uintptr_t>(w.bytes.data()) % 4 == 0);
    CHECK(reinterpret_cast<std::uintptr_t>(file.at("longs").bytes.data()) % 8 == 0);

    const auto b = file.at("bytes").data<std::int8_t>();
    CHECK(std::vector<std::int8_t>(b.begin(), b.end()) == i8);
    const auto i = file.at("ints").data<std::int32_t>();
    CHECK(std::vector<std::int32_t>(i.begin(), i.end()) == i32);
    const auto l = file.at("longs").data<std::int64_t>();
    CHECK(std::vector<std::int64_t>(l.begin(), l.end()) == i64);
    CHECK(file.at("half").to_float() == halves);
    CHECK(file.at("brain").to_float() == halves);
    CHECK(file.at("ints").to_float() == std::vector<float>{-5.0f, 7.0f});
    CHECK(file.at("scalar").numel() == 1);
    CHECK(file.at("scalar").rank() == 0);
    CHECK(file.at("scalar").data<float>()[0] == 7.0f);
    CHECK(file.at("empty").numel() == 0);
    CHECK(file.at("empty").as_matrix().rows() == 0);
    CHECK(file.contains("w"));
    CHECK(file.find("nope") == nullptr);
  }
  // The file written on disk and the in-memory image are byte-identical.
  std::ifstream in(path, std::ios::binary);
  std::vector<char> disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto image = writer.to_bytes();
  REQUIRE(disk.size() == image.size());
  CHECK(std::memcmp(disk.data(), image.data(), image.size()) == 0);
  // The header is padded to 8 bytes with spaces.
  std::uint64_t length = 0;
  std::memcpy(&length, image.data(), 8);
  CHECK(length % 8 == 0);
}

TEST_CASE("a moved safetensors_file keeps its views valid") {
  io::safetensors_writer writer;
  const std::vector<float> v = {1, 2, 3};
  writer.add("a_rather_long_tensor_name_beyond_small_string_optimisation", std::span<const float>(v), {3});
  writer.add("b", std::span<const float>(v), {1, 3});
  auto first = io::safetensors_file::from_bytes(writer.to_bytes());
  const io::tensor_view* view = first.find("b");
  io::safetensors_file second = std::move(first);
  CHECK(second.find("b") == view);
  CHECK(second.at("a_rather_long_tensor_name_beyond_small_string_optimisation").data<float>()[2] == 3.0f);
}

TEST_CASE("typed access errors name the file, the tensor and the problem") {
  io::safetensors_writer writer;
  const std::vector<std::int32_t> v = {1, 2, 3, 4, 5, 6, 7, 8};
  writer.add("ids", std::span<const std::int32_t>(v), {2, 2, 2});
  const auto file = io::safetensors_file::from_bytes(writer.to_bytes(), "typed.safetensors");
  CHECK_THROWS_WITH_AS(file.at("ids").data<float>(),
                       "recpipe: safetensors: typed.safetensors: tensor 'ids': dtype is I32, not F32", recpipe::io_error);
  CHECK_THROWS_WITH_AS(file.at("missing"), "recpipe: safetensors: typed.safetensors: tensor 'missing': not found",
                       recpipe::io_error);
  CHECK_THROWS_AS(file.at("ids").as_matrix(), recpipe::io_error);
  std::vector<float> small(3);
  CHECK_THROWS_AS(file.at("ids").to_float(small), recpipe::io_error);
}

TEST_CASE("unaligned data is reported for zero-copy access and still convertible") {
  // One I8 tensor of 1 byte first, then an F32: the F32 data starts at an odd offset.
  const std::string header =
      R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})";
  auto image = craft(header, 5);
  const float one = 1.0f;
  std::memcpy(image.data() + 8 + header.size() + 1, &one, 4);
  const auto file = io::safetensors_file::from_bytes(image, "odd.safetensors");
  if (reinterpret_cast<std::uintptr_t>(file.at("b").bytes.data()) % 4 != 0)
    CHECK_THROWS_WITH_AS(file.at("b").data<float>(), doctest::Contains("not 4-byte aligned"), recpipe::io_error);
  CHECK(file.at("b").to_float() == std::vector<float>{1.0f});
}

TEST_CASE("writer rejects bad tensors") {
  io::safetensors_writer writer;
  const std::vector<float> v = {1, 2, 3};
  CHECK_THROWS_WITH_AS(writer.add("x", std::span<const float>(v), {2, 2}),
                       "recpipe: safetensors_writer: add: tensor 'x': shape needs 16 bytes of F32 but 12 were given",
                       recpipe::error);
  writer.add("x", std::span<const float>(v), {3});
  CHECK_THROWS_WITH_AS(writer.add("x", std::span<const float>(v), {3}), doctest::Contains("already added"), recpipe::error);
  CHECK_THROWS_AS(writer.add("", std::span<const float>(v), {3}), recpipe::error);
  CHECK_THROWS_AS(writer.add("__metadata__", std::span<const float>(v), {3}), recpipe::error);
  CHECK_THROWS_AS(writer.add_converted("y", io::dtype::i8, v, {3}), recpipe::error);
  CHECK_THROWS_AS(writer.write(temp_path("no_such_folder/x.safetensors")), recpipe::io_error);
}

TEST_CASE("opening missing files, folders and empty files fails cleanly") {
  CHECK_THROWS_WITH_AS(io::safetensors_file::open(temp_path("does_not_exist.safetensors")),
                       doctest::Contains("does_not_exist.safetensors: cannot open"), recpipe::io_error);
  CHECK_THROWS_WITH_AS(io::safetensors_file::open(RECPIPE_TEST_BINARY_DIR), doctest::Contains("not a regular file"),
                       recpipe::io_error);
  const auto empty = temp_path("empty.safetensors");
  std::ofstream(empty, std::ios::trunc).close();
  CHECK_THROWS_WITH_AS(io::safetensors_file::open(empty), doctest::Contains("truncated: 0 bytes"), recpipe::io_error);
}

TEST_CASE("truncated files and hostile header lengths") {
  expect_io_error(std::vector<std::byte>(7), {"truncated: 7 bytes"});
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  expect_io_error(craft(header, 8, header.size() + 9), {"runs past the end of the file"});
  expect_io_error(craft(header, 8, std::numeric_limits<std::uint64_t>::max()), {"exceeds the limit"});
  expect_io_error(craft(header, 8, 200'000'000), {"exceeds the limit"});
  expect_io_error(craft(header, 0, 0), {"too short"});
  // Truncated data: the header promises 8 bytes, the file holds 4.
  expect_io_error(craft(header, 4), {"tensor 'a'", "out of range", "holds 4 bytes"});
  // Truncated in the middle of the header.
  auto cut = craft(header, 8);
  cut.resize(8 + header.size() / 2);
  expect_io_error(cut, {"runs past the end of the file"});
}

TEST_CASE("malformed JSON headers") {
  expect_io_error(craft("{\"a\": ", 0), {"not valid JSON"});
  expect_io_error(craft("[1, 2, 3]", 0), {"not an object"});
  expect_io_error(craft("\"str\"", 0), {"not an object"});
  expect_io_error(craft(std::string("{\"a\xff\":1}"), 0), {"not valid JSON"});  // invalid UTF-8
  expect_io_error(craft(R"({"a":{"dtype":"F32","shape":[[[[1]]]],"data_offsets":[0,4]}})", 4), {"nested deeper"});
  expect_io_error(craft(std::string(5000, '[') + std::string(5000, ']'), 0), {"nested deeper"});
  expect_io_error(craft(R"({"__metadata__":[1]})", 0), {"__metadata__: must be an object"});
  expect_io_error(craft(R"({"__metadata__":{"k":3}})", 0), {"__metadata__", "'k' is not a string"});
  expect_io_error(craft(R"({"a":5})", 0), {"tensor 'a'", "not an object"});
}

TEST_CASE("duplicate names are rejected even though JSON parsers keep the last one") {
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  expect_io_error(craft(header, 8), {"tensor 'w'", "more than once"});
}

TEST_CASE("entry fields: dtype, shape and offsets are validated") {
  auto entry = [](const std::string& body, std::size_t data) { return craft("{\"t\":" + body + "}", data); };
  expect_io_error(entry(R"({"dtype":"F64","shape":[1],"data_offsets":[0,8]})", 8), {"tensor 't'", "unsupported dtype 'F64'"});
  expect_io_error(entry(R"({"dtype":"U8","shape":[1],"data_offsets":[0,1]})", 1), {"unsupported dtype 'U8'"});
  expect_io_error(entry(R"({"dtype":7,"shape":[1],"data_offsets":[0,4]})", 4), {"non-string 'dtype'"});
  expect_io_error(entry(R"({"shape":[1],"data_offsets":[0,4]})", 4), {"missing or non-string 'dtype'"});
  expect_io_error(entry(R"({"dtype":"F32","data_offsets":[0,4]})", 4), {"missing or non-array 'shape'"});
  expect_io_error(entry(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})", 4), {"shape entry -1"});
  expect_io_error(entry(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})", 4), {"shape entry 1.5"});
  expect_io_error(entry(R"({"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]})", 4),
                  {"overflows 64 bits"});
  expect_io_error(entry(R"({"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]})", 4),
                  {"rank 17"});
  expect_io_error(entry(R"({"dtype":"F32","shape":[1]})", 4), {"'data_offsets' must be"});
  expect_io_error(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})", 4), {"'data_offsets' must be"});
  expect_io_error(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,-4]})", 4), {"'data_offsets' must be"});
  expect_io_error(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[4,0]})", 4), {"begin after end"});
  expect_io_error(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,99]})", 4), {"end 99 is out of range"});
  expect_io_error(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]})", 4), {"out of range"});
  expect_io_error(entry(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", 8),
                  {"tensor 't'", "need 12 bytes but data_offsets span 8"});
  expect_io_error(entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1})", 4), {"unknown field 'extra'"});
}

TEST_CASE("overlapping offsets, gaps and trailing bytes") {
  expect_io_error(craft(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                        8),
                  {"tensor 'b'", "overlap tensor 'a'"});
  expect_io_error(craft(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                        12),
                  {"tensor 'b'", "gap"});
  expect_io_error(craft(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 12), {"trailing bytes"});
  // A tensor listed twice under two names at the same bytes is an overlap too.
  expect_io_error(craft(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                        4),
                  {"overlap"});
}

TEST_CASE("a header with only metadata and no tensors is a valid empty file") {
  const auto file = io::safetensors_file::from_bytes(craft(R"({"__metadata__":{"k":"v"}})", 0));
  CHECK(file.tensor_count() == 0);
  CHECK(file.metadata().at("k") == "v");
}

TEST_CASE("a hostile file on disk is rejected through mmap too") {
  const auto path = temp_path("hostile.safetensors");
  const auto image = craft(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(image.data()),
                                              static_cast<std::streamsize>(image.size()));
  CHECK_THROWS_WITH_AS(io::safetensors_file::open(path), doctest::Contains("hostile.safetensors: tensor 'a'"),
                       recpipe::io_error);
}
