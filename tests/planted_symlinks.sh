#!/bin/sh
# The files hostmem names itself are never written through a symlink planted under a predictable name: the names
# stress and bench used before (DIR/stress-PID.trace, DIR/stress-violation.txt, $TMPDIR/hostmem-bench-PID-*) and
# fuzz-to-trace's default output (INPUT.trace) are planted as symlinks to a file, each run is exec'd from the shell
# that planted them (so its PID is the one in the names), and the file must keep its content.
# Usage: planted_symlinks.sh HOSTMEM BROKEN_HOST.so FUZZ_INPUT
set -u
hostmem=$1 broken=$2 fuzz_input=$3
dir=$(mktemp -d "${TMPDIR:-/tmp}/hostmem-planted.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
printf keep >"$dir/victim"
# stress finding a violation: it writes the run's trace and the last calls.
sh -c 'for n in stress-$$.trace stress-violation.txt; do ln -s "$1/victim" "$1/$n"; done
       exec "$0" stress --threads 1 --ops 20000 --trace-dir "$1" --host "$2"' "$hostmem" "$dir" "$broken" \
    >"$dir/stress.out" 2>&1
echo "stress exited with $? ($(grep -c VIOLATION "$dir/stress.out") violation reported)"
# bench's trace part: its recordings and long traces.
TMPDIR=$dir sh -c 'for n in rec.raw cycle.raw long.bin long.txt; do ln -s "$1/victim" "$1/hostmem-bench-$$-$n"; done
                   exec "$0" bench --quick --only trace' "$hostmem" "$dir" >"$dir/bench.out" 2>&1
echo "bench exited with $?"
# fuzz-to-trace without -o: it must refuse the existing name.
cp "$fuzz_input" "$dir/crash" && ln -s "$dir/victim" "$dir/crash.trace"
"$hostmem" fuzz-to-trace "$dir/crash" >"$dir/fuzz.out" 2>&1
echo "fuzz-to-trace exited with $?"
left=$(find "$dir" -maxdepth 1 -name 'hostmem-bench-*' -type d | wc -l)
echo "bench left $left temporary director(ies)"
if [ "$(cat "$dir/victim")" = keep ]; then
    echo "the planted symlinks' target is untouched"
else
    echo "FAIL: the planted symlinks' target was overwritten ($(wc -c <"$dir/victim") bytes now)"
fi
