#include "engine/durability/durable_engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/clock.h"
#include "engine/durability/wal_records.h"

namespace moecast::durability {
namespace {

// "write-ahead log: <cause>", keeping the code (RESOURCE_EXHAUSTED for a full
// disk, UNAVAILABLE for I/O errors).
absl::Status WalError(const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("write-ahead log: ", s.message()));
}

}  // namespace

DurableEngine::DurableEngine(const EngineOptions& options, const DurableOptions& durable,
                             Env* env, Clock* base_clock)
    : Engine(options),
      durable_(durable),
      env_(env),
      wal_dir_(durable.dir + "/wal"),
      clock_(base_clock),
      store_(env, durable.dir + "/snapshots") {}

DurableEngine::~DurableEngine() { (void)Close(); }

absl::StatusOr<std::unique_ptr<DurableEngine>> DurableEngine::Open(
    const EngineOptions& options, const DurableOptions& durable) {
  if (durable.dir.empty()) {
    return absl::InvalidArgumentError("DurableOptions.dir is empty");
  }
  if (durable.snapshots_kept < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DurableOptions.snapshots_kept = ", durable.snapshots_kept, " must be >= 2"));
  }
  if (durable.sync == WalSyncMode::kInterval &&
      durable.sync_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("DurableOptions.sync_interval must be > 0");
  }
  Env* env = durable.env != nullptr ? durable.env : Env::Default();
  DurableOptions d = durable;
  while (d.dir.size() > 1 && d.dir.back() == '/') d.dir.pop_back();
  for (const std::string& dir : {d.dir, d.dir + "/wal", d.dir + "/snapshots"}) {
    if (absl::Status s = env->CreateDir(dir); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("data directory: ", s.message()));
    }
  }
  Clock* base = options.clock != nullptr ? options.clock : Clock::Real();
  std::unique_ptr<DurableEngine> engine(new DurableEngine(options, d, env, base));
  absl::StatusOr<std::unique_ptr<FileLock>> lock = env->LockFile(d.dir + "/LOCK");
  if (!lock.ok()) return lock.status();
  engine->lock_ = *std::move(lock);
  EngineOptions inner = options;
  inner.clock = &engine->clock_;
  if (absl::Status s = engine->Recover(inner); !s.ok()) return s;
  return engine;
}

absl::Status DurableEngine::Recover(const EngineOptions& inner_options) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<Engine>> inner = Engine::Create(inner_options);
  if (!inner.ok()) return inner.status();
  inner_ = *std::move(inner);
  // An engine without snapshots answers UNIMPLEMENTED; one with them refuses
  // empty bytes (DATA_LOSS).
  snapshots_supported_ = !absl::IsUnimplemented(inner_->RestoreJob(""));

  absl::StatusOr<std::vector<uint64_t>> segments = ListSegments(env_, wal_dir_);
  if (!segments.ok()) return segments.status();
  absl::StatusOr<std::vector<uint64_t>> sets = store_.List();
  if (!sets.ok()) return sets.status();
  if (!sets->empty()) next_set_ = sets->front() + 1;

  uint64_t from = segments->empty() ? 1 : segments->front();
  bool restored = false;
  if (snapshots_supported_) {
    for (uint64_t number : *sets) {
      absl::StatusOr<SnapshotSet> set = store_.Load(number);
      absl::Status s = set.status();
      if (s.ok()) {
        set_segments_[number] = set->wal_segment;
        for (const auto& [id, bytes] : set->jobs) {
          s = inner_->RestoreJob(bytes);
          if (!s.ok()) {
            s = absl::Status(s.code(),
                             absl::StrCat("restoring job '", id, "': ", s.message()));
            break;
          }
        }
      }
      if (s.ok()) {
        report_.snapshot_set = static_cast<int64_t>(number);
        report_.jobs_restored = static_cast<int64_t>(set->jobs.size());
        from = set->wal_segment;
        restored = true;
        break;
      }
      report_.warnings.push_back(
          absl::StrCat("snapshot set ", number, " skipped: ", s.ToString()));
      absl::StatusOr<std::unique_ptr<Engine>> fresh = Engine::Create(inner_options);
      if (!fresh.ok()) return fresh.status();
      inner_ = *std::move(fresh);
    }
  } else if (!sets->empty()) {
    report_.warnings.push_back(absl::StrCat(
        sets->size(), " snapshot set(s) ignored: this engine cannot restore snapshots "
                      "(RestoreJob is unimplemented); replaying the whole log"));
  }
  if (!restored && !segments->empty() && segments->front() != 1) {
    return absl::DataLossError(absl::StrCat(
        "data directory '", durable_.dir, "': the log starts at segment ",
        segments->front(),
        " (earlier segments were deleted after snapshots) and no snapshot set could be "
        "restored; move the directory aside to start empty"));
  }
  std::vector<uint64_t> replay;
  for (uint64_t n : *segments) {
    if (n >= from) replay.push_back(n);
  }
  if (restored && !replay.empty() && replay.front() != from) {
    return absl::DataLossError(absl::StrCat("data directory '", durable_.dir,
                                            "': log segment ", from,
                                            " that the snapshot set continues with is missing"));
  }
  if (absl::Status s = ReplaySegments(env_, wal_dir_, replay, *inner_, clock_, &report_);
      !s.ok()) {
    return s;
  }
  report_.elapsed = absl::Now() - start;
  IndexJobs();

  WalWriterOptions w;
  w.segment_bytes = durable_.segment_bytes;
  w.sync = durable_.sync;
  w.sync_interval = durable_.sync_interval;
  uint64_t next = segments->empty() ? 1 : segments->back() + 1;
  if (restored) next = std::max<uint64_t>(next, from);
  absl::StatusOr<std::unique_ptr<WalWriter>> wal =
      WalWriter::Create(env_, wal_dir_, next, w);
  if (!wal.ok()) return WalError(wal.status());
  wal_ = *std::move(wal);
  return absl::OkStatus();
}

