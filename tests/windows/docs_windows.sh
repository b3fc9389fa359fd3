#!/usr/bin/env bash
# tests/windows/docs_windows.sh WINDOWS_BUILD HOSTMEM [WINE]: docs/windows.md's snippet and commands, as the page gives
# them (ci/windows.sh runs it). The page's fenced blocks tagged `test:NAME` are taken from the file:
#   test:host_control  the C snippet, saved as host_control.c
#   test:build         run with bash in a folder where hostmem/ is the source tree (include/, build-windows/) and
#                      my_host.o is tests/windows/doc_host_main.c compiled (the runtime's side)
#   test:run           saved as run-my-host.bat and run by Wine's cmd: it must print exactly one "oom:" line
#   test:linux         run with bash after the trace is copied here as run-1234.trace, HOSTMEM first on PATH; its
#                      output must be exactly test:linux-output
#   test:rerun         saved as a batch file and run: it must fail the same call as test:run
# Each check prints PASS or FAIL; exit 0 when all pass, 1 otherwise.
set -uo pipefail
win=$(cd "$1" && pwd)
hostmem=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
wine=${3:-/usr/lib/wine/wine64}
root=$(cd "$(dirname "$0")/../.." && pwd)
page=$root/docs/windows.md
check_name=docs_windows
source "$(dirname "${BASH_SOURCE[0]}")/wine_check.sh"
# block NAME: the lines of the page's block whose fence is "```LANG test:NAME".
block() { awk -v tag="test:$1" '/^```/ { if (inside) { inside = 0; next } if ($2 == tag) { inside = 1; next } } inside' "$page"; }
for name in host_control build run linux linux-output rerun; do
  if [ -z "$(block "$name")" ]; then
    echo "docs_windows: FAIL docs/windows.md has no block tagged test:$name" >&2
    exit 1
  fi
done
# wine_bat NAME LOG: the block NAME as a batch file (CR LF lines), run by Wine's cmd here; Unix line ends in LOG.
wine_bat() {
  block "$1" | sed 's/$/\r/' >"$work/$1.bat"
  (cd "$work" && timeout 120 "$wine" cmd /c "$1.bat") >"$2.crlf" 2>&1
  local status=$?
  tr -d '\r' <"$2.crlf" >"$2"
  return $status
}

cd "$work" || exit 1
mkdir hostmem
ln -s "$root/include" hostmem/include
ln -s "$win" hostmem/build-windows
block host_control >host_control.c
x86_64-w64-mingw32-gcc -std=c11 -Wall -I hostmem/include -c "$root/tests/windows/doc_host_main.c" -o my_host.o ||
  exit 1

# Build: the page's commands, warnings as errors (the snippet must compile cleanly).
if out=$(bash -e <(block build | sed 's/-Wall/-Wall -Werror/') 2>&1) && [ -x my_host.exe ] && [ -f hostmem.dll ]; then
  pass "the snippet compiles and links with the page's commands"
else
  fail "the page's build commands: $out"
  exit 1
fi

# Run: the batch file records a trace with the injected OOM.
wine_bat run "$work/run.log"
status=$?
trace=$(ls "$WINEPREFIX"/drive_c/traces/run-*.trace 2>/dev/null | head -1)
oom=$(grep '^oom: ' "$work/run.log")
if [ $status = 0 ] && [ "$(grep -c '^oom: ' "$work/run.log")" = 1 ] && [ -n "$trace" ]; then
  pass "run-my-host.bat: $oom; C:\\traces\\$(basename "$trace")"
else
  fail "run-my-host.bat (exit $status, trace '${trace:-none}'): $(cat "$work/run.log")"
  exit 1
fi

# Linux: the page's commands on the copied trace, their output exactly the page's.
cp "$trace" run-1234.trace
out=$(PATH="$(dirname "$hostmem"):$PATH" bash -e <(block linux) 2>&1)
status=$?
# The header's time, process id and version differ from run to run: compared as present, not by value.
vary() { sed -E 's/^#! (time|pid|version): .*/#! \1: (varies)/'; }
if [ $status = 0 ] && [ "$(echo "$out" | vary)" = "$(block linux-output | vary)" ]; then
  pass "the Linux commands give the page's output"
else
  fail "the Linux commands (exit $status) gave, where the page says otherwise:"
  diff <(block linux-output | vary) <(echo "$out" | vary) >&2
fi

# Rerun with the emitted spec: the same call fails.
wine_bat rerun "$work/rerun.log"
status=$?
again=$(grep '^oom: ' "$work/rerun.log")
if [ $status = 0 ] && [ -n "$oom" ] && [ "$again" = "$oom" ]; then
  pass "the emitted spec fails the same call again: $again"
else
  fail "the rerun (exit $status) gave '$again', the first run '$oom'"
fi

if [ $failures != 0 ]; then
  echo "docs_windows: $failures check(s) failed" >&2
  exit 1
fi
echo "docs_windows: every snippet and command of docs/windows.md ran as the page says"
