#!/usr/bin/env bash
# Runs every moecast test. Installs what it needs first (Debian 12), builds
# with Bazel, runs `bazel test //...`, and ends with the line
#
#   N passed, M failed
#
# counting test cases. Exit status 0 only when nothing failed.
# Extra arguments go to `bazel test` (e.g. --test_filter=EngineTest.*).
set -uo pipefail
cd "$(dirname "$0")/.."

bash third_party/install_deps.sh || { echo "0 passed, 1 failed"; exit 1; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
bazel test //... --keep_going --test_summary=short "$@" 2>&1 | tee "$log"
bazel_rc=${PIPESTATUS[0]}

echo
echo "Test summary:"
/usr/bin/python3 tests/summarize.py "$log" "$(bazel info bazel-testlogs 2>/dev/null)"
summary_rc=$?
# bazel exits 4 when there is nothing to test, 1/3 on failures.
if [[ $bazel_rc -ne 0 || $summary_rc -ne 0 ]]; then
  exit 1
fi
