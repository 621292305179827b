# Unity builds (CMAKE_UNITY_BUILD, on in the asan preset) compile a target's sources in batches of
# eight as one translation unit each, so the heavy headers (nlohmann/json, the standard library)
# are parsed and their templates compiled once per batch instead of once per file: a third of the
# sanitizer build's time. Two files of one target must then not define file-local names alike (an
# anonymous-namespace helper, a constant); the files below, which do, compile alone. A
# "redefinition of" error in a unity batch means a file belongs on this list (or a name needs
# renaming). Paths are relative to the checkout.
set(CKPTIO_UNITY_ALONE
    src/io/atomic_dir.cpp                      # quoted(), as io_loop.cpp
    src/io/posix_env.cpp                       # quoted(), as io_loop.cpp
    src/io/power_cut_env.cpp                   # quoted(), as io_loop.cpp
    src/io/parallel_reader.cpp                 # detail:: means ckptio::detail, not io::detail
    src/format/sharded/index_parser.cpp        # lower(), ends_with(), as plan.cpp and verify.cpp
    src/format/sharded/reader.cpp              # ends_with(), as verify.cpp
    src/hub/protocol.cpp                       # kMaxRedirects, as blob_download.cpp
    src/load/convert.cpp                       # ends_with(), as resolve.cpp
    tests/format/safetensors/rewrite_test.cpp  # same_bytes(), as roundtrip_test.cpp
)
function(ckptio_unity_alone)
  foreach(source IN LISTS ARGN)
    get_filename_component(path "${source}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    file(RELATIVE_PATH path "${PROJECT_SOURCE_DIR}" "${path}")
    if(path IN_LIST CKPTIO_UNITY_ALONE)
      set_source_files_properties("${source}" PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
    endif()
  endforeach()
endfunction()

# ckptio_library(NAME SOURCES ... DEPS ...): one static library per area, with the public headers.
function(ckptio_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  ckptio_unity_alone(${ARG_SOURCES})
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
  if(CKPTIO_FUZZ)
    # Coverage instrumentation for the library code, or libFuzzer would only see the harness. Only
    # the libraries: the unit tests linking them need none (the sanitizer runtime defines the
    # coverage callbacks as no-ops), and it would add a third to their compile time.
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer-no-link)
  endif()
endfunction()

# Extra compile options for the code of the tests (test files, their helpers, the test programs
# under tests/), not for the libraries and the CLI they exercise. The asan preset says -O0: a test
# file is mostly GoogleTest macro expansion, which ASan at -O1 takes about 2.5 times as long to
# compile as at -O0 (22 s against 9 s for checkpoint_io_test), while the code whose speed matters
# in a test run (the libraries) stays at -O1; that is about a quarter of the asan tree's build.
set(CKPTIO_TEST_COMPILE_OPTIONS "" CACHE STRING "Compile options added for test code only")
function(ckptio_test_code name)
  target_compile_options(${name} PRIVATE ${CKPTIO_TEST_COMPILE_OPTIONS})
endfunction()

# Every test file parses the same heavy headers (GoogleTest, nlohmann/json, the standard library):
# about 2.5 s of a 12 s compile at -O0 under ASan. They are compiled once per build tree into a
# precompiled header (target ckptio_test_pch) that every test target reuses. A precompiled header
# only serves compiles with the flags it was made with; CMake adds -Winvalid-pch, so with -Werror
# a mismatch fails the build instead of silently costing time. The libtorch tests (NO_PCH) differ:
# libtorch's -D_GLIBCXX_USE_CXX11_ABI changes the standard headers. Making the header costs about
# four test files' worth of parsing, so it is on where the unit tests build (the release tree has
# only two test files that could use it).
option(CKPTIO_TEST_PCH "Precompile the headers every test includes" ${CKPTIO_UNIT_TESTS})
set(CKPTIO_TEST_PCH_HEADERS
    <gtest/gtest.h> <nlohmann/json.hpp>
    <algorithm> <atomic> <cmath> <cstdint> <cstdio> <cstdlib> <cstring> <filesystem> <fstream>
    <functional> <map> <memory> <optional> <random> <set> <span> <sstream> <string>
    <string_view> <system_error> <thread> <utility> <vector>)
# ccache caches compiles that use a precompiled header only with these sloppiness settings
# (ccache manual, "Precompiled headers"); the header is passed with -include, as ccache requires.
set(CKPTIO_PCH_CCACHE_SLOPPINESS "pch_defines,time_macros,include_file_mtime,include_file_ctime")

function(ckptio_use_test_pch name)
  if(NOT TARGET ckptio_test_pch)
    # An executable like the tests (same -fPIE, definitions and usage requirements), never run.
    file(CONFIGURE OUTPUT "${PROJECT_BINARY_DIR}/ckptio_test_pch.cpp" CONTENT "int main() { return 0; }\n")
    add_executable(ckptio_test_pch EXCLUDE_FROM_ALL "${PROJECT_BINARY_DIR}/ckptio_test_pch.cpp")
    target_link_libraries(ckptio_test_pch PRIVATE GTest::gtest nlohmann_json::nlohmann_json)
    target_compile_definitions(ckptio_test_pch PRIVATE CKPTIO_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                                                       CKPTIO_BIN_DIR="${CKPTIO_BIN_DIR}")
    target_precompile_headers(ckptio_test_pch PRIVATE ${CKPTIO_TEST_PCH_HEADERS})
    # The header serves only compiles with the same options (-O changes __OPTIMIZE__).
    ckptio_test_code(ckptio_test_pch)
    ckptio_pch_ccache(ckptio_test_pch)
  endif()
  target_precompile_headers(${name} REUSE_FROM ckptio_test_pch)
  # The header brings nlohmann/json into every test; its include directory comes with it.
  target_link_libraries(${name} PRIVATE nlohmann_json::nlohmann_json)
  ckptio_pch_ccache(${name})
endfunction()

function(ckptio_pch_ccache name)
  get_target_property(launcher ${name} CXX_COMPILER_LAUNCHER)
  if(launcher AND launcher MATCHES "ccache")
    set_target_properties(${name} PROPERTIES CXX_COMPILER_LAUNCHER
      "${CMAKE_COMMAND};-E;env;CCACHE_SLOPPINESS=${CKPTIO_PCH_CCACHE_SLOPPINESS};${launcher}")
  endif()
endfunction()

# ckptio_test(NAME SOURCES ... DEPS ... [NO_PCH] [AS_LIBRARIES]): one GoogleTest binary, each test
# case a ctest test. Tests find helper scripts through CKPTIO_SOURCE_DIR and write into a per-test
# temp folder. AS_LIBRARIES: compiled like the libraries, without CKPTIO_TEST_COMPILE_OPTIONS (and
# so without the shared precompiled header), for a test whose own code must not run at -O0: one
# that builds a 4,096-level pickle value tree destroys it recursively through inline destructors,
# whose -O0 frames overflow the 8 MiB stack.
function(ckptio_test name)
  cmake_parse_arguments(ARG "NO_PCH;AS_LIBRARIES" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  if(ARG_AS_LIBRARIES AND CKPTIO_TEST_COMPILE_OPTIONS)
    set(ARG_NO_PCH ON)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  ckptio_unity_alone(${ARG_SOURCES})
  target_include_directories(${name} PRIVATE "${PROJECT_SOURCE_DIR}/src" "${PROJECT_SOURCE_DIR}/tests")
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  if(NOT ARG_AS_LIBRARIES)
    ckptio_test_code(${name})
  endif()
  target_compile_definitions(${name} PRIVATE CKPTIO_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                                             CKPTIO_BIN_DIR="${CKPTIO_BIN_DIR}")
  if(CKPTIO_TEST_PCH AND NOT ARG_NO_PCH)
    ckptio_use_test_pch(${name})
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  # Listing a test's cases runs the binary; libtorch's start-up alone can pass the default 5 s on a
  # loaded CI machine, and a timed-out listing fails the whole ctest run.
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
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
