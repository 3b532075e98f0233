// SPDX-License-Identifier: Apache-2.0
// Tests for the session click-log readers (session-rec, RecSys Challenge 2015, Diginetica), the
// GRU4Rec preprocessing and time split, the pre-split loader, the synthetic generator, bad input
// (malformed lines with file and line, empty files), and the real YOOCHOOSE sample when present.
#include <doctest/doctest.h>

#include "common/file_fixtures.hpp"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <recpipe/io/sessions.hpp>

namespace io = recpipe::io;
namespace fs = std::filesystem;
using recpipe::id_type;

using recpipe::testing::error_of;

namespace {

fs::path write_file(const std::string& name, const std::string& text) {
  return recpipe::testing::write_fixture_file("session_fixtures", name, text);
}

std::vector<id_type> originals(const io::session_log& log, std::size_t s) {
  std::vector<id_type> out;
  for (id_type i : log.session(s)) out.push_back(log.vocabulary.original(i));
  return out;
}

}  // namespace

TEST_CASE("item_vocabulary maps both ways") {
  io::item_vocabulary v;
  CHECK(v.add(500) == 0);
  CHECK(v.add(7) == 1);
  CHECK(v.add(500) == 0);
  CHECK(v.size() == 2);
  CHECK(v.find(7) == 1);
  CHECK(v.find(8) == -1);
  CHECK(v.original(1) == 7);
  CHECK(error_of([&] { (void)v.original(2); }).find("outside [0, 2)") != std::string::npos);
  CHECK(error_of([&] { (void)v.original(-1); }) != "");
}

TEST_CASE("session-rec format: header, columns by name, sessions grouped and ordered by time") {
  const auto path = write_file("sr.txt",
                               "SessionId\tItemId\tTime\n"
                               "2\t30\t200.5\n"
                               "1\t10\t100.25\n"
                               "2\t31\t199.0\n"  // earlier than the click above: reordered
                               "1\t11\t101\r\n"
                               "\n"
                               "3\t10\t50\n");
  const auto clicks = io::read_session_rec_clicks(path);
  REQUIRE(clicks.size() == 5);
  CHECK(clicks[0].session == 2);
  CHECK(clicks[0].item == 30);
  CHECK(clicks[0].time == doctest::Approx(200.5));
  const auto log = io::make_session_log(clicks);
  REQUIRE(log.num_sessions() == 3);
  CHECK(log.num_clicks() == 5);
  CHECK(log.num_items() == 4);
  // By start time: session 3 (50), 1 (100.25), 2 (199).
  CHECK(log.session_ids == std::vector<id_type>{3, 1, 2});
  CHECK(originals(log, 0) == std::vector<id_type>{10});
  CHECK(originals(log, 1) == std::vector<id_type>{10, 11});
  CHECK(originals(log, 2) == std::vector<id_type>{31, 30});
  CHECK(log.offsets == std::vector<id_type>{0, 1, 3, 5});
  CHECK(log.start_time(2) == doctest::Approx(199.0));
  CHECK(log.end_time(2) == doctest::Approx(200.5));
  // Dense ids in order of first appearance in the ordered log.
  CHECK(log.vocabulary.originals()[0] == 10);
  CHECK(log.item_counts() == std::vector<std::size_t>{2, 1, 1, 1});

  // Columns in another order with an extra column; no header at all.
  const auto reordered = io::parse_session_rec_clicks("Time\tExtra\tItemId\tSessionId\n5.5\tx\t9\t4\n", "r.txt");
  REQUIRE(reordered.size() == 1);
  CHECK(reordered[0].session == 4);
  CHECK(reordered[0].item == 9);
  CHECK(reordered[0].time == 5.5);
  const auto headless = io::parse_session_rec_clicks("4\t9\t5.5\n", "h.txt");
  REQUIRE(headless.size() == 1);
  CHECK(headless[0].item == 9);
}

