#!/usr/bin/env bash
# tests/windows/e2e_record.sh WINDOWS_BUILD HOSTMEM [WINE]: the recorder end to end, Windows to Linux (ci/windows.sh
# runs it). e2e_record.exe (tests/windows/e2e_record.c, through hostmem.dll) records under Wine with HOSTMEM_TRACE and
# HOSTMEM_FAULTS from the environment; HOSTMEM, the Linux command, then replays, reduces and explores its traces:
#   1. a run failing the 100th appdomain commit: the trace replays on Linux with every result matched and the OOM
#      injected again, exit 0;
#   2. the spec `hostmem replay --emit-faults` prints, given to HOSTMEM_FAULTS on Windows, fails the same call;
#   3. reduce keeps the OOM; explore runs the trace as a scenario;
#   4. a run ended by TerminateProcess after call 20000 (exit status 9; past the recorder's ring of 16384 slots, so
#      the trace has calls in their place and calls left in the ring): its trace holds exactly those 20000 calls,
#      which all replay with matching results.
#   5. the same with four threads: the kill finds three of them in the middle of calls; the trace replays.
# Each check prints PASS or FAIL with what it saw; exit 0 when all pass, 1 otherwise.
set -uo pipefail
win=$1
hostmem=$2
wine=${3:-/usr/lib/wine/wine64}
check_name=e2e_record
source "$(dirname "${BASH_SOURCE[0]}")/wine_check.sh"
# wine_run LOG [ARG...]: e2e_record.exe under Wine (the environment as given), its output in LOG (line ends made
# Unix's: a Windows program's stdout ends lines with CR LF); returns its status.
wine_run() {
  local log=$1 status=0
  shift
  timeout 120 "$wine" "$win/e2e_record.exe" "$@" >"$log.crlf" 2>&1 || status=$?
  tr -d '\r' <"$log.crlf" >"$log"
  return $status
}
# Windows sees the Linux file system as drive Z: (Wine's default), with / or \ as the separator.
winpath() { echo "Z:$1"; }

# 1. Record with an injected OOM; %p in the name is the process id.
spec='VirtualAlloc,level=appdomain,op=commit,nth=100'
HOSTMEM_TRACE=$(winpath "$work/run-%p.trace") HOSTMEM_FAULTS=$spec wine_run "$work/run.log"
status=$?
trace=$(ls "$work"/run-*.trace 2>/dev/null | head -1)
oom=$(grep '^oom: ' "$work/run.log")
calls=$(sed -n 's/^calls: //p' "$work/run.log")
if [ $status = 0 ] && [ "$(grep -c '^oom: ' "$work/run.log")" = 1 ] && [ -n "$calls" ] && [ -n "$trace" ]; then
  pass "recorded under Wine: $calls calls, $oom, trace $(basename "$trace")"
else
  fail "recording (exit $status, trace '${trace:-none}'): $(cat "$work/run.log")"
  exit 1
fi
case $(basename "$trace") in
  run-[0-9]*.trace) pass "%p became the process id ($(basename "$trace"))" ;;
  *) fail "%p in HOSTMEM_TRACE gave $(basename "$trace")" ;;
esac

# The Linux replay: every result matched, the OOM injected at the same call. (Calls: the program's plus the heap's
# final Release, which the trace records but is no call to the host.)
out=$("$hostmem" replay "$trace" 2>&1)
status=$?
if [ $status = 0 ] && [[ $out == *"($calls to the host, 1 recorded failures injected), every result matched"* ]]; then
  pass "Linux replay: $out"
else
  fail "Linux replay (exit $status, expected $calls calls to the host and 1 injected): $out"
fi

# 2. The spec replay emits makes the Windows run fail the same call again.
emitted=$("$hostmem" replay "$trace" --emit-faults 2>&1 | sed -n 's/^faults: //p')
HOSTMEM_TRACE=$(winpath "$work/again.trace") HOSTMEM_FAULTS=$emitted wine_run "$work/again.log"
status=$?
again=$(grep '^oom: ' "$work/again.log")
if [ -n "$emitted" ] && [ $status = 0 ] && [ "$again" = "$oom" ]; then
  pass "HOSTMEM_FAULTS='$emitted' (from --emit-faults) fails the same call on Windows: $again"
else
  fail "the emitted spec '$emitted' (exit $status) gave '$again', the recorded run '$oom': $(cat "$work/again.log")"
fi

# 3. Reduce keeps the OOM; explore takes the trace as its scenario.
out=$("$hostmem" reduce "$trace" -o "$work/small.trace" 2>&1)
status=$?
if [ $status = 0 ] && [[ $out == *"the failure kept: oom-reproduced"* ]] &&
  "$hostmem" replay "$work/small.trace" >/dev/null 2>&1; then
  pass "Linux reduce: $out"
else
  fail "Linux reduce (exit $status): $out"
fi
out=$("$hostmem" explore "$trace" --max 20 2>&1)
status=$?
if [ $status = 0 ] && [[ $out == *", 0 failed"* ]]; then
  pass "Linux explore: $(echo "$out" | tail -1)"
else
  fail "Linux explore (exit $status): $out"
fi

# 4. Killed after call 20000: no call in flight, so the trace holds all 20000 and they replay.
HOSTMEM_TRACE=$(winpath "$work/killed.trace") wine_run "$work/killed.log" --rounds 3000 --kill-after 20000
status=$?
out=$("$hostmem" replay "$work/killed.trace" 2>&1)
rstatus=$?
if [ $status = 9 ] && [ $rstatus = 0 ] &&
  [[ $out == *"20000 calls replayed (20000 to the host, 0 recorded failures injected), every result matched"* ]]; then
  pass "killed by TerminateProcess after call 20000 (exit 9): $out"
else
  fail "killed run (exit $status, expected 9), Linux replay (exit $rstatus): $out"
fi

# 5. Four threads, killed when the calls reach 20000: the others are in the middle of calls then. The trace holds at
# least the 20000 counted (the counter moves after a call returns, so each is recorded), and at most the calls in
# flight are lost: it replays, every result matched (the notes say what the threads' overlap left uncompared).
HOSTMEM_TRACE=$(winpath "$work/threads.trace") wine_run "$work/threads.log" --threads 4 --rounds 2000 --kill-after 20000
status=$?
out=$("$hostmem" replay "$work/threads.trace" 2>&1)
rstatus=$?
replayed=$(echo "$out" | sed -n 's/.*: \([0-9]*\) calls replayed.*every result matched$/\1/p')
if [ $status = 9 ] && [ $rstatus = 0 ] && [ -n "$replayed" ] && [ "$replayed" -ge 20000 ]; then
  pass "4 threads killed by TerminateProcess at call 20000: $(echo "$out" | head -1)"
else
  fail "4 threads killed (exit $status, expected 9), Linux replay (exit $rstatus): $out"
fi

if [ $failures != 0 ]; then
  echo "e2e_record: $failures check(s) failed" >&2
  exit 1
fi
echo "e2e_record: every check passed"
