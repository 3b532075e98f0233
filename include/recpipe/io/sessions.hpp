// SPDX-License-Identifier: Apache-2.0
// recpipe io: click logs of anonymous sessions for session-based recommendation: readers for the
// session-rec / GRU4Rec format, the RecSys Challenge 2015 clicks and Diginetica item views, the
// usual GRU4Rec preprocessing (min session length, min item support, split by time), and a
// seeded synthetic generator.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <span>
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

//! One click as read from a file: the original (sparse) session and item ids, and the time in
//! epoch seconds (fractions kept).
struct session_click {
  id_type session = 0;
  id_type item = 0;
  double time = 0.0;
};

//! @brief Maps original item ids to a dense vocabulary [0, size()) and back.
//! Ids are numbered in the order add() first sees them.
//! @code
//! recpipe::io::item_vocabulary v;
//! v.add(214536502);                  // 0
//! v.find(214536502) == 0; v.find(7) == -1; v.original(0) == 214536502;
//! @endcode
class item_vocabulary {
 public:
  //! Dense id of `original`, adding it when new.
  id_type add(id_type original) {
    const auto [it, inserted] = index_.try_emplace(original, static_cast<id_type>(originals_.size()));
    if (inserted) originals_.push_back(original);
    return it->second;
  }
  //! Dense id of `original`, or -1 when it is not in the vocabulary.
  id_type find(id_type original) const noexcept {
    const auto it = index_.find(original);
    return it == index_.end() ? id_type{-1} : it->second;
  }
  bool contains(id_type original) const noexcept { return index_.count(original) != 0; }
  //! Original id of dense id `dense`. @throws recpipe::error when dense is outside [0, size()).
  id_type original(id_type dense) const {
    if (dense < 0 || static_cast<std::size_t>(dense) >= originals_.size())
      detail::fail("io::item_vocabulary::original: dense id ", dense, " is outside [0, ", originals_.size(), ")");
    return originals_[static_cast<std::size_t>(dense)];
  }
  std::size_t size() const noexcept { return originals_.size(); }
  //! The reverse map: originals()[dense] is the original id.
  std::span<const id_type> originals() const noexcept { return originals_; }

 private:
  std::vector<id_type> originals_;
  std::unordered_map<id_type, id_type> index_;
};

//! @brief An in-memory click log of sessions with items on a dense vocabulary.
//!
//! Session s is items[offsets[s] .. offsets[s+1]) with times[...] (clicks in time order, ties in
//! file order). Sessions are ordered by start time (first click), ties by original session id,
//! so the last sessions are the most recent ones. `offsets` has num_sessions() + 1 entries and is
//! of id_type so it can be passed straight to the models' ragged `encode(offsets, items, ...)`.
//! A log from a split (preprocess_sessions, presplit_sessions) shares its training vocabulary
//! between train and test: the same dense id means the same item in both.
struct session_log {
  item_vocabulary vocabulary;
  std::vector<id_type> session_ids;          //!< original id of each session
  std::vector<id_type> offsets{id_type{0}};  //!< num_sessions() + 1 entries
  std::vector<id_type> items;                //!< dense item ids, sessions concatenated
  std::vector<double> times;                 //!< epoch seconds of each click

  std::size_t num_sessions() const noexcept { return session_ids.size(); }
  std::size_t num_clicks() const noexcept { return items.size(); }
  //! Size of the item vocabulary (every dense id is below it).
  std::size_t num_items() const noexcept { return vocabulary.size(); }
  std::size_t session_length(std::size_t s) const {
    check(s);
    return static_cast<std::size_t>(offsets[s + 1] - offsets[s]);
  }
  //! Items of session s in click order. @throws recpipe::error when s >= num_sessions().
  std::span<const id_type> session(std::size_t s) const {
    check(s);
    return std::span<const id_type>(items).subspan(static_cast<std::size_t>(offsets[s]), session_length(s));
  }
  std::span<const double> session_times(std::size_t s) const {
    check(s);
    return std::span<const double>(times).subspan(static_cast<std::size_t>(offsets[s]), session_length(s));
  }
  double start_time(std::size_t s) const { return session_times(s).front(); }
  double end_time(std::size_t s) const { return session_times(s).back(); }
  //! Clicks per dense item (how often each item was clicked in this log).
  std::vector<std::size_t> item_counts() const {
    std::vector<std::size_t> counts(num_items(), 0);
    for (id_type i : items) ++counts[static_cast<std::size_t>(i)];
    return counts;
  }

 private:
  void check(std::size_t s) const {
    if (s >= num_sessions())
      detail::fail("io::session_log: session ", s, " is outside [0, ", num_sessions(), ")");
  }
};

