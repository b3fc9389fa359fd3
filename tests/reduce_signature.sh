#!/bin/sh
# reduce keeps the original failure's signature: tests/data/two-bugs.trace diverges first at call 3 (VirtualQuery's
# region size); a smaller subset diverges elsewhere (VirtualQuery's state), which reduce must refuse and --any takes.
# Usage: reduce_signature.sh HOSTMEM SOURCE_DIR OUT_DIR
set -u
hostmem=$1 src=$2 out=$3
fail() { echo "reduce_signature: $*" >&2; exit 1; }
mkdir -p "$out"
trace=$src/tests/data/two-bugs.trace
"$hostmem" replay "$trace" > "$out/replay.txt"; [ $? -eq 1 ] || fail "replay of the two-bug trace did not exit 1"
grep -q "recorded 0x3000, this host 0x2000" "$out/replay.txt" || fail "replay does not say recorded/this host: $(cat "$out/replay.txt")"
grep -q "^signature: VirtualQuery: field regionsize$" "$out/replay.txt" || fail "no signature line"
"$hostmem" replay --json "$trace" | grep -q '"recorded": "0x3000", "this_host": "0x2000", "signature": "VirtualQuery: field regionsize"' \
  || fail "replay --json lacks recorded/this_host/signature"

"$hostmem" reduce "$trace" -o "$out/kept.trace" > /dev/null || fail "reduce failed"
"$hostmem" replay "$out/kept.trace" > "$out/kept.txt"
grep -q "^signature: VirtualQuery: field regionsize$" "$out/kept.txt" || fail "reduce changed the failure: $(cat "$out/kept.txt")"
[ "$(grep -c ' t1 ' "$out/kept.trace")" -eq 3 ] || fail "reduce kept $(grep -c ' t1 ' "$out/kept.trace") calls, not 3"

"$hostmem" reduce --any "$trace" -o "$out/any.trace" > /dev/null || fail "reduce --any failed"
"$hostmem" replay "$out/any.trace" > "$out/any.txt"
grep -q "^signature: VirtualQuery: field state$" "$out/any.txt" || fail "reduce --any did not take the smaller other failure: $(cat "$out/any.txt")"
echo "reduce_signature: ok"
