# The CTest fixture "postgres": one throwaway PostgreSQL cluster per CTest run.
#
# Use it from any tests/ CMakeLists.txt:
#
#   include(${PROJECT_SOURCE_DIR}/tests/harness/proc/pg_fixture.cmake)
#   flexgate_add_pg_test(cp_config_service_test
#     SOURCES config_service_test.cc LIBS flexgate_cp flexgate_test_harness LABELS controlplane)
#
# and in the test, `TestPostgres::Shared()` then `CreateDatabase()` for a fresh database.
# flexgate_add_pg_test is flexgate_add_test plus the test properties
#   FIXTURES_REQUIRED postgres
#   ENVIRONMENT FLEXGATE_TEST_PG_DIR=${FLEXGATE_TEST_PG_DIR}
# so CTest starts the cluster before the first such test (even with -R) and stops it after the
# last. For a plain add_test, set those two properties yourself. The fixture's setup and cleanup
# tests are registered once, in tests/harness/proc/CMakeLists.txt.
include_guard(GLOBAL)

# Where the fixture records its cluster (files "port" and "cluster"); the cluster itself lives
# in a temp dir the server's user can enter.
set(FLEXGATE_TEST_PG_DIR ${CMAKE_BINARY_DIR}/tests/pg-fixture CACHE INTERNAL
  "State directory of the CTest PostgreSQL fixture")

# flexgate_add_pg_test(<name> SOURCES ... [LIBS ...] [LABELS label] [TIMEOUT seconds])
function(flexgate_add_pg_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE Catch2::Catch2WithMain flexgate_test_harness ${ARG_LIBS})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests/bin)
  catch_discover_tests(${name} TEST_PREFIX "${name}:"
    PROPERTIES
      LABELS "${ARG_LABELS}"
      FIXTURES_REQUIRED postgres
      ENVIRONMENT "FLEXGATE_TEST_PG_DIR=${FLEXGATE_TEST_PG_DIR}"
      TIMEOUT ${ARG_TIMEOUT})
endfunction()