namespace sessions_impl {

// Days since 1970-01-01 of a proleptic Gregorian date (the civil-from-days inverse, era based).
constexpr std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

inline bool parse_digits(std::string_view s, std::size_t at, std::size_t count, unsigned& out) {
  if (at + count > s.size()) return false;
  out = 0;
  for (std::size_t i = at; i < at + count; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + static_cast<unsigned>(s[i] - '0');
  }
  return true;
}

inline unsigned days_in_month(std::int64_t y, unsigned m) {
  static constexpr unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : days[m - 1];
}

// YYYY-MM-DD at the start of s; epoch seconds of its midnight UTC.
inline bool parse_date(std::string_view s, double& out) {
  unsigned y = 0, m = 0, d = 0;
  if (s.size() < 10 || !parse_digits(s, 0, 4, y) || s[4] != '-' || !parse_digits(s, 5, 2, m) || s[7] != '-' ||
      !parse_digits(s, 8, 2, d))
    return false;
  if (m < 1 || m > 12 || d < 1 || d > days_in_month(y, m)) return false;
  out = static_cast<double>(days_from_civil(y, m, d)) * 86400.0;
  return true;
}

// ISO 8601 `YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM|-HH:MM]` (a space for T is accepted) to epoch seconds.
inline bool parse_iso8601(std::string_view s, double& out) {
  double day = 0;
  if (!parse_date(s, day)) return false;
  unsigned hh = 0, mm = 0, ss = 0;
  if (s.size() < 19 || (s[10] != 'T' && s[10] != ' ') || !parse_digits(s, 11, 2, hh) || s[13] != ':' ||
      !parse_digits(s, 14, 2, mm) || s[16] != ':' || !parse_digits(s, 17, 2, ss))
    return false;
  if (hh > 23 || mm > 59 || ss > 60) return false;
  double seconds = day + hh * 3600.0 + mm * 60.0 + ss;
  std::size_t at = 19;
  if (at < s.size() && s[at] == '.') {
    double scale = 0.1, fraction = 0;
    std::size_t digits = 0;
    for (++at; at < s.size() && s[at] >= '0' && s[at] <= '9'; ++at, ++digits, scale *= 0.1)
      fraction += (s[at] - '0') * scale;
    if (digits == 0) return false;
    seconds += fraction;
  }
  if (at < s.size()) {
    if (s[at] == 'Z' && at + 1 == s.size()) {
      // UTC
    } else if ((s[at] == '+' || s[at] == '-') && at + 6 == s.size() && s[at + 3] == ':') {
      unsigned oh = 0, om = 0;
      if (!parse_digits(s, at + 1, 2, oh) || !parse_digits(s, at + 4, 2, om) || oh > 23 || om > 59) return false;
      const double offset = oh * 3600.0 + om * 60.0;
      seconds += s[at] == '+' ? -offset : offset;  // local = UTC + offset
    } else {
      return false;
    }
  }
  out = seconds;
  return true;
}

template <class... Parts>
[[noreturn]] void malformed(std::string_view reader, std::string_view name, std::size_t line, const Parts&... parts) {
  detail::fail<io_error>(reader, ": ", name, ":", line, ": ", parts...);
}

inline bool looks_numeric(std::string_view field) {
  return !field.empty() && ((field.front() >= '0' && field.front() <= '9') || field.front() == '-' || field.front() == '+');
}

}  // namespace sessions_impl

