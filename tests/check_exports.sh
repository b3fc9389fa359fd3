#!/usr/bin/env bash
# tests/check_exports.sh NM LIBRARY INCLUDE_DIR [HEADER...]: libhostmem.so exports exactly the public API, the
# functions and objects include/hostmem/*.h declare with HM_API
# (and the IIDs contract.h declares with HM_DEFINE_GUID): no internal symbol leaks out, no declared one is missing.
# A .dll is read with OBJDUMP in place of NM (its export table). Each HEADER named (e.g. trace.h) is left out: what it
# declares may be exported or not (a part of the library that build does not have yet).
set -euo pipefail
nm=$1 lib=$2 include=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ $lib == *.dll ]]; then
  "$nm" -p "$lib" | sed -n '/\[Ordinal\/Name Pointer\] Table/,/^$/p' | sed -nE 's/^[[:space:]]*\[ *[0-9]+\] (.*)$/\1/p' |
    sort -u >"$work/exported"
else
  # Defined dynamic symbols; names with a leading "__" are the toolchain's (sanitizer and coverage runtimes).
  "$nm" -D --defined-only "$lib" | awk 'NF == 3 && $3 !~ /^__/ && $3 !~ /^_(init|fini|edata|end)$/ { print $3 }' |
    sed 's/@.*//' | sort -u >"$work/exported"
fi
for header in "$@"; do
  grep -hE '^[[:space:]]*(extern[[:space:]]+)?HM_API[[:space:]]' "$include/hostmem/$header" |
    sed -nE 's/^[^(;]*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*[(;].*/\1/p' >>"$work/skipped.api"
done
touch "$work/skipped.api"
sort -u "$work/skipped.api" >"$work/skipped"
comm -23 "$work/exported" "$work/skipped" >"$work/exported.kept"
mv "$work/exported.kept" "$work/exported"
# The name before the "(" or ";" that ends an HM_API declaration: `HM_API T *name(...` or `extern HM_API T name;`.
grep -hE '^[[:space:]]*(extern[[:space:]]+)?HM_API[[:space:]]' "$include"/hostmem/*.h |
  sed -nE 's/^[^(;]*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*[(;].*/\1/p' >"$work/declared.api"
# The IIDs contract.h declares with HM_DEFINE_GUID(name, ...), which libhostmem defines and exports (src/iids.c).
grep -hE '^[[:space:]]*HM_DEFINE_GUID\(' "$include"/hostmem/*.h |
  sed -nE 's/^[[:space:]]*HM_DEFINE_GUID\(([A-Za-z_][A-Za-z0-9_]*),.*/\1/p' >>"$work/declared.api"
sort -u "$work/declared.api" | comm -23 - "$work/skipped" >"$work/declared"
if [ ! -s "$work/declared" ] || [ ! -s "$work/exported" ]; then
  echo "check_exports: found $(wc -l <"$work/declared") declared and $(wc -l <"$work/exported") exported symbols" >&2
  exit 1
fi
status=0
extra=$(comm -23 "$work/exported" "$work/declared")
missing=$(comm -13 "$work/exported" "$work/declared")
if [ -n "$extra" ]; then
  echo "check_exports: $lib exports symbols no public header declares:" $extra >&2
  status=1
fi
if [ -n "$missing" ]; then
  echo "check_exports: declared in include/hostmem/ but not exported by $lib:" $missing >&2
  status=1
fi
[ $status = 0 ] && echo "check_exports: $(wc -l <"$work/exported") symbols exported, each declared in include/hostmem/"
exit $status
