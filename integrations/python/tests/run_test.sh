#!/bin/bash
# Runs one Python unittest module of moecast_client with Debian's
# /usr/bin/python3 (python3-grpcio, python3-protobuf, python3-numpy), not a
# pyenv python3 that may come first on PATH.
#
#   run_test.sh TEST_MODULE.py [MOECASTD]
#   e.g. integrations/python/tests/run_test.sh client_e2e_test.py bazel-bin/integrations/grpc/moecastd
#
# PYTHONPATH: integrations/python (the package and the generated stubs, from
# the runfiles) and tests/ (the fixture). MOECASTD: the server binary.
set -euo pipefail
if [[ ! -x /usr/bin/python3 ]]; then
  echo "FAILED: /usr/bin/python3 is not installed (bash third_party/install_deps.sh)" >&2
  exit 1
fi
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  # bazel test: $0 is the target's name; the files are in the runfiles.
  pkg="${TEST_SRCDIR}/${TEST_WORKSPACE}/integrations/python"
else
  # By hand: the source tree (run generate_stubs.sh first).
  pkg="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
fi
here="${pkg}/tests"
if [[ ! -f "${pkg}/moecast_client/_proto/moecast_pb2.py" ]]; then
  echo "FAILED: ${pkg}/moecast_client/_proto/moecast_pb2.py is missing (run generate_stubs.sh)" >&2
  exit 1
fi
module="$1"
if [[ $# -ge 3 ]]; then
  export MOECAST="$(cd "$(dirname "$3")" && pwd)/$(basename "$3")"
fi
if [[ $# -ge 2 ]]; then
  export MOECASTD="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
fi
export PYTHONPATH="${pkg}:${here}"
export PYTHONDONTWRITEBYTECODE=1
export PYTHONUNBUFFERED=1
cd "${TEST_TMPDIR:-/tmp}"
exec /usr/bin/python3 -B "${here}/${module}"