//! @brief Parses the session-rec / GRU4Rec format: tab-separated, header naming the columns
//! (`SessionId	ItemId	Time`, any order, extra columns ignored), Time in epoch seconds with
//! fractions. Without a header (first field numeric) the columns are SessionId, ItemId, Time.
//! Blank lines are skipped; an empty text gives no clicks.
//! @param name  the file name used in messages
//! @throws recpipe::io_error naming `name:line` for a missing column, a wrong field count, a
//!         non-integer id or a non-finite time.
//! @code
//! auto clicks = recpipe::io::parse_session_rec_clicks("SessionId\tItemId\tTime\n1\t214536502\t1396860669.277\n", "t.txt");
//! // clicks[0].item == 214536502
//! @endcode
inline std::vector<session_click> parse_session_rec_clicks(std::string_view text, std::string_view name) {
  constexpr std::string_view reader = "io::parse_session_rec_clicks";
  std::vector<session_click> out;
  out.reserve(text.size() / 28);
  std::size_t col_session = 0, col_item = 1, col_time = 2, width = 3;
  bool first = true;
  detail::for_each_line(text, [&](std::size_t number, std::string_view raw) {
    const std::string_view line = detail::trim_blanks(raw);
    if (line.empty()) return;
    const auto fields = detail::split_fields(line, "\t");
    if (first) {
      first = false;
      if (!sessions_impl::looks_numeric(fields[0])) {  // header
        std::size_t found = 0;
        width = fields.size();
        for (std::size_t c = 0; c < fields.size(); ++c) {
          if (fields[c] == "SessionId") col_session = c, found |= 1;
          else if (fields[c] == "ItemId") col_item = c, found |= 2;
          else if (fields[c] == "Time") col_time = c, found |= 4;
        }
        if (found != 7)
          sessions_impl::malformed(reader, name, number, "header must name the columns SessionId, ItemId and Time (tab-separated), got '",
                                   line, "'");
        return;
      }
    }
    if (fields.size() != width)
      sessions_impl::malformed(reader, name, number, "expected ", width, " tab-separated fields, got ", fields.size());
    session_click c;
    if (!detail::parse_number(fields[col_session], c.session) || !detail::parse_number(fields[col_item], c.item))
      sessions_impl::malformed(reader, name, number, "SessionId and ItemId must be integers (got '", fields[col_session], "', '",
                               fields[col_item], "')");
    if (!detail::parse_number(fields[col_time], c.time) || !std::isfinite(c.time))
      sessions_impl::malformed(reader, name, number, "Time must be a finite number of seconds (got '", fields[col_time], "')");
    out.push_back(c);
  });
  return out;
}

//! @brief Reads a session-rec / GRU4Rec file (see parse_session_rec_clicks).
//! @throws recpipe::io_error when the file cannot be read or a line is malformed (path:line).
//! @code
//! auto clicks = recpipe::io::read_session_rec_clicks(dir / "yoochoose-clicks-100k_test.txt");
//! @endcode
inline std::vector<session_click> read_session_rec_clicks(const std::filesystem::path& path) {
  const std::string text = detail::read_text_file(path, "io::read_session_rec_clicks");
  return parse_session_rec_clicks(text, path.string());
}

//! @brief Parses the RecSys Challenge 2015 `yoochoose-clicks.dat` CSV: no header, lines
//! `session,timestamp,item,category` with an ISO 8601 timestamp (`2014-04-07T10:51:09.277Z`;
//! a `+HH:MM` offset is honoured). The category (a number or `S`) is read and ignored.
//! @throws recpipe::io_error naming `name:line` for a wrong field count, a non-integer id or a
//!         bad timestamp.
//! @code
//! auto c = recpipe::io::parse_rsc15_clicks("1,2014-04-07T10:51:09.277Z,214536502,0\n", "clicks.dat");
//! // c[0].time == 1396867869.277
//! @endcode
inline std::vector<session_click> parse_rsc15_clicks(std::string_view text, std::string_view name) {
  constexpr std::string_view reader = "io::parse_rsc15_clicks";
  std::vector<session_click> out;
  out.reserve(text.size() / 48);
  detail::for_each_line(text, [&](std::size_t number, std::string_view raw) {
    const std::string_view line = detail::trim_blanks(raw);
    if (line.empty()) return;
    const auto fields = detail::split_fields(line, ",");
    if (fields.size() != 4)
      sessions_impl::malformed(reader, name, number, "expected 4 comma-separated fields (session, timestamp, item, category), got ",
                               fields.size());
    session_click c;
    if (!detail::parse_number(fields[0], c.session) || !detail::parse_number(fields[2], c.item))
      sessions_impl::malformed(reader, name, number, "session and item must be integers (got '", fields[0], "', '", fields[2], "')");
    if (!sessions_impl::parse_iso8601(fields[1], c.time))
      sessions_impl::malformed(reader, name, number, "timestamp must be ISO 8601 like 2014-04-07T10:51:09.277Z (got '", fields[1],
                               "')");
    out.push_back(c);
  });
  return out;
}

//! Reads `yoochoose-clicks.dat` (see parse_rsc15_clicks). @throws recpipe::io_error (path:line).
inline std::vector<session_click> read_rsc15_clicks(const std::filesystem::path& path) {
  const std::string text = detail::read_text_file(path, "io::read_rsc15_clicks");
  return parse_rsc15_clicks(text, path.string());
}