TEST_CASE("session-rec format: malformed lines name the file and the line") {
  const auto bad_field = write_file("bad1.txt", "SessionId\tItemId\tTime\n1\t10\t100\n1\tabc\t101\n");
  const std::string e1 = error_of([&] { io::read_session_rec_clicks(bad_field); });
  CHECK(e1.find(bad_field.string() + ":3:") != std::string::npos);
  CHECK(e1.find("integers") != std::string::npos);
  const std::string e2 = error_of([] { io::parse_session_rec_clicks("SessionId\tItemId\tTime\n1\t10\n", "x.txt"); });
  CHECK(e2.find("x.txt:2:") != std::string::npos);
  CHECK(e2.find("expected 3") != std::string::npos);
  const std::string e3 = error_of([] { io::parse_session_rec_clicks("SessionId\tItemId\tTime\n1\t10\tnan\n", "x.txt"); });
  CHECK(e3.find("x.txt:2:") != std::string::npos);
  CHECK(e3.find("finite") != std::string::npos);
  const std::string e4 = error_of([] { io::parse_session_rec_clicks("Session\tItem\tTime\n1\t10\t1\n", "x.txt"); });
  CHECK(e4.find("x.txt:1:") != std::string::npos);
  CHECK(e4.find("header") != std::string::npos);
  // A file that cannot be opened.
  CHECK(error_of([] { io::read_session_rec_clicks("/nonexistent/sessions.txt"); }).find("cannot open") != std::string::npos);
  // The error type is io_error.
  CHECK_THROWS_AS(io::parse_session_rec_clicks("1\tx\t1\n", "x.txt"), recpipe::io_error);
}

TEST_CASE("empty files give empty logs and empty splits") {
  const auto empty = write_file("empty.txt", "");
  CHECK(io::read_session_rec_clicks(empty).empty());
  CHECK(io::read_rsc15_clicks(empty).empty());
  CHECK(io::read_diginetica_views(empty).empty());
  CHECK(io::parse_session_rec_clicks("SessionId\tItemId\tTime\n", "h.txt").empty());
  const auto log = io::make_session_log(std::vector<io::session_click>{});
  CHECK(log.num_sessions() == 0);
  CHECK(log.offsets == std::vector<id_type>{0});
  const auto split = io::preprocess_sessions(std::vector<io::session_click>{});
  CHECK(split.train.num_sessions() == 0);
  CHECK(split.test.num_sessions() == 0);
  CHECK(split.num_items() == 0);
  CHECK(error_of([&] { (void)log.session(0); }).find("outside") != std::string::npos);
}

TEST_CASE("RecSys Challenge 2015 clicks: ISO 8601 timestamps, categories ignored") {
  const auto path = write_file("clicks.dat",
                               "1,2014-04-07T10:51:09.277Z,214536502,0\n"
                               "1,2014-04-07T10:54:09.868Z,214536500,S\n"
                               "2,2014-04-07T13:56:37.614Z,214662742,2053813342\n"
                               "3,2016-02-29T00:00:00+02:00,5,0\n");
  const auto clicks = io::read_rsc15_clicks(path);
  REQUIRE(clicks.size() == 4);
  // 2014-04-07 is day 16167 since 1970-01-01; the session-rec copy is 7200 s earlier (PROVENANCE.md).
  CHECK(clicks[0].time == doctest::Approx(1396867869.277).epsilon(1e-12));
  CHECK(clicks[0].time - 7200.0 == doctest::Approx(1396860669.277).epsilon(1e-12));
  CHECK(clicks[1].item == 214536500);
  CHECK(clicks[2].session == 2);
  // A leap day with an offset: 2016-02-29 is day 16860; +02:00 means 22:00 UTC the day before.
  CHECK(clicks[3].time == doctest::Approx(16860.0 * 86400.0 - 7200.0));

  const std::string e1 = error_of([] { io::parse_rsc15_clicks("1,2014-04-07T10:51:09.277Z,1,0\n1,2014-13-07T10:51:09Z,2,0\n", "c.dat"); });
  CHECK(e1.find("c.dat:2:") != std::string::npos);
  CHECK(e1.find("ISO 8601") != std::string::npos);
  const std::string e2 = error_of([] { io::parse_rsc15_clicks("1,2014-04-07T10:51:09Z,2\n", "c.dat"); });
  CHECK(e2.find("c.dat:1:") != std::string::npos);
  CHECK(e2.find("expected 4") != std::string::npos);
  CHECK(error_of([] { io::parse_rsc15_clicks("x,2014-04-07T10:51:09Z,2,0\n", "c.dat"); }).find("integers") != std::string::npos);
  CHECK(error_of([] { io::parse_rsc15_clicks("1,2014-02-30T10:51:09Z,2,0\n", "c.dat"); }) != "");
  CHECK(error_of([] { io::parse_rsc15_clicks("1,2014-04-07T10:51:09.Z,2,0\n", "c.dat"); }) != "");
  CHECK(error_of([] { io::parse_rsc15_clicks("1,2014-04-07T10:51:09Zjunk,2,0\n", "c.dat"); }) != "");
}

