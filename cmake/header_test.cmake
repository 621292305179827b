# ckptio_header_orders(TARGET HEADERS... [CHECK ...] [DEPS ...]): a compile-only check that every
# public header stands on its own and does not depend on, or break, the headers around it. For each
# header H of CHECK (default: all of HEADERS) two translation units are generated: H first followed
# by all the others, and all the others followed by H. The first fails when H misses an include;
# the second when an earlier header changes what H means (a namespace or macro clash). Nothing is
# linked or run: building the object library is the test.
function(ckptio_header_orders target)
  cmake_parse_arguments(ARG "" "" "HEADERS;CHECK;DEPS" ${ARGN})
  set(dir "${CMAKE_CURRENT_BINARY_DIR}/${target}")
  if(NOT ARG_CHECK)
    set(ARG_CHECK "${ARG_HEADERS}")
  endif()
  set(sources "")
  foreach(header IN LISTS ARG_CHECK)
    string(MAKE_C_IDENTIFIER "${header}" id)
    set(others "${ARG_HEADERS}")
    list(REMOVE_ITEM others "${header}")
    set(first "#include \"ckptio/${header}\"\n")
    set(last "")
    foreach(other IN LISTS others)
      string(APPEND first "#include \"ckptio/${other}\"\n")
      string(APPEND last "#include \"ckptio/${other}\"\n")
    endforeach()
    string(APPEND last "#include \"ckptio/${header}\"\n")
    # file(CONFIGURE) rewrites a file only when its text changes, so a reconfigure rebuilds nothing.
    file(CONFIGURE OUTPUT "${dir}/first_${id}.cpp" CONTENT "${first}" @ONLY)
    file(CONFIGURE OUTPUT "${dir}/last_${id}.cpp" CONTENT "${last}" @ONLY)
    list(APPEND sources "${dir}/first_${id}.cpp" "${dir}/last_${id}.cpp")
  endforeach()
  add_library(${target} OBJECT ${sources})
  # Each translation unit must stay alone: a unity build would merge them and check nothing.
  set_target_properties(${target} PROPERTIES UNITY_BUILD OFF)
  target_link_libraries(${target} PRIVATE ${ARG_DEPS})
endfunction()
