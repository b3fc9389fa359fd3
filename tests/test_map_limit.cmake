# Valgrind keeps its own map of the process and handles running out of mappings its own way: the kernel's limit is
# not what the child meets there. TSan's runtime maps its shadow and allocator memory as the test goes, so at the
# kernel's limit TSan itself fails ("unable to unmap", "allocator is out of memory") before hostmem is asked.
set_tests_properties(map_limit PROPERTIES LABELS "unit;no-valgrind;no-tsan")
