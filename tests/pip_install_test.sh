#!/usr/bin/env bash
# The moecast Python package installed the way a user installs it: a fresh
# `/usr/bin/python3 -m venv --system-site-packages`, then
# `pip install --no-index integrations/python` (pip runs the package's
# in-tree backend, which runs `bazel build //integrations/python:native` in
# this checkout and writes the wheel), then, from another directory, the
# package imported and the engine, the client stubs and a console script
# used. Cannot run inside `bazel test` (it runs Bazel), so tests/run_all.sh
# runs it after the Bazel tests. Prints one line per check and
# "N passed, M failed"; exit status 0 only when nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moecast_pip.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
passed=0
failed=0
check() {
  local name=$1
  shift
  if "$@" >"$tmp/log" 2>&1; then
    echo "  PASS pip_install: $name"
    passed=$((passed + 1))
  else
    echo "  FAIL pip_install: $name"
    tail -n 40 "$tmp/log" | sed 's/^/    /'
    failed=$((failed + 1))
  fi
}

check "fresh venv" /usr/bin/python3 -m venv --system-site-packages "$tmp/venv"
check "pip install --no-index integrations/python" \
  "$tmp/venv/bin/pip" install --no-index "$repo/integrations/python"
mkdir -p "$tmp/elsewhere"
check "import moecast and run the engine from another directory" \
  env -C "$tmp/elsewhere" -u PYTHONPATH "$tmp/venv/bin/python" -c '
import os, sys, numpy as np
import moecast
from moecast import Engine, EngineInvalidArgument
from moecast._proto import moecast_pb2
site = os.path.realpath(sys.prefix)
assert os.path.realpath(moecast.__file__).startswith(site), moecast.__file__
with Engine(analysis="inline") as eng:
    eng.register_job("j", 2, 8, 2, predictors=["last_value"], horizons=[1])
    c = np.arange(16, dtype=np.float64).reshape(2, 8) + 1
    eng.ingest("j", 0, c)
    np.testing.assert_allclose(eng.forecast("j", 1).mean, c / c.sum(1, keepdims=True), rtol=1e-6)
    try:
        eng.ingest("j", 1, np.ones((8, 2)))
        raise SystemExit("a wrong shape was accepted")
    except EngineInvalidArgument as e:
        assert e.code == "INVALID_ARGUMENT" and "shape (8, 2)" in e.message, e
print("ok", moecast.__version__, moecast.__file__)
'
check "moecast-convert --help" "$tmp/venv/bin/moecast-convert" --help
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
