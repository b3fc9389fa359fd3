#!/usr/bin/env bash
# Builds the fuzz targets for libFuzzer (clang, ASan + UBSan) and runs each from its seed corpus with its dictionary;
# fails on any crash, leak or timeout. Then the proof that the call-sequence fuzzer finds bugs: against each
# deliberately broken host (tests/broken_hosts) it must report the right mismatch within a bounded number of runs.
# By default a fixed number of runs from a fixed seed, so CI gives the same answer every time; with SECONDS (or
# HOSTMEM_FUZZ_SECONDS) each target explores for that long instead.
# Usage: ci/fuzz-smoke.sh [BUILD_ROOT] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-build-ci}
seconds=${2:-${HOSTMEM_FUZZ_SECONDS:-}}
declare -A runs=([fault_spec]=300000 [trace_parser]=4000 [calls]=8000 [calls_faults]=8000)
out="$root/fuzz-libfuzzer"
ci/build.sh "$out" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHOSTMEM_SANITIZE="address;undefined" \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" -DHOSTMEM_FUZZ_ENGINE=libfuzzer -DHOSTMEM_BUILD_TESTS=OFF
export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1
status=0

# fuzz TARGET LOG [libFuzzer flags...]: runs a target (of the build in $fuzz_dir, default the one above) from a copy
# of its seeds; returns libFuzzer's status.
fuzz() {
  local target=$1 log=$2
  shift 2
  local work
  work=$(mktemp -d)
  cp -r "corpus/$target/." "$work/"
  local dict=()
  [ -f "fuzz/$target.dict" ] && dict=("-dict=fuzz/$target.dict")
  local rc=0
  "${fuzz_dir:-$out/fuzz}/fuzz_$target" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" "$@" "$work" >"$log" 2>&1 ||
    rc=$?
  rm -rf "$work"
  return $rc
}

for target in fault_spec trace_parser calls calls_faults; do
  if [ -n "$seconds" ]; then limit=(-max_total_time="$seconds"); else limit=(-runs="${runs[$target]}" -seed=1); fi
  echo "fuzz_$target: ${limit[*]} from $(ls "corpus/$target" | wc -l) seeds"
  if ! fuzz "$target" "$out/fuzz_$target.log" "${limit[@]}" -artifact_prefix="$out/crash-$target-"; then
    echo "fuzz_$target FAILED; the end of its log:"
    tail -40 "$out/fuzz_$target.log"
    status=1
  fi
  grep -E "stat::number_of_executed_units|stat::average_exec_per_sec" "$out/fuzz_$target.log" | sed "s/^/  /"
done

# The seed corpora, minimised: how many seeds a minimal set that keeps all their coverage needs (a corpus that grows
# redundant shows here; `-merge=1 NEW corpus/T` makes the minimal set).
for target in fault_spec trace_parser calls calls_faults; do
  kept=$(mktemp -d)
  "$out/fuzz/fuzz_$target" -merge=1 "$kept" "corpus/$target" >"$out/merge_$target.log" 2>&1 || {
    echo "minimising corpus/$target FAILED; the end of its log:"; tail -20 "$out/merge_$target.log"; status=1; }
  echo "corpus/$target: $(ls "corpus/$target" | wc -l) seeds, a minimal set keeps $(ls "$kept" | wc -l)"
  rm -rf "$kept"
done

# The OSS-Fuzz / ClusterFuzzLite build (fuzz/build.sh with OSS-Fuzz's ASan flags): it builds, fuzz_calls runs from the
# seeds clean, and only the code under test counts as coverage (the driver and its model are left out: no function
# of theirs among the instrumented ones, src/'s are).
oss="$root/fuzz-oss-fuzz"
oss_flags="-O1 -fno-omit-frame-pointer -gline-tables-only -fsanitize=address -fsanitize-address-use-after-scope"
oss_flags="$oss_flags -fsanitize=fuzzer-no-link"
oss_log="$oss/fuzz_calls.log"
mkdir -p "$oss"
if ! CC=clang CXX=clang++ CFLAGS="$oss_flags" CXXFLAGS="$oss_flags" WORK="$oss" OUT="$oss/out" fuzz/build.sh \
     >"$oss/build.log" 2>&1; then
  echo "fuzz/build.sh FAILED; the end of its log:"
  tail -20 "$oss/build.log"
  status=1
elif ! fuzz_dir="$oss/out" fuzz calls "$oss_log" -runs=4000 -seed=1 -print_coverage=1 -artifact_prefix="$oss/crash-calls-"; then
  echo "fuzz/build.sh's fuzz_calls FAILED; the end of its log:"
  tail -40 "$oss_log"
  status=1
