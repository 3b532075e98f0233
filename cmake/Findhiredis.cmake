# SPDX-License-Identifier: Apache-2.0
# Finds hiredis (Debian: libhiredis-dev; its pkg-config file names `hiredis`) and provides the
# imported target hiredis::hiredis. Sets hiredis_FOUND, hiredis_INCLUDE_DIR and hiredis_LIBRARY.
# hiredis 1.x ships a CMake config with the same target name; this module serves 0.14 too.
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(PC_hiredis QUIET hiredis)
endif()
# The headers are included as <hiredis/hiredis.h>, so the folder above hiredis/.
find_path(hiredis_INCLUDE_DIR NAMES hiredis/hiredis.h HINTS ${PC_hiredis_INCLUDEDIR})
find_library(hiredis_LIBRARY NAMES hiredis HINTS ${PC_hiredis_LIBDIR} ${PC_hiredis_LIBRARY_DIRS})
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(hiredis REQUIRED_VARS hiredis_LIBRARY hiredis_INCLUDE_DIR
                                  VERSION_VAR PC_hiredis_VERSION)
if(hiredis_FOUND AND NOT TARGET hiredis::hiredis)
  add_library(hiredis::hiredis UNKNOWN IMPORTED)
  set_target_properties(hiredis::hiredis PROPERTIES
    IMPORTED_LOCATION "${hiredis_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${hiredis_INCLUDE_DIR}")
endif()
mark_as_advanced(hiredis_INCLUDE_DIR hiredis_LIBRARY)
