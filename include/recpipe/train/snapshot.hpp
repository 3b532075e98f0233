// SPDX-License-Identifier: Apache-2.0
// recpipe train: atomic, checksummed snapshots of a training state (dense parameters, embedding
// tables with their optimizer state, dense optimizer state, HNSW indexes) and their restore.
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <nlohmann/json.hpp>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/train/dynamic_table.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/parameter.hpp>
#include <recpipe/version.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! The snapshot format this build writes, and the newest it reads.
inline constexpr std::int64_t snapshot_format_version = 1;

//! @brief The parts of a training state a snapshot writes or restores: references to live
//! objects, each under a name (letters, digits, '_', '-', '.'; unique per kind).
//!
//! Parameters are written by their own names and shapes (parameter::name / shape). A dense
//! optimizer is given with the parameter list it steps (to bind a fresh optimizer before its
//! state is restored). A fixed_table writes weights and per-row optimizer state; a dynamic_table
//! writes its ids, rows and per-row state (restored only into an empty table; admission
//! counters and LRU order are not saved). A table's row optimizer step count and learning rate
//! are saved when it is a basic_row_optimizer (every recpipe row optimizer). The objects must
//! outlive the snapshot_parts and must not change while a snapshot is written or loaded.
//! @code
//! recpipe::train::snapshot_parts parts;
//! parts.add_parameters("model", model.parameters())
//!      .add_optimizer("adam", adam, model.parameters())
//!      .add_table("user", user_table)
//!      .add_index("items", index);
//! recpipe::train::write_snapshot("ckpt", 42, parts);        // ckpt/snap-000000000042, ckpt/LATEST
//! recpipe::train::load_latest_snapshot("ckpt", parts);      // in a new process
//! @endcode
class snapshot_parts {
 public:
  snapshot_parts& add_parameters(std::string group, std::vector<parameter*> params) {
    check_name("parameter group", group, [&](const std::string& n) { return has(params_, n); });
    for (std::size_t i = 0; i < params.size(); ++i)
      if (params[i] == nullptr) detail::fail("train::snapshot_parts: parameter ", i, " of group '", group, "' is null");
    params_.push_back({std::move(group), std::move(params)});
    return *this;
  }
  snapshot_parts& add_optimizer(std::string name, dense_optimizer& optimizer, std::vector<parameter*> params) {
    check_name("optimizer", name, [&](const std::string& n) { return has(optimizers_, n); });
    optimizers_.push_back({std::move(name), &optimizer, std::move(params)});
    return *this;
  }
  snapshot_parts& add_table(std::string name, fixed_table& table) {
    check_name("table", name, [&](const std::string& n) { return has(tables_, n) || has(dynamic_tables_, n); });
    tables_.push_back({std::move(name), &table});
    return *this;
  }
  snapshot_parts& add_table(std::string name, dynamic_table& table) {
    check_name("table", name, [&](const std::string& n) { return has(tables_, n) || has(dynamic_tables_, n); });
    dynamic_tables_.push_back({std::move(name), &table});
    return *this;
  }
  snapshot_parts& add_index(std::string name, cpu::hnsw_index& index) {
    check_name("index", name, [&](const std::string& n) { return has(indexes_, n); });
    indexes_.push_back({std::move(name), &index});
    return *this;
  }

  struct param_group {
    std::string name;
    std::vector<parameter*> params;
  };
  struct optimizer_part {
    std::string name;
    dense_optimizer* optimizer;
    std::vector<parameter*> params;
  };
  struct table_part {
    std::string name;
    fixed_table* table;
  };
  struct dynamic_table_part {
    std::string name;
    dynamic_table* table;
  };
  struct index_part {
    std::string name;
    cpu::hnsw_index* index;
  };
  const std::vector<param_group>& parameter_groups() const noexcept { return params_; }
  const std::vector<optimizer_part>& optimizers() const noexcept { return optimizers_; }
  const std::vector<table_part>& tables() const noexcept { return tables_; }
  const std::vector<dynamic_table_part>& dynamic_tables() const noexcept { return dynamic_tables_; }
  const std::vector<index_part>& indexes() const noexcept { return indexes_; }