//! @brief Parses Diginetica's `train-item-views.csv`: semicolon-separated with the header
//! `sessionId;userId;itemId;timeframe;eventdate` (userId may be empty or NA).
//! The click time is `eventdate` (YYYY-MM-DD, midnight UTC) plus `timeframe` milliseconds, so
//! clicks of a session are ordered by timeframe and the day comes from eventdate.
//! The header is optional (a first line whose first field is not a number).
//! @throws recpipe::io_error naming `name:line` for a wrong field count, a non-integer id or
//!         timeframe, or a bad date.
//! @code
//! auto c = recpipe::io::parse_diginetica_views("sessionId;userId;itemId;timeframe;eventdate\n1;NA;81766;526309;2016-05-09\n", "v.csv");
//! @endcode
inline std::vector<session_click> parse_diginetica_views(std::string_view text, std::string_view name) {
  constexpr std::string_view reader = "io::parse_diginetica_views";
  std::vector<session_click> out;
  out.reserve(text.size() / 32);
  bool first = true;
  detail::for_each_line(text, [&](std::size_t number, std::string_view raw) {
    const std::string_view line = detail::trim_blanks(raw);
    if (line.empty()) return;
    const auto fields = detail::split_fields(line, ";");
    if (first) {
      first = false;
      if (!sessions_impl::looks_numeric(fields[0])) return;  // header
    }
    if (fields.size() != 5)
      sessions_impl::malformed(reader, name, number,
                               "expected 5 semicolon-separated fields (sessionId, userId, itemId, timeframe, eventdate), got ",
                               fields.size());
    session_click c;
    std::int64_t timeframe = 0;
    if (!detail::parse_number(fields[0], c.session) || !detail::parse_number(fields[2], c.item))
      sessions_impl::malformed(reader, name, number, "sessionId and itemId must be integers (got '", fields[0], "', '", fields[2],
                               "')");
    if (!detail::parse_number(fields[3], timeframe) || timeframe < 0)
      sessions_impl::malformed(reader, name, number, "timeframe must be a non-negative integer (milliseconds; got '", fields[3], "')");
    double day = 0;
    if (fields[4].size() != 10 || !sessions_impl::parse_date(fields[4], day))
      sessions_impl::malformed(reader, name, number, "eventdate must be YYYY-MM-DD (got '", fields[4], "')");
    c.time = day + static_cast<double>(timeframe) / 1000.0;
    out.push_back(c);
  });
  return out;
}

//! Reads `train-item-views.csv` (see parse_diginetica_views). @throws recpipe::io_error (path:line).
inline std::vector<session_click> read_diginetica_views(const std::filesystem::path& path) {
  const std::string text = detail::read_text_file(path, "io::read_diginetica_views");
  return parse_diginetica_views(text, path.string());
}

namespace sessions_impl {

// Groups clicks by session, orders clicks by time (stable: file order on ties) and sessions by
// (start time, session id). Returns click indices in that order and where each session starts.
inline void group_sessions(std::span<const session_click> clicks, std::vector<std::size_t>& order,
                           std::vector<std::size_t>& starts) {
  std::unordered_map<id_type, std::size_t> session_index;
  std::vector<std::size_t> session_of(clicks.size());
  std::vector<id_type> ids;
  for (std::size_t i = 0; i < clicks.size(); ++i) {
    const auto [it, inserted] = session_index.try_emplace(clicks[i].session, ids.size());
    if (inserted) ids.push_back(clicks[i].session);
    session_of[i] = it->second;
  }
  order.resize(clicks.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (session_of[a] != session_of[b]) return session_of[a] < session_of[b];
    return clicks[a].time < clicks[b].time;
  });
  // Now sessions are contiguous (in first-appearance order); sort sessions by start.
  std::vector<std::size_t> begin;
  for (std::size_t i = 0; i < order.size(); ++i)
    if (i == 0 || session_of[order[i]] != session_of[order[i - 1]]) begin.push_back(i);
  begin.push_back(order.size());
  std::vector<std::size_t> sessions(begin.size() - 1);
  std::iota(sessions.begin(), sessions.end(), std::size_t{0});
  std::sort(sessions.begin(), sessions.end(), [&](std::size_t a, std::size_t b) {
    const session_click& ca = clicks[order[begin[a]]];
    const session_click& cb = clicks[order[begin[b]]];
    if (ca.time != cb.time) return ca.time < cb.time;
    return ca.session < cb.session;
  });
  std::vector<std::size_t> sorted;
  sorted.reserve(order.size());
  starts.clear();
  for (std::size_t s : sessions) {
    starts.push_back(sorted.size());
    for (std::size_t i = begin[s]; i < begin[s + 1]; ++i) sorted.push_back(order[i]);
  }
  starts.push_back(sorted.size());
  order = std::move(sorted);
}

}  // namespace sessions_impl

