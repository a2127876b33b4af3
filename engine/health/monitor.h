// HealthMonitor: the health signals of one (job, layer) over consecutive,
// non-overlapping W-step windows (design section 6): gamma_eff with its
// bootstrap CI (and under the other quality estimators when their inputs are
// there), the training phase of its trajectory, dead experts and revivals,
// and imbalance. The engine runs one per layer; `moecast health` runs one
// per layer of a trace.
//
//   HealthMonitor m(/*layer=*/3, /*num_experts=*/64, options);
//   for (each step) {
//     MOECAST_RETURN_IF_ERROR(m.Observe(step, counts, tokens, logits));
//     for (const HealthEvent& e : m.TakeEvents()) ...
//   }
//   const HealthWindow* w = m.latest();   // the last completed window
//
// Without router-logit means a window still has imbalance and dead experts;
// its gamma_status says gamma_eff needs logits.
//
// Thread-safety: not thread-safe; the owner serializes access.
#ifndef MOECAST_ENGINE_HEALTH_MONITOR_H_
#define MOECAST_ENGINE_HEALTH_MONITOR_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/health/ecology/ecology.h"
#include "engine/health/ecology/phase.h"
#include "engine/health/gamma/gamma.h"
#include "engine/internal/snapshot_codec.h"

namespace moecast {

struct HealthOptions {
  // Steps per gamma_eff window (consecutive, non-overlapping).
  int window_steps = 100;
  // gamma_eff fits (top_k is set from the job; estimator kMeanLogit).
  GammaOptions gamma;
  // Also fit gamma_eff under the other quality estimators when their inputs
  // are present (no bootstrap for those), for the trajectories' correlation.
  bool all_estimators = true;
  DeadExpertOptions dead;
  PhaseOptions phase;
};

absl::Status ValidateHealthOptions(const HealthOptions& options);

// One completed window of one layer.
struct HealthWindow {
  int64_t step = 0;  // the window's last step
  int layer = 0;
  int steps = 0;
  std::optional<GammaFit> gamma;   // default estimator
  std::string gamma_status;        // why gamma is missing, else empty
  // gamma_f under each quality estimator (index QualityEstimator), NaN when
  // unavailable.
  std::vector<double> gamma_f_by_estimator;
  // The phase after this window. Only identified fits (converged, not at a
  // search bound, not weakly identified) move the phase tracker.
  Phase phase = Phase::kUnknown;
  ImbalanceMetrics imbalance;
  std::vector<int> dead_experts;
};

struct HealthEvent {
  int64_t step = 0;
  int layer = 0;
  std::string kind;    // "phase_change", "expert_dead", "expert_revived"
  int expert = -1;     // expert events
  std::string from, to;  // phase names, or "alive"/"dead"
  std::string detail;  // human-readable, with the numbers
};

class HealthMonitor {
 public:
  // Requires ValidateHealthOptions(options).ok(), num_experts >= 2 and
  // options.gamma.top_k in [1, num_experts].
  HealthMonitor(int layer, int num_experts, const HealthOptions& options);

  // Observes one step of this layer: counts (M), tokens N (> 0), and the
  // router statistics: logit means (M or empty), mean probabilities and
  // standardised logit means (M or empty). Completes a window every
  // window_steps steps. INVALID_ARGUMENT for bad sizes or values (nothing is
  // recorded then).
  absl::Status Observe(int64_t step, absl::Span<const double> counts, double tokens,
                       absl::Span<const double> logits,
                       absl::Span<const double> probs = {},
                       absl::Span<const double> std_logits = {});

  // Events since the last call, in order.
  std::vector<HealthEvent> TakeEvents();
  // Windows completed since the last call, in order.
  std::vector<HealthWindow> TakeWindows();
  // The last completed window, or null before the first.
  const HealthWindow* latest() const { return latest_ ? &*latest_ : nullptr; }
  Phase phase() const { return phase_.phase(); }

  // Deferred window close, for callers that fit windows elsewhere (the
  // engine's analysis stage fits them on its periodic threads). With
  // set_defer_window_close(true), Observe does not close a full window:
  // window_due() turns true and the caller runs
  //
  //   HealthMonitor::DueWindow w = m.TakeDueWindow();      // cheap; resets
  //   HealthWindow fit = HealthMonitor::FitWindow(w, opts);  // pure, heavy
  //   m.ApplyWindow(std::move(fit));    // phase tracking, events, latest()
  //
  // before the next Observe (which is otherwise a programming error). The
  // result is the one Observe would have produced.
  struct DueWindow {
    int layer = 0;
    int64_t step = 0;  // the window's last step
    GammaWindow window;
    std::vector<double> counts;       // summed over the window
    std::vector<int> dead_experts;    // as of the window's last step
  };
  void set_defer_window_close(bool defer) { defer_close_ = defer; }
  bool window_due() const { return window_due_; }
  DueWindow TakeDueWindow();
  static HealthWindow FitWindow(const DueWindow& due, const HealthOptions& options);
  void ApplyWindow(HealthWindow w);

  // Snapshots: the window being accumulated (every step's inputs), the
  // dead-expert and phase trackers, undelivered events and windows, and the
  // last completed window with its fit. (The gamma bootstrap draws from a
  // fixed seed per fit, so there is no random state to carry.) LoadFrom
  // reads them into a monitor with the same layer and num_experts; options
  // stay this monitor's. DATA_LOSS through `in` for bytes that do not fit.
  void SaveTo(internal::SnapshotWriter& out) const;
  void LoadFrom(internal::SnapshotReader& in);

 private:
  void CloseWindow();
  void ResetWindow();  // an empty window, its buffers reserved
  // The per-expert counts summed over window_ in step order (what
  // window_counts_ accumulates), from its rows.
  std::vector<double> SumWindowRows() const;

  const int layer_;
  const int m_;
  const HealthOptions options_;
  DeadExpertTracker dead_;
  PhaseTracker phase_;
  GammaWindow window_;
  // The counts summed over the window. When the dead-expert tracker's
  // windows are the same steps (equal window_steps, started together: the
  // default), its partial-window sums are these very numbers, so they are
  // not summed twice: counts_from_dead_, and window_counts_ stays unused.
  std::vector<double> window_counts_;
  bool counts_from_dead_ = false;
  bool window_has_logits_ = true;
  bool window_has_probs_ = true;
  bool window_has_std_ = true;
  int64_t last_step_ = 0;
  bool defer_close_ = false;
  bool window_due_ = false;
  std::vector<HealthEvent> events_;
  std::vector<HealthWindow> windows_;
  std::optional<HealthWindow> latest_;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_HEALTH_MONITOR_H_
