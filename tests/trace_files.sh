#!/bin/sh
# The trace files of the hostmem command, for real: the command does not record itself (HOSTMEM_TRACE=t hostmem
# replay t reads t and leaves it intact); `hostmem record -o` keeps an existing trace unless --overwrite; and on a
# full file system (a small tmpfs in a user and mount namespace: skipped, exit 77, where those are not allowed)
# recording stops cleanly: the program goes on, the recorder says how many calls the trace holds, replay says the
# trace is incomplete (exit 1), and stress blames no host.
# usage: trace_files.sh HOSTMEM WORKDIR
set -u
hm=$1
dir=$2
fail() {
    echo "FAIL: $*"
    [ -f "$dir/out" ] && sed 's/^/  | /' "$dir/out"
    exit 1
}
rm -rf "$dir" && mkdir -p "$dir" || exit 1

t=$dir/self.trace
"$hm" record --workload basic -o "$t" >"$dir/out" 2>&1 || fail "record --workload basic"
before=$(cksum <"$t")
HOSTMEM_TRACE="$t" "$hm" replay "$t" >"$dir/out" 2>&1 || fail "HOSTMEM_TRACE=t hostmem replay t"
grep -q "every result matched" "$dir/out" || fail "replay with HOSTMEM_TRACE set"
[ "$(cksum <"$t")" = "$before" ] || fail "hostmem replay changed the trace it read"
"$hm" record --workload basic -o "$t" >"$dir/out" 2>&1 && fail "record -o wrote over an existing trace"
grep -q "exists: hostmem does not overwrite a trace" "$dir/out" || fail "record -o on an existing trace: no message"
[ "$(cksum <"$t")" = "$before" ] || fail "record -o changed an existing trace"
"$hm" record --workload threads -o "$t" --overwrite >"$dir/out" 2>&1 || fail "record --overwrite"
echo "ok: tools do not record themselves; existing traces are kept"

if ! unshare -rm true 2>/dev/null; then
    echo "SKIP: no unprivileged user and mount namespaces here (the full file system part needs them)"
    exit 77
fi
unshare -rm sh -s "$hm" "$dir" <<'XEOF2' || exit 1
hm=$1
dir=$2
fail() {
    echo "FAIL: $*"
    sed 's/^/  | /' "$dir/out"
    exit 1
}
# Too small for the ring: the recorder is refused with a message; the program is not killed.
mkdir -p "$dir/tiny" && mount -t tmpfs -o size=512k tmpfs "$dir/tiny" || fail "mount"
"$hm" record --workload threads -o "$dir/tiny/t.trace" >"$dir/out" 2>&1
status=$?
[ $status -eq 2 ] || fail "record on a full file system: exit $status (expected 2: the trace cannot be created)"
grep -q "no space left on its file system" "$dir/out" || fail "record on a full file system: no message"
"$hm" stress --threads 2 --ops 5000 --trace-dir "$dir/tiny" >"$dir/out" 2>&1
status=$?
grep -q "CRASH" "$dir/out" && fail "stress --trace-dir on a full file system blamed the host"
[ $status -eq 0 ] || fail "stress --trace-dir on a full file system: exit $status"
echo "ok: no room for the ring: refused with a message; stress runs unrecorded"

# Room for the ring and a few calls: the recorded program (stress, recording its managers through HOSTMEM_TRACE,
# one trace per process) runs to its end; the trace holds what fitted and says it is incomplete; replay says so
# and exits 1.
mkdir -p "$dir/small" && mount -t tmpfs -o size=1100k tmpfs "$dir/small" || fail "mount"
HOSTMEM_TRACE_SELF=1 HOSTMEM_TRACE="$dir/small/run-%p.trace" "$hm" stress --threads 2 --ops 20000 \
    --trace-dir "$dir" >"$dir/out" 2>&1
status=$?
grep -q "CRASH" "$dir/out" && fail "stress recorded on a full file system blamed the host"
[ $status -eq 0 ] || fail "stress recorded on a full file system: exit $status"
grep -q "stopped after [0-9]* calls: writing the trace failed: No space left on device" "$dir/out" ||
    fail "no message when the recording stopped"
calls=$(sed -n 's/.*stopped after \([0-9]*\) calls.*/\1/p' "$dir/out" | head -1)
trace=$(sed -n "s/.*recording to '\([^']*\)' stopped after.*/\1/p" "$dir/out" | head -1)
"$hm" replay "$trace" >"$dir/out" 2>&1
status=$?
[ $status -eq 1 ] || fail "replay of an incomplete trace: exit $status (expected 1)"
grep -q "^the trace is incomplete: recording stopped after $calls calls: writing the trace failed: No space left on device" \
    "$dir/out" || fail "replay does not say the trace is incomplete"
grep -q "every result matched\$" "$dir/out" && fail "replay claims a full match"
"$hm" trace convert "$trace" "$dir/run.bin" >"$dir/out" 2>&1 || fail "trace convert"
"$hm" trace stats "$dir/run.bin" >"$dir/out" 2>&1 || fail "trace stats"
grep -q "^the trace is incomplete: recording stopped after $calls calls" "$dir/out" ||
    fail "the binary conversion lost the incomplete mark"
"$hm" trace cat "$dir/run.bin" >"$dir/out" 2>&1 || fail "trace cat"
tail -1 "$dir/out" | grep -q "^#! incomplete: recording stopped after $calls calls: writing the trace failed" ||
    fail "the text form has no incomplete mark"
echo "ok: the disk filled after $calls calls: the program went on, replay reports the trace incomplete"
XEOF2
