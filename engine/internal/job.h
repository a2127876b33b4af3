// Job: one registered job's state: its spec, the per-layer history, the
// multi-source step assembly, and counters.
//
// Thread-safety: all public methods are thread-safe; calls on one job are
// serialized by its mutex.
#ifndef MOECAST_ENGINE_INTERNAL_JOB_H_
#define MOECAST_ENGINE_INTERNAL_JOB_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/forecast.h"
#include "engine/health/monitor.h"
#include "engine/health_report.h"
#include "engine/history/layer_history.h"
#include "engine/ingest.h"
#include "engine/internal/mutex.h"
#include "engine/internal/snapshot_codec.h"
#include "engine/job_info.h"
#include "engine/job_spec.h"
#include "engine/options.h"
#include "engine/predict/forecast_bank.h"
#include "engine/state/state_classifier.h"

namespace moecast::internal {

class Job {
 public:
  // `spec` must have passed ValidateJobSpec. INVALID_ARGUMENT for an unknown
  // predictor or bad horizons in the spec.
  static absl::StatusOr<std::unique_ptr<Job>> Create(
      JobSpec spec, const EngineOptions& options);

  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  const JobSpec& spec() const { return spec_; }

  // Validates and applies one step (see Engine::Ingest). On error nothing in
  // the job changes except the rejected-call counter.
  absl::StatusOr<IngestResult> Ingest(const StepInput& in, absl::Time now);

  // Commits pending steps whose first report is older than the timeout, as
  // incomplete. Returns the steps committed.
  std::vector<CommittedStep> ExpirePending(absl::Time now);

  // Commits every pending step now (incomplete where sources are missing).
  std::vector<CommittedStep> FlushPending();

  JobInfo Info() const;

  // Records activity (a step, a flush, registration) at `now`; lock-free.
  void Touch(absl::Time now) {
    last_activity_ns_.store(absl::ToUnixNanos(now), std::memory_order_relaxed);
  }
  absl::Time LastActivity() const {
    return absl::FromUnixNanos(last_activity_ns_.load(std::memory_order_relaxed));
  }

  // Calls `fn` with layer `layer`'s history under the job's lock. Requires
  // 0 <= layer < num_layers.
  void VisitLayer(int layer,
                  absl::FunctionRef<void(const LayerHistory&)> fn) const;

  // See Engine::Forecast / GetState / ReadEvents.
  absl::StatusOr<ForecastResult> Forecast(const ForecastRequest& request);
  absl::StatusOr<StateReport> State() const;
  absl::StatusOr<std::vector<ForecastScore>> Scores() const;
  absl::StatusOr<HealthReport> Health() const;
  std::vector<Event> ReadEvents(int64_t after_seq, int max_events) const;

  // Per-layer access to the forecast bank (the bench's hook). Requires
  // forecasting on and 0 <= layer < num_layers.
  void VisitBank(int layer, absl::FunctionRef<void(ForecastBank&)> fn);

  // Snapshots (engine/internal/job_snapshot.cc, docs/snapshot-format.md).
  //
  // SaveTo writes the whole job as one consistent payload: its spec, the
  // EngineOptions it was created with (`options`: those that shape a job),
  // counters, multi-source assembly, events, and every layer's history,
  // state classifier, forecast bank and health monitor. UNIMPLEMENTED if a
  // predictor cannot be saved.
  absl::Status SaveTo(SnapshotWriter& out, const EngineOptions& options) const;

  // Restoring reads a payload in three steps: ReadSnapshotSpec (DATA_LOSS
  // for malformed bytes), CheckSnapshotOptions (INVALID_ARGUMENT naming the
  // first option that differs from `options`), then LoadFrom on a job
  // created by Create(spec, options) and not yet used, which reads the rest
  // (DATA_LOSS for bytes that are malformed or do not fit the job). A job
  // whose LoadFrom failed must be discarded.
  static absl::StatusOr<JobSpec> ReadSnapshotSpec(SnapshotReader& in);
  static absl::Status CheckSnapshotOptions(SnapshotReader& in,
                                           const EngineOptions& options);
  absl::Status LoadFrom(SnapshotReader& in);

 private:
  Job(JobSpec spec, const EngineOptions& options);

  // Forecasting state of one layer.
  struct LayerModel {
    std::unique_ptr<StateClassifier> state;
    std::unique_ptr<ForecastBank> bank;
  };

  void AddEventLocked(Event event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  struct PendingStep {
    std::vector<double> counts;         // L*M, summed over sources
    std::vector<double> logit_sums;     // L*M, sum of z * layer assignments
    std::vector<double> logit_weights;  // L, sum of layer assignments
    std::vector<uint8_t> reported;      // per source
    int num_reported = 0;
    bool all_tokens = true;   // every reporting source gave tokens
    bool all_logits = true;   // every reporting source gave logits
    double tokens = 0;
    absl::Time first_seen;
  };

  // Commits one assembled step to every layer's history.
  CommittedStep CommitLocked(int64_t step, const double* counts,
                             const double* layer_sums, const double* logits,
                             std::optional<double> tokens, bool incomplete)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Commits pending steps from the front while they are final (every source
  // reported them or a later step), expired (`now` set), or `force`.
  void DrainLocked(std::optional<absl::Time> now, bool force,
                   std::vector<CommittedStep>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::StatusOr<IngestResult> IngestMultiSourceLocked(
      const StepInput& in, const std::vector<double>& layer_sums,
      absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const JobSpec spec_;
  const int max_pending_;
  const absl::Duration timeout_;
  const StateOptions state_options_;
  const int max_path_steps_;
  const int max_events_;

  mutable Mutex mu_;
  std::vector<LayerHistory> layers_ ABSL_GUARDED_BY(mu_);
  // Last step each source reported (or -1).
  std::vector<int64_t> last_reported_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, PendingStep> pending_ ABSL_GUARDED_BY(mu_);
  std::vector<double> scratch_sums_ ABSL_GUARDED_BY(mu_);
  std::vector<double> scratch_logits_ ABSL_GUARDED_BY(mu_);
  JobInfo info_ ABSL_GUARDED_BY(mu_);
  std::vector<LayerModel> models_ ABSL_GUARDED_BY(mu_);  // empty: no forecasting
  std::vector<HealthMonitor> health_ ABSL_GUARDED_BY(mu_);  // empty: health off
  std::vector<double> scratch_p_ ABSL_GUARDED_BY(mu_);
  std::vector<LoadState> layer_states_ ABSL_GUARDED_BY(mu_);
  LoadState job_state_ ABSL_GUARDED_BY(mu_) = LoadState::kTransient;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  std::atomic<int64_t> last_activity_ns_{0};
};

}  // namespace moecast::internal

#endif  // MOECAST_ENGINE_INTERNAL_JOB_H_
