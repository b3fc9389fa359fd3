# A use-after-free in a heap's user is reported: the heap poisons free blocks for ASan and describes them to
# Valgrind. The program reads a freed block on purpose with --uaf.
if(HOSTMEM_SANITIZE MATCHES "address")
  add_test(NAME heap_uaf_asan COMMAND $<TARGET_FILE:test_heap> --uaf)
  # ASan must exit with an error code, not abort: ctest fails a test killed by a signal whatever its output.
  set_tests_properties(heap_uaf_asan PROPERTIES LABELS unit ENVIRONMENT "ASAN_OPTIONS=abort_on_error=0"
    PASS_REGULAR_EXPRESSION "use-after-poison|heap-use-after-free")
endif()
if(HOSTMEM_TEST_WRAPPER MATCHES "valgrind")
  add_test(NAME heap_uaf_valgrind COMMAND valgrind --error-exitcode=0 $<TARGET_FILE:test_heap> --uaf)
  set_tests_properties(heap_uaf_valgrind PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION "Invalid read of size 1")
endif()
