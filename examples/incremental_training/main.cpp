// SPDX-License-Identifier: Apache-2.0
// recpipe incremental training: does training more often pay? Replays a stream of ratings in
// time order, warms models up on the first half, then for each training interval (1 day ... every
// event) predicts every later event with the model as it stands and trains on each interval's
// events when the interval ends. Prints AUC per model, feature set and interval, the improvement
// over daily updates split by item freshness and user activity, and writes a CSV and a PNG plot.
//
//   example_incremental_training ../shared/data/ml-latest-small/ratings.csv     MovieLens (ratings.csv or u.data)
//   example_incremental_training                                                 the synthetic drifting stream
//   example_incremental_training --smoke                                         a tiny synthetic stream (ctest)
//   options: --models mf,mlp,dlrm,dcn  --features ids,rich  --intervals 1d,12h,6h,1h,30m,5m,event
//            --threads N  --out DIR  --heavy N  --phases N  --warm-fraction F  --events N --seed N (synthetic)
//            --tune (pick lr scale and warm-up epochs on the warm-up part)  --no-plot
#include "library_models.hpp"
#include "models.hpp"
#include "stream.hpp"

#include <recpipe/train/metrics.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace experiment {
namespace {

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

struct interval_spec {
  std::string label;  // "1 day", "5 min", "every event"
  std::string key;    // "1d", "5m", "event"
  std::int64_t seconds = 0;  // 0: train after every event
};

std::optional<interval_spec> parse_interval(const std::string& key) {
  if (key == "event" || key == "0") return interval_spec{"every event", "event", 0};
  std::size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(key, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (n <= 0) return std::nullopt;
  const std::string unit = key.substr(used);
  std::int64_t scale = 0;
  std::string name;
  if (unit == "d") scale = 86'400, name = n == 1 ? " day" : " days";
  else if (unit == "h") scale = 3'600, name = " h";
  else if (unit == "m") scale = 60, name = " min";
  else if (unit == "s") scale = 1, name = " s";
  else return std::nullopt;
  return interval_spec{std::to_string(n) + name, key, n * scale};
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, sep);)
    if (!part.empty()) out.push_back(part);
  return out;
}

std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

//! The protocol for one interval: predict each event after the warm-up with the model as it
//! stands, and train on an interval's events (one pass, in time order) when it ends. Intervals are
//! end at t = offset (mod interval): with offset 0 a day ends at 00:00 UTC. Returns the scores of
//! events [warm_end, n).
std::vector<float> replay(model& m, const stream& s, std::size_t begin, std::size_t end, std::int64_t interval,
                          std::int64_t offset) {
  std::vector<float> scores;
  scores.reserve(end - begin);
  std::vector<std::uint32_t> pending;
  std::int64_t bucket = begin < end && interval > 0 ? floor_div(s.events[begin].t - offset, interval) : 0;
  for (std::size_t e = begin; e < end; ++e) {
    if (interval > 0) {
      const std::int64_t b = floor_div(s.events[e].t - offset, interval);
      if (b != bucket) {
        m.train(s, pending);
        pending.clear();
        bucket = b;
      }
    }
    scores.push_back(m.predict(s, e));
    pending.push_back(static_cast<std::uint32_t>(e));
    if (interval == 0) {
      m.train(s, pending);
      pending.clear();
    }
  }
  return scores;
}

//! Warm-up: `epochs` passes over events [begin, end), shuffled (seeded) except the last, which
//! runs in time order so the model ends on the newest events as it would in production.
void warm_up(model& m, const stream& s, std::size_t begin, std::size_t end, std::size_t epochs, std::uint64_t seed) {
  std::vector<std::uint32_t> order(end - begin);
  std::iota(order.begin(), order.end(), static_cast<std::uint32_t>(begin));
  std::mt19937_64 rng(seed);
  for (std::size_t epoch = 0; epoch < epochs; ++epoch) {
    if (epoch + 1 < epochs) std::shuffle(order.begin(), order.end(), rng);
    else std::sort(order.begin(), order.end());
    m.train(s, order);
  }
}

//! A model of the grid: a name, the feature sets it takes, and how to build one.
struct model_spec {
  std::string name;
  std::size_t epochs = 3;
  //! Builds the model with its learning rates times lr_scale; nullptr when the feature set is not supported.
  std::function<std::unique_ptr<model>(const stream&, feature_set, float lr_scale)> make;
};

