# Sourced by the Windows stage's shell tests (e2e_record.sh, docs_windows.sh): one scratch folder, one Wine prefix
# (the caller's WINEPREFIX, else a new one in the scratch folder: only the first program pays for creating it), and
# the PASS/FAIL lines. Set `check_name` and `wine` before sourcing it.
work=$(mktemp -d)
# A prefix made here: its wineserver is stopped before the removal (it lingers, and may still write there).
cleanup() {
  if [ "${WINEPREFIX:-}" = "$work/prefix" ]; then
    "${wine%/*}/wineserver" -k 2>/dev/null
    "${wine%/*}/wineserver" -w 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
export WINEDEBUG=-all WINEPREFIX=${WINEPREFIX:-$work/prefix}
failures=0
pass() { echo "$check_name: PASS $1"; }
fail() {
  echo "$check_name: FAIL $1" >&2
  failures=$((failures + 1))
}
