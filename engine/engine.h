// Engine: moecast's in-process facade. Jobs are registered with a JobSpec,
// steps of per-expert counts are ingested, and later stages (state,
// forecasts, placement, health) answer from each job's history.
//
//   EngineOptions options;
//   MOECAST_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
//                            Engine::Create(options));
//   MOECAST_RETURN_IF_ERROR(engine->RegisterJob(spec));
//   StepInput in;
//   in.step = 0;
//   in.counts = counts;  // spec.num_layers * spec.num_experts values
//   MOECAST_ASSIGN_OR_RETURN(IngestResult r, engine->Ingest(spec.job_id, in));
//
// Errors: every call returns absl::Status. INVALID_ARGUMENT for malformed
// input, NOT_FOUND for an unknown job, ALREADY_EXISTS for a duplicate job id,
// FAILED_PRECONDITION for a late multi-source part, RESOURCE_EXHAUSTED when a
// configured limit is hit. A rejected call changes nothing that was accepted.
//
// Analysis: Ingest only validates, appends to the job's history and counts;
// the analysis (state, forecasts and their scores, health, events) runs on
// engine-owned threads (EngineOptions::analysis; inline on request). Every
// answer waits, by default, until the steps committed before the call are
// analysed, and says how current it is (analysis_progress.h).
//
// Thread-safety: all methods are thread-safe. Calls on different jobs run in
// parallel; ingest calls on one job are serialized, and never wait for the
// job's analysis.
#ifndef MOECAST_ENGINE_ENGINE_H_
#define MOECAST_ENGINE_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/analysis_progress.h"
#include "engine/forecast.h"
#include "engine/health_report.h"
#include "engine/history/layer_history.h"
#include "engine/ingest.h"
#include "engine/job_info.h"
#include "engine/job_spec.h"
#include "engine/options.h"
#include "engine/recommend.h"

namespace moecast {

class Engine {
 public:
  // Returns a new engine, or INVALID_ARGUMENT naming the option that is out
  // of range.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Engine>> Create(
      const EngineOptions& options);

  virtual ~Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Registers a job. INVALID_ARGUMENT for a malformed spec, ALREADY_EXISTS if
  // the id is taken, RESOURCE_EXHAUSTED if max_jobs or the total history
  // memory would be exceeded.
  [[nodiscard]] virtual absl::Status RegisterJob(const JobSpec& spec) = 0;

  // Removes a job and its history. NOT_FOUND if unknown.
  [[nodiscard]] virtual absl::Status DeleteJob(absl::string_view job_id) = 0;

  // Ids of the registered jobs, sorted.
  virtual std::vector<std::string> ListJobs() const = 0;

  // Spec and counters of one job. NOT_FOUND if unknown.
  [[nodiscard]] virtual absl::StatusOr<JobInfo> GetJobInfo(
      absl::string_view job_id) const = 0;

  // Ingests one step (or, for a multi-source job, one source's part of it).
  //
  // Single-source jobs: the step commits at once. Re-sending the last
  // committed step returns kDuplicate and changes nothing; an older step is
  // INVALID_ARGUMENT. Gaps in step numbers are allowed and recorded.
  //
  // Multi-source jobs: parts are summed per step. A step commits when every
  // source has reported it or moved past it, or `source_timeout` after its
  // first part (then marked incomplete). Steps commit in order. A source
  // re-sending its last step gets kDuplicate; an older step is
  // INVALID_ARGUMENT; a part for a step already committed without it is
  // FAILED_PRECONDITION; a new step beyond max_pending_steps is
  // RESOURCE_EXHAUSTED.
  //
  // Validation (INVALID_ARGUMENT): source index, step >= 0, counts size
  // L*M, router_logits empty or L*M, every count finite and >= 0, every
  // logit finite, tokens finite and >= 0 with sum(c) <= tokens*top_k per
  // layer. NOT_FOUND for an unknown job.
  [[nodiscard]] virtual absl::StatusOr<IngestResult> Ingest(
      absl::string_view job_id, const StepInput& input) = 0;

  // Commits every pending step of a multi-source job now, incomplete where
  // sources are missing (e.g. at the end of a run). NOT_FOUND if unknown.
  [[nodiscard]] virtual absl::StatusOr<std::vector<CommittedStep>>
  FlushPending(absl::string_view job_id) = 0;

  // Commits timed-out pending steps of every job. Returns how many steps
  // committed. A server calls this periodically; ingest calls do it for
  // their own job.
  virtual int64_t Poll() = 0;

  // Deletes every job idle (no step ingested, no FlushPending, since
  // registration) for longer than EngineOptions::idle_job_expiry. Returns the
  // deleted ids, sorted. A server calls this periodically. Calls still
  // running on a deleted job finish normally.
  virtual std::vector<std::string> ExpireIdleJobs() = 0;

  // Runs `fn` on layer `layer`'s history of job `job_id`, under the job's
  // lock (keep it short; don't call back into the engine). NOT_FOUND for an
  // unknown job, INVALID_ARGUMENT for a layer out of range.
  [[nodiscard]] virtual absl::Status VisitHistory(
      absl::string_view job_id, int layer,
      absl::FunctionRef<void(const LayerHistory&)> fn) const = 0;

