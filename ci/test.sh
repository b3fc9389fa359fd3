#!/usr/bin/env bash
# Every test of hostmem, as CI runs it: installs what is missing, then builds and runs the unit tests with gcc,
# with clang under ASan+UBSan, under TSan, and under Valgrind memcheck; then the fuzz smoke run and the main job.
# Usage: ci/test.sh [quick]   quick: gcc build and tests only.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/deps.sh
out=${HOSTMEM_BUILD_ROOT:-build-ci}
jobs=$(nproc)
section() { printf '\n==== %s ====\n' "$*"; }

section "gcc, -Werror"
ci/build.sh "$out/gcc" -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo
ctest --test-dir "$out/gcc" --output-on-failure -j"$jobs"
[ "${1:-}" = quick ] && exit 0

section "clang, ASan + UBSan"
ci/build.sh "$out/asan" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DHOSTMEM_SANITIZE="address;undefined"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir "$out/asan" --output-on-failure -j"$jobs"

section "clang, TSan"
ci/build.sh "$out/tsan" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DHOSTMEM_SANITIZE=thread \
  -DHOSTMEM_BUILD_FUZZERS=OFF
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ctest --test-dir "$out/tsan" --output-on-failure -j"$jobs" \
  -LE no-tsan

section "Valgrind memcheck"
ci/build.sh "$out/valgrind" -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHOSTMEM_BUILD_FUZZERS=OFF \
  "-DHOSTMEM_TEST_WRAPPER=valgrind;--error-exitcode=99;--leak-check=full;--errors-for-leak-kinds=definite,indirect;--track-fds=no;-q"
HOSTMEM_UNDER_VALGRIND=1 ctest --test-dir "$out/valgrind" --output-on-failure -j"$jobs" -LE no-valgrind

if [ -x ci/fuzz-smoke.sh ]; then
  section "fuzz smoke (libFuzzer)"
  ci/fuzz-smoke.sh "$out"
fi

section "main job"
HOSTMEM_BUILD="$out/gcc" ci/main.sh
