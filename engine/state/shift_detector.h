// ShiftDetector: sees a layer's load change abruptly (a request mix that
// changes in serving, a data-mix switch in training), at any token count.
//
// Each step's counts go into two adjacent windows of w steps: the test
// window (the last w steps) and the reference window (the w before it).
// The statistic is the L1 distance between the two windows' mean shares,
// sum_e |r_e - q_e|. Without a change it is sampling noise, whose size
// depends on the assignments per window and on how over-dispersed the
// steps are (tokens of one request route alike); the detector calibrates
// itself against that noise: a shift is called when the distance exceeds
// both `min_size` and `noise_multiple` x the median of its own recent
// values, for `persistence` consecutive steps. The window w is sized from
// the assignments per step (w = clamp(assignments_per_window / mean
// assignments per step, min_window, max_window)), so that detection works
// from 8 tokens per step to thousands: fewer tokens, longer windows, later
// detection.
//
// A shift is reported with the step it was detected at, the estimated
// change point and its size: over the 2w steps in the windows, the split
// that maximises the standardised contrast L1(before, after) x
// sqrt(a_before a_after / (a_before + a_after)) (a: assignments) is the
// change point, and the L1 distance between the mean shares before and
// after it is the size. After a shift the
// windows restart at the detection step (no second report of the same
// change while the windows refill).
//
// Thread-safety: not thread-safe; the owning job serializes access.
#ifndef MOECAST_ENGINE_STATE_SHIFT_DETECTOR_H_
#define MOECAST_ENGINE_STATE_SHIFT_DETECTOR_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/internal/snapshot_codec.h"

namespace moecast {

struct ShiftOptions {
  // Assignments (token x top-k slots) each window should hold: the window's
  // noise L1 is about sqrt(2 M / (pi x assignments)) for a flat load of M
  // experts, 0.1 at M = 32 with 2,000 assignments.
  double assignments_per_window = 2000;
  int min_window = 4;
  int max_window = 200;
  // A shift: distance > max(min_size, noise_multiple x median recent
  // distance) for `persistence` consecutive steps.
  double min_size = 0.2;
  double noise_multiple = 2.5;
  int persistence = 3;
  // Recent distances the median is taken over (the noise reference).
  int noise_history = 256;
  // The engine runs one detector per scale s, with s x the assignments per
  // window (and s x the window bounds): short windows see abrupt changes
  // early, long ones the gradual change of a request mix as old requests
  // finish, or a training-data switch that ramps over hundreds of steps.
  std::vector<int> scales = {1, 4, 16};
  // After a layer's shift its smoothers (sw_avg, ewm) with a memory of at
  // most `restart_max_memory` steps restart from the change point: they
  // forget the steps before it and replay those after it, instead of
  // averaging across the change. Longer ones keep the long-run mean, the
  // better forecast far ahead when mixes recur (BENCHMARKS.md, "Load
  // shifts").
  bool restart_predictors = true;
  int restart_max_memory = 1000;
};

// The options of the detector at scale s.
ShiftOptions ScaledShiftOptions(const ShiftOptions& options, int scale);

absl::Status ValidateShiftOptions(const ShiftOptions& options);

struct Shift {
  int64_t step = 0;          // detected at
  int64_t change_step = 0;   // estimated change point
  double size = 0;           // L1 between the mean shares before and after
  double noise = 0;          // the median distance it was compared with
  int window = 0;            // steps per window
};

class ShiftDetector {
 public:
  ShiftDetector(int num_experts, const ShiftOptions& options);

  // One step: its proportions (sum 1) and assignments (> 0). Returns the
  // shift detected at this step, if any.
  std::optional<Shift> Observe(int64_t step, absl::Span<const double> proportions,
                               double assignments);

  // After Observe returned a shift: the proportions of the steps from its
  // change point to the detection step, oldest first (rows of num_experts
  // values). Valid until the next Observe.
  absl::Span<const double> since_change() const { return since_change_; }