TEST_CASE("Diginetica item views: header, ordered by timeframe within the day of eventdate") {
  const auto path = write_file("train-item-views.csv",
                               "sessionId;userId;itemId;timeframe;eventdate\n"
                               "1;NA;81766;526309;2016-05-09\n"
                               "1;NA;31331;1031018;2016-05-09\n"
                               "1;;32118;243569;2016-05-09\n"
                               "2;5;9;0;2016-05-10\n");
  const auto clicks = io::read_diginetica_views(path);
  REQUIRE(clicks.size() == 4);
  const double day = 16930.0 * 86400.0;  // 2016-05-09
  CHECK(clicks[0].time == doctest::Approx(day + 526.309));
  const auto log = io::make_session_log(clicks);
  REQUIRE(log.num_sessions() == 2);
  CHECK(originals(log, 0) == std::vector<id_type>{32118, 81766, 31331});
  CHECK(log.start_time(1) == doctest::Approx(day + 86400.0));

  const std::string e1 = error_of([] { io::parse_diginetica_views("sessionId;userId;itemId;timeframe;eventdate\n1;NA;5;10\n", "v.csv"); });
  CHECK(e1.find("v.csv:2:") != std::string::npos);
  CHECK(e1.find("expected 5") != std::string::npos);
  const std::string e2 =
      error_of([] { io::parse_diginetica_views("sessionId;userId;itemId;timeframe;eventdate\n1;NA;5;10;2016/05/09\n", "v.csv"); });
  CHECK(e2.find("v.csv:2:") != std::string::npos);
  CHECK(e2.find("eventdate") != std::string::npos);
  CHECK(error_of([] { io::parse_diginetica_views("1;NA;5;-3;2016-05-09\n", "v.csv"); }).find("timeframe") != std::string::npos);
  CHECK(error_of([] { io::parse_diginetica_views("1;NA;x;3;2016-05-09\n", "v.csv"); }).find("v.csv:1:") != std::string::npos);
}

namespace {
// Session s (1-based) of `items` starting at day `day` (seconds), one click a minute.
void add_session(std::vector<io::session_click>& clicks, id_type s, std::vector<id_type> items, double start) {
  for (std::size_t k = 0; k < items.size(); ++k) clicks.push_back({s, items[k], start + 60.0 * static_cast<double>(k)});
}
}  // namespace

