// PhaseTracker: the phase of a layer's gamma_eff trajectory (design section
// 6): surge, stabilization, relaxation (Mouzouni 2026, "Three Phases of
// Expert Routing": gamma_eff rises from about 14 to 36-39 in OLMoE, stays
// flat, then falls to about 9).
//
// Input: one point per gamma_eff window (consecutive, non-overlapping
// windows, each reported by its last step): the estimate and its confidence
// interval (the bootstrap percentile CI, at point_ci_level).
//
// Slope. Each point's standard error is its CI half-width in normal units,
// se_i = (ci_hi - ci_lo) / (2 z), z = the normal quantile of point_ci_level
// (1.96 at 95%), floored at min_relative_se * the median se of the fit (so
// that one point with a very narrow CI cannot take over the fit). Over the
// last fit_windows points, gamma is regressed on the step by weighted least
// squares with weights w_i = 1/se_i^2:
//   b = sum w (x - xw)(y - yw) / Sxx,  Sxx = sum w (x - xw)^2,
//   chi2 = sum w (y - a - b x)^2,  S = sqrt(max(1, chi2 / (n - 2))),
//   se_b = S / sqrt(Sxx),  slope CI at level L = b -/+ z_L * se_b.
// S is the Particle Data Group's scale factor: when the points scatter about
// the line more than their CIs allow (a bootstrap over the steps of a window
// misses drift between windows), the interval widens to match; it never
// narrows below what the CIs give. When every CI in the fit has zero width
// the fit is ordinary least squares with the residual variance
// (s^2 = RSS / (n - 2)). The slope is in gamma per step.
//
// Trend of a window, with hysteresis between two CI levels:
//   rising    the slope CI at slope_ci_level (95%) is above 0
//   falling   the slope CI at slope_ci_level is below 0
//   flat      the slope CI at flat_ci_level (68%) contains 0
//   undecided otherwise (|b| / se_b between 0.99 and 1.96 by default)
// A trend is thus entered on strong evidence and left for a plateau only on
// clear evidence of flatness, so that a steady but marginal decline does not
// alternate between relaxation and stabilization.
//
// Candidate phase of a window (once fit_windows points exist):
//   flat    -> stabilization
//   falling -> relaxation
//   rising  -> surge, if the rise has reached a peak whose CI excludes its
//              reference: some point after the reference has
//              ci_lo > reference gamma (> reference ci_hi with
//              surge_needs_disjoint_ci). The reference is the trajectory's
//              first window while the phase is unknown, and afterwards the
//              lowest window since the current phase began (the trough the
//              new rise starts from).
//   otherwise (undecided, or rising without that evidence): no candidate.
// Transitions: a window whose candidate is the current phase ends any
// streak; a window with no candidate leaves the streak as it is (no evidence
// either way); a window with another candidate starts a new streak. The phase
// changes when a streak reaches confirm_windows windows and the current phase
// has lasted min_windows_in_phase windows (unknown may be left at once). The
// first phase can be declared at the earliest at the window numbered
// fit_windows + confirm_windows - 1 (the 10th window, index 9, with the
// defaults); before that the phase is unknown.
//
// Order: phases usually go surge -> stabilization -> relaxation (possibly
// skipping stabilization at a sharp peak). Other orders (a second surge
// after a plateau, relaxation followed by a plateau) are reported like any
// other change, with PhaseChange::usual_order = false; they are not
// suppressed, because a learning-rate restart or a data change can cause
// them.
//
// Calibration (synthetic, 500 seeded series per case, points drawn around
// the curve with the stated CI half-width 1.5 at 95%; see phase_test.cc for
// the cases kept as tests):
//  - flat at 30, 300 windows, honest CIs: no change after the first one
//    (unknown -> stabilization) in any series; with CIs that understate the
//    scatter by sqrt(2) (by sqrt(5)): 4 (47) spurious changes in the
//    150,000 windows.
//  - OLMoE-like curve (14 -> 36 linearly over 12 windows, 25 windows at 36,
//    36 -> 9 over 30 windows): 499/500 series give exactly surge,
//    stabilization, relaxation. Surge is confirmed at window index 9 (the
//    earliest possible); stabilization 6 to 24 windows after the plateau
//    begins (median 9, 90th percentile 14); relaxation 3 to 9 windows after
//    the decline begins (median 6). PhaseChange::candidate_since_step, the
//    first window of the confirming streak, is earlier.
//  - a decline 27 -> 9 over 40 windows (slope about 2.5 se_b over the fit):
//    495/500 series give relaxation only.
// Alternatives tried on the same series: fit_windows = 8 delayed surge and
// stabilization by 2 windows and gave 4 / 46 / 150 spurious changes (honest,
// sqrt(2), sqrt(5)) instead of 0 / 4 / 47; confirm_windows = 4 was 1 window
// faster but gave 0 / 87 / 315; flat_ci_level = 0.95 (no hysteresis) kept
// the decline as relaxation only in 290/500 series.
//
// Usage:
//   PhaseTracker tracker(PhaseOptions{});
//   for each gamma_eff window:
//     MOECAST_ASSIGN_OR_RETURN(
//         std::optional<PhaseChange> change,
//         tracker.Observe({last_step, gamma, ci_lo, ci_hi}));
//     if (change) Emit(*change);
//   tracker.phase();
//
// Thread-safety: not thread-safe; the owning job serializes access.
#ifndef MOECAST_ENGINE_HEALTH_ECOLOGY_PHASE_H_
#define MOECAST_ENGINE_HEALTH_ECOLOGY_PHASE_H_

