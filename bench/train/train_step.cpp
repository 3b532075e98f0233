// SPDX-License-Identifier: Apache-2.0
// recpipe benchmark: training steps per second (forward, backward, optimizers) of DLRM and DCN-v2
// against PyTorch 2.x (PyPI) and PyTorch 1.13 (Debian) on the same weights and the same batches.
//
// Protocol (docs/performance.md, "Training"):
//  1. synthetic data with a learnable label and the models' initial weights are written into the
//     build tree; each PyTorch peer (bench/train/torch_train.py --serve) loads them once and keeps
//     its module and optimizer state in its own process between blocks;
//  2. agreement, untimed: 30 steps on every side from the same initial weights with the same
//     update rules (Adam for dense weights, element-wise sparse Adagrad for tables); the per-step
//     losses must agree (max |difference| < 1e-3) or nothing is timed;
//  3. timing at each thread count: blocks of 20 steps, the sides interleaved (the order rotates each
//     round), a 150 ms pause before each block so that the other side's spinning OpenMP/BLAS
//     threads have gone to sleep (300 ms at 2 threads); medians of the per-step times with p25/p75, in
//     examples/s, and of the per-step process CPU times (preemption on a shared machine left out);
//  4. a profile: our step with a timer around each phase, and the step's sgemm calls alone (ceiling).
// Row-wise Adagrad (FBGEMM's, the configuration) has no torch.optim equivalent: in those rows
// PyTorch still runs element-wise sparse Adagrad, which is what a PyTorch user without FBGEMM runs.
//
// Usage: bench_train_step [--models dcn_v2,dlrm] [--threads 1,2] [--rounds 8] [--block 20]
//        [--agree-steps 30] [--rows 1000000] [--work DIR] [--keep-files]
// Peers: RECPIPE_TORCH2_PYTHON (a python with torch 2.x; ./scripts/bench train sets it) and
// RECPIPE_TORCH1_PYTHON (default /usr/bin/python3, Debian's torch 1.13). A missing peer is skipped.

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <recpipe/cpu/threads.hpp>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/train/dcn_v2_model.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/losses.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/trainer.hpp>
#include <recpipe/train/dlrm_model.hpp>

#ifndef RECPIPE_TRAIN_BENCH_WORK
#define RECPIPE_TRAIN_BENCH_WORK "train_bench_work"
#endif
#ifndef RECPIPE_TORCH_TRAIN_SCRIPT
#define RECPIPE_TORCH_TRAIN_SCRIPT "bench/train/torch_train.py"
#endif

