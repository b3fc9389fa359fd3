#!/bin/sh
# The JUnit reports of conform and stress are well-formed XML with the testcases CI dashboards show: conform's failing
# rule as a <failure> with expected and actual, its baselined one as <skipped>; stress's violation as a <failure>.
# A crashing host's run is a failure and its threads are skipped, never passed.
# Usage: junit_outputs.sh HOSTMEM BROKEN_HOST.so WORKDIR PYTHON3 CRASHING_HOST.so
hostmem=$1 broken=$2 dir=$3 python=$4 crashing=$5
mkdir -p "$dir" && cd "$dir" || exit 1
rm -f conform.xml stress.xml crash.xml stress-*.trace stress-*.violation.txt
# A reason with every character XML must escape.
printf '# known deviations\nvm.commit.zeroed  recycles pages <unzeroed> & says "so" '"'"'here'"'"'\n' > baseline
"$hostmem" conform --host "$broken" --filter vm.commit --baseline baseline --junit conform.xml > /dev/null
echo "conform exited with $?"
"$hostmem" conform --host "$broken" --filter vm.commit --baseline baseline --json > conform.json
"$hostmem" stress --host "$broken" --threads 1 --ops 20000 --trace-dir . --junit stress.xml > /dev/null 2>&1
echo "stress exited with $?"
"$hostmem" stress --host "$crashing" --threads 2 --ops 100 --trace-dir . --junit crash.xml > /dev/null 2>&1
echo "stress of a crashing host exited with $?"
"$python" - <<'PY'
import xml.etree.ElementTree as ET
c = ET.parse("conform.xml").getroot().find("testsuite")
cases = {t.get("name"): t for t in c.findall("testcase")}
failure = cases["vm.commit.keeps-contents"].find("failure")
skipped = cases["vm.commit.zeroed"].find("skipped")
assert failure is not None and "expected:" in failure.text and "actual:" in failure.text, "no failure with expected/actual"
assert skipped is not None and '<unzeroed> & says "so"' in skipped.get("message"), skipped
assert cases["vm.commit.at-null"].find("failure") is None
assert int(c.get("tests")) == len(cases) and c.get("failures") == "1" and c.get("skipped") == "1", c.attrib
print("conform junit: %d testcases, 1 failure, 1 known" % len(cases))
import json
j = json.load(open("conform.json"))
known = [r for r in j["rules"] if r["status"] == "known"]
assert j["known"] == 1 and j["failed"] == 1 and known[0]["baseline"].startswith("recycles pages <unzeroed>"), j
print("conform json with a baseline: valid")
s = ET.parse("stress.xml").getroot().find("testsuite")
failures = [t for t in s.findall("testcase") if t.find("failure") is not None]
assert failures and int(s.get("failures")) == len(failures), s.attrib
print("stress junit: %d testcases, %d failure(s)" % (len(s.findall("testcase")), len(failures)))
c = ET.parse("crash.xml").getroot().find("testsuite")
cases = c.findall("testcase")
# (under a sanitizer the crash is its report and an exit status)
why = cases[0].find("failure").text if cases[0].find("failure") is not None else ""
assert "crashed" in why or "exited the process with status" in why, why
assert all(t.find("skipped") is not None for t in cases[1:]) and c.get("skipped") == str(len(cases) - 1), c.attrib
print("stress junit of a crash: the run failed, %d thread(s) skipped" % (len(cases) - 1))
PY
