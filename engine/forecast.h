// Forecasting and state types of the Engine API: what to ask for, what comes
// back, and the events a job emits.
//
//   ForecastRequest request;
//   request.horizons = {10, 100};
//   request.predictor = "auto";         // or a name from the job's bank
//   MOECAST_ASSIGN_OR_RETURN(ForecastResult r, engine->Forecast("job", request));
//   r.layers[3].horizons[1].mean[e]      // expert e's mean share, next 100 steps
//
// Thread-safety: plain value types.
#ifndef MOECAST_ENGINE_FORECAST_H_
#define MOECAST_ENGINE_FORECAST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "engine/analysis_progress.h"
#include "engine/state/state_classifier.h"

namespace moecast {

struct ForecastRequest {
  // Horizons in steps (each >= 1). Empty: the job's scored horizons.
  std::vector<int> horizons;
  // "auto" (the best recent predictor per layer and horizon) or a name from
  // the job's bank, e.g. "sw_avg(100)".
  std::string predictor = "auto";
  // Central interval level in (0, 1), from each predictor's realised errors.
  double interval_level = 0.9;
  // Per-step path of this many steps (0: none), at most
  // EngineOptions::max_path_steps.
  int path_steps = 0;
  // Layers to answer for (indices); empty: all.
  std::vector<int> layers;
  // Wait for analysis (default) or answer stale (analysis_progress.h).
  Freshness freshness;
};

struct HorizonForecast {
  int horizon = 0;
  std::string predictor;             // which predictor answered
  std::vector<double> mean;          // M values, >= 0, sum 1
  std::vector<double> lower, upper;  // M values; empty until errors are known
};

struct LayerForecast {
  int layer = 0;
  LoadState state = LoadState::kTransient;
  std::optional<double> drift_ratio;
  std::vector<HorizonForecast> horizons;
  std::string path_predictor;
  std::vector<double> path;  // path_steps x M, row s = step t+1+s
};

// How well one predictor has done at one horizon, over a job's layers
// (means over the layers with at least one scored forecast). Errors are L1
// distances between forecast and realised mean shares (0..2).
struct ForecastScore {
  std::string predictor;  // a bank name, or "auto"
  int horizon = 0;
  int layers_scored = 0;  // layers with a score
  int64_t scored = 0;     // forecasts scored, summed over layers
  double recent_l1 = 0;   // recent error (what auto ranks by); NaN if none
  double mean_l1 = 0;     // over every scored forecast; NaN if none
};

struct ForecastResult {
  int64_t as_of_step = 0;  // the last analysed step (analysis.as_of_step)
  AnalysisProgress analysis;
  LoadState job_state = LoadState::kTransient;
  std::vector<LayerForecast> layers;
};

// Load shifts seen so far (engine/state/shift_detector.h): how many, and the
// last one's detection step, estimated change point and size (L1).
struct ShiftSummary {
  int64_t shifts = 0;
  std::optional<int64_t> last_step;         // unset before the first
  std::optional<int64_t> last_change_step;
  double last_size = 0;
};

struct StateReport {
  int64_t as_of_step = 0;  // the last analysed step (analysis.as_of_step)
  AnalysisProgress analysis;
  LoadState job_state = LoadState::kTransient;
  std::vector<StateSignals> layers;  // index = layer
  ShiftSummary job_shifts;                 // shifts of the job (most layers)
  std::vector<ShiftSummary> layer_shifts;  // index = layer
};

enum class EventKind {
  kStateChange,    // a layer's (layer >= 0) or the job's (layer = -1) state
  kPhaseChange,    // a layer's gamma_eff training phase (from, to: names)
  kExpertDead,     // value: the expert; from/to: "alive" -> "dead"
  kExpertRevived,  // value: the expert; from/to: "dead" -> "alive"
  kShift,          // a layer's (layer >= 0) or the job's (layer = -1) load
                   // shifted (engine/state/shift_detector.h); value: its
                   // size (L1), from: the estimated change step, to: empty
};

absl::string_view EventKindName(EventKind kind);

// Something that happened to a job, in order. Sequence numbers start at 1
// and increase by one per event of the job; a reader resumes after the last
// one it saw.
struct Event {
  int64_t seq = 0;
  int64_t step = 0;
  EventKind kind = EventKind::kStateChange;
  int layer = -1;
  std::string from, to;
  double value = 0;  // kStateChange: the drift ratio; expert events: expert;
                     // kShift: the size
  std::string detail;  // human-readable, with the numbers behind it
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_FORECAST_H_
