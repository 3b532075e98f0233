// SPDX-License-Identifier: Apache-2.0
// recpipe tests: train/snapshot.hpp: round trip (bit-identical state, identical continued
// training), the directory layout and LATEST, and every bad snapshot's clear error with the
// targets left untouched.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <recpipe/train/snapshot.hpp>

#include "common/snapshot_fixtures.hpp"

namespace train = recpipe::train;
namespace fs = std::filesystem;
using recpipe::testing::flatten;
using recpipe::testing::same_bits;
using recpipe::testing::snapshot_state;
using recpipe::testing::temp_dir;

namespace {
std::string message_of(auto&& f) {
  try {
    f();
  } catch (const recpipe::error& e) {
    return e.what();
  }
  return "(no error)";
}
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void flip_byte(const fs::path& path, std::size_t at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x10);
  f.seekp(static_cast<std::streamoff>(at));
  f.write(&c, 1);
}
}  // namespace

TEST_CASE("snapshot: restore is bit-identical and training continues exactly as without the restart") {
  temp_dir root("snapshot-roundtrip");
  snapshot_state a;
  for (int t = 0; t < 4; ++t) a.step(t);
  const fs::path dir = train::write_snapshot(root.path, 4, a.parts());
  CHECK(dir == root.path / "snap-000000000004");
  CHECK(train::latest_snapshot(root.path) == dir);
  const std::vector<float> at_snapshot = flatten(a);

  // A "new process": fresh objects of the same shapes (different initial values), restored.
  snapshot_state b(99);
  CHECK_FALSE(same_bits(flatten(b), at_snapshot));
  const train::snapshot_info info = train::load_latest_snapshot(root.path, b.parts());
  CHECK(info.model_version == 4);
  CHECK(info.format_version == train::snapshot_format_version);
  CHECK(info.files.size() == 5);
  CHECK(same_bits(flatten(b), at_snapshot));
  CHECK(b.items.take_dirty_rows().all);  // the next publication is a full copy

  for (int t = 4; t < 8; ++t) {
    a.step(t);
    b.step(t);
  }
  CHECK(same_bits(flatten(a), flatten(b)));
}

TEST_CASE("snapshot: manifest, LATEST and pruning of old snapshots") {
  temp_dir root("snapshot-layout");
  snapshot_state s;
  for (std::uint64_t v = 1; v <= 5; ++v) {
    s.step(static_cast<int>(v));
    train::write_snapshot(root.path, v * 10, s.parts(), {.keep = 2});
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root.path)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"LATEST", "snap-000000000040", "snap-000000000050"});
  std::ifstream latest(root.path / "LATEST");
  std::string line;
  std::getline(latest, line);
  CHECK(line == "snap-000000000050");

  std::ifstream in(root.path / "snap-000000000050" / "manifest.json");
  const nlohmann::json m = nlohmann::json::parse(in);
  CHECK(m["format"] == "recpipe.snapshot");
  CHECK(m["format_version"] == 1);
  CHECK(m["model_version"] == 50);
  CHECK(m["created"].get<std::string>().size() == 20);
  std::vector<std::string> files;
  for (const auto& f : m["files"]) {
    files.push_back(f["name"]);
    CHECK(f["size"].get<std::uint64_t>() == fs::file_size(root.path / "snap-000000000050" / f["name"].get<std::string>()));
  }
  CHECK(files == std::vector<std::string>{"params.model.safetensors", "optimizer.adam.safetensors",
                                          "table.items.safetensors", "dynamic_table.users.safetensors",
                                          "index.items.hnsw"});
  // The tensors are ordinary safetensors: readable by name.
  auto params = recpipe::io::safetensors_file::open(root.path / "snap-000000000050" / "params.model.safetensors");
  CHECK(params.at("layer.weight").shape.size() == 2);

  // Rewriting the latest version is refused; an older one loads by directory.
  CHECK(message_of([&] { train::write_snapshot(root.path, 50, s.parts()); }) ==
        "recpipe: train::write_snapshot: snapshot version 50 is already the latest in '" + root.path.string() +
            "' (use a new version number)");
  snapshot_state older;
  CHECK(train::load_snapshot(root.path / "snap-000000000040", older.parts()).model_version == 40);
}

