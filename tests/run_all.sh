#!/usr/bin/env bash
# Runs every moecast test. Installs what it needs first (Debian 12), builds
# with Bazel, runs `bazel test //...`, then tests/pip_install_test.sh (the
# Python package installed with pip into a fresh venv), and ends with the line
#
#   N passed, M failed
#
# counting test cases (the Bazel tests' and the pip checks'). Exit status 0
# only when nothing failed.
# Extra arguments go to `bazel test` (e.g. --test_filter=EngineTest.*).
set -uo pipefail
cd "$(dirname "$0")/.."

bash third_party/install_deps.sh || { echo "0 passed, 1 failed"; exit 1; }

log=$(mktemp)
bazel_summary=$(mktemp)
pip_log=$(mktemp)
trap 'rm -f "$log" "$bazel_summary" "$pip_log"' EXIT
bazel test //... --keep_going --test_summary=short "$@" 2>&1 | tee "$log"
bazel_rc=${PIPESTATUS[0]}

echo
echo "Test summary:"
/usr/bin/python3 tests/summarize.py "$log" "$(bazel info bazel-testlogs 2>/dev/null)" \
  | tee "$bazel_summary"
summary_rc=${PIPESTATUS[0]}

# The Python package installed as users install it (pip runs Bazel, so this
# cannot be a `bazel test`).
echo
echo "pip install of the Python package (tests/pip_install_test.sh):"
bash tests/pip_install_test.sh 2>&1 | tee "$pip_log"
pip_rc=${PIPESTATUS[0]}

# The closing line: the Bazel tests' cases plus the pip checks.
echo
/usr/bin/python3 tests/summarize.py --combine bazel="$bazel_summary" pip_install="$pip_log"
# bazel exits 4 when there is nothing to test, 1/3 on failures.
if [[ $bazel_rc -ne 0 || $summary_rc -ne 0 || $pip_rc -ne 0 ]]; then
  exit 1
fi