void DurableEngine::IndexJobs() {
  std::unique_lock<std::shared_mutex> lock(registry_mu_);
  jobs_.clear();
  for (const std::string& id : inner_->ListJobs()) {
    auto entry = std::make_shared<JobEntry>();
    absl::StatusOr<JobInfo> info = inner_->GetJobInfo(id);
    entry->multi_source = info.ok() && info->spec.num_sources > 1;
    jobs_.emplace(id, std::move(entry));
  }
}

absl::Status DurableEngine::Writable() const {
  {
    std::lock_guard<std::mutex> lock(failed_mu_);
    if (!failed_.ok()) return failed_;
  }
  return WalError(wal_->status());
}

absl::Status DurableEngine::FailStop(const absl::Status& cause) {
  const absl::Status s = WalError(cause);
  std::lock_guard<std::mutex> lock(failed_mu_);
  if (failed_.ok()) {
    failed_ = absl::UnavailableError(absl::StrCat(
        s.message(), "; a mutation was applied in memory but could not be logged, so "
                     "mutations are refused until the server restarts and recovers from "
                     "the log"));
  }
  return absl::Status(s.code(), absl::StrCat(s.message(), " (not acknowledged)"));
}

absl::Status DurableEngine::Commit() {
  if (absl::Status s = Writable(); !s.ok()) return s;
  absl::Status s = wal_->Commit();
  if (!s.ok()) return FailStop(s);
  return s;
}

absl::Status DurableEngine::AfterWrite() {
  return durable_.sync_each_call ? Commit() : absl::OkStatus();
}

std::shared_ptr<DurableEngine::JobEntry> DurableEngine::FindJob(
    absl::string_view job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second;
}

absl::Status DurableEngine::RegisterJob(const JobSpec& spec) {
  {
    std::unique_lock<std::shared_mutex> reg(registry_mu_);
    if (absl::Status s = Writable(); !s.ok()) return s;
    const int64_t t = NowNanos();
    const std::string payload = EncodeRegisterJob(t, spec);
    const uint64_t bytes = WalWriter::RecordBytes(payload.size());
    if (absl::Status s = wal_->Reserve(bytes); !s.ok()) return WalError(s);
    absl::Status s;
    {
      ReplayClock::Pin pin(&clock_, absl::FromUnixNanos(t));
      s = inner_->RegisterJob(spec);
    }
    if (!s.ok()) {
      wal_->Unreserve(bytes);
      return s;
    }
    auto entry = std::make_shared<JobEntry>();
    entry->multi_source = spec.num_sources > 1;
    jobs_[spec.job_id] = std::move(entry);
    if (absl::Status a = wal_->Append(RecordType::kRegisterJob, payload, bytes); !a.ok()) {
      return FailStop(a);
    }
  }
  return AfterWrite();
}