TEST_CASE("preprocessing: short sessions, rare items, then the time split and unknown test items") {
  std::vector<io::session_click> clicks;
  const double day = 86400.0;
  // Items 1..3 are frequent; item 9 has 2 clicks; item 8 appears once (in a session of length 1).
  add_session(clicks, 1, {1, 2, 3}, 0 * day);
  add_session(clicks, 2, {1, 2}, 1 * day);
  add_session(clicks, 3, {2, 3, 9}, 2 * day);
  add_session(clicks, 4, {8}, 3 * day);       // length 1: dropped first
  add_session(clicks, 5, {9, 1}, 3 * day);    // 9 is rare: becomes length 1, dropped
  add_session(clicks, 6, {3, 1, 2}, 4 * day);
  add_session(clicks, 7, {1, 3}, 9.2 * day);     // test (last day)
  add_session(clicks, 8, {2, 5}, 9.5 * day);     // item 5 only in test: removed, the session becomes too short
  add_session(clicks, 10, {5, 5}, 9.6 * day);    // left empty: dropped
  add_session(clicks, 9, {3, 2, 1, 2}, 10 * day);  // test, tmax = 10 d + 3 min
  io::session_preprocessing options;
  options.min_item_support = 3;
  options.test_days = 1.0;
  const auto split = io::preprocess_sessions(clicks, options);
  CHECK(split.report.clicks_in == clicks.size());
  CHECK(split.report.short_sessions == 1);
  CHECK(split.report.rare_item_clicks == 2);   // item 9 (8 left with its session)
  CHECK(split.report.short_after_items == 1);  // session 5
  // Train: sessions 1, 2, 3 (now {2, 3}), 6. Test: sessions 7, 8 ({2}: too short), 10 (empty), 9.
  REQUIRE(split.train.num_sessions() == 4);
  CHECK(split.train.session_ids == std::vector<id_type>{1, 2, 3, 6});
  CHECK(originals(split.train, 2) == std::vector<id_type>{2, 3});
  CHECK(split.num_items() == 3);
  REQUIRE(split.test.num_sessions() == 2);
  CHECK(split.test.session_ids == std::vector<id_type>{7, 9});
  CHECK(originals(split.test, 1) == std::vector<id_type>{3, 2, 1, 2});
  CHECK(split.report.test.unknown_clicks == 3);
  CHECK(split.report.test.short_sessions == 2);
  CHECK(split.report.test.short_clicks == 1);
  // Test shares the training vocabulary.
  CHECK(split.test.num_items() == split.train.num_items());
  CHECK(split.test.session(0)[0] == split.train.vocabulary.find(1));

  // A week: sessions with end >= tmax - 7 d go to test (sessions 6 at day 4 stays in train).
  options.test_days = 7.0;
  const auto week = io::preprocess_sessions(clicks, options);
  CHECK(week.train.session_ids == std::vector<id_type>{1, 2, 3});
  CHECK(week.test.session_ids == std::vector<id_type>{6, 7, 9});
  // No split: everything trains.
  options.test_days = 0.0;
  CHECK(io::preprocess_sessions(clicks, options).test.num_sessions() == 0);
  options.test_days = -1.0;
  CHECK(error_of([&] { io::preprocess_sessions(clicks, options); }).find("test_days") != std::string::npos);
}

TEST_CASE("preprocessing: session_start and session_end bases differ for a session spanning the cut") {
  std::vector<io::session_click> clicks;
  add_session(clicks, 1, {1, 2}, 0.0);
  add_session(clicks, 2, {1, 2}, 100.0);
  clicks.push_back({2, 1, 86400.0 * 2});  // session 2 ends at tmax
  add_session(clicks, 3, {2, 1}, 86400.0 * 2 - 120.0);
  io::session_preprocessing options;
  options.min_item_support = 1;
  const auto by_end = io::preprocess_sessions(clicks, options);
  CHECK(by_end.test.session_ids == std::vector<id_type>{2, 3});
  options.basis = io::split_basis::session_start;
  const auto by_start = io::preprocess_sessions(clicks, options);
  CHECK(by_start.test.session_ids == std::vector<id_type>{3});
  CHECK(by_start.train.session_ids == std::vector<id_type>{1, 2});
}

