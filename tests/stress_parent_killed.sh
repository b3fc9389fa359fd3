#!/bin/sh
# A stress run's child dies with its parent: SIGKILL the parent (it can clean nothing up) and the child, which would
# otherwise go on hammering the host and growing its trace, must be gone within 2 s. Usage: stress_parent_killed.sh HOSTMEM
set -u
hostmem=$1
dir=$(mktemp -d "${TMPDIR:-/tmp}/hostmem-orphan.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
"$hostmem" stress --threads 1 --seconds 60 --trace-dir "$dir" >/dev/null 2>&1 &
parent=$!
child=
for _ in $(seq 50); do # up to 5 s for the child to start
    child=$(pgrep -P "$parent" | head -n 1)
    [ -n "$child" ] && break
    sleep 0.1
done
[ -n "$child" ] || { echo "FAIL: no child process appeared"; kill -KILL "$parent"; exit 1; }
sleep 0.3 # let it run
kill -KILL "$parent"
wait "$parent" 2>/dev/null
alive() { # running, not a zombie waiting to be reaped
    state=$(ps -o stat= -p "$1" 2>/dev/null)
    [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}
for _ in $(seq 20); do
    alive "$child" || { echo "the child died with its parent"; exit 0; }
    sleep 0.1
done
echo "FAIL: the child $child still runs 2 s after its parent was killed"
kill -KILL "$child"
exit 1
