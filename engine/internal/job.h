// Job: one registered job: its write side (spec, per-layer history ring,
// multi-source step assembly, counters; guarded by mu_) and its analysis side
// (a JobAnalyzer fed from the ring in commit order; guarded by amu_).
//
// Thread-safety: all public methods are thread-safe. Writers hold mu_ only;
// the analysis holds amu_ and takes mu_ briefly to copy each step out of the
// ring, so a writer never waits for analysis work.
#ifndef MOECAST_ENGINE_INTERNAL_JOB_H_
#define MOECAST_ENGINE_INTERNAL_JOB_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/analysis/analysis_stage.h"
#include "engine/analysis/job_analyzer.h"
#include "engine/analysis_progress.h"
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

// Steps committed while analysis lagged more than coalesce_lag_steps,
// summed by the writer; analysed as one step (analysis_options.h).
struct CoalescedBlock {
  int64_t begin_index = 0;  // commit index of its first step
  int64_t num_steps = 0;
  int64_t last_step = 0;
  std::vector<double> counts;         // L*M
  std::vector<double> assignments;    // L
  std::vector<double> tokens;         // L
  std::vector<double> logit_sums;     // L*M, weighted by assignments
  std::vector<double> logit_weights;  // L
  std::vector<uint8_t> all_logits;    // L
};

// A job is the analysis stage's unit of work (StepTask): it schedules itself
// when it has committed steps that are not analysed yet.
class Job final : public StepTask, public std::enable_shared_from_this<Job> {
 public:
  // `spec` must have passed ValidateJobSpec. INVALID_ARGUMENT for an unknown
  // predictor or bad horizons in the spec. `stage` runs the analysis in the
  // background; null: inline, on the thread that commits a step. Not owned;
  // must outlive the job's use.
  static absl::StatusOr<std::shared_ptr<Job>> Create(
      JobSpec spec, const EngineOptions& options, AnalysisStage* stage);
  ~Job() override = default;

  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  const JobSpec& spec() const { return spec_; }

  // ---- Write path (any thread; never runs analysis in the background mode)

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

  // Calls `fn` with layer `layer`'s history under the job's write lock.
  // Requires 0 <= layer < num_layers.
  void VisitLayer(int layer,
                  absl::FunctionRef<void(const LayerHistory&)> fn) const;

  // ---- Analysis (engine/analysis)

  // Waits until every step committed before the call is analysed, or
  // `freshness.deadline` (DEADLINE_EXCEEDED naming the step reached);
  // returns at once with allow_stale. Returns the progress then.
  absl::StatusOr<AnalysisProgress> AwaitAnalysis(const Freshness& freshness) const;
  AnalysisProgress Progress() const;

  // StepTask: analyses up to `max_steps` steps on an analysis thread.
  void RunSteps(AnalysisStage& stage, int max_steps) override;

  // ---- Answers (see Engine); each waits as `freshness` says first.
  absl::StatusOr<ForecastResult> Forecast(const ForecastRequest& request);
  absl::StatusOr<StateReport> State(const Freshness& freshness) const;
  absl::StatusOr<std::vector<ForecastScore>> Scores(const Freshness& freshness) const;
  absl::StatusOr<HealthReport> Health(const Freshness& freshness) const;
  absl::StatusOr<std::vector<Event>> ReadEvents(int64_t after_seq, int max_events,
                                                const Freshness& freshness) const;

  // Per-layer access to the forecast bank (the bench's hook), once every
  // committed step is analysed. Requires forecasting on and 0 <= layer <
  // num_layers.
  void VisitBank(int layer, absl::FunctionRef<void(ForecastBank&)> fn);

  // Snapshots (engine/internal/job_snapshot.cc, docs/snapshot-format.md).
  //
  // SaveTo waits until analysis has caught up with the committed steps, then
  // writes the whole job as one consistent payload: its spec, the
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
  // The predictor names of the first layer's bank in the payload that
  // follows the options (`rest`, what LoadFrom reads); nullopt if there is
  // no bank or the bytes do not parse (LoadFrom then reports them).
  static std::optional<std::vector<std::string>> PeekBankPredictors(
      absl::string_view rest);
  static absl::Status CheckSnapshotOptions(SnapshotReader& in,
                                           const EngineOptions& options);
  absl::Status LoadFrom(SnapshotReader& in);

 private:
  Job(JobSpec spec, const EngineOptions& options, AnalysisStage* stage);

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

