// core::gpu for builds without CUDA (--define=moecast_cuda=off): every entry
// point answers kNotBuilt, so the host API reports UNAVAILABLE("built without
// CUDA") and the engine stays on the CPU reference.
#include "kernels/core/batch_ops.h"

namespace moecast {
namespace kernels {
namespace core {
namespace gpu {

CoreStatus SwAvgObserve(const SwAvgShape&, bool, const double*, float*, double*,
                        void*) {
  return CoreStatus::kNotBuilt;
}
CoreStatus SwAvgForecast(const SwAvgShape&, int, const double*, const float*,
                         const double*, double*, void*) {
  return CoreStatus::kNotBuilt;
}
CoreStatus EmaObserve(int64_t, bool, double, const double*, double*, void*) {
  return CoreStatus::kNotBuilt;
}
CoreStatus HoltObserve(int64_t, int, bool, const double*, const double*,
                       const double*, const double*, double*, double*, void*) {
  return CoreStatus::kNotBuilt;
}
CoreStatus HoltForecast(int64_t, int, int, const double*, const double*,
                        const double*, double*, void*) {
  return CoreStatus::kNotBuilt;
}
CoreStatus ArimaFitForecast(const ArimaConfig&, int64_t, int, const double*,
                            const uint8_t*, int, double*, double*, double*,
                            double*, int*, int*, double*, double*, void*) {
  return CoreStatus::kNotBuilt;
}
CoreStatus LstmForecast(const LstmShapeHD&, const float*, const int*, int64_t,
                        int, const double*, int, float*, double*, void*) {
  return CoreStatus::kNotBuilt;
}
CoreStatus GammaBootstrap(const BootstrapShape&, const double*, const double*,
                          const double*, double*, double*, double*, double*,
                          int*, void*) {
  return CoreStatus::kNotBuilt;
}
CoreStatus DeviceCount(int* count) {
  *count = 0;
  return CoreStatus::kNotBuilt;
}
CoreStatus DeviceName(char* out, int out_size) {
  if (out_size > 0) out[0] = '\0';
  return CoreStatus::kNotBuilt;
}
CoreStatus Malloc(void** ptr, size_t) {
  *ptr = nullptr;
  return CoreStatus::kNotBuilt;
}
CoreStatus Free(void*) { return CoreStatus::kNotBuilt; }
CoreStatus CopyToDevice(void*, const void*, size_t, void*) {
  return CoreStatus::kNotBuilt;
}
CoreStatus CopyToHost(void*, const void*, size_t, void*) {
  return CoreStatus::kNotBuilt;
}
CoreStatus Memset(void*, int, size_t, void*) { return CoreStatus::kNotBuilt; }
CoreStatus StreamCreate(void** stream) {
  *stream = nullptr;
  return CoreStatus::kNotBuilt;
}
CoreStatus StreamDestroy(void*) { return CoreStatus::kNotBuilt; }
CoreStatus StreamSynchronize(void*) { return CoreStatus::kNotBuilt; }
const char* LastErrorString() { return "built without CUDA"; }

}  // namespace gpu
}  // namespace core
}  // namespace kernels
}  // namespace moecast