  int window() const { return window_; }  // 0 until sized
  // Empties the windows (keeps the noise history): after a shift another
  // scale reported, so that it is not reported twice.
  void Restart();
  int64_t shifts() const { return shifts_; }
  int64_t MemoryBytes() const;

  // Snapshots: everything later answers depend on. LoadFrom reports
  // DATA_LOSS through `in` for bytes that do not fit this detector.
  void SaveTo(internal::SnapshotWriter& out) const;
  void LoadFrom(internal::SnapshotReader& in);

 private:
  friend class ShiftMonitor;

  // Observe's steps. Prepare: sizes the window from the first steps; false
  // when the step goes no further (no assignments, or still sizing).
  bool Prepare(double assignments);
  // The totals, step numbers and n_ of a step whose counts are in the ring
  // and sums.
  void SlideTotals(int64_t step, double assignments);
  // The distance between the windows after a step and what it means.
  std::optional<Shift> Evaluate(int64_t step);
  // Sets the change step and size of a shift detected now (the best split).
  void Locate(Shift* shift);
  // Fills since_change_ from the ring (before the windows restart).
  void CollectSince(int64_t change_step);
  // Adds a distance to the noise history (replacing the oldest once full).
  void Remember(double d);
  // Rebuilds sorted_ and nans_ from history_ (after a restore).
  void ResortHistory();
  // Brings sorted_ and nans_ up to date with added_ and removed_.
  void MergeHistory();
  // The median of history_ (the element at size/2 in order).
  double Median();

  const int m_;
  const ShiftOptions options_;
  // Sizing: the first steps' mean assignments choose the window.
  int window_ = 0;
  int sizing_steps_ = 0;
  double sizing_assignments_ = 0;
  // The last 2 x window_ steps' counts (float) and assignments; step n of
  // the current run (since the last restart) is in slot n % (2 x window_).
  // Test window: steps [n - w, n); reference: [n - 2w, n - w).
  std::vector<float> ring_;
  std::vector<double> totals_;
  std::vector<int64_t> steps_;  // the step number in each slot
  int64_t n_ = 0;
  std::vector<double> test_sum_, ref_sum_;  // counts summed per window
  double test_total_ = 0, ref_total_ = 0;
  std::vector<double> history_;  // recent distances (a ring, up to noise_history)
  int history_head_ = 0;
  double noise_ = 0;           // median of history_, refreshed every 8 steps
  int since_median_ = 0;
  int above_ = 0;  // consecutive steps above the threshold
  int64_t shifts_ = 0;
  // history_ in ascending order without its NaNs, and their count, as of
  // the last median; added_ and removed_: the distances that entered and
  // left history_ since then. The median is read from sorted_ (not state:
  // rebuilt on restore).
  std::vector<double> sorted_, added_, removed_;
  int nans_ = 0;
  // The next sorted_ while merging; the median's selection when NaNs are in.
  std::vector<double> scratch_;
  std::vector<double> since_change_;  // see since_change(); not state
};

// ShiftMonitor: one layer's detectors, one per scale of ShiftOptions::scales.
// Every scale observes each step; the first (shortest) that reports a shift
// wins and every scale restarts, so that one change is reported once.
class ShiftMonitor {
 public:
  ShiftMonitor(int num_experts, const ShiftOptions& options);

  std::optional<Shift> Observe(int64_t step, absl::Span<const double> proportions,
                               double assignments);

  // After Observe returned a shift: the steps since its change point, as
  // ShiftDetector::since_change. Valid until the next Observe.
  absl::Span<const double> since_change() const;

  // The detectors, shortest scale first (snapshots save and load each).
  const std::vector<std::unique_ptr<ShiftDetector>>& detectors() const {
    return detectors_;
  }
  int64_t MemoryBytes() const;

 private:
  std::vector<std::unique_ptr<ShiftDetector>> detectors_;
  int last_ = -1;  // the detector that reported at the last Observe
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_STATE_SHIFT_DETECTOR_H_