//! @brief Builds a session log from clicks, numbering items in order of first appearance in the
//! ordered log (sessions by start time, clicks by time; see session_log). No filtering: a
//! session of one click stays. Clicks need not be grouped or sorted.
//! @throws recpipe::error when a time is not finite.
//! @code
//! auto log = recpipe::io::make_session_log(recpipe::io::read_session_rec_clicks(path));
//! @endcode
inline session_log make_session_log(std::span<const session_click> clicks) {
  for (const auto& c : clicks)
    if (!std::isfinite(c.time)) detail::fail("io::make_session_log: session ", c.session, " has a non-finite click time");
  std::vector<std::size_t> order, starts;
  sessions_impl::group_sessions(clicks, order, starts);
  session_log log;
  log.items.reserve(clicks.size());
  log.times.reserve(clicks.size());
  for (std::size_t s = 0; s + 1 < starts.size(); ++s) {
    log.session_ids.push_back(clicks[order[starts[s]]].session);
    for (std::size_t i = starts[s]; i < starts[s + 1]; ++i) {
      log.items.push_back(log.vocabulary.add(clicks[order[i]].item));
      log.times.push_back(clicks[order[i]].time);
    }
    log.offsets.push_back(static_cast<id_type>(log.items.size()));
  }
  return log;
}

//! What mapping a log through a fixed vocabulary removed.
struct vocabulary_filter_report {
  std::size_t unknown_clicks = 0;   //!< clicks on items outside the vocabulary, removed
  std::size_t short_sessions = 0;   //!< sessions then shorter than min_length (or left empty), dropped
  std::size_t short_clicks = 0;     //!< known clicks in those sessions
};

//! @brief Builds a session log over a given vocabulary (the training one): clicks on items not in
//! it are removed, then sessions shorter than `min_length` are dropped (counted in `report`).
//! The log's vocabulary is a copy of `vocabulary`, so dense ids agree with the training log.
//! @code
//! auto test = recpipe::io::make_session_log(test_clicks, train.vocabulary, 2);
//! @endcode
inline session_log make_session_log(std::span<const session_click> clicks, const item_vocabulary& vocabulary,
                                    std::size_t min_length = 2, vocabulary_filter_report* report = nullptr) {
  for (const auto& c : clicks)
    if (!std::isfinite(c.time)) detail::fail("io::make_session_log: session ", c.session, " has a non-finite click time");
  vocabulary_filter_report local;
  std::vector<session_click> known;
  known.reserve(clicks.size());
  std::unordered_map<id_type, bool> seen;  // every input session, so ones left empty count as dropped
  for (const auto& c : clicks) {
    seen.try_emplace(c.session, true);
    if (vocabulary.contains(c.item)) known.push_back(c);
    else ++local.unknown_clicks;
  }
  std::vector<std::size_t> order, starts;
  sessions_impl::group_sessions(known, order, starts);
  session_log log;
  log.vocabulary = vocabulary;
  for (std::size_t s = 0; s + 1 < starts.size(); ++s) {
    const std::size_t length = starts[s + 1] - starts[s];
    if (length < min_length) {
      local.short_clicks += length;
      continue;
    }
    log.session_ids.push_back(known[order[starts[s]]].session);
    for (std::size_t i = starts[s]; i < starts[s + 1]; ++i) {
      log.items.push_back(vocabulary.find(known[order[i]].item));
      log.times.push_back(known[order[i]].time);
    }
    log.offsets.push_back(static_cast<id_type>(log.items.size()));
  }
  local.short_sessions = seen.size() - log.num_sessions();
  if (report) *report = local;
  return log;
}

//! Which time of a session decides its side of a time split.
enum class split_basis {
  session_end,    //!< the last click (GRU4Rec's and session-rec's preprocessing)
  session_start,  //!< the first click
};

//! Options of preprocess_sessions: the usual GRU4Rec / session-rec preprocessing.
struct session_preprocessing {
  std::size_t min_session_length = 2;       //!< drop shorter sessions (before and after the item filter); 0 or 1: keep all
  std::size_t min_item_support = 5;         //!< drop items with fewer clicks (0 or 1: keep all)
  double test_days = 1.0;                   //!< test = sessions in the last test_days days (1: a day, 7: a week); 0: no test
  split_basis basis = split_basis::session_end;
  std::size_t min_test_session_length = 2;  //!< test sessions shorter than this after the unknown-item filter are dropped
};

//! What preprocessing removed, in order.
struct session_preprocessing_report {
  std::size_t clicks_in = 0;
  std::size_t short_sessions = 0;        //!< sessions shorter than min_session_length (first pass)
  std::size_t rare_item_clicks = 0;      //!< clicks on items below min_item_support
  std::size_t short_after_items = 0;     //!< sessions that became too short after the item filter
  vocabulary_filter_report test;         //!< test clicks on items not in training, short test sessions
};

