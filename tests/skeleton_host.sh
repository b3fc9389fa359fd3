#!/usr/bin/env sh
# tests/skeleton_host.sh CC SOURCE_DIR HOSTMEM: docs/writing-a-host.md shows examples/skeleton_host/skeleton_host.c
# in full (the two must not drift apart); it compiles against <hostmem/contract.h> alone, links no hostmem library,
# and hostmem conform loads it and passes its COM and heap rules (its virtual-memory methods are stubs: exit 1).
set -eu
cc=$1 src=$2 hostmem=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The ```c block after the marker line naming the file.
awk '/<!-- the file examples\/skeleton_host\/skeleton_host.c/ { marked = 1; next }
     marked && /^```c$/ { inside = 1; next }
     inside && /^```$/ { exit }
     inside { print }' "$src/docs/writing-a-host.md" >"$work/from_doc.c"
if ! cmp -s "$work/from_doc.c" "$src/examples/skeleton_host/skeleton_host.c"; then
  echo "skeleton_host: the code in docs/writing-a-host.md differs from examples/skeleton_host/skeleton_host.c:" >&2
  diff "$src/examples/skeleton_host/skeleton_host.c" "$work/from_doc.c" | head -20 >&2
  exit 1
fi
"$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror -shared -fPIC -Wl,--no-undefined -I "$src/include" \
  -o "$work/libmyhost.so" "$src/examples/skeleton_host/skeleton_host.c" -lpthread
status=0
"$hostmem" conform --host "$work/libmyhost.so" >"$work/conform.out" 2>&1 || status=$?
for rule in com.queryinterface com.refcount heap.free-foreign-pointer heap.double-free callback.registered-addref; do
  if ! grep -q "PASS  $rule\$" "$work/conform.out"; then
    echo "skeleton_host: conform did not pass $rule on the skeleton:" >&2
    cat "$work/conform.out" >&2
    exit 1
  fi
done
if [ "$status" != 1 ]; then
  echo "skeleton_host: conform exited $status on a host with stub virtual-memory methods (expected 1)" >&2
  exit 1
fi
echo "skeleton_host: the documented skeleton compiles without libhostmem and conform loads it"