#include <cstdint>
#include <deque>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/internal/snapshot_codec.h"

namespace moecast {

enum class Phase { kUnknown, kSurge, kStabilization, kRelaxation };

absl::string_view PhaseName(Phase phase);  // "unknown", "surge", ...

enum class Trend { kRising, kFlat, kFalling, kUndecided };

absl::string_view TrendName(Trend trend);

struct PhaseOptions {
  // Points in the slope fit (the last N windows). More points: narrower
  // slope CIs, but a later reaction to a change and, because consecutive
  // fits then share more points, longer spurious excursions. >= 3.
  int fit_windows = 6;
  // Windows a streak needs to change the phase (see the calibration above).
  // >= 1.
  int confirm_windows = 5;
  // Windows a phase lasts, counted from the window that confirmed it, before
  // it may change again. With confirm_windows = 5 it does not bind (a new
  // streak needs 5 windows anyway); it keeps a floor if confirm_windows is
  // lowered. >= 1 (1 = no minimum).
  int min_windows_in_phase = 5;
  // Level of the input CIs (the bootstrap's 95%). In (0, 1).
  double point_ci_level = 0.95;
  // Level of the slope CI that must exclude 0 to call a trend. In (0, 1).
  double slope_ci_level = 0.95;
  // Level of the slope CI that must contain 0 to call a plateau. In (0, 1)
  // and <= slope_ci_level (equal: no hysteresis).
  double flat_ci_level = 0.68;
  // Surge evidence: compare the peak's ci_lo with the reference's ci_hi
  // (disjoint CIs) instead of the reference's gamma. Stricter, later.
  bool surge_needs_disjoint_ci = false;
  // Floor on a point's standard error, relative to the median standard
  // error in the fit. In [0, 1].
  double min_relative_se = 0.1;
};

// Returns OK or INVALID_ARGUMENT naming the field and value.
absl::Status ValidatePhaseOptions(const PhaseOptions& options);

// One gamma_eff window. ci_lo <= ci_hi; gamma need not lie inside its CI
// (a percentile bootstrap CI can exclude a biased estimate).
struct GammaPoint {
  int64_t step = 0;  // the window's last step
  double gamma = 0;
  double ci_lo = 0;
  double ci_hi = 0;
};

struct SlopeEstimate {
  double slope = 0;  // gamma per step
  double lo = 0;     // slope CI at slope_ci_level
  double hi = 0;
  double standard_error = 0;  // se_b, scale factor included
  double flat_lo = 0;         // slope CI at flat_ci_level
  double flat_hi = 0;
  double scale_factor = 1;  // S (1 when the points fit within their CIs)
  int points = 0;
  Trend trend = Trend::kFlat;
};

struct PhaseChange {
  int64_t step = 0;          // last step of the window that confirmed it
  int64_t window_index = 0;  // 0-based index of that window
  // Last step of the first window of the confirming streak.
  int64_t candidate_since_step = 0;
  Phase from = Phase::kUnknown;
  Phase to = Phase::kUnknown;
  SlopeEstimate slope;  // the fit at the confirming window
  // True for unknown -> any and for forward moves along surge ->
  // stabilization -> relaxation (skips included).
  bool usual_order = true;
};

class PhaseTracker {
 public:
  // Requires ValidatePhaseOptions(options).ok().
  explicit PhaseTracker(const PhaseOptions& options);

