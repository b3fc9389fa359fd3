#!/usr/bin/env bash
# The main job: builds hostmem (installing what is missing) and runs the built-in host through conformance, a
# short stress with faults and an OOM replay, ending in a one-screen report.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${HOSTMEM_BUILD:-}
if [ -z "$build" ]; then
  ci/deps.sh minimal
  build=build-main
  ci/build.sh "$build" -DCMAKE_BUILD_TYPE=Release -DHOSTMEM_BUILD_TESTS=OFF -DHOSTMEM_BUILD_FUZZERS=OFF
fi
exec "$build/hostmem" demo