TEST_CASE("pre-split pair: test items are mapped through the training vocabulary") {
  std::vector<io::session_click> train, test;
  add_session(train, 1, {100, 200, 300}, 0);
  add_session(train, 2, {300, 100}, 1000);
  add_session(test, 7, {200, 999, 300}, 5000);  // 999 unknown: removed, the session keeps 2 clicks
  add_session(test, 8, {999, 100}, 6000);       // becomes length 1: dropped
  add_session(test, 9, {555}, 7000);            // nothing known
  const auto split = io::presplit_sessions(train, test);
  CHECK(split.num_items() == 3);
  REQUIRE(split.test.num_sessions() == 1);
  CHECK(split.test.session_ids[0] == 7);
  CHECK(originals(split.test, 0) == std::vector<id_type>{200, 300});
  CHECK(split.report.test.unknown_clicks == 3);
  CHECK(split.report.test.short_sessions == 2);
  CHECK(split.report.test.short_clicks == 1);
  // min length 1 keeps the one-click session.
  CHECK(io::presplit_sessions(train, test, 1).test.num_sessions() == 2);
}

TEST_CASE("validation_split splits a training log again by time, to_clicks gives original ids back") {
  std::vector<io::session_click> clicks;
  add_session(clicks, 1, {10, 11, 12}, 0);
  add_session(clicks, 2, {11, 12}, 1000);
  add_session(clicks, 3, {12, 10, 13}, 86400.0 * 2);  // 13 only here: removed from validation
  add_session(clicks, 4, {13, 14}, 86400.0 * 2 + 10);  // 14 unknown, 13 unknown: dropped
  const auto log = io::make_session_log(clicks);
  const auto back = io::to_clicks(log);
  REQUIRE(back.size() == clicks.size());
  CHECK(back[2].item == 12);
  CHECK(back[5].session == 3);
  const auto tuning = io::validation_split(log, 1.0);
  CHECK(tuning.train.session_ids == std::vector<id_type>{1, 2});
  CHECK(tuning.num_items() == 3);
  REQUIRE(tuning.test.num_sessions() == 1);
  CHECK(originals(tuning.test, 0) == std::vector<id_type>{12, 10});
  CHECK(tuning.report.test.unknown_clicks == 3);
  CHECK(tuning.report.test.short_sessions == 1);
}

TEST_CASE("session-rec folder: finds the pair, says what is missing") {
  const fs::path dir = fs::path(RECPIPE_TEST_BINARY_DIR) / "session_folder";
  fs::create_directories(dir);
  std::ofstream(dir / "x_train_full.txt") << "SessionId\tItemId\tTime\n1\t10\t1\n1\t11\t2\n2\t11\t3\n2\t12\t4\n";
  std::ofstream(dir / "x_test.txt") << "SessionId\tItemId\tTime\n5\t10\t9\n5\t12\t10\n5\t13\t11\n";
  const auto split = io::read_session_rec_folder(dir);
  CHECK(split.train.num_sessions() == 2);
  CHECK(split.test.num_clicks() == 2);
  const std::string e = error_of([&] { io::read_session_rec_folder(dir, io::session_rec_pair::tuning); });
  CHECK(e.find("_train_tr.txt") != std::string::npos);
  CHECK(error_of([] { io::read_session_rec_folder("/nonexistent/folder"); }).find("not a folder") != std::string::npos);
}

TEST_CASE("write_session_rec_clicks round-trips a split") {
  const auto split = io::preprocess_sessions(io::synthetic_sessions({.sessions = 300, .items = 40}), {.min_item_support = 1});
  const fs::path dir = fs::path(RECPIPE_TEST_BINARY_DIR) / "session_roundtrip";
  fs::create_directories(dir);
  io::write_session_rec_clicks(split.train, dir / "s_train_full.txt");
  io::write_session_rec_clicks(split.test, dir / "s_test.txt");
  const auto back = io::read_session_rec_folder(dir);
  CHECK(back.train.session_ids == split.train.session_ids);
  CHECK(back.train.offsets == split.train.offsets);
  CHECK(back.train.items == split.train.items);  // same first-appearance order, same dense ids
  CHECK(back.test.items == split.test.items);
  CHECK(back.train.times.back() == doctest::Approx(split.train.times.back()));
  CHECK(error_of([&] { io::write_session_rec_clicks(split.train, "/nonexistent/dir/x.txt"); }).find("cannot open") != std::string::npos);
}