std::vector<model_spec> available_models() {
  std::vector<model_spec> specs;
  specs.push_back({"mf", 3, [](const stream& s, feature_set f, float lr_scale) -> std::unique_ptr<model> {
                     if (f != feature_set::ids) return nullptr;  // the baseline is ids only
                     mf_config c;
                     c.lr *= lr_scale;
                     return std::make_unique<logistic_mf>(s, c);
                   }});
  // The library's trainable models (recpipe/train/): what the experiment is about.
  specs.push_back({"mlp", 3, [](const stream& s, feature_set f, float lr_scale) -> std::unique_ptr<model> {
                     library_config c;
                     c.cross_layers = 0;
                     c.lr *= lr_scale;
                     c.dense_lr *= lr_scale;
                     return std::make_unique<library_model<recpipe::train::mlp_model>>(s, f, c);
                   }});
  specs.push_back({"dlrm", 3, [](const stream& s, feature_set f, float lr_scale) -> std::unique_ptr<model> {
                     library_config c;
                     c.lr *= lr_scale;
                     c.dense_lr *= lr_scale;
                     return std::make_unique<library_model<recpipe::train::dlrm_model>>(s, f, c);
                   }});
  specs.push_back({"dcn", 3, [](const stream& s, feature_set f, float lr_scale) -> std::unique_ptr<model> {
                     library_config c;
                     c.lr *= lr_scale;
                     c.dense_lr *= lr_scale;
                     return std::make_unique<library_model<recpipe::train::dcn_v2_model>>(s, f, c);
                   }});
  // The example's own hand-written networks: a cross-check of the library's models.
  for (auto [name, kind] : {std::pair{"mlp", net_kind::mlp}, std::pair{"dlrm", net_kind::dlrm}, std::pair{"dcn", net_kind::dcn}})
    specs.push_back({std::string("local-") + name, 3, [k = kind](const stream& s, feature_set f, float lr_scale) -> std::unique_ptr<model> {
                       net_config c;
                       c.lr *= lr_scale;
                       c.dense_lr *= lr_scale;
                       return std::make_unique<local_net>(s, k, f, c);
                     }});
  return specs;
}

struct run_result {
  std::string model;
  feature_set features;
  std::size_t parameters = 0;
  std::vector<std::vector<std::vector<float>>> scores;  // [interval][phase][test event]
};

