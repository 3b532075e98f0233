# SPDX-License-Identifier: Apache-2.0
# Finds the header-only hnswlib (Debian's libhnswlib-dev ships no CMake config) and provides the
# imported target hnswlib::hnswlib. Sets hnswlib_FOUND and hnswlib_INCLUDE_DIR.
find_path(hnswlib_INCLUDE_DIR NAMES hnswlib/hnswlib.h)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(hnswlib REQUIRED_VARS hnswlib_INCLUDE_DIR)
if(hnswlib_FOUND AND NOT TARGET hnswlib::hnswlib)
  add_library(hnswlib::hnswlib INTERFACE IMPORTED)
  set_target_properties(hnswlib::hnswlib PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${hnswlib_INCLUDE_DIR}")
endif()
mark_as_advanced(hnswlib_INCLUDE_DIR)