TEST_CASE("snapshot: missing, truncated and corrupt files, a newer format and bad pointers get clear errors") {
  temp_dir root("snapshot-bad");
  snapshot_state s;
  s.step(0);
  const fs::path dir = train::write_snapshot(root.path, 7, s.parts());
  snapshot_state target(5);
  const std::vector<float> untouched = flatten(target);
  const auto load = [&] { train::load_snapshot(dir, target.parts()); };
  const auto with_backup = [&](const std::string& file, auto&& damage, const std::string& expected) {
    const fs::path path = dir / file, backup = root.path / "backup";
    fs::copy_file(path, backup, fs::copy_options::overwrite_existing);
    damage(path);
    const std::string msg = message_of(load);
    CHECK_MESSAGE(contains(msg, expected), msg);
    CHECK(same_bits(flatten(target), untouched));  // a failed load changes nothing
    fs::copy_file(backup, path, fs::copy_options::overwrite_existing);
  };
  const std::string where = "recpipe: train::load_snapshot: '" + dir.string() + "'";

  with_backup("table.items.safetensors", [](const fs::path& p) { fs::remove(p); },
              where + ": file 'table.items.safetensors' is missing");
  with_backup("params.model.safetensors", [](const fs::path& p) { fs::resize_file(p, fs::file_size(p) - 3); },
              "file 'params.model.safetensors' is ");
  with_backup("params.model.safetensors", [](const fs::path& p) { fs::resize_file(p, fs::file_size(p) - 3); },
              "bytes but the manifest says");
  with_backup("dynamic_table.users.safetensors", [](const fs::path& p) { flip_byte(p, fs::file_size(p) - 5); },
              where + ": file 'dynamic_table.users.safetensors' fails its checksum");
  with_backup("index.items.hnsw", [](const fs::path& p) { flip_byte(p, 100); },
              "file 'index.items.hnsw' fails its checksum");
  with_backup("manifest.json", [](const fs::path& p) { fs::remove(p); }, where + ": manifest.json is missing");
  with_backup("manifest.json", [](const fs::path& p) { std::ofstream(p) << "{ not json"; },
              where + ": manifest.json is malformed");
  with_backup("manifest.json",
              [](const fs::path& p) {
                std::ifstream in(p);
                nlohmann::json m = nlohmann::json::parse(in);
                in.close();
                m["format_version"] = 2;
                std::ofstream(p) << m.dump();
              },
              where + ": written by a newer recpipe (snapshot format version 2; this build reads up to 1)");
  CHECK(message_of(load) == "(no error)");  // every damage was undone: it loads again

  // LATEST problems.
  temp_dir empty("snapshot-empty");
  CHECK(message_of([&] { train::load_latest_snapshot(empty.path, target.parts()); }) ==
        "recpipe: train::latest_snapshot: '" + empty.path.string() + "' holds no snapshot (no LATEST file)");
  std::ofstream(empty.path / "LATEST") << "snap-000000000003\n";
  CHECK(contains(message_of([&] { train::latest_snapshot(empty.path); }), "names 'snap-000000000003', which does not exist"));
  std::ofstream(empty.path / "LATEST") << "../../etc\n";
  CHECK(contains(message_of([&] { train::latest_snapshot(empty.path); }), "does not name a snapshot directory"));
  // A damaged LATEST does not stop the next snapshot.
  train::write_snapshot(empty.path, 8, s.parts());
  CHECK(train::latest_snapshot(empty.path).filename() == "snap-000000000008");
}

