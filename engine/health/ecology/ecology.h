// Ecology of a MoE layer's experts (design section 6): the E parameter, dead
// experts and their revival, and load-imbalance metrics.
//
// E = T*H/(O+B) (Zhang 2026) is computed from four declared training
// hyperparameters: router temperature T, routing-entropy weight H, oracle
// weight O and balance weight B. Zhang reports that E >= 0.5 gave zero dead
// experts in their runs (harder tasks need more), so ComputeE warns below a
// configurable threshold. It is a predictor of trouble, not a measurement.
//
// Dead experts are measured: DeadExpertTracker cuts one layer's counts into
// consecutive, non-overlapping windows of `window_steps` ingested steps (or
// takes windows already aggregated), computes each expert's token-weighted
// share in the window (sum_t c_e(t) / sum_t sum_e c_e(t)) and declares an
// expert dead when its share stays under alpha_dead / M for `dead_windows`
// consecutive qualifying windows; a dead expert revives when its share stays
// above revive_factor * alpha_dead / M for `revive_windows` consecutive
// qualifying windows. A window qualifies when it holds at least
// min_assignments_per_expert_factor * M top-K assignments (sum of counts).
//
// Imbalance() computes max/mean, MaxVio, the coefficient of variation and the
// normalised entropy of one layer's loads.
//
// Usage:
//   MOECAST_ASSIGN_OR_RETURN(
//       EParameter e, ComputeE(spec.temperature, spec.entropy_weight,
//                              spec.oracle_weight, spec.balance_weight));
//   if (e.below_threshold) Warn(e.message);
//
//   DeadExpertTracker dead(/*num_experts=*/64, DeadExpertOptions());
//   for each step:
//     MOECAST_ASSIGN_OR_RETURN(std::vector<DeadExpertEvent> events,
//                              dead.ObserveStep(step, counts));
//   dead.dead_experts();  // the current dead set
//
//   MOECAST_ASSIGN_OR_RETURN(ImbalanceMetrics m, Imbalance(loads));
//
// Thread-safety: ComputeE and Imbalance are pure functions. DeadExpertTracker
// is not thread-safe; the owning job serializes access.
#ifndef MOECAST_ENGINE_HEALTH_ECOLOGY_ECOLOGY_H_
#define MOECAST_ENGINE_HEALTH_ECOLOGY_ECOLOGY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/internal/snapshot_codec.h"

