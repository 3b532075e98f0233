// SPDX-License-Identifier: Apache-2.0
// recpipe io: readers for MovieLens ratings (ratings.csv, the tab-separated u.data of the older
// releases, the "::"-separated ratings.dat of ml-1m) and movies.csv genres.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/detail/text.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace io {

//! One rating: who rated what, how much, and when (epoch seconds).
struct rating_event {
  id_type user = 0;
  id_type item = 0;
  float rating = 0.0f;
  std::int64_t timestamp = 0;
};

//! Layout of a ratings file. `automatic` decides from the first non-empty line: a comma means
//! CSV (`userId,movieId,rating,timestamp`, header optional), `::` means ml-1m's `ratings.dat`,
//! anything else is whitespace-separated (`u.data`: `user item rating timestamp`, tabs).
enum class ratings_format { automatic, csv, tab, double_colon };

//! What a malformed line does: `skip` counts it (and keeps its message, up to a limit); `fail`
//! throws io_error naming the file and line.
enum class on_malformed { skip, fail };

//! Options of the MovieLens readers.
struct movielens_options {
  ratings_format format = ratings_format::automatic;
  on_malformed malformed = on_malformed::skip;
  std::size_t max_messages = 20;  //!< messages kept for skipped lines (the count is always exact)
};

//! The lines a reader skipped: an exact count and the first `max_messages` messages
//! (`file:line: problem`).
struct malformed_report {
  std::size_t count = 0;
  std::vector<std::string> messages;
};

//! Ratings of one file in file order (not sorted by time), the format found and what was skipped.
struct movielens_ratings {
  std::vector<rating_event> events;
  ratings_format format = ratings_format::automatic;
  std::size_t lines = 0;  //!< lines read, header and blank lines included
  malformed_report malformed;
};

//! Genres of movies: names in order of first appearance, and each movie's genre indices into it.
//! `(no genres listed)` gives a movie an empty list.
struct movielens_movies {
  std::vector<std::string> genre_names;
  std::unordered_map<id_type, std::vector<std::uint32_t>> genres;
  std::unordered_map<id_type, std::string> titles;
  std::size_t lines = 0;
  malformed_report malformed;

  //! Genre indices of `movie`; empty when the movie is unknown.
  const std::vector<std::uint32_t>& genres_of(id_type movie) const {
    static const std::vector<std::uint32_t> none;
    auto it = genres.find(movie);
    return it == genres.end() ? none : it->second;
  }
};

namespace movielens_impl {

// Splits one line by the format's separator; whitespace formats collapse runs of blanks.
inline std::vector<std::string_view> ml_split(std::string_view line, ratings_format format) {
  std::vector<std::string_view> fields;
  if (format == ratings_format::tab) {
    std::size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == '\t' || line[i] == ' ')) ++i;
      if (i >= line.size()) break;
      std::size_t j = i;
      while (j < line.size() && line[j] != '\t' && line[j] != ' ') ++j;
      fields.push_back(line.substr(i, j - i));
      i = j;
    }
    return fields;
  }
  return detail::split_fields(line, format == ratings_format::csv ? std::string_view(",") : std::string_view("::"));
}

// Records one malformed line, or throws when the options say so.
inline void ml_malformed(malformed_report& report, const movielens_options& options, std::string_view reader,
                         std::string_view name, std::size_t line, const std::string& problem) {
  std::string message = detail::concat(name, ":", line, ": ", problem);
  if (options.malformed == on_malformed::fail) detail::fail<io_error>(reader, ": ", message);
  ++report.count;
  if (report.messages.size() < options.max_messages) report.messages.push_back(std::move(message));
}

inline const char* ml_format_name(ratings_format f) {
  switch (f) {
    case ratings_format::csv: return "csv";
    case ratings_format::tab: return "tab";
    case ratings_format::double_colon: return "double_colon";
    default: return "automatic";
  }
}

}  // namespace movielens_impl