absl::Status DurableEngine::DeleteJob(absl::string_view job_id) {
  {
    std::unique_lock<std::shared_mutex> reg(registry_mu_);
    if (absl::Status s = Writable(); !s.ok()) return s;
    const int64_t t = NowNanos();
    const std::string payload = EncodeJobOnly(t, job_id);
    const uint64_t bytes = WalWriter::RecordBytes(payload.size());
    if (absl::Status s = wal_->Reserve(bytes); !s.ok()) return WalError(s);
    absl::Status s;
    {
      ReplayClock::Pin pin(&clock_, absl::FromUnixNanos(t));
      s = inner_->DeleteJob(job_id);
    }
    if (!s.ok()) {
      wal_->Unreserve(bytes);
      return s;
    }
    jobs_.erase(job_id);
    if (absl::Status a = wal_->Append(RecordType::kDeleteJob, payload, bytes); !a.ok()) {
      return FailStop(a);
    }
  }
  return AfterWrite();
}

absl::Status DurableEngine::RestoreJob(absl::string_view snapshot) {
  {
    std::unique_lock<std::shared_mutex> reg(registry_mu_);
    if (absl::Status s = Writable(); !s.ok()) return s;
    const std::vector<std::string> before = inner_->ListJobs();
    const int64_t t = NowNanos();
    const std::string payload = EncodeRestoreJob(t, snapshot);
    const uint64_t bytes = WalWriter::RecordBytes(payload.size());
    if (absl::Status s = wal_->Reserve(bytes); !s.ok()) return WalError(s);
    absl::Status s;
    {
      ReplayClock::Pin pin(&clock_, absl::FromUnixNanos(t));
      s = inner_->RestoreJob(snapshot);
    }
    if (!s.ok()) {
      wal_->Unreserve(bytes);
      return s;
    }
    for (const std::string& id : inner_->ListJobs()) {
      if (std::binary_search(before.begin(), before.end(), id)) continue;
      auto entry = std::make_shared<JobEntry>();
      absl::StatusOr<JobInfo> info = inner_->GetJobInfo(id);
      entry->multi_source = info.ok() && info->spec.num_sources > 1;
      jobs_[id] = std::move(entry);
    }
    if (absl::Status a = wal_->Append(RecordType::kRestoreJob, payload, bytes); !a.ok()) {
      return FailStop(a);
    }
  }
  return AfterWrite();
}

absl::StatusOr<IngestResult> DurableEngine::Ingest(absl::string_view job_id,
                                                   const StepInput& input) {
  absl::StatusOr<IngestResult> r;
  {
    std::shared_lock<std::shared_mutex> reg(registry_mu_);
    std::shared_ptr<JobEntry> job = FindJob(job_id);
    if (job == nullptr) return inner_->Ingest(job_id, input);  // NOT_FOUND
    std::lock_guard<std::mutex> job_lock(job->mu);
    if (absl::Status s = Writable(); !s.ok()) return s;
    const uint64_t bytes = WalWriter::RecordBytes(IngestPayloadBytes(job_id, input));
    if (absl::Status s = wal_->Reserve(bytes); !s.ok()) return WalError(s);
    // A refused multi-source part may still have committed timed-out steps
    // (the engine drains them first); that side effect must be logged.
    int64_t committed_before = -1;
    if (job->multi_source) {
      absl::StatusOr<JobInfo> info = inner_->GetJobInfo(job_id);
      if (info.ok()) committed_before = info->committed_steps;
    }
    const int64_t t = NowNanos();
    {
      ReplayClock::Pin pin(&clock_, absl::FromUnixNanos(t));
      r = inner_->Ingest(job_id, input);
    }
    bool log;
    if (r.ok()) {
      log = r->outcome != IngestOutcome::kDuplicate || !r->committed.empty();
    } else {
      log = false;
      if (committed_before >= 0) {
        absl::StatusOr<JobInfo> info = inner_->GetJobInfo(job_id);
        log = info.ok() && info->committed_steps != committed_before;
      }
    }
    if (!log) {
      wal_->Unreserve(bytes);
      return r;
    }
    if (absl::Status a =
            wal_->Append(RecordType::kIngest, EncodeIngest(t, job_id, input), bytes);
        !a.ok()) {
      return FailStop(a);
    }
  }
  if (absl::Status s = AfterWrite(); !s.ok()) return s;
  return r;
}

