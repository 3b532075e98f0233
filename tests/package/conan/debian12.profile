# SPDX-License-Identifier: Apache-2.0
# Conan 2 host profile for Debian 12: recpipe's dependencies come from Debian packages
# (libeigen3-dev, libhnswlib-dev, nlohmann-json3-dev, zlib1g-dev, libopenblas-dev), not from
# Conan Center. Used by tests/package/conan/check.sh; include it from your own profile with
# `include(<checkout>/tests/package/conan/debian12.profile)`.
include(default)

[settings]
compiler.cppstd=20
build_type=Release

[platform_requires]
eigen/3.4.0
hnswlib/0.6.2
nlohmann_json/3.11.2
zlib/1.2.13
openblas/0.3.21