TEST_CASE("synthetic sessions: seeded, deterministic, sequential") {
  io::synthetic_sessions_config config;
  config.sessions = 400;
  config.items = 50;
  config.noise = 0.0;
  config.successors = 1;
  const auto a = io::synthetic_sessions(config);
  const auto b = io::synthetic_sessions(config);
  REQUIRE(a.size() == b.size());
  bool same = true;
  for (std::size_t i = 0; i < a.size(); ++i) same = same && a[i].item == b[i].item && a[i].session == b[i].session && a[i].time == b[i].time;
  CHECK(same);
  config.seed = 7;
  const auto c = io::synthetic_sessions(config);
  bool differs = c.size() != a.size();
  for (std::size_t i = 0; !differs && i < a.size(); ++i) differs = a[i].item != c[i].item;
  CHECK(differs);
  // Without noise and one successor, the next item is a function of the current one.
  const auto log = io::make_session_log(a);
  CHECK(log.num_sessions() == 400);
  std::vector<id_type> successor(log.num_items(), -1);
  bool functional = true;
  std::size_t clicks = 0;
  for (std::size_t s = 0; s < log.num_sessions(); ++s) {
    const auto items = log.session(s);
    CHECK(items.size() >= 2);
    clicks += items.size();
    for (std::size_t k = 0; k + 1 < items.size(); ++k) {
      auto& next = successor[static_cast<std::size_t>(items[k])];
      if (next == -1) next = items[k + 1];
      functional = functional && next == items[k + 1];
    }
  }
  CHECK(functional);
  CHECK(static_cast<double>(clicks) / 400.0 == doctest::Approx(5.0).epsilon(0.15));
  // Spread over 7 days: a one-day split puts about a seventh in test.
  const auto split = io::preprocess_sessions(io::synthetic_sessions({.sessions = 700, .items = 60}), {.test_days = 1.0});
  CHECK(split.test.num_sessions() > 60);
  CHECK(split.test.num_sessions() < 140);
  CHECK(error_of([] { io::synthetic_sessions({.items = 0}); }).find("items") != std::string::npos);
  CHECK(error_of([] { io::synthetic_sessions({.noise = 1.5}); }).find("noise") != std::string::npos);
  CHECK(error_of([] { io::synthetic_sessions({.mean_length = 1.0}); }).find("mean_length") != std::string::npos);
}

TEST_CASE("the YOOCHOOSE sample (skipped when absent)") {
  const fs::path dir = fs::path(RECPIPE_TEST_DATA_DIR) / "yoochoose-rsc15-100k";
  if (!fs::exists(dir / "yoochoose-clicks-100k_train_full.txt")) {
    MESSAGE("yoochoose-rsc15-100k not found under " << RECPIPE_TEST_DATA_DIR << ": skipped");
    return;
  }
  const auto split = io::read_session_rec_folder(dir);
  CHECK(split.train.num_clicks() == 70'278);
  CHECK(split.train.num_sessions() == 17'794);
  CHECK(split.test.num_sessions() <= 3'416);
  CHECK(split.test.num_clicks() + split.report.test.unknown_clicks + split.report.test.short_clicks == 13'568);
  CHECK(split.num_items() == 2'933);
  for (std::size_t s = 0; s < split.test.num_sessions(); ++s) CHECK_MESSAGE(split.test.session_length(s) >= 2, s);
  const auto tuning = io::read_session_rec_folder(dir, io::session_rec_pair::tuning);
  CHECK(tuning.train.num_clicks() == 53'254);
}