elif grep -Eq "^(UN)?COVERED_FUNC: .*harness/check/(calls|model)\.c" "$oss_log" ||
     ! grep -Eq "^COVERED_FUNC: .*src/vm\.c" "$oss_log"; then
  echo "fuzz/build.sh's fuzz_calls: the driver is in the coverage, or src/ is not: $(grep -Eo "Loaded 1 modules +\([0-9]+" "$oss_log")"
  status=1
else
  echo "fuzz/build.sh (OSS-Fuzz's ASan flags): fuzz_calls 4 000 runs clean;" \
       "$(grep -Eo "[0-9]+ inline 8-bit counters" "$oss_log" | head -1), the driver and its model out of the coverage"
fi

# AFL++: the same targets built with afl-clang-fast (AFL++'s libFuzzer driver: persistent mode, shared-memory test
# cases), each fuzzed for a bounded time from its seeds; any saved crash fails.
afl_seconds=${seconds:-10}
afl="$root/fuzz-afl"
CC=afl-clang-fast AFL_QUIET=1 ci/build.sh "$afl" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHOSTMEM_FUZZ_ENGINE=afl \
  -DHOSTMEM_BUILD_TESTS=OFF >/dev/null
for target in fault_spec trace_parser calls calls_faults; do
  rm -rf "$afl/out-$target"
  dict=()
  [ -f "fuzz/$target.dict" ] && dict=(-x "fuzz/$target.dict")
  ASAN_OPTIONS=abort_on_error=1:symbolize=0 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1 \
    afl-fuzz -V "$afl_seconds" -i "corpus/$target" -o "$afl/out-$target" "${dict[@]}" -- "$afl/fuzz/fuzz_$target" \
    >"$afl/afl_$target.log" 2>&1 || true
  stats="$afl/out-$target/default/fuzzer_stats"
  crashes=$(awk -F: '/^saved_crashes/ {gsub(/ /, "", $2); print $2}' "$stats" 2>/dev/null || true)
  echo "afl++ fuzz_$target: ${afl_seconds}s, $(awk -F: '/^execs_done/ {gsub(/ /, "", $2); print $2}' "$stats" 2>/dev/null) execs,"\
       "$(awk -F: '/^execs_per_sec/ {gsub(/ /, "", $2); print $2}' "$stats" 2>/dev/null) exec/s, crashes: ${crashes:-none recorded}"
  if [ "${crashes:-x}" != 0 ]; then
    echo "afl++ fuzz_$target FAILED (crashes in $afl/out-$target/default/crashes, or no stats); the end of its log:"
    tail -20 "$afl/afl_$target.log"
    status=1
  fi
done

# The proof: each broken host is caught, by the check its bug breaks, within 20 000 runs from the seeds.
echo "fuzz_calls against the deliberately broken hosts (each must be caught):"
declare -A expect=(
  [no_zero_recommit]="freshly committed pages read as zero"
  [dirty_page]="it holds 0x5a5a5a5a5a5a5a5a.*freshly committed pages read as zero"
  [merged_regions]="expected \{Base"
  [overlapping_heap]="overlaps live block|changed behind the runtime's back"
  [release_anywhere]="returned S_OK .*Windows' rules say HRESULT_FROM_WIN32\(ERROR_INVALID_ADDRESS\)"
  [crash_on_query]="SEGV on unknown address"
  [misaligned]="which is not 16-byte aligned"
  [size_wrap]="returned S_OK .*Windows' rules say E_OUTOFMEMORY"
  [short_block]="use-after-poison.* in block_fill|overlaps live block|changed behind the runtime's back"
  [lock_in_callback]="holding a lock: VirtualQuery from inside the callback did not return in 2 s"
  [leaky]="spurious out-of-memory: E_OUTOFMEMORY at eProcessCritical")
# The host options some need: a budget small enough for the seeds to drive the load past the notification threshold.
declare -A host_options=([lock_in_callback]="limit=64M")
# (racy_heap is not here: the fuzzer calls from one thread; hostmem stress --workload heap catches it, in ctest.)
hosts=$(cd "$out/hosts" && pwd)
for bug in no_zero_recommit dirty_page merged_regions overlapping_heap release_anywhere crash_on_query misaligned size_wrap \
           short_block lock_in_callback leaky; do
  log="$out/fuzz_calls-broken-$bug.log"
  if HOSTMEM_FUZZ_HOST="$hosts/libhostmem_broken_$bug.so" HOSTMEM_FUZZ_HOST_OPTIONS="${host_options[$bug]:-}" \
       HOSTMEM_FUZZ_CALLBACK_SECONDS=2 fuzz calls "$log" -runs=20000 -seed=1 -artifact_prefix="$out/broken-$bug-"; then
    echo "  $bug: NOT caught in 20 000 runs"
    status=1
  elif grep -Eq "${expect[$bug]}" "$log"; then
    runs_done=$(grep -Eo "^#[0-9]+" "$log" | tail -1 | tr -d '#' || true)
    echo "  $bug: caught within ${runs_done:-the seed} runs: $(grep -Em1 "${expect[$bug]}" "$log" | sed 's/^ *//' | cut -c1-110)"
  else
    echo "  $bug: the fuzzer stopped, but not with the expected finding; the end of its log:"
    tail -30 "$log"
    status=1
  fi
done

# A plugin built for coverage-guided fuzzing as docs/fuzzing.md says (the example host with
# -fsanitize=fuzzer-no-link,address; the target provides the runtime) loads, its coverage is counted (a second
# module) and the seeds' runs are clean.
plugin="$(cd "$out" && pwd)/libexample_mmap_fuzz.so" # absolute: the build root may be relative or not
log="$out/fuzz_calls-example-instrumented.log"
cov_flags=(-shared -fPIC -g -O1 -fsanitize=fuzzer-no-link,address -I include)
if ! clang "${cov_flags[@]}" -o "$plugin" examples/mmap_host/mmap_host.c; then
  echo "building the example host for coverage-guided fuzzing FAILED"
  status=1
elif HOSTMEM_FUZZ_HOST="$plugin" fuzz calls "$log" -runs=2000 -seed=1 -artifact_prefix="$out/example-" &&
     grep -q "Loaded 2 modules" "$log"; then
  echo "the example host built for coverage: $(grep -Eo "cov: [0-9]+" "$log" | tail -1), 2 000 runs clean"
else
  echo "the example host built for coverage FAILED (not loaded, not instrumented, or a finding); the end of its log:"
  tail -20 "$log"
  status=1
fi
exit $status