namespace {

using namespace recpipe;
using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;

// CPU time of the whole process (all threads), as Python's time.process_time(): on a shared,
// oversubscribed machine it leaves out the time a step spent preempted.
double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// ------------------------------------------------------------------------------------------
// Settings

struct settings {
  std::vector<std::string> models{"dcn_v2", "dlrm"};
  std::vector<int> threads{1, 2};
  int rounds = 8;
  int block = 20;
  int agree_steps = 30;
  std::size_t rows = 1000000;
  std::size_t batch = 512;
  std::size_t batches = 200;
  std::size_t dense_dim = 13;
  std::size_t tables = 8;
  std::size_t dim = 32;
  double dense_lr = 1e-3;
  double table_lr = 0.05;
  double agree_tolerance = 1e-3;
  std::filesystem::path work = RECPIPE_TRAIN_BENCH_WORK;
  bool keep_files = false;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

settings parse(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_train_step: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--models") s.models = split(next());
    else if (a == "--threads") {
      s.threads.clear();
      for (const std::string& t : split(next())) s.threads.push_back(std::stoi(t));
    } else if (a == "--rounds") s.rounds = std::stoi(next());
    else if (a == "--block") s.block = std::stoi(next());
    else if (a == "--agree-steps") s.agree_steps = std::stoi(next());
    else if (a == "--rows") s.rows = std::stoul(next());
    else if (a == "--work") s.work = next();
    else if (a == "--keep-files") s.keep_files = true;
    else {
      std::fprintf(stderr,
                   "usage: bench_train_step [--models dcn_v2,dlrm] [--threads 1,2] [--rounds 8] [--block 20] "
                   "[--agree-steps 30] [--rows 1000000] [--work DIR] [--keep-files]\n");
      std::exit(2);
    }
  }
  return s;
}

// ------------------------------------------------------------------------------------------
// Synthetic data: Zipf-like ids, Gaussian dense features, a label drawn from a hidden logistic
// function of both (so the loss falls as the models learn).

struct dataset {
  std::vector<train::example_batch> batches;
  std::vector<float> dense, labels;     // [n, dense_dim], [n]
  std::vector<std::vector<std::int64_t>> ids;  // per table, [n]
  double positive_rate = 0;
};

dataset make_data(const settings& s) {
  const std::size_t n = s.batch * s.batches;
  dataset d;
  d.dense.resize(n * s.dense_dim);
  d.labels.resize(n);
  d.ids.assign(s.tables, std::vector<std::int64_t>(n));
  std::mt19937_64 gen(20261130);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<float> w(s.dense_dim);
  for (float& v : w) v = 0.5f * normal(gen);
  // Zipf-like ranks (exponent 1.1, inverse CDF of the continuous power law), scattered over the
  // table by a bijection (999983 is prime, so coprime with the row count unless it divides it).
  const double expo = 1.0 - 1.1, top = std::pow(static_cast<double>(s.rows), expo);
  const auto hidden = [](std::uint64_t table, std::int64_t id) {  // the id's effect, in [-1, 1)
    const std::uint64_t h = train::row_init::mix((table + 1) * 0x9e3779b97f4a7c15ull ^ static_cast<std::uint64_t>(id));
    return static_cast<float>(h >> 40) / 8388608.0f - 1.0f;
  };
  double positives = 0;
  for (std::size_t i = 0; i < n; ++i) {
    float logit = -0.3f;
    for (std::size_t c = 0; c < s.dense_dim; ++c) {
      const float x = normal(gen);
      d.dense[i * s.dense_dim + c] = x;
      logit += w[c] * x;
    }
    for (std::size_t t = 0; t < s.tables; ++t) {
      const double rank = std::floor(std::pow((top - 1.0) * uniform(gen) + 1.0, 1.0 / expo));  // [1, rows]
      const auto r = static_cast<std::uint64_t>(std::clamp(rank, 1.0, static_cast<double>(s.rows))) - 1;
      const auto id = static_cast<std::int64_t>((r * 999983ull) % s.rows);
      d.ids[t][i] = id;
      logit += 0.8f * hidden(t, id);
    }
    const float y = uniform(gen) < 1.0 / (1.0 + std::exp(-static_cast<double>(logit))) ? 1.0f : 0.0f;
    d.labels[i] = y;
    positives += y;
  }
  d.positive_rate = positives / static_cast<double>(n);
  for (std::size_t b = 0; b < s.batches; ++b) {
    train::example_batch eb(s.dense_dim, s.tables);
    for (std::size_t k = 0; k < s.batch; ++k) {
      const std::size_t i = b * s.batch + k;
      eb.begin_example(d.labels[i]);
      std::span<float> row = eb.dense_row();
      std::copy_n(d.dense.begin() + static_cast<std::ptrdiff_t>(i * s.dense_dim), s.dense_dim, row.begin());
      for (std::size_t t = 0; t < s.tables; ++t) eb.add_id(t, d.ids[t][i]);
    }
    d.batches.push_back(std::move(eb));
  }
  return d;
}

void write_data(const dataset& d, const settings& s, const std::filesystem::path& path) {
  io::safetensors_writer w;
  const std::size_t n = d.labels.size();
  w.add("dense", std::span<const float>(d.dense), {n, s.dense_dim});
  w.add("labels", std::span<const float>(d.labels), {n});
  for (std::size_t t = 0; t < s.tables; ++t)
    w.add("ids." + std::to_string(t), std::span<const std::int64_t>(d.ids[t]), {n});
  w.write(path);
}

// Streams the initial weights (dense parameters and 1 GB of tables) into a safetensors file
// without a second in-memory copy; names and metadata as the models' freeze() writes them.
void write_weights(const std::filesystem::path& path, const std::vector<train::parameter*>& params,
                   const std::string& table_prefix, const std::vector<std::shared_ptr<train::fixed_table>>& tables,
                   const json& config) {
  struct entry {
    std::string name;
    std::vector<std::size_t> shape;
    const float* data;
    std::size_t count;
  };
  std::vector<entry> entries;
  for (const train::parameter* p : params) entries.push_back({p->name, p->shape, p->value.data(), p->value.size()});
  for (std::size_t t = 0; t < tables.size(); ++t) {
    const auto w = tables[t]->weights();
    entries.push_back({table_prefix + std::to_string(t) + ".weight", {w.rows(), w.cols()}, w.data(), w.rows() * w.cols()});
  }
  json header = json::object();
  header["__metadata__"] = {{"recpipe.model", config.at("model").get<std::string>()}, {"recpipe.config", config.dump()}};
  std::size_t offset = 0;
  for (const entry& e : entries) {
    header[e.name] = {{"dtype", "F32"}, {"shape", e.shape}, {"data_offsets", {offset, offset + 4 * e.count}}};
    offset += 4 * e.count;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const std::uint64_t length = text.size();
  char le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<char>((length >> (8 * i)) & 0xffu);
  out.write(le, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const entry& e : entries)
    out.write(reinterpret_cast<const char*>(e.data), static_cast<std::streamsize>(4 * e.count));
  if (!out) detail::fail("bench_train_step: cannot write ", path.string());
}

// ------------------------------------------------------------------------------------------
// A PyTorch peer: torch_train.py --serve in a child process, one JSON line per command.

class peer {
 public:
  peer(std::string label, std::string python) : label_(std::move(label)), python_(std::move(python)) {}
  peer(const peer&) = delete;
  peer& operator=(const peer&) = delete;
  ~peer() { stop(); }

  const std::string& label() const { return label_; }
  const std::string& version() const { return version_; }
  const std::string& why_not() const { return why_not_; }
  bool ok() const { return ok_; }
  json& ready() { return ready_; }

  bool start(const std::filesystem::path& weights, const std::filesystem::path& data, const settings& s) {
    if (python_.empty()) return fail("its python is not set");
    if (access(python_.c_str(), X_OK) != 0) return fail(python_ + " is not an executable");
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) return fail("pipe() failed");
    const std::string table_lr = std::to_string(s.table_lr), dense_lr = std::to_string(s.dense_lr),
                      batch = std::to_string(s.batch);
    pid_ = fork();
    if (pid_ < 0) return fail("fork() failed");
    if (pid_ == 0) {
      dup2(to_child[0], 0);
      dup2(from_child[1], 1);
      close(to_child[0]);
      close(to_child[1]);
      close(from_child[0]);
      close(from_child[1]);
      execl(python_.c_str(), python_.c_str(), RECPIPE_TORCH_TRAIN_SCRIPT, "--weights", weights.c_str(), "--data",
            data.c_str(), "--batch", batch.c_str(), "--dense-lr", dense_lr.c_str(), "--table-lr", table_lr.c_str(),
            "--serve", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    to_ = fdopen(to_child[1], "w");
    from_ = fdopen(from_child[0], "r");
    std::optional<json> r = read();
    if (!r || !r->contains("ready")) return fail("torch_train.py did not start (no torch in " + python_ + "?)");
    ready_ = *r;
    version_ = r->at("torch").get<std::string>();
    ok_ = true;
    return true;
  }

  //! Runs steps [first, first + steps) at `threads`; nullopt (and ok() false) if the peer died.
  std::optional<json> run(int first, int steps, int threads) {
    if (!ok_) return std::nullopt;
    std::fprintf(to_, "run %d %d %d\n", first, steps, threads);
    std::fflush(to_);
    std::optional<json> r = read();
    if (!r || r->contains("error")) {
      fail(r ? r->at("error").get<std::string>() : "the process ended");
      return std::nullopt;
    }
    return r;
  }

  void stop() {
    if (to_) {
      std::fputs("quit\n", to_);
      std::fclose(to_);
      to_ = nullptr;
    }
    if (from_) {
      std::fclose(from_);
      from_ = nullptr;
    }
    if (pid_ > 0) {
      int status = 0;
      waitpid(pid_, &status, 0);
      pid_ = -1;
    }
    ok_ = false;
  }

 private:
  bool fail(std::string why) {
    if (why_not_.empty()) why_not_ = std::move(why);
    ok_ = false;
    return false;
  }
  std::optional<json> read() {
    char* line = nullptr;
    std::size_t cap = 0;
    const ssize_t got = getline(&line, &cap, from_);
    std::optional<json> out;
    if (got > 0) {
      try {
        out = json::parse(std::string(line, static_cast<std::size_t>(got)));
      } catch (const std::exception&) {
        out = std::nullopt;
      }
    }
    std::free(line);
    return out;
  }

  std::string label_, python_, version_, why_not_;
  json ready_;
  pid_t pid_ = -1;
  std::FILE* to_ = nullptr;
  std::FILE* from_ = nullptr;
  bool ok_ = false;
};

// ------------------------------------------------------------------------------------------
// Statistics

struct stats {
  double median = 0, p25 = 0, p75 = 0;  // seconds per step
  std::size_t n = 0;
};
stats summarize(std::vector<double> v) {
  stats s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const auto at = [&](double q) { return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)]; };
  s.median = at(0.5);
  s.p25 = at(0.25);
  s.p75 = at(0.75);
  return s;
}
std::string rate(const stats& s, std::size_t batch) {  // examples/s: median [p25 of the rate, p75 of the rate]
  char buf[96];
  const auto r = [&](double sec) { return static_cast<double>(batch) / sec; };
  std::snprintf(buf, sizeof buf, "%.0f [%.0f-%.0f]", r(s.median), r(s.p75), r(s.p25));
  return buf;
}

// The ceiling: the sgemm calls of one training step (forward and backward, same shapes, same
// cpu::gemm entry point and thread count) timed alone; the rest of a step is what the layers,
// loss, optimizers and tables add around them.
struct gemm_shape {
  bool trans_a, trans_b;
  std::size_t m, n, k;
};
double gemm_ceiling_seconds(const std::vector<gemm_shape>& shapes) {
  std::size_t most = 0;
  for (const gemm_shape& g : shapes) most = std::max({most, g.m * g.k, g.k * g.n, g.m * g.n});
  std::vector<float> a(most), b(most), c(most);
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  for (float& v : a) v = u(gen);
  for (float& v : b) v = u(gen);
  std::vector<double> times;
  for (int rep = 0; rep < 25; ++rep) {
    const auto start = clock_type::now();
    for (const gemm_shape& g : shapes)
      cpu::impl::gemm(g.trans_a, g.trans_b, a.data(), g.trans_a ? g.m : g.k, b.data(), g.trans_b ? g.k : g.n, c.data(),
                      g.n, g.m, g.n, g.k, 1.0f, 1.0f);
    if (rep >= 5) times.push_back(std::chrono::duration<double>(clock_type::now() - start).count());
  }
  return summarize(times).median;
}

// ------------------------------------------------------------------------------------------
// The models

struct dcn_case {
  using model_type = train::dcn_v2_model;
  static constexpr const char* name = "DCN-v2";
  static constexpr const char* table_prefix = "embeddings.";
  static models::dcn_v2_config config(const settings& s) {
    models::dcn_v2_config c;
    c.dense_dim = s.dense_dim;
    for (std::size_t t = 0; t < s.tables; ++t) c.tables.push_back({s.rows, s.dim});
    c.cross_layers = 3;
    c.rank = 0;
    c.deep = {256, 128};
    c.structure = models::dcn_structure::stacked;
    c.sigmoid = false;
    return c;
  }
  static std::string shape(const settings& s) {
    const std::size_t d = s.dense_dim + s.tables * s.dim;
    return "x0 = 13 dense + 8 x 32 = " + std::to_string(d) + "; 3 full-rank cross layers " + std::to_string(d) + "x" +
           std::to_string(d) + "; deep " + std::to_string(d) + "-256-128 ReLU; head 128-1 (logit)";
  }
  static std::vector<gemm_shape> gemms(const settings& s) {
    const std::size_t b = s.batch, d = s.dense_dim + s.tables * s.dim;
    std::vector<gemm_shape> g;
    for (int l = 0; l < 3; ++l) g.push_back({false, true, b, d, d});             // u = x W^T
    g.push_back({false, true, b, 256, d});                                        // deep
    g.push_back({false, true, b, 128, 256});
    g.push_back({false, true, b, 1, 128});                                        // head
    g.push_back({true, false, 1, 128, b});                                        // head dW, dh
    g.push_back({false, false, b, 128, 1});
    g.push_back({true, false, 128, 256, b});                                      // deep dW, dx
    g.push_back({false, false, b, 256, 128});
    g.push_back({true, false, 256, d, b});
    g.push_back({false, false, b, d, 256});
    for (int l = 0; l < 3; ++l) {
      g.push_back({true, false, d, d, b});                                        // cross dW, dxl
      g.push_back({false, false, b, d, d});
    }
    return g;
  }
};
struct dlrm_case {
  using model_type = train::dlrm_model;
  static constexpr const char* name = "DLRM";
  static constexpr const char* table_prefix = "emb_l.";
  static models::dlrm_config config(const settings& s) {
    models::dlrm_config c;
    c.dense_dim = s.dense_dim;
    c.embedding_dim = s.dim;
    c.bottom = {128, s.dim};
    c.table_rows.assign(s.tables, s.rows);
    c.top = {256, 128, 1};
    c.self_interaction = false;
    c.final_activation = cpu::activation::none;
    return c;
  }
  static std::string shape(const settings& s) {
    const std::size_t f = s.tables + 1, top_in = s.dim + f * (f - 1) / 2;
    return "bottom 13-128-32 ReLU; dot interaction of 9 x 32 (36 pairs, no self); top " + std::to_string(top_in) +
           "-256-128-1 ReLU, last linear (logit)";
  }
  static std::vector<gemm_shape> gemms(const settings& s) {
    const std::size_t b = s.batch, f = s.tables + 1, top_in = s.dim + f * (f - 1) / 2;
    std::vector<gemm_shape> g = {
        {false, true, b, 128, s.dense_dim}, {false, true, b, s.dim, 128},                       // bottom
        {false, true, b, 256, top_in},      {false, true, b, 128, 256},   {false, true, b, 1, 128},  // top
        {true, false, 1, 128, b},           {false, false, b, 128, 1},                              // top backward
        {true, false, 128, 256, b},         {false, false, b, 256, 128},
        {true, false, 256, top_in, b},      {false, false, b, top_in, 256},
        {true, false, s.dim, 128, b},       {false, false, b, 128, s.dim},                          // bottom backward
        {true, false, 128, s.dense_dim, b}};
    return g;
  }
};

enum class table_opt { adagrad_rows, rowwise_adagrad };

std::vector<std::shared_ptr<train::fixed_table>> make_tables(const settings& s, table_opt kind) {
  std::vector<std::shared_ptr<train::fixed_table>> out;
  for (std::size_t t = 0; t < s.tables; ++t) {
    std::shared_ptr<train::row_optimizer> opt;
    if (kind == table_opt::adagrad_rows)
      opt = std::make_shared<train::adagrad_rows>(train::adagrad_rows_options{.lr = s.table_lr});
    else
      opt = std::make_shared<train::rowwise_adagrad>(train::rowwise_adagrad_options{.lr = s.table_lr});
    train::fixed_table::config c;
    c.rows = s.rows;
    c.dim = s.dim;
    c.init = {train::row_init::distribution::uniform, 0.05f, 1000 + t};
    c.name = "table" + std::to_string(t);
    out.push_back(std::make_shared<train::fixed_table>(c, opt));
  }
  return out;
}

// Ours: the model, its dense optimizer and one workspace; steps are numbered like torch_train.py's.
template <class Case>
struct ours {
  std::vector<std::shared_ptr<train::fixed_table>> tables;
  std::unique_ptr<typename Case::model_type> model;
  train::adam adam;
  typename Case::model_type::workspace ws;
  dataset* data;
  int next = 0;

