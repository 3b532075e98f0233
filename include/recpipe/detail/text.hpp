// SPDX-License-Identifier: Apache-2.0
// recpipe internal: the small text-parsing pieces the file readers share (io/movielens.hpp,
// io/sessions.hpp): whole-file reads, line iteration, trimming, splitting and exact numbers.
#pragma once

#include <charconv>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <recpipe/core/errors.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

//! `s` without trailing blanks and carriage returns and without leading blanks.
inline std::string_view trim_blanks(std::string_view s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return s;
}

//! The fields of `line` between occurrences of `separator`, each trimmed (an empty line is one
//! empty field).
inline std::vector<std::string_view> split_fields(std::string_view line, std::string_view separator) {
  std::vector<std::string_view> fields;
  std::size_t start = 0;
  for (;;) {
    const std::size_t at = line.find(separator, start);
    if (at == std::string_view::npos) {
      fields.push_back(trim_blanks(line.substr(start)));
      return fields;
    }
    fields.push_back(trim_blanks(line.substr(start, at - start)));
    start = at + separator.size();
  }
}

//! Parses all of `text` (a leading '+' allowed) into `out`; false if anything is left over.
template <class T>
bool parse_number(std::string_view text, T& out) {
  if (text.empty()) return false;
  if (text.front() == '+') text.remove_prefix(1);
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end;
}

//! Calls fn(line_number, line) for every line, numbered from 1 (the last may lack its newline).
template <class Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  std::size_t start = 0, number = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    fn(++number, text.substr(start, end - start));
    start = end + 1;
  }
}

//! The whole file; io_error naming `reader` and the path when it cannot be opened or read.
inline std::string read_text_file(const std::filesystem::path& path, std::string_view reader) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail<io_error>(reader, ": cannot open ", path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail<io_error>(reader, ": error reading ", path.string());
  return std::move(buffer).str();
}

}  // namespace detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
