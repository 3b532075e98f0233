// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the session click-log readers (io/sessions.hpp): session-rec / GRU4Rec TSV,
// RecSys Challenge 2015 clicks CSV and Diginetica item views; then what a training run does with
// the clicks (make_session_log, preprocess_sessions, presplit_sessions, validation_split), whose
// logs must be well formed.
//
// Input: byte 0 chooses the reader (0-2; bit 2: also through the file reader; bits 3-5 and 6-7:
// preprocessing options); the rest is the file's text.
#include <cmath>
#include <string>

#include <recpipe/io/sessions.hpp>

#include "fuzz_common.hpp"

namespace io = recpipe::io;

namespace {

void check_log(const io::session_log& log) {
  recpipe_fuzz::expect(log.offsets.size() == log.num_sessions() + 1, "one offset per session plus one");
  recpipe_fuzz::expect(log.offsets.front() == 0, "offsets start at 0");
  recpipe_fuzz::expect(static_cast<std::size_t>(log.offsets.back()) == log.num_clicks(), "offsets end at the click count");
  recpipe_fuzz::expect(log.times.size() == log.items.size(), "one time per click");
  for (std::size_t s = 0; s < log.num_sessions(); ++s)
    recpipe_fuzz::expect(log.offsets[s] <= log.offsets[s + 1], "offsets never decrease");
  for (recpipe::id_type item : log.items)
    recpipe_fuzz::expect(item >= 0 && static_cast<std::size_t>(item) < log.num_items(), "items are in the vocabulary");
}

std::vector<io::session_click> parse(unsigned reader, std::string_view text, const std::filesystem::path* file) {
  switch (reader) {
    case 0: return file ? io::read_session_rec_clicks(*file) : io::parse_session_rec_clicks(text, "clicks.tsv");
    case 1: return file ? io::read_rsc15_clicks(*file) : io::parse_rsc15_clicks(text, "yoochoose-clicks.dat");
    default: return file ? io::read_diginetica_views(*file) : io::parse_diginetica_views(text, "train-item-views.csv");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t control = data[0];
  const std::string_view text = recpipe_fuzz::as_text(data + 1, size - 1);
  const unsigned reader = control % 3;
  std::vector<io::session_click> clicks;
  try {
    clicks = parse(reader, text, nullptr);
  } catch (const recpipe::error&) {
    clicks.clear();
  }
  if (control & 4) {
    const std::filesystem::path path = recpipe_fuzz::temp_path("clicks.txt");
    recpipe_fuzz::write_file(path, data + 1, size - 1);
    try {
      const auto again = parse(reader, text, &path);
      recpipe_fuzz::expect(again.size() == clicks.size(), "the file reader agrees with the text parser");
    } catch (const recpipe::error&) {
      recpipe_fuzz::expect(clicks.empty(), "the file reader fails only where the text parser does");
    }
  }
  for (const io::session_click& c : clicks) recpipe_fuzz::expect(std::isfinite(c.time), "click times are finite");
  try {
    check_log(io::make_session_log(clicks));
    io::session_preprocessing options;
    options.min_session_length = (control >> 3) & 3;
    options.min_item_support = (control >> 5) & 1 ? 2 : 0;
    options.test_days = ((control >> 6) & 3) * 0.5;
    options.basis = (control & 0x20) ? io::split_basis::session_start : io::split_basis::session_end;
    const io::session_split split = io::preprocess_sessions(clicks, options);
    check_log(split.train);
    check_log(split.test);
    const std::size_t half = clicks.size() / 2;
    const io::session_split pre = io::presplit_sessions(std::span(clicks).first(half), std::span(clicks).subspan(half));
    check_log(pre.train);
    check_log(pre.test);
    const io::session_split tuning = io::validation_split(split.train, 1.0);
    check_log(tuning.train);
    check_log(tuning.test);
    const auto round_trip = io::to_clicks(split.train);
    recpipe_fuzz::expect(round_trip.size() == split.train.num_clicks(), "to_clicks keeps every click");
  } catch (const recpipe::error&) {
  }
  return 0;
}