  // Validates, then constructs.
  static absl::StatusOr<PhaseTracker> Create(const PhaseOptions& options);

  // Adds the next window. Steps must increase strictly; gamma and the CI
  // bounds must be finite with ci_lo <= ci_hi (INVALID_ARGUMENT otherwise,
  // and nothing is recorded). Returns the change if this window confirmed
  // one.
  absl::StatusOr<std::optional<PhaseChange>> Observe(const GammaPoint& point);

  Phase phase() const { return phase_; }
  // Step of the window that confirmed the current phase (the first window's
  // step while unknown).
  int64_t phase_since_step() const { return phase_since_step_; }
  // The fit at the latest window, once fit_windows points exist.
  const std::optional<SlopeEstimate>& slope() const { return slope_; }
  // The candidate of the streak in progress (kUnknown = none) and how many
  // windows have supported it so far (windows without a candidate leave the
  // streak as it is).
  Phase candidate() const { return candidate_; }
  int candidate_streak() const { return candidate_streak_; }
  int64_t windows() const { return windows_; }
  const std::optional<GammaPoint>& start() const { return start_; }
  // The window with the highest gamma so far.
  const std::optional<GammaPoint>& peak() const { return peak_; }
  const PhaseOptions& options() const { return options_; }

  // Snapshots: the recent points, the references, the phase and the streak.
  // LoadFrom keeps this tracker's options (DATA_LOSS through `in` for
  // inconsistent bytes).
  void SaveTo(internal::SnapshotWriter& out) const;
  void LoadFrom(internal::SnapshotReader& in);

  // The least number of windows after which a phase can be declared:
  // fit_windows + confirm_windows - 1 (10 with the defaults).
  static int MinWindowsToLeaveUnknown(const PhaseOptions& options) {
    return options.fit_windows + options.confirm_windows - 1;
  }

 private:
  SlopeEstimate Fit() const;
  bool SurgeEvidence() const;

  PhaseOptions options_;
  double z_point_;
  double z_slope_;
  double z_flat_;
  std::deque<GammaPoint> recent_;  // the last fit_windows points
  int64_t windows_ = 0;
  std::optional<GammaPoint> start_;
  std::optional<GammaPoint> peak_;
  // Reference of a rise (see the header comment) and the highest ci_lo of
  // the points after it.
  std::optional<GammaPoint> reference_;
  std::optional<double> best_lo_after_reference_;
  Phase phase_ = Phase::kUnknown;
  int64_t phase_since_step_ = 0;
  int64_t phase_since_window_ = 0;
  Phase candidate_ = Phase::kUnknown;
  int candidate_streak_ = 0;
  int64_t candidate_since_step_ = 0;
  std::optional<SlopeEstimate> slope_;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_HEALTH_ECOLOGY_PHASE_H_
