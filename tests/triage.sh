#!/bin/sh
# hostmem triage groups a crash folder by signature: three fuzz inputs of one bug (release-inside and two variants)
# read as one group with the smallest input, a trace of another bug as a second group, a clean seed as clean.
# Usage: triage.sh HOSTMEM SOURCE_DIR OUT_DIR HOST.so (libhostmem_broken_release_anywhere.so)
set -u
hostmem=$1 src=$2 out=$3 host=$4
fail() { echo "triage: $*" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out/crashes" || fail "cannot make $out"
d=$out/crashes
cp "$src/corpus/calls/release-inside" "$d/id-000" || fail "no seed"
{ cat "$src/corpus/calls/release-inside"; printf '\001\002\003'; } > "$d/id-001"
{ cat "$src/corpus/calls/release-inside"; printf '\377\377\377\377\377\377'; } > "$d/id-002"
cp "$src/tests/data/two-bugs.trace" "$d/other.trace"
cp "$src/corpus/calls/seed-01" "$d/clean"
echo "AFL++ notes" > "$d/README.txt"
"$hostmem" triage "$d" --host "$host" > "$out/out.txt"
status=$?
[ $status -eq 1 ] || fail "exit $status, not 1: $(cat "$out/out.txt")"
grep -q "^3  $d/id-000 (14 bytes)  VirtualFree: hr HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS) recorded, S_OK on this host$" "$out/out.txt" \
  || fail "the three inputs of one bug are not one group: $(cat "$out/out.txt")"
grep -q "^1  $d/other.trace ([0-9]* bytes)  VirtualQuery: field regionsize$" "$out/out.txt" || fail "the other bug is not its own group"
grep -q "5 input(s), 2 group(s) of failures, 1 clean" "$out/out.txt" || fail "wrong totals: $(cat "$out/out.txt")"
# --reduce: each group's smallest input reduced on the host, keeping the group's signature.
mkdir -p "$out/reduced"
"$hostmem" triage "$d" --host "$host" --reduce "$out/reduced" > "$out/reduce.txt"
grep -q "^group 1: .* -> $out/reduced/group-1.trace: 2 calls; keeps: VirtualFree: hr" "$out/reduce.txt" \
  || fail "--reduce did not reduce group 1 to 2 calls: $(cat "$out/reduce.txt")"
grep -q "VirtualFree addr=@[0-9]*+0x1000 size=0 type=MEM_RELEASE -> HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)" \
  "$out/reduced/group-1.trace" || fail "group-1.trace lacks the bad release"
# No failure: exit 0; a folder that is not there: exit 2.
mkdir -p "$out/none" && cp "$src/corpus/calls/seed-01" "$out/none/"
"$hostmem" triage "$out/none" --host "$host" > /dev/null; [ $? -eq 0 ] || fail "a clean folder does not exit 0"
"$hostmem" triage "$out/missing" 2> /dev/null; [ $? -eq 2 ] || fail "a missing folder does not exit 2"
echo "triage: ok"