  ours(const settings& s, table_opt kind, dataset& d) : tables(make_tables(s, kind)), adam({.lr = s.dense_lr}), data(&d) {
    std::vector<std::shared_ptr<train::trainable_table>> base(tables.begin(), tables.end());
    model = std::make_unique<typename Case::model_type>(Case::config(s), base, /*seed=*/7);
  }
  train::example_batch& batch(int step) { return data->batches[static_cast<std::size_t>(step) % data->batches.size()]; }

  // One block: per-step seconds and losses.
  void run(int steps, std::vector<double>* seconds, std::vector<double>* losses, std::vector<double>* cpu = nullptr) {
    const train::dense_step_fn dense = [this](std::span<train::parameter* const> p) { adam.step(p); };
    for (int k = 0; k < steps; ++k) {
      train::example_batch& b = batch(next++);
      const double cpu_start = process_cpu_seconds();
      const auto start = clock_type::now();
      const train::step_result r = train::train_step(*model, ws, b, dense);
      const double sec = std::chrono::duration<double>(clock_type::now() - start).count();
      if (cpu) cpu->push_back(process_cpu_seconds() - cpu_start);
      if (r.skipped) detail::fail("bench_train_step: step ", next - 1, " was skipped (non-finite gradient)");
      if (seconds) seconds->push_back(sec);
      if (losses) losses->push_back(r.loss);
    }
  }