namespace moecast {

// ---------------------------------------------------------------------------
// E = T*H/(O+B)

enum class EKind {
  kFinite,         // value holds E (O+B > 0)
  kUnbounded,      // O+B = 0 and T*H > 0: E is +infinity (no balance pressure)
  kIndeterminate,  // O+B = 0 and T*H = 0: 0/0, E is not defined
  kMissing,        // at least one input was not declared
};

absl::string_view EKindName(EKind kind);

struct EParameter {
  EKind kind = EKind::kMissing;
  // E, set only when kind == kFinite (E >= 0 since inputs are >= 0).
  std::optional<double> value;
  // Names of the undeclared inputs, in the order "T", "H", "O", "B".
  std::vector<std::string> missing;
  // The threshold the value was compared with.
  double warn_below = 0.5;
  // True only when kind == kFinite and value < warn_below. An unbounded E is
  // never below; an indeterminate or missing E is not compared (the message
  // says so) because the criterion says nothing about it.
  bool below_threshold = false;
  // One line for people, e.g. "E = 0.25 (T*H = 0.5, O+B = 2) is below 0.5:
  // Zhang (2026) saw zero dead experts only with E >= 0.5".
  std::string message;
};

// Computes E from the declared hyperparameters (std::nullopt = not
// declared). Each declared input must be finite and >= 0; T = 0 is accepted
// (the argmax limit of the router) and gives E = 0 when O+B > 0.
// warn_below must be finite and >= 0 (default 0.5, Zhang 2026).
// Returns INVALID_ARGUMENT naming the input and its value otherwise. Missing
// inputs are not an error: the result has kind kMissing and lists them.
absl::StatusOr<EParameter> ComputeE(std::optional<double> temperature,
                                    std::optional<double> entropy_weight,
                                    std::optional<double> oracle_weight,
                                    std::optional<double> balance_weight,
                                    double warn_below = 0.5);

// ---------------------------------------------------------------------------
// Dead experts

// What a window with fewer than min_assignments_per_expert_factor * M
// assignments does to the death and revival streaks. Either way it never
// extends a streak and never causes an event.
enum class SparseWindowPolicy {
  // Breaks both streaks (they restart at 0). This is the design's literal
  // rule: "3 consecutive 100-step windows, each with at least 20*M
  // assignments", and the conservative one: an idle gap between two low
  // windows cannot join them into a death.
  kReset,
  // Leaves both streaks as they are: the window carries no evidence either
  // way, so the qualifying windows on both sides of it count as consecutive.
  // Suits serving with intermittent traffic.
  kSkip,
};

absl::string_view SparseWindowPolicyName(SparseWindowPolicy policy);

struct DeadExpertOptions {
  // An expert is below when its share in a window is < alpha_dead / M
  // (0.16 / M = 1% of the load at 16 experts; 1/M would be a uniform share).
  // Must be in (0, 1).
  double alpha_dead = 0.16;
  // Steps (as ingested) per window in ObserveStep. >= 1.
  int window_steps = 100;
  // Consecutive qualifying windows below the threshold that make an expert
  // dead. >= 1.
  int dead_windows = 3;
  // A window qualifies when its total assignments sum_t sum_e c_e(t) are
  // >= this factor * M (20 * M: an expert at the uniform share would expect
  // 20 assignments, at the threshold 20 * alpha_dead = 3.2, so a share of 0
  // is not just sampling luck). Finite, >= 0. A window with no assignments at
  // all never qualifies (its shares are undefined).
  double min_assignments_per_expert_factor = 20;
  // A dead expert is above when its share is > revive_factor * alpha_dead /M.
  // Finite, >= 1 (1 = no hysteresis; 1.5 keeps an expert that hovers at the
  // threshold from dying and reviving every few windows).
  double revive_factor = 1.5;
  // Consecutive qualifying windows above that revive a dead expert. >= 1.
  int revive_windows = 2;
  SparseWindowPolicy sparse_windows = SparseWindowPolicy::kReset;
};

// Returns OK or INVALID_ARGUMENT naming the field and value.
absl::Status ValidateDeadExpertOptions(const DeadExpertOptions& options);

enum class DeadExpertEventType { kDeath, kRevival };

absl::string_view DeadExpertEventTypeName(DeadExpertEventType type);

struct DeadExpertEvent {
  DeadExpertEventType type = DeadExpertEventType::kDeath;
  // Last step of the window that completed the streak.
  int64_t step = 0;
  int expert = 0;
  // The expert's share in that window.
  double share = 0;
  // The threshold it was compared with (alpha_dead / M for a death,
  // revive_factor * alpha_dead / M for a revival).
  double threshold = 0;
  // Last step of the first window of the streak.
  int64_t streak_start_step = 0;
};

// One evaluated window.
struct DeadExpertWindow {
  int64_t last_step = 0;
  int steps = 0;               // steps aggregated (as given to ObserveWindow)
  double assignments = 0;      // sum of all counts in the window
  bool qualifying = false;     // assignments >= factor * M (and > 0)
  std::vector<double> shares;  // per expert; empty when assignments == 0
};

class DeadExpertTracker {
 public:
  // Requires ValidateDeadExpertOptions(options).ok() and num_experts >= 1.
  DeadExpertTracker(int num_experts, const DeadExpertOptions& options);

  // Validates, then constructs.
  static absl::StatusOr<DeadExpertTracker> Create(
      int num_experts, const DeadExpertOptions& options);

  // Adds one step's counts (M non-negative finite values) of the layer.
  // Steps must increase strictly across calls (gaps are fine: windows count
  // ingested steps). When the step completes a window of window_steps steps,
  // the window is evaluated and its events are returned (ascending expert
  // order, at most one per expert); otherwise the result is empty. On error
  // nothing is recorded.
  absl::StatusOr<std::vector<DeadExpertEvent>> ObserveStep(
      int64_t step, absl::Span<const double> counts);

