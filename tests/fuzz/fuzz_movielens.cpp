// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the MovieLens readers (io/movielens.hpp): ratings in every layout
// (ratings.csv, u.data, ratings.dat, automatic detection) and movies.csv.
//
// Input: byte 0 chooses the reader and options (bits 0-2: automatic, csv, tab, double_colon
// ratings or movies.csv; bit 3: fail on a malformed line instead of skipping; bits 4-5:
// max_messages 0..3; bit 6: also through the file reader); the rest is the file's text. The file reader
// (read_movielens_*) must agree with the text parser.
#include <string>

#include <recpipe/io/movielens.hpp>

#include "fuzz_common.hpp"

namespace io = recpipe::io;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t control = data[0];
  const std::string_view text = recpipe_fuzz::as_text(data + 1, size - 1);
  io::movielens_options options;
  options.malformed = (control & 8) ? io::on_malformed::fail : io::on_malformed::skip;
  options.max_messages = (control >> 4) & 3;
  const unsigned reader = control & 7;
  const bool through_file = (control & 0x40) != 0;
  const std::filesystem::path path = recpipe_fuzz::temp_path("movielens.txt");
  if (through_file) recpipe_fuzz::write_file(path, data + 1, size - 1);
  try {
    if (reader >= 4) {
      const io::movielens_movies movies = io::parse_movielens_movies(text, "movies.csv", options);
      recpipe_fuzz::expect(movies.malformed.messages.size() <= options.max_messages, "messages are capped");
      for (const auto& [movie, genres] : movies.genres)
        for (std::uint32_t g : genres) recpipe_fuzz::expect(g < movies.genre_names.size(), "genre index in range");
      recpipe_fuzz::expect(movies.genres.count(-1) > 0 || movies.genres_of(-1).empty(), "genres_of an unknown movie is empty");
      if (through_file) {
        const io::movielens_movies again = io::read_movielens_movies(path, options);
        recpipe_fuzz::expect(again.genres.size() == movies.genres.size() && again.lines == movies.lines,
                             "read_movielens_movies agrees with parse_movielens_movies");
      }
    } else {
      options.format = static_cast<io::ratings_format>(reader);
      const io::movielens_ratings ratings = io::parse_movielens_ratings(text, "ratings", options);
      recpipe_fuzz::expect(ratings.format != io::ratings_format::automatic, "a format is chosen");
      recpipe_fuzz::expect(ratings.malformed.messages.size() <= options.max_messages, "messages are capped");
      for (const io::rating_event& e : ratings.events)
        recpipe_fuzz::expect(std::isfinite(e.rating) && e.rating >= 0.0f, "ratings are finite and >= 0");
      if (through_file) {
        const io::movielens_ratings again = io::read_movielens_ratings(path, options);
        recpipe_fuzz::expect(again.events.size() == ratings.events.size() && again.malformed.count == ratings.malformed.count,
                             "read_movielens_ratings agrees with parse_movielens_ratings");
      }
    }
  } catch (const recpipe::error&) {
    recpipe_fuzz::expect(options.malformed == io::on_malformed::fail, "only on_malformed::fail throws");
  }
  return 0;
}
