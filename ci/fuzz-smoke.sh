#!/usr/bin/env bash
# Builds the fuzz targets for libFuzzer (clang, ASan + UBSan) and runs each from its seed corpus with its dictionary;
# fails on any crash, leak or timeout. By default a fixed number of runs from a fixed seed, so CI gives the same answer
# every time; with SECONDS (or HOSTMEM_FUZZ_SECONDS) it explores for that long instead.
# Usage: ci/fuzz-smoke.sh [BUILD_ROOT] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-build-ci}
seconds=${2:-${HOSTMEM_FUZZ_SECONDS:-}}
declare -A runs=([fault_spec]=300000 [trace_parser]=4000)
out="$root/fuzz-libfuzzer"
ci/build.sh "$out" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHOSTMEM_SANITIZE="address;undefined" \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" -DHOSTMEM_FUZZ_ENGINE=libfuzzer -DHOSTMEM_BUILD_TESTS=OFF
status=0
for target in fault_spec trace_parser; do
  work=$(mktemp -d)
  cp -r "corpus/$target/." "$work/"
  if [ -n "$seconds" ]; then limit="-max_total_time=$seconds"; else limit="-runs=${runs[$target]} -seed=1"; fi
  echo "fuzz_$target: $limit from $(ls "corpus/$target" | wc -l) seeds"
  # shellcheck disable=SC2086
  if ! ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 \
       "$out/fuzz/fuzz_$target" $limit -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -dict="fuzz/$target.dict" -artifact_prefix="$out/crash-$target-" "$work" >"$out/fuzz_$target.log" 2>&1; then
    echo "fuzz_$target FAILED; the end of its log:"
    tail -40 "$out/fuzz_$target.log"
    status=1
  fi
  grep -E "stat::number_of_executed_units|stat::average_exec_per_sec" "$out/fuzz_$target.log" | sed "s/^/  /"
  rm -rf "$work"
done
exit $status
