// SPDX-License-Identifier: Apache-2.0
// Writes the seed corpus of fuzz_hnsw_index (corpus/hnsw_index/): small indexes saved by
// hnsw_index::save, with the 80-byte recpipe header replaced by the harness's control and
// operations bytes (the harness rebuilds the header). Run once by hand when the format changes:
//   g++ -std=c++20 -O1 -I include -isystem /usr/include/eigen3 tests/fuzz/make_hnsw_seeds.cpp -o /tmp/seeds && /tmp/seeds tests/fuzz/corpus/hnsw_index
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <recpipe/cpu/hnsw_index.hpp>

namespace {
void emit(const recpipe::cpu::hnsw_index& index, unsigned char control, unsigned char ops, const std::filesystem::path& out) {
  const std::filesystem::path tmp = std::filesystem::temp_directory_path() / "recpipe-make-hnsw-seed.hnsw";
  index.save(tmp);
  std::ifstream in(tmp, std::ios::binary);
  std::vector<char> file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream o(out, std::ios::binary);
  o.put(static_cast<char>(control));
  o.put(static_cast<char>(ops));
  o.write(file.data() + 80, static_cast<std::streamsize>(file.size() - 80));
  std::filesystem::remove(tmp);
}
}  // namespace

int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : ".";
  std::filesystem::create_directories(dir);
  struct spec { std::size_t dim, m, n, removed; recpipe::metric kind; unsigned char ops; const char* name; };
  for (const spec& s : {spec{2, 4, 12, 3, recpipe::metric::inner_product, 0x21, "ip_dim2_m4_12"},
                        spec{1, 2, 8, 6, recpipe::metric::l2, 0x13, "l2_dim1_m2_8_churned"},
                        spec{4, 3, 30, 0, recpipe::metric::l2, 0x47, "l2_dim4_m3_30"},
                        spec{3, 2, 0, 0, recpipe::metric::inner_product, 0x05, "ip_dim3_empty"},
                        spec{2, 5, 5, 5, recpipe::metric::inner_product, 0x99, "ip_dim2_all_removed"}}) {
    recpipe::cpu::hnsw_index index(s.dim, s.kind, 16, s.m, 8, 7);
    std::vector<float> v(s.dim);
    for (std::size_t i = 0; i < s.n; ++i) {
      for (std::size_t j = 0; j < s.dim; ++j) v[j] = static_cast<float>((i * 5 + j * 3) % 7) - 3.0f;
      index.add(static_cast<recpipe::id_type>(i), v);
    }
    for (std::size_t i = 0; i < s.removed; ++i) index.remove(static_cast<recpipe::id_type>(i * 2 % std::max<std::size_t>(s.n, 1)));
    const unsigned char kind_bit = s.kind == recpipe::metric::l2 ? 1 : 0;
    // Repaired mode: bits 4-7 carry dim - 1; raw mode (bit 1) reads dim from the body.
    emit(index, static_cast<unsigned char>(kind_bit | ((s.dim - 1) << 4)), s.ops, dir / (std::string(s.name) + "_repaired"));
    emit(index, static_cast<unsigned char>(kind_bit | 2), s.ops, dir / (std::string(s.name) + "_raw"));
  }
}
