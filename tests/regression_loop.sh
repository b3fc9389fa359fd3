#!/usr/bin/env sh
# tests/regression_loop.sh HOSTMEM FUZZ_CALLS SOURCE_DIR BROKEN_HOST FIXED_HOST WORKDIR: runs the commands of the
# section "Keep a finding as a regression test" of docs/writing-a-host.md verbatim, in a scratch tree laid out like
# the source tree (build/hostmem, build/fuzz/fuzz_calls, corpus/, tests/). build/libmyhost.so is BROKEN_HOST (a host
# answering E_FAIL for a failing VirtualFree) for the first block and FIXED_HOST for the second. Each command must end
# as its trailing comment says ("# exit N" or "# aborts"); the trace the loop keeps must be tests/data's
# release-inside.trace, which the ctests replay.
set -u
hostmem=$1 fuzz_calls=$2 src=$3 broken=$4 fixed=$5 work=$6
fail() { echo "regression_loop: $*" >&2; exit 1; }
rm -rf "$work" && mkdir -p "$work/build/fuzz" "$work/tests" || exit 1
ln -s "$hostmem" "$work/build/hostmem"
ln -s "$fuzz_calls" "$work/build/fuzz/fuzz_calls"
ln -s "$src/corpus" "$work/corpus"

# The ```sh block after the marker line naming STAGE.
block() {
  awk -v marker="<!-- regression loop: $1 " 'index($0, marker) == 1 { marked = 1; next }
       marked && /^```sh$/ { inside = 1; next }
       inside && /^```$/ { exit }
       inside { print }' "$src/docs/writing-a-host.md"
}

# Runs each line of the block STAGE with the host HOST as build/libmyhost.so; counts the commands run.
commands=0
run_block() {
  cp "$2" "$work/build/libmyhost.so" || fail "cannot copy $2"
  block "$1" >"$work/block" || exit 1
  [ -s "$work/block" ] || fail "docs/writing-a-host.md has no sh block after '<!-- regression loop: $1'"
  while IFS= read -r line; do
    want=$(printf '%s\n' "$line" | sed -n 's/.*# \(exit [0-9]*\|aborts\).*/\1/p')
    [ -n "$want" ] || fail "no '# exit N' or '# aborts' comment on: $line"
    (cd "$work" && sh -c "$line") >"$work/out" 2>&1 </dev/null
    status=$?
    ok=yes
    case "$want" in
      aborts) [ "$status" -gt 128 ] || ok=no ;; # killed by its abort()
      *) [ "$status" -eq "${want#exit }" ] || ok=no ;;
    esac
    if [ "$ok" = no ]; then
      sed 's/^/  | /' "$work/out" >&2
      fail "'$line' ($1) ended with status $status, the doc says '$want'"
    fi
    commands=$((commands + 1))
  done <"$work/block"
}

run_block "the host with the bug" "$broken"
grep -q "signature: VirtualFree: hr HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS) recorded, E_FAIL on this host" "$work/out" ||
  fail "the kept trace did not diverge at the VirtualFree on the host with the bug: $(cat "$work/out")"
# The trace the loop keeps is the one tests/data holds (its calls; the comment names where it was reduced from).
grep -v '^#' "$work/tests/release-inside.trace" >"$work/kept.calls"
grep -v '^#' "$src/tests/data/release-inside.trace" >"$work/data.calls"
cmp -s "$work/kept.calls" "$work/data.calls" ||
  fail "the loop kept another trace than tests/data/release-inside.trace: $(diff "$work/data.calls" "$work/kept.calls")"
run_block "the fixed host" "$fixed"
grep -q "every result matched" "$work/out" || fail "the last replay did not say every result matched"
echo "regression_loop: $commands documented commands ran as the doc says (the kept trace diverges on the broken host, matches on the fixed one)"
