// SPDX-License-Identifier: Apache-2.0
// recpipe package test: a downstream program built against an installed recpipe (ctest and Conan).

// Once <recpipe/recpipe.hpp> ships, that one include replaces the three after it.
#if __has_include(<recpipe/recpipe.hpp>)
#include <recpipe/recpipe.hpp>
#endif
#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/topk.hpp>
#include <recpipe/version.hpp>

// The transitive dependencies must reach a consumer through recpipe::recpipe alone.
#include <Eigen/Core>
#include <hnswlib/hnswlib.h>
#if defined(RECPIPE_HAS_CBLAS)
#include <cblas.h>
#endif

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "recpipe consumer: FAILED: %s\n", what);
    ++failures;
  }
}

using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace

int main() {
#if defined(RECPIPE_CONSUMER_EXPECTED_VERSION)
  // The header the compiler saw must belong to the package find_package() chose.
  check(std::string(RECPIPE_VERSION_STRING) == RECPIPE_CONSUMER_EXPECTED_VERSION,
        "RECPIPE_VERSION_STRING matches the version find_package() reported");
#endif
  check(std::string(RECPIPE_VERSION_STRING) ==
            std::to_string(RECPIPE_VERSION_MAJOR) + "." + std::to_string(RECPIPE_VERSION_MINOR) + "." +
                std::to_string(RECPIPE_VERSION_PATCH),
        "RECPIPE_VERSION_STRING agrees with the MAJOR/MINOR/PATCH macros");

  // Five items; items 0, 1 and 4 tie for second place below. Four dimensions, not three:
  // hnswlib 0.6.2 stores each label right after the vector, so an odd dimension misaligns it
  // (UBSan reports bruteforce.h:96).
  constexpr std::size_t n = 5, dim = 4;
  const std::array<float, n * dim> values = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 1, 0, 0, 0.5f, 0.5f, 0.5f, 0};
  recpipe::matrix<float> items(std::vector<float>(values.begin(), values.end()), n, dim);
  const recpipe::matrix_view<const float> view = items.view();
  check(view.rows() == n && view.cols() == dim && view(3, 1) == 1.0f && view(3, 2) == 0.0f,
        "matrix_view indexing");
  check(view.middle_rows(3, 2).row(1)[2] == 0.5f, "matrix_view::middle_rows");
  const std::array<float, dim> user = {1, 1, 0, 0};

  // Scores with Eigen over the recpipe buffer (zero copy), then the k best with recpipe.
  std::vector<float> scores(n);
  Eigen::Map<Eigen::VectorXf>(scores.data(), n) =
      Eigen::Map<const row_major>(view.data(), n, dim) * Eigen::Map<const Eigen::VectorXf>(user.data(), dim);
  check(scores == std::vector<float>{1, 1, 0, 2, 1}, "Eigen scores of the recpipe matrix");
#if defined(RECPIPE_HAS_CBLAS)
  std::vector<float> blas_scores(n, -1.0f);
  cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), static_cast<int>(dim), 1.0f, view.data(),
              static_cast<int>(dim), user.data(), 1, 0.0f, blas_scores.data(), 1);
  check(blas_scores == scores, "OpenBLAS cblas_sgemv agrees with Eigen");
#endif

  std::array<recpipe::id_type, 3> best_ids{};
  std::array<float, 3> best_scores{};
  const std::size_t written = recpipe::cpu::top_k(scores, {}, 3, best_ids, best_scores);
  check(written == 3, "top_k writes k entries");
  check((best_ids == std::array<recpipe::id_type, 3>{3, 0, 1}), "top_k order: score desc, then id asc");
  check((best_scores == std::array<float, 3>{2, 1, 1}), "top_k scores");

  // top_k_at_most with k > n keeps n (top_k itself names the mistake); NaN sorts last, -inf before it.
  const std::array<float, 3> odd = {std::numeric_limits<float>::quiet_NaN(), 0.5f,
                                    -std::numeric_limits<float>::infinity()};
  const std::array<recpipe::id_type, 3> odd_ids = {7, 3, 9};
  std::array<recpipe::id_type, 8> all_ids{};
  std::array<float, 8> all_scores{};
  check(recpipe::cpu::top_k_at_most(odd, odd_ids, 8, all_ids, all_scores) == 3, "top_k_at_most with k > n keeps n");
  check(all_ids[0] == 3 && all_ids[1] == 9 && all_ids[2] == 7 && std::isnan(all_scores[2]),
        "top_k puts NaN last");

  // Bad input throws recpipe::error naming the component.
  try {
    const std::array<recpipe::id_type, 2> short_ids = {1, 2};
    recpipe::cpu::top_k(scores, short_ids, 3, best_ids, best_scores);
    check(false, "top_k rejects ids of the wrong size");
  } catch (const recpipe::error& e) {
    check(std::string(e.what()).rfind("recpipe: top_k", 0) == 0, "the error message names top_k");
  }

  // hnswlib (exact search) agrees on the best item.
  hnswlib::InnerProductSpace space(dim);
  hnswlib::BruteforceSearch<float> index(&space, n);
  for (std::size_t i = 0; i < n; ++i) index.addPoint(view.row(i).data(), i);
  auto found = index.searchKnn(user.data(), 1);
  check(found.size() == 1 && static_cast<recpipe::id_type>(found.top().second) == best_ids[0],
        "hnswlib's nearest item is top_k's first");

  if (failures != 0) return 1;
  std::printf("recpipe %s consumer: all checks passed\n", RECPIPE_VERSION_STRING);
  return 0;
}
