// CUDA kernels and launch code of the batched operations (core::gpu in
// batch_ops.h). Plain CUDA C++ without Abseil: it builds with nvcc alone.
// Every runtime call and launch is checked; a failure becomes a CoreStatus
// (the message is kept for LastErrorString).
//
// Parallel decomposition (CUB's layering: launch code here, per-series logic
// in series_ops.h):
//   sw_avg, ema, holt   one thread per series, grid-stride loops
//   ARIMA fit           one thread per series (LM on <= 21-dimensional
//                       normal equations in local memory; residual arrays in
//                       the caller's scratch, [n][S] so that loads coalesce)
//   LSTM                one thread per stream (weights read by every thread
//                       at the same address: broadcast; state in scratch)
//   gamma bootstrap     one block per (layer, replicate): threads draw the
//                       resample, sum over steps per expert, then block
//                       reductions for the closed form
#include <cuda_runtime.h>

#include <stdio.h>
#include <string.h>

#include "kernels/core/batch_ops.h"

namespace moecast {
namespace kernels {
namespace core {
namespace gpu {
namespace {

thread_local char g_last_error[256] = "";

CoreStatus Check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return CoreStatus::kOk;
  snprintf(g_last_error, sizeof(g_last_error), "%s: %s (%d)", what,
           cudaGetErrorString(err), static_cast<int>(err));
  (void)cudaGetLastError();  // clear a sticky non-fatal error
  if (err == cudaErrorMemoryAllocation) return CoreStatus::kOutOfMemory;
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    return CoreStatus::kNoDevice;
  }
  return CoreStatus::kCudaError;
}

CoreStatus CheckLaunch(const char* what) { return Check(cudaGetLastError(), what); }

cudaStream_t AsStream(void* s) { return static_cast<cudaStream_t>(s); }

constexpr int kThreads = 256;

int BlocksFor(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  if (b < 1) b = 1;
  // Grid-stride loops cover the rest.
  return static_cast<int>(b > 65535 * 32 ? 65535 * 32 : b);
}

__global__ void SwAvgObserveKernel(SwAvgShape sh, bool resum, const double* x,
                                   float* ring, double* sum) {
  for (int64_t s = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; s < sh.series;
       s += int64_t{gridDim.x} * blockDim.x) {
    SwAvgObserveOne(sh, resum, s, x[s], ring, sum);
  }
}

__global__ void SwAvgForecastKernel(SwAvgShape sh, int horizon,
                                    const double* weights, const float* ring,
                                    const double* sum, double* out) {
  for (int64_t s = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; s < sh.series;
       s += int64_t{gridDim.x} * blockDim.x) {
    out[s] = SwAvgForecastOne(sh, horizon, weights, s, ring, sum);
  }
}

__global__ void EmaObserveKernel(int64_t n, bool started, double theta,
                                 const double* x, double* state) {
  for (int64_t s = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; s < n;
       s += int64_t{gridDim.x} * blockDim.x) {
    state[s] = EmaUpdateOne(started, theta, state[s], x[s]);
  }
}

__global__ void HoltObserveKernel(int64_t n, int group_size, bool started,
                                  const double* alpha, const double* beta,
                                  const double* phi, const double* x,
                                  double* level, double* trend) {
  for (int64_t s = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; s < n;
       s += int64_t{gridDim.x} * blockDim.x) {
    if (!started) {
      level[s] = x[s];
      trend[s] = 0;
      continue;
    }
    const int64_t g = s / group_size;
    const HoltParamsHD q{alpha[g], beta[g], phi[g]};
    double l = level[s], t = trend[s];
    HoltStepOne(q, x[s], &l, &t);
    level[s] = l;
    trend[s] = t;
  }
}

__global__ void HoltForecastKernel(int64_t n, int group_size, int horizon,
                                   const double* phi, const double* level,
                                   const double* trend, double* out) {
  for (int64_t s = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; s < n;
       s += int64_t{gridDim.x} * blockDim.x) {
    const double k = HoltDampedTrendMean(phi[s / group_size], horizon);
    out[s] = level[s] + k * trend[s];
  }
}

__global__ void ArimaKernel(ArimaConfig c, int64_t S, int n,
                            const double* history, const uint8_t* warm,
                            int horizon, double* params, double* last_e,
                            double* css, double* start_css, int* iterations,
                            int* flags, double* forecast, double* scratch) {
  const int np = c.p + c.q + 1;
  const int nq = c.q > 1 ? c.q : 1;
  for (int64_t s = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; s < S;
       s += int64_t{gridDim.x} * blockDim.x) {
    double pr[kArimaMaxParamsHD];
    double le[kArimaMaxOrderHD];
    for (int i = 0; i < np; ++i) pr[i] = params[i * S + s];
    const ArimaSeries view{history + s, S, n, scratch + s,
                           scratch + static_cast<int64_t>(n) * S + s, S};
    const ArimaFitResult r =
        ArimaFitOne(c, view, warm != nullptr && warm[s] != 0, horizon, pr, le);
    for (int i = 0; i < np; ++i) params[i * S + s] = pr[i];
    if (last_e != nullptr) {
      for (int j = 0; j < nq; ++j) last_e[j * S + s] = j < c.q ? le[j] : 0.0;
    }
    if (css != nullptr) css[s] = r.css;
    if (start_css != nullptr) start_css[s] = r.start_css;
    if (iterations != nullptr) iterations[s] = r.iterations;
    if (flags != nullptr) flags[s] = r.flags;
    if (forecast != nullptr) forecast[s] = r.forecast;
  }
}

__global__ void LstmKernel(LstmShapeHD sh, const float* params,
                           const int* horizons, int64_t streams, int n,
                           const double* history, int horizon, float* scratch,
                           double* out) {
  const int64_t M = sh.num_experts;
  const int64_t S = streams * M;
  for (int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; b < streams;
       b += int64_t{gridDim.x} * blockDim.x) {
    LstmForecastStream(sh, params, horizons, history + b * M, S, 1, n, horizon,
                       scratch + b, streams, out + b * M, 1);
  }
}

// Sum of v over the block (blockDim.x == kThreads); every thread gets it.
__device__ double BlockSum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();
  return total;
}

__global__ void BootstrapKernel(BootstrapShape sh, const double* tokens,
                                const double* counts, const double* quality_input,
                                double* cf_gamma_rho, double* assignments,
                                double* n_out, double* q_out, int* times_all) {
  __shared__ double shared[kThreads];
  const int T = sh.steps, M = sh.experts, R = sh.replicates;
  const int64_t job = blockIdx.x;  // layer * R + r
  const int64_t layer = job / R;
  const int r = static_cast<int>(job % R);
  int* times = times_all + job * T;
  for (int t = threadIdx.x; t < T; t += blockDim.x) times[t] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < T; i += blockDim.x) {
    atomicAdd(&times[DrawIndexAt(sh.seed, static_cast<uint64_t>(r) * T + i, T)], 1);
  }
  __syncthreads();
  const double* tok = tokens + layer * T;
  const double* cnt = counts + layer * T * M;
  const double* qin = quality_input + layer * T * M;
  double tk = 0;  // every thread sums the tokens (T values, broadcast reads)
  for (int t = 0; t < T; ++t) {
    if (times[t] > 0) tk += tok[t] * times[t];
  }
  double* n = n_out + job * M;
  double* q = q_out + job * M;
  double part_a = 0, part_q = 0, part_zero = 0;
  for (int e = threadIdx.x; e < M; e += blockDim.x) {
    double ne = 0, wx = 0;
    for (int t = 0; t < T; ++t) {
      const int c = times[t];
      if (c == 0) continue;
      const double w = c;
      ne += w * cnt[static_cast<int64_t>(t) * M + e];
      wx += w * (tok[t] * qin[static_cast<int64_t>(t) * M + e]);
    }
    double v = wx / tk;
    if (sh.log_quality) v = log(v);
    n[e] = ne;
    q[e] = v;
    part_a += ne;
    part_q += v;
    part_zero += ne <= 0 ? 1.0 : 0.0;
  }
  const double a = BlockSum(part_a, shared);
  const double qmean = BlockSum(part_q, shared) / M;
  const double zeros = BlockSum(part_zero, shared);
  const double shift = zeros > 0 ? 0.5 : 0.0;
  const double denom = a + shift * M;
  double sw = 0, sx = 0, sy = 0;
  for (int e = threadIdx.x; e < M; e += blockDim.x) {
    q[e] -= qmean;
    const double x = (n[e] + shift) / denom;
    const double y = q[e] - sh.sigma * log(x);
    const double w = sh.uniform_weights ? 1.0 : n[e] + shift;
    sw += w;
    sx += w * x;
    sy += w * y;
  }
  sw = BlockSum(sw, shared);
  sx = BlockSum(sx, shared);
  sy = BlockSum(sy, shared);
  const double xb = sx / sw, yb = sy / sw;
  double sxx = 0, sxy = 0;
  for (int e = threadIdx.x; e < M; e += blockDim.x) {
    const double x = (n[e] + shift) / denom;
    const double y = q[e] - sh.sigma * log(x);
    const double w = sh.uniform_weights ? 1.0 : n[e] + shift;
    sxx += w * (x - xb) * (x - xb);
    sxy += w * (x - xb) * (y - yb);
  }
  sxx = BlockSum(sxx, shared);
  sxy = BlockSum(sxy, shared);
  if (threadIdx.x == 0) {
    const double nan = __longlong_as_double(0x7ff8000000000000LL);
    assignments[job] = a > 0 ? a : 0.0;
    cf_gamma_rho[job] = a > 0 && sw > 0 && sxx > 0 ? sxy / sxx : nan;
  }
}

}  // namespace

