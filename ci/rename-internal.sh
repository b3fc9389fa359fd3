#!/usr/bin/env bash
# ci/rename-internal.sh [--apply] [BUILD_DIR]: give hostmem's internal functions and objects the internal prefix.
#
# The naming rule (docs/architecture.md): `hm_` (and `HostMem`) names what libhostmem.so exports, declared with
# HM_API in include/hostmem/; `hm__` names a symbol shared between files of hostmem that is not exported (libuv's
# uv_/uv__, mimalloc's mi_/_mi_; a leading underscore and a lowercase letter is reserved at file scope in C11, so the
# second underscore goes after the prefix). Static functions keep whatever name they have.
#
# The internal list is derived, not kept by hand: the hm_ symbols that the project's object files (src/, faults/,
# harness/, fuzz/; BUILD_DIR, default build/, must be a current build) define with external linkage, minus those
# libhostmem.so exports (`nm -D`, as tests/check_exports.sh reads them). Each is rewritten, as a whole word, to
# hm__<rest> in the sources, tests, fuzz targets, scripts and docs.
#
# Dry run by default: prints each rename and the files it touches. --apply rewrites the files in place; build and
# test after it. Exit 0 on success, 2 on bad usage or a missing build.
set -euo pipefail
apply=0 build=
for arg in "$@"; do
  case $arg in
    --apply) apply=1 ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "ci/rename-internal.sh: unknown option '$arg' (expected --apply)" >&2; exit 2 ;;
    *) [ -z "$build" ] || { echo "ci/rename-internal.sh: more than one BUILD_DIR ('$build', '$arg')" >&2; exit 2; }
       build=$arg ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
build=${build:-$root/build}
[ -d "$build" ] || { echo "ci/rename-internal.sh: no build directory '$build'" >&2; exit 2; }
build=$(cd "$build" && pwd)
nm=${NM:-nm}
lib=$build/libhostmem.so
[ -f "$lib" ] || { echo "ci/rename-internal.sh: $lib not found: build the project first" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Objects of the project's own code (not the tests' or the example host's: they only use names).
mapfile -d '' objects < <(find "$build" -path '*/CMakeFiles/*' -name '*.o' \
  \( -path '*/src/*' -o -path '*/faults/*' -o -path '*/harness/*' -o -path '*/fuzz/*' \) -print0)
[ ${#objects[@]} -gt 0 ] || { echo "ci/rename-internal.sh: no object files under $build" >&2; exit 2; }
# Defined with external linkage (upper-case type letter): functions, data, TLS, read-only data.
"$nm" --defined-only "${objects[@]}" 2>/dev/null | awk 'NF == 3 && $2 ~ /^[TDBRSVWGu]$/ { print $3 }' |
  grep -E '^hm_[A-Za-z0-9]' | sort -u >"$work/defined"
"$nm" -D --defined-only "$lib" | awk 'NF == 3 { print $3 }' | sed 's/@.*//' | sort -u >"$work/exported"
comm -23 "$work/defined" "$work/exported" >"$work/internal"
count=$(wc -l <"$work/internal")
[ "$count" -gt 0 ] || { echo "ci/rename-internal.sh: no internal hm_ symbol left: nothing to do"; exit 0; }

# Every text file of the project that may name them (build directories and .git excluded).
mapfile -d '' files < <(cd "$root" && find src faults harness fuzz tests include examples docs ci README.md \
  -type f \( -name '*.c' -o -name '*.h' -o -name '*.md' -o -name '*.sh' -o -name '*.txt' -o -name '*.py' \
  -o -name '*.gdb' \) ! -name rename-internal.sh -print0 2>/dev/null | sort -z)
pattern="\\b($(paste -sd'|' "$work/internal"))\\b"

cd "$root"
touched=()
for f in "${files[@]}"; do
  grep -qP "$pattern" "$f" && touched+=("$f")
done
while read -r sym; do
  n=$(grep -lw -- "$sym" "${touched[@]}" 2>/dev/null | wc -l)
  printf '%s -> hm__%s (%d file(s))\n' "$sym" "${sym#hm_}" "$n"
done <"$work/internal"
if [ $apply = 0 ]; then
  echo "ci/rename-internal.sh: dry run: $count internal symbol(s), ${#touched[@]} file(s) to rewrite; --apply to do it"
  exit 0
fi
[ ${#touched[@]} -gt 0 ] && perl -pi -e "s/$pattern/'hm__' . substr(\$1, 3)/ge" "${touched[@]}"
echo "ci/rename-internal.sh: renamed $count internal symbol(s) in ${#touched[@]} file(s); now build and test"
