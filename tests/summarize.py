#!/usr/bin/env python3
"""Turns `bazel test` output and its test.xml files into one closing line.

Reads the bazel log (argument 1), finds each test target's status line
(PASSED, FAILED, TIMEOUT, FLAKY, NO STATUS, FAILED TO BUILD, ...), counts the
test cases in that target's bazel-testlogs/.../test.xml, and prints per-target
lines followed by

    N passed, M failed

where N and M count test cases (GoogleTest cases, or 1 for a test target
without cases). A target that did not run (build failure, no status) counts as
one failed case. Exit status 0 only when M == 0 and at least one case ran.

    summarize.py [--label PHASE] BAZEL_LOG TESTLOGS_DIR

--label prefixes each per-target line with the phase (e.g. "asan"), for the
sanitizer runs of tests/run_sanitizers.sh, whose test.xml files live under
their own configuration's bazel-testlogs.

    summarize.py --combine NAME=LOG [NAME=LOG ...]

adds up the last "N passed, M failed" line of each log (e.g. the normal
tests and the sanitizer phases), prints one line per log and the total. A log
without such a line counts as one failed case.
"""
import os
import re
import sys
import xml.etree.ElementTree as ET

STATUS_RE = re.compile(
    r"^(//\S+)\s+(?:\(cached\)\s+)?"
    r"(PASSED|FAILED TO BUILD|FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE|SKIPPED)\b")


def count_cases(xml_path):
    """Returns (passed, failed, skipped) test cases in a test.xml."""
    tree = ET.parse(xml_path)
    passed = failed = skipped = 0
    for case in tree.iter("testcase"):
        if case.get("status") == "notrun" or case.find("skipped") is not None:
            skipped += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        else:
            passed += 1
    return passed, failed, skipped


SUMMARY_RE = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?\s*$")


def combine(specs):
    """--combine NAME=LOG ...: the total of each log's closing line."""
    total_pass = total_fail = total_skip = 0
    for spec in specs:
        name, _, path = spec.partition("=")
        if not path:
            name, path = os.path.basename(spec), spec
        p, f, s = 0, 1, 0
        try:
            with open(path, errors="replace") as fh:
                for line in fh:
                    m = SUMMARY_RE.match(line.strip())
                    if m:
                        p, f, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        except OSError:
            pass
        extra = f", {s} skipped" if s else ""
        print(f"  {name:<16} {p} passed, {f} failed{extra}")
        total_pass += p
        total_fail += f
        total_skip += s
    line = f"{total_pass} passed, {total_fail} failed"
    if total_skip:
        line += f", {total_skip} skipped"
    print(line)
    return 0 if total_fail == 0 and total_pass > 0 else 1


def main():
    args = sys.argv[1:]
    if args and args[0] == "--combine":
        return combine(args[1:])
    label = ""
    if len(args) >= 2 and args[0] == "--label":
        label = args[1] + " "
        args = args[2:]
    log_path, testlogs = args[0], args[1]
    with open(log_path, errors="replace") as f:
        lines = f.read().splitlines()
    results = {}
    for line in lines:
        m = STATUS_RE.match(line.strip())
        if m:
            results[m.group(1)] = m.group(2)
    total_pass = total_fail = total_skip = 0
    for target, status in sorted(results.items()):
        rel = target[2:].replace(":", "/")
        xml_path = os.path.join(testlogs, rel, "test.xml")
        p = f = s = 0
        if status in ("PASSED", "FAILED", "FLAKY", "TIMEOUT") and os.path.exists(xml_path):
            try:
                p, f, s = count_cases(xml_path)
            except ET.ParseError:
                p, f, s = 0, 0, 0
            if status != "PASSED" and f == 0:
                f = 1  # crashed or timed out outside a test case
            if p + f + s == 0:
                p, f = (1, 0) if status == "PASSED" else (0, 1)
        elif status == "PASSED":
            p = 1
        else:
            f = 1
        total_pass += p
        total_fail += f
        total_skip += s
        extra = f", {s} skipped" if s else ""
        print(f"  {label}{status:<16} {target}: {p} passed, {f} failed{extra}")
    if not results:
        print("  no test results found in the bazel output")
        total_fail += 1
    # Targets that did not build or load never report a status line of
    # their own; bazel says so once.
    if any(line.startswith("FAILED: Build did NOT complete successfully")
           or line.startswith("ERROR: command succeeded, but not all targets")
           for line in lines):
        print(f"  {label}BUILD FAILED     some targets did not build or load: 1 failed")
        total_fail += 1
    line = f"{total_pass} passed, {total_fail} failed"
    if total_skip:
        line += f", {total_skip} skipped"
    print(line)
    return 0 if total_fail == 0 and total_pass > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
