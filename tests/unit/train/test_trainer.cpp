// SPDX-License-Identifier: Apache-2.0
// train::trainer and train::csv_source: streaming training from callables and CSV replays, bad
// events, malformed lines, out-of-order timestamps, threads, progress lines.
#include <doctest/doctest.h>

#include <recpipe/train/mlp_model.hpp>
#include <recpipe/train/trainer.hpp>

#include "../../common/train_fixtures.hpp"
#include "../../common/trainer_fixtures.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

using namespace recpipe;

namespace {

using recpipe::testing::event;
using recpipe::testing::fixture;
using recpipe::testing::synthetic_stream;

std::filesystem::path write_file(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / ("recpipe_test_trainer_" + name);
  std::ofstream(path) << text;
  return path;
}

std::optional<event> parse_event(const train::csv_row& r) {
  r.require(4);
  event e;
  e.user = r.as_int(0);
  e.item = r.as_int(1);
  e.label = static_cast<float>(r.as_double(2)) >= 4.0f ? 1.0f : 0.0f;
  e.time = r.as_int(3);
  return e;
}

}  // namespace

TEST_CASE("trainer: a callable source on a learnable stream: loss falls, AUC > 0.7") {
  fixture f;
  train::trainer<train::mlp_model, event> t(f.model, f.sgd(), fixture::featurize, f.quiet(),
                                            [](const event& e) { return e.time; });
  train::trainer_stats early;
  synthetic_stream first(32 * 10);
  t.run(std::function<std::optional<event>()>(std::ref(first)));
  early = t.stats();
  CHECK(early.steps == 10);
  synthetic_stream rest(32 * 390);
  rest.gen.seed(99);
  t.run(std::function<std::optional<event>()>(std::ref(rest)));
  const train::trainer_stats s = t.stats();
  CHECK(s.events == 32 * 400);
  CHECK(s.examples == 32 * 400);
  CHECK(s.steps == 400);
  CHECK(s.skipped_steps == 0);
  CHECK(s.bad_events == 0);
  CHECK(s.running_loss < 0.7 * early.running_loss);
  CHECK(s.running_auc > 0.7);
  CHECK(s.events_per_second > 0);
}

TEST_CASE("trainer: empty stream") {
  fixture f;
  train::trainer<train::mlp_model, event> t(f.model, f.sgd(), fixture::featurize, f.quiet());
  const auto before = f.model.parameters()[0]->value;
  t.run([]() -> std::optional<event> { return std::nullopt; });
  const auto s = t.stats();
  CHECK(s.events == 0);
  CHECK(s.steps == 0);
  CHECK(std::isnan(s.running_loss));
  CHECK(std::isnan(s.running_auc));
  CHECK(f.model.parameters()[0]->value == before);
  CHECK_FALSE(t.flush());
}

TEST_CASE("trainer: NaN labels and features are dropped and counted, never trained on") {
  fixture f;
  train::trainer<train::mlp_model, event> t(f.model, f.sgd(), fixture::featurize, f.quiet(4));
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<event> events = {{1, 2, 1.0f, 0.0f, 1}, {1, 3, nan, 0.0f, 2}, {2, 2, 0.0f, nan, 3},
                               {2, 3, 2.0f, 0.0f, 4}, {3, 3, 0.0f, inf, 5}, {3, 4, 1.0f, 0.0f, 6},
                               {4, 5, 0.0f, 0.0f, 7}, {5, 5, 1.0f, 0.0f, 8}};
  std::size_t next = 0;
  t.run([&]() -> std::optional<event> {
    if (next == events.size()) return std::nullopt;
    return events[next++];
  });
  const auto s = t.stats();
  CHECK(s.events == 8);
  CHECK(s.bad_events == 4);
  CHECK(s.examples == 4);
  CHECK(s.steps == 1);
  for (auto* p : f.model.parameters())
    for (float v : p->value) REQUIRE(std::isfinite(v));
  for (float v : f.users->values().values()) REQUIRE(std::isfinite(v));
}

