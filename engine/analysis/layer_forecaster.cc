#include "engine/analysis/layer_forecaster.h"

namespace moecast {

LayerForecaster::Events LayerForecaster::Observe(
    int64_t step, int layer, absl::Span<const double> p, double tokens,
    double assignments, const ShiftOptions& options) {
  Events e;
  e.transition = state->Observe(step, p, tokens, layer);
  e.shift = shift->Observe(step, p, assignments);
  if (e.shift.has_value()) e.shift_transition = state->OnShift(step, layer);
  // The bank counts this step in Advance; the classifier already has.
  bank->set_stable_history(state->StableHistory(bank->steps_observed() + 1));
  bank->ObservePredictors(p);
  if (e.shift.has_value() && options.restart_predictors) {
    bank->RestartPredictors(shift->since_change(), options.restart_max_memory);
  }
  return e;
}

void LayerForecaster::Restored() {
  bank->set_stable_history(state->StableHistory(bank->steps_observed()));
}

}  // namespace moecast
