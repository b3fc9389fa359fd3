#!/usr/bin/env bash
# tests/check_exports.sh NM LIBRARY INCLUDE_DIR: libhostmem.so exports exactly the public API, the functions and
# objects include/hostmem/*.h declare with HM_API
# (and the IIDs contract.h declares with HM_DEFINE_GUID): no internal symbol leaks out, no declared one is missing.
set -euo pipefail
nm=$1 lib=$2 include=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Defined dynamic symbols; names with a leading "__" are the toolchain's (sanitizer and coverage runtimes).
"$nm" -D --defined-only "$lib" | awk 'NF == 3 && $3 !~ /^__/ && $3 !~ /^_(init|fini|edata|end)$/ { print $3 }' |
  sed 's/@.*//' | sort -u >"$work/exported"
# The name before the "(" or ";" that ends an HM_API declaration: `HM_API T *name(...` or `extern HM_API T name;`.
grep -hE '^[[:space:]]*(extern[[:space:]]+)?HM_API[[:space:]]' "$include"/hostmem/*.h |
  sed -nE 's/^[^(;]*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*[(;].*/\1/p' >"$work/declared.api"
# The IIDs contract.h declares with HM_DEFINE_GUID(name, ...), which libhostmem defines and exports (src/iids.c).
grep -hE '^[[:space:]]*HM_DEFINE_GUID\(' "$include"/hostmem/*.h |
  sed -nE 's/^[[:space:]]*HM_DEFINE_GUID\(([A-Za-z_][A-Za-z0-9_]*),.*/\1/p' >>"$work/declared.api"
sort -u "$work/declared.api" >"$work/declared"
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
