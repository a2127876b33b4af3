#!/bin/bash
# Runs ctypes_test.py with Debian's /usr/bin/python3 (python3-numpy), not a
# pyenv python3 that may come first on PATH.
#
#   run_ctypes_test.sh LIBMOECAST_SO
set -euo pipefail
if [[ ! -x /usr/bin/python3 ]]; then
  echo "FAILED: /usr/bin/python3 is not installed (bash third_party/install_deps.sh)" >&2
  exit 1
fi
here="$(cd "$(dirname "$0")" && pwd)"
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  here="${TEST_SRCDIR}/${TEST_WORKSPACE}/integrations/c_api/tests"
fi
export MOECAST_LIB="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
export PYTHONDONTWRITEBYTECODE=1
cd "${TEST_TMPDIR:-/tmp}"
exec /usr/bin/python3 -B "${here}/ctypes_test.py"