  // Forecasts for every layer (or request.layers) of a job: per horizon the
  // mean share of each expert over the next h steps, from request.predictor
  // ("auto": per layer and horizon, the predictor with the smallest recent
  // realised error), with intervals from that predictor's realised errors,
  // and each layer's state. NOT_FOUND for an unknown job or predictor,
  // FAILED_PRECONDITION before the first step or when the job has
  // forecasting off, INVALID_ARGUMENT for a bad horizon, level, path length
  // or layer.
  [[nodiscard]] virtual absl::StatusOr<ForecastResult> Forecast(
      absl::string_view job_id, const ForecastRequest& request) = 0;

  // The realised forecast errors of every predictor of the job's bank (and
  // auto) at every scored horizon, averaged over layers. FAILED_PRECONDITION
  // when the job has forecasting off; NOT_FOUND if unknown.
  [[nodiscard]] virtual absl::StatusOr<std::vector<ForecastScore>> ForecastScores(
      absl::string_view job_id, const Freshness& freshness) const = 0;
  [[nodiscard]] absl::StatusOr<std::vector<ForecastScore>> ForecastScores(
      absl::string_view job_id) const {
    return ForecastScores(job_id, Freshness());
  }

  // Transient/stable state of the job and each layer, with the raw signals.
  // Errors as Forecast.
  [[nodiscard]] virtual absl::StatusOr<StateReport> GetState(
      absl::string_view job_id, const Freshness& freshness) const = 0;
  [[nodiscard]] absl::StatusOr<StateReport> GetState(absl::string_view job_id) const {
    return GetState(job_id, Freshness());
  }

  // Up to `max_events` events of the job with sequence number > after_seq,
  // oldest first. The job keeps the last EngineOptions::max_events_per_job.
  [[nodiscard]] virtual absl::StatusOr<std::vector<Event>> ReadEvents(
      absl::string_view job_id, int64_t after_seq, int max_events,
      const Freshness& freshness) const = 0;
  [[nodiscard]] absl::StatusOr<std::vector<Event>> ReadEvents(
      absl::string_view job_id, int64_t after_seq, int max_events) const {
    return ReadEvents(job_id, after_seq, max_events, Freshness());
  }

  // Recommends an expert placement for the job from its current forecasts
  // (mean over request.horizon steps; upper interval bounds for transient
  // layers), planned with request.options (default mode: no duplicate
  // replicas, local search, relabelled to the current placement), with the
  // migration schedule, the current placement's score on the same loads and,
  // given a migration model, the rebalance decision. Errors: as Forecast;
  // INVALID_ARGUMENT for an inconsistent cluster or current placement (the
  // planner's message).
  [[nodiscard]] virtual absl::StatusOr<PlacementRecommendation>
  RecommendPlacement(absl::string_view job_id,
                     const PlacementRequest& request) = 0;

  // The router's health (design section 6) as of the last completed window
  // of EngineOptions::health.window_steps steps: per layer gamma_eff with its
  // bootstrap CI and phase (needs router-logit means in the ingested steps),
  // imbalance and dead experts; and E = T*H/(O+B) from the job's declared
  // hyperparameters. Phase changes, deaths and revivals are events
  // (ReadEvents). NOT_FOUND for an unknown job; FAILED_PRECONDITION when the
  // job has health off or no window has completed yet.
  [[nodiscard]] virtual absl::StatusOr<HealthReport> Health(
      absl::string_view job_id, const Freshness& freshness) const = 0;
  [[nodiscard]] absl::StatusOr<HealthReport> Health(absl::string_view job_id) const {
    return Health(job_id, Freshness());
  }

  // Analysis progress of a job (analysis_progress.h): with the default
  // Freshness, first waits until every step committed before the call is
  // analysed (DEADLINE_EXCEEDED at freshness.deadline, naming the step
  // reached); with allow_stale, at once. Every answer above waits the same
  // way (their requests carry a Freshness, or the overloads taking one).
  // NOT_FOUND for an unknown job.
  [[nodiscard]] virtual absl::StatusOr<AnalysisProgress> AwaitAnalysis(
      absl::string_view job_id, const Freshness& freshness) const = 0;

  // Serializes one job's whole state (spec, history, pending multi-source
  // steps, forecasting and health state, events, counters) into a versioned,
  // checksummed byte string, consistent as of one point between calls on
  // the job (docs/snapshot-format.md). NOT_FOUND if unknown; UNIMPLEMENTED
  // if a predictor of the job cannot be saved (all built-in ones can).
  [[nodiscard]] virtual absl::StatusOr<std::string> SnapshotJob(
      absl::string_view job_id) const = 0;

  // Recreates a job from SnapshotJob's bytes, so that every later call
  // answers exactly as on the job that was saved (bit for bit; the idle time
  // restarts). Nothing is registered on error. ALREADY_EXISTS if the id is
  // taken; DATA_LOSS for corrupt, truncated or inconsistent bytes (wrong
  // magic, checksum mismatch); INVALID_ARGUMENT for an unknown format
  // version, a spec these options reject as malformed, or a snapshot taken
  // under different job-shaping options (history_capacity_steps, state,
  // health, pending and event limits: the message names the option);
  // RESOURCE_EXHAUSTED as RegisterJob (max_layers and other size limits,
  // max_jobs, memory).
  [[nodiscard]] virtual absl::Status RestoreJob(absl::string_view snapshot) = 0;

  const EngineOptions& options() const { return options_; }

 protected:
  explicit Engine(const EngineOptions& options) : options_(options) {}

 private:
  const EngineOptions options_;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_ENGINE_H_
