#!/bin/bash
# Runs converters_test.py with Debian's /usr/bin/python3 (python3-numpy; and
# python3-torch when installed, else the torch-file cases are skipped), not a
# pyenv python3 that may come first on PATH.
#
#   converters_test.sh MOECAST_BINARY
#   e.g. integrations/converters/converters_test.sh bazel-bin/moecast
set -euo pipefail
if [[ ! -x /usr/bin/python3 ]]; then
  echo "FAILED: /usr/bin/python3 is not installed (bash third_party/install_deps.sh)" >&2
  exit 1
fi
if ! /usr/bin/python3 -c "import numpy" 2>/dev/null; then
  echo "FAILED: numpy is not installed for /usr/bin/python3 (bash third_party/install_deps.sh)" >&2
  exit 1
fi
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  here="${TEST_SRCDIR}/${TEST_WORKSPACE}/integrations/converters"
fi
export MOECAST="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
export PYTHONDONTWRITEBYTECODE=1
export PYTHONUNBUFFERED=1
cd "${TEST_TMPDIR:-/tmp}"
exec /usr/bin/python3 -B "${here}/converters_test.py"