//! A training log and a test log over the training vocabulary.
struct session_split {
  session_log train;
  session_log test;
  session_preprocessing_report report;
  //! Catalog size a model needs (the training vocabulary).
  std::size_t num_items() const noexcept { return train.num_items(); }
};

//! @brief The GRU4Rec / session-rec preprocessing of a raw click log: drop sessions shorter than
//! min_session_length, drop items with fewer than min_item_support clicks, drop sessions that
//! became too short; then split by time: with tmax the latest click, a session goes to test when
//! its end (or start, by `basis`) is at or after tmax - test_days * 86400 s, else to train. The
//! training log defines the vocabulary; test clicks on items not in it are removed and test
//! sessions shorter than min_test_session_length dropped. An empty input gives two empty logs.
//! @throws recpipe::error when test_days is negative or not finite, or a time is not finite.
//! @code
//! auto split = recpipe::io::preprocess_sessions(recpipe::io::read_rsc15_clicks("yoochoose-clicks.dat"),
//!                                               {.test_days = 1});
//! @endcode
inline session_split preprocess_sessions(std::span<const session_click> clicks, const session_preprocessing& options = {}) {
  if (!(options.test_days >= 0.0) || !std::isfinite(options.test_days))
    detail::fail("io::preprocess_sessions: test_days must be a finite number >= 0 (got ", options.test_days, ")");
  for (const auto& c : clicks)
    if (!std::isfinite(c.time)) detail::fail("io::preprocess_sessions: session ", c.session, " has a non-finite click time");
  session_split out;
  out.report.clicks_in = clicks.size();
  std::vector<session_click> kept(clicks.begin(), clicks.end());

  const auto drop_short = [&](std::size_t& dropped) {
    if (options.min_session_length < 2) return;
    std::unordered_map<id_type, std::size_t> length;
    for (const auto& c : kept) ++length[c.session];
    for (const auto& [id, n] : length)
      if (n < options.min_session_length) ++dropped;
    std::erase_if(kept, [&](const session_click& c) { return length[c.session] < options.min_session_length; });
  };
  drop_short(out.report.short_sessions);
  if (options.min_item_support > 1) {
    std::unordered_map<id_type, std::size_t> support;
    for (const auto& c : kept) ++support[c.item];
    const std::size_t before = kept.size();
    std::erase_if(kept, [&](const session_click& c) { return support[c.item] < options.min_item_support; });
    out.report.rare_item_clicks = before - kept.size();
    drop_short(out.report.short_after_items);
  }

  std::vector<session_click> train, test;
  if (options.test_days > 0.0 && !kept.empty()) {
    double tmax = kept.front().time;
    std::unordered_map<id_type, double> key;  // the session's start or end
    for (const auto& c : kept) {
      tmax = std::max(tmax, c.time);
      auto [it, inserted] = key.try_emplace(c.session, c.time);
      if (!inserted)
        it->second = options.basis == split_basis::session_end ? std::max(it->second, c.time) : std::min(it->second, c.time);
    }
    const double cut = tmax - options.test_days * 86400.0;
    for (const auto& c : kept) (key[c.session] >= cut ? test : train).push_back(c);
  } else {
    train = std::move(kept);
  }
  out.train = make_session_log(train);
  out.test = make_session_log(test, out.train.vocabulary, options.min_test_session_length, &out.report.test);
  return out;
}

//! @brief A split that is already made (session-rec's train_full/test or train_tr/train_valid):
//! the training clicks define the vocabulary (kept as they are, no filtering); test clicks on
//! items not in it are removed, then test sessions shorter than min_test_session_length dropped.
//! @code
//! auto split = recpipe::io::presplit_sessions(read_session_rec_clicks(a), read_session_rec_clicks(b));
//! @endcode
inline session_split presplit_sessions(std::span<const session_click> train, std::span<const session_click> test,
                                       std::size_t min_test_session_length = 2) {
  session_split out;
  out.report.clicks_in = train.size() + test.size();
  out.train = make_session_log(train);
  out.test = make_session_log(test, out.train.vocabulary, min_test_session_length, &out.report.test);
  return out;
}

//! @brief The clicks of a log with original ids (session by session, in log order): what
//! preprocess_sessions or make_session_log take, to split or renumber a log again.
//! @code
//! auto clicks = recpipe::io::to_clicks(split.train);
//! @endcode
inline std::vector<session_click> to_clicks(const session_log& log) {
  std::vector<session_click> out;
  out.reserve(log.num_clicks());
  for (std::size_t s = 0; s < log.num_sessions(); ++s) {
    const auto items = log.session(s);
    const auto times = log.session_times(s);
    for (std::size_t k = 0; k < items.size(); ++k) out.push_back({log.session_ids[s], log.vocabulary.original(items[k]), times[k]});
  }
  return out;
}

