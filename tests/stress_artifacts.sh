#!/usr/bin/env bash
# hostmem stress --artifacts DIR / --no-trace / --heartbeat: where its files go, that --no-trace records nothing, and
# that a run whose stdout is not a terminal says it is alive.
set -euo pipefail
hostmem=$1 broken=$2 work=$3
fail() { echo "stress_artifacts: $*" >&2; exit 1; }
rm -rf "$work" && mkdir -p "$work/traced" "$work/untraced"
for mode in traced untraced; do
  extra=(); [ $mode = untraced ] && extra=(--no-trace)
  status=0
  (cd "$work" && "$hostmem" stress --threads 1 --ops 20000 --host "$broken" --artifacts "$work/$mode" "${extra[@]}" \
     >"$work/$mode.out" 2>&1) || status=$?
  [ $status = 1 ] || fail "$mode: exit status $status, not 1: $(cat "$work/$mode.out")"
  ls "$work/$mode"/stress-*.violation.txt >/dev/null 2>&1 || fail "$mode: no violation report in --artifacts DIR"
  traces=$(find "$work/$mode" -name '*.trace' | wc -l)
  want=1; [ $mode = untraced ] && want=0
  [ "$traces" = $want ] || fail "$mode: $traces trace(s) in --artifacts DIR, not $want"
  [ -z "$(find "$work" -mindepth 1 -maxdepth 1 -name 'stress-*')" ] || fail "$mode: files left in the working directory"
done
"$hostmem" stress --threads 1 --seconds 2 --heartbeat 1 --artifacts "$work" >"$work/heartbeat.out" ||
  fail "the heartbeat run failed"
grep -Eq '^stress: 1 s, [0-9]+ ops, [0-9]+ ops/s, 0 violation\(s\)$' "$work/heartbeat.out" ||
  fail "no heartbeat line on a stdout that is not a terminal: $(cat "$work/heartbeat.out")"
"$hostmem" stress --threads 1 --seconds 1 --heartbeat 1 --no-trace --artifacts /nonexistent/dir 2>"$work/bad.err" &&
  fail "--artifacts /nonexistent/dir was accepted"
grep -q "cannot create the run's trace in '/nonexistent/dir'" "$work/bad.err" || fail "$(cat "$work/bad.err")"
# --trace-max: the recorder stops before the file passes SIZE, says so, and the trace says it is incomplete.
"$hostmem" stress --threads 1 --ops 40000 --trace-max 2M --artifacts "$work" >/dev/null 2>"$work/cap.err" ||
  fail "the --trace-max run failed: $(cat "$work/cap.err")"
grep -q "the trace reached its max=2097152 bytes" "$work/cap.err" || fail "--trace-max 2M did not stop the recording"
rm -f "$work/cap.trace"
HOSTMEM_TRACE_SELF=1 HOSTMEM_TRACE="$work/cap.trace,max=2M" "$hostmem" stress --no-fork --no-trace --threads 1 \
  --ops 40000 --artifacts "$work" >/dev/null 2>&1 || fail "the HOSTMEM_TRACE=...,max=2M run failed"
size=$(stat -c %s "$work/cap.trace")
[ "$size" -le 2097152 ] || fail "a trace capped at 2M has $size bytes"
"$hostmem" trace stats "$work/cap.trace" | grep -q "the trace is incomplete" ||
  fail "a capped trace does not say it is incomplete"
status=0; "$hostmem" stress --trace-max 1K --ops 10 2>/dev/null || status=$?
[ $status = 2 ] || fail "--trace-max 1K: exit status $status, not 2"
echo "stress_artifacts: trace and violation report in --artifacts DIR, none with --no-trace, heartbeat every 1 s, --trace-max caps the trace"
