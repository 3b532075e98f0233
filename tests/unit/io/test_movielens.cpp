// SPDX-License-Identifier: Apache-2.0
// Tests for the MovieLens readers: both rating formats, quoted titles, malformed and truncated
// lines, empty files, and (when the data set is there) the real ml-latest-small row count.
#include <doctest/doctest.h>

#include "common/file_fixtures.hpp"

#include <filesystem>
#include <fstream>
#include <string>

#include <recpipe/io/movielens.hpp>
// After movielens.hpp on purpose: its helpers must not hide recpipe::detail from other io headers.
#include <recpipe/io/safetensors_writer.hpp>

namespace io = recpipe::io;
namespace fs = std::filesystem;

using recpipe::testing::error_of;

namespace {

fs::path write_file(const std::string& name, const std::string& text) {
  return recpipe::testing::write_fixture_file("movielens_fixtures", name, text);
}

}  // namespace

TEST_CASE("movielens ratings.csv with header") {
  const auto path = write_file("ratings.csv",
                               "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\r\n2,6,0.5,5\n");
  const auto r = io::read_movielens_ratings(path);
  CHECK(r.format == io::ratings_format::csv);
  REQUIRE(r.events.size() == 3);
  CHECK(r.events[1].user == 1);
  CHECK(r.events[1].item == 3);
  CHECK(r.events[1].rating == doctest::Approx(4.5));
  CHECK(r.events[1].timestamp == 964981247);
  CHECK(r.events[2].rating == doctest::Approx(0.5));
  CHECK(r.malformed.count == 0);
  CHECK(r.lines == 4);
}

TEST_CASE("movielens u.data (tab-separated, no header) is detected by content") {
  const auto path = write_file("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n");
  const auto r = io::read_movielens_ratings(path);
  CHECK(r.format == io::ratings_format::tab);
  REQUIRE(r.events.size() == 3);
  CHECK(r.events[0].user == 196);
  CHECK(r.events[0].item == 242);
  CHECK(r.events[0].rating == 3.0f);
  CHECK(r.events[2].timestamp == 878887116);
}

TEST_CASE("movielens ratings.dat (ml-1m, ::) and a forced format") {
  const auto r = io::parse_movielens_ratings("1::1193::5::978300760\n1::661::3::978302109\n", "ratings.dat");
  CHECK(r.format == io::ratings_format::double_colon);
  REQUIRE(r.events.size() == 2);
  CHECK(r.events[0].item == 1193);
  // Forcing tab on a CSV file makes every line malformed (one field each), and says so.
  io::movielens_options tab;
  tab.format = io::ratings_format::tab;
  const auto wrong = io::parse_movielens_ratings("1,2,3,4\n5,6,7,8\n", "x.csv", tab);
  CHECK(wrong.events.empty());
  CHECK(wrong.malformed.count == 2);
}

TEST_CASE("movielens malformed lines are skipped and counted with file and line, or fatal") {
  const std::string text =
      "userId,movieId,rating,timestamp\n"
      "1,1,4.0,964982703\n"
      "1,x,4.0,964982703\n"      // line 3: item not a number
      "1,2,4.0\n"                // line 4: 3 fields
      "\n"                       // line 5: blank, ignored
      "1,3,nan,964982703\n"      // line 6: non-finite rating
      "1,4,4.0,12.5\n"           // line 7: timestamp not an integer
      "1,5,-1,964982703\n"       // line 8: negative rating
      "1,6,4.0,964982703,9\n"    // line 9: 5 fields
      "2,7,3.0,964982704\n";
  const auto path = write_file("bad.csv", text);
  const auto r = io::read_movielens_ratings(path);
  CHECK(r.events.size() == 2);
  CHECK(r.malformed.count == 6);
  REQUIRE(r.malformed.messages.size() == 6);
  CHECK(r.malformed.messages[0].find("bad.csv:3: user and item must be integers") != std::string::npos);
  CHECK(r.malformed.messages[1].find("bad.csv:4: expected 4 fields") != std::string::npos);
  CHECK(r.malformed.messages[2].find(":6: rating must be") != std::string::npos);
  CHECK(r.malformed.messages[3].find(":7: timestamp") != std::string::npos);
  CHECK(r.malformed.messages[4].find(":8: rating") != std::string::npos);
  CHECK(r.malformed.messages[5].find(":9: expected 4 fields") != std::string::npos);

  io::movielens_options few;
  few.max_messages = 2;
  const auto limited = io::read_movielens_ratings(path, few);
  CHECK(limited.malformed.count == 6);
  CHECK(limited.malformed.messages.size() == 2);

  io::movielens_options fatal;
  fatal.malformed = io::on_malformed::fail;
  const std::string message = error_of<recpipe::io_error>([&] { (void)io::read_movielens_ratings(path, fatal); });
  CHECK(message.find("recpipe: movielens ratings: ") == 0);
  CHECK(message.find("bad.csv:3:") != std::string::npos);
}

