#!/bin/bash
# Runs old_client_compat_test.py with the stubs generated from the first
# release's proto (compat_v1/, from the runfiles) instead of today's, and
# MOECASTD=$1. Debian's /usr/bin/python3 (python3-grpcio, python3-numpy).
set -euo pipefail
pkg="${TEST_SRCDIR}/${TEST_WORKSPACE}/integrations/python"
if [[ ! -f "${pkg}/compat_v1/moecast_v1_stubs/moecast_pb2.py" ]]; then
  echo "FAILED: the v1 stubs are missing from the runfiles" >&2
  exit 1
fi
export MOECASTD="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
export PYTHONPATH="${pkg}/compat_v1:${pkg}/tests"
export PYTHONDONTWRITEBYTECODE=1
cd "${TEST_TMPDIR:-/tmp}"
exec /usr/bin/python3 -B "${pkg}/tests/old_client_compat_test.py"
