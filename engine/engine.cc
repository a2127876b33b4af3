#include "engine/engine.h"

#include <algorithm>
#include <iterator>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "engine/analysis/analysis_stage.h"
#include "engine/clock.h"
#include "engine/internal/job.h"
#include "engine/internal/mutex.h"
#include "engine/internal/snapshot_codec.h"
#include "engine/predict/predictor_factory.h"
#include "engine/status_macros.h"

namespace moecast {

absl::string_view EventKindName(EventKind kind) {
  switch (kind) {
    case EventKind::kStateChange: return "state_change";
    case EventKind::kPhaseChange: return "phase_change";
    case EventKind::kExpertDead: return "expert_dead";
    case EventKind::kExpertRevived: return "expert_revived";
    case EventKind::kShift: return "shift";
  }
  return "unknown";
}
namespace {

using internal::Job;

absl::Status ValidateOptions(const EngineOptions& o) {
  auto positive = [](absl::string_view name, int64_t v) -> absl::Status {
    if (v >= 1) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("EngineOptions.", name, " = ", v, " must be >= 1"));
  };
  for (auto [name, v] : std::initializer_list<std::pair<absl::string_view, int64_t>>{
           {"max_jobs", o.max_jobs},
           {"max_layers", o.max_layers},
           {"max_experts", o.max_experts},
           {"max_layer_experts", o.max_layer_experts},
           {"max_sources", o.max_sources},
           {"max_pending_steps", o.max_pending_steps},
           {"max_job_history_bytes", o.max_job_history_bytes},
           {"max_total_history_bytes", o.max_total_history_bytes}}) {
    if (absl::Status s = positive(name, v); !s.ok()) return s;
  }
  if (o.history_capacity_steps < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("EngineOptions.history_capacity_steps = ",
                     o.history_capacity_steps, " must be >= 2"));
  }
  if (absl::Status s = ValidateStateOptions(o.state); !s.ok()) return s;
  if (absl::Status s = ValidateShiftOptions(o.shift); !s.ok()) return s;
  if (o.max_path_steps < 1 || o.max_path_steps > 100000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.max_path_steps = ", o.max_path_steps,
        " must be in [1, 100000]"));
  }
  if (o.idle_job_expiry <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.idle_job_expiry = ", absl::FormatDuration(o.idle_job_expiry),
        " must be > 0 (infinite: never)"));
  }
  if (o.max_events_per_job < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.max_events_per_job = ", o.max_events_per_job,
        " must be >= 1"));
  }
  const AnalysisOptions& a = o.analysis;
  if (a.step_threads < 0 || a.step_threads > 256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.analysis.step_threads = ", a.step_threads,
        " must be in [0, 256] (0: one fewer than the cores)"));
  }
  if (a.periodic_threads < 0 || a.periodic_threads > 256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.analysis.periodic_threads = ", a.periodic_threads,
        " must be in [0, 256] (0: 1)"));
  }
  if (a.thread_niceness < 0 || a.thread_niceness > 19) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.analysis.thread_niceness = ", a.thread_niceness,
        " must be in [0, 19]"));
  }
  if (a.batch_steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.analysis.batch_steps = ", a.batch_steps, " must be >= 1"));
  }
  if (a.coalesce_lag_steps < 0 ||
      a.coalesce_lag_steps >= o.history_capacity_steps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.analysis.coalesce_lag_steps = ", a.coalesce_lag_steps,
        " must be in [0, history_capacity_steps = ", o.history_capacity_steps,
        ") (the analysis reads steps back from the history ring; 0: capacity - 1)"));
  }
  if (a.shed_scoring_lag_steps < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.analysis.shed_scoring_lag_steps = ",
        a.shed_scoring_lag_steps, " must be >= 0 (0: half of the ring)"));
  }
  if (o.source_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("EngineOptions.source_timeout = ",
                     absl::FormatDuration(o.source_timeout),
                     " must be positive"));
  }
  return absl::OkStatus();
}

absl::Status JobNotFound(absl::string_view job_id) {
  return absl::NotFoundError(
      absl::StrCat("job '", job_id, "' is not registered"));
}

class EngineImpl final : public Engine {
 public:
  explicit EngineImpl(const EngineOptions& options)
      : Engine(options),
        clock_(options.clock != nullptr ? options.clock : Clock::Real()) {
    if (options.analysis.mode == AnalysisOptions::Mode::kBackground) {
      stage_ = std::make_unique<AnalysisStage>(options.analysis);
    }
  }

