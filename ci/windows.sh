#!/usr/bin/env bash
# ci/windows.sh [BUILD_DIR [LINUX_BUILD_DIR]]: cross-compiles hostmem for 64-bit Windows (cmake/mingw-w64-x86_64.cmake:
# hostmem.dll, libhostmem.dll.a, libhostmem.a, tests/windows/), checks that hostmem.dll exports exactly the public
# API, and runs every test program under Wine, in a WINEPREFIX made fresh for this run (making one costs 5 to 20 s,
# so the programs share it), each with a timeout; then the traces recorded there are replayed, reduced and explored
# with the Linux hostmem of LINUX_BUILD_DIR. Exit 0 when all pass, 1 when any fails, 77 when mingw-w64 or wine64 is
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build-windows}
wine=${HOSTMEM_WINE:-/usr/lib/wine/wine64}
timeout_s=${HOSTMEM_WINE_TIMEOUT:-120}
if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || [ ! -x "$wine" ]; then
  echo "ci/windows.sh: x86_64-w64-mingw32-gcc or $wine missing, skipped"
  exit 77
fi
cmake --no-warn-unused-cli -S . -B "$out" -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DHOSTMEM_WERROR=ON >/dev/null
cmake --build "$out" -j2 >/dev/null
tests/check_exports.sh x86_64-w64-mingw32-objdump "$out/hostmem.dll" include
# ... and a program linked with the static libhostmem.a exports nothing of it.
if x86_64-w64-mingw32-objdump -p "$out/test_win_faults.exe" | grep -q 'Ordinal/Name Pointer'; then
  echo "ci/windows.sh: test_win_faults.exe (linked with libhostmem.a) exports symbols: hostmem's API leaks out" >&2
  exit 1
fi

prefixes=$(mktemp -d)
# The prefix's wineserver outlives the last program by a few seconds, writing into the prefix: stopped first (killed,
# then waited for).
wineserver=$(dirname "$wine")/wineserver
cleanup() {
  if [ -x "$wineserver" ]; then
    WINEPREFIX="$prefixes/prefix" "$wineserver" -k 2>/dev/null || true
    WINEPREFIX="$prefixes/prefix" "$wineserver" -w 2>/dev/null || true
  fi
  rm -rf "$prefixes"
}
trap cleanup EXIT
failures=0
# run NAME PROGRAM [ARG...]: one program under Wine (the environment as given).
run() {
  local name=$1
  shift
  local start=$SECONDS status=0
  WINEDEBUG=-all WINEPREFIX="$prefixes/prefix" timeout "$timeout_s" "$wine" "$@" >"$prefixes/$name.log" 2>&1 ||
    status=$?
  if [ $status = 0 ]; then
    echo "ci/windows.sh: PASS $name ($((SECONDS - start)) s)"
  else
    echo "ci/windows.sh: FAIL $name (exit $status$([ $status = 124 ] && echo ", timed out after $timeout_s s"))" >&2
    cat "$prefixes/$name.log" >&2
    failures=$((failures + 1))
  fi
}
run manager "$out/test_win_manager.exe"
# The installed tree as a host outside it uses it: the headers, libhostmem.dll.a, and hostmem.dll beside the program.
cmake --install "$out" --prefix "$prefixes/install" >/dev/null
mkdir -p "$prefixes/host"
x86_64-w64-mingw32-gcc -std=c11 -O1 -Wall -Werror -static-libgcc -I"$prefixes/install/include" -Itests/windows \
  tests/windows/test_win_manager.c -o "$prefixes/host/test_win_manager.exe" -L"$prefixes/install/lib" -lhostmem
cp "$prefixes/install/bin/hostmem.dll" "$prefixes/host/"
run installed-manager "$prefixes/host/test_win_manager.exe"
run faults "$out/test_win_faults.exe"
run recorder "$out/test_win_recorder.exe"
# HOSTMEM_FAULTS as a Windows process inherits it: Wine hands the Unix environment to the program.
HOSTMEM_FAULTS='VirtualAlloc,level=process,nth=1' run faults-environment "$out/test_win_faults.exe" --environment
# The recorder end to end: traces recorded here replay, reduce and explore with the Linux hostmem, from
# LINUX_BUILD_DIR (argument 2, else $HOSTMEM_LINUX_BUILD, else build/; built when it has no hostmem yet).
linux=${2:-${HOSTMEM_LINUX_BUILD:-build}}
if [ ! -x "$linux/hostmem" ]; then
  cmake -S . -B "$linux" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$linux" --target hostmem_cli -j2 >/dev/null
fi
# run_script NAME: tests/windows/NAME.sh, which runs its own programs under Wine (in the shared prefix) and checks
# their traces with the Linux hostmem; it prints its own lines, so only its verdict is said here.
run_script() {
  local name=$1 start=$SECONDS
  if WINEPREFIX="$prefixes/prefix" bash "tests/windows/$name.sh" "$out" "$linux/hostmem" "$wine"; then
    echo "ci/windows.sh: PASS $name ($((SECONDS - start)) s)"
  else
    echo "ci/windows.sh: FAIL $name" >&2
    failures=$((failures + 1))
  fi
}
run_script e2e_record
# docs/windows.md: its snippet and commands, as the page gives them.
run_script docs_windows
if [ $failures != 0 ]; then
  echo "ci/windows.sh: $failures Windows test program(s) failed" >&2
  exit 1
fi
echo "ci/windows.sh: every Windows test passed under Wine"