 private:
  template <class V>
  static bool has(const V& parts, const std::string& name) {
    return std::any_of(parts.begin(), parts.end(), [&](const auto& p) { return p.name == name; });
  }
  template <class Taken>
  static void check_name(const char* kind, const std::string& name, Taken&& taken) {
    if (name.empty() || name.size() > 100 || name[0] == '.' ||
        !std::all_of(name.begin(), name.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                 c == '.';
        }))
      detail::fail("train::snapshot_parts: ", kind, " name '", name,
                   "' must be 1-100 letters, digits, '_', '-' or '.' (not starting with '.')");
    if (taken(name)) detail::fail("train::snapshot_parts: ", kind, " name '", name, "' is used twice");
  }
  std::vector<param_group> params_;
  std::vector<optimizer_part> optimizers_;
  std::vector<table_part> tables_;
  std::vector<dynamic_table_part> dynamic_tables_;
  std::vector<index_part> indexes_;
};

//! One file of a snapshot as its manifest lists it.
struct snapshot_file {
  std::string name;  //!< file name inside the snapshot directory
  std::string kind;  //!< "parameters", "optimizer", "table", "dynamic_table" or "index"
  std::string part;  //!< the part's name in snapshot_parts
  std::uint64_t size = 0;
  std::uint32_t crc32 = 0;
};

//! A snapshot's manifest (manifest.json).
struct snapshot_info {
  std::filesystem::path directory;
  std::int64_t format_version = 0;
  std::uint64_t model_version = 0;
  std::string created;                 //!< UTC, ISO 8601
  std::int64_t created_unix_ms = 0;
  std::string recpipe_version;         //!< of the writer
  std::vector<snapshot_file> files;
};

//! Settings of write_snapshot.
struct snapshot_write_options {
  //! Snapshots kept in the root after a successful write (the new one included; older ones by
  //! version are deleted); 0 keeps all.
  std::size_t keep = 3;
};

namespace impl {
// An integer field of manifest.json, range-checked. nlohmann's get<T>() would convert a JSON float
// (1e300) to T with a cast whose overflow is undefined behaviour, and truncate a too-large integer
// silently (found by tests/fuzz/fuzz_model_config).
template <class T>
T manifest_integer(const nlohmann::json& value, const char* field, const std::string& where) {
  bool in_range = false;
  if (value.is_number_unsigned())
    in_range = value.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<T>::max());
  else if (value.is_number_integer())
    in_range = std::numeric_limits<T>::is_signed && value.get<std::int64_t>() >= static_cast<std::int64_t>(std::numeric_limits<T>::min());
  if (!in_range)
    detail::fail<io_error>(where, ": manifest.json: '", field, "' must be an integer in [", std::numeric_limits<T>::min(), ", ",
                           std::numeric_limits<T>::max(), "] (got ", value.dump(), ")");
  return value.get<T>();
}

inline std::uint32_t crc32_of(std::span<const std::byte> bytes, std::uint32_t crc = 0) {
  uLong c = crc;
  const auto* p = reinterpret_cast<const Bytef*>(bytes.data());
  std::size_t left = bytes.size();
  while (left > 0) {  // zlib's crc32 takes a 32-bit length
    const auto n = static_cast<uInt>(std::min<std::size_t>(left, std::size_t{1} << 30));
    c = ::crc32(c, p, n);
    p += n;
    left -= n;
  }
  return static_cast<std::uint32_t>(c);
}

inline std::string snapshot_dir_name(std::uint64_t version) {
  char name[40];
  std::snprintf(name, sizeof name, "snap-%012llu", static_cast<unsigned long long>(version));
  return name;
}

// "snap-<digits>" -> the version; nullopt for anything else (temporaries start with '.').
inline std::optional<std::uint64_t> parse_snapshot_dir_name(const std::string& name) {
  if (name.size() <= 5 || name.compare(0, 5, "snap-") != 0 || name.size() > 5 + 20) return std::nullopt;
  std::uint64_t v = 0;
  for (std::size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(name[i] - '0');
  }
  return v;
}

[[noreturn]] inline void fail_errno(const char* what, const std::filesystem::path& path) {
  const int code = errno;
  detail::fail<io_error>("train::write_snapshot: ", what, " '", path.string(), "' failed (", std::strerror(code), ")");
}

inline void fsync_path(const std::filesystem::path& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) fail_errno("open for fsync of", path);
  if (::fsync(fd) != 0) {
    const int code = errno;
    ::close(fd);
    errno = code;
    fail_errno("fsync of", path);
  }
  ::close(fd);
}