//! @brief Parses MovieLens ratings from text; `name` is the file name used in messages.
//!
//! Each line needs four fields: user id, item id (integers), rating (finite, >= 0) and an
//! integer timestamp. A CSV header (first field not a number on the first line) is skipped;
//! blank lines are ignored. A line with missing or extra fields, a non-numeric field or a
//! non-finite rating is malformed: skipped and counted, or fatal (options.malformed). A last
//! line cut short (no newline, missing fields) is malformed like any other.
//! @code
//! auto r = recpipe::io::parse_movielens_ratings("1\t10\t4\t881250949\n", "u.data");
//! // r.format == ratings_format::tab, r.events[0].item == 10
//! @endcode
inline movielens_ratings parse_movielens_ratings(std::string_view text, std::string_view name,
                                                 const movielens_options& options = {}) {
  constexpr std::string_view reader = "movielens ratings";
  movielens_ratings out;
  out.format = options.format;
  if (out.format == ratings_format::automatic) {
    // The first non-empty line decides.
    std::size_t start = 0;
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      if (end == std::string_view::npos) end = text.size();
      const std::string_view line = detail::trim_blanks(text.substr(start, end - start));
      if (!line.empty()) {
        if (line.find("::") != std::string_view::npos) out.format = ratings_format::double_colon;
        else if (line.find(',') != std::string_view::npos) out.format = ratings_format::csv;
        else out.format = ratings_format::tab;
        break;
      }
      start = end + 1;
    }
    if (out.format == ratings_format::automatic) out.format = ratings_format::csv;  // empty text
  }
  out.events.reserve(text.size() / 24);
  bool first_content = true;
  detail::for_each_line(text, [&](std::size_t number, std::string_view raw) {
    out.lines = number;
    const std::string_view line = detail::trim_blanks(raw);
    if (line.empty()) return;
    const auto fields = movielens_impl::ml_split(line, out.format);
    const bool was_first = first_content;
    first_content = false;
    if (was_first && !fields.empty()) {
      id_type probe = 0;
      if (!detail::parse_number(fields[0], probe) && fields[0].find_first_of("0123456789") == std::string_view::npos)
        return;  // header (userId,movieId,rating,timestamp)
    }
    if (fields.size() != 4) {
      movielens_impl::ml_malformed(out.malformed, options, reader, name, number,
                           detail::concat("expected 4 fields (user, item, rating, timestamp), got ",
                                                   fields.size()));
      return;
    }
    rating_event e;
    double rating = 0.0;
    if (!detail::parse_number(fields[0], e.user) || !detail::parse_number(fields[1], e.item)) {
      movielens_impl::ml_malformed(out.malformed, options, reader, name, number,
                           detail::concat("user and item must be integers (got '", fields[0], "', '",
                                                   fields[1], "')"));
      return;
    }
    if (!detail::parse_number(fields[2], rating) || !std::isfinite(rating) || rating < 0.0) {
      movielens_impl::ml_malformed(out.malformed, options, reader, name, number,
                           detail::concat("rating must be a finite number >= 0 (got '", fields[2], "')"));
      return;
    }
    if (!detail::parse_number(fields[3], e.timestamp)) {
      movielens_impl::ml_malformed(out.malformed, options, reader, name, number,
                           detail::concat("timestamp must be an integer (got '", fields[3], "')"));
      return;
    }
    e.rating = static_cast<float>(rating);
    out.events.push_back(e);
  });
  return out;
}

//! @brief Reads a MovieLens ratings file (ratings.csv, u.data or ratings.dat; see
//! parse_movielens_ratings). Throws io_error when the file cannot be read.
//! @code
//! auto r = recpipe::io::read_movielens_ratings("ml-latest-small/ratings.csv");
//! // r.events.size() == 100'836
//! @endcode
inline movielens_ratings read_movielens_ratings(const std::filesystem::path& path,
                                                const movielens_options& options = {}) {
  const std::string text = detail::read_text_file(path, "movielens ratings");
  return parse_movielens_ratings(text, path.string(), options);
}

