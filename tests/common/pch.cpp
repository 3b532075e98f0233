// SPDX-License-Identifier: Apache-2.0
// Empty: the target recpipe_test_pch exists only to build the tests' shared precompiled header
// (tests/CMakeLists.txt, target_precompile_headers).