CoreStatus SwAvgObserve(const SwAvgShape& sh, bool resum, const double* x,
                        float* ring, double* sum, void* stream) {
  if (sh.series < 0 || sh.window < 1 || sh.count < 0 || sh.count > sh.window ||
      sh.head < 0 || sh.head >= sh.window) {
    return CoreStatus::kInvalidArgument;
  }
  if (sh.series == 0) return CoreStatus::kOk;
  SwAvgObserveKernel<<<BlocksFor(sh.series), kThreads, 0, AsStream(stream)>>>(
      sh, resum, x, ring, sum);
  return CheckLaunch("SwAvgObserve");
}

CoreStatus SwAvgForecast(const SwAvgShape& sh, int horizon,
                         const double* weights, const float* ring,
                         const double* sum, double* out, void* stream) {
  if (sh.series < 0 || sh.window < 1 || sh.count < 1 || sh.count > sh.window ||
      horizon < 1) {
    return CoreStatus::kInvalidArgument;
  }
  if (sh.series == 0) return CoreStatus::kOk;
  SwAvgForecastKernel<<<BlocksFor(sh.series), kThreads, 0, AsStream(stream)>>>(
      sh, horizon, weights, ring, sum, out);
  return CheckLaunch("SwAvgForecast");
}

CoreStatus EmaObserve(int64_t series, bool started, double theta,
                      const double* x, double* state, void* stream) {
  if (series < 0 || !(theta >= 0 && theta < 1)) return CoreStatus::kInvalidArgument;
  if (series == 0) return CoreStatus::kOk;
  EmaObserveKernel<<<BlocksFor(series), kThreads, 0, AsStream(stream)>>>(
      series, started, theta, x, state);
  return CheckLaunch("EmaObserve");
}