  ~EngineImpl() override {
    // Stop the analysis threads before the jobs they work on go away.
    stage_.reset();
  }

  absl::Status RegisterJob(const JobSpec& spec) override {
    if (absl::Status s = ValidateJobSpec(spec, options()); !s.ok()) return s;
    // Build the job outside the registry lock: a large job allocates its
    // predictors' windows here. Its memory (history ring with logits, plus
    // the forecasting state it actually holds) counts against the limits.
    absl::StatusOr<std::shared_ptr<Job>> job =
        Job::Create(spec, options(), stage_.get());
    if (!job.ok()) return job.status();
    absl::StatusOr<int64_t> bytes = JobBytes(spec, **job);
    if (!bytes.ok()) return bytes.status();
    return InsertJob(spec, *std::move(job), *bytes);
  }

  absl::StatusOr<std::string> SnapshotJob(absl::string_view job_id) const override {
    std::shared_ptr<Job> job = Find(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    internal::SnapshotWriter out = internal::SnapshotWriter::ForSnapshot();
    MOECAST_RETURN_IF_ERROR(job->SaveTo(out, options()));
    return internal::SealSnapshot(out);
  }

  absl::Status RestoreJob(absl::string_view snapshot) override {
    MOECAST_ASSIGN_OR_RETURN(absl::string_view payload,
                             internal::UnframeSnapshot(snapshot));
    internal::SnapshotReader in(payload, "snapshot");
    MOECAST_ASSIGN_OR_RETURN(JobSpec spec, Job::ReadSnapshotSpec(in));
    MOECAST_RETURN_IF_ERROR(ValidateJobSpec(spec, options()));
    MOECAST_RETURN_IF_ERROR(Job::CheckSnapshotOptions(in, options()));
    // A job registered without predictors keeps the bank it was saved with:
    // the default of the version that wrote the snapshot.
    if (spec.forecasting && spec.predictors.empty()) {
      std::optional<std::vector<std::string>> saved =
          Job::PeekBankPredictors(in.rest());
      if (saved.has_value() && *saved == LegacyDefaultPredictorNames()) {
        spec.predictors = *std::move(saved);
      }
    }
    // Cheap early answer; InsertJob checks again under the lock.
    if (Find(spec.job_id) != nullptr) return JobExists(spec.job_id);
    // As RegisterJob: the reservation is what a fresh job of this spec
    // takes, so that a restored job reserves what the saved one did.
    MOECAST_ASSIGN_OR_RETURN(std::shared_ptr<Job> job,
                             Job::Create(spec, options(), stage_.get()));
    MOECAST_ASSIGN_OR_RETURN(int64_t bytes, JobBytes(spec, *job));
    MOECAST_RETURN_IF_ERROR(job->LoadFrom(in));
    return InsertJob(spec, std::move(job), bytes);
  }

 private:
  // Memory a fresh job of `spec` accounts for (history ring with logits
  // plus its forecasting state), or RESOURCE_EXHAUSTED over the per-job
  // limit.
  absl::StatusOr<int64_t> JobBytes(const JobSpec& spec, const Job& job) const {
    const int64_t history = HistoryBytes(spec, options(), /*with_router=*/true);
    const int64_t forecasting = job.Info().forecast_bytes;
    const int64_t bytes = history + forecasting;
    if (bytes > options().max_job_history_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "job '", spec.job_id, "': its history (", history,
          " bytes) and forecasting state (", forecasting,
          " bytes) exceed the limit max_job_history_bytes = ",
          options().max_job_history_bytes));
    }
    return bytes;
  }

  static absl::Status JobExists(absl::string_view job_id) {
    return absl::AlreadyExistsError(
        absl::StrCat("job '", job_id, "' is already registered"));
  }

  // Registers `job` under the registry lock: ALREADY_EXISTS, or
  // RESOURCE_EXHAUSTED for max_jobs and the total memory limit.
  absl::Status InsertJob(const JobSpec& spec, std::shared_ptr<Job> job,
                         int64_t bytes) {
    internal::WriterLock lock(&mu_);
    if (jobs_.contains(spec.job_id)) return JobExists(spec.job_id);
    if (static_cast<int64_t>(jobs_.size()) >= options().max_jobs) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot register job '", spec.job_id, "': ",
                       jobs_.size(), " jobs are registered, the limit max_jobs = ",
                       options().max_jobs));
    }
    if (reserved_bytes_ + bytes > options().max_total_history_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cannot register job '", spec.job_id, "': it needs ", bytes,
          " bytes (history and forecasting) and ", reserved_bytes_,
          " are reserved by other jobs, over the limit "
          "max_total_history_bytes = ",
          options().max_total_history_bytes));
    }
    reserved_bytes_ += bytes;
    reserved_by_job_[spec.job_id] = bytes;
    job->Touch(clock_->Now());
    jobs_.emplace(spec.job_id, std::move(job));
    return absl::OkStatus();
  }

 public:

  absl::Status DeleteJob(absl::string_view job_id) override {
    internal::WriterLock lock(&mu_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return JobNotFound(job_id);
    EraseLocked(it);
    return absl::OkStatus();
  }

  std::vector<std::string> ExpireIdleJobs() override {
    std::vector<std::string> expired;
    const absl::Duration limit = options().idle_job_expiry;
    if (limit == absl::InfiniteDuration()) return expired;
    const absl::Time now = clock_->Now();
    internal::WriterLock lock(&mu_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      auto next = std::next(it);
      if (now - it->second->LastActivity() > limit) {
        expired.push_back(it->first);
        EraseLocked(it);
      }
      it = next;
    }
    std::sort(expired.begin(), expired.end());
    return expired;
  }

  std::vector<std::string> ListJobs() const override {
    std::vector<std::string> ids;
    {
      internal::ReaderLock lock(&mu_);
      ids.reserve(jobs_.size());
      for (const auto& [id, job] : jobs_) ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  absl::StatusOr<JobInfo> GetJobInfo(absl::string_view job_id) const override {
    std::shared_ptr<Job> job = Find(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    JobInfo info = job->Info();
    info.idle = std::max(absl::ZeroDuration(), clock_->Now() - job->LastActivity());
    return info;
  }

  absl::StatusOr<IngestResult> Ingest(absl::string_view job_id,
                                      const StepInput& input) override {
    std::shared_ptr<Job> job = Find(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    const absl::Time now = clock_->Now();
    job->Touch(now);
    return job->Ingest(input, now);
  }

  absl::StatusOr<std::vector<CommittedStep>> FlushPending(
      absl::string_view job_id) override {
    std::shared_ptr<Job> job = Find(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    job->Touch(clock_->Now());
    return job->FlushPending();
  }

  int64_t Poll() override {
    std::vector<std::shared_ptr<Job>> jobs;
    {
      internal::ReaderLock lock(&mu_);
      jobs.reserve(jobs_.size());
      for (const auto& [id, job] : jobs_) {
        if (job->spec().num_sources > 1) jobs.push_back(job);
      }
    }
    const absl::Time now = clock_->Now();
    int64_t committed = 0;
    for (const auto& job : jobs) committed += job->ExpirePending(now).size();
    return committed;
  }

  absl::StatusOr<ForecastResult> Forecast(
      absl::string_view job_id, const ForecastRequest& request) override {
    std::shared_ptr<Job> job = Find(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    return job->Forecast(request);
  }

  absl::StatusOr<std::vector<ForecastScore>> ForecastScores(
      absl::string_view job_id, const Freshness& freshness) const override {
    std::shared_ptr<Job> job = Find(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    return job->Scores(freshness);
  }

  absl::StatusOr<StateReport> GetState(absl::string_view job_id,
                                       const Freshness& freshness) const override {
    std::shared_ptr<Job> job = Find(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    return job->State(freshness);
  }

  absl::StatusOr<AnalysisProgress> AwaitAnalysis(
      absl::string_view job_id, const Freshness& freshness) const override {
    std::shared_ptr<Job> job = Find(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    return job->AwaitAnalysis(freshness);
  }

  absl::StatusOr<std::vector<Event>> ReadEvents(
      absl::string_view job_id, int64_t after_seq, int max_events,
      const Freshness& freshness) const override {
    if (max_events < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_events = ", max_events, " must be >= 1"));
    }
    std::shared_ptr<Job> job = Find(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    return job->ReadEvents(after_seq, max_events, freshness);
  }

  absl::StatusOr<PlacementRecommendation> RecommendPlacement(
      absl::string_view job_id, const PlacementRequest& request) override {
    if (request.horizon < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "placement horizon ", request.horizon, " must be >= 1"));
    }
    ForecastRequest fr;
    fr.horizons = {request.horizon};
    fr.predictor = request.predictor;
    fr.interval_level = request.interval_level;
    fr.freshness = request.freshness;
    MOECAST_ASSIGN_OR_RETURN(ForecastResult forecast, Forecast(job_id, fr));
    PlacementRecommendation rec;
    rec.as_of_step = forecast.as_of_step;
    rec.analysis = forecast.analysis;
    rec.job_state = forecast.job_state;
    rec.horizon = request.horizon;
    const int num_layers = static_cast<int>(forecast.layers.size());
    const int m = static_cast<int>(forecast.layers[0].horizons[0].mean.size());
    rec.loads.reserve(static_cast<size_t>(num_layers) * m);
    for (const LayerForecast& lf : forecast.layers) {
      const HorizonForecast& hf = lf.horizons[0];
      const bool upper = request.upper_bounds_when_transient &&
                         lf.state == LoadState::kTransient &&
                         hf.upper.size() == hf.mean.size();
      if (upper) rec.upper_bound_layers.push_back(lf.layer);
      const std::vector<double>& row = upper ? hf.upper : hf.mean;
      rec.loads.insert(rec.loads.end(), row.begin(), row.end());
    }
    PlacementProblem problem;
    problem.num_layers = num_layers;
    problem.num_experts = m;
    problem.loads = rec.loads;
    problem.num_slots = request.num_slots;
    problem.num_groups = request.num_groups;
    problem.num_nodes = request.num_nodes;
    problem.num_gpus = request.num_gpus;
    problem.excluded_gpus = request.excluded_gpus;
    problem.current_phy2log = request.current_phy2log;
    // With a current placement and a migration model the planner moves only
    // what pays under that model (the same one Decide uses below), stricter
    // while the job is transient.
    PlacementOptions options = request.options;
    if (!options.migration.has_value() && request.migration.has_value() &&
        !request.current_phy2log.empty()) {
      options.migration = request.migration;
      options.transient = forecast.job_state == LoadState::kTransient;
    }
    MOECAST_ASSIGN_OR_RETURN(rec.plan, PlanPlacement(problem, options));
    if (!request.current_phy2log.empty()) {
      MOECAST_ASSIGN_OR_RETURN(
          Plan current,
          EvaluatePlacement(problem, request.current_phy2log, request.options));
      if (request.migration.has_value()) {
        MOECAST_ASSIGN_OR_RETURN(
            rec.decision,
            Decide(current, rec.plan, *request.migration,
                   forecast.job_state == LoadState::kTransient));
      }
      rec.current = std::move(current);
    }
    return rec;
  }

  absl::StatusOr<HealthReport> Health(absl::string_view job_id,
                                      const Freshness& freshness) const override {
    std::shared_ptr<Job> job = Find(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    return job->Health(freshness);
  }

  absl::Status VisitHistory(
      absl::string_view job_id, int layer,
      absl::FunctionRef<void(const LayerHistory&)> fn) const override {
    std::shared_ptr<Job> job = Find(job_id);
    if (job == nullptr) return JobNotFound(job_id);
    if (layer < 0 || layer >= job->spec().num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("job '", job_id, "': layer ", layer,
                       " is out of range [0, ", job->spec().num_layers, ")"));
    }
    job->VisitLayer(layer, fn);
    return absl::OkStatus();
  }

 private:
  using JobMap = absl::flat_hash_map<std::string, std::shared_ptr<Job>>;

  void EraseLocked(JobMap::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto reserved = reserved_by_job_.find(it->first);
    reserved_bytes_ -= reserved->second;
    reserved_by_job_.erase(reserved);
    jobs_.erase(it);
  }

  std::shared_ptr<Job> Find(absl::string_view job_id) const {
    internal::ReaderLock lock(&mu_);
    auto it = jobs_.find(job_id);
    return it == jobs_.end() ? nullptr : it->second;
  }

  Clock* const clock_;
  mutable internal::SharedMutex mu_;
  JobMap jobs_ ABSL_GUARDED_BY(mu_);
  int64_t reserved_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, int64_t> reserved_by_job_ ABSL_GUARDED_BY(mu_);
  // Null in the inline mode. Declared last: destroyed first.
  std::unique_ptr<AnalysisStage> stage_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    const EngineOptions& options) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  return std::unique_ptr<Engine>(new EngineImpl(options));
}

absl::string_view IngestOutcomeName(IngestOutcome outcome) {
  switch (outcome) {
    case IngestOutcome::kCommitted:
      return "committed";
    case IngestOutcome::kPending:
      return "pending";
    case IngestOutcome::kDuplicate:
      return "duplicate";
  }
  return "unknown";
}

}  // namespace moecast