TEST_CASE("trainer: a featurizer that throws drops the event (counted); one that begins no example skips it") {
  fixture f;
  train::trainer<train::mlp_model, event> t(
      f.model, f.sgd(),
      [](const event& e, train::example_batch& b) {
        if (e.user < 0) throw error("recpipe: negative user");
        if (e.user == 0) return;  // filtered on purpose
        fixture::featurize(e, b);
      },
      f.quiet(2));
  std::vector<event> events = {{-1, 2, 1.0f, 0.0f, 1}, {0, 2, 1.0f, 0.0f, 2}, {1, 2, 1.0f, 0.0f, 3}, {2, 2, 0.0f, 0.0f, 4}};
  for (const event& e : events) t.push(e);
  const auto s = t.stats();
  CHECK(s.events == 4);
  CHECK(s.bad_events == 1);
  CHECK(s.examples == 2);
  CHECK(s.steps == 1);
}

TEST_CASE("trainer: out-of-order timestamps are trained in arrival order and counted") {
  fixture f;
  train::trainer<train::mlp_model, event> t(f.model, f.sgd(), fixture::featurize, f.quiet(2),
                                            [](const event& e) { return e.time; });
  for (std::int64_t time : {10, 20, 15, 30, 5, 30}) t.push(event{1, 2, 1.0f, 0.0f, time});
  const auto s = t.stats();
  CHECK(s.out_of_order == 2);
  CHECK(s.examples == 6);
  CHECK(s.steps == 3);
}

TEST_CASE("trainer: a non-finite gradient skips the step; lr 0 leaves the weights unchanged") {
  fixture f;
  SUBCASE("a weight that is already NaN: every step is skipped and counted") {
    f.model.parameters()[2]->value[0] = std::numeric_limits<float>::quiet_NaN();
    train::trainer<train::mlp_model, event> t(f.model, f.sgd(), fixture::featurize, f.quiet(4));
    const auto rows = f.users->values().values();
    for (int i = 0; i < 8; ++i) t.push(event{1, 2, 1.0f, 0.0f, i});
    CHECK(t.stats().skipped_steps == 2);
    CHECK(t.stats().steps == 0);
    CHECK(f.users->values().values() == rows);
  }
  SUBCASE("lr 0: nothing moves") {
    f.lr = 0.0f;
    const auto before = f.model.parameters()[0]->value;
    train::trainer<train::mlp_model, event> t(f.model, f.sgd(), fixture::featurize, f.quiet(4));
    for (int i = 0; i < 8; ++i) t.push(event{1, 2, 1.0f, 0.0f, i});
    CHECK(t.stats().steps == 2);
    CHECK(f.model.parameters()[0]->value == before);
  }
}

TEST_CASE("trainer: options are checked") {
  fixture f;
  auto o = f.quiet(0);
  CHECK_THROWS_WITH_AS((train::trainer<train::mlp_model, event>(f.model, f.sgd(), fixture::featurize, o)),
                       doctest::Contains("batch_size"), error);
  CHECK_THROWS_WITH_AS((train::trainer<train::mlp_model, event>(f.model, f.sgd(), {}, f.quiet())),
                       doctest::Contains("featurizer"), error);
}

TEST_CASE("trainer: progress lines when the stream is not a terminal") {
  fixture f;
  std::FILE* out = std::tmpfile();
  REQUIRE(out != nullptr);
  train::trainer_options o = f.quiet(16);
  o.progress = train::progress_mode::automatic;  // a file is not a terminal: lines
  o.progress_seconds = 0.0;
  o.progress_stream = out;
  o.label = "synthetic";
  train::trainer<train::mlp_model, event> t(f.model, f.sgd(), fixture::featurize, o);
  synthetic_stream s(64);
  t.run(std::function<std::optional<event>()>(std::ref(s)));
  std::rewind(out);
  std::string text;
  char buffer[512];
  while (std::fgets(buffer, sizeof buffer, out)) text += buffer;
  std::fclose(out);
  CHECK(text.find('\r') == std::string::npos);
  CHECK(text.find("synthetic: 64 events") != std::string::npos);
  CHECK(text.find("4 steps (0 skipped), 0 bad") != std::string::npos);
}

