# SPDX-License-Identifier: Apache-2.0
# recpipe vcpkg overlay port: installs the checkout that holds this file (header-only, optional cuda).
# Use: vcpkg install recpipe[cuda] --overlay-ports=<checkout>/ports/vcpkg
# For a registry, replace SOURCE_PATH with vcpkg_from_github(OUT_SOURCE_PATH SOURCE_PATH REPO ...
# REF "v${VERSION}" SHA512 ...).
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

set(VCPKG_BUILD_TYPE release)  # header-only: one configuration is enough

vcpkg_check_features(OUT_FEATURE_OPTIONS feature_options
  FEATURES
    cuda     RECPIPE_ENABLE_CUDA
    openblas RECPIPE_USE_OPENBLAS
)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${feature_options}
    -DRECPIPE_INSTALL=ON
    -DRECPIPE_BUILD_TESTS=OFF
    -DRECPIPE_BUILD_EXAMPLES=OFF
    -DRECPIPE_BUILD_BENCH=OFF
)
vcpkg_cmake_install()
# The config lives in share/cmake/recpipe (arch-independent); vcpkg wants share/recpipe.
vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/recpipe)

file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/lib" "${CURRENT_PACKAGES_DIR}/debug")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
