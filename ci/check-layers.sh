#!/usr/bin/env bash
# ci/check-layers.sh [ROOT]: every #include of hostmem's sources goes down the layers, never up. Lowest first:
#   include/hostmem/  the public API: includes only public headers, and none of them the umbrella hostmem.h
#   src/              the built-in manager
#   faults/           the fault layer
#   harness/trace/    the trace format, reader, writer, recorder, replay, reduce
#   harness/          HostMemCreateManager (harness/factory.c): composes src/, faults/ and the recorder
#   harness/check/    conform, stress, the call-sequence driver and model, the host loader and isolation helper
#   harness/cli/      the hostmem command
#   fuzz/             the fuzz targets: nothing outside fuzz/ includes from it
# examples/ (a third-party host) includes only the public API; tests/ anything but fuzz/.
# An include is resolved as the compiler does: next to the including file first, then in each of these folders. It
# passes when it resolves into a folder the including file may use; it fails when it resolves only into others.
# Exit 0 when every include goes down, 1 (with each offending file:line) otherwise.
set -euo pipefail
root=$(cd "${1:-$(dirname "$0")/..}" && pwd)
cd "$root"

roots=(include src faults harness fuzz examples tests) # harness/trace/, check/ and cli/ are under harness/
search=(include src faults harness/trace harness harness/check harness/cli fuzz) # the project's include path

# layer: the folder a path (relative to root, normalised) belongs to, or "other". (Sets a variable: no subshell.)
layer_of() {
  case $1 in
    harness/trace/*) layer=harness/trace ;;
    harness/check/*) layer=harness/check ;;
    harness/cli/*) layer=harness/cli ;;
    include/* | src/* | faults/* | harness/* | fuzz/* | examples/* | tests/*) layer=${1%%/*} ;;
    *) layer=other ;;
  esac
}

# allowed: the folders a file of a layer may include from.
allowed_for() {
  case $1 in
    include) allowed="include" ;;
    src) allowed="include src" ;;
    faults) allowed="include src faults" ;;
    harness/trace) allowed="include src faults harness/trace" ;;
    harness) allowed="include src faults harness/trace harness" ;;
    harness/check) allowed="include src faults harness/trace harness harness/check" ;;
    harness/cli) allowed="include src faults harness/trace harness harness/check harness/cli" ;;
    fuzz) allowed="include src faults harness/trace harness harness/check harness/cli fuzz" ;;
    examples) allowed="include examples" ;;
    tests) allowed="include src faults harness/trace harness harness/check harness/cli tests" ;;
  esac
}

# normal: path with its "." and ".." parts resolved.
normalise() {
  local part out=()
  local IFS=/
  for part in $1; do
    case $part in
      . | '') ;;
      ..) [ ${#out[@]} -gt 0 ] && unset 'out[${#out[@]}-1]' ;;
      *) out+=("$part") ;;
    esac
  done
  normal="${out[*]}"
}

violations=0 checked=0
report() {
  echo "ci/check-layers.sh: $1" >&2
  violations=$((violations + 1))
}

mapfile -d '' files < <(find "${roots[@]}" -type f \( -name '*.c' -o -name '*.h' \) -print0 | sort -z)
[ ${#files[@]} -gt 0 ] || { echo "ci/check-layers.sh: no sources under $root" >&2; exit 1; }
while IFS=: read -r file line name; do
  checked=$((checked + 1))
  layer_of "$file"
  from=$layer
  allowed_for "$from"
  may=" $allowed "
  # Where the name resolves: next to the file first (quoted includes), else in each folder of the include path.
  found=()
  if [ -f "${file%/*}/$name" ]; then
    normalise "${file%/*}/$name"
    found=("$normal")
  else
    for d in "${search[@]}"; do
      if [ -f "$d/$name" ]; then
        normalise "$d/$name"
        found+=("$normal")
      fi
    done
  fi
  [ ${#found[@]} -eq 0 ] && continue # a system header
  ok=0
  for f in "${found[@]}"; do
    layer_of "$f"
    [[ $may == *" $layer "* ]] && ok=1
  done
  if [ $ok = 0 ]; then
    report "$file:$line includes ${found[0]}: $from/ may include only from$(printf ' %s/' $allowed)"
  elif [ "$from" = include ] && [ "${found[0]##*/}" = hostmem.h ] && [ "${file##*/}" != hostmem.h ]; then
    report "$file:$line includes the umbrella hostmem.h: a public header includes only what it uses"
  fi
done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]' "${files[@]}" |
           sed -nE 's/^([^:]+):([0-9]+):[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]([^>"]+)[>"].*/\1:\2:\3/p')

if [ $violations -gt 0 ]; then
  echo "ci/check-layers.sh: $violations include(s) going up the layers (see the list at the top of this script)" >&2
  exit 1
fi
echo "ci/check-layers.sh: $checked includes of ${#files[@]} files go down the layers"