TEST_CASE("trainer: progress updates one line in place on a terminal") {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  REQUIRE(master >= 0);
  REQUIRE(::grantpt(master) == 0);
  REQUIRE(::unlockpt(master) == 0);
  const int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY);
  REQUIRE(slave >= 0);
  std::FILE* terminal = ::fdopen(slave, "w");
  REQUIRE(terminal != nullptr);
  fixture f;
  train::trainer_options o = f.quiet(16);
  o.progress = train::progress_mode::automatic;
  o.progress_stream = terminal;
  train::trainer<train::mlp_model, event> t(f.model, f.sgd(), fixture::featurize, o);
  synthetic_stream s(64);
  t.run(std::function<std::optional<event>()>(std::ref(s)));
  std::fclose(terminal);
  std::string text;
  char buffer[1024];
  for (ssize_t n; (n = ::read(master, buffer, sizeof buffer)) > 0;) {
    text.append(buffer, static_cast<std::size_t>(n));
    if (text.find('\n') != std::string::npos) break;
  }
  ::close(master);
  CHECK(text.rfind("\rtrain: 64 events", 0) == 0);  // in place: carriage return, then the line
  CHECK(text.find("4 steps (0 skipped)") != std::string::npos);
}

TEST_CASE("csv_source: replay, malformed lines skipped or fatal, timestamp order") {
  const auto path = write_file("ratings.csv",
                               "userId,movieId,rating,timestamp\n"
                               "1,2,4.5,300\n"
                               "1,x,3.0,100\n"
                               "\n"
                               "2,3,5.0\n"
                               "3,\"4\",1.0,200\r\n");
  SUBCASE("skip: the bad lines are counted and reported with their line numbers") {
    train::csv_options o;
    o.report = nullptr;
    train::csv_source<event> source(path, parse_event, o);
    std::vector<std::int64_t> times;
    while (auto e = source()) times.push_back(e->time);
    CHECK(times == std::vector<std::int64_t>{300, 200});
    CHECK(source.bad_lines() == 2);
    REQUIRE(source.messages().size() == 2);
    CHECK(source.messages()[0].find("ratings.csv:3: field 1 ('x') is not an integer") != std::string::npos);
    CHECK(source.messages()[1].find("ratings.csv:5: expected 4 fields, got 3") != std::string::npos);
  }
  SUBCASE("fatal: the first bad line throws, naming it") {
    train::csv_options o;
    o.on_bad_line = train::bad_line_policy::fatal;
    train::csv_source<event> source(path, parse_event, o);
    CHECK(source()->time == 300);
    CHECK_THROWS_WITH_AS(source(), doctest::Contains("ratings.csv:3: field 1"), error);
  }
  SUBCASE("sorted by a timestamp key") {
    train::csv_options o;
    o.report = nullptr;
    train::csv_source<event> source(path, parse_event, o, [](const event& e) { return e.time; });
    CHECK(source()->time == 200);
    CHECK(source()->time == 300);
    CHECK_FALSE(source().has_value());
  }
  SUBCASE("tab-separated without a header (MovieLens u.data)") {
    const auto tsv = write_file("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n");
    train::csv_options o;
    o.delimiter = '\t';
    o.header = false;
    train::csv_source<event> source(tsv, parse_event, o);
    CHECK(source()->user == 196);
    CHECK(source()->item == 302);
    CHECK_FALSE(source());
  }
  SUBCASE("a missing file") {
    CHECK_THROWS_AS(train::csv_source<event>("/nonexistent/ratings.csv", parse_event), io_error);
  }
  SUBCASE("as a trainer source") {
    fixture f;
    train::csv_options o;
    o.report = nullptr;
    train::trainer<train::mlp_model, event> t(f.model, f.sgd(), fixture::featurize, f.quiet());
    t.run(train::csv_source<event>(path, parse_event, o));
    CHECK(t.stats().events == 2);
    CHECK(t.stats().steps == 1);
  }
}

TEST_CASE("csv_row: quoted fields and typed reads") {
  train::csv_row r("1,\"Toy Story (1995)\",\"a, \"\"b\"\"\", 2.5 ,nan", ',');
  REQUIRE(r.size() == 5);
  CHECK(r[1] == "Toy Story (1995)");
  CHECK(r[2] == "a, \"b\"");
  CHECK(r.as_double(3) == 2.5);
  CHECK(std::isnan(r.as_double(4)));
  CHECK_THROWS_WITH_AS(r[5], doctest::Contains("field 5 is missing"), error);
  CHECK_THROWS_WITH_AS(r.as_int(1), doctest::Contains("not an integer"), error);
}
