# SPDX-License-Identifier: Apache-2.0
# recpipe Conan 2 recipe: a header-only library with an optional `cuda` component (recpipe::cuda).
import os
import re

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load, rmdir, save

required_conan_version = ">=2.0"

# Included by the generated recpipe-config.cmake when with_cuda=True: Conan does not package the
# CUDA toolkit, so recpipe::cuda takes CUDA::cudart and CCCL::CCCL from the consumer's machine.
_CUDA_MODULE = """\
# SPDX-License-Identifier: Apache-2.0
# recpipe (Conan): attaches the CUDA toolkit and CCCL to recpipe::cuda.
find_package(CUDAToolkit REQUIRED)
find_package(CCCL CONFIG REQUIRED HINTS "${CUDAToolkit_LIBRARY_DIR}/cmake")
if(TARGET recpipe::cuda)
  set_property(TARGET recpipe::cuda APPEND PROPERTY INTERFACE_LINK_LIBRARIES CUDA::cudart CCCL::CCCL)
  # CMake knows no cuda_std_20 for nvcc 13, so the flag goes to CUDA sources only.
  set_property(TARGET recpipe::cuda APPEND PROPERTY INTERFACE_COMPILE_OPTIONS
               "$<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>")
endif()
"""

# Dependencies a profile takes from the system ([platform_requires], e.g. Debian's packages): Conan
# generates no CMake config for them (conan-io/conan#17348), so recpipe's config finds each one on
# the machine, the way recpipe's own CMake package does, and links it to recpipe::recpipe.
_SYSTEM_MODULES = {
    "eigen": ("find_package(Eigen3 3.4 REQUIRED NO_MODULE)", "Eigen3::Eigen"),
    "hnswlib": ('list(APPEND CMAKE_MODULE_PATH "${CMAKE_CURRENT_LIST_DIR}")\nfind_package(hnswlib REQUIRED)',
                "hnswlib::hnswlib"),
    "nlohmann_json": ("find_package(nlohmann_json 3.10 REQUIRED)", "nlohmann_json::nlohmann_json"),
    "zlib": ("find_package(ZLIB REQUIRED)", "ZLIB::ZLIB"),
    "openblas": ("find_package(OpenBLAS CONFIG REQUIRED)\n"
                 "set_property(TARGET recpipe::recpipe APPEND PROPERTY INTERFACE_INCLUDE_DIRECTORIES ${OpenBLAS_INCLUDE_DIRS})",
                 "${OpenBLAS_LIBRARIES}"),
}


