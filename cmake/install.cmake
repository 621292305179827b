# `cmake --install`: headers, the area libraries and ckptio::ckptio, a CMake package
# (find_package(ckptio)) and a pkg-config file. The libtorch adapters stay out: they need the
# exact libtorch they were built against.
set_target_properties(ckptio_all PROPERTIES EXPORT_NAME ckptio)
get_target_property(ckptio_installed_libs ckptio_all INTERFACE_LINK_LIBRARIES)
# The components of find_package(ckptio COMPONENTS ...): every installed target's name.
set(ckptio_components ckptio)
foreach(lib IN LISTS ckptio_installed_libs)
  if(TARGET ${lib})
    get_target_property(export_name ${lib} EXPORT_NAME)
    list(APPEND ckptio_components ${export_name})
  endif()
endforeach()
list(JOIN ckptio_components " " ckptio_components)
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
# the shared libraries they use go under Requires, not Requires.private. ckptio-load is the loaders
# alone: no Hub client, so neither libcurl nor libcrypto.
set(ckptio_pc_order ckptio_load ckptio_dist ckptio_dcp ckptio_checkpoint ckptio_hub ckptio_sharded ckptio_torchfile
                    ckptio_safetensors ckptio_io ckptio_core)
set(ckptio_pc_requires_all "libxxhash libisal simdjson zlib")
if(ckptio_have_liburing)
  string(APPEND ckptio_pc_requires_all " liburing")
endif()

# The ckptio_* libraries `target` links, itself included.
function(ckptio_area_closure target out)
  set(seen "")
  set(todo ${target})
  while(todo)
    list(POP_FRONT todo t)
    if(NOT TARGET ${t} OR t IN_LIST seen OR NOT t MATCHES "^ckptio_")
      continue()
    endif()
    list(APPEND seen ${t})
    get_target_property(deps ${t} INTERFACE_LINK_LIBRARIES)
    if(deps)
      list(APPEND todo ${deps})
    endif()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

function(ckptio_pkg_config file name description areas requires)
  set(ckptio_pc_name "${name}")
  set(ckptio_pc_description "${description}")
  set(ckptio_pc_requires "${requires}")
  set(ckptio_pc_libs "")
  foreach(lib IN LISTS ckptio_pc_order)
    if(TARGET ${lib} AND lib IN_LIST areas)
      string(APPEND ckptio_pc_libs " -l${lib}")
    endif()
  endforeach()
  configure_file("${PROJECT_SOURCE_DIR}/cmake/ckptio.pc.in" "${CMAKE_CURRENT_BINARY_DIR}/${file}" @ONLY)
  install(FILES "${CMAKE_CURRENT_BINARY_DIR}/${file}" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
endfunction()

ckptio_pkg_config(ckptio.pc ckptio "Save and load checkpoints and weights of large neural networks"
                  "${ckptio_pc_order}" "${ckptio_pc_requires_all} libcurl libcrypto")
ckptio_area_closure(ckptio_load ckptio_load_areas)
ckptio_pkg_config(ckptio-load.pc ckptio-load
                  "Load checkpoints and weights of large neural networks from local files"
                  "${ckptio_load_areas}" "${ckptio_pc_requires_all}")
