// ForecastJobs: the engine's forecasts for many jobs at once, through the
// batched kernels (batch.h). For a cluster-level scheduler that asks for every
// layer of every job together (e.g. 64 jobs x 58 layers x 256 experts, about
// 1M series), instead of a loop of Engine::Forecast calls that run one
// (job, layer) stream at a time.
//
//   BatchForecastRequest r;
//   r.predictor = "sw_avg(100)";
//   r.horizon = 100;
//   r.batch.backend = Backend::kAuto;   // GPU above the crossover, if any
//   MOECAST_ASSIGN_OR_RETURN(BatchForecastResult f,
//                            ForecastJobs(*engine, job_ids, r));
//   f.jobs[j].layers[l].mean[e]          // expert e's mean share, next 100 steps
//
// How. Every layer's history ring is read once (Engine::VisitHistory), the
// steps the predictor needs are laid out series-major ([n][S], series
// s = g*M + e over the layers g of a group) and each group of layers with the
// same number of experts M and the same number of steps n runs as ONE batched
// call on the backend that ResolveBackend picks for its size (kAuto without a
// GPU: the CPU reference, said once on stderr). The answers are clipped at 0
// and renormalised per layer, as the engine does (NormalizeForecast).
//
// What it reproduces. The engine's predictors keep online state built from
// every step; ForecastJobs rebuilds it from the ring (the last
// EngineOptions::history_capacity_steps steps of each layer). Steps whose
// layer had no assignments are skipped, as the engine's predictors never see
// them. Per predictor:
//   sw_avg(W)     the last min(W, steps) steps: the engine's answer up to
//                 summation order (1e-12).
//   ema(theta)    restarted at the oldest of the last min(steps, K) ring
//                 steps, K the smallest k with theta^k <= 1e-17; it differs
//                 from the engine's state by at most theta^n (n = steps used,
//                 proportions in [0, 1]) plus the ring's float storage of the
//                 inputs (2^-24 relative; the engine's EMA sees doubles).
//   holt          with BatchForecastRequest::holt_params unset: the engine's
//                 own fit, reproduced per layer (grid search on the top
//                 experts of the fit window, on the CPU), at the step counts
//                 where the engine fits (fit_window/2, then every refit_every
//                 steps), which holds when the job's bank forecasts at every
//                 step (its horizons include one <= 10, as the default ones
//                 do); the batch then runs the filter from the start of that
//                 fit window. Set: those parameters for every layer, from the
//                 oldest ring step (not the engine's answer).
//   arima(p,d,q)  a COLD CSS fit on the last min(steps, fit_window) levels,
//                 now (the engine refits every refit_every steps from its
//                 previous fit: warm-started, up to refit_every - 1 steps old).
//                 Equal to the engine at its first fit (steps ==
//                 ArimaMinFitObservations); before that, as the engine, the
//                 mean of the steps seen.
//   lstm          the last min(steps, lookback*block) steps: the engine's
//                 network re-runs on the same window (within the kernels'
//                 2e-5).
// A layer whose answer needed steps that have left the ring says so
// (history_truncated): the engine's count of steps is taken as
// totals().steps minus the ring's steps without assignments, i.e. steps
// without assignments that left the ring are assumed not to exist.
//
// Consistency. Each layer is read under its job's lock, but the layers of one
// job are read one at a time: a step ingested concurrently can appear in
// some layers and not others (each layer reports its as_of_step).
//
// Errors (nothing is returned on any error; never a partial answer):
// INVALID_ARGUMENT for an unknown or malformed predictor, a horizon outside
// [1, 1000000], an empty job list, or an lstm model missing for a job's M;
// NOT_FOUND naming the first unknown job; FAILED_PRECONDITION naming a job
// with no committed steps; UNAVAILABLE for Backend::kGpu without a GPU; any
// error of the kernels.
//
// Thread-safety: reentrant; the engine's own locking applies.
#ifndef MOECAST_KERNELS_ENGINE_BATCH_H_
#define MOECAST_KERNELS_ENGINE_BATCH_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/engine.h"
#include "engine/predict/arima/arima.h"
#include "engine/predict/basic_predictors.h"
#include "kernels/batch.h"

namespace moecast {
class LstmWeights;

namespace kernels {

struct BatchForecastRequest {
  // "sw_avg" (100), "sw_avg(W)", "ema" (0.9), "ema(theta)", "holt",
  // "arima" (5,1,5), "arima(p,d,q)", "arima(p,d,q)+drift", "lstm" (models in
  // lstm_models) or "lstm(PATH)" (one weights file).
  std::string predictor = "sw_avg(100)";
  // Forecast of the mean share over the next `horizon` steps, in [1, 1e6].
  int horizon = 100;
  // Backend (kCpu, kGpu, kAuto), kAuto's crossover and the CPU threads.
  BatchOptions batch;

  // holt: the engine's grid and schedule (HoltOptions defaults are the
  // engine's "holt"); holt_params set: use these for every layer instead.
  HoltOptions holt_options;
  std::optional<HoltGroupParams> holt_params;

  // arima: fit_window, max_iterations and tolerance (p, d, q and drift come
  // from the name). Defaults are the engine's "arima(p,d,q)".
  ArimaOptions arima_options;

  // lstm: one model per number of experts (a job whose M has none is
  // INVALID_ARGUMENT).
  std::vector<std::shared_ptr<const LstmWeights>> lstm_models;
};

struct BatchLayerForecast {
  std::vector<double> mean;      // M values, >= 0, sum 1
  int64_t as_of_step = -1;       // newest step in the ring when read
  int steps_used = 0;            // ring steps fed to the predictor
  bool history_truncated = false;  // needed steps had left the ring
};

struct BatchJobForecast {
  std::string job_id;
  int num_experts = 0;
  std::vector<BatchLayerForecast> layers;  // index = layer
};

// One batched call.
struct BatchGroupRun {
  int num_experts = 0;  // M
  int steps = 0;        // n, the steps fed per series
  int layers = 0;       // (job, layer) streams in the group
  int64_t series = 0;   // layers * M
  Backend backend = Backend::kCpu;  // where it ran (kCpu or kGpu)
};

struct BatchForecastResult {
  std::string predictor;  // canonical name, as the engine's bank names it
  int horizon = 0;
  // kCpu or kGpu when every group ran there; kAuto when groups ran on both.
  // Layers answered without a kernel call (no steps with assignments: the
  // uniform 1/M; arima before its first fit: the mean) count as kCpu.
  Backend backend = Backend::kCpu;
  std::vector<BatchJobForecast> jobs;  // in the order of job_ids
  std::vector<BatchGroupRun> groups;   // one per batched call
  int host_layers = 0;                 // layers answered without a kernel call
  // Wall time: reading the rings and laying out [n][S] (gather); parameter
  // fits on the CPU (holt) and the batched calls (compute); splitting and
  // renormalising the answers (scatter).
  absl::Duration gather, compute, scatter;
};

absl::StatusOr<BatchForecastResult> ForecastJobs(const Engine& engine,
                                                 absl::Span<const std::string> job_ids,
                                                 const BatchForecastRequest& request);

// The holt parameters the engine's holt predictor chooses on a fit window of
// `count` steps (rows oldest first, count x M floats) with `options`: its grid
// search on the fit_experts experts of largest mean share. Exposed for tests.
HoltGroupParams FitHoltLikeEngine(const float* rows, int count, int num_experts,
                                  const HoltOptions& options);

}  // namespace kernels
}  // namespace moecast

#endif  // MOECAST_KERNELS_ENGINE_BATCH_H_
