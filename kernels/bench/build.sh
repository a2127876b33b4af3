#!/bin/sh
# Builds gpu_bench with nvcc alone (no Bazel, no Abseil): the bench, the CUDA
# core and the CPU reference. Run from anywhere; writes ./gpu_bench here.
#   NVCC=/usr/local/cuda/bin/nvcc ARCH=90 sh kernels/bench/build.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
ARCH=${ARCH:-90}
"$NVCC" -O3 -std=c++17 -I"$root" \
  -gencode=arch=compute_${ARCH},code=sm_${ARCH} \
  -gencode=arch=compute_${ARCH},code=compute_${ARCH} \
  -Xcompiler -pthread -cudart static \
  "$here/gpu_bench.cu" "$root/kernels/core/gpu_core.cu" \
  "$root/kernels/core/cpu_reference.cc" \
  -o "$here/gpu_bench"
echo "built $here/gpu_bench"
