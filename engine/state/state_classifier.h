// StateClassifier: tells a layer's transient load from its stable load
// (Cong et al. 2024), online, with hysteresis.
//
// Cong et al. observed that expert load goes from a transient state (obvious
// step-to-step movement, early in training, shallow layers longest) to a
// stable state (temporal locality: adjacent steps look alike) and showed it
// with the windowed variance and range of the proportions (windows 10 and
// 100), without a detector. moecast decides with a statistic that means the
// same thing for every model, token count and top-k:
//
//   drift ratio  R = sum_e var_W(p_e) / sum_e (MSSD_W(p_e) / 2)
//
// the variance of each proportion over the last W steps divided by half its
// mean squared successive difference (von Neumann's ratio, pooled over
// experts). Step-to-step noise of any size and origin (token sampling, batch
// heterogeneity) enters both terms alike, so R is about 1 whenever the load
// fluctuates around a fixed distribution, and grows when the distribution
// itself moves within the window (trends, regime switches, wandering).
// Calibrated on the bundled traces (bench/traces, docs/states.md): stable
// windows sit at R = 0.9..1.1, the first hundreds of training steps at
// R = 5..35.
//
// Also reported, not decided on: the dispersion D = sum_e var_W(p_e) divided
// by the top-K sampling variance sum_e p_e (1 - K p_e) mean_t(1 / (K N_t))
// (design section 2; about 1 for pure sampling noise, larger with batch
// heterogeneity), and the drift between the means of the window's two halves
// in units of what noise alone would give.
//
// Decision: the layer enters `transient` when R > enter_threshold and goes
// back to `stable` when R < leave_threshold, each only after the current
// state has lasted min_dwell_steps; a load shift (OnShift) makes it
// transient at once. Before the first full window the state is
// transient (nothing shows stability yet).
//
// Thread-safety: not thread-safe; the owning job serializes access.
#ifndef MOECAST_ENGINE_STATE_STATE_CLASSIFIER_H_
#define MOECAST_ENGINE_STATE_STATE_CLASSIFIER_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/internal/snapshot_codec.h"

namespace moecast {

enum class LoadState { kTransient, kStable };

absl::string_view LoadStateName(LoadState state);

struct StateOptions {
  // Window W of the drift ratio, in steps (Cong et al.'s long window).
  int window = 100;
  // Hysteresis on the drift ratio R.
  double enter_threshold = 2.0;  // stable -> transient when R rises above
  double leave_threshold = 1.5;  // transient -> stable when R falls below
  // Least steps a state lasts before it may change.
  int min_dwell_steps = 200;
  // A job is transient while more than this fraction of its layers are.
  double job_transient_fraction = 0.5;
};

// Returns OK or INVALID_ARGUMENT naming the field and value.
absl::Status ValidateStateOptions(const StateOptions& options);

// A state change of one layer (layer >= 0) or of the whole job (layer = -1).
struct StateTransition {
  int64_t step = 0;
  int layer = -1;
  LoadState from = LoadState::kTransient;
  LoadState to = LoadState::kStable;
  double drift_ratio = 0;  // R at the transition (for a job: median over layers)
};

// The raw signals of one layer over its recent window.
struct StateSignals {
  LoadState state = LoadState::kTransient;
  int64_t state_since_step = 0;
  int window_steps = 0;                  // steps in the window (<= W)
  std::optional<double> drift_ratio;     // R, once the window has >= 3 steps
  std::optional<double> dispersion;      // D
  std::optional<double> half_drift;      // drift between window halves / noise
  // Cong et al.'s per-expert signals: variance and range (max - min) of p_e
  // over the last 10 and the last W steps (fewer while warming up).
  std::vector<double> variance_10, range_10, variance_w, range_w;
};

class StateClassifier {
 public:
  // Requires ValidateStateOptions(options).ok(), num_experts >= 2, top_k >= 1.
  StateClassifier(int num_experts, int top_k, const StateOptions& options);

  // Observes one step (proportions summing to 1, and the step's token count
  // N). Returns the transition if the state changed at this step.
  std::optional<StateTransition> Observe(int64_t step,
                                         absl::Span<const double> proportions,
                                         double tokens, int layer);

  // A load shift of this layer was detected at `step` (ShiftDetector: the
  // same evidence at any token count, where R's 100-step window may not see
  // it): a stable layer turns transient now, and a transient one restarts its
  // dwell, so that it stays transient for at least min_dwell_steps after the
  // latest shift. Returns the transition, if the state changed.
  std::optional<StateTransition> OnShift(int64_t step, int layer);

  LoadState state() const { return state_; }
  // How many of the `observed` steps this classifier has seen belong to the
  // current stable period: 0 while transient; all of them if the layer turned
  // stable at its first decision (the transient state before it was the
  // warm-up, not drift); else the steps since it turned stable.
  int64_t StableHistory(int64_t observed) const {
    if (state_ != LoadState::kStable) return 0;
    return observed - steps_in_state_ <= options_.min_dwell_steps
               ? observed
               : steps_in_state_;
  }
  // R over the current window, if defined.
  std::optional<double> drift_ratio() const;
  // The full signal report (O(W * M)).
  StateSignals Signals() const;

  int64_t MemoryBytes() const;

  // Snapshots: the window ring, running sums and the hysteresis state.
  // LoadFrom reads them into a classifier with the same num_experts and
  // window (DATA_LOSS through `in` otherwise).
  void SaveTo(internal::SnapshotWriter& out) const;
  void LoadFrom(internal::SnapshotReader& in);

 private:
  const float* Row(int age) const;  // age 0 = newest

  const int m_;
  const int k_;
  const StateOptions options_;
  std::vector<float> ring_;   // W x M proportions
  std::vector<double> inv_kn_;  // per ring slot: 1 / (K * N_t)
  int head_ = 0;
  int count_ = 0;
  // Running sums over the window, per expert: p, p^2, and squared successive
  // differences of the pairs inside the window.
  std::vector<double> sum_, sum_sq_, sum_diff_sq_;
  int since_resum_ = 0;
  LoadState state_ = LoadState::kTransient;
  int64_t state_since_ = 0;
  int64_t steps_in_state_ = 0;
  bool started_ = false;
};

// Combines layer states into the job's: transient while more than
// `fraction` of the layers are transient.
LoadState JobState(absl::Span<const LoadState> layers, double fraction);

}  // namespace moecast

#endif  // MOECAST_ENGINE_STATE_STATE_CLASSIFIER_H_
