// SPDX-License-Identifier: Apache-2.0
// recpipe train: replays a CSV (or TSV) file as a stream of events, with a user parse function.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief The fields of one CSV line, with typed accessors whose errors name the field; what a
//! csv_source's parse function reads.
//!
//! Fields are split at the delimiter; a field that starts with '"' runs to the matching quote
//! ("" inside is one quote, RFC 4180), so quoted fields may hold the delimiter. A line cannot
//! continue on the next one.
//! @code
//! recpipe::train::csv_row row("1,31,2.5,1260759144", ',');
//! std::int64_t user = row.as_int(0);
//! double rating = row.as_double(2);
//! @endcode
class csv_row {
 public:
  csv_row() = default;
  csv_row(std::string_view line, char delimiter) { split(line, delimiter); }

  std::size_t size() const noexcept { return fields_.size(); }
  //! Field i as text; throws recpipe::error when the line has fewer fields.
  std::string_view operator[](std::size_t i) const {
    if (i >= fields_.size()) detail::fail("field ", i, " is missing (the line has ", fields_.size(), " fields)");
    return std::string_view(storage_).substr(fields_[i].first, fields_[i].second);
  }
  //! Field i as a signed integer (the whole field; surrounding spaces are allowed).
  std::int64_t as_int(std::size_t i) const {
    const std::string_view text = trim((*this)[i]);
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty())
      detail::fail("field ", i, " ('", text, "') is not an integer");
    return value;
  }
  //! Field i as a double ("nan" and "inf" parse; range checks are the parse function's job).
  double as_double(std::size_t i) const {
    const std::string_view text = trim((*this)[i]);
    double value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty())
      detail::fail("field ", i, " ('", text, "') is not a number");
    return value;
  }
  //! Throws unless the line has at least `n` fields.
  void require(std::size_t n) const {
    if (fields_.size() < n) detail::fail("expected ", n, " fields, got ", fields_.size());
  }

 private:
  static std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  }
  void split(std::string_view line, char delimiter) {
    storage_.clear();
    storage_.reserve(line.size());
    fields_.clear();
    std::size_t i = 0;
    while (true) {
      const std::size_t begin = storage_.size();
      if (i < line.size() && line[i] == '"') {
        ++i;
        while (i < line.size()) {
          if (line[i] == '"') {
            if (i + 1 < line.size() && line[i + 1] == '"') {
              storage_.push_back('"');
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          storage_.push_back(line[i++]);
        }
      }
      while (i < line.size() && line[i] != delimiter) storage_.push_back(line[i++]);
      fields_.emplace_back(begin, storage_.size() - begin);
      if (i >= line.size()) break;
      ++i;  // the delimiter
    }
  }

  std::string storage_;
  std::vector<std::pair<std::size_t, std::size_t>> fields_;  // offsets, so copies stay valid
};

//! What a csv_source does with a line its parse function rejects.
enum class bad_line_policy {
  skip,  //!< count it, remember its message (the first few), go on
  fatal  //!< throw recpipe::error "train::csv_source: <path>:<line>: <problem>"
};

//! Options of a csv_source.
struct csv_options {
  char delimiter = ',';    //!< '\t' for MovieLens' u.data
  bool header = true;      //!< skip the first line
  bad_line_policy on_bad_line = bad_line_policy::skip;
  std::size_t max_messages = 20;  //!< bad-line messages kept (and printed) at most
  std::FILE* report = stderr;     //!< where skipped lines are reported as they occur (null: silent)
};

//! @brief A file replay: reads a CSV/TSV file line by line and turns each line into an Event with
//! the user's parse function; a callable event source for train::trainer (returns the next event,
//! or std::nullopt at the end of the file). Copies share the file position (one stream).
//!
//! **Order.** Lines are replayed in file order. To replay in timestamp order when the file is not
//! sorted (MovieLens' ratings.csv is sorted by user), construct it with a `sort_key`: the whole
//! file is then read at construction and stably sorted by the key (memory: every event). The
//! trainer counts timestamps that go backwards and processes them in arrival order.
//!
//! **Malformed lines.** The parse function throws (recpipe::error, or any std::exception) for a
//! line it cannot read, or returns std::nullopt to drop a line silently (e.g. a comment). A throw
//! is reported as "<path>:<line>: <message>" (line numbers from 1, header included) and, by
//! `csv_options::on_bad_line`, skipped and counted, or rethrown as recpipe::error. Empty lines
//! are skipped without counting.
//! @code
//! struct rating { std::int64_t user, item; float stars; std::int64_t time; };
//! recpipe::train::csv_source<rating> source("ratings.csv", [](const recpipe::train::csv_row& r) {
//!   r.require(4);
//!   return std::optional<rating>(rating{r.as_int(0), r.as_int(1), float(r.as_double(2)), r.as_int(3)});
//! }, {}, [](const rating& e) { return e.time; });
//! while (auto event = source()) { ... }
//! @endcode
template <class Event>
class csv_source {
 public:
  using parse_fn = std::function<std::optional<Event>(const csv_row&)>;
  using key_fn = std::function<std::int64_t(const Event&)>;

  //! Opens `path` (throws recpipe::io_error if it cannot). With `sort_key`, reads it all now.
  csv_source(std::filesystem::path path, parse_fn parse, csv_options options = {}, key_fn sort_key = {})
      : state_(std::make_shared<state>(std::move(path), std::move(parse), options)) {
    state& s = *state_;
    if (!s.parse_) detail::fail("train::csv_source: no parse function given");
    if (!s.in_) detail::fail<io_error>("train::csv_source: cannot open ", s.path_.string());
    if (sort_key) {
      while (auto e = s.read_next()) s.sorted_.push_back(std::move(*e));
      std::stable_sort(s.sorted_.begin(), s.sorted_.end(),
                       [&](const Event& a, const Event& b) { return sort_key(a) < sort_key(b); });
      s.preloaded_ = true;
    }
  }

  //! The next event, or std::nullopt at the end of the file.
  std::optional<Event> operator()() {
    state& s = *state_;
    if (!s.preloaded_) return s.read_next();
    if (s.next_ >= s.sorted_.size()) return std::nullopt;
    return std::move(s.sorted_[s.next_++]);
  }

  const std::filesystem::path& path() const noexcept { return state_->path_; }
  //! Lines read so far (header included).
  std::size_t lines() const noexcept { return state_->line_; }
  //! Lines the parse function rejected (with skip).
  std::size_t bad_lines() const noexcept { return state_->bad_lines_; }
  //! "<path>:<line>: <message>" of the first csv_options::max_messages bad lines.
  const std::vector<std::string>& messages() const noexcept { return state_->messages_; }

 private:
  // Shared, so the source is copyable (std::function needs that) and copies read one stream.
  struct state {
    state(std::filesystem::path path, parse_fn parse, csv_options options)
        : path_(std::move(path)), parse_(std::move(parse)), options_(options), in_(path_) {}
  std::optional<Event> read_next() {
    std::string text;
    while (std::getline(in_, text)) {
      ++line_;
      if (!text.empty() && text.back() == '\r') text.pop_back();
      if (line_ == 1 && options_.header) continue;
      if (text.empty()) continue;
      std::string problem;
      try {
        row_ = csv_row(text, options_.delimiter);
        if (std::optional<Event> e = parse_(row_)) return e;
        continue;  // dropped by the parse function on purpose
      } catch (const error& e) {
        problem = std::string(e.what()).substr(std::string_view(e.what()).rfind("recpipe: ", 0) == 0 ? 9 : 0);
      } catch (const std::exception& e) {
        problem = e.what();
      }
      const std::string message = path_.string() + ":" + std::to_string(line_) + ": " + problem;
      if (options_.on_bad_line == bad_line_policy::fatal) detail::fail("train::csv_source: ", message);
      ++bad_lines_;
      if (messages_.size() < options_.max_messages) {
        messages_.push_back(message);
        if (options_.report) std::fprintf(options_.report, "recpipe: train::csv_source: skipped %s\n", message.c_str());
      }
    }
    return std::nullopt;
  }

  std::filesystem::path path_;
  parse_fn parse_;
  csv_options options_;
  std::ifstream in_;
  csv_row row_;
  std::size_t line_ = 0, bad_lines_ = 0;
  std::vector<std::string> messages_;
  bool preloaded_ = false;
  std::vector<Event> sorted_;
  std::size_t next_ = 0;
  };
  std::shared_ptr<state> state_;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