class RecpipeConan(ConanFile):
    name = "recpipe"
    description = "Header-only C++20 pipelines for online recommender systems (CPU, optional CUDA)"
    license = "Apache-2.0"
    topics = ("recommender-systems", "ann", "pipelines", "header-only", "cuda")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"with_cuda": [True, False], "with_openblas": [True, False]}
    default_options = {"with_cuda": False, "with_openblas": True}
    exports_sources = "CMakeLists.txt", "LICENSE", "cmake/*", "include/*"
    no_copy_source = True

    def set_version(self):
        # One source of truth: project(recpipe VERSION x.y.z) in CMakeLists.txt.
        text = load(self, os.path.join(self.recipe_folder, "CMakeLists.txt"))
        self.version = self.version or re.search(r"project\(recpipe\s+VERSION\s+([0-9.]+)", text).group(1)

    def layout(self):
        cmake_layout(self, src_folder=".")

    def requirements(self):
        # recpipe's public headers include these, so consumers need their headers too.
        # Ranges, not pins: Conan Center resolves the newest (hnswlib 0.8.0, ...), and a profile's
        # [platform_requires] may name the versions a distribution ships (Debian 12: hnswlib 0.6.2,
        # nlohmann_json 3.11.2, zlib 1.2.13, openblas 0.3.21; tests/package/conan/debian12.profile).
        self.requires("eigen/[>=3.4.0 <4]", transitive_headers=True)
        self.requires("hnswlib/[>=0.6.2 <0.9]", transitive_headers=True)
        self.requires("nlohmann_json/[>=3.10 <4]", transitive_headers=True)
        self.requires("zlib/[>=1.2.11 <2]", transitive_headers=True, transitive_libs=True)  # snapshot CRC32
        if self.options.with_openblas:
            self.requires("openblas/[>=0.3.20 <0.4]", transitive_headers=True, transitive_libs=True)

    def validate(self):
        check_min_cppstd(self, 20)

    def package_id(self):
        # The package holds the same headers whatever the options (the .cuh files are always
        # copied); options change only package_info(), so one binary serves every configuration.
        self.info.clear()

    def generate(self):
        toolchain = CMakeToolchain(self)
        toolchain.cache_variables["RECPIPE_INSTALL"] = True
        toolchain.cache_variables["RECPIPE_BUILD_TESTS"] = False
        toolchain.cache_variables["RECPIPE_BUILD_EXAMPLES"] = False
        toolchain.cache_variables["RECPIPE_BUILD_BENCH"] = False
        # Packaging needs no nvcc: the CUDA headers are copied below and the cuda component is
        # described in package_info().
        toolchain.cache_variables["RECPIPE_ENABLE_CUDA"] = False
        toolchain.cache_variables["RECPIPE_USE_OPENBLAS"] = bool(self.options.with_openblas)
        toolchain.generate()
        CMakeDeps(self).generate()

    def build(self):
        # Configure only: it generates include/recpipe/version.hpp from project(VERSION).
        cmake = CMake(self)
        cmake.configure()

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        cmake = CMake(self)
        cmake.install()
        copy(self, "*.cuh", os.path.join(self.source_folder, "include"),
             os.path.join(self.package_folder, "include"))
        # CMakeDeps writes the consumer's config from package_info(); drop recpipe's own.
        rmdir(self, os.path.join(self.package_folder, "share"))
        save(self, os.path.join(self.package_folder, "lib", "cmake", "recpipe-conan-cuda.cmake"), _CUDA_MODULE)
        copy(self, "Findhnswlib.cmake", os.path.join(self.source_folder, "cmake"),
             os.path.join(self.package_folder, "lib", "cmake"))
        for name, (find, target) in _SYSTEM_MODULES.items():
            save(self, os.path.join(self.package_folder, "lib", "cmake", f"recpipe-conan-system-{name}.cmake"),
                 "# SPDX-License-Identifier: Apache-2.0\n"
                 f"# recpipe (Conan): {name} from the system ([platform_requires]).\n"
                 f"{find}\nif(TARGET recpipe::recpipe)\n"
                 f"  set_property(TARGET recpipe::recpipe APPEND PROPERTY INTERFACE_LINK_LIBRARIES {target})\nendif()\n")

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "recpipe")
        # The aggregate target gets another name, so that recpipe::recpipe stays CPU-only even
        # when the cuda component exists.
        self.cpp_info.set_property("cmake_target_name", "recpipe::recpipe_all")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []

        core = self.cpp_info.components["core"]
        core.set_property("cmake_target_name", "recpipe::recpipe")
        core.bindirs = []
        core.libdirs = []
        dependencies = ["eigen", "hnswlib", "nlohmann_json", "zlib"]
        if self.options.with_openblas:
            dependencies.append("openblas")
            core.defines = ["RECPIPE_HAS_CBLAS=1"]
        build_modules = []
        for name in dependencies:
            if self._from_system(name):
                build_modules.append(os.path.join("lib", "cmake", f"recpipe-conan-system-{name}.cmake"))
            else:
                core.requires.append(f"{name}::{name}")

        if self.options.with_cuda:
            cuda = self.cpp_info.components["cuda"]
            cuda.set_property("cmake_target_name", "recpipe::cuda")
            cuda.bindirs = []
            cuda.libdirs = []
            cuda.requires = ["core"]
            build_modules.append(os.path.join("lib", "cmake", "recpipe-conan-cuda.cmake"))
        if build_modules:
            self.cpp_info.set_property("cmake_build_modules", build_modules)

    def _from_system(self, name):
        # A [platform_requires] dependency is missing from the dependency set here, or (other Conan
        # versions) has the recipe revision "platform".
        try:
            dependency = self.dependencies[name]
        except KeyError:
            return True
        return dependency.ref.revision == "platform"
