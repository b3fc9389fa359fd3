#!/bin/sh
# bench's ratios are hostmem / baseline (a throughput above 1 is faster, a time below 1 is), its goals are reported,
# and only --check turns a missed goal into exit status 1.
# Usage: bench_outputs.sh HOSTMEM WORKDIR PYTHON3
hostmem=$1 dir=$2 python=$3
mkdir -p "$dir" && cd "$dir" || exit 1
"$hostmem" bench --quick --only heap --json > heap.json
echo "bench exited with $?"
"$hostmem" bench --quick --only heap --json --check > heap-check.json
echo "bench --check exited with $?" > check-status
"$python" - <<'PY'
import json
rows = json.load(open("heap.json"))["rows"]
ratios = [r for r in rows if "ratio" in r]
assert ratios, rows
for r in ratios:
    # Each figure is printed with 4 significant digits (%.4g): value, baseline and ratio may each be off by half a
    # unit of the 4th digit, up to 5e-4 of it, so the quotient of the printed two may differ from the printed ratio
    # by up to about 1.5e-3 of it.
    assert abs(r["ratio"] - r["value"] / r["baseline_value"]) <= 2e-3 * r["ratio"], r
    if "goal" in r:
        assert r["goal"].startswith("goal >= "), r  # Mops/s: a throughput, the goal is a least ratio
        assert r["met"] == (r["ratio"] >= r["goal_value"]), r
print("%d ratio(s), each hostmem / baseline" % len(ratios))
check = json.load(open("heap-check.json"))
status = open("check-status").read().strip()
expected = "bench --check exited with %d" % (1 if check["goals_missed"] else 0)
assert status == expected, (status, expected, check["goals_missed"])
print("--check exit status follows the goals missed")
PY
