// The batched operations of the kernels core, declared twice with the same
// arguments: core::cpu (the CPU reference, multithreaded with std::thread over
// all cores; pointers are host memory) and core::gpu (CUDA; pointers are
// device memory, every call takes a stream, given as void* = cudaStream_t so
// that no CUDA type appears here). Both return plain CoreStatus codes; the
// host API (kernels/batch.h) turns them into absl::Status.
//
// Layouts (series-major structure of arrays; S = number of series, element t
// of series s at t * S + s, so consecutive GPU threads read consecutive
// addresses):
//   x           [S]        one step's observations
//   history     [n][S]     levels, oldest first
//   sw_avg ring [W][S]     float; sum [S] double
//   holt        level [S], trend [S]; alpha/beta/phi [S / group_size]
//   ARIMA       params [p+q+1][S] (phi_1..phi_p, theta_1..theta_q, mu),
//               last_e [max(q,1)][S] (newest first), scratch [2][n][S]
//   LSTM        history [n][B*M] (stream b, expert e at b*M + e), scratch
//               [LstmScratchFloats][B], out [B*M]
//   bootstrap   tokens [L][T], counts [L][T][M], quality_input [L][T][M],
//               per replicate outputs [L][R], n_out / q_out [L][R][M],
//               scratch_times [L][R][T]
// The caller owns every buffer, scratch included (see the *ScratchBytes
// functions). Nothing is allocated inside a call.
//
// Thread-safety: the functions are reentrant; concurrent calls must not share
// output or scratch buffers.
#ifndef MOECAST_KERNELS_CORE_BATCH_OPS_H_
#define MOECAST_KERNELS_CORE_BATCH_OPS_H_

#include <stddef.h>
#include <stdint.h>

#include "kernels/core/core_status.h"
#include "kernels/core/series_ops.h"

namespace moecast {
namespace kernels {
namespace core {

// Scratch of ArimaFitForecast, in bytes: 2 * n * S doubles.
inline size_t ArimaScratchBytes(int64_t series, int n) {
  return sizeof(double) * 2 * static_cast<size_t>(n) * static_cast<size_t>(series);
}
inline size_t LstmScratchBytes(const LstmShapeHD& shape, int64_t streams) {
  return sizeof(float) * static_cast<size_t>(LstmScratchFloats(shape)) *
         static_cast<size_t>(streams);
}
inline size_t BootstrapScratchBytes(const BootstrapShape& shape) {
  return sizeof(int) * static_cast<size_t>(shape.layers) * shape.replicates *
         shape.steps;
}

// The weights sw_avg(W) puts on its last W observations (oldest first) for
// the mean over the next h steps (engine: SwAvgHorizonWeights). Host only.
void SwAvgWeights(int window, int horizon, double* out);

#define MOECAST_BATCH_OPS(EXTRA)                                               \
  CoreStatus SwAvgObserve(const SwAvgShape& shape, bool resum, const double* x, \
                          float* ring, double* sum EXTRA);                     \
  CoreStatus SwAvgForecast(const SwAvgShape& shape, int horizon,               \
                           const double* weights, const float* ring,           \
                           const double* sum, double* out EXTRA);              \
  CoreStatus EmaObserve(int64_t series, bool started, double theta,            \
                        const double* x, double* state EXTRA);                 \
  CoreStatus HoltObserve(int64_t series, int group_size, bool started,         \
                         const double* alpha, const double* beta,              \
                         const double* phi, const double* x, double* level,    \
                         double* trend EXTRA);                                 \
  CoreStatus HoltForecast(int64_t series, int group_size, int horizon,         \
                          const double* phi, const double* level,              \
                          const double* trend, double* out EXTRA);             \
  CoreStatus ArimaFitForecast(                                                 \
      const ArimaConfig& config, int64_t series, int n, const double* history, \
      const uint8_t* warm, int horizon, double* params, double* last_e,        \
      double* css, double* start_css, int* iterations, int* flags,             \
      double* forecast, double* scratch EXTRA);                                \
  CoreStatus LstmForecast(const LstmShapeHD& shape, const float* params,       \
                          const int* horizons, int64_t streams, int n,         \
                          const double* history, int horizon, float* scratch,  \
                          double* out EXTRA);                                  \
  CoreStatus GammaBootstrap(const BootstrapShape& shape, const double* tokens, \
                            const double* counts, const double* quality_input, \
                            double* cf_gamma_rho, double* assignments,         \
                            double* n_out, double* q_out,                      \
                            int* scratch_times EXTRA);

namespace cpu {
// threads <= 0: std::thread::hardware_concurrency().
#define MOECAST_CPU_EXTRA , int threads
MOECAST_BATCH_OPS(MOECAST_CPU_EXTRA)
#undef MOECAST_CPU_EXTRA
}  // namespace cpu

namespace gpu {
#define MOECAST_GPU_EXTRA , void* stream
MOECAST_BATCH_OPS(MOECAST_GPU_EXTRA)
#undef MOECAST_GPU_EXTRA

// Device management without CUDA types. DeviceCount gives kNoDevice when the
// driver or device is missing (count = 0), kNotBuilt without CUDA.
CoreStatus DeviceCount(int* count);
// Name and copy bandwidth facts of device 0, for logs (empty without one).
CoreStatus DeviceName(char* out, int out_size);
CoreStatus Malloc(void** ptr, size_t bytes);
CoreStatus Free(void* ptr);
CoreStatus CopyToDevice(void* dst, const void* src, size_t bytes, void* stream);
CoreStatus CopyToHost(void* dst, const void* src, size_t bytes, void* stream);
CoreStatus Memset(void* dst, int value, size_t bytes, void* stream);
CoreStatus StreamCreate(void** stream);
CoreStatus StreamDestroy(void* stream);
CoreStatus StreamSynchronize(void* stream);
// The message of the last CUDA error seen by this thread ("" if none).
const char* LastErrorString();
}  // namespace gpu

#undef MOECAST_BATCH_OPS

}  // namespace core
}  // namespace kernels
}  // namespace moecast

#endif  // MOECAST_KERNELS_CORE_BATCH_OPS_H_
