// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: train::csv_source and train::csv_row (train/csv_source.hpp), with the parse
// function of a MovieLens ratings replay (4 fields: user, item, rating, timestamp).
//
// Input: byte 0 chooses the options (bit 0: tab instead of comma; bit 1: no header line; bit 2:
// fatal bad lines; bit 3: read sorted by timestamp; bit 4: the parse function drops odd users
// on purpose); the rest is the file.
#include <cmath>
#include <optional>
#include <string>

#include <recpipe/train/csv_source.hpp>

#include "fuzz_common.hpp"

namespace train = recpipe::train;

namespace {
struct rating {
  std::int64_t user, item;
  double stars;
  std::int64_t time;
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t control = data[0];
  const std::filesystem::path path = recpipe_fuzz::temp_path("events.csv");
  recpipe_fuzz::write_file(path, data + 1, size - 1);
  train::csv_options options;
  options.delimiter = (control & 1) ? '\t' : ',';
  options.header = (control & 2) == 0;
  options.on_bad_line = (control & 4) ? train::bad_line_policy::fatal : train::bad_line_policy::skip;
  options.max_messages = 3;
  options.report = nullptr;
  const bool drop_odd = (control & 16) != 0;
  const auto parse = [drop_odd](const train::csv_row& row) -> std::optional<rating> {
    row.require(4);
    rating r{row.as_int(0), row.as_int(1), row.as_double(2), row.as_int(3)};
    if (!std::isfinite(r.stars)) recpipe::detail::fail("rating ", r.stars, " is not finite");
    if (drop_odd && (r.user & 1)) return std::nullopt;
    for (std::size_t i = 0; i < row.size(); ++i) (void)row[i];
    return r;
  };
  train::csv_source<rating>::key_fn key;
  if (control & 8) key = [](const rating& r) { return r.time; };
  try {
    train::csv_source<rating> source(path, parse, options, key);
    std::size_t events = 0;
    std::int64_t last_time = std::numeric_limits<std::int64_t>::min();
    while (const auto e = source()) {
      ++events;
      recpipe_fuzz::expect(std::isfinite(e->stars), "events passed the parse function's checks");
      if (control & 8) recpipe_fuzz::expect(e->time >= last_time, "a sorted replay is in timestamp order");
      last_time = e->time;
    }
    recpipe_fuzz::expect(!source(), "the end of the file stays the end");
    recpipe_fuzz::expect(source.messages().size() <= options.max_messages, "messages are capped");
    recpipe_fuzz::expect(source.bad_lines() + events <= source.lines(), "at most one event or bad line per line");
  } catch (const recpipe::error&) {
    recpipe_fuzz::expect(options.on_bad_line == train::bad_line_policy::fatal, "only a fatal policy throws");
  }
  // csv_row on its own: the whole input as one line.
  const train::csv_row row(recpipe_fuzz::as_text(data + 1, size - 1), options.delimiter);
  recpipe_fuzz::expect(row.size() >= 1, "a line has at least one field");
  for (std::size_t i = 0; i < row.size(); ++i) {
    try {
      (void)row.as_int(i);
    } catch (const recpipe::error&) {
    }
    try {
      (void)row.as_double(i);
    } catch (const recpipe::error&) {
    }
  }
  return 0;
}