//! @brief Splits a training log again by time for tuning, as session-rec's train_tr/train_valid
//! come from train_full: validation = sessions ending in the last `days` days (no other
//! filtering); train_tr gets its own vocabulary, validation clicks on items not in it are removed
//! and validation sessions shorter than 2 dropped. Tune on this, never on the test log.
//! @code
//! auto tuning = recpipe::io::validation_split(split.train, 1.0);  // tuning.train / tuning.test
//! @endcode
inline session_split validation_split(const session_log& train, double days = 1.0) {
  session_preprocessing options;
  options.min_session_length = 0;
  options.min_item_support = 0;
  options.test_days = days;
  return preprocess_sessions(to_clicks(train), options);
}

//! Which pair of a session-rec folder to load.
enum class session_rec_pair {
  full,    //!< `*_train_full.txt` -> `*_test.txt` (final evaluation)
  tuning,  //!< `*_train_tr.txt` -> `*_train_valid.txt` (hyperparameter tuning; never touches test)
};

//! @brief Loads a session-rec `prepared/` folder such as `yoochoose-rsc15-100k/`: the one file
//! ending in `_train_full.txt` (or `_train_tr.txt`) and the one ending in `_test.txt` (or
//! `_train_valid.txt`), as presplit_sessions.
//! @throws recpipe::io_error when the folder is missing, a file is absent or ambiguous, or a
//!         line is malformed (path:line).
//! @code
//! auto split = recpipe::io::read_session_rec_folder("../shared/data/yoochoose-rsc15-100k");
//! // split.train.num_sessions() == 17'794
//! @endcode
inline session_split read_session_rec_folder(const std::filesystem::path& folder, session_rec_pair pair = session_rec_pair::full,
                                             std::size_t min_test_session_length = 2) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(folder, ec))
    detail::fail<io_error>("io::read_session_rec_folder: ", folder.string(), " is not a folder");
  const std::string train_suffix = pair == session_rec_pair::full ? "_train_full.txt" : "_train_tr.txt";
  const std::string test_suffix = pair == session_rec_pair::full ? "_test.txt" : "_train_valid.txt";
  const auto find = [&](const std::string& suffix) {
    std::vector<fs::path> found;
    for (const auto& entry : fs::directory_iterator(folder)) {
      const std::string file = entry.path().filename().string();
      if (file.size() > suffix.size() && file.compare(file.size() - suffix.size(), suffix.size(), suffix) == 0)
        found.push_back(entry.path());
    }
    if (found.size() != 1)
      detail::fail<io_error>("io::read_session_rec_folder: expected one file ending in ", suffix, " in ", folder.string(),
                             ", found ", found.size());
    return found.front();
  };
  const fs::path train_path = find(train_suffix), test_path = find(test_suffix);
  return presplit_sessions(read_session_rec_clicks(train_path), read_session_rec_clicks(test_path), min_test_session_length);
}

//! @brief Writes a log in the session-rec format (header `SessionId	ItemId	Time`, original ids,
//! times with millisecond precision), so a Python peer can train on exactly the same split
//! (for example synthetic sessions, or a preprocessed raw log). Reading it back with
//! read_session_rec_clicks gives the same sessions.
//! @throws recpipe::io_error when the file cannot be written.
//! @code
//! recpipe::io::write_session_rec_clicks(split.train, "synthetic_train_full.txt");
//! @endcode
inline void write_session_rec_clicks(const session_log& log, const std::filesystem::path& path) {
  std::ofstream out(path, std::ios::binary);
  if (!out) detail::fail<io_error>("io::write_session_rec_clicks: cannot open ", path.string(), " for writing");
  out << "SessionId\tItemId\tTime\n";
  char time[64];
  for (std::size_t s = 0; s < log.num_sessions(); ++s) {
    const auto items = log.session(s);
    const auto times = log.session_times(s);
    for (std::size_t k = 0; k < items.size(); ++k) {
      const auto [end, ec] = std::to_chars(time, time + sizeof time, times[k], std::chars_format::fixed, 3);
      out << log.session_ids[s] << '\t' << log.vocabulary.original(items[k]) << '\t' << std::string_view(time, static_cast<std::size_t>(end - time)) << '\n';
    }
  }
  out.flush();
  if (!out) detail::fail<io_error>("io::write_session_rec_clicks: error writing ", path.string());
}

