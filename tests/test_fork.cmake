# Under Valgrind every child is checked too, and reports the stacks of the threads that did not follow it through
# fork() as leaks; and Valgrind runs one thread at a time, which makes 90 forks from a busy process take minutes.
# TSan runs it (about 12 s).
set_tests_properties(fork PROPERTIES LABELS "unit;no-valgrind" TIMEOUT 120)
