#!/bin/sh
# Traces record their environment, and replay, reduce and explore use it (docs/trace-format.md, "The environment"):
#   trace_env.sh HOSTMEM BROKEN_LOOSE_CODES_HOST.so OTHER_HOST.so
# The loose-codes host answers invalid calls with other HRESULTs than the built-in manager, so a replay of its trace
# matches only on that host: "every result matched" proves the recorded host was the one used.
set -u
hostmem=$1
loose=$2
other=$3
dir=$(mktemp -d "${TMPDIR:-/tmp}/hostmem-trace-env-XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1
cp "$loose" ./libloose.so
failures=0

# check NAME EXPECTED_STATUS REGEX COMMAND...: runs COMMAND, wants its exit status and REGEX in its output (stdout
# and stderr). The output is matched as one string: a newline in REGEX is one in the output, ^ its start.
check() {
    name=$1 want=$2 regex=$3
    shift 3
    out=$("$@" 2>&1)
    got=$?
    flat_out=$(printf '%s' "$out" | tr '\n' '\036')
    flat_regex=$(printf '%s' "$regex" | tr '\n' '\036')
    if [ "$got" -ne "$want" ] || ! printf '%s\n' "$flat_out" | grep -Eq -- "$flat_regex"; then
        printf 'FAIL %s: exit %s (wanted %s), wanted /%s/ in:\n%s\n' "$name" "$got" "$want" "$regex" "$out"
        failures=$((failures + 1))
    else
        echo "ok   $name"
    fi
}

# Recording: the host as given and resolved, its options, the fault spec, in every form's header.
check record-plugin 0 "calls recorded" "$hostmem" record --workload basic --host ./libloose.so --host-options "" -o loose.trace
check stats-plugin 0 "host: \./libloose\.so, host path: $dir/libloose\.so, recorded at: [0-9-]+T[0-9:]+Z, os: linux, pid: [0-9]+" \
    "$hostmem" trace stats loose.trace
check record-oom 0 "calls recorded" "$hostmem" record --workload oom -o oom.trace
check record-faults 0 "calls recorded" "$hostmem" record --workload basic --faults 'VirtualAlloc,nth=2' -o faults.trace
check cat-header 0 "^hostmem-trace 1
#! version: [0-9.]+
#! host: built-in
#! host-options: deterministic=1,backend=sim
#! faults: VirtualAlloc,nth=2
#! time: " "$hostmem" trace cat faults.trace
check convert-bin 0 "" "$hostmem" trace convert faults.trace faults.bin
check stats-bin 0 "binary trace.*
recorded with hostmem: [0-9.]+, host: built-in, host options: deterministic=1,backend=sim, faults: VirtualAlloc,nth=2" \
    "$hostmem" trace stats faults.bin

# The recorded plugin, found here, is used; --no-trace-env and --host override it; a missing one falls back.
check replay-plugin 0 "^host: $dir/libloose\.so \(from the trace\)
.*every result matched" "$hostmem" replay loose.trace
check replay-no-env 1 "DIVERGED" "$hostmem" replay loose.trace --no-trace-env
check replay-host-overrides 1 "DIVERGED" "$hostmem" replay loose.trace --host "$other"
mv libloose.so moved.so
check replay-plugin-missing 1 "^host: built-in \(the trace's host '\./libloose\.so' is not found here\)
.*DIVERGED" "$hostmem" replay loose.trace
mv moved.so libloose.so
# reduce needs a failure to keep: loose.trace replays cleanly (its refusals are the host's own answers, asked of it
# again), so a recording with an injected out-of-memory.
check record-plugin-oom 0 "calls recorded" "$hostmem" record --workload basic --host ./libloose.so --host-options "" \
    --faults 'VirtualAlloc,op=commit,nth=2' -o loose-oom.trace
check reduce-plugin 0 "^host: $dir/libloose\.so \(from the trace\)
.*oom-reproduced: .* E_OUTOFMEMORY" "$hostmem" reduce loose-oom.trace -o loose.small
check reduce-keeps-header 0 "#! host: \./libloose\.so" "$hostmem" trace cat loose.small
check explore-plugin 0 "^host: $dir/libloose\.so \(from the trace\)
.*0 failed" "$hostmem" explore loose.trace

# The recorded options: with limit=2M the built-in manager reaches the recorded OOM by itself (--no-inject).
check replay-options 0 "^host options: deterministic=1,backend=sim,limit=2M \(from the trace\)
.*every result matched" "$hostmem" replay oom.trace --no-inject
check replay-options-no-env 1 "recorded E_OUTOFMEMORY, this host S_OK" "$hostmem" replay oom.trace --no-inject --no-trace-env
check replay-options-override 1 "recorded E_OUTOFMEMORY, this host S_OK" \
    "$hostmem" replay oom.trace --no-inject --host-options deterministic=1,backend=sim

# The recorded fault spec: injection already fails the calls it failed, so it is not applied again (that would fail
# a later call too: its counter never sees the injected one, as an explicit --faults shows); with --no-inject it is
# what fails them.
check replay-faults-injected 0 "recorded faults: VirtualAlloc,nth=2 \(not applied again.*
.*1 recorded failures injected\), every result matched" "$hostmem" replay faults.trace
check replay-faults-applied 0 "^host options: .*
faults: VirtualAlloc,nth=2 \(from the trace\)
.*every result matched" "$hostmem" replay faults.bin --no-inject
check replay-faults-no-env 1 "recorded E_OUTOFMEMORY, this host S_OK" "$hostmem" replay faults.trace --no-inject --no-trace-env
check replay-faults-twice 1 "DIVERGED" "$hostmem" replay faults.trace --faults 'VirtualAlloc,nth=2'

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
