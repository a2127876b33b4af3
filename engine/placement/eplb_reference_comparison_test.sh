#!/bin/bash
# Runs eplb_reference_comparison.py with Debian's python3 (not a pyenv one).
# The script prints "SKIPPED: ..." and exits 0 when numpy is not installed.
set -euo pipefail
tool="$1"
script="$(dirname "$0")/eplb_reference_comparison.py"
if [[ ! -x /usr/bin/python3 ]]; then
  echo "SKIPPED: /usr/bin/python3 is not installed"
  exit 0
fi
exec /usr/bin/python3 "$script" "$tool"
