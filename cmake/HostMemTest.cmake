# hostmem_add_trace_test(NAME <test> TRACE <file> [HOST <target or LIB.so>] [HOST_OPTIONS <options>]
#                        [TIMEOUT <seconds>])
#
# A ctest that replays a kept trace against a host: `hostmem replay TRACE --host HOST`. It passes only when every
# result matched (exit 0; the trace's recorded out-of-memory failures are injected again, so they reproduce). A
# divergence, an incomplete trace, or a host that crashes, exits or does not finish within TIMEOUT fails it (exit 1),
# and so does a trace or host that cannot be read or loaded (exit 2). HOST names a target of your project (its
# library is used) or a path; without HOST the built-in manager replays the trace. A relative TRACE is taken from
# the current source directory. TIMEOUT (default 60) limits the replay; the ctest's own TIMEOUT is set above it.
#
# find_package(hostmem) defines this function and HOSTMEM_EXECUTABLE, the hostmem command it runs. (docs/writing-a-host.md)
function(hostmem_add_trace_test)
  cmake_parse_arguments(arg "" "NAME;TRACE;HOST;HOST_OPTIONS;TIMEOUT" "" ${ARGN})
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "hostmem_add_trace_test: unexpected arguments '${arg_UNPARSED_ARGUMENTS}'")
  endif()
  if(NOT arg_NAME OR NOT arg_TRACE)
    message(FATAL_ERROR "hostmem_add_trace_test: NAME and TRACE are required")
  endif()
  if(NOT HOSTMEM_EXECUTABLE)
    message(FATAL_ERROR "hostmem_add_trace_test: HOSTMEM_EXECUTABLE (the hostmem command) is not set: "
                        "find_package(hostmem) sets it")
  endif()
  get_filename_component(trace "${arg_TRACE}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  set(command "${HOSTMEM_EXECUTABLE}" replay "${trace}")
  if(arg_HOST)
    if(TARGET ${arg_HOST})
      list(APPEND command --host "$<TARGET_FILE:${arg_HOST}>")
    else()
      list(APPEND command --host "${arg_HOST}")
    endif()
  endif()
  if(DEFINED arg_HOST_OPTIONS)
    list(APPEND command --host-options "${arg_HOST_OPTIONS}")
  endif()
  if(NOT arg_TIMEOUT)
    set(arg_TIMEOUT 60)
  endif()
  list(APPEND command --timeout ${arg_TIMEOUT})
  add_test(NAME ${arg_NAME} COMMAND ${command})
  math(EXPR ctest_timeout "${arg_TIMEOUT} + 30")
  set_tests_properties(${arg_NAME} PROPERTIES TIMEOUT ${ctest_timeout})
endfunction()
