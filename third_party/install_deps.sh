#!/usr/bin/env bash
# Installs the Debian 12 packages moecast builds and tests with. Idempotent:
# when everything is present it only checks (well under a second).
#
#   bash third_party/install_deps.sh             # build + test dependencies
#   bash third_party/install_deps.sh --training  # also PyTorch etc. for
#                                                # bench/traces/train_moe.py
set -euo pipefail

packages=(
  bazel-bootstrap bazel-bootstrap-source
  g++ zlib1g-dev python3
  libabsl-dev libeigen3-dev libgtest-dev libgmock-dev libbenchmark-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  nlohmann-json3-dev python3-numpy python3-matplotlib python3-statsmodels
  python3-grpcio python3-protobuf libcpp-httplib-dev prometheus make pkg-config
  # tests/run_sanitizers.sh: clang for the -Wthread-safety build and the
  # libFuzzer targets (fuzz/), with its sanitizer and libFuzzer runtimes.
  # gcc's ASan/UBSan/TSan runtimes come with g++ (libgcc-12-dev).
  clang clang-14 libclang-rt-14-dev
  # The moecast Python package (integrations/python): its extension module
  # (pybind11 over the C API, Python 3.11 headers) and the fresh venvs its
  # tests install the wheel into.
  pybind11-dev python3-dev python3-venv
)
if [[ "${1:-}" == "--training" ]]; then
  packages+=(python3-torch libopenblas0-pthread python3-numpy)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "install_deps: installing ${missing[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then
    SUDO="sudo"
  else
    echo "install_deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "install_deps: done" >&2
