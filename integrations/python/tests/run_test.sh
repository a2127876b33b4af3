#!/bin/bash
# Runs one Python test module against the INSTALLED moecast package:
#
#   1. pip builds the wheel from the package folder through its own PEP 517
#      backend (build_backend/moecast_backend.py), offline, with the native
#      parts (extension module, gRPC stubs) that Bazel built for this test
#      (MOECAST_PREBUILT: the runfiles' integrations/python);
#   2. a fresh `/usr/bin/python3 -m venv --system-site-packages` gets the
#      wheel with `pip install --no-index`;
#   3. the test runs with the venv's python, from a scratch directory, its
#      bin/ first on PATH (console scripts), the fixture on PYTHONPATH and the
#      source tree nowhere on sys.path.
#
#   run_test.sh TEST [MOECASTD] [MOECAST]
#
# TEST: a module of integrations/python/tests (e.g. engine_test.py) or a
# workspace-relative path. MOECASTD / MOECAST (exported as $MOECASTD and
# $MOECAST; "-" for none): the server and the CLI binaries. By hand (after
# `bazel build //integrations/python:native //integrations/grpc:moecastd`):
#   integrations/python/tests/run_test.sh engine_test.py bazel-bin/integrations/grpc/moecastd
set -euo pipefail
if [[ ! -x /usr/bin/python3 ]]; then
  echo "FAILED: /usr/bin/python3 is not installed (bash third_party/install_deps.sh)" >&2
  exit 1
fi
abspath() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  root="${TEST_SRCDIR}/${TEST_WORKSPACE}"
  native="${root}/integrations/python"
  scratch="${TEST_TMPDIR}"
else
  root="$(cd "$(dirname "$(readlink -f "$0")")/../../.." && pwd)"
  native="${root}/bazel-bin/integrations/python"
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/moecast_pytest.XXXXXX")"
  trap 'rm -rf "$scratch"' EXIT
fi
test="$1"
[[ "$test" == */* ]] || test="integrations/python/tests/${test}"
test="${root}/${test}"
[[ -f "$test" ]] || { echo "FAILED: no test module $test" >&2; exit 1; }
if [[ $# -ge 2 && "$2" != "-" ]]; then export MOECASTD="$(abspath "$2")"; fi
if [[ $# -ge 3 && "$3" != "-" ]]; then export MOECAST="$(abspath "$3")"; fi
export MOECAST_TRACE="${root}/bench/traces/data/tiny_moe_aux"

# The package folder as a user has it (the runfiles are symlinks).
src="${scratch}/src"
mkdir -p "$src"
for item in pyproject.toml README.md CONVERTERS.md build_backend moecast; do
  cp -rL "${root}/integrations/python/${item}" "$src/"
done
rm -rf "$src/moecast/_proto" "$src/moecast/"_moecast_ext*

export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
venv="${scratch}/venv"
/usr/bin/python3 -m venv --system-site-packages "$venv"
MOECAST_PREBUILT="$native" "$venv/bin/pip" wheel --no-index --no-deps -q -w "${scratch}/dist" "$src"
wheel=("${scratch}"/dist/moecast-*.whl)
[[ -f "${wheel[0]}" ]] || { echo "FAILED: pip wheel wrote no moecast wheel" >&2; exit 1; }
"$venv/bin/pip" install --no-index -q "${wheel[0]}"
export MOECAST_WHEEL="${wheel[0]}" MOECAST_VENV="$venv"
export MOECAST_SOURCE_ROOT="${root}/integrations/python"
rm -rf "$src"

export PATH="${venv}/bin:${PATH}"
export PYTHONPATH="${root}/integrations/python/tests"
export PYTHONDONTWRITEBYTECODE=1
export PYTHONUNBUFFERED=1
mkdir -p "${scratch}/work"
cd "${scratch}/work"
exec "$venv/bin/python" -B "${root}/integrations/python/tests/run_installed.py" "$test"
