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
# replay --json says what it took from the trace's header (host, options, faults) and what from the command line.
"$hostmem" record --workload basic --host-options limit=8M --faults 'VirtualAlloc,nth=3' -o "$dir/env.trace" \
    >/dev/null 2>&1 || { echo "FAIL record env.trace"; exit 1; }
run env-header "$hostmem" replay --json "$dir/env.trace"
run env-no-inject "$hostmem" replay --json "$dir/env.trace" --no-inject
run env-command-line "$hostmem" replay --json "$dir/env.trace" --host-options limit=4M --faults Alloc,nth=1
run env-no-trace-env "$hostmem" replay --json "$dir/env.trace" --no-trace-env
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
    if name.startswith("env-"):
        try:
            e = d["environment_used"]
            if name == "env-header":
                assert e["host"] == "built-in" and e["source"] == {"host": "trace", "host_options": "trace", "faults": "none"}, e
                assert e["host_options"].endswith(",limit=8M") and e["faults"] is None, e
                assert e["recorded_faults_not_applied"] == "VirtualAlloc,nth=3", e
                assert any(n.startswith("host options: ") and n.endswith("limit=8M (from the trace)") for n in e["notes"]), e
            elif name == "env-no-inject":
                assert e["faults"] == "VirtualAlloc,nth=3" and e["source"]["faults"] == "trace", e
                assert "recorded_faults_not_applied" not in e, e
            elif name == "env-command-line":
                assert e["host_options"] == "limit=4M" and e["faults"] == "Alloc,nth=1", e
                assert e["source"] == {"host": "trace", "host_options": "command line", "faults": "command line"}, e
            else:
                assert e["source"] == {"host": "default", "host_options": "default", "faults": "none"}, e
                assert e["notes"] == [] and "recorded_faults_not_applied" not in e, e
            print("ok   replay environment_used: %s" % name)
        except (AssertionError, KeyError, TypeError) as e:
            failed = True
            print("FAIL replay environment_used: %s: %r" % (name, e))
if not failed:
    print("every --json output is valid JSON")
sys.exit(1 if failed else 0)
EOF_PY
