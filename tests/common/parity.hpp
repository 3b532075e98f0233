// SPDX-License-Identifier: Apache-2.0
// Shared by the PyTorch parity programs (tests/unit/*/*parity*.cpp): opening a fixture folder that
// a tools/reference_*.py script wrote (or skipping with exit code 77 when it is incomplete), reading
// tensors, comparing with a stated error measure, and the program's main().
//
// A parity program is `<program> <case> <reference folder>`; exit 0 pass, 1 fail, 2 usage, 77 skipped.
// The scripts (tools/fixture_common.py) delete the folder's COMPLETE marker first and write it last,
// so a folder from an earlier run, or one a script left half-written, never reads as "passed":
// without the marker the program exits 77 and ctest reports the test as skipped.
#pragma once

#include <recpipe/core/matrix.hpp>
#include <recpipe/io/safetensors.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace recpipe::testing::parity {

//! Exit code that ctest's SKIP_RETURN_CODE reads as "skipped".
inline constexpr int skip_code = 77;

//! How a result is compared with its reference, per tensor:
//!   error = max_i |got_i - ref_i| (a NaN, or a size/shape mismatch, counts as infinite),
//!   peak  = max_i |ref_i|,
//!   absolute: error <= tolerance;
//!   relative: error / max(floor, peak) <= tolerance (relative to the tensor's magnitude, not
//!             element-wise: an element-wise ratio is meaningless where a float sum cancels to ~0).
//! Every measure also requires peak > 0: closeness to an all-zero reference proves nothing.
//! @code
//!   const auto m = error_measure::relative(1e-6, 1.0);  // max abs error <= 1e-6 max(1, max|ref|)
//! @endcode
struct error_measure {
  bool is_relative = true;
  double tolerance = 0.0;
  double floor = 0.0;  // relative only: the denominator is max(floor, peak)

  static constexpr error_measure absolute(double tolerance) { return {false, tolerance, 0.0}; }
  // The default floor only keeps the division defined; a zero peak fails anyway.
  static constexpr error_measure relative(double tolerance, double floor = 1e-30) { return {true, tolerance, floor}; }

  double scaled(double error, double peak) const { return is_relative ? error / std::max(floor, peak) : error; }

  std::string describe() const {
    char text[160];
    if (is_relative)
      std::snprintf(text, sizeof text, "max|got - ref| / max(%g, max|ref|) <= %g per tensor", floor, tolerance);
    else
      std::snprintf(text, sizeof text, "max|got - ref| <= %g per tensor", tolerance);
    return text;
  }
};

//! Whether report::check prints a passing comparison (a failing one is always printed).
enum class show { always, failures };

//! Collects the comparisons of one case; prints one line per tensor and the summary.
//! @code
//!   report r(error_measure::relative(1e-5));
//!   r.check("grad.x", dx, file.at("grad.x").to_float());
//!   r.summary("linear_relu");  // "linear_relu: 1 tensors compared, worst rel error ..."; r.ok()
//! @endcode
class report {
 public:
  explicit report(error_measure measure) : measure_(measure) {}

  const error_measure& measure() const { return measure_; }
  bool ok() const { return ok_ && compared_ > 0; }
  double worst() const { return worst_; }
  std::size_t compared() const { return compared_; }

  //! Compares `got` with `ref` element by element (flat; sizes must match); returns whether it passed.
  bool check(const std::string& what, std::span<const float> got, std::span<const float> ref, show when = show::always) {
    double peak = 0.0, error = got.size() == ref.size() ? 0.0 : INFINITY;
    for (std::size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
      peak = std::max(peak, std::fabs(static_cast<double>(ref[i])));
      const double d = std::fabs(static_cast<double>(got[i]) - static_cast<double>(ref[i]));
      error = std::isnan(d) ? INFINITY : std::max(error, d);
    }
    return record(what, std::to_string(ref.size()) + " values", peak, error, when);
  }

  //! The same for matrices: the shapes must match too.
  bool check(const std::string& what, matrix_view<const float> got, matrix_view<const float> ref,
             show when = show::always) {
    double peak = 0.0, error = got.rows() == ref.rows() && got.cols() == ref.cols() ? 0.0 : INFINITY;
    for (std::size_t r = 0; r < std::min(got.rows(), ref.rows()); ++r)
      for (std::size_t c = 0; c < std::min(got.cols(), ref.cols()); ++c) {
        peak = std::max(peak, std::fabs(static_cast<double>(ref(r, c))));
        const double d = std::fabs(static_cast<double>(got(r, c)) - static_cast<double>(ref(r, c)));
        error = std::isnan(d) ? INFINITY : std::max(error, d);
      }
    return record(what, std::to_string(ref.rows()) + " x " + std::to_string(ref.cols()), peak, error, when);
  }

