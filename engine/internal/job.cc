#include "engine/internal/job.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/ingest/step_validator.h"
#include "engine/predict/predictor_factory.h"

namespace moecast::internal {
namespace {

// Weight added to every source's share when averaging router-logit means, so
// that a layer where no source had assignments gets the plain mean instead of
// 0/0. Real assignment counts are >= 1, so the bias is below 1e-12.
constexpr double kLogitWeightFloor = 1e-12;

}  // namespace

absl::StatusOr<std::shared_ptr<Job>> Job::Create(JobSpec spec,
                                                 const EngineOptions& options,
                                                 AnalysisStage* stage) {
  std::shared_ptr<Job> job(new Job(std::move(spec), options, stage));
  absl::StatusOr<std::unique_ptr<JobAnalyzer>> analyzer =
      JobAnalyzer::Create(job->spec_, options);
  if (!analyzer.ok()) return analyzer.status();
  MutexLock lock(&job->amu_);
  job->analyzer_ = *std::move(analyzer);
  job->step_.Resize(job->spec_.num_layers, job->spec_.num_experts);
  return job;
}

Job::Job(JobSpec spec, const EngineOptions& options, AnalysisStage* stage)
    : spec_(std::move(spec)),
      max_pending_(options.max_pending_steps),
      timeout_(options.source_timeout),
      max_path_steps_(options.max_path_steps),
      has_analysis_(spec_.forecasting || spec_.health),
      shed_lag_(options.analysis.ShedScoringLag(options.history_capacity_steps)),
      coalesce_lag_(options.analysis.CoalesceLag(options.history_capacity_steps)),
      stage_(stage),
      probe_(options.analysis.probe) {
  MutexLock lock(&mu_);
  layers_.reserve(spec_.num_layers);
  for (int l = 0; l < spec_.num_layers; ++l) {
    layers_.emplace_back(spec_.num_experts, options.history_capacity_steps);
    // gamma_eff needs router logits: their ring is allocated here, where
    // registration pays for it (the job's memory limit counts it anyway),
    // not on the ingest call that first carries logits.
    if (spec_.health) layers_.back().ReserveLogits();
  }
  last_reported_.assign(spec_.num_sources, -1);
  scratch_sums_.assign(spec_.num_layers, 0.0);
  info_.spec = spec_;
}

absl::StatusOr<IngestResult> Job::Ingest(const StepInput& in, absl::Time now) {
  absl::StatusOr<IngestResult> result = IngestLocked(in, now);
  if (result.ok() && !result->committed.empty()) AfterCommit();
  return result;
}

absl::StatusOr<IngestResult> Job::IngestLocked(const StepInput& in, absl::Time now) {
  MutexLock lock(&mu_);
  if (absl::Status s = ValidateStep(spec_, in, absl::MakeSpan(scratch_sums_));
      !s.ok()) {
    ++info_.rejected_calls;
    return s;
  }
  if (spec_.num_sources > 1) {
    return IngestMultiSourceLocked(in, scratch_sums_, now);
  }

  IngestResult result;
  if (info_.last_step.has_value()) {
    const int64_t last = *info_.last_step;
    if (in.step == last) {
      ++info_.duplicate_calls;
      result.outcome = IngestOutcome::kDuplicate;
      result.note = absl::StrCat("step ", in.step,
                                 " was already committed; nothing changed");
      return result;
    }
    if (in.step < last) {
      ++info_.rejected_calls;
      return absl::InvalidArgumentError(
          absl::StrCat("job '", spec_.job_id, "': step ", in.step,
                       " is older than the last committed step ", last));
    }
  }
  last_reported_[0] = in.step;
  result.outcome = IngestOutcome::kCommitted;
  result.committed.push_back(CommitLocked(
      in.step, in.counts.data(), scratch_sums_.data(),
      in.router_logits.empty() ? nullptr : in.router_logits.data(), in.tokens,
      /*incomplete=*/false));
  for (int l = 0; l < spec_.num_layers; ++l) {
    if (scratch_sums_[l] <= 0) {
      absl::StrAppend(&result.note, result.note.empty()
                                        ? "layers without assignments:"
                                        : "",
                      " ", l);
    }
  }
  return result;
}

absl::StatusOr<IngestResult> Job::IngestMultiSourceLocked(
    const StepInput& in, const std::vector<double>& layer_sums,
    absl::Time now) {
  IngestResult result;
  // Time-outs first, so that a long-silent source does not make a fresh
  // report look out of room.
  DrainLocked(now, /*force=*/false, &result.committed);

  const int s = in.source;
  const int64_t t = in.step;
  // The lambda is analysed on its own (clang's -Wthread-safety cannot see
  // that mu_ is held here), so it counts through a pointer taken under the
  // lock.
  int64_t* const rejected_calls = &info_.rejected_calls;
  auto reject = [&](absl::Status status) -> absl::StatusOr<IngestResult> {
    ++*rejected_calls;
    if (!result.committed.empty()) {
      status = absl::Status(
          status.code(),
          absl::StrCat(status.message(), "; meanwhile ",
                       result.committed.size(),
                       " timed-out step(s) were committed"));
    }
    return status;
  };
  if (t == last_reported_[s]) {
    ++info_.duplicate_calls;
    result.outcome = IngestOutcome::kDuplicate;
    result.note = absl::StrCat("source ", s, " already reported step ", t,
                               "; nothing changed");
    return result;
  }
  if (t < last_reported_[s]) {
    return reject(absl::InvalidArgumentError(absl::StrCat(
        "job '", spec_.job_id, "': source ", s, " sent step ", t,
        ", older than the last step it reported (", last_reported_[s], ")")));
  }
  if (info_.last_step.has_value() && t <= *info_.last_step) {
    return reject(absl::FailedPreconditionError(absl::StrCat(
        "job '", spec_.job_id, "': source ", s, " sent step ", t,
        " after it was committed without this source (last committed step ",
        *info_.last_step, "); the late part is dropped")));
  }
  auto it = pending_.find(t);
  if (it == pending_.end()) {
    if (static_cast<int>(pending_.size()) >= max_pending_) {
      return reject(absl::ResourceExhaustedError(absl::StrCat(
          "job '", spec_.job_id, "': ", pending_.size(),
          " steps are already waiting for sources (max_pending_steps = ",
          max_pending_, "); source ", s, " is too far ahead at step ", t,
          ", oldest pending step is ", pending_.begin()->first)));
    }
    const size_t n = static_cast<size_t>(spec_.num_layers) * spec_.num_experts;
    PendingStep fresh;
    fresh.counts.assign(n, 0.0);
    fresh.logit_sums.assign(n, 0.0);
    fresh.logit_weights.assign(spec_.num_layers, 0.0);
    fresh.reported.assign(spec_.num_sources, 0);
    fresh.first_seen = now;
    it = pending_.emplace(t, std::move(fresh)).first;
  }
  PendingStep& p = it->second;
  const int m = spec_.num_experts;
  for (size_t i = 0; i < p.counts.size(); ++i) p.counts[i] += in.counts[i];
  if (in.router_logits.empty()) {
    p.all_logits = false;
  } else {
    for (int l = 0; l < spec_.num_layers; ++l) {
      const double w = layer_sums[l] + kLogitWeightFloor;
      p.logit_weights[l] += w;
      const double* z = in.router_logits.data() + static_cast<size_t>(l) * m;
      double* acc = p.logit_sums.data() + static_cast<size_t>(l) * m;
      for (int e = 0; e < m; ++e) acc[e] += w * z[e];
    }
  }
  if (in.tokens.has_value()) {
    p.tokens += *in.tokens;
  } else {
    p.all_tokens = false;
  }
  p.reported[s] = 1;
  ++p.num_reported;
  last_reported_[s] = t;

  DrainLocked(now, /*force=*/false, &result.committed);
  result.outcome = IngestOutcome::kPending;
  for (const CommittedStep& c : result.committed) {
    if (c.step == t) result.outcome = IngestOutcome::kCommitted;
  }
  return result;
}

void Job::DrainLocked(std::optional<absl::Time> now, bool force,
                      std::vector<CommittedStep>* out) {
  if (pending_.empty()) return;
  const int64_t min_reported =
      *std::min_element(last_reported_.begin(), last_reported_.end());
  const int m = spec_.num_experts;
  while (!pending_.empty()) {
    auto it = pending_.begin();
    const int64_t t = it->first;
    PendingStep& p = it->second;
    const bool final_step = t <= min_reported;
    const bool expired = now.has_value() && *now - p.first_seen >= timeout_;
    if (!final_step && !expired && !force) break;

    for (int l = 0; l < spec_.num_layers; ++l) {
      const double* c = p.counts.data() + static_cast<size_t>(l) * m;
      double sum = 0;
      for (int e = 0; e < m; ++e) sum += c[e];
      scratch_sums_[l] = sum;
    }
    const double* logits = nullptr;
    if (p.all_logits) {
      for (int l = 0; l < spec_.num_layers; ++l) {
        double* z = p.logit_sums.data() + static_cast<size_t>(l) * m;
        const double inv = 1.0 / p.logit_weights[l];
        for (int e = 0; e < m; ++e) z[e] *= inv;
      }
      logits = p.logit_sums.data();
    }
    std::optional<double> tokens;
    if (p.all_tokens) tokens = p.tokens;
    out->push_back(CommitLocked(t, p.counts.data(), scratch_sums_.data(),
                                logits, tokens,
                                p.num_reported < spec_.num_sources));
    pending_.erase(it);
  }
}

CommittedStep Job::CommitLocked(int64_t step, const double* counts,
                                const double* layer_sums, const double* logits,
                                std::optional<double> tokens,
                                bool incomplete) {
  CommittedStep c;
  c.step = step;
  c.incomplete = incomplete;
  uint32_t flags = incomplete ? kStepIncomplete : 0;
  if (info_.last_step.has_value() && step != *info_.last_step + 1) {
    c.gap_before = step - *info_.last_step - 1;
    flags |= kStepAfterGap;
    ++info_.gaps;
    info_.missing_steps += c.gap_before;
  }
  const int m = spec_.num_experts;
  for (int l = 0; l < spec_.num_layers; ++l) {
    const size_t off = static_cast<size_t>(l) * m;
    const double n = tokens.has_value() ? *tokens : layer_sums[l] / spec_.top_k;
    layers_[l].Append(step, n, flags, counts + off, layer_sums[l],
                      logits == nullptr ? nullptr : logits + off);
  }
  info_.tokens += tokens.has_value() ? *tokens : layer_sums[0] / spec_.top_k;
  ++info_.committed_steps;
  if (!info_.first_step.has_value()) info_.first_step = step;
  info_.last_step = step;
  if (incomplete) ++info_.incomplete_steps;
  // Overload: keep at most coalesce_lag_ steps waiting to be analysed one by
  // one; older ones are summed into the coalesced block (while they are
  // still in the ring, since coalesce_lag_ < the ring's capacity).
  // (A job without analysis has nothing to fold.)
  while (has_analysis_ && info_.committed_steps - fetch_index_ > coalesce_lag_) {
    FoldOldestLocked();
  }
  last_committed_step_.store(step, std::memory_order_relaxed);
  committed_count_.store(info_.committed_steps, std::memory_order_seq_cst);
  return c;
}

void Job::FoldOldestLocked() {
  const int num_layers = spec_.num_layers;
  const int m = spec_.num_experts;
  if (!block_.has_value()) {
    CoalescedBlock& b = block_.emplace();
    b.begin_index = fetch_index_;
    const size_t n = static_cast<size_t>(num_layers) * m;
    b.counts.assign(n, 0.0);
    b.logit_sums.assign(n, 0.0);
    b.assignments.assign(num_layers, 0.0);
    b.tokens.assign(num_layers, 0.0);
    b.logit_weights.assign(num_layers, 0.0);
    b.all_logits.assign(num_layers, 1);
  }
  CoalescedBlock& b = *block_;
  const int age = static_cast<int>(info_.committed_steps - 1 - fetch_index_);
  b.last_step = layers_[0].Recent(age).step;
  for (int l = 0; l < num_layers; ++l) {
    const StepView v = layers_[l].Recent(age);
    const size_t off = static_cast<size_t>(l) * m;
    b.tokens[l] += v.tokens;
    if (v.logits.empty()) b.all_logits[l] = 0;
    if (!(v.assignments > 0)) continue;
    b.assignments[l] += v.assignments;
    double* acc = b.counts.data() + off;
    const float* p = v.proportions.data();
    for (int e = 0; e < m; ++e) acc[e] += p[e] * v.assignments;
    if (!v.logits.empty()) {
      const double w = v.assignments + kLogitWeightFloor;
      b.logit_weights[l] += w;
      double* z = b.logit_sums.data() + off;
      for (int e = 0; e < m; ++e) z[e] += w * v.logits[e];
    }
  }
  ++b.num_steps;
  ++fetch_index_;
  coalesced_count_.fetch_add(1, std::memory_order_relaxed);
}

bool Job::FetchLocked() {
  const int64_t committed = info_.committed_steps;
  if (fetch_index_ >= committed) return false;
  const int num_layers = spec_.num_layers;
  const int m = spec_.num_experts;
  AnalysisStep& s = step_;
  if (!has_analysis_) {
    // Forecasting and health off: nothing reads the steps; account for all
    // of them at once.
    s.step = *info_.last_step;
    s.num_steps = committed - fetch_index_;
    s.take_origins = true;
    std::fill(s.assignments.begin(), s.assignments.end(), 0.0);
    fetch_index_ = committed;
    return true;
  }
  if (block_.has_value()) {
    // The block always precedes the steps still waiting one by one.
    CoalescedBlock& b = *block_;
    s.step = b.last_step;
    s.num_steps = b.num_steps;
    s.take_origins = false;
    for (int l = 0; l < num_layers; ++l) {
      const size_t off = static_cast<size_t>(l) * m;
      const double a = b.assignments[l];
      const double inv = a > 0 ? 1.0 / a : 0.0;
      for (int e = 0; e < m; ++e) s.proportions[off + e] = b.counts[off + e] * inv;
      s.assignments[l] = a;
      s.tokens[l] = b.tokens[l];
      s.has_logits[l] = b.all_logits[l] && b.logit_weights[l] > 0;
      if (s.has_logits[l]) {
        const double iw = 1.0 / b.logit_weights[l];
        for (int e = 0; e < m; ++e) s.logits[off + e] = b.logit_sums[off + e] * iw;
      }
    }
    block_.reset();
    return true;
  }
  const int age = static_cast<int>(committed - 1 - fetch_index_);
  s.num_steps = 1;
  s.take_origins = committed - fetch_index_ <= shed_lag_;
  for (int l = 0; l < num_layers; ++l) {
    const StepView v = layers_[l].Recent(age);
    const size_t off = static_cast<size_t>(l) * m;
    s.step = v.step;
    const float* p = v.proportions.data();
    double* out = s.proportions.data() + off;
    for (int e = 0; e < m; ++e) out[e] = p[e];
    s.assignments[l] = (v.flags & kStepNoAssignments) ? 0.0 : v.assignments;
    s.tokens[l] = v.tokens;
    s.has_logits[l] = !v.logits.empty();
    if (!v.logits.empty()) {
      double* z = s.logits.data() + off;
      for (int e = 0; e < m; ++e) z[e] = v.logits[e];
    }
  }
  ++fetch_index_;
  return true;
}

void Job::Probe(AnalysisProbe::Kind kind, int64_t step, int layer) const {
  if (!probe_) return;
  AnalysisProbe p;
  p.kind = kind;
  p.job_id = &spec_.job_id;
  p.step = step;
  p.layer = layer;
  probe_(p);
}

bool Job::AnalyseOne(AnalysisStage* stage, bool* parked) {
  MutexLock alock(&amu_);
  if (parked_) return false;
  {
    MutexLock lock(&mu_);
    if (!FetchLocked()) return false;
  }
  Probe(AnalysisProbe::Kind::kStep, step_.step, -1);
  if (!step_.take_origins && step_.num_steps == 1) {
    scoring_shed_count_.fetch_add(1, std::memory_order_relaxed);
  }
  analyzer_->ObserveStep(step_);
  std::vector<HealthMonitor::DueWindow>& due = analyzer_->due_windows();
  const std::vector<Predictor*>& refits = analyzer_->due_refits();
  if (due.empty() && refits.empty()) {
    analyzer_->FinishStep({});
    Completed();
    return true;
  }
  const HealthOptions* options = &analyzer_->health_options();
  if (stage == nullptr) {
    std::vector<HealthWindow> fitted;
    fitted.reserve(due.size());
    for (const HealthMonitor::DueWindow& w : due) {
      Probe(AnalysisProbe::Kind::kWindowFit, w.step, w.layer);
      fitted.push_back(HealthMonitor::FitWindow(w, *options));
    }
    for (Predictor* p : refits) {
      Probe(AnalysisProbe::Kind::kRefit, step_.step, -1);
      p->Refresh();
    }
    analyzer_->FinishStep(std::move(fitted));
    Completed();
    return true;
  }
  // The fits and refits go to the periodic threads; the job waits for them
  // (parked, not holding a step thread) and the last one finishes the step.
  parked_ = true;
  refitting_ = !refits.empty();
  *parked = true;
  fitted_.assign(due.size(), HealthWindow());
  fits_left_.store(static_cast<int>(due.size() + refits.size()),
                   std::memory_order_release);
  std::shared_ptr<Job> self = shared_from_this();
  for (size_t i = 0; i < due.size(); ++i) {
    const HealthMonitor::DueWindow* w = &due[i];
    stage->SchedulePeriodic(
        [self, i, w, options] { self->RunFit(i, w, options); });
  }
  const int64_t step = step_.step;
  for (Predictor* p : refits) {
    stage->SchedulePeriodic([self, p, step] { self->RunRefit(p, step); });
  }
  return true;
}

void Job::RunFit(size_t index, const HealthMonitor::DueWindow* due,
                 const HealthOptions* options) {
  Probe(AnalysisProbe::Kind::kWindowFit, due->step, due->layer);
  fitted_[index] = HealthMonitor::FitWindow(*due, *options);
  PeriodicTaskDone();
}

void Job::RunRefit(Predictor* predictor, int64_t step) {
  // The step is open and parked: nothing else touches this predictor (the
  // analysis waits for the last task; answers wait while refitting_).
  Probe(AnalysisProbe::Kind::kRefit, step, -1);
  predictor->Refresh();
  PeriodicTaskDone();
}

void Job::PeriodicTaskDone() {
  if (fits_left_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  {
    MutexLock alock(&amu_);
    analyzer_->FinishStep(std::move(fitted_));
    fitted_.clear();
    parked_ = false;
    if (refitting_) {
      refitting_ = false;
      refits_done_.SignalAll();
    }
    Completed();
  }
  Reschedule(*stage_);
}

void Job::AwaitRefitsLocked() const {
  while (refitting_) refits_done_.Wait(&amu_);
}

void Job::Completed() {
  last_analysed_step_.store(analyzer_->last_step().value_or(-1),
                            std::memory_order_relaxed);
  analysed_count_.store(analyzer_->analysed_steps(), std::memory_order_seq_cst);
  if (waiters_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(wait_mu_);
    wait_cv_.notify_all();
  }
}

bool Job::HasWork() const {
  return committed_count_.load(std::memory_order_seq_cst) >
         analysed_count_.load(std::memory_order_seq_cst);
}

void Job::AfterCommit() {
  if (stage_ != nullptr) {
    Wake();
    return;
  }
  bool parked = false;
  while (AnalyseOne(nullptr, &parked)) {
  }
}

void Job::Wake() {
  if (!scheduled_.exchange(true, std::memory_order_seq_cst)) {
    stage_->Schedule(shared_from_this());
  }
}

void Job::RunSteps(AnalysisStage& stage, int max_steps) {
  for (int i = 0; i < max_steps; ++i) {
    bool parked = false;
    if (!AnalyseOne(&stage, &parked)) break;
    if (parked) return;  // the last fit re-schedules the job
  }
  Reschedule(stage);
}

void Job::Reschedule(AnalysisStage& stage) {
  if (HasWork()) {
    stage.Schedule(shared_from_this());
    return;
  }
  scheduled_.store(false, std::memory_order_seq_cst);
  // A step committed between the check and the store found scheduled_ set
  // and did not schedule: look again.
  if (HasWork() && !scheduled_.exchange(true, std::memory_order_seq_cst)) {
    stage.Schedule(shared_from_this());
  }
}

AnalysisProgress Job::Progress() const {
  AnalysisProgress p;
  p.as_of_step = last_analysed_step_.load(std::memory_order_relaxed);
  p.committed_step = last_committed_step_.load(std::memory_order_relaxed);
  p.lag_steps = std::max<int64_t>(0, committed_count_.load() - analysed_count_.load());
  p.scoring_shed_steps = scoring_shed_count_.load(std::memory_order_relaxed);
  p.coalesced_steps = coalesced_count_.load(std::memory_order_relaxed);
  return p;
}

AnalysisProgress Job::AnswerProgressLocked() const {
  AnalysisProgress p = Progress();
  p.as_of_step = analyzer_->last_step().value_or(-1);
  p.lag_steps = std::max<int64_t>(0, committed_count_.load() - analyzer_->analysed_steps());
  return p;
}

absl::StatusOr<AnalysisProgress> Job::AwaitAnalysis(
    const Freshness& freshness) const {
  if (!freshness.allow_stale) {
    const int64_t target = committed_count_.load(std::memory_order_seq_cst);
    auto reached = [&] {
      return analysed_count_.load(std::memory_order_seq_cst) >= target;
    };
    if (!reached()) {
      std::unique_lock<std::mutex> lock(wait_mu_);
      waiters_.fetch_add(1, std::memory_order_seq_cst);
      bool ok = true;
      if (freshness.deadline == absl::InfiniteFuture()) {
        wait_cv_.wait(lock, reached);
      } else {
        ok = wait_cv_.wait_until(lock, absl::ToChronoTime(freshness.deadline),
                                 reached);
      }
      waiters_.fetch_sub(1, std::memory_order_seq_cst);
      if (!ok) {
        const AnalysisProgress p = Progress();
        return absl::DeadlineExceededError(absl::StrCat(
            "job '", spec_.job_id, "': analysis reached step ", p.as_of_step,
            " (", analysed_count_.load(), " of the ", target,
            " steps committed before the call) by the deadline; ask with "
            "allow_stale for an answer that does not wait"));
      }
    }
  }
  return Progress();
}

std::vector<CommittedStep> Job::ExpirePending(absl::Time now) {
  std::vector<CommittedStep> out;
  {
    MutexLock lock(&mu_);
    DrainLocked(now, /*force=*/false, &out);
  }
  if (!out.empty()) AfterCommit();
  return out;
}

std::vector<CommittedStep> Job::FlushPending() {
  std::vector<CommittedStep> out;
  {
    MutexLock lock(&mu_);
    DrainLocked(std::nullopt, /*force=*/true, &out);
  }
  if (!out.empty()) AfterCommit();
  return out;
}

JobInfo Job::Info() const {
  JobInfo info;
  {
    MutexLock lock(&mu_);
    info = info_;
    info.pending_steps = static_cast<int64_t>(pending_.size());
    info.history_bytes = 0;
    for (const LayerHistory& h : layers_) info.history_bytes += h.MemoryBytes();
  }
  {
    MutexLock lock(&amu_);
    AwaitRefitsLocked();
    info.forecast_bytes = analyzer_->ForecastBytes();
  }
  const AnalysisProgress p = Progress();
  info.analysed_steps = analysed_count_.load();
  if (p.as_of_step >= 0 || info.analysed_steps > 0) {
    info.last_analysed_step = p.as_of_step;
  }
  info.analysis_lag_steps = std::max<int64_t>(0, info.committed_steps - info.analysed_steps);
  info.scoring_shed_steps = p.scoring_shed_steps;
  info.coalesced_steps = p.coalesced_steps;
  return info;
}

void Job::VisitLayer(int layer,
                     absl::FunctionRef<void(const LayerHistory&)> fn) const {
  MutexLock lock(&mu_);
  fn(layers_[layer]);
}

absl::StatusOr<std::vector<Event>> Job::ReadEvents(
    int64_t after_seq, int max_events, const Freshness& freshness) const {
  if (absl::StatusOr<AnalysisProgress> p = AwaitAnalysis(freshness); !p.ok()) {
    return p.status();
  }
  MutexLock lock(&amu_);
  AwaitRefitsLocked();
  return analyzer_->ReadEvents(after_seq, max_events);
}

absl::StatusOr<StateReport> Job::State(const Freshness& freshness) const {
  if (absl::StatusOr<AnalysisProgress> p = AwaitAnalysis(freshness); !p.ok()) {
    return p.status();
  }
  MutexLock lock(&amu_);
  AwaitRefitsLocked();
  absl::StatusOr<StateReport> report = analyzer_->State(committed_count_.load());
  if (report.ok()) report->analysis = AnswerProgressLocked();
  return report;
}

absl::StatusOr<HealthReport> Job::Health(const Freshness& freshness) const {
  if (absl::StatusOr<AnalysisProgress> p = AwaitAnalysis(freshness); !p.ok()) {
    return p.status();
  }
  MutexLock lock(&amu_);
  AwaitRefitsLocked();
  absl::StatusOr<HealthReport> report = analyzer_->Health();
  if (report.ok()) report->analysis = AnswerProgressLocked();
  return report;
}

absl::StatusOr<std::vector<ForecastScore>> Job::Scores(
    const Freshness& freshness) const {
  if (absl::StatusOr<AnalysisProgress> p = AwaitAnalysis(freshness); !p.ok()) {
    return p.status();
  }
  MutexLock lock(&amu_);
  AwaitRefitsLocked();
  return analyzer_->Scores();
}

void Job::VisitBank(int layer, absl::FunctionRef<void(ForecastBank&)> fn) {
  (void)AwaitAnalysis(Freshness());
  MutexLock lock(&amu_);
  AwaitRefitsLocked();
  analyzer_->VisitBank(layer, fn);
}

absl::StatusOr<ForecastResult> Job::Forecast(const ForecastRequest& request) {
  if (absl::StatusOr<AnalysisProgress> p = AwaitAnalysis(request.freshness);
      !p.ok()) {
    return p.status();
  }
  MutexLock lock(&amu_);
  AwaitRefitsLocked();
  absl::StatusOr<ForecastResult> result =
      analyzer_->Forecast(request, max_path_steps_, committed_count_.load());
  if (result.ok()) result->analysis = AnswerProgressLocked();
  return result;
}

}  // namespace moecast::internal
