// Evaluator: replays a trace with a sliding forecast origin and measures
// every predictor's error by horizon and by state, next to the noise floors
// of design section 2. It is what `moecast bench` runs.
//
//   EvalOptions options;
//   options.top_k = 2;
//   options.horizons = {1, 10, 100, 1000};
//   MOECAST_ASSIGN_OR_RETURN(EvalReport report, Evaluate(*reader, options));
//
// Method. Each layer gets a ForecastBank (the predictors plus auto), a
// StateClassifier and a ShiftMonitor, fed step by step as in the engine. Forecast origins are every
// max(1, h/10) steps at each horizon; a forecast made after step t is scored
// against the token-weighted mean of steps t+1..t+h. Each scored forecast is
// attributed to the state of its layer at the origin. Metrics (design
// section 4): L1 = sum_e |f_e - y_e|; MAPE = mean over experts with y_e > 0
// of |f_e - y_e| / y_e; per-step MAPE = the mean over the h steps of the
// per-step MAPE. Each is averaged over a layer's scored forecasts, then over
// layers (layers with no scored forecast in a state are left out of that
// state's mean). At the same origins:
//   sampling floor  = sum_e sqrt(2/pi) sqrt(y_e (1 - K y_e) / (K sum_t N_t))
//   empirical floor = sum_e sqrt(2/pi) sqrt(s_e^2 / h), s_e^2 half the
//                     variance of p_e's step-to-step differences over the
//                     last `floor_window` steps before the origin.
//
// Thread-safety: Evaluate is reentrant.
#ifndef MOECAST_ENGINE_EVAL_EVALUATOR_H_
#define MOECAST_ENGINE_EVAL_EVALUATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/predict/forecast_bank.h"
#include "engine/state/shift_detector.h"
#include "engine/state/state_classifier.h"
#include "engine/trace/trace_reader.h"

namespace moecast {

struct EvalOptions {
  int top_k = 0;                              // required, 1..M
  std::vector<int> horizons = {1, 10, 100, 1000};
  std::vector<std::string> predictors;        // empty: the default bank
  int auto_blend = ForecastBankOptions().auto_blend;
  double error_half_life = ForecastBankOptions().error_half_life;
  double auto_long_run_weight = ForecastBankOptions().auto_long_run_weight;
  bool auto_memory_prior = ForecastBankOptions().auto_memory_prior;
  StateOptions state;
  // Shift detection per layer, as in the engine; with restart_predictors
  // the bank's long-memory predictors restart at each shift's change point.
  ShiftOptions shift;
  int64_t max_steps = 0;                      // 0: the whole trace
  int floor_window = 100;                     // steps, for the empirical floor
  // Steps timed per predictor and layer for `timing` (after the first 500,
  // so that windows are full and fits exist).
  int timing_steps = 2000;
  // The series kept for plots: one layer, the `series_experts` busiest experts,
  // auto's forecasts at `series_horizon`, at most `series_max_points` points.
  int series_layer = 0;
  int series_experts = 3;
  int series_horizon = 10;
  int series_max_points = 4000;
};

// Returns OK or INVALID_ARGUMENT naming the field.
absl::Status ValidateEvalOptions(const EvalOptions& options);

struct EvalResult {
  std::string predictor;  // a bank predictor's name, or "auto"
  int horizon = 0;
  std::string state;      // "all", "transient", "stable"
  double l1 = 0, mape = 0, step_mape = 0;
  int64_t n = 0;          // scored forecasts
};

struct FloorResult {
  int horizon = 0;
  std::string state;
  double l1 = 0;
  int64_t n = 0;
};

struct EvalTransition {
  int layer = 0;
  int64_t step = 0;
  std::string from, to;
  double drift_ratio = 0;
};

struct EvalShift {
  int layer = 0;
  int64_t step = 0;         // detected at
  int64_t change_step = 0;  // estimated change point
  double size = 0;          // L1 between the mean shares before and after
};

struct EvalTiming {
  std::string predictor;
  double update_us = 0;    // Observe, per layer-step
  double forecast_us = 0;  // Forecast at each horizon, per call (mean)
  int experts = 0;
};

struct EvalSeries {
  int layer = 0;
  int horizon = 0;
  std::vector<int> experts;
  std::vector<int64_t> steps;                 // origin steps
  std::vector<std::vector<double>> actual;    // per expert: realised mean
  std::vector<std::vector<double>> forecast;  // per expert: auto's forecast
  std::vector<std::string> state;             // at the origin
  std::vector<std::string> predictor;         // auto's choice
};

struct EvalReport {
  std::string counts_path;
  int64_t steps = 0;
  int layers = 0, experts = 0, top_k = 0;
  std::vector<int64_t> layer_ids;
  std::vector<std::string> predictors;  // including "auto"
  std::vector<int> horizons;
  std::vector<EvalResult> results;
  std::vector<FloorResult> noise_floor;
  std::vector<FloorResult> empirical_floor;
  std::vector<EvalTransition> transitions;
  std::vector<EvalShift> shifts;  // every layer's, in order of detection
  int64_t layer_shifts = 0;       // shifts.size()
  std::vector<EvalTiming> timing;
  EvalSeries series;
  // Per layer: the first step from which it stayed stable to the end (-1 if
  // it ends transient), and the mean drift ratio over its first 1,000 steps.
  std::vector<int64_t> stable_from;
  std::vector<double> early_drift_ratio;
};

// Replays `reader` from its current position. INVALID_ARGUMENT for bad
// options or a trace the options do not fit (top_k > experts, unknown
// predictor); trace errors as TraceReader::Next.
absl::StatusOr<EvalReport> Evaluate(TraceReader& reader,
                                    const EvalOptions& options);

// The report as JSON (keys as in `moecast bench`'s documentation).
std::string EvalReportToJson(const EvalReport& report);

}  // namespace moecast

#endif  // MOECAST_ENGINE_EVAL_EVALUATOR_H_
