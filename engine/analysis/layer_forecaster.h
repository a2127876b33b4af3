// LayerForecaster: one layer's forecasting state, its load-state classifier,
// shift detectors and forecast bank, and the one way a step advances them.
// The engine (JobAnalyzer) and the offline evaluator (`moecast bench`) both
// step layers through Observe, so the bench measures what the engine does.
//
//   LayerForecaster f{std::move(state), std::move(shift), std::move(bank)};
//   for (each step with assignments) {
//     LayerForecaster::Events e =
//         f.Observe(step, layer, proportions, tokens, assignments, shift_options);
//     ... report e.transition, e.shift, e.shift_transition ...
//     // refits that are due (ForecastBank::AppendDueRefits), then:
//     f.bank->Advance(step, proportions, assignments);
//   }
//
// Thread-safety: not thread-safe; the owner serializes calls.
#ifndef MOECAST_ENGINE_ANALYSIS_LAYER_FORECASTER_H_
#define MOECAST_ENGINE_ANALYSIS_LAYER_FORECASTER_H_

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/types/span.h"
#include "engine/predict/forecast_bank.h"
#include "engine/state/shift_detector.h"
#include "engine/state/state_classifier.h"

namespace moecast {

struct LayerForecaster {
  std::unique_ptr<StateClassifier> state;
  std::unique_ptr<ShiftMonitor> shift;  // detectors at every scale
  std::unique_ptr<ForecastBank> bank;

  // What one step changed.
  struct Events {
    std::optional<StateTransition> transition;        // the classifier's own
    std::optional<Shift> shift;                        // a load shift
    std::optional<StateTransition> shift_transition;  // stable -> transient by it
  };

  // One step of the layer (proportions summing to 1, `tokens` N, and
  // `assignments` sum(c) > 0): classifies it, looks for a shift (a shift is
  // also evidence for the state: the layer turns transient), tells the bank
  // the stable history auto's prior may use, feeds the predictors and, after
  // a shift with options.restart_predictors, restarts those of memory at most
  // options.restart_max_memory from its change point. The bank's scoring
  // (ForecastBank::Advance) is the caller's next call, after any due refit.
  Events Observe(int64_t step, int layer, absl::Span<const double> proportions,
                 double tokens, double assignments, const ShiftOptions& options);

  // After the classifier and bank were restored from a snapshot: tells the
  // bank the stable history, as Observe did after the last step (it is not
  // part of the bank's snapshot).
  void Restored();
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_ANALYSIS_LAYER_FORECASTER_H_