TEST_CASE("snapshot: shapes, kinds and parts that do not match the target are named, and nothing changes") {
  temp_dir root("snapshot-shapes");
  snapshot_state s;
  s.step(0);
  const fs::path dir = train::write_snapshot(root.path, 1, s.parts());
  const std::string where = "recpipe: train::load_snapshot: '" + dir.string() + "': ";

  {  // a dense parameter of another shape; the fixed table (staged earlier or later) stays too
    snapshot_state t(3);
    t.w = train::parameter("layer.weight", {4, 5});
    const std::vector<float> before = flatten(t);
    CHECK(message_of([&] { train::load_snapshot(dir, t.parts()); }) ==
          where + "parameter group 'model' tensor 'layer.weight' has shape [4, 3] but the target has shape [4, 5]");
    CHECK(same_bits(flatten(t), before));
  }
  {  // a table with more rows
    snapshot_state t(3, 80);
    const std::vector<float> before = flatten(t);
    CHECK(message_of([&] { train::load_snapshot(dir, t.parts()); }) ==
          where + "table 'items' tensor 'weights' has shape [64, 4] but the target has shape [80, 4]");
    CHECK(same_bits(flatten(t), before));
  }
  {  // another width everywhere: the first mismatch is named
    snapshot_state t(3, 64, 6);
    CHECK(contains(message_of([&] { train::load_snapshot(dir, t.parts()); }),
                   "tensor 'weights' has shape [64, 4] but the target has shape [64, 6]"));
  }
  {  // a part the snapshot lacks
    snapshot_state t(3);
    train::snapshot_parts parts = t.parts();
    train::fixed_table extra({.rows = 3, .dim = 2, .name = "extra"}, std::make_shared<train::row_sgd>(0.1));
    parts.add_table("extra", extra);
    CHECK(message_of([&] { train::load_snapshot(dir, parts); }) == where + "the snapshot has no table 'extra'");
  }
  {  // another row optimizer than the one that trained the table
    snapshot_state t(3);
    train::fixed_table other({.rows = 64, .dim = 4, .name = "items"}, std::make_shared<train::adagrad_rows>());
    train::snapshot_parts parts;
    parts.add_table("items", other);
    CHECK(message_of([&] { train::load_snapshot(dir, parts); }) ==
          where + "table 'items' tensor 'state' has shape [64, 8] but the target has shape [64, 4]");
  }
  {  // a dense optimizer of another kind
    snapshot_state t(3);
    train::sgd sgd({.lr = 0.1, .momentum = 0.9});
    train::snapshot_parts parts;
    parts.add_optimizer("adam", sgd, t.params());
    CHECK(message_of([&] { train::load_snapshot(dir, parts); }) ==
          where + "optimizer 'adam' is train::adam in the snapshot but the target is train::sgd");
  }
  {  // a dynamic table must be restored into an empty one
    snapshot_state t(3);
    t.users.load_row(5, std::vector<float>(4, 1.0f));
    CHECK(message_of([&] { train::load_snapshot(dir, t.parts()); }) ==
          where + "dynamic table 'users': the target holds 1 rows; a dynamic table is restored into an empty table");
  }
  {  // an index of another dimension
    snapshot_state t(3);
    recpipe::cpu::hnsw_index wide(8);
    train::snapshot_parts parts;
    parts.add_index("items", wide);
    CHECK(message_of([&] { train::load_snapshot(dir, parts); }) ==
          where + "index 'items' has dim 4 in the snapshot but the target has dim 8 (or another metric)");
    CHECK(wide.size() == 0);
  }
  // Bad part names.
  train::snapshot_parts parts;
  train::fixed_table table({.rows = 3, .dim = 2, .name = "t"}, std::make_shared<train::row_sgd>(0.1));
  CHECK(message_of([&] { parts.add_table("../x", table); }) ==
        "recpipe: train::snapshot_parts: table name '../x' must be 1-100 letters, digits, '_', '-' or '.' (not "
        "starting with '.')");
  parts.add_table("t", table);
  CHECK(message_of([&] { parts.add_table("t", table); }) == "recpipe: train::snapshot_parts: table name 't' is used twice");
}

TEST_CASE("snapshot: a write that fails leaves the previous snapshot latest and no temporary behind") {
  temp_dir root("snapshot-failed-write");
  snapshot_state s;
  s.step(0);
  train::write_snapshot(root.path, 1, s.parts());
  // A parameter whose value does not match its shape makes the safetensors writer throw mid-write.
  train::parameter broken("broken", {3, 3});
  broken.value.resize(2);
  train::snapshot_parts parts = s.parts();
  parts.add_parameters("bad", {&broken});
  CHECK(contains(message_of([&] { train::write_snapshot(root.path, 2, parts); }), "tensor 'broken'"));
  CHECK(train::latest_snapshot(root.path).filename() == "snap-000000000001");
  std::size_t entries = 0;
  for (const auto& e : fs::directory_iterator(root.path)) {
    (void)e;
    ++entries;
  }
  CHECK(entries == 2);  // LATEST and snap-000000000001
}
