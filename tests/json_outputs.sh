#!/bin/sh
# Every --json output is valid JSON, also when the names it carries (a host library's path, a trace's path) hold a
# quote, a backslash and a newline. Usage: json_outputs.sh HOSTMEM HOST_PLUGIN.so TRACE PYTHON3
set -u
hostmem=$1 plugin=$2 trace=$3 python=$4
dir=$(mktemp -d "${TMPDIR:-/tmp}/hostmem-json.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
nl='
'
weird="$dir/we\"ird\\na${nl}me"
ln -s "$plugin" "$weird.so" && cp "$trace" "$weird.trace" || exit 1
status=0
check() { # check NAME COMMAND...: the command's stdout must parse as JSON
    name=$1
    shift
    "$@" >"$dir/out.json" 2>"$dir/err.txt"
    code=$?
    if ! "$python" -m json.tool "$dir/out.json" >/dev/null 2>"$dir/why.txt"; then
        echo "FAIL $name (exit $code): invalid JSON: $(cat "$dir/why.txt")"
        cat "$dir/out.json" "$dir/err.txt"
        status=1
    else
        echo "ok   $name"
    fi
}
check conform "$hostmem" conform --json --filter vm.release --host "$weird.so"
check stress "$hostmem" stress --json --threads 1 --ops 2000 --trace-dir "$dir" --host "$weird.so"
# The heap workload's report carries what was asked (workload, its mix, threads, ops, seed) and the host's load over
# the run, a series ending with everything given back.
check stress-heap "$hostmem" stress --json --workload heap --threads 2 --ops 5000 --seed 3 --trace-dir "$dir" \
    --host "$weird.so"
if ! "$python" - "$dir/out.json" <<'EOF' >"$dir/why.txt" 2>&1; then
import json, sys
d = json.load(open(sys.argv[1]))
assert d["workload"] == "heap", d["workload"]
assert d["run"] == {"workload": "heap", "threads": 2, "seconds": None, "ops": 5000, "seed": 3,
                    "weights": {"alloc": 50, "free": 35, "hand_over": 15}}, d["run"]
load = d["host_load"]
assert all(0 <= load[k] <= 100 for k in ("first_percent", "peak_percent", "last_percent")), load
series = load["series"]
assert len(series) >= 2, series
assert [p["seconds"] for p in series] == sorted(p["seconds"] for p in series), series
assert all(0 <= p["load_percent"] <= 100 and p["available_bytes"] > 0 and p["live_bytes"] >= 0 for p in series), series
assert series[-1]["live_bytes"] == 0, series[-1]
EOF
    echo "FAIL stress-heap fields: $(cat "$dir/why.txt")"
    status=1
else
    echo "ok   stress-heap fields"
fi
check replay "$hostmem" replay --json "$weird.trace"
check replay-plugin "$hostmem" replay --json "$weird.trace" --host "$weird.so"
# replay --json says what it took from the trace's header (host, options, faults) and what from the command line.
"$hostmem" record --workload basic --host-options limit=8M --faults 'VirtualAlloc,nth=3' -o "$dir/env.trace" \
    >/dev/null 2>&1 || { echo "FAIL record env.trace"; status=1; }
env_case() { # env_case NAME 'PYTHON ASSERTIONS ON e' REPLAY-ARGS...
    name=$1 want=$2
    shift 2
    "$hostmem" replay --json "$dir/env.trace" "$@" >"$dir/env.json" 2>/dev/null
    if "$python" -c 'import json, sys
e = json.load(open(sys.argv[1]))["environment_used"]
exec(sys.argv[2])' "$dir/env.json" "$want" >"$dir/why.txt" 2>&1; then
        echo "ok   replay environment_used: $name"
    else
        echo "FAIL replay environment_used: $name: $(cat "$dir/why.txt") in $(cat "$dir/env.json")"
        status=1
    fi
}
env_case header 'assert e["host"] == "built-in" and e["source"] == {"host": "trace", "host_options": "trace", "faults": "none"}, e
assert e["host_options"].endswith(",limit=8M") and e["faults"] is None, e
assert e["recorded_faults_not_applied"] == "VirtualAlloc,nth=3", e
assert any(n.startswith("host options: ") and n.endswith("limit=8M (from the trace)") for n in e["notes"]), e'
env_case no-inject 'assert e["faults"] == "VirtualAlloc,nth=3" and e["source"]["faults"] == "trace", e
assert "recorded_faults_not_applied" not in e, e' --no-inject
env_case command-line 'assert e["host_options"] == "limit=4M" and e["faults"] == "Alloc,nth=1", e
assert e["source"] == {"host": "trace", "host_options": "command line", "faults": "command line"}, e' \
    --host-options limit=4M --faults Alloc,nth=1
env_case no-trace-env 'assert e["source"] == {"host": "default", "host_options": "default", "faults": "none"}, e
assert e["notes"] == [] and "recorded_faults_not_applied" not in e, e' --no-trace-env
check explore "$hostmem" explore --json --max 3 "$weird.trace" --match 'VirtualAlloc|heap'
check bench "$hostmem" bench --json --quick --only faults
[ $status = 0 ] && echo "every --json output is valid JSON"
exit $status
