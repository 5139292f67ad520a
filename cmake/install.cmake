# Installs the headers, the library, an exported CMake package (find_package(asyncio)) and a
# pkg-config file.
include(CMakePackageConfigHelpers)

install(TARGETS asyncio EXPORT asyncioTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/asyncio DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT asyncioTargets NAMESPACE asyncio:: FILE asyncioTargets.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/asyncio)

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/asyncioConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/asyncioConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/asyncio)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/asyncioConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/asyncioConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/asyncioConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/asyncio)

# Relocatable: the prefix is found from the .pc file's own place, so `cmake --install --prefix X`
# works wherever X is.
file(RELATIVE_PATH ASYNCIO_PC_TO_PREFIX ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" ASYNCIO_PC_TO_PREFIX "${ASYNCIO_PC_TO_PREFIX}")
configure_file(${CMAKE_CURRENT_LIST_DIR}/asyncio.pc.in ${CMAKE_CURRENT_BINARY_DIR}/asyncio.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/asyncio.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
