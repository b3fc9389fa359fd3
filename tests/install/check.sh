#!/usr/bin/env bash
# Installs the build into a scratch prefix, then builds a consumer with find_package(hostmem) and with pkg-config.
set -euo pipefail
build=$1 src=$2 cc=${3:-cc}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_C_COMPILER="$cc" >/dev/null
cmake --build "$work/cmake" >/dev/null
LD_LIBRARY_PATH="$work/prefix/lib:$work/prefix/lib64:$work/prefix/lib/x86_64-linux-gnu" "$work/cmake/consumer_shared"
"$work/cmake/consumer_static"
pcdir=$(dirname "$(find "$work/prefix" -name hostmem.pc | head -1)")
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs --static hostmem)
# shellcheck disable=SC2086
"$cc" -std=c11 -o "$work/pc_consumer" "$src/consumer.c" $flags
LD_LIBRARY_PATH="$(dirname "$pcdir")" "$work/pc_consumer"
echo "install: find_package and pkg-config consumers built and ran"
