// The CPU reference of the kernels: core::cpu in batch_ops.h (the per-series
// functions of series_ops.h over all cores with std::thread). Plain C++17,
// usable by the standalone bench (kernels/bench/) without Bazel or Abseil.
// The tests in kernels/cpu_reference_test.cc hold it to the engine's own
// implementations; the GPU is then held to it.
#ifndef MOECAST_KERNELS_CORE_CPU_REFERENCE_H_
#define MOECAST_KERNELS_CORE_CPU_REFERENCE_H_

#include "kernels/core/batch_ops.h"

#endif  // MOECAST_KERNELS_CORE_CPU_REFERENCE_H_