//! @brief Parses `movies.csv` (`movieId,title,genres`; titles may be quoted, with commas and
//! doubled quotes inside; genres `|`-separated; `(no genres listed)` means none).
//!
//! A line whose id is not an integer, whose field count is not 3, or whose quote is never
//! closed is malformed (skipped and counted, or fatal by option).
//! @code
//! auto m = recpipe::io::parse_movielens_movies("movieId,title,genres\n1,\"Heat, The (1995)\",Action|Crime\n", "movies.csv");
//! // m.genre_names == {"Action", "Crime"}, m.genres_of(1) == {0, 1}
//! @endcode
inline movielens_movies parse_movielens_movies(std::string_view text, std::string_view name,
                                               const movielens_options& options = {}) {
  constexpr std::string_view reader = "movielens movies";
  movielens_movies out;
  std::map<std::string, std::uint32_t, std::less<>> genre_index;
  bool first_content = true;
  detail::for_each_line(text, [&](std::size_t number, std::string_view raw) {
    out.lines = number;
    const std::string_view line = detail::trim_blanks(raw);
    if (line.empty()) return;
    // RFC 4180 fields: a quoted field may hold commas and "" for a quote.
    std::vector<std::string> fields(1);
    bool quoted = false, unterminated = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (quoted) {
        if (c == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            fields.back() += '"';
            ++i;
          } else {
            quoted = false;
          }
        } else {
          fields.back() += c;
        }
      } else if (c == '"') {
        quoted = true;
      } else if (c == ',') {
        fields.emplace_back();
      } else {
        fields.back() += c;
      }
    }
    unterminated = quoted;
    const bool was_first = first_content;
    first_content = false;
    id_type movie = 0;
    if (was_first && !detail::parse_number(std::string_view(fields[0]), movie)) return;  // header
    if (unterminated) {
      movielens_impl::ml_malformed(out.malformed, options, reader, name, number, "quoted title is never closed");
      return;
    }
    if (fields.size() != 3) {
      movielens_impl::ml_malformed(out.malformed, options, reader, name, number,
                           detail::concat("expected 3 fields (movieId, title, genres), got ", fields.size()));
      return;
    }
    if (!detail::parse_number(std::string_view(detail::trim_blanks(fields[0])), movie)) {
      movielens_impl::ml_malformed(out.malformed, options, reader, name, number,
                           detail::concat("movieId must be an integer (got '", fields[0], "')"));
      return;
    }
    std::vector<std::uint32_t> genres;
    std::string_view rest = detail::trim_blanks(fields[2]);
    if (rest != "(no genres listed)") {
      while (!rest.empty()) {
        const std::size_t bar = rest.find('|');
        const std::string_view genre = detail::trim_blanks(rest.substr(0, bar));
        if (!genre.empty()) {
          auto it = genre_index.find(genre);
          if (it == genre_index.end()) {
            it = genre_index.emplace(std::string(genre), static_cast<std::uint32_t>(out.genre_names.size())).first;
            out.genre_names.emplace_back(genre);
          }
          if (std::find(genres.begin(), genres.end(), it->second) == genres.end()) genres.push_back(it->second);
        }
        if (bar == std::string_view::npos) break;
        rest.remove_prefix(bar + 1);
      }
    }
    out.titles[movie] = fields[1];
    out.genres[movie] = std::move(genres);
  });
  return out;
}

//! @brief Reads `movies.csv` (see parse_movielens_movies). Throws io_error when it cannot be read.
//! @code
//! auto m = recpipe::io::read_movielens_movies("ml-latest-small/movies.csv");
//! @endcode
inline movielens_movies read_movielens_movies(const std::filesystem::path& path, const movielens_options& options = {}) {
  const std::string text = detail::read_text_file(path, "movielens movies");
  return parse_movielens_movies(text, path.string(), options);
}

}  // namespace io
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
