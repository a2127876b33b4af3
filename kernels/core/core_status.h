// Plain error codes of the kernels core (no Abseil, no CUDA types), so that
// the core and a bench of it build with nvcc alone on a machine without Bazel.
// The host API (kernels/batch.h) turns them into absl::Status, once.
//
// Thread-safety: constants and a pure function.
#ifndef MOECAST_KERNELS_CORE_CORE_STATUS_H_
#define MOECAST_KERNELS_CORE_CORE_STATUS_H_

namespace moecast {
namespace kernels {
namespace core {

enum class CoreStatus : int {
  kOk = 0,
  kInvalidArgument = 1,  // a size or option out of range
  kNoDevice = 2,         // no CUDA device (or no driver) on this machine
  kNotBuilt = 3,         // built without CUDA (--define=moecast_cuda=off)
  kCudaError = 4,        // a CUDA runtime call or a launch failed
  kOutOfMemory = 5,      // a device allocation failed
};

inline const char* CoreStatusName(CoreStatus s) {
  switch (s) {
    case CoreStatus::kOk:
      return "ok";
    case CoreStatus::kInvalidArgument:
      return "invalid argument";
    case CoreStatus::kNoDevice:
      return "no CUDA device";
    case CoreStatus::kNotBuilt:
      return "built without CUDA";
    case CoreStatus::kCudaError:
      return "CUDA error";
    case CoreStatus::kOutOfMemory:
      return "out of device memory";
  }
  return "unknown";
}

}  // namespace core
}  // namespace kernels
}  // namespace moecast

#endif  // MOECAST_KERNELS_CORE_CORE_STATUS_H_
