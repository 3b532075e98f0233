# SPDX-License-Identifier: Apache-2.0
# Builds TARGET in BUILD_DIR; passes only if the build fails and its output matches every regex in
# EXPECT (separated by |||) and, when FIRST is set, its first `error:` line matches FIRST (the
# message a user reads first must be the one that names the problem).
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${BUILD_DIR}" --target "${TARGET}"
                RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(output "${out}${err}")
if(result EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but it must not")
endif()
string(REPLACE "|||" ";" expectations "${EXPECT}")
foreach(expected IN LISTS expectations)
  if(NOT output MATCHES "${expected}")
    message(FATAL_ERROR "${TARGET} failed to compile, but the output does not match '${expected}':\n${output}")
  endif()
endforeach()
if(FIRST)
  string(REGEX MATCH "[^\n]*error:[^\n]*" first_error "${output}")
  if(NOT first_error MATCHES "${FIRST}")
    message(FATAL_ERROR "${TARGET}: the first error is not '${FIRST}' but:\n${first_error}\n\nfull output:\n${output}")
  endif()
endif()
message(STATUS "${TARGET}: failed to compile as expected, with the expected message")