absl::StatusOr<std::vector<CommittedStep>> DurableEngine::FlushPending(
    absl::string_view job_id) {
  absl::StatusOr<std::vector<CommittedStep>> r;
  {
    std::shared_lock<std::shared_mutex> reg(registry_mu_);
    std::shared_ptr<JobEntry> job = FindJob(job_id);
    if (job == nullptr) return inner_->FlushPending(job_id);  // NOT_FOUND
    std::lock_guard<std::mutex> job_lock(job->mu);
    if (absl::Status s = Writable(); !s.ok()) return s;
    const int64_t t = NowNanos();
    const std::string payload = EncodeJobOnly(t, job_id);
    const uint64_t bytes = WalWriter::RecordBytes(payload.size());
    if (absl::Status s = wal_->Reserve(bytes); !s.ok()) return WalError(s);
    {
      ReplayClock::Pin pin(&clock_, absl::FromUnixNanos(t));
      r = inner_->FlushPending(job_id);
    }
    if (!r.ok()) {
      wal_->Unreserve(bytes);
      return r;
    }
    // Logged even when nothing was pending: the call refreshes the job's
    // idle time, which expiry depends on.
    if (absl::Status a = wal_->Append(RecordType::kFlushPending, payload, bytes); !a.ok()) {
      return FailStop(a);
    }
  }
  if (absl::Status s = AfterWrite(); !s.ok()) return s;
  return r;
}

int64_t DurableEngine::Poll() {
  int64_t committed = 0;
  {
    std::unique_lock<std::shared_mutex> reg(registry_mu_);
    if (!Writable().ok()) return 0;  // nothing may change that cannot be logged
    const int64_t t = NowNanos();
    const std::string payload = EncodePoll(t);
    const uint64_t bytes = WalWriter::RecordBytes(payload.size());
    if (!wal_->Reserve(bytes).ok()) return 0;
    {
      ReplayClock::Pin pin(&clock_, absl::FromUnixNanos(t));
      committed = inner_->Poll();
    }
    if (committed == 0) {
      wal_->Unreserve(bytes);
      return 0;
    }
    if (absl::Status a = wal_->Append(RecordType::kPoll, payload, bytes); !a.ok()) {
      (void)FailStop(a);
      return committed;
    }
  }
  (void)Commit();
  return committed;
}

std::vector<std::string> DurableEngine::ExpireIdleJobs() {
  std::vector<std::string> expired;
  if (options().idle_job_expiry == absl::InfiniteDuration()) return expired;
  {
    std::unique_lock<std::shared_mutex> reg(registry_mu_);
    if (!Writable().ok()) return expired;
    const int64_t t = NowNanos();
    // Upper bound of the record: every job id (<= 128 characters) expired.
    const uint64_t bytes = WalWriter::RecordBytes(12 + jobs_.size() * (4 + 128));
    if (!wal_->Reserve(bytes).ok()) return expired;
    {
      ReplayClock::Pin pin(&clock_, absl::FromUnixNanos(t));
      expired = inner_->ExpireIdleJobs();
    }
    if (expired.empty()) {
      wal_->Unreserve(bytes);
      return expired;
    }
    for (const std::string& id : expired) jobs_.erase(id);
    if (absl::Status a = wal_->Append(RecordType::kExpireJobs, EncodeExpireJobs(t, expired),
                                      bytes);
        !a.ok()) {
      (void)FailStop(a);
      return expired;
    }
  }
  (void)Commit();
  return expired;
}

absl::StatusOr<uint64_t> DurableEngine::Checkpoint() {
  if (!snapshots_supported_) {
    return absl::UnimplementedError(
        "the engine cannot restore snapshots (RestoreJob is unimplemented): no snapshot "
        "taken; recovery replays the whole log");
  }
  std::lock_guard<std::mutex> one(checkpoint_mu_);
  std::vector<std::pair<std::string, std::string>> jobs;
  uint64_t segment = 0;
  {
    std::unique_lock<std::shared_mutex> reg(registry_mu_);
    if (absl::Status s = Writable(); !s.ok()) return s;
    for (const std::string& id : inner_->ListJobs()) {
      absl::StatusOr<std::string> bytes = inner_->SnapshotJob(id);
      if (!bytes.ok()) return bytes.status();
      jobs.emplace_back(id, *std::move(bytes));
    }
    absl::StatusOr<uint64_t> next = wal_->Rotate();
    if (!next.ok()) return WalError(next.status());
    segment = *next;
  }
  const uint64_t number = next_set_++;
  if (absl::Status s = store_.Write(number, segment, jobs); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("snapshot set ", number, ": ", s.message()));
  }
  set_segments_[number] = segment;
  absl::StatusOr<std::vector<uint64_t>> sets = store_.List();
  if (!sets.ok()) return sets.status();
  if (absl::Status s = PruneLocked(*sets); !s.ok()) return s;
  return number;
}

