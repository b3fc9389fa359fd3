#!/usr/bin/env sh
# tests/check_windows_headers.sh MINGW_CC INCLUDE_DIR: a Windows host includes <windows.h> and <mscoree.h> first;
# hostmem's contract header (and the umbrella header) must compile after them, with and without HOSTMEM_INITGUID.
# Exit 77 (skipped) when the cross compiler is absent.
set -eu
cc=$1 include=$2
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "check_windows_headers: $cc not found, skipped"
  exit 77
fi
status=0
for prelude in '' '#define HOSTMEM_INITGUID'; do
  for header in hostmem/contract.h hostmem/hostmem.h; do
    if ! printf '%s\n#include <windows.h>\n#include <mscoree.h>\n#include <%s>\n#include <%s>\ntypedef int not_empty;\n' \
           "$prelude" "$header" "$header" |
         "$cc" -x c -std=c11 -Wall -Wextra -Werror -fsyntax-only -I"$include" -; then
      echo "check_windows_headers: <$header> ${prelude:+($prelude) }does not compile after <windows.h> and <mscoree.h>" >&2
      status=1
    fi
  done
done
[ $status = 0 ] && echo "check_windows_headers: hostmem's headers compile after <windows.h> and <mscoree.h> ($cc)"
exit $status
