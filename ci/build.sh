#!/usr/bin/env bash
# ci/build.sh DIR [cmake options...]: configure and build hostmem into DIR (warnings are errors). The build's output
# goes to DIR/build.log and is shown only when something fails.
set -euo pipefail
dir=$1; shift
mkdir -p "$dir"
if ! { cmake -S "$(dirname "$0")/.." -B "$dir" -DHOSTMEM_WERROR=ON "$@" && cmake --build "$dir" -j"$(nproc)"; } \
     >"$dir/build.log" 2>&1; then
  cat "$dir/build.log"
  echo "ci/build.sh: the build in $dir failed (log above)" >&2
  exit 1
fi
echo "built $dir"
