#!/bin/bash -eu
# Builds every fuzz target the way OSS-Fuzz and ClusterFuzzLite expect (their build.sh contract): compiler and flags
# from $CC/$CXX/$CFLAGS, the engine from $LIB_FUZZING_ENGINE, and into $OUT each target with its
# <target>_seed_corpus.zip, <target>.dict and <target>.options. Runs unchanged from an OSS-Fuzz Dockerfile
# (`COPY . $SRC/hostmem`, `WORKDIR $SRC/hostmem`, `COPY fuzz/build.sh $SRC/`), or locally:
#   CC=clang CXX=clang++ CFLAGS="-fsanitize=address,fuzzer-no-link" CXXFLAGS="-fsanitize=address,fuzzer-no-link" \
#     LIB_FUZZING_ENGINE=-fsanitize=fuzzer OUT=/tmp/out fuzz/build.sh
# (CXXFLAGS too: the targets link with clang++.)
set -eu # also when run as `bash fuzz/build.sh`, which ignores the first line's flags
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the output directory}" "${CC:=clang}" "${CXX:=clang++}" "${CFLAGS:=}" "${CXXFLAGS:=}"
: "${LIB_FUZZING_ENGINE:=-fsanitize=fuzzer}"
export LIB_FUZZING_ENGINE
build=${WORK:-/tmp}/hostmem-oss-fuzz-build
targets="fault_spec trace_parser calls calls_faults"
# What OSS-Fuzz fuzzes is hostmem's own manager: only its code counts as coverage (HOSTMEM_FUZZ_DRIVER_COVERAGE).
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_C_FLAGS="$CFLAGS" -DCMAKE_CXX_FLAGS="$CXXFLAGS" -DHOSTMEM_FUZZ_ENGINE=oss-fuzz -DHOSTMEM_BUILD_TESTS=OFF \
  -DHOSTMEM_WERROR=OFF -DHOSTMEM_FUZZ_DRIVER_COVERAGE=OFF
cmake --build "$build" -j"$(nproc)" --target $(printf 'fuzz_%s ' $targets)
mkdir -p "$OUT"
for t in $targets; do
  cp "$build/fuzz/fuzz_$t" "$OUT/"
  # zip may be missing outside OSS-Fuzz's images; Python's zipfile makes the same archive.
  python3 -c 'import sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for p in sorted(pathlib.Path(sys.argv[2]).iterdir()):
        z.write(p, p.name)' "$OUT/fuzz_${t}_seed_corpus.zip" "corpus/$t"
  [ -f "fuzz/$t.dict" ] && cp "fuzz/$t.dict" "$OUT/fuzz_$t.dict"
  [ -f "fuzz/fuzz_$t.options" ] && cp "fuzz/fuzz_$t.options" "$OUT/fuzz_$t.options"
done
echo "fuzz targets in $OUT: $(printf 'fuzz_%s ' $targets)"