  // The same step as train::train_step, with a timer around each phase (the profile).
  // Phases: forward+loss, backward, finite checks, dense Adam, table rows.
  void run_phases(int steps, std::vector<std::array<double, 5>>& out) {
    for (int k = 0; k < steps; ++k) {
      train::example_batch& b = batch(next++);
      std::array<double, 5> t{};
      auto mark = clock_type::now();
      const auto lap = [&](double& slot) {
        const auto now = clock_type::now();
        slot = std::chrono::duration<double>(now - mark).count();
        mark = now;
      };
      const std::vector<train::parameter*> params = model->parameters();
      for (train::parameter* p : params) p->zero_grad();
      const matrix_view<const float> logits = model->forward(b.inputs(), ws);
      ws.scores.resize(b.size());
      for (std::size_t i = 0; i < b.size(); ++i) ws.scores[i] = logits(i, 0);
      ws.dlogits.resize(b.size());
      train::bce_with_logits(ws.scores, b.labels(), ws.dlogits);
      lap(t[0]);
      model->backward(ws, matrix_view<const float>(ws.dlogits.data(), b.size(), 1));
      lap(t[1]);
      bool finite = model->table_gradients_finite(ws);
      for (const train::parameter* p : params) finite = finite && p->grad_is_finite();
      lap(t[2]);
      adam.step(params);
      lap(t[3]);
      model->apply_table_gradients(ws);
      lap(t[4]);
      if (!finite) detail::fail("bench_train_step: profile step was not finite");
      out.push_back(t);
    }
  }
};

void pause_between_sides() { std::this_thread::sleep_for(std::chrono::milliseconds(cpu::num_threads() > 1 ? 300 : 150)); }

struct result_row {
  std::string model, tables, peer;
  int threads = 1;
  stats ours, theirs, ours_cpu, theirs_cpu;
  std::string skipped;
};

std::string python_from_env(const char* var, const char* fallback) {
  const char* v = std::getenv(var);
  return v && *v ? std::string(v) : std::string(fallback);
}

template <class Case>
void run_model(const settings& s, dataset& data, const std::filesystem::path& data_path, std::vector<result_row>& rows,
               bool& agreement_failed) {
  std::printf("\n## %s: %s; %zu tables of %zu x %zu (one id per example and table), batch %zu\n", Case::name,
              Case::shape(s).c_str(), s.tables, s.rows, s.dim, s.batch);
  std::vector<std::unique_ptr<peer>> peers;
  peers.push_back(std::make_unique<peer>("torch 2.x", python_from_env("RECPIPE_TORCH2_PYTHON", "")));
  peers.push_back(std::make_unique<peer>("torch 1.13", python_from_env("RECPIPE_TORCH1_PYTHON", "/usr/bin/python3")));

  for (table_opt kind : {table_opt::adagrad_rows, table_opt::rowwise_adagrad}) {
    const std::string kind_name =
        kind == table_opt::adagrad_rows ? "sparse Adagrad (a)" : "row-wise Adagrad (b)";
    const auto t_build = clock_type::now();
    ours<Case> us(s, kind, data);
    std::printf("# ours, tables with %s: built in %.1f s\n", kind_name.c_str(),
                std::chrono::duration<double>(clock_type::now() - t_build).count());
    std::fflush(stdout);

    cpu::set_num_threads(1);
    std::vector<double> our_losses;
    if (kind == table_opt::adagrad_rows) {
      // Same initial weights on every side: ours are written out, the peers load them.
      const std::filesystem::path weights = s.work / (std::string(Case::name) + ".init.safetensors");
      write_weights(weights, us.model->parameters(), Case::table_prefix, us.tables, Case::config(s).to_json());
      for (auto& p : peers) {
        const auto t0 = clock_type::now();
        if (p->start(weights, data_path, s))
          std::printf("# %s: torch %s (%s) loaded in %.1f s (mkldnn %s, mkl %s)\n", p->label().c_str(),
                      p->version().c_str(), p->ready().dump().c_str(),
                      std::chrono::duration<double>(clock_type::now() - t0).count(),
                      p->ready().value("mkldnn", false) ? "yes" : "no", p->ready().value("mkl", false) ? "yes" : "no");
        else
          std::printf("# %s: skipped (%s)\n", p->label().c_str(), p->why_not().c_str());
        std::fflush(stdout);
      }
      if (!s.keep_files) std::filesystem::remove(weights);
    }

    // Agreement (untimed) for (a); for (b) the same steps run as a warm-up and a loss sanity check.
    us.run(s.agree_steps, nullptr, &our_losses);
    if (kind == table_opt::adagrad_rows) {
      for (auto& p : peers) {
        if (!p->ok()) continue;
        const std::optional<json> r = p->run(0, s.agree_steps, 1);
        if (!r) {
          std::printf("# %s: died during the agreement run (%s)\n", p->label().c_str(), p->why_not().c_str());
          continue;
        }
        const std::vector<double> theirs = r->at("losses").get<std::vector<double>>();
        double worst = 0, worst_rel = 0;
        for (std::size_t i = 0; i < theirs.size() && i < our_losses.size(); ++i) {
          worst = std::max(worst, std::abs(theirs[i] - our_losses[i]));
          worst_rel = std::max(worst_rel, std::abs(theirs[i] - our_losses[i]) / std::abs(theirs[i]));
        }
        std::printf("# agreement %s vs %s, %d steps from the same init: loss step 1 %.6f vs %.6f, step %d %.6f vs "
                    "%.6f; max |diff| %.2e (relative %.2e) -> %s\n",
                    Case::name, p->label().c_str(), s.agree_steps, our_losses.front(), theirs.front(), s.agree_steps,
                    our_losses.back(), theirs.back(), worst, worst_rel, worst < s.agree_tolerance ? "ok" : "FAILED");
        if (!(worst < s.agree_tolerance)) {
          agreement_failed = true;
          std::printf("# %s: the loss curves disagree; not timing %s against it\n", p->label().c_str(),
                      p->label().c_str());
          p->stop();
        }
      }
    } else {
      std::printf("# ours with row-wise Adagrad, %d steps: loss %.4f -> %.4f\n", s.agree_steps, our_losses.front(),
                  our_losses.back());
    }
    std::fflush(stdout);

    // Timing: rounds of interleaved blocks at each thread count.
    std::vector<int> peer_next(peers.size(), s.agree_steps);
    for (int threads : s.threads) {
      cpu::set_num_threads(threads);
      std::vector<double> our_sec, our_cpu;
      std::vector<std::vector<double>> peer_sec(peers.size()), peer_cpu(peers.size());
      std::vector<std::vector<std::array<double, 4>>> peer_phase(peers.size());
      const int sides = static_cast<int>(peers.size()) + 1;
      for (int round = -1; round < s.rounds; ++round) {  // round -1: warm-up, not recorded
        for (int k = 0; k < sides; ++k) {
          const int side = (k + std::max(round, 0)) % sides;
          pause_between_sides();
          if (side == 0) {
            us.run(s.block, round >= 0 ? &our_sec : nullptr, nullptr, round >= 0 ? &our_cpu : nullptr);
            continue;
          }
          peer& p = *peers[static_cast<std::size_t>(side - 1)];
          if (!p.ok()) continue;
          const std::optional<json> r = p.run(peer_next[side - 1], s.block, threads);
          peer_next[side - 1] += s.block;
          if (!r) continue;
          if (round < 0) continue;
          for (double v : r->at("step_seconds").get<std::vector<double>>()) peer_sec[side - 1].push_back(v);
          for (double v : r->at("step_cpu_seconds").get<std::vector<double>>()) peer_cpu[side - 1].push_back(v);
          for (const auto& ph : r->at("phase_seconds"))
            peer_phase[side - 1].push_back({ph[0].get<double>(), ph[1].get<double>(), ph[2].get<double>(),
                                            ph[3].get<double>()});
        }
      }
      const stats mine = summarize(our_sec);
      for (std::size_t i = 0; i < peers.size(); ++i) {
        result_row row{Case::name, kind_name, peers[i]->label(), threads, mine, {}, summarize(our_cpu), {}, {}};
        if (peers[i]->ok() && !peer_sec[i].empty()) {
          row.peer = peers[i]->label() + " (" + peers[i]->version() + ")";
          row.theirs = summarize(peer_sec[i]);
          row.theirs_cpu = summarize(peer_cpu[i]);
          if (kind == table_opt::adagrad_rows) {  // the peers' phases (they run (a) in both rows)
            std::array<std::vector<double>, 4> ph;
            for (const auto& a : peer_phase[i])
              for (int j = 0; j < 4; ++j) ph[static_cast<std::size_t>(j)].push_back(a[static_cast<std::size_t>(j)]);
            std::printf("# %s %s, %d thread(s), median ms per phase: forward+loss %.2f, backward %.2f, "
                        "dense Adam %.2f, table Adagrad %.2f\n",
                        Case::name, row.peer.c_str(), threads, 1e3 * summarize(ph[0]).median,
                        1e3 * summarize(ph[1]).median, 1e3 * summarize(ph[2]).median, 1e3 * summarize(ph[3]).median);
          }
        } else {
          row.skipped = peers[i]->why_not().empty() ? "no result" : peers[i]->why_not();
        }
        rows.push_back(row);
      }
      // Our profile at this thread count: the same step with a timer around each phase.
      std::vector<std::array<double, 5>> phases;
      us.run_phases(2 * s.block, phases);
      std::array<std::vector<double>, 5> ph;
      for (const auto& a : phases)
        for (std::size_t j = 0; j < 5; ++j) ph[j].push_back(a[j]);
      std::printf("# %s ours, %s, %d thread(s), median ms per phase: forward+loss %.2f, backward %.2f, finite "
                  "checks %.2f, dense Adam %.2f, table rows %.2f (step median %.2f)\n",
                  Case::name, kind_name.c_str(), threads, 1e3 * summarize(ph[0]).median, 1e3 * summarize(ph[1]).median,
                  1e3 * summarize(ph[2]).median, 1e3 * summarize(ph[3]).median, 1e3 * summarize(ph[4]).median,
                  1e3 * mine.median);
      const double ceiling = gemm_ceiling_seconds(Case::gemms(s));
      double phase_sum = 0;
      for (const auto& v : ph) phase_sum += summarize(v).median;
      std::printf("# %s ceiling, %d thread(s): the step's sgemm calls alone (OpenBLAS, same shapes) %.2f ms = %.0f%% of "
                  "the profiled step (%.2f ms)\n",
                  Case::name, threads, 1e3 * ceiling, 100.0 * ceiling / phase_sum, 1e3 * phase_sum);
      std::fflush(stdout);
    }
  }
  for (auto& p : peers) p->stop();
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a peer that dies must not kill the benchmark
  settings s = parse(argc, argv);
  std::filesystem::create_directories(s.work);
  const auto t0 = clock_type::now();
  dataset data = make_data(s);
  const std::filesystem::path data_path = s.work / "data.safetensors";
  write_data(data, s, data_path);
  std::printf("# data: %zu batches of %zu, %zu dense features, %zu tables of %zu x %zu, Zipf(1.1) ids, positives "
              "%.3f (made in %.1f s)\n",
              s.batches, s.batch, s.dense_dim, s.tables, s.rows, s.dim, data.positive_rate,
              std::chrono::duration<double>(clock_type::now() - t0).count());
  std::printf("# optimizers: Adam(lr %g) for dense weights; tables: (a) element-wise sparse Adagrad (lr %g) on both "
              "sides, (b) ours row-wise Adagrad (lr %g) vs PyTorch still running (a) (torch.optim has no row-wise "
              "Adagrad; FBGEMM's is not in either peer's build path)\n",
              s.dense_lr, s.table_lr, s.table_lr);
  std::vector<result_row> rows;
  bool agreement_failed = false;
  for (const std::string& m : s.models) {
    if (m == "dcn_v2") {
      run_model<dcn_case>(s, data, data_path, rows, agreement_failed);
    } else if (m == "dlrm") {
      run_model<dlrm_case>(s, data, data_path, rows, agreement_failed);
    } else {
      std::fprintf(stderr, "bench_train_step: unknown model %s (dcn_v2, dlrm)\n", m.c_str());
      return 2;
    }
  }
  if (!s.keep_files) std::filesystem::remove(data_path);

  std::printf("\n| case | threads | ours ex/s median [p25-p75] | peer | peer ex/s median [p25-p75] | ratio | CPU ms/step ours / peer | CPU-time ratio |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (const result_row& r : rows) {
    if (!r.skipped.empty()) {
      std::printf("| %s, tables %s | %d | %s | %s | skipped: %s | - | - | - |\n", r.model.c_str(), r.tables.c_str(), r.threads,
                  rate(r.ours, s.batch).c_str(), r.peer.c_str(), r.skipped.c_str());
      continue;
    }
    std::printf("| %s, tables %s | %d | %s | %s | %s | %.2f | %.2f / %.2f | %.2f |\n", r.model.c_str(), r.tables.c_str(),
                r.threads, rate(r.ours, s.batch).c_str(), r.peer.c_str(), rate(r.theirs, s.batch).c_str(),
                r.theirs.median / r.ours.median, 1e3 * r.ours_cpu.median, 1e3 * r.theirs_cpu.median,
                r.theirs_cpu.median / r.ours_cpu.median);
  }
  std::printf("(examples/s = %zu / median step time over %d rounds x %d steps; ratio = peer step time / ours, above 1 "
              "means we are faster; CPU ms/step: median process CPU time per step, both sides, which leaves out preemption on a "
              "shared machine but counts spinning worker threads)\n",
              s.batch, s.rounds, s.block);
  return agreement_failed ? 1 : 0;
}
