# Runs a program and compares its stdout with a file, byte for byte.
#   cmake -DPROGRAM=<exe> [-DARGS=<arg;...>] -DEXPECTED=<file> [-DACTUAL=<file>] -P seed_transcript_test.cmake
# Fails if the program exits non-zero, or if its stdout differs from EXPECTED; then the output is
# written to ACTUAL (default: <EXPECTED name>.actual in the current directory) for diffing.
cmake_minimum_required(VERSION 3.25)

foreach(var PROGRAM EXPECTED)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "seed_transcript_test.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT DEFINED ACTUAL)
  get_filename_component(name "${EXPECTED}" NAME)
  set(ACTUAL "${CMAKE_CURRENT_BINARY_DIR}/${name}.actual")
endif()

execute_process(
  COMMAND "${PROGRAM}" ${ARGS}
  OUTPUT_VARIABLE actual
  ERROR_VARIABLE errors
  RESULT_VARIABLE status)
if(NOT status STREQUAL "0")
  message(FATAL_ERROR "${PROGRAM} failed (${status}); stderr:\n${errors}")
endif()

file(READ "${EXPECTED}" expected)
if(NOT actual STREQUAL expected)
  file(WRITE "${ACTUAL}" "${actual}")
  string(LENGTH "${expected}" expected_length)
  string(LENGTH "${actual}" actual_length)
  message(FATAL_ERROR "stdout of ${PROGRAM} differs from ${EXPECTED} "
    "(${actual_length} bytes, expected ${expected_length}); it is in ${ACTUAL}:\n${actual}")
endif()
message(STATUS "stdout of ${PROGRAM} matches ${EXPECTED}")
