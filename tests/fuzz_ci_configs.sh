#!/usr/bin/env bash
# The ClusterFuzzLite and OSS-Fuzz configurations cannot run here: check they stay consistent with fuzz/build.sh
# (which CI does run): each build.sh calls it, each Dockerfile uses the base builder and copies its build.sh, each
# project.yaml says C, and the target names they list are fuzz/build.sh's.
set -euo pipefail
src=$1
fail() { echo "fuzz_ci_configs: $*" >&2; exit 1; }
targets=$(sed -n 's/^targets="\(.*\)"$/\1/p' "$src/fuzz/build.sh")
[ -n "$targets" ] || fail "fuzz/build.sh has no targets=\"...\" line"
want=$(printf 'fuzz_%s ' $targets)
for dir in .clusterfuzzlite ci/oss-fuzz; do
  for f in Dockerfile project.yaml build.sh; do [ -f "$src/$dir/$f" ] || fail "$dir/$f is missing"; done
  grep -q '^"\$SRC/hostmem/fuzz/build.sh"$' "$src/$dir/build.sh" || fail "$dir/build.sh does not call fuzz/build.sh"
  [ -x "$src/$dir/build.sh" ] || fail "$dir/build.sh is not executable"
  bash -n "$src/$dir/build.sh" || fail "$dir/build.sh: syntax error"
  listed=$(grep -o 'fuzz_[a-z_]*' "$src/$dir/build.sh" | grep -v '^fuzz_$' | tr '\n' ' ')
  [ "$listed" = "$want" ] || fail "$dir/build.sh names '$listed', fuzz/build.sh builds '$want'"
  grep -q '^FROM gcr.io/oss-fuzz-base/base-builder' "$src/$dir/Dockerfile" || fail "$dir/Dockerfile: not base-builder"
  grep -q 'COPY .*build.sh \$SRC/' "$src/$dir/Dockerfile" || fail "$dir/Dockerfile does not copy its build.sh"
  grep -q 'WORKDIR \$SRC/hostmem' "$src/$dir/Dockerfile" || fail "$dir/Dockerfile: WORKDIR is not \$SRC/hostmem"
  grep -q '^language: c$' "$src/$dir/project.yaml" || fail "$dir/project.yaml: language is not c"
done
grep -q 'google/clusterfuzzlite/actions/build_fuzzers' "$src/ci/examples/cflite_pr.yml" ||
  fail "ci/examples/cflite_pr.yml does not build with ClusterFuzzLite"
grep -q 'language: c' "$src/ci/examples/cflite_pr.yml" || fail "ci/examples/cflite_pr.yml: language is not c"
echo "fuzz_ci_configs: .clusterfuzzlite and ci/oss-fuzz call fuzz/build.sh for $want"