//! Shape of a synthetic click log.
struct synthetic_sessions_config {
  std::size_t sessions = 5'000;
  std::size_t items = 500;
  double mean_length = 5.0;        //!< mean clicks per session (at least 2 each)
  std::size_t successors = 2;      //!< each item has this many likely next items
  double noise = 0.2;              //!< probability that a click is a popularity draw instead of a successor
  double popularity_exponent = 1.0;//!< Zipf exponent of the popularity draws
  double days = 7.0;               //!< sessions start evenly over this many days
  double start_time = 1.4e9;       //!< epoch seconds of the first session
  std::uint64_t seed = 42;
};

//! @brief A seeded synthetic click log with sequential structure: every item has `successors`
//! fixed next items (chosen at random once); a session starts with a popularity (Zipf) draw and
//! each next click is, with probability 1 - noise, one of the current item's successors (uniform),
//! else another popularity draw. Lengths are 2 + a geometric number with mean mean_length - 2.
//! Session ids are 1..sessions, item ids 1..items (so a vocabulary is needed, as with real data);
//! sessions start evenly over `days` with 30 s between clicks. Deterministic on every platform
//! (splitmix64, no std distributions): equal configs give equal logs.
//! A model that learns transitions reaches a recall near 1 - noise; popularity stays low.
//! @throws recpipe::error when items or successors is 0, noise is outside [0, 1] or mean_length < 2.
//! @code
//! auto split = recpipe::io::preprocess_sessions(recpipe::io::synthetic_sessions({.sessions = 2000}), {.test_days = 1});
//! @endcode
inline std::vector<session_click> synthetic_sessions(const synthetic_sessions_config& config = {}) {
  if (config.items == 0 || config.successors == 0)
    detail::fail("io::synthetic_sessions: items and successors must be at least 1 (got ", config.items, ", ", config.successors, ")");
  if (!(config.noise >= 0.0 && config.noise <= 1.0))
    detail::fail("io::synthetic_sessions: noise must be in [0, 1] (got ", config.noise, ")");
  if (!(config.mean_length >= 2.0) || !std::isfinite(config.mean_length))
    detail::fail("io::synthetic_sessions: mean_length must be at least 2 (got ", config.mean_length, ")");
  if (!(config.days >= 0.0) || !std::isfinite(config.days) || !std::isfinite(config.start_time))
    detail::fail("io::synthetic_sessions: days must be a finite number >= 0 (got ", config.days, ")");
  std::uint64_t state = config.seed;
  const auto next = [&]() {  // splitmix64
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  };
  const auto unit = [&]() { return static_cast<double>(next() >> 11) * 0x1.0p-53; };  // [0, 1)
  const auto below = [&](std::size_t n) { return static_cast<std::size_t>(unit() * static_cast<double>(n)) % n; };
  const std::size_t n = config.items;
  // Popularity ranks are a random permutation of the items (Fisher-Yates).
  std::vector<std::size_t> by_rank(n);
  std::iota(by_rank.begin(), by_rank.end(), std::size_t{0});
  for (std::size_t i = n; i > 1; --i) std::swap(by_rank[i - 1], by_rank[below(i)]);
  std::vector<double> cumulative(n);
  double sum = 0;
  for (std::size_t r = 0; r < n; ++r) cumulative[r] = sum += std::pow(static_cast<double>(r + 1), -config.popularity_exponent);
  const auto popular = [&]() {
    const double target = unit() * sum;
    const auto r = static_cast<std::size_t>(std::upper_bound(cumulative.begin(), cumulative.end(), target) - cumulative.begin());
    return by_rank[std::min(r, n - 1)];
  };
  std::vector<std::size_t> successor(n * config.successors);
  for (auto& s : successor) s = below(n);
  const double extra_mean = config.mean_length - 2.0;
  const double stop = 1.0 / (1.0 + extra_mean);  // geometric on {0, 1, ...} with this mean
  std::vector<session_click> out;
  out.reserve(static_cast<std::size_t>(static_cast<double>(config.sessions) * config.mean_length));
  const double spacing = config.sessions ? config.days * 86400.0 / static_cast<double>(config.sessions) : 0.0;
  for (std::size_t s = 0; s < config.sessions; ++s) {
    std::size_t length = 2;
    while (unit() >= stop && length < 200) ++length;
    const double start = config.start_time + spacing * static_cast<double>(s);
    std::size_t item = popular();
    for (std::size_t k = 0; k < length; ++k) {
      if (k > 0) item = unit() < config.noise ? popular() : successor[item * config.successors + below(config.successors)];
      out.push_back({static_cast<id_type>(s + 1), static_cast<id_type>(item + 1), start + 30.0 * static_cast<double>(k)});
    }
  }
  return out;
}

}  // namespace io
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
