# ckptio_library(NAME SOURCES ... DEPS ...): one static library per area, with the public headers.
function(ckptio_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC "$<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>"
                                            "$<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>"
                                     PRIVATE "${PROJECT_SOURCE_DIR}/src")
  # Installed as ckptio::<area> (ckptio_load -> ckptio::load); ckptio::ckptio is every area.
  string(REGEX REPLACE "^ckptio_" "" export_name "${name}")
  set_target_properties(${name} PROPERTIES EXPORT_NAME "${export_name}")
  # nlohmann_json is header-only and no public header includes it: users of the installed static
  # libraries need nothing of it, so it stays out of the exported link interface.
  list(TRANSFORM ARG_PRIVATE_DEPS REPLACE "^nlohmann_json::nlohmann_json$"
       "$<BUILD_INTERFACE:nlohmann_json::nlohmann_json>")
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
endfunction()

# ckptio_test(NAME SOURCES ... DEPS ...): one GoogleTest binary, each test case a ctest test.
# Tests find helper scripts through CKPTIO_SOURCE_DIR and write into a per-test temp folder.
function(ckptio_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_include_directories(${name} PRIVATE "${PROJECT_SOURCE_DIR}/src" "${PROJECT_SOURCE_DIR}/tests")
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE CKPTIO_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                                             CKPTIO_BIN_DIR="${CKPTIO_BIN_DIR}")
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST
                       PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}")
endfunction()

# ckptio_fuzzer(NAME SOURCES ... DEPS ...): a libFuzzer target (clang only, CKPTIO_FUZZ=ON).
function(ckptio_fuzzer name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_include_directories(${name} PRIVATE "${PROJECT_SOURCE_DIR}/src")
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
endfunction()
