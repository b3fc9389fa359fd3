#!/usr/bin/env bash
# Builds the fuzz targets for libFuzzer (clang, ASan + UBSan) and runs each for a bounded time from its seed corpus
# with its dictionary; fails on any crash, leak or timeout. Usage: ci/fuzz-smoke.sh [BUILD_ROOT] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-build-ci}
seconds=${2:-${HOSTMEM_FUZZ_SECONDS:-20}}
out="$root/fuzz-libfuzzer"
ci/build.sh "$out" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHOSTMEM_SANITIZE="address;undefined" \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" -DHOSTMEM_FUZZ_ENGINE=libfuzzer -DHOSTMEM_BUILD_TESTS=OFF
status=0
for target in fault_spec trace_parser; do
  work=$(mktemp -d)
  cp -r "corpus/$target/." "$work/"
  echo "fuzz_$target: ${seconds}s from $(ls "corpus/$target" | wc -l) seeds"
  if ! ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 \
       "$out/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -dict="fuzz/$target.dict" -artifact_prefix="$out/crash-$target-" "$work" >"$out/fuzz_$target.log" 2>&1; then
    echo "fuzz_$target FAILED; the end of its log:"
    tail -40 "$out/fuzz_$target.log"
    status=1
  fi
  grep -E "stat::number_of_executed_units|stat::average_exec_per_sec" "$out/fuzz_$target.log" | sed "s/^/  /"
  rm -rf "$work"
done
exit $status
