#!/bin/sh
# Runs a command, then prints its exit status, last: ctest's PASS_REGULAR_EXPRESSION ignores the status, so a test
# that must both print something and exit with a given status matches this line too.
"$@"
echo "exited with $?."