  // Commits one assembled step to every layer's history (and, past the lag
  // bound, to the coalesced block).
  CommittedStep CommitLocked(int64_t step, const double* counts,
                             const double* layer_sums, const double* logits,
                             std::optional<double> tokens, bool incomplete)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Commits pending steps from the front while they are final (every source
  // reported them or a later step), expired (`now` set), or `force`.
  void DrainLocked(std::optional<absl::Time> now, bool force,
                   std::vector<CommittedStep>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::StatusOr<IngestResult> IngestLocked(const StepInput& in, absl::Time now);
  absl::StatusOr<IngestResult> IngestMultiSourceLocked(
      const StepInput& in, const std::vector<double>& layer_sums,
      absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Status SaveLocked(SnapshotWriter& out, const EngineOptions& options) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(amu_, mu_);

  // After steps committed: analyse them inline, or wake the stage.
  void AfterCommit();
  void Wake();
  // Re-queues the job if it has work, else clears `scheduled_` (race-free).
  void Reschedule(AnalysisStage& stage);
  bool HasWork() const;

  // Copies the next step (or coalesced block) into step_; false if none.
  bool FetchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(amu_);
  // Analyses one step. Returns false if there was none. In the background
  // mode a step that closes health windows or has predictor refits due hands
  // them to the periodic threads and parks the job (`*parked`); the last
  // task finishes the step and re-schedules the job.
  bool AnalyseOne(AnalysisStage* stage, bool* parked);
  void Completed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(amu_);
  // Folds the oldest unfetched step into the coalesced block.
  void FoldOldestLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Progress as of the analyzer's state now.
  AnalysisProgress AnswerProgressLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(amu_);
  void RunFit(size_t index, const HealthMonitor::DueWindow* due,
              const HealthOptions* options);
  void RunRefit(Predictor* predictor, int64_t step);
  // One periodic task of a parked step is done; the last one finishes the
  // step, un-parks the job and re-schedules it.
  void PeriodicTaskDone();
  // Answers read the analyzer only when no refit is mutating a predictor.
  void AwaitRefitsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(amu_);
  void Probe(AnalysisProbe::Kind kind, int64_t step, int layer) const;

  const JobSpec spec_;
  const int max_pending_;
  const absl::Duration timeout_;
  const int max_path_steps_;
  const bool has_analysis_;  // forecasting or health on
  const int shed_lag_;
  const int coalesce_lag_;
  AnalysisStage* const stage_;  // null: inline
  const std::function<void(const AnalysisProbe&)> probe_;

  // Write side. Lock order: amu_ before mu_.
  mutable Mutex mu_;
  std::vector<LayerHistory> layers_ ABSL_GUARDED_BY(mu_);
  // Last step each source reported (or -1).
  std::vector<int64_t> last_reported_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, PendingStep> pending_ ABSL_GUARDED_BY(mu_);
  std::vector<double> scratch_sums_ ABSL_GUARDED_BY(mu_);
  JobInfo info_ ABSL_GUARDED_BY(mu_);
  // Commit index (0-based count) of the next step the analysis fetches.
  int64_t fetch_index_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<CoalescedBlock> block_ ABSL_GUARDED_BY(mu_);

  // Analysis side.
  mutable Mutex amu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::unique_ptr<JobAnalyzer> analyzer_ ABSL_GUARDED_BY(amu_);
  AnalysisStep step_ ABSL_GUARDED_BY(amu_);
  bool parked_ ABSL_GUARDED_BY(amu_) = false;
  // A parked step has predictor refits running (they mutate the analyzer's
  // predictors); answers wait on refits_done_ until it clears.
  bool refitting_ ABSL_GUARDED_BY(amu_) = false;
  mutable CondVar refits_done_;
  // Fits of a parked step: each periodic task writes its own slot.
  std::vector<HealthWindow> fitted_;
  std::atomic<int> fits_left_{0};

  // Progress, readable without locks.
  std::atomic<int64_t> committed_count_{0};
  std::atomic<int64_t> last_committed_step_{-1};
  std::atomic<int64_t> coalesced_count_{0};
  std::atomic<int64_t> analysed_count_{0};
  std::atomic<int64_t> last_analysed_step_{-1};
  std::atomic<int64_t> scoring_shed_count_{0};
  std::atomic<bool> scheduled_{false};
  // Waiters for analysis progress.
  mutable std::mutex wait_mu_;
  mutable std::condition_variable wait_cv_;
  mutable std::atomic<int> waiters_{0};

  std::atomic<int64_t> last_activity_ns_{0};
};

}  // namespace moecast::internal

#endif  // MOECAST_ENGINE_INTERNAL_JOB_H_
