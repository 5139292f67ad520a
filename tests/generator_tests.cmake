# The Generator unit tests. Included from tests/CMakeLists.txt, which provides GTest::gtest_main,
# asyncio::asyncio and asyncio_build_flags.
add_executable(generator_test ${CMAKE_CURRENT_LIST_DIR}/generator_test.cpp)
target_link_libraries(generator_test PRIVATE asyncio::asyncio GTest::gtest_main asyncio_build_flags)
add_test(NAME generator_test COMMAND generator_test)
set_tests_properties(generator_test PROPERTIES TIMEOUT 120 LABELS "generator")
