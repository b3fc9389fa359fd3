# Valgrind keeps its own map of the process and handles running out of mappings its own way: the kernel's limit is
# not what the child meets there.
set_tests_properties(map_limit PROPERTIES LABELS "unit;no-valgrind")
