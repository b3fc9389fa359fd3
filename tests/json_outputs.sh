#!/bin/sh
# Every --json output is valid JSON, also when the names it carries (a host library's path, a trace's path) hold a
# quote, a backslash and a newline. Usage: json_outputs.sh HOSTMEM HOST_PLUGIN.so TRACE PYTHON3
# Kept quick for a loaded machine's sanitizer build: the outputs are parsed by one Python run at the end (an
# interpreter's start, through a version manager's shim, took seconds each at load 14), and bench's document, which
# carries no name, is parsed by bench_outputs.sh (its measured loops were a third of this test's time).
set -u
hostmem=$1 plugin=$2 trace=$3 python=$4
dir=$(mktemp -d "${TMPDIR:-/tmp}/hostmem-json.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
nl='
'
weird="$dir/we\"ird\\na${nl}me"
ln -s "$plugin" "$weird.so" && cp "$trace" "$weird.trace" || exit 1
names=
run() { # run NAME COMMAND...: the command's stdout goes to NAME.json, its stderr and exit status beside it
    name=$1
    shift
    "$@" >"$dir/$name.json" 2>"$dir/$name.err"
    echo $? >"$dir/$name.status"
    names="$names $name"
}
run conform "$hostmem" conform --json --filter vm.release --host "$weird.so"
run stress "$hostmem" stress --json --threads 1 --ops 2000 --trace-dir "$dir" --host "$weird.so"
# The heap workload's report carries what was asked (workload, its mix, threads, ops, seed) and the host's load over
# the run, a series ending with everything given back.
run stress-heap "$hostmem" stress --json --workload heap --threads 2 --ops 2000 --seed 3 --trace-dir "$dir" \
    --host "$weird.so"
run replay "$hostmem" replay --json "$weird.trace"
run replay-plugin "$hostmem" replay --json "$weird.trace" --host "$weird.so"
run explore "$hostmem" explore --json --max 3 "$weird.trace" --match 'VirtualAlloc|heap'
# shellcheck disable=SC2086 # the names hold no blank
"$python" - "$dir" $names <<'EOF_PY'
import json, os, sys
folder, names = sys.argv[1], sys.argv[2:]
failed = False
for name in names:
    path = os.path.join(folder, name)
    status = open(path + ".status").read().strip()
    try:
        d = json.load(open(path + ".json"))
        print("ok   %s" % name)
    except ValueError as e:
        failed = True
        print("FAIL %s (exit %s): invalid JSON: %s" % (name, status, e))
        sys.stdout.write(open(path + ".json", errors="replace").read() + open(path + ".err", errors="replace").read())
        continue
    if name == "stress-heap":
        try:
            assert d["workload"] == "heap", d["workload"]
            assert d["run"] == {"workload": "heap", "threads": 2, "seconds": None, "ops": 2000, "seed": 3,
                                "weights": {"alloc": 50, "free": 35, "hand_over": 15}}, d["run"]
            load = d["host_load"]
            assert all(0 <= load[k] <= 100 for k in ("first_percent", "peak_percent", "last_percent")), load
            series = load["series"]
            assert len(series) >= 2, series
            assert [p["seconds"] for p in series] == sorted(p["seconds"] for p in series), series
            assert all(0 <= p["load_percent"] <= 100 and p["available_bytes"] > 0 and p["live_bytes"] >= 0
                       for p in series), series
            assert series[-1]["live_bytes"] == 0, series[-1]
            print("ok   stress-heap fields")
        except (AssertionError, KeyError, TypeError) as e:
            failed = True
            print("FAIL stress-heap fields: %r" % (e,))
if not failed:
    print("every --json output is valid JSON")
sys.exit(1 if failed else 0)
EOF_PY
