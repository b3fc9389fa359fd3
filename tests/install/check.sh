#!/usr/bin/env bash
# Installs the build into a scratch prefix, then builds a consumer with find_package(hostmem) and with pkg-config,
# and a host plugin against the installed <hostmem/contract.h> alone.
set -euo pipefail
build=$1 src=$2 cc=${3:-cc}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_C_COMPILER="$cc" >/dev/null
cmake --build "$work/cmake" >/dev/null
LD_LIBRARY_PATH="$work/prefix/lib:$work/prefix/lib64:$work/prefix/lib/x86_64-linux-gnu" "$work/cmake/consumer_shared"
"$work/cmake/consumer_static"
pcdir=$(dirname "$(find "$work/prefix" -name hostmem.pc | head -1)")
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs --static hostmem)
# shellcheck disable=SC2086
"$cc" -std=c11 -o "$work/pc_consumer" "$src/consumer.c" $flags
LD_LIBRARY_PATH="$(dirname "$pcdir")" "$work/pc_consumer"
# A host built against the installed <hostmem/contract.h> alone (no library), loaded by the installed CLI.
"$cc" -std=c11 -Wall -Wextra -Werror -shared -fPIC -Wl,--no-undefined -I"$work/prefix/include" \
  -o "$work/libskeleton.so" "$src/../../examples/skeleton_host/skeleton_host.c" -lpthread
"$work/prefix/bin/hostmem" conform --host "$work/libskeleton.so" --filter com. | grep -q ' 0 failed' || {
  echo "install: the installed hostmem does not load a host built against the installed contract.h" >&2
  exit 1
}
# Installed like a tool: man page, bash completion, docs, and a demo that needs no source tree.
prefix=$work/prefix
fail() { echo "install: $*" >&2; exit 1; }
head -1 "$prefix/share/man/man1/hostmem.1" | grep -q '^\.TH HOSTMEM 1' || fail "share/man/man1/hostmem.1 has no .TH line"
grep -q '^\.SS "hostmem stress"' "$prefix/share/man/man1/hostmem.1" || fail "hostmem.1 has no stress section"
grep -qF -- '\-\-threads' "$prefix/share/man/man1/hostmem.1" || fail "hostmem.1 does not list stress --threads"
if command -v groff >/dev/null; then
  warnings=$(groff -man -Tutf8 -ww -z "$prefix/share/man/man1/hostmem.1" 2>&1)
  [ -z "$warnings" ] || fail "groff warns on hostmem.1: $warnings"
fi
completion=$prefix/share/bash-completion/completions/hostmem
[ -f "$completion" ] || fail "no bash completion in share/bash-completion/completions"
got=$(bash -c 'source "$1"; COMP_WORDS=(hostmem stress --thr); COMP_CWORD=2; _hostmem; echo "${COMPREPLY[*]}"' _ "$completion")
[ "$got" = "--threads" ] || fail "completion of 'hostmem stress --thr' gave '$got', not --threads"
for doc in README.md fuzzing.md stress.md; do
  [ -f "$prefix/share/doc/hostmem/$doc" ] || fail "share/doc/hostmem/$doc is missing"
done
# The demo from a copy of the install in another place, run from an empty directory: its replay trace must come
# from that copy's share/hostmem, not from the source tree the build remembers.
cp -a "$prefix" "$work/moved"
mkdir "$work/empty"
out=$(cd "$work/empty" && "$work/moved/bin/hostmem" demo 2>&1) || fail "hostmem demo from the install failed: $out"
grep -q "^$work/moved/bin/../share/hostmem/oom-appdomain.trace: .*every result matched" <<<"$out" ||
  fail "hostmem demo did not replay the installed share/hostmem trace: $out"
echo "install: man page, bash completion, docs and a source-free demo installed"
echo "install: find_package and pkg-config consumers built and ran; a contract.h-only host loaded"
