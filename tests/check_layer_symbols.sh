#!/usr/bin/env bash
# tests/check_layer_symbols.sh NM LAYER: OBJECT... LAYER: OBJECT... (lowest layer first): no layer's object files use
# a symbol that a higher layer defines. The include check (ci/check-layers.sh) cannot see a call made through a
# public header, such as the manager calling the fault layer's HostMemWrapFaults; the linker's view can.
set -euo pipefail
nm=$1; shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
layers=()
for arg in "$@"; do
  if [[ $arg == *: ]]; then
    layers+=("${arg%:}")
    : >"$work/${#layers[@]}.objects"
  elif [ ${#layers[@]} -gt 0 ]; then
    echo "$arg" >>"$work/${#layers[@]}.objects"
  fi
done
if [ ${#layers[@]} -lt 2 ]; then
  echo "usage: check_layer_symbols.sh NM LAYER: OBJECT... LAYER: OBJECT..." >&2
  exit 2
fi
for i in "${!layers[@]}"; do
  n=$((i + 1))
  xargs "$nm" --defined-only <"$work/$n.objects" | awk 'NF == 3 && $2 ~ /[A-Z]/ { print $3 }' | sort -u >"$work/$n.defined"
  xargs "$nm" --undefined-only <"$work/$n.objects" | awk '$1 == "U" { print $2 }' | sort -u >"$work/$n.undefined"
  [ -s "$work/$n.defined" ] || { echo "check_layer_symbols: layer ${layers[$i]} defines nothing" >&2; exit 1; }
done
status=0
for i in "${!layers[@]}"; do
  for j in "${!layers[@]}"; do
    [ "$j" -gt "$i" ] || continue
    up=$(comm -12 "$work/$((i + 1)).undefined" "$work/$((j + 1)).defined")
    if [ -n "$up" ]; then
      echo "check_layer_symbols: ${layers[$i]} uses what ${layers[$j]} defines:" $up >&2
      status=1
    fi
  done
done
[ $status = 0 ] && echo "check_layer_symbols: no layer of ${layers[*]} uses a symbol of a layer above it"
exit $status
