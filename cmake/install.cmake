# `cmake --install`: headers, the area libraries and ckptio::ckptio, a CMake package
# (find_package(ckptio)) and a pkg-config file. The libtorch adapters stay out: they need the
# exact libtorch they were built against.
set_target_properties(ckptio_all PROPERTIES EXPORT_NAME ckptio)
get_target_property(ckptio_installed_libs ckptio_all INTERFACE_LINK_LIBRARIES)
get_directory_property(ckptio_have_liburing DIRECTORY "${PROJECT_SOURCE_DIR}/src/io"
                       DEFINITION LIBURING_FOUND)

if(SKBUILD)
  # A wheel carries the extension and the CLI only (python/CMakeLists.txt).
  return()
endif()

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/ckptio" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(TARGETS ckptio_all ${ckptio_installed_libs} EXPORT ckptioTargets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}")
set(ckptio_cmake_dir "${CMAKE_INSTALL_LIBDIR}/cmake/ckptio")
install(EXPORT ckptioTargets NAMESPACE ckptio:: DESTINATION "${ckptio_cmake_dir}")

include(CMakePackageConfigHelpers)
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/ckptioConfig.cmake.in"
                              "${CMAKE_CURRENT_BINARY_DIR}/ckptioConfig.cmake"
                              INSTALL_DESTINATION "${ckptio_cmake_dir}")
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/ckptioConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/ckptioConfig.cmake"
              "${CMAKE_CURRENT_BINARY_DIR}/ckptioConfigVersion.cmake"
        DESTINATION "${ckptio_cmake_dir}")

# pkg-config: the libraries are static, so the link line lists every area (dependents first) and
# the shared libraries they use go under Requires, not Requires.private.
set(ckptio_pc_libs "")
foreach(lib ckptio_load ckptio_dist ckptio_checkpoint ckptio_hub ckptio_sharded ckptio_torchfile
            ckptio_safetensors ckptio_io ckptio_core)
  if(TARGET ${lib})
    string(APPEND ckptio_pc_libs " -l${lib}")
  endif()
endforeach()
set(ckptio_pc_requires "nlohmann_json libxxhash libisal simdjson zlib libcurl libcrypto")
if(ckptio_have_liburing)
  string(APPEND ckptio_pc_requires " liburing")
endif()
configure_file("${PROJECT_SOURCE_DIR}/cmake/ckptio.pc.in" "${CMAKE_CURRENT_BINARY_DIR}/ckptio.pc" @ONLY)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/ckptio.pc" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
