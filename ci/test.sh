#!/usr/bin/env bash
# Every test of hostmem, as CI runs it: installs what is missing, checks that includes go down the layers, then builds
# and runs the unit tests with gcc (Release), builds with clang (Release), builds for Windows and runs its tests under
# Wine (ci/windows.sh), runs the tests with clang under ASan+UBSan,
# under TSan, and under Valgrind memcheck; then the fuzz smoke run and the main job.
# Usage: ci/test.sh [quick]   quick: gcc build and tests only.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/deps.sh
out=${HOSTMEM_BUILD_ROOT:-build-ci}
jobs=$(nproc)
section() { printf '\n==== %s ====\n' "$*"; }

section "layers: includes go down"
ci/check-layers.sh

# The gcc stage is a Release build with default options, the build a user makes: gcc warns about more at -O3 (e.g.
# -Wformat-overflow), so its warnings are checked, and every test runs on the optimised code. This is cheaper than a
# separate Release stage; RelWithDebInfo (assertions and debug info) stays covered by the Valgrind stage.
section "gcc, Release, -Werror"
ci/build.sh "$out/gcc" -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=Release
ctest --test-dir "$out/gcc" --output-on-failure -j"$jobs"
[ "${1:-}" = quick ] && exit 0

# clang's Release warnings: compile only (the sanitizer stages below run clang's code).
section "clang, Release, -Werror (build only)"
ci/build.sh "$out/clang-release" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Release

section "Windows: mingw-w64 build, tests under Wine"
if command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 && [ -x /usr/lib/wine/wine64 ]; then
  ci/windows.sh "$out/windows" "$out/gcc" # the gcc build's hostmem replays the Windows traces
else
  echo "skipped: x86_64-w64-mingw32-gcc or /usr/lib/wine/wine64 missing"
fi

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

section "fuzz smoke (libFuzzer)"
ci/fuzz-smoke.sh "$out"

section "main job"
HOSTMEM_BUILD="$out/gcc" ci/main.sh
