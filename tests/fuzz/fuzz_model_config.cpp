// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the model configs (JSON stored as "recpipe.config" in a safetensors file's
// metadata) and the snapshot manifest (train/snapshot.hpp, manifest.json).
//
// The input is the JSON text. It is stored, as a model file would store it, under every model
// kind's metadata keys of one in-memory safetensors file; each kind's config_from_metadata +
// from_json then parses it (mlp, two_tower, dlrm, dcn_v2, gru4rec, session_transformer). An
// accepted config must survive to_json -> from_json unchanged. The same text is then written as
// the manifest.json of a snapshot directory and verified (verify_snapshot).
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include <recpipe/io/safetensors.hpp>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/models/dcn_v2.hpp>
#include <recpipe/models/dlrm.hpp>
#include <recpipe/models/gru4rec.hpp>
#include <recpipe/models/mlp.hpp>
#include <recpipe/models/session_transformer.hpp>
#include <recpipe/models/two_tower.hpp>
#include <recpipe/train/snapshot.hpp>

#include "fuzz_common.hpp"

namespace models = recpipe::models;

namespace {

template <class Config>
void parse_config(const recpipe::io::safetensors_file* file, const nlohmann::json* direct, const char* kind) {
  try {
    const nlohmann::json j = file ? models::impl::config_from_metadata(*file, kind, std::string(kind) + ".") : *direct;
    const Config config = Config::from_json(j);
    const std::string once = config.to_json().dump();
    const std::string twice = Config::from_json(config.to_json()).to_json().dump();
    recpipe_fuzz::expect(once == twice, "a parsed config survives to_json -> from_json");
    if constexpr (std::is_same_v<Config, models::session_transformer_config>)
      recpipe_fuzz::expect(std::isfinite(config.eps) && std::isfinite(config.embedding_scale),
                           "an accepted config has finite float fields");
  } catch (const recpipe::error&) {
  }
}

void parse_all(const recpipe::io::safetensors_file* file, const nlohmann::json* direct) {
  parse_config<models::mlp_config>(file, direct, "mlp");
  parse_config<models::two_tower_config>(file, direct, "two_tower");
  parse_config<models::dlrm_config>(file, direct, "dlrm");
  parse_config<models::dcn_v2_config>(file, direct, "dcn_v2");
  parse_config<models::gru4rec_config>(file, direct, "gru4rec");
  parse_config<models::session_transformer_config>(file, direct, "session_transformer");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(recpipe_fuzz::as_text(data, size));
  recpipe::io::safetensors_writer writer;
  for (const char* kind : {"mlp", "two_tower", "dlrm", "dcn_v2", "gru4rec", "session_transformer"}) {
    writer.set_metadata(std::string(kind) + ".recpipe.model", kind);
    writer.set_metadata(std::string(kind) + ".recpipe.config", text);
  }
  std::vector<std::byte> image;
  try {
    image = writer.to_bytes();
  } catch (const recpipe::error&) {
    // Text that is not UTF-8 cannot be stored in safetensors metadata: parse it directly, as a
    // config given in code would be.
  }
  if (!image.empty()) {
    const auto file = recpipe::io::safetensors_file::from_bytes(std::move(image), "fuzz");
    parse_all(&file, nullptr);
  } else {
    nlohmann::json direct;
    try {
      direct = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception&) {
      return 0;
    }
    parse_all(nullptr, &direct);
  }

  // The snapshot manifest: a directory holding only manifest.json (so a listed file other than
  // the manifest itself is missing).
  const std::filesystem::path dir = recpipe_fuzz::temp_path("snapshot");
  std::filesystem::create_directories(dir);
  recpipe_fuzz::write_file(dir / "manifest.json", data, size);
  try {
    const recpipe::train::snapshot_info info = recpipe::train::verify_snapshot(dir);
    recpipe_fuzz::expect(info.format_version >= 1, "a verified manifest has a valid format version");
  } catch (const recpipe::error&) {
  }
  return 0;
}