  // Evaluates an already-aggregated window: `counts` are the per-expert sums
  // over its steps, `last_step` its last step (must exceed every step seen),
  // `steps` how many steps it spans (informational; >= 1). Fails with
  // FAILED_PRECONDITION while ObserveStep has a partial window pending.
  absl::StatusOr<std::vector<DeadExpertEvent>> ObserveWindow(
      int64_t last_step, absl::Span<const double> counts, int steps);

  bool is_dead(int expert) const { return dead_[expert]; }
  // The current dead set, ascending.
  std::vector<int> dead_experts() const;
  int num_dead() const;

  double death_threshold() const { return threshold_; }
  double revival_threshold() const {
    return threshold_ * options_.revive_factor;
  }
  // Consecutive windows currently counted toward death (alive expert) or
  // revival (dead expert).
  int streak(int expert) const { return streak_[expert]; }

  int64_t windows_evaluated() const { return windows_; }
  int64_t qualifying_windows() const { return qualifying_windows_; }
  // Steps in the partial window ObserveStep is building, and its per-expert
  // sums (counts added in step order, from 0).
  int pending_steps() const { return pending_steps_; }
  absl::Span<const double> pending_counts() const { return pending_; }
  // The per-expert sums of the last window ObserveStep closed, as
  // pending_counts() just before; empty before the first and after LoadFrom
  // (not part of a snapshot).
  absl::Span<const double> last_window_counts() const { return last_sums_; }
  const std::optional<DeadExpertWindow>& last_window() const {
    return last_window_;
  }
  int num_experts() const { return m_; }
  const DeadExpertOptions& options() const { return options_; }

  // Snapshots: the partial window, the dead set, the streaks and the last
  // window. LoadFrom reads them into a tracker with the same num_experts
  // (DATA_LOSS through `in` otherwise); options stay this tracker's.
  void SaveTo(internal::SnapshotWriter& out) const;
  void LoadFrom(internal::SnapshotReader& in);

 private:
  absl::Status CheckCounts(int64_t step, absl::Span<const double> counts) const;
  std::vector<DeadExpertEvent> Evaluate(int64_t last_step,
                                        const std::vector<double>& sums,
                                        int steps);

  int m_;
  DeadExpertOptions options_;
  double threshold_;
  std::vector<double> pending_;  // per-expert sums of the partial window
  std::vector<double> last_sums_;  // those of the last window closed
  int pending_steps_ = 0;
  std::optional<int64_t> last_step_;
  std::vector<bool> dead_;
  std::vector<int> streak_;
  std::vector<int64_t> streak_start_;
  int64_t windows_ = 0;
  int64_t qualifying_windows_ = 0;
  std::optional<DeadExpertWindow> last_window_;
};

// ---------------------------------------------------------------------------
// Imbalance

struct ImbalanceMetrics {
  int num_experts = 0;
  double total = 0;          // sum of the loads
  double max_over_mean = 1;  // max / mean
  double max_vio = 0;        // max / mean - 1
  // Population standard deviation / mean (divides by M, not M - 1).
  double coefficient_of_variation = 0;
  // H(p) / log(M), p = load / total, 0 log 0 = 0. 1 = uniform, 0 = all the
  // load on one expert.
  double normalized_entropy = 1;
  // True when every load is 0: then the metrics are those of a balanced
  // layer (1, 0, 0, 1): nothing is concentrated anywhere.
  bool zero_load = false;
};

// Metrics of one layer's loads (counts, proportions or forecasts: any
// non-negative scale). M = 1 gives (1, 0, 0, 1) (a single expert is balanced
// with itself; H/log(1) is 0/0 and is defined as 1). Returns INVALID_ARGUMENT
// for an empty span or a negative or non-finite load (naming its index).
absl::StatusOr<ImbalanceMetrics> Imbalance(absl::Span<const double> loads);

}  // namespace moecast

#endif  // MOECAST_ENGINE_HEALTH_ECOLOGY_ECOLOGY_H_
