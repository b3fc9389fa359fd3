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
# docs/writing-a-host.md's CMake for a kept trace, verbatim, in a project whose host (myhost) is the example mmap host:
# find_package(hostmem) gives hostmem_add_trace_test and the installed hostmem, and the ctest replays the trace clean.
regress=$work/regress
mkdir -p "$regress/tests"
cp "$src/../data/release-inside.trace" "$regress/tests/"
cp "$src/../../examples/mmap_host/mmap_host.c" "$regress/"
{
  echo 'cmake_minimum_required(VERSION 3.16)'
  echo 'project(myhost C)'
  echo 'find_package(Threads REQUIRED)'
  echo 'add_library(myhost MODULE mmap_host.c)'
  echo 'target_include_directories(myhost PRIVATE ${CMAKE_PREFIX_PATH}/include)'
  echo 'target_link_libraries(myhost PRIVATE Threads::Threads)'
  awk '/<!-- regression loop: CMake/ { marked = 1; next }
       marked && /^```cmake$/ { inside = 1; next }
       inside && /^```$/ { exit }
       inside { print }' "$src/../../docs/writing-a-host.md"
} >"$regress/CMakeLists.txt"
grep -q hostmem_add_trace_test "$regress/CMakeLists.txt" || fail "docs/writing-a-host.md has no CMake block for a kept trace"
cmake -S "$regress" -B "$regress/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" >"$work/regress.out" 2>&1 ||
  fail "the documented CMake for a kept trace does not configure: $(cat "$work/regress.out")"
cmake --build "$regress/build" >"$work/regress.out" 2>&1 || fail "the project of the documented CMake does not build"
(cd "$regress/build" && ctest --output-on-failure) >"$work/regress.out" 2>&1 ||
  fail "the kept trace's ctest failed on a correct host: $(cat "$work/regress.out")"
grep -q "myhost.release-inside .*Passed" "$work/regress.out" || fail "no ctest myhost.release-inside: $(cat "$work/regress.out")"
echo "install: man page, bash completion, docs and a source-free demo installed"
echo "install: hostmem_add_trace_test from find_package(hostmem) replays a kept trace in ctest"
echo "install: find_package and pkg-config consumers built and ran; a contract.h-only host loaded"