CoreStatus HoltObserve(int64_t series, int group_size, bool started,
                       const double* alpha, const double* beta,
                       const double* phi, const double* x, double* level,
                       double* trend, void* stream) {
  if (series < 0 || group_size < 1) return CoreStatus::kInvalidArgument;
  if (series == 0) return CoreStatus::kOk;
  HoltObserveKernel<<<BlocksFor(series), kThreads, 0, AsStream(stream)>>>(
      series, group_size, started, alpha, beta, phi, x, level, trend);
  return CheckLaunch("HoltObserve");
}

CoreStatus HoltForecast(int64_t series, int group_size, int horizon,
                        const double* phi, const double* level,
                        const double* trend, double* out, void* stream) {
  if (series < 0 || group_size < 1 || horizon < 1) return CoreStatus::kInvalidArgument;
  if (series == 0) return CoreStatus::kOk;
  HoltForecastKernel<<<BlocksFor(series), kThreads, 0, AsStream(stream)>>>(
      series, group_size, horizon, phi, level, trend, out);
  return CheckLaunch("HoltForecast");
}

CoreStatus ArimaFitForecast(const ArimaConfig& c, int64_t series, int n,
                            const double* history, const uint8_t* warm,
                            int horizon, double* params, double* last_e,
                            double* css, double* start_css, int* iterations,
                            int* flags, double* forecast, double* scratch,
                            void* stream) {
  if (series < 0 || n < 1 || c.p < 0 || c.p > kArimaMaxOrderHD || c.q < 0 ||
      c.q > kArimaMaxOrderHD || c.d < 0 || c.d > 2 || c.max_iterations < 1 ||
      scratch == nullptr) {
    return CoreStatus::kInvalidArgument;
  }
  if (series == 0) return CoreStatus::kOk;
  // Few registers' worth of parallelism per thread: smaller blocks spread the
  // series over more SMs at modest batch sizes.
  constexpr int kArimaThreads = 64;
  const int64_t blocks = (series + kArimaThreads - 1) / kArimaThreads;
  ArimaKernel<<<static_cast<int>(blocks > (1 << 30) ? (1 << 30) : blocks),
                kArimaThreads, 0, AsStream(stream)>>>(
      c, series, n, history, warm, horizon, params, last_e, css, start_css,
      iterations, flags, forecast, scratch);
  return CheckLaunch("ArimaFitForecast");
}

