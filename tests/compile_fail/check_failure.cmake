# SPDX-License-Identifier: Apache-2.0
# Builds TARGET in BUILD_DIR; passes only if the build fails and its output matches every regex in
# EXPECT (separated by |||).
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
message(STATUS "${TARGET}: failed to compile as expected, with the expected message")
