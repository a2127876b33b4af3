// JobAnalyzer: the analysis state of one job (per layer: state classifier,
// forecast bank with its scorer, health monitor; the job's state and its
// event log) and the per-step work that advances it. It reads nothing from
// the write path: the job hands it one AnalysisStep at a time, copied out of
// the history ring (or a coalesced block of steps), in commit order.
//
// One step is analysed in up to three parts, so that the heavy periodic part
// can run elsewhere while the step's result stays a function of the steps
// alone:
//
//   analyzer.ObserveStep(step);              // every layer; cheap
//   for (DueWindow& w : analyzer.due_windows())   // health windows closing
//     fits[i] = HealthMonitor::FitWindow(w, ...);  // pure; any thread
//   for (Predictor* p : analyzer.due_refits())    // holt/arima refits due
//     p->Refresh();                          // any thread, one task each
//   analyzer.FinishStep(std::move(fits));    // applied in layer order; the
//                                            // banks score and forecast
//
// Between ObserveStep and FinishStep the step is open: the refits mutate
// their predictors, so nothing else may read the analyzer until the last
// one is done (the job holds answers back; internal/job.h), and `step` must
// stay valid until FinishStep.
//
// Thread-safety: not thread-safe; the owning job serializes access.
#ifndef MOECAST_ENGINE_ANALYSIS_JOB_ANALYZER_H_
#define MOECAST_ENGINE_ANALYSIS_JOB_ANALYZER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "engine/analysis/layer_forecaster.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "engine/forecast.h"
#include "engine/health/monitor.h"
#include "engine/health_report.h"
#include "engine/job_spec.h"
#include "engine/options.h"
#include "engine/predict/forecast_bank.h"
#include "engine/state/shift_detector.h"
#include "engine/state/state_classifier.h"

namespace moecast::internal {
class Job;
}  // namespace moecast::internal

namespace moecast {

// One committed step (or a coalesced block of steps) as the analysis sees
// it: for every layer its proportions, assignments sum(c), tokens N and, if
// the step carried them, router-logit means.
struct AnalysisStep {
  int64_t step = 0;        // the step (a block's last step)
  int64_t num_steps = 1;   // committed steps this covers (> 1: coalesced)
  bool take_origins = true;  // false: scoring shed (overload)
  std::vector<double> proportions;  // L x M
  std::vector<double> assignments;  // L
  std::vector<double> tokens;       // L
  std::vector<uint8_t> has_logits;  // L
  std::vector<double> logits;       // L x M (rows valid where has_logits)

  void Resize(int num_layers, int num_experts);
};

class JobAnalyzer {
 public:
  // `spec` must have passed ValidateJobSpec. INVALID_ARGUMENT for an unknown
  // predictor or bad horizons or health options.
  static absl::StatusOr<std::unique_ptr<JobAnalyzer>> Create(
      const JobSpec& spec, const EngineOptions& options);

  JobAnalyzer(const JobAnalyzer&) = delete;
  JobAnalyzer& operator=(const JobAnalyzer&) = delete;

  bool forecasting() const { return !models_.empty(); }
  bool health() const { return !health_.empty(); }

  // Part 1: every layer's classifier, bank and health monitor observe the
  // step. Health windows that close at this step wait in due_windows().
  void ObserveStep(const AnalysisStep& step);
  std::vector<HealthMonitor::DueWindow>& due_windows() { return due_; }
  // Predictors whose periodic refit is due at this step (each is refitted
  // by one Refresh() call, on any thread, before FinishStep).
  const std::vector<Predictor*>& due_refits() const { return due_refits_; }
  const HealthOptions& health_options() const { return health_options_; }
  // Part 3: applies the fitted windows (one per due window, same order) and
  // completes the step.
  void FinishStep(std::vector<HealthWindow> fitted);

  // Steps analysed (a coalesced block counts its steps) and the last one.
  int64_t analysed_steps() const { return analysed_steps_; }
  std::optional<int64_t> last_step() const { return last_step_; }

  // Answers (see Engine). Each fills everything but its `analysis` field.
  // `committed_steps` (the job's, now) only words the error before the
  // first analysed step.
  absl::StatusOr<ForecastResult> Forecast(const ForecastRequest& request,
                                          int max_path_steps,
                                          int64_t committed_steps);
  absl::StatusOr<StateReport> State(int64_t committed_steps) const;
  absl::StatusOr<HealthReport> Health() const;
  absl::StatusOr<std::vector<ForecastScore>> Scores() const;
  std::vector<Event> ReadEvents(int64_t after_seq, int max_events) const;
  void VisitBank(int layer, absl::FunctionRef<void(ForecastBank&)> fn);

  // Bytes held by the classifiers and banks.
  int64_t ForecastBytes() const;

 private:
  friend class internal::Job;  // snapshots (engine/internal/job_snapshot.cc)

  JobAnalyzer(const JobSpec& spec, const EngineOptions& options);
  void AddEvent(Event event);
  void TakeHealthEvents(HealthMonitor& monitor);

  // Forecasting state of one layer.
  struct LayerModel : LayerForecaster {
    int64_t last_shift_step = -1;  // -1: none yet
    ShiftSummary shifts;
  };
  // A layer's shift: its event, and the job's when most layers shifted.
  void OnShift(int layer, const Shift& shift);

  const JobSpec spec_;
  const StateOptions state_options_;
  const ShiftOptions shift_options_;
  int64_t last_job_shift_step_ = -1;
  ShiftSummary job_shifts_;
  const int max_events_;
  HealthOptions health_options_;
  std::vector<LayerModel> models_;     // empty: no forecasting
  std::vector<HealthMonitor> health_;  // empty: health off
  std::vector<LoadState> layer_states_;
  LoadState job_state_ = LoadState::kTransient;
  std::deque<Event> events_;
  int64_t next_seq_ = 1;
  int64_t analysed_steps_ = 0;
  std::optional<int64_t> last_step_;
  // The step between ObserveStep and FinishStep.
  int64_t open_step_ = 0;
  int64_t open_num_steps_ = 0;
  std::vector<HealthMonitor::DueWindow> due_;
  std::vector<Predictor*> due_refits_;
  const AnalysisStep* open_input_ = nullptr;
  std::vector<double> scratch_counts_;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_ANALYSIS_JOB_ANALYZER_H_
