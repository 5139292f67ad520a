# Builds misuse.cpp for one CASE twice: with -DDISCARD it must fail and the compiler must name
# [[nodiscard]] (so the failure is the one we mean, not a typo); without it, it must build.
# -DCXX=compiler -DSOURCE=misuse.cpp -DINCLUDE=include dir -DCASE=n
set(flags -std=c++20 -fsyntax-only -Wall -Wextra -Werror -I${INCLUDE} -DCASE=${CASE} ${SOURCE})
execute_process(COMMAND ${CXX} ${flags} RESULT_VARIABLE ok_rc OUTPUT_VARIABLE ok_out ERROR_VARIABLE ok_err)
if(NOT ok_rc EQUAL 0)
  message(FATAL_ERROR "case ${CASE}: the correct use (with co_await) does not build:\n${ok_err}")
endif()
execute_process(COMMAND ${CXX} -DDISCARD ${flags} RESULT_VARIABLE bad_rc OUTPUT_VARIABLE bad_out ERROR_VARIABLE bad_err)
if(bad_rc EQUAL 0)
  message(FATAL_ERROR "case ${CASE}: a discarded awaitable builds without a diagnostic")
endif()
if(NOT bad_err MATCHES "nodiscard")
  message(FATAL_ERROR "case ${CASE}: the build failed, but not for [[nodiscard]]:\n${bad_err}")
endif()
message(STATUS "case ${CASE}: refused as it should be")