absl::Status DurableEngine::PruneLocked(const std::vector<uint64_t>& sets) {
  // Keep the newest snapshots_kept sets, and the log from the oldest kept
  // set's segment on, so that any kept set can be restored and replayed.
  const size_t keep = static_cast<size_t>(durable_.snapshots_kept);
  for (size_t i = keep; i < sets.size(); ++i) {
    if (absl::Status s = store_.Remove(sets[i]); !s.ok()) return s;
    set_segments_.erase(sets[i]);
  }
  if (sets.size() < keep) return absl::OkStatus();  // the whole log may still be needed
  const uint64_t oldest_kept = sets[keep - 1];
  auto it = set_segments_.find(oldest_kept);
  if (it == set_segments_.end()) {
    absl::StatusOr<SnapshotSet> set = store_.Load(oldest_kept);
    if (!set.ok()) return absl::OkStatus();  // keep the log; recovery may need it
    it = set_segments_.emplace(oldest_kept, set->wal_segment).first;
  }
  absl::StatusOr<std::vector<uint64_t>> segments = ListSegments(env_, wal_dir_);
  if (!segments.ok()) return segments.status();
  bool removed = false;
  for (uint64_t n : *segments) {
    if (n >= it->second) break;
    if (absl::Status s = env_->RemoveFile(absl::StrCat(wal_dir_, "/", SegmentFileName(n)));
        !s.ok()) {
      return s;
    }
    removed = true;
  }
  if (removed) return env_->SyncDir(wal_dir_);
  return absl::OkStatus();
}

absl::Status DurableEngine::Close() {
  if (wal_ == nullptr) return absl::OkStatus();
  std::unique_lock<std::shared_mutex> reg(registry_mu_);
  return WalError(wal_->Close());
}

std::vector<std::string> DurableEngine::ListJobs() const { return inner_->ListJobs(); }

absl::StatusOr<JobInfo> DurableEngine::GetJobInfo(absl::string_view job_id) const {
  return inner_->GetJobInfo(job_id);
}

absl::Status DurableEngine::VisitHistory(
    absl::string_view job_id, int layer,
    absl::FunctionRef<void(const LayerHistory&)> fn) const {
  return inner_->VisitHistory(job_id, layer, fn);
}

absl::StatusOr<ForecastResult> DurableEngine::Forecast(absl::string_view job_id,
                                                       const ForecastRequest& request) {
  return inner_->Forecast(job_id, request);
}

absl::StatusOr<std::vector<ForecastScore>> DurableEngine::ForecastScores(
    absl::string_view job_id, const Freshness& freshness) const {
  return inner_->ForecastScores(job_id, freshness);
}

absl::StatusOr<StateReport> DurableEngine::GetState(absl::string_view job_id,
                                                    const Freshness& freshness) const {
  return inner_->GetState(job_id, freshness);
}

absl::StatusOr<std::vector<Event>> DurableEngine::ReadEvents(
    absl::string_view job_id, int64_t after_seq, int max_events,
    const Freshness& freshness) const {
  return inner_->ReadEvents(job_id, after_seq, max_events, freshness);
}

absl::StatusOr<AnalysisProgress> DurableEngine::AwaitAnalysis(
    absl::string_view job_id, const Freshness& freshness) const {
  return inner_->AwaitAnalysis(job_id, freshness);
}

absl::StatusOr<PlacementRecommendation> DurableEngine::RecommendPlacement(
    absl::string_view job_id, const PlacementRequest& request) {
  return inner_->RecommendPlacement(job_id, request);
}

absl::StatusOr<HealthReport> DurableEngine::Health(absl::string_view job_id,
                                                   const Freshness& freshness) const {
  return inner_->Health(job_id, freshness);
}

absl::StatusOr<std::string> DurableEngine::SnapshotJob(absl::string_view job_id) const {
  return inner_->SnapshotJob(job_id);
}

}  // namespace moecast::durability