// Runs jobs [0, n) on `threads` threads; the first exception is rethrown.
void parallel_for(std::size_t n, std::size_t threads, const std::function<void(std::size_t)>& job) {
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  std::mutex lock;
  auto worker = [&] {
    for (std::size_t i; (i = next++) < n;) {
      try {
        job(i);
      } catch (...) {
        std::lock_guard guard(lock);
        if (!failure) failure = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  for (std::size_t t = 1; t < std::max<std::size_t>(1, std::min(threads, n)); ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
}

struct options {
  std::optional<std::filesystem::path> data;
  std::vector<std::string> models;  // empty: every model this build has
  std::vector<feature_set> features{feature_set::ids, feature_set::rich};
  std::vector<interval_spec> intervals;
  std::size_t threads = 1;
  std::filesystem::path out = "incremental_training_out";
  std::uint32_t heavy = 100;
  std::size_t phases = 4;  // each interval is run with its boundaries at phase/phases of it, AUC averaged
  double warm_fraction = 0.5;
  bool smoke = false, tune = false, plot = true;
  synthetic_config synthetic;
};

struct group {
  const char* name;
  std::function<bool(const stream&, std::size_t)> in;
};

int run(const options& o) {
  const auto start = clock_type::now();
  recpipe::cpu::set_num_threads(1);  // parallelism is across runs (--threads), not inside a batch of one
  stream s = o.data ? load_movielens(*o.data, o.warm_fraction) : synthetic_stream(o.synthetic, o.warm_fraction);
  const std::size_t n = s.events.size();
  if (n < 4 || s.warm_end == 0 || s.warm_end >= n) {
    std::fprintf(stderr, "%s: %zu events: too few for a warm-up part and a test part\n", s.name.c_str(), n);
    return 1;
  }
  double likes = 0;
  for (const auto& e : s.events) likes += e.label;
  std::size_t fresh = 0, heavy = 0;
  for (std::size_t e = s.warm_end; e < n; ++e) fresh += s.fresh_item[e], heavy += s.user_seen[e] >= o.heavy;
  const double test = static_cast<double>(n - s.warm_end);
  std::printf("stream %s: %zu events, %zu users, %zu items, like rate %.3f; warm-up %zu events, test %zu events\n"
              "test events: %.1f%% on fresh items (first seen < 7 days before), %.1f%% by heavy users (>= %u events "
              "before)\n(loaded in %.1f s)\n",
              s.name.c_str(), n, s.users, s.items, likes / static_cast<double>(n), s.warm_end, n - s.warm_end,
              100.0 * static_cast<double>(fresh) / test, 100.0 * static_cast<double>(heavy) / test, o.heavy,
              seconds_since(start));

  // The grid: every (model, feature set) the model supports.
  const auto specs = available_models();
  struct cell {
    const model_spec* spec;
    feature_set features;
    std::unique_ptr<model> warmed;
    std::size_t epochs;
    float lr_scale = 1.0f;
  };
  std::vector<cell> cells;
  std::vector<std::string> names = o.models;
  if (names.empty())
    for (const auto& m : specs) names.push_back(m.name);
  for (const auto& name : names) {
    auto it = std::find_if(specs.begin(), specs.end(), [&](const model_spec& m) { return m.name == name; });
    if (it == specs.end()) {
      std::printf("model %s: not available in this build (skipped)\n", name.c_str());
      continue;
    }
    for (feature_set f : o.features)
      if (auto m = it->make(s, f, 1.0f)) cells.push_back({&*it, f, std::move(m), it->epochs});
  }
  if (cells.empty()) {
    std::fprintf(stderr, "no model to run\n");
    return 1;
  }

  auto t0 = clock_type::now();
  if (o.tune) {
    // Hyperparameters from the warm-up part only: train on its first 80%, then replay its last
    // 20% with 1 h updates and keep the (lr scale, epochs) of the best AUC. The test part is never read.
    const std::size_t val_begin = s.warm_end * 4 / 5;
    const float scales[] = {0.5f, 1.0f, 2.0f};
    const std::size_t epoch_choices[] = {1, 3, 5};
    std::vector<std::string> lines(cells.size());
    parallel_for(cells.size(), o.threads, [&](std::size_t c) {
      double best = -1;
      std::ostringstream line;
      line << "  " << cells[c].spec->name << " (" << to_string(cells[c].features) << "):";
      std::vector<float> labels;
      for (std::size_t e = val_begin; e < s.warm_end; ++e) labels.push_back(s.events[e].label);
      for (float scale : scales)
        for (std::size_t epochs : epoch_choices) {
          auto m = cells[c].spec->make(s, cells[c].features, scale);
          warm_up(*m, s, 0, val_begin, epochs, 7);
          const double a = recpipe::train::auc(replay(*m, s, val_begin, s.warm_end, 3600, 0), labels);
          char b[64];
          std::snprintf(b, sizeof b, " lr x%.1f/%zu ep %.4f;", static_cast<double>(scale), epochs, a);
          line << b;
          if (a > best) best = a, cells[c].lr_scale = scale, cells[c].epochs = epochs;
        }
      line << " -> lr x" << cells[c].lr_scale << ", " << cells[c].epochs << " epochs";
      lines[c] = line.str();
      cells[c].warmed = cells[c].spec->make(s, cells[c].features, cells[c].lr_scale);
    });
    std::printf("tuning on the warm-up part (validation AUC, 1 h updates over its last 20%%):\n");
    for (const auto& l : lines) std::printf("%s\n", l.c_str());
    std::printf("tuning: %.1f s\n", seconds_since(t0));
    t0 = clock_type::now();
  }
  parallel_for(cells.size(), o.threads, [&](std::size_t c) {
    warm_up(*cells[c].warmed, s, 0, s.warm_end, cells[c].epochs, 7);
  });
  std::printf("warm-up of %zu models: %.1f s\n", cells.size(), seconds_since(t0));

  std::vector<run_result> results(cells.size());
  for (std::size_t c = 0; c < cells.size(); ++c) {
    results[c] = {cells[c].spec->name, cells[c].features, cells[c].warmed->parameters(), {}};
    results[c].scores.resize(o.intervals.size());
  }
  // Where an interval's boundaries fall is arbitrary (a day could end at 00:00 UTC or at 06:00), and
  // with users rating in bursts it moves the AUC of long intervals by a point or two; so each
  // interval runs at `phases` evenly spaced alignments and its AUC is the mean over them.
  struct job {
    std::size_t cell, interval, phase;
  };
  std::vector<job> jobs;
  for (std::size_t c = 0; c < cells.size(); ++c)
    for (std::size_t k = 0; k < o.intervals.size(); ++k) {
      const std::size_t p = o.intervals[k].seconds > 0 ? o.phases : 1;
      results[c].scores[k].resize(p);
      for (std::size_t i = 0; i < p; ++i) jobs.push_back({c, k, i});
    }
  t0 = clock_type::now();
  parallel_for(jobs.size(), o.threads, [&](std::size_t j) {
    const job& jb = jobs[j];
    const std::int64_t interval = o.intervals[jb.interval].seconds;
    const std::int64_t offset = interval > 0 ? interval * static_cast<std::int64_t>(jb.phase) / static_cast<std::int64_t>(o.phases) : 0;
    auto m = cells[jb.cell].warmed->clone();
    results[jb.cell].scores[jb.interval][jb.phase] = replay(*m, s, s.warm_end, n, interval, offset);
  });
  std::printf("replays of %zu (model, features, interval, phase) runs: %.1f s\n\n", jobs.size(), seconds_since(t0));

  // Evaluation: AUC per group.
  const std::vector<group> groups{
      {"all", [](const stream&, std::size_t) { return true; }},
      {"fresh items", [](const stream& st, std::size_t e) { return st.fresh_item[e] != 0; }},
      {"older items", [](const stream& st, std::size_t e) { return st.fresh_item[e] == 0; }},
      {"light users", [&](const stream& st, std::size_t e) { return st.user_seen[e] < o.heavy; }},
      {"heavy users", [&](const stream& st, std::size_t e) { return st.user_seen[e] >= o.heavy; }},
  };
  // auc_of[c][k][g]
  std::vector<std::vector<std::vector<double>>> auc_of(cells.size());
  std::vector<std::size_t> group_size(groups.size(), 0);
  for (std::size_t g = 0; g < groups.size(); ++g)
    for (std::size_t e = s.warm_end; e < n; ++e) group_size[g] += groups[g].in(s, e);
  for (std::size_t c = 0; c < cells.size(); ++c) {
    auc_of[c].resize(o.intervals.size());
    for (std::size_t k = 0; k < o.intervals.size(); ++k)
      for (const auto& g : groups) {
        double sum = 0;
        for (const auto& phase : results[c].scores[k]) {
          std::vector<float> sc, lb;
          for (std::size_t e = s.warm_end; e < n; ++e)
            if (g.in(s, e)) sc.push_back(phase[e - s.warm_end]), lb.push_back(s.events[e].label);
          sum += recpipe::train::auc(sc, lb);
        }
        auc_of[c][k].push_back(sum / static_cast<double>(results[c].scores[k].size()));
      }
  }
  auto improvement = [](double a, double base) { return 100.0 * (a - base) / base; };

  // Table 1: AUC and % over the first interval (daily), as in the seed.
  std::ostringstream table;
  table << "| model | features | params |";
  for (const auto& iv : o.intervals) table << ' ' << iv.label << " |";
  table << "\n|---|---|---:|";
  for (std::size_t k = 0; k < o.intervals.size(); ++k) table << "---:|";
  table << '\n';
  char buf[64];
  for (std::size_t c = 0; c < cells.size(); ++c) {
    table << "| " << results[c].model << " | " << to_string(results[c].features) << " | " << results[c].parameters << " |";
    for (std::size_t k = 0; k < o.intervals.size(); ++k) {
      const double a = auc_of[c][k][0];
      if (k == 0) std::snprintf(buf, sizeof buf, " %.4f |", a);
      else std::snprintf(buf, sizeof buf, " %.4f (%+.1f%%) |", a, improvement(a, auc_of[c][0][0]));
      table << buf;
    }
    table << '\n';
  }
  // Table 2: improvement of the shortest intervals over the first, by group.
  std::ostringstream split_table;
  split_table << "| model | features |";
  for (std::size_t g = 1; g < groups.size(); ++g) split_table << ' ' << groups[g].name << " |";
  split_table << "\n|---|---|";
  for (std::size_t g = 1; g < groups.size(); ++g) split_table << "---:|";
  split_table << '\n';
  const std::size_t last = o.intervals.size() - 1;
  std::size_t five = last;
  for (std::size_t k = 0; k < o.intervals.size(); ++k)
    if (o.intervals[k].seconds == 300) five = k;
  for (std::size_t c = 0; c < cells.size(); ++c) {
    split_table << "| " << results[c].model << " | " << to_string(results[c].features) << " |";
    for (std::size_t g = 1; g < groups.size(); ++g) {
      std::snprintf(buf, sizeof buf, " %.4f → %.4f (%+.1f%%) |", auc_of[c][0][g], auc_of[c][five][g],
                    improvement(auc_of[c][five][g], auc_of[c][0][g]));
      split_table << buf;
    }
    split_table << '\n';
  }
  std::printf("AUC (and change over %s) per training interval:\n\n%s\n", o.intervals[0].label.c_str(), table.str().c_str());
  std::printf("AUC at %s -> %s by group (test events per group:", o.intervals[0].label.c_str(),
              o.intervals[five].label.c_str());
  for (std::size_t g = 1; g < groups.size(); ++g) std::printf(" %s %zu%s", groups[g].name, group_size[g], g + 1 < groups.size() ? "," : ")");
  std::printf(":\n\n%s\n", split_table.str().c_str());

  // Files: results.csv, table.md, auc.dat + auc.gp -> auc.png.
  std::filesystem::create_directories(o.out);
  {
    std::ofstream csv(o.out / "results.csv");
    csv << "model,features,parameters,interval,interval_seconds,group,events,auc,improvement_pct\n";
    for (std::size_t c = 0; c < cells.size(); ++c)
      for (std::size_t k = 0; k < o.intervals.size(); ++k)
        for (std::size_t g = 0; g < groups.size(); ++g) {
          std::snprintf(buf, sizeof buf, "%.6f,%.4f", auc_of[c][k][g], improvement(auc_of[c][k][g], auc_of[c][0][g]));
          csv << results[c].model << ',' << to_string(results[c].features) << ',' << results[c].parameters << ','
              << o.intervals[k].label << ',' << o.intervals[k].seconds << ',' << groups[g].name << ','
              << group_size[g] << ',' << buf << '\n';
        }
    std::ofstream md(o.out / "table.md");
    md << "Stream: " << s.name << ", " << n << " events, warm-up " << s.warm_end << ", test " << n - s.warm_end
       << "\n\n" << table.str() << "\nBy group (" << o.intervals[0].label << " -> " << o.intervals[five].label
       << "):\n\n" << split_table.str();
    std::ofstream dat(o.out / "auc.dat");
    for (std::size_t c = 0; c < cells.size(); ++c) {
      dat << "\"" << results[c].model << " (" << to_string(results[c].features) << ")\"\n";
      for (std::size_t k = 0; k < o.intervals.size(); ++k)
        dat << k << ' ' << auc_of[c][k][0] << " \"" << o.intervals[k].label << "\"\n";
      dat << "\n\n";
    }
    // One colour per model, dashed for ids only, solid for the rich feature set.
    std::ofstream gp(o.out / "auc.gp");
    gp << "set terminal pngcairo size 1000,600 font 'sans,11'\nset output 'auc.png'\n"
       << "set title 'AUC vs training interval (" << (o.data ? "MovieLens" : "synthetic stream") << ")'\n"
       << "set xlabel 'training interval'\nset ylabel 'AUC (like = rating >= 4)'\nset grid\n"
       << "set key outside right center\nset offsets 0.3, 0.3, 0, 0\n";
    const std::map<std::string, std::string> colours{{"mf", "#000000"},        {"mlp", "#1f77b4"},
                                                     {"dcn", "#d62728"},       {"dlrm", "#2ca02c"},
                                                     {"local-mlp", "#17becf"}, {"local-dlrm", "#98df8a"},
                                                     {"local-dcn", "#ff7f0e"}};
    gp << "plot ";
    for (std::size_t c = 0; c < cells.size(); ++c) {
      auto colour = colours.find(results[c].model);
      gp << (c ? ", \\\n     " : "") << "'auc.dat' index " << c << " using 1:2:xtic(3) with linespoints lw "
         << (results[c].model == "mf" ? 3 : 2) << " pt " << 5 + 2 * (c % 4) << " dt "
         << (results[c].features == feature_set::ids ? 2 : 1) << " lc rgb '"
         << (colour == colours.end() ? "#7f7f7f" : colour->second) << "' title columnheader(1)";
    }
    gp << "\n";
  }
  if (o.plot) {
    const std::string command = "cd '" + o.out.string() + "' && gnuplot auc.gp 2>&1";
    if (std::system(command.c_str()) == 0) std::printf("wrote %s\n", (o.out / "auc.png").string().c_str());
    else std::printf("gnuplot failed or is absent (apt-get install gnuplot-nox); %s is ready to plot\n",
                     (o.out / "auc.gp").string().c_str());
  }
  for (std::size_t c = 0; c < cells.size(); ++c)
    for (std::size_t k = 0; k < o.intervals.size(); ++k)
      if (!std::isfinite(auc_of[c][k][0])) {
        std::fprintf(stderr, "%s (%s) at %s: AUC is not finite\n", results[c].model.c_str(),
                     to_string(results[c].features), o.intervals[k].label.c_str());
        return 1;
      }
  std::printf("wrote %s, %s; total %.1f s\n", (o.out / "results.csv").string().c_str(),
              (o.out / "table.md").string().c_str(), seconds_since(start));
  return 0;
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [ratings.csv|u.data] [--models mf,mlp,dlrm,dcn] [--features ids,rich]\n"
               "          [--intervals 1d,12h,6h,1h,30m,5m,event] [--threads N] [--out DIR] [--heavy N]\n"
               "          [--warm-fraction F] [--phases N] [--tune] [--events N] [--seed N] [--no-plot] [--smoke]\n"
               "No path: a synthetic stream with drifting preferences. The first interval is the baseline.\n",
               argv0);
  return 2;
}

}  // namespace
}  // namespace experiment

int main(int argc, char** argv) {
  using namespace experiment;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines show up when redirected to a log
  options o;
  std::string intervals = "1d,12h,6h,1h,30m,5m,event";
  bool intervals_given = false;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "--models") o.models = split(value(), ',');
      else if (a == "--features") {
        o.features.clear();
        for (const auto& f : split(value(), ',')) {
          if (f == "ids") o.features.push_back(feature_set::ids);
          else if (f == "rich") o.features.push_back(feature_set::rich);
          else throw std::invalid_argument("--features: unknown feature set " + f + " (ids, rich)");
        }
      } else if (a == "--intervals") intervals = value(), intervals_given = true;
      else if (a == "--threads") o.threads = std::stoul(value());
      else if (a == "--out") o.out = value();
      else if (a == "--phases") o.phases = std::max<std::size_t>(1, std::stoul(value()));
      else if (a == "--heavy") o.heavy = static_cast<std::uint32_t>(std::stoul(value()));
      else if (a == "--warm-fraction") o.warm_fraction = std::stod(value());
      else if (a == "--events") o.synthetic.events = std::stoul(value());
      else if (a == "--seed") o.synthetic.seed = std::stoull(value());
      else if (a == "--no-plot") o.plot = false;
      else if (a == "--smoke") o.smoke = true;
      else if (a == "--tune") o.tune = true;
      else if (a.size() > 1 && a[0] == '-') return usage(argv[0]);
      else o.data = a;
    }
    if (o.smoke) {
      o.synthetic.events = 2'000;
      o.synthetic.users = 150;
      o.synthetic.initial_items = 300;
      o.synthetic.new_items_per_day = 10;
      o.synthetic.days = 30;
      o.heavy = 20;
      o.phases = 1;
      o.plot = false;
      if (!intervals_given) intervals = "1d,1h,event";
    }
    for (const auto& key : split(intervals, ',')) {
      auto iv = parse_interval(key);
      if (!iv) throw std::invalid_argument("--intervals: cannot read " + key + " (e.g. 1d, 12h, 30m, 90s, event)");
      o.intervals.push_back(*iv);
    }
    if (o.intervals.empty()) throw std::invalid_argument("--intervals: none given");
    if (!(o.warm_fraction > 0.0 && o.warm_fraction < 1.0)) throw std::invalid_argument("--warm-fraction must be in (0, 1)");
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "incremental_training: %s\n", e.what());
    return 1;
  }
}