// Writes a new file and fsyncs it before returning.
inline void write_durable(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno("create", path);
  const auto* p = reinterpret_cast<const char*>(bytes.data());
  std::size_t left = bytes.size();
  while (left > 0) {
    const ::ssize_t n = ::write(fd, p, std::min<std::size_t>(left, std::size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int code = errno;
      ::close(fd);
      errno = code;
      fail_errno("write of", path);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int code = errno;
    ::close(fd);
    errno = code;
    fail_errno("fsync of", path);
  }
  if (::close(fd) != 0) fail_errno("close of", path);
}

inline std::vector<std::byte> read_all(const std::filesystem::path& path, const std::string& where) {
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::fail<io_error>(where, ": cannot open '", path.string(), "'");
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::size_t>(in.tellg());
  in.seekg(0);
  std::vector<std::byte> bytes(size);
  if (size > 0) in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  if (!in) detail::fail<io_error>(where, ": cannot read '", path.string(), "'");
  return bytes;
}

// Row optimizer step count and learning rate, when the optimizer exposes them.
inline void describe_row_optimizer(row_optimizer& o, io::safetensors_writer& out) {
  if (auto* b = dynamic_cast<basic_row_optimizer*>(&o)) {
    out.set_metadata("row_optimizer", b->name());
    out.set_metadata("row_optimizer.steps", std::to_string(b->steps()));
    nlohmann::json lr = b->lr();
    out.set_metadata("row_optimizer.lr", lr.dump());
  }
}

inline std::string iso_utc(std::int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char text[40];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

inline std::string shape_text(std::span<const std::size_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace impl

//! @brief The snapshot directory the root's LATEST file names.
//! @throws recpipe::io_error when the root has no LATEST file or it names no valid directory.
inline std::filesystem::path latest_snapshot(const std::filesystem::path& root) {
  const std::filesystem::path pointer = root / "LATEST";
  std::error_code ec;
  if (!std::filesystem::exists(pointer, ec))
    detail::fail<io_error>("train::latest_snapshot: '", root.string(), "' holds no snapshot (no LATEST file)");
  const std::vector<std::byte> bytes = impl::read_all(pointer, "train::latest_snapshot");
  std::string name(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r' || name.back() == ' ')) name.pop_back();
  if (!impl::parse_snapshot_dir_name(name))
    detail::fail<io_error>("train::latest_snapshot: '", pointer.string(), "' does not name a snapshot directory (holds '",
                           name.substr(0, 64), "')");
  const std::filesystem::path dir = root / name;
  if (!std::filesystem::is_directory(dir, ec))
    detail::fail<io_error>("train::latest_snapshot: '", pointer.string(), "' names '", name, "', which does not exist");
  return dir;
}

//! @brief Writes the parts as snapshot `version` into `root` (created if needed), atomically:
//!
//! 1. every file goes into a temporary sibling directory `root/.tmp-snap-<version>-<pid>` and is
//!    fsynced, the manifest (manifest.json: format_version, model_version, created time, each
//!    file's name, size and CRC32) last, then the directory is fsynced;
//! 2. it is renamed to `root/snap-<version, 12 digits>` and `root` is fsynced;
//! 3. `root/LATEST` (the directory's name) is replaced atomically (LATEST.tmp, fsync, rename,
//!    fsync of root): readers of the latest snapshot see the old one until this rename;
//! 4. snapshots beyond `options.keep` (oldest versions first, never the new one) and temporaries
//!    left by interrupted writers are removed.
//! A crash (or kill) at any point leaves LATEST naming the previous complete snapshot (or the new
//! one, once step 3 is done); a directory named snap-<version> is only ever a complete snapshot.
//! A snapshot directory of the same version that LATEST does not name (left by a writer killed
//! between steps 2 and 3) is replaced. One writer per root at a time.
//! Tensors go through io::safetensors_writer: `params.<group>.safetensors` (by parameter name),
//! `optimizer.<name>.safetensors` (state by name; metadata: optimizer, steps, lr),
//! `table.<name>.safetensors` (weights [rows, dim], state [rows, state size]; metadata: row
//! optimizer, steps, lr), `dynamic_table.<name>.safetensors` (ids, weights, state) and
//! `index.<name>.hnsw` (cpu::hnsw_index::save).
//! @returns the new snapshot's directory.
//! @throws recpipe::io_error if a file cannot be written (the previous snapshot stays latest);
//! recpipe::error if `version` is the version LATEST names already.
//! @code
//! auto dir = recpipe::train::write_snapshot("ckpt", trainer_step, parts, {.keep = 5});
//! @endcode
inline std::filesystem::path write_snapshot(const std::filesystem::path& root, std::uint64_t version,
                                            const snapshot_parts& parts, snapshot_write_options options = {}) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) detail::fail<io_error>("train::write_snapshot: cannot create '", root.string(), "' (", ec.message(), ")");
  const std::string final_name = impl::snapshot_dir_name(version);
  const fs::path final_dir = root / final_name;
  bool is_latest = false;
  try {  // a damaged LATEST must not stop the next snapshot from being written
    is_latest = fs::exists(root / "LATEST", ec) && latest_snapshot(root).filename() == final_name;
  } catch (const io_error&) {
  }
  if (is_latest)
    detail::fail("train::write_snapshot: snapshot version ", version, " is already the latest in '", root.string(),
                 "' (use a new version number)");
  const fs::path tmp = root / (".tmp-" + final_name + "-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec) || ec)
    detail::fail<io_error>("train::write_snapshot: cannot create '", tmp.string(), "'");

  nlohmann::json files = nlohmann::json::array();
  const auto record = [&](const std::string& name, const char* kind, const std::string& part, std::uint64_t size,
                          std::uint32_t crc) {
    files.push_back({{"name", name}, {"kind", kind}, {"part", part}, {"size", size}, {"crc32", crc}});
  };
  const auto put = [&](const std::string& name, const char* kind, const std::string& part, const io::safetensors_writer& w) {
    const std::vector<std::byte> bytes = w.to_bytes();
    impl::write_durable(tmp / name, bytes);
    record(name, kind, part, bytes.size(), impl::crc32_of(bytes));
  };

  try {
    for (const auto& g : parts.parameter_groups()) {
      io::safetensors_writer w;
      for (const parameter* p : g.params) w.add(p->name, std::span<const float>(p->value), p->shape);
      put("params." + g.name + ".safetensors", "parameters", g.name, w);
    }
    for (const auto& o : parts.optimizers()) {
      io::safetensors_writer w;
      w.set_metadata("optimizer", o.optimizer->name());
      w.set_metadata("steps", std::to_string(o.optimizer->steps()));
      w.set_metadata("lr", nlohmann::json(o.optimizer->lr()).dump());
      w.set_metadata("bound", o.optimizer->bound() ? "1" : "0");
      o.optimizer->for_each_state([&](const std::string& name, std::span<float> values) {
        w.add(name, std::span<const float>(values), {values.size()});
      });
      put("optimizer." + o.name + ".safetensors", "optimizer", o.name, w);
    }
    for (const auto& t : parts.tables()) {
      io::safetensors_writer w;
      w.add("weights", t.table->weights());
      if (t.table->state_size() > 0) w.add("state", t.table->state());
      w.set_metadata("state_size", std::to_string(t.table->state_size()));
      impl::describe_row_optimizer(t.table->optimizer(), w);
      put("table." + t.name + ".safetensors", "table", t.name, w);
    }
    for (const auto& t : parts.dynamic_tables()) {
      std::vector<std::int64_t> ids;
      std::vector<float> rows, state;
      std::size_t state_size = 0;
      t.table->for_each_row([&](id_type id, std::span<const float> row, std::span<const float> st) {
        ids.push_back(id);
        rows.insert(rows.end(), row.begin(), row.end());
        state.insert(state.end(), st.begin(), st.end());
        state_size = st.size();
      });
      io::safetensors_writer w;
      w.add("ids", std::span<const std::int64_t>(ids), {ids.size()});
      w.add("weights", std::span<const float>(rows), {ids.size(), t.table->dim()});
      w.add("state", std::span<const float>(state), {ids.size(), state_size});
      impl::describe_row_optimizer(t.table->optimizer(), w);
      put("dynamic_table." + t.name + ".safetensors", "dynamic_table", t.name, w);
    }
    for (const auto& x : parts.indexes()) {
      const std::string name = "index." + x.name + ".hnsw";
      x.index->save(tmp / name);
      const std::vector<std::byte> bytes = impl::read_all(tmp / name, "train::write_snapshot");
      impl::fsync_path(tmp / name, false);
      record(name, "index", x.name, bytes.size(), impl::crc32_of(bytes));
    }
    const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
    nlohmann::json manifest = {
        {"format", "recpipe.snapshot"},
        {"format_version", snapshot_format_version},
        {"model_version", version},
        {"created", impl::iso_utc(now_ms)},
        {"created_unix_ms", now_ms},
        {"recpipe_version", std::to_string(RECPIPE_VERSION_MAJOR) + "." + std::to_string(RECPIPE_VERSION_MINOR) + "." +
                                std::to_string(RECPIPE_VERSION_PATCH)},
        {"files", files}};
    const std::string text = manifest.dump(2) + "\n";
    impl::write_durable(tmp / "manifest.json", std::as_bytes(std::span<const char>(text)));
    impl::fsync_path(tmp, true);

    // A complete snapshot of this version that LATEST does not name: replace it (moved aside
    // first, since rename cannot replace a non-empty directory).
    if (fs::exists(final_dir, ec)) {
      const fs::path aside = root / (".old-" + final_name + "-" + std::to_string(::getpid()));
      fs::remove_all(aside, ec);
      fs::rename(final_dir, aside, ec);
      if (ec) detail::fail<io_error>("train::write_snapshot: cannot move the old '", final_dir.string(), "' aside");
      fs::remove_all(aside, ec);
    }
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0) impl::fail_errno("rename into", final_dir);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  impl::fsync_path(root, true);

  const fs::path pointer_tmp = root / "LATEST.tmp";
  const std::string pointer_text = final_name + "\n";
  impl::write_durable(pointer_tmp, std::as_bytes(std::span<const char>(pointer_text)));
  if (::rename(pointer_tmp.c_str(), (root / "LATEST").c_str()) != 0) impl::fail_errno("rename into", root / "LATEST");
  impl::fsync_path(root, true);

  // Clean up: temporaries of interrupted writers, and snapshots beyond `keep`.
  std::vector<std::pair<std::uint64_t, fs::path>> snapshots;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".tmp-snap-", 0) == 0 || name.rfind(".old-snap-", 0) == 0) {
      std::error_code ignored;
      fs::remove_all(entry.path(), ignored);
    } else if (const auto v = impl::parse_snapshot_dir_name(name); v && entry.is_directory()) {
      snapshots.emplace_back(*v, entry.path());
    }
  }
  if (options.keep > 0 && snapshots.size() > options.keep) {
    std::sort(snapshots.begin(), snapshots.end());
    std::size_t to_remove = snapshots.size() - options.keep;
    for (const auto& [v, path] : snapshots) {
      if (to_remove == 0) break;
      if (path.filename() == final_name) continue;
      std::error_code ignored;
      fs::remove_all(path, ignored);
      --to_remove;
    }
  }
  return final_dir;
}

//! @brief Reads and checks a snapshot directory: the manifest (format, version not newer than
//! this build's), and every listed file's size and CRC32.
//! @throws recpipe::io_error naming the directory, the file and the problem (missing, truncated
//! or extended, checksum mismatch, written by a newer recpipe, malformed manifest).
inline snapshot_info verify_snapshot(const std::filesystem::path& dir) {
  const std::string where = "train::load_snapshot: '" + dir.string() + "'";
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) detail::fail<io_error>(where, " is not a directory");
  const std::filesystem::path manifest_path = dir / "manifest.json";
  if (!std::filesystem::exists(manifest_path, ec)) detail::fail<io_error>(where, ": manifest.json is missing");
  const std::vector<std::byte> text = impl::read_all(manifest_path, where);
  snapshot_info info;
  info.directory = dir;
  try {
    const nlohmann::json m =
        nlohmann::json::parse(reinterpret_cast<const char*>(text.data()), reinterpret_cast<const char*>(text.data()) + text.size());
    if (m.value("format", std::string()) != "recpipe.snapshot")
      detail::fail<io_error>(where, ": manifest.json is not a recpipe snapshot manifest");
    info.format_version = impl::manifest_integer<std::int64_t>(m.at("format_version"), "format_version", where);
    if (info.format_version > snapshot_format_version)
      detail::fail<io_error>(where, ": written by a newer recpipe (snapshot format version ", info.format_version,
                             "; this build reads up to ", snapshot_format_version, ")");
    if (info.format_version < 1) detail::fail<io_error>(where, ": invalid format version ", info.format_version);
    info.model_version = impl::manifest_integer<std::uint64_t>(m.at("model_version"), "model_version", where);
    info.created = m.value("created", std::string());
    if (m.contains("created_unix_ms"))
      info.created_unix_ms = impl::manifest_integer<std::int64_t>(m.at("created_unix_ms"), "created_unix_ms", where);
    info.recpipe_version = m.value("recpipe_version", std::string());
    for (const auto& f : m.at("files")) {
      snapshot_file file;
      file.name = f.at("name").get<std::string>();
      file.kind = f.at("kind").get<std::string>();
      file.part = f.at("part").get<std::string>();
      file.size = impl::manifest_integer<std::uint64_t>(f.at("size"), "size", where);
      file.crc32 = impl::manifest_integer<std::uint32_t>(f.at("crc32"), "crc32", where);
      if (file.name.empty() || file.name.find('/') != std::string::npos || file.name[0] == '.')
        detail::fail<io_error>(where, ": manifest lists an invalid file name '", file.name, "'");
      info.files.push_back(std::move(file));
    }
  } catch (const nlohmann::json::exception& e) {
    detail::fail<io_error>(where, ": manifest.json is malformed (", e.what(), ")");
  }
  for (const snapshot_file& f : info.files) {
    const std::filesystem::path path = dir / f.name;
    if (!std::filesystem::exists(path, ec)) detail::fail<io_error>(where, ": file '", f.name, "' is missing");
    const std::uintmax_t size = std::filesystem::file_size(path, ec);
    if (ec || size != f.size)
      detail::fail<io_error>(where, ": file '", f.name, "' is ", size, " bytes but the manifest says ", f.size,
                             " (truncated or overwritten)");
    const std::vector<std::byte> bytes = impl::read_all(path, where);
    const std::uint32_t crc = impl::crc32_of(bytes);
    if (crc != f.crc32)
      detail::fail<io_error>(where, ": file '", f.name, "' fails its checksum (CRC32 ", crc, ", manifest ", f.crc32,
                             "): the file is corrupt");
  }
  return info;
}

