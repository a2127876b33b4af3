// Host API of the batched forecasting kernels: many series at once (all
// experts of all layers of all jobs), on the CPU reference or on a CUDA GPU,
// with absl::Status errors and no CUDA types.
//
//   BatchOptions o;                       // backend kAuto by default
//   auto sw = MakeSwAvgBatch(/*series=*/S, /*group_size=*/M, /*window=*/100, o);
//   for (each step) RETURN_IF_ERROR((*sw)->Observe(x));      // x: S values
//   RETURN_IF_ERROR((*sw)->Forecast(/*horizon=*/100, out));  // out: S values
//
// Series layout: series s = g * group_size + e (group g = one (job, layer)
// stream, e its expert); a step's input x[s] is that expert's proportion.
// Histories are [n][S], oldest first (element (t, s) at t * S + s).
//
// Backends: kCpu runs core::cpu (std::thread over all cores); kGpu runs
// core::gpu and fails with UNAVAILABLE when there is no usable GPU (or the
// build has no CUDA); kAuto takes the GPU when one is present and the batch
// has at least options.gpu_min_series series, else the CPU -- and says once
// on stderr when it falls back for lack of a GPU.
//
// Thread-safety: GpuAvailable() is thread-safe. A batch object is not: one
// thread drives it. The stateless functions are reentrant.
#ifndef MOECAST_KERNELS_BATCH_H_
#define MOECAST_KERNELS_BATCH_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace moecast {
class LstmWeights;

namespace kernels {

enum class Backend { kCpu, kGpu, kAuto };

// Series per call above which kAuto picks the GPU. PROVISIONAL: the GPU path
// has not been run on a GPU yet, so this crossover is not measured; it is
// the value to replace with the one gpu_bench prints ("crossover" lines; see
// kernels/README.md and BENCHMARKS.md, section "kernels") on the target GPU.
inline constexpr int64_t kGpuCrossoverSeries = 65536;

struct BatchOptions {
  Backend backend = Backend::kAuto;
  // CPU threads for the CPU reference; <= 0: all cores.
  int cpu_threads = 0;
  // kAuto's crossover, in series per call (>= 0).
  int64_t gpu_min_series = kGpuCrossoverSeries;
};

// Whether a CUDA device can be used (cached after the first call; thread-safe).
bool GpuAvailable();
// OK when GpuAvailable(); else UNAVAILABLE("built without CUDA") or
// UNAVAILABLE("no CUDA device: <runtime message>").
absl::Status GpuStatus();
// kCpu or kGpu for a call over `series` series (kGpu only if available for
// kAuto; kGpu stays kGpu and then fails with GpuStatus()).
Backend ResolveBackend(const BatchOptions& options, int64_t series);
const char* BackendName(Backend backend);

// The state of the cheap predictors for S series, resident on the backend
// chosen at creation (GPU state stays on the device between calls; each call
// copies S inputs in or S outputs out).
class CheapBatch {
 public:
  virtual ~CheapBatch();
  CheapBatch(const CheapBatch&) = delete;
  CheapBatch& operator=(const CheapBatch&) = delete;

  int64_t series() const { return series_; }
  int group_size() const { return group_size_; }
  Backend backend() const { return backend_; }  // kCpu or kGpu

  // One step: x has series() proportions. INVALID_ARGUMENT on a size mismatch.
  [[nodiscard]] virtual absl::Status Observe(absl::Span<const double> x) = 0;
  // Mean forecast over the next `horizon` (>= 1) steps into out (series()
  // values); before the first observation 1 / group_size.
  [[nodiscard]] virtual absl::Status Forecast(int horizon, absl::Span<double> out) = 0;

 protected:
  struct Device;
  CheapBatch(int64_t series, int group_size, Backend backend);
  absl::Status InitDevice();
  const int64_t series_;
  const int group_size_;
  const Backend backend_;
  std::unique_ptr<Device> dev_;  // streams and buffers on the GPU backend
};

// sw_avg(W), as engine/predict/sw_avg.cc (window 1..100000).
absl::StatusOr<std::unique_ptr<CheapBatch>> MakeSwAvgBatch(
    int64_t series, int group_size, int window, const BatchOptions& options);
// ema(theta), as engine/predict/ema.cc (0 <= theta < 1).
absl::StatusOr<std::unique_ptr<CheapBatch>> MakeEmaBatch(
    int64_t series, int group_size, double theta, const BatchOptions& options);
// holt with given parameters per group (the engine fits them by grid search;
// the fit stays on the CPU): group_params[g] = {alpha, beta, phi}.
struct HoltGroupParams {
  double alpha = 0.1;
  double beta = 0.05;
  double phi = 0.9;
};
absl::StatusOr<std::unique_ptr<CheapBatch>> MakeHoltBatch(
    int64_t series, int group_size, std::vector<HoltGroupParams> group_params,
    const BatchOptions& options);

// ARIMA(p,d,q) CSS fits and forecasts of S series at once (engine:
// ArimaCss::Fit + ForecastPath; see arima.h).
struct ArimaBatchConfig {
  int p = 5, d = 1, q = 5;
  bool drift = false;
  int max_iterations = 10;
  double tolerance = 1e-8;
};
struct ArimaBatchResult {
  std::vector<double> css;       // S
  std::vector<int> iterations;   // S
  std::vector<int> flags;        // S: 1 warm start, 2 degenerate
  std::vector<double> forecast;  // S: mean over `horizon` (if horizon >= 1)
  std::vector<double> last_e;    // [max(q,1)][S] last residuals, newest first
};
// history: [n][S] levels (n >= 1). params: [p+q+1][S], the warm start where
// warm[s] (warm empty: all cold); overwritten with the fits.
absl::StatusOr<ArimaBatchResult> ArimaFitForecastBatch(
    const ArimaBatchConfig& config, int64_t series, int n,
    absl::Span<const double> history, absl::Span<const uint8_t> warm,
    int horizon, absl::Span<double> params, const BatchOptions& options);

// LSTM forecasts of B streams of M experts sharing one model (layers and
// jobs batched): history [n][B*M] (the last n steps, 1 <= n), out B*M values
// (the engine's Forecast(horizon) for each stream).
absl::Status LstmForecastBatch(const LstmWeights& weights, int64_t streams, int n,
                               absl::Span<const double> history, int horizon,
                               absl::Span<double> out, const BatchOptions& options);

// The gamma_eff bootstrap's batched part for L windows of T steps and M
// experts (engine: FitGamma's bootstrap loop): per replicate the resampled
// sums and the closed-form slope. The maximum-likelihood refit of each
// replicate is NOT done here (see README.md).
struct BootstrapBatchConfig {
  int layers = 1, steps = 0, experts = 0, replicates = 200;
  int top_k = 1;
  double sigma = 1.0;
  bool log_quality = false;      // quality input is a mean probability
  bool uniform_weights = false;  // closed form with w_e = 1
  uint64_t seed = 0x6d6f656361737431ULL;
};
struct BootstrapBatchResult {
  std::vector<double> cf_gamma_rho;  // [L][R], NaN where undefined
  std::vector<double> assignments;   // [L][R], 0: the replicate failed
  std::vector<double> counts;        // [L][R][M] resampled n_e
  std::vector<double> quality;       // [L][R][M] centred quality
};
absl::StatusOr<BootstrapBatchResult> GammaBootstrapBatch(
    const BootstrapBatchConfig& config, absl::Span<const double> tokens,
    absl::Span<const double> counts, absl::Span<const double> quality_input,
    const BatchOptions& options);

}  // namespace kernels
}  // namespace moecast

#endif  // MOECAST_KERNELS_BATCH_H_