CoreStatus LstmForecast(const LstmShapeHD& sh, const float* params,
                        const int* horizons, int64_t streams, int n,
                        const double* history, int horizon, float* scratch,
                        double* out, void* stream) {
  if (streams < 0 || n < 1 || sh.num_experts < 1 || sh.hidden < 1 ||
      sh.num_layers < 1 || sh.num_horizons < 1 || sh.block < 1 ||
      sh.lookback < 1 || sh.anchor_window < 1 || scratch == nullptr) {
    return CoreStatus::kInvalidArgument;
  }
  if (streams == 0) return CoreStatus::kOk;
  constexpr int kLstmThreads = 64;
  const int64_t blocks = (streams + kLstmThreads - 1) / kLstmThreads;
  LstmKernel<<<static_cast<int>(blocks), kLstmThreads, 0, AsStream(stream)>>>(
      sh, params, horizons, streams, n, history, horizon, scratch, out);
  return CheckLaunch("LstmForecast");
}

CoreStatus GammaBootstrap(const BootstrapShape& sh, const double* tokens,
                          const double* counts, const double* quality_input,
                          double* cf_gamma_rho, double* assignments,
                          double* n_out, double* q_out, int* scratch_times,
                          void* stream) {
  if (sh.layers < 0 || sh.steps < 1 || sh.experts < 1 || sh.replicates < 0 ||
      n_out == nullptr || q_out == nullptr || scratch_times == nullptr) {
    return CoreStatus::kInvalidArgument;
  }
  const int64_t jobs = static_cast<int64_t>(sh.layers) * sh.replicates;
  if (jobs == 0) return CoreStatus::kOk;
  if (jobs > 0x7fffffff) return CoreStatus::kInvalidArgument;
  BootstrapKernel<<<static_cast<int>(jobs), kThreads, 0, AsStream(stream)>>>(
      sh, tokens, counts, quality_input, cf_gamma_rho, assignments, n_out, q_out,
      scratch_times);
  return CheckLaunch("GammaBootstrap");
}

CoreStatus DeviceCount(int* count) {
  *count = 0;
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    Check(err, "cudaGetDeviceCount");
    return CoreStatus::kNoDevice;
  }
  *count = n;
  return n > 0 ? CoreStatus::kOk : CoreStatus::kNoDevice;
}

CoreStatus DeviceName(char* out, int out_size) {
  if (out_size > 0) out[0] = '\0';
  cudaDeviceProp prop;
  const CoreStatus s = Check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  if (s != CoreStatus::kOk) return s;
  snprintf(out, out_size, "%s (sm_%d%d, %d SMs, %.1f GiB)", prop.name, prop.major,
           prop.minor, prop.multiProcessorCount,
           prop.totalGlobalMem / 1073741824.0);
  return CoreStatus::kOk;
}

CoreStatus Malloc(void** ptr, size_t bytes) {
  *ptr = nullptr;
  if (bytes == 0) return CoreStatus::kOk;
  return Check(cudaMalloc(ptr, bytes), "cudaMalloc");
}

CoreStatus Free(void* ptr) {
  if (ptr == nullptr) return CoreStatus::kOk;
  return Check(cudaFree(ptr), "cudaFree");
}

CoreStatus CopyToDevice(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return CoreStatus::kOk;
  return Check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, AsStream(stream)),
               "cudaMemcpyAsync H2D");
}

CoreStatus CopyToHost(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return CoreStatus::kOk;
  return Check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, AsStream(stream)),
               "cudaMemcpyAsync D2H");
}

CoreStatus Memset(void* dst, int value, size_t bytes, void* stream) {
  if (bytes == 0) return CoreStatus::kOk;
  return Check(cudaMemsetAsync(dst, value, bytes, AsStream(stream)), "cudaMemsetAsync");
}

CoreStatus StreamCreate(void** stream) {
  cudaStream_t s = nullptr;
  const CoreStatus st = Check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking),
                              "cudaStreamCreate");
  *stream = s;
  return st;
}

CoreStatus StreamDestroy(void* stream) {
  if (stream == nullptr) return CoreStatus::kOk;
  return Check(cudaStreamDestroy(AsStream(stream)), "cudaStreamDestroy");
}

CoreStatus StreamSynchronize(void* stream) {
  return Check(cudaStreamSynchronize(AsStream(stream)), "cudaStreamSynchronize");
}

const char* LastErrorString() { return g_last_error; }

}  // namespace gpu
}  // namespace core
}  // namespace kernels
}  // namespace moecast
