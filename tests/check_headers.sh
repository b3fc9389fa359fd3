#!/usr/bin/env bash
# tests/check_headers.sh CC INCLUDE_DIR: every public header compiles alone (it includes what it uses), twice in a
# row (its include guard works), as strict C11 (-Wpedantic: users may build so) with warnings as errors.
set -euo pipefail
cc=$1 include=$2
shopt -s nullglob
headers=("$include"/hostmem/*.h)
if [ ${#headers[@]} -eq 0 ]; then
  echo "check_headers: no headers in $include/hostmem" >&2
  exit 1
fi
failed=0
for h in "${headers[@]}"; do
  name=hostmem/$(basename "$h")
  if ! printf '#include <%s>\n#include <%s>\ntypedef int not_empty;\n' "$name" "$name" |
       "$cc" -x c -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$include" -; then
    echo "check_headers: <$name> does not compile alone" >&2
    failed=1
  fi
done
[ $failed = 0 ] && echo "check_headers: ${#headers[@]} public headers compile alone"
exit $failed
