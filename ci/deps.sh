#!/usr/bin/env bash
# Installs what hostmem's build, tests, fuzzers and benchmarks need, when missing (Debian 12).
# Usage: ci/deps.sh [minimal]   minimal: only what the main job needs (compiler, cmake, cmocka).
set -euo pipefail
want=(build-essential cmake pkg-config libcmocka-dev)
if [ "${1:-}" != minimal ]; then
  # python3 validates the JSON and JUnit outputs; mingw-w64 checks the public headers after <windows.h> and builds
  # hostmem.dll, whose tests run under wine64 (ci/windows.sh).
  want+=(clang libclang-rt-14-dev llvm valgrind afl++ libjemalloc-dev libmimalloc-dev python3
         gcc-mingw-w64-x86-64-posix mingw-w64-x86-64-dev wine64)
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/deps.sh: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