TEST_CASE("movielens empty file, blank file, header only") {
  CHECK(io::read_movielens_ratings(write_file("empty.csv", "")).events.empty());
  CHECK(io::parse_movielens_ratings("\n\n", "blank").events.empty());
  const auto header = io::parse_movielens_ratings("userId,movieId,rating,timestamp\n", "h.csv");
  CHECK(header.events.empty());
  CHECK(header.malformed.count == 0);
  CHECK(io::parse_movielens_movies("", "movies.csv").genres.empty());
}

TEST_CASE("movielens truncated last line") {
  // A complete last line without its newline is fine; one cut inside is malformed.
  const auto complete = io::parse_movielens_ratings("1,1,4.0,964982703\n2,2,3.0,5", "t.csv");
  CHECK(complete.events.size() == 2);
  CHECK(complete.events[1].timestamp == 5);
  const auto cut = io::parse_movielens_ratings("1,1,4.0,964982703\n2,2,3.", "t.csv");
  CHECK(cut.events.size() == 1);
  CHECK(cut.malformed.count == 1);
  CHECK(cut.malformed.messages.at(0).find("t.csv:2: expected 4 fields") != std::string::npos);
  const auto tab_cut = io::parse_movielens_ratings("196\t242\t3\t881250949\n186\t30", "u.data");
  CHECK(tab_cut.events.size() == 1);
  CHECK(tab_cut.malformed.count == 1);
}

TEST_CASE("movielens missing file is an io_error naming it") {
  const std::string message = error_of<recpipe::io_error>([] { (void)io::read_movielens_ratings("/nonexistent/ratings.csv"); });
  CHECK(message.find("cannot open /nonexistent/ratings.csv") != std::string::npos);
}

TEST_CASE("movielens movies.csv: quoted titles with commas, genres, no genres") {
  const std::string text =
      "movieId,title,genres\n"
      "1,Toy Story (1995),Adventure|Animation|Children\n"
      "11,\"American President, The (1995)\",Comedy|Drama|Romance\n"
      "12,\"Say \"\"Hi\"\", Joe (2001)\",Comedy\n"
      "13,Nothing (2000),(no genres listed)\n"
      "oops,Bad (2000),Drama\n"
      "14,\"Unclosed, (2000),Drama\n"
      "15,Two fields only\n";
  const auto path = write_file("movies.csv", text);
  const auto m = io::read_movielens_movies(path);
  REQUIRE(m.genres.size() == 4);
  CHECK(m.titles.at(11) == "American President, The (1995)");
  CHECK(m.titles.at(12) == "Say \"Hi\", Joe (2001)");
  CHECK(m.genre_names.size() == 6);  // Adventure Animation Children Comedy Drama Romance
  CHECK(m.genre_names[3] == "Comedy");
  CHECK(m.genres_of(1) == std::vector<std::uint32_t>{0, 1, 2});
  CHECK(m.genres_of(11) == std::vector<std::uint32_t>{3, 4, 5});
  CHECK(m.genres_of(13).empty());
  CHECK(m.genres_of(999).empty());
  CHECK(m.malformed.count == 3);
  REQUIRE(m.malformed.messages.size() == 3);
  CHECK(m.malformed.messages[0].find("movies.csv:6: movieId must be an integer") != std::string::npos);
  CHECK(m.malformed.messages[1].find(":7: quoted title is never closed") != std::string::npos);
  CHECK(m.malformed.messages[2].find(":8: expected 3 fields") != std::string::npos);
  io::movielens_options fatal;
  fatal.malformed = io::on_malformed::fail;
  CHECK(error_of<recpipe::io_error>([&] { (void)io::read_movielens_movies(path, fatal); }).find("movies.csv:6:") != std::string::npos);
}

TEST_CASE("movielens ml-latest-small: the real files") {
  const fs::path dir = fs::path(RECPIPE_TEST_DATA_DIR) / "ml-latest-small";
  if (!fs::exists(dir / "ratings.csv")) {
    MESSAGE("skipped: " << (dir / "ratings.csv").string() << " is absent (set RECPIPE_DATA_DIR)");
    return;
  }
  const auto r = io::read_movielens_ratings(dir / "ratings.csv");
  CHECK(r.format == io::ratings_format::csv);
  CHECK(r.events.size() == 100'836);
  CHECK(r.malformed.count == 0);
  if (fs::exists(dir / "movies.csv")) {
    const auto m = io::read_movielens_movies(dir / "movies.csv");
    CHECK(m.genres.size() == 9'742);
    CHECK(m.malformed.count == 0);
    CHECK(m.genre_names.size() == 19);  // 19 named genres; "(no genres listed)" is none
  }
}