  //! A failure the comparisons above cannot express (e.g. "a row outside the batch changed").
  void fail(const std::string& message) {
    std::printf("  FAIL: %s\n", message.c_str());
    ok_ = false;
  }

  //! Prints "<name>: N tensors compared, worst <abs|rel> error W (tolerance T)"; a case that
  //! compared nothing fails.
  void summary(const std::string& name) const {
    if (compared_ == 0) std::printf("  FAIL: %s compared no tensor\n", name.c_str());
    std::printf("%s: %zu tensors compared, worst %s error %.3g (tolerance %g)\n", name.c_str(), compared_,
                measure_.is_relative ? "rel" : "abs", worst_, measure_.tolerance);
  }

 private:
  bool record(const std::string& what, const std::string& size, double peak, double error, show when) {
    const double scaled = measure_.scaled(error, peak);
    const bool pass = scaled <= measure_.tolerance && peak > 0.0;
    worst_ = std::isnan(scaled) ? INFINITY : std::max(worst_, scaled);
    ++compared_;
    if (when == show::always || !pass) {
      std::printf("  %-44s %12s  max|ref| %-10.4g max abs error %-9.3g", what.c_str(), size.c_str(), peak, error);
      if (measure_.is_relative) std::printf(" rel %-9.3g", scaled);
      std::printf(" %s\n", pass ? "ok" : "FAIL");
    }
    ok_ = ok_ && pass;
    return pass;
  }

  error_measure measure_;
  bool ok_ = true;
  double worst_ = 0.0;
  std::size_t compared_ = 0;
};

//! A folder of fixtures written by one tools/reference_*.py script.
//! @code
//!   const fixture f = fixture::open_or_skip(argv[2], "tools/reference_backward.py");  // exit 77 if incomplete
//!   const io::safetensors_file file = f.open("mlp");                                  // <folder>/mlp.safetensors
//! @endcode
class fixture {
 public:
  //! Exits with skip_code, saying which script to run, when `folder` has no COMPLETE marker.
  static fixture open_or_skip(const std::filesystem::path& folder, std::string_view script) {
    if (!std::filesystem::exists(folder / "COMPLETE")) {
      std::printf("SKIPPED: %s has no complete reference fixture (%.*s needs python3-torch)\n", folder.string().c_str(),
                  static_cast<int>(script.size()), script.data());
      std::fflush(stdout);
      std::exit(skip_code);
    }
    return fixture(folder);
  }

  const std::filesystem::path& folder() const { return folder_; }
  std::filesystem::path path(const std::string& stem) const { return folder_ / (stem + ".safetensors"); }
  io::safetensors_file open(const std::string& stem) const { return io::safetensors_file::open(path(stem)); }

 private:
  explicit fixture(std::filesystem::path folder) : folder_(std::move(folder)) {}
  std::filesystem::path folder_;
};

//! Tensor `name` of `file` as floats (F32 copied, F16/BF16/integers converted).
inline std::vector<float> floats(const io::safetensors_file& file, const std::string& name) {
  return file.at(name).to_float();
}

//! The main() of a parity program: `<program> <case> <reference folder>`. Skips (exit 77) when the
//! folder is incomplete, prints the case's measure, runs `body`, then the summary and PASSED or
//! FAILED. An exception is a failure. Returns the exit code.
//! @code
//!   int main(int argc, char** argv) {
//!     return parity::main(argc, argv, "tools/reference_backward.py", parity::error_measure::relative(1e-5),
//!                         [](const std::string& name, const parity::fixture& f, parity::report& r) { ... });
//!   }
//! @endcode
using case_body = std::function<void(const std::string& name, const fixture& f, report& r)>;

inline int main(int argc, char** argv, std::string_view script, const error_measure& measure, const case_body& body) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <case> <reference folder>\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  const fixture f = fixture::open_or_skip(argv[2], script);
  try {
    report r(measure);
    std::printf("%s: %s\n", name.c_str(), measure.describe().c_str());
    body(name, f, r);
    r.summary(name);
    std::printf("%s\n", r.ok() ? "PASSED" : "FAILED");
    return r.ok() ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}

}  // namespace recpipe::testing::parity
