# SPDX-License-Identifier: Apache-2.0
# Shared by scripts/*: Debian package checks and build settings. Source it; do not run it.

# Packages every build needs (library deps, test framework, compilers and CMake).
RECPIPE_BASE_PACKAGES=(g++ make ninja-build cmake libeigen3-dev libhnswlib-dev nlohmann-json3-dev zlib1g-dev libopenblas-dev
                       libopenblas0-pthread doctest-dev libbenchmark-dev)
# Peers for tests and benchmarks: LibTorch for kernel comparisons, PyTorch for model parity,
# hnswlib's Python module for the whole-pipeline benchmark's Python peer (bench/pipeline).
RECPIPE_PEER_PACKAGES=(libtorch-dev python3-torch python3-numpy python3-hnswlib)
# Examples: gnuplot draws the incremental-training plot.
RECPIPE_EXAMPLE_PACKAGES=(gnuplot-nox)
# Fuzzing (scripts/fuzz): clang 14 and its libFuzzer runtime (libclang_rt.fuzzer*.a, in
# libclang-rt-14-dev on Debian 12).
RECPIPE_FUZZ_PACKAGES=(clang-14 libclang-rt-14-dev)
# The Redis feature store (include/recpipe/io/redis_store.hpp, target recpipe::redis): hiredis to
# build it; redis-server for its tests, which start their own server on a free port (the system
# service is neither needed nor started).
RECPIPE_REDIS_PACKAGES=(libhiredis-dev redis-server)

# require_packages pkg...: installs what is missing with apt when run as root; otherwise prints
# the exact apt line and exits.
require_packages() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "recpipe: installing missing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "recpipe: missing Debian packages. Install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

# nvcc is not a Debian package here (the CUDA toolkit is installed on the machine); use it when present.
find_nvcc() {
  if command -v nvcc >/dev/null 2>&1; then command -v nvcc
  elif [ -x /usr/local/cuda/bin/nvcc ]; then echo /usr/local/cuda/bin/nvcc
  fi
}

RECPIPE_JOBS=${RECPIPE_JOBS:-$(nproc 2>/dev/null || echo 2)}

# configure_build <build dir> <cmake args...>: cmake -S . -B dir with Ninja (one global job queue:
# with make, each directory's targets wait for the previous directory's on 2 cores). A build dir
# made earlier with another generator is removed first, since CMake cannot switch it.
configure_build() {
  local dir=$1; shift
  local generator=Ninja
  command -v ninja >/dev/null 2>&1 || generator="Unix Makefiles"
  if [ -f "$dir/CMakeCache.txt" ] && ! grep -qx "CMAKE_GENERATOR:INTERNAL=$generator" "$dir/CMakeCache.txt"; then
    echo "recpipe: $dir was configured with another generator; removing it"
    rm -rf "$dir"
  fi
  cmake -S . -B "$dir" -G "$generator" "$@" >/dev/null
}

# Debian's OpenBLAS 0.3.21 does not recognise newer CPUs (AMD Zen 4; the virtualised Sapphire
# Rapids Xeon these machines report as "Intel Xeon Processor") and falls back to its SSE3
# ("Prescott") kernels, 5-7x slower. Name the nearest kernel family it knows, unless the user chose one.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -r /proc/cpuinfo ]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell
  fi
fi
