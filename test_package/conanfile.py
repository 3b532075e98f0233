# SPDX-License-Identifier: Apache-2.0
# recpipe Conan test package: builds and runs tests/package/consumer against the Conan package.
import os

from conan import ConanFile
from conan.tools.build import can_run
from conan.tools.cmake import CMake, CMakeDeps, CMakeToolchain, cmake_layout


class RecpipeTestConan(ConanFile):
    settings = "os", "arch", "compiler", "build_type"

    def requirements(self):
        self.requires(self.tested_reference_str)

    def layout(self):
        cmake_layout(self)

    def _with_cuda(self):
        return bool(self.dependencies["recpipe"].options.with_cuda)

    def generate(self):
        toolchain = CMakeToolchain(self)
        if self._with_cuda():
            # CMake uses CXX_STANDARD for CUDA sources when CUDA_STANDARD is unset, and CMake 3.25
            # cannot map CUDA20 for nvcc 13, so the toolchain's CMAKE_CXX_STANDARD would break
            # enable_language(CUDA). recpipe's targets carry cxx_std_20 (and -std=c++20 for CUDA).
            toolchain.blocks.remove("cppstd")
        toolchain.generate()
        CMakeDeps(self).generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure(variables={"RECPIPE_CONSUMER_CUDA": "ON" if self._with_cuda() else "OFF"})
        cmake.build()

    def test(self):
        if can_run(self):
            cmake_binary = os.path.join(self.cpp.build.bindir, "consumer", "recpipe_consumer")
            self.run(cmake_binary, env="conanrun")