//! @brief Restores the parts from a snapshot directory.
//!
//! verify_snapshot first (manifest, format version, every file's size and CRC32), then every
//! tensor is read and checked against its target (present, F32/I64, shape equal) into
//! temporaries; only when everything checks out are the targets written. A failed load throws
//! and leaves every target as it was (except that a dense optimizer that had never stepped is
//! bound to its parameter list, which creates its initial state, when everything but its own
//! state has checked out). Restored fixed tables are
//! marked all dirty (the next table_publisher publication is a full copy). Parts the snapshot
//! holds but `parts` does not name are ignored (e.g. a serving process restores tables only).
//! @returns the manifest.
//! @throws recpipe::io_error for a bad snapshot; recpipe::error naming the tensor and both shapes
//! for a shape mismatch, or a part missing from the snapshot.
//! @code
//! auto info = recpipe::train::load_snapshot("ckpt/snap-000000000042", parts);
//! @endcode
inline snapshot_info load_snapshot(const std::filesystem::path& dir, const snapshot_parts& parts) {
  snapshot_info info = verify_snapshot(dir);
  const std::string where = "train::load_snapshot: '" + dir.string() + "'";
  const auto file_of = [&](const std::string& kind, const std::string& part) -> const snapshot_file& {
    for (const snapshot_file& f : info.files)
      if (f.kind == kind && f.part == part) return f;
    detail::fail(where, ": the snapshot has no ", kind, " '", part, "'");
  };
  const auto open = [&](const snapshot_file& f) {
    return io::safetensors_file::from_bytes(impl::read_all(dir / f.name, where), (dir / f.name).string());
  };
  const auto tensor = [&](const io::safetensors_file& file, const std::string& label, const std::string& name,
                          const std::vector<std::size_t>& shape, io::dtype type) -> const io::tensor_view& {
    const io::tensor_view* t = file.find(name);
    if (t == nullptr) detail::fail(where, ": ", label, " has no tensor '", name, "'");
    if (t->type != type)
      detail::fail(where, ": ", label, " tensor '", name, "' is ", io::dtype_name(t->type), ", expected ",
                   io::dtype_name(type));
    if (!std::equal(t->shape.begin(), t->shape.end(), shape.begin(), shape.end()))
      detail::fail(where, ": ", label, " tensor '", name, "' has shape ", impl::shape_text(t->shape),
                   " but the target has shape ", impl::shape_text(shape));
    return *t;
  };
  const auto copy_out = [](const io::tensor_view& t) {
    const auto values = t.data<float>();
    return std::vector<float>(values.begin(), values.end());
  };
  struct row_optimizer_state {
    std::optional<std::int64_t> steps;
    std::optional<double> lr;
  };
  const auto row_meta = [&](const io::safetensors_file& file, row_optimizer& o, const std::string& label) {
    row_optimizer_state s;
    auto* b = dynamic_cast<basic_row_optimizer*>(&o);
    const auto kind = file.metadata_value("row_optimizer");
    if (b == nullptr || !kind) return s;
    if (*kind != b->name())
      detail::fail(where, ": ", label, " was trained with ", *kind, " but the target table uses ", b->name());
    try {
      s.steps = std::stoll(file.metadata_value("row_optimizer.steps").value_or("0"));
      s.lr = nlohmann::json::parse(file.metadata_value("row_optimizer.lr").value_or("null")).get<double>();
    } catch (const std::exception&) {
      detail::fail<io_error>(where, ": ", label, " has malformed row optimizer metadata");
    }
    return s;
  };

  // ---- stage everything ----
  std::vector<std::pair<parameter*, std::vector<float>>> param_values;
  for (const auto& g : parts.parameter_groups()) {
    const io::safetensors_file file = open(file_of("parameters", g.name));
    const std::string label = "parameter group '" + g.name + "'";
    for (parameter* p : g.params) param_values.emplace_back(p, copy_out(tensor(file, label, p->name, p->shape, io::dtype::f32)));
  }
  struct table_stage {
    fixed_table* table;
    std::vector<float> weights, state;
    row_optimizer_state meta;
  };
  std::vector<table_stage> table_values;
  for (const auto& t : parts.tables()) {
    const io::safetensors_file file = open(file_of("table", t.name));
    const std::string label = "table '" + t.name + "'";
    table_stage st{t.table, copy_out(tensor(file, label, "weights", {t.table->rows(), t.table->dim()}, io::dtype::f32)), {}, {}};
    if (t.table->state_size() > 0)
      st.state = copy_out(tensor(file, label, "state", {t.table->rows(), t.table->state_size()}, io::dtype::f32));
    else if (file.metadata_value("state_size").value_or("0") != "0")
      detail::fail(where, ": ", label, " holds optimizer state of ", *file.metadata_value("state_size"),
                   " floats per row but the target's row optimizer keeps none");
    st.meta = row_meta(file, t.table->optimizer(), label);
    table_values.push_back(std::move(st));
  }
  struct dynamic_stage {
    dynamic_table* table;
    std::vector<std::int64_t> ids;
    std::vector<float> weights, state;
    std::size_t state_size;
    row_optimizer_state meta;
  };
  std::vector<dynamic_stage> dynamic_values;
  for (const auto& t : parts.dynamic_tables()) {
    const io::safetensors_file file = open(file_of("dynamic_table", t.name));
    const std::string label = "dynamic table '" + t.name + "'";
    if (t.table->size() != 0)
      detail::fail(where, ": ", label, ": the target holds ", t.table->size(),
                   " rows; a dynamic table is restored into an empty table");
    const io::tensor_view* ids = file.find("ids");
    if (ids == nullptr || ids->rank() != 1) detail::fail(where, ": ", label, " has no 1-D tensor 'ids'");
    const std::size_t n = ids->shape[0];
    const std::size_t state_size = t.table->optimizer().state_size(t.table->dim());
    dynamic_stage st{t.table, {}, {}, {}, state_size, {}};
    const auto id_values = tensor(file, label, "ids", {n}, io::dtype::i64).data<std::int64_t>();
    st.ids.assign(id_values.begin(), id_values.end());
    st.weights = copy_out(tensor(file, label, "weights", {n, t.table->dim()}, io::dtype::f32));
    st.state = copy_out(tensor(file, label, "state", {n, state_size}, io::dtype::f32));
    st.meta = row_meta(file, t.table->optimizer(), label);
    dynamic_values.push_back(std::move(st));
  }
  std::vector<std::pair<cpu::hnsw_index*, cpu::hnsw_index>> index_values;
  for (const auto& x : parts.indexes()) {
    const snapshot_file& f = file_of("index", x.name);
    cpu::hnsw_index loaded = cpu::hnsw_index::load(dir / f.name);
    if (loaded.dim() != x.index->dim() || loaded.metric() != x.index->metric())
      detail::fail(where, ": index '", x.name, "' has dim ", loaded.dim(), " in the snapshot but the target has dim ",
                   x.index->dim(), " (or another metric)");
    index_values.emplace_back(x.index, std::move(loaded));
  }

  // Dense optimizers last: binding a fresh optimizer (to list its state) is the one change
  // staging makes, so it happens only once everything else has checked out.
  struct optimizer_stage {
    dense_optimizer* optimizer;
    std::vector<std::vector<float>> state;
    std::int64_t steps;
    double lr;
  };
  std::vector<optimizer_stage> optimizer_values;
  for (const auto& o : parts.optimizers()) {
    const io::safetensors_file file = open(file_of("optimizer", o.name));
    const std::string label = "optimizer '" + o.name + "'";
    if (file.metadata_value("optimizer").value_or("") != o.optimizer->name())
      detail::fail(where, ": ", label, " is ", file.metadata_value("optimizer").value_or("(unknown)"),
                   " in the snapshot but the target is ", o.optimizer->name());
    optimizer_stage st{o.optimizer, {}, 0, 0.0};
    try {
      st.steps = std::stoll(file.metadata_value("steps").value_or("0"));
      st.lr = nlohmann::json::parse(file.metadata_value("lr").value_or("null")).get<double>();
    } catch (const std::exception&) {
      detail::fail<io_error>(where, ": ", label, " has malformed metadata (steps, lr)");
    }
    if (st.steps < 0) detail::fail<io_error>(where, ": ", label, " has a negative step count");
    if (file.metadata_value("bound").value_or("0") == "1") {
      o.optimizer->bind(o.params);  // the target's state list, to compare with the snapshot's
      o.optimizer->for_each_state([&](const std::string& name, std::span<float> values) {
        st.state.push_back(copy_out(tensor(file, label, name, {values.size()}, io::dtype::f32)));
      });
    }
    optimizer_values.push_back(std::move(st));
  }
  // ---- commit (nothing below throws for a checked snapshot) ----
  for (auto& [p, values] : param_values) std::copy(values.begin(), values.end(), p->value.begin());
  for (auto& st : optimizer_values) {
    std::size_t i = 0;
    st.optimizer->for_each_state([&](const std::string&, std::span<float> values) {
      std::copy(st.state[i].begin(), st.state[i].end(), values.begin());
      ++i;
    });
    st.optimizer->set_steps(st.steps);
    st.optimizer->set_lr(st.lr);
  }
  const auto restore_row_meta = [](row_optimizer& o, const row_optimizer_state& s) {
    if (auto* b = dynamic_cast<basic_row_optimizer*>(&o)) {
      if (s.steps) b->set_steps(*s.steps);
      if (s.lr) b->set_lr(*s.lr);
    }
  };
  for (auto& st : table_values) {
    const std::size_t dim = st.table->dim(), state_size = st.table->state_size();
    for (std::size_t r = 0; r < st.table->rows(); ++r) {
      std::copy_n(st.weights.data() + r * dim, dim, st.table->weights().row(r).begin());
      if (state_size > 0) std::copy_n(st.state.data() + r * state_size, state_size, st.table->state().row(r).begin());
    }
    st.table->mark_all_dirty();
    restore_row_meta(st.table->optimizer(), st.meta);
  }
  for (auto& st : dynamic_values) {
    const std::size_t dim = st.table->dim();
    for (std::size_t r = 0; r < st.ids.size(); ++r)
      st.table->load_row(st.ids[r], std::span<const float>(st.weights.data() + r * dim, dim),
                         std::span<const float>(st.state.data() + r * st.state_size, st.state_size));
    restore_row_meta(st.table->optimizer(), st.meta);
  }
  for (auto& [target, loaded] : index_values) *target = std::move(loaded);
  return info;
}

//! @brief load_snapshot of the directory the root's LATEST names (see latest_snapshot).
//! @code
//! auto info = recpipe::train::load_latest_snapshot("ckpt", parts);   // info.model_version
//! @endcode
inline snapshot_info load_latest_snapshot(const std::filesystem::path& root, const snapshot_parts& parts) {
  return load_snapshot(latest_snapshot(root), parts);
}

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
