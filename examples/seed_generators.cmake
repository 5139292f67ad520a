# The seed generator programs: C++ ports of examples/seed/*.py, and tests that their stdout is
# byte-identical to Python's (examples/seed/*.expected). Included from examples/CMakeLists.txt,
# which provides asyncio::asyncio and asyncio_build_flags.
set(_seed_dir ${CMAKE_CURRENT_LIST_DIR}/seed)
set(_seed_compare ${CMAKE_CURRENT_LIST_DIR}/../tests/seed_transcript_test.cmake)

# Python (only for checking that the .expected files are what the .py programs print).
find_program(ASYNCIO_SEED_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH
  DOC "Python 3 that runs examples/seed/*.py in the seed transcript tests")

# name, then the test timeout in seconds (plate_food sleeps 10 s in total)
foreach(_seed producer_consumer:30 plate_food:60)
  string(REPLACE ":" ";" _seed "${_seed}")
  list(GET _seed 0 _name)
  list(GET _seed 1 _timeout)

  add_executable(seed_${_name} ${CMAKE_CURRENT_LIST_DIR}/seed_${_name}.cpp)
  target_link_libraries(seed_${_name} PRIVATE asyncio::asyncio asyncio_build_flags)

  add_test(NAME seed_${_name}_matches_python
    COMMAND ${CMAKE_COMMAND} -DPROGRAM=$<TARGET_FILE:seed_${_name}>
      -DEXPECTED=${_seed_dir}/${_name}.expected
      -DACTUAL=${CMAKE_CURRENT_BINARY_DIR}/seed_${_name}.actual
      -P ${_seed_compare})
  set_tests_properties(seed_${_name}_matches_python PROPERTIES TIMEOUT ${_timeout} LABELS "seed")

  if(ASYNCIO_SEED_PYTHON3)
    add_test(NAME seed_${_name}_python_matches_expected
      COMMAND ${CMAKE_COMMAND} -DPROGRAM=${ASYNCIO_SEED_PYTHON3}
        "-DARGS=-B;${_seed_dir}/${_name}.py"
        -DEXPECTED=${_seed_dir}/${_name}.expected
        -DACTUAL=${CMAKE_CURRENT_BINARY_DIR}/seed_${_name}_python.actual
        -P ${_seed_compare})
    set_tests_properties(seed_${_name}_python_matches_expected PROPERTIES
      TIMEOUT ${_timeout} LABELS "seed;python")
  endif()
endforeach()
unset(_seed)
unset(_seed_dir)
unset(_seed_compare)
unset(_name)
unset(_timeout)
