#!/usr/bin/env bash
# Installs the build into a scratch prefix, then builds a consumer with find_package(hostmem) and with pkg-config,
# and a host plugin against the installed <hostmem/contract.h> alone.
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
# A host built against the installed <hostmem/contract.h> alone (no library), loaded by the installed CLI.
"$cc" -std=c11 -Wall -Wextra -Werror -shared -fPIC -Wl,--no-undefined -I"$work/prefix/include" \
  -o "$work/libskeleton.so" "$src/../../examples/skeleton_host/skeleton_host.c" -lpthread
"$work/prefix/bin/hostmem" conform --host "$work/libskeleton.so" --filter com. | grep -q ' 0 failed' || {
  echo "install: the installed hostmem does not load a host built against the installed contract.h" >&2
  exit 1
}
echo "install: find_package and pkg-config consumers built and ran; a contract.h-only host loaded"
