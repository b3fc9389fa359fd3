#!/bin/sh
# Runs a command with its stdout kept apart, then prints what it wrote there (up to 4 KiB) and, last, its exit status
# and how many bytes it wrote on stdout: the hostile tests check both the report and that a host's output stayed out
# of the tool's stdout.
out=$(mktemp) || exit 99
"$@" >"$out"
status=$?
head -c 4096 "$out"
echo "exited with $status, $(wc -c <"$out" | tr -d ' ') bytes on stdout."
rm -f "$out"
