// DurableEngine: an Engine whose accepted mutations survive a crash. It wraps
// a plain Engine, logs every mutation that changed state to a write-ahead log
// (wal_writer.h) in a data directory, takes periodic snapshot sets
// (snapshot_store.h) when the engine can restore them, and on Open recovers
// the state the directory holds (recovery.h).
//
//   DurableOptions d;
//   d.dir = "/var/lib/moecast";
//   d.sync = WalSyncMode::kBatch;
//   MOECAST_ASSIGN_OR_RETURN(std::unique_ptr<DurableEngine> engine,
//                            DurableEngine::Open(engine_options, d));
//   engine->recovery().Summary();          // what Open recovered
//   engine->Ingest("job-a", step);         // logged, then acknowledged
//   engine->Checkpoint();                  // snapshots + log truncation
//
// What is logged: RegisterJob, DeleteJob, RestoreJob, every Ingest that
// changed the job (committed or pending; not duplicates or rejected steps,
// except a rejected multi-source step whose call committed timed-out steps,
// logged for that side effect and refused again on replay), FlushPending,
// and the engine's own time-driven mutations: a Poll that committed steps and
// ExpireIdleJobs that deleted jobs. Each record carries the engine clock's
// time at which it was applied; the inner engine reads time through a
// ReplayClock pinned to that time, and replay pins it again, so replay
// reproduces the same commits.
//
// Order: validate-and-apply, then log, atomically per job. The engine
// validates a step only by applying it, and rejected steps must not be
// logged, so the step is applied first and logged after, both under the
// job's lock in this class (a shared/exclusive lock orders per-job calls
// against Register/Delete/Poll/Expire/Checkpoint), so the log order is the
// apply order for every job. Before applying, space for the record is
// reserved on disk (WalWriter::Reserve): a full disk refuses the call with
// RESOURCE_EXHAUSTED "write-ahead log: no space left on device (...)" before
// anything is applied, and the call may be retried once space is freed.
// If the append or the sync fails after the engine applied the mutation (an
// I/O error; or ENOSPC where the file system cannot reserve space), the call
// returns the error and the engine fails stop: every later mutation is
// refused (UNAVAILABLE) until a restart recovers from the log; reads keep
// working. A call is acknowledged (returns OK) only after its record is in
// the log and, under kBatch with sync_each_call, fdatasynced. Nothing
// acknowledged is lost: an acknowledged record was appended before the
// acknowledgement, and appends are never taken back.
//
// Not logged (so not recovered exactly): counters of duplicate and rejected
// calls, and the idle-time refresh those calls cause.
//
// Thread-safety: thread-safe, as Engine. Calls on different jobs run in
// parallel (their appends are serialized by the log); Poll, ExpireIdleJobs,
// RegisterJob, DeleteJob and the cut of Checkpoint run alone.
#ifndef MOECAST_ENGINE_DURABILITY_DURABLE_ENGINE_H_
#define MOECAST_ENGINE_DURABILITY_DURABLE_ENGINE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/durability/env.h"
#include "engine/durability/recovery.h"
#include "engine/durability/replay_clock.h"
#include "engine/durability/snapshot_store.h"
#include "engine/durability/wal_writer.h"
#include "engine/engine.h"

namespace moecast::durability {

struct DurableOptions {
  // The data directory: created if absent (its parent must exist). Holds
  // LOCK, wal/ and snapshots/. It must not be a symbolic link (pass the
  // resolved path): everything is created inside it under generated names,
  // and symbolic links found inside are refused, not followed.
  std::string dir;
  // When an acknowledged call is durable (wal_writer.h, docs/RELIABILITY.md).
  WalSyncMode sync = WalSyncMode::kBatch;
  // kInterval: the background fdatasync period (> 0).
  absl::Duration sync_interval = absl::Milliseconds(10);
  // True: each mutating call does what the sync policy requires (Commit)
  // before returning. False: the caller calls Commit() before acknowledging
  // (moecastd does once per RPC, so a batch of steps shares one fdatasync).
  bool sync_each_call = true;
  // Log segment size, bytes (see WalWriterOptions).
  uint64_t segment_bytes = uint64_t{64} << 20;
  // Snapshot sets kept (>= 2, so that a corrupt newest set falls back to the
  // previous one; the log is kept from the oldest kept set on).
  int snapshots_kept = 2;
  // The file system. Null: Env::Default().
  Env* env = nullptr;
};

class DurableEngine final : public Engine {
 public:
  // Opens (creating if needed) the data directory, recovers its state into a
  // new engine made with `options`, and starts a new log segment.
  // INVALID_ARGUMENT for bad options; FAILED_PRECONDITION if another process
  // holds the directory or it is a symbolic link; DATA_LOSS when the log is
  // corrupt before its last segment or the log's start was deleted and no
  // snapshot set can be restored; errors of the file system otherwise.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<DurableEngine>> Open(
      const EngineOptions& options, const DurableOptions& durable);

  ~DurableEngine() override;  // Close()s.

  // What Open recovered.
  const RecoveryReport& recovery() const { return report_; }

  // Whether the engine implements RestoreJob (then Checkpoint writes
  // snapshot sets and deletes log segments they cover).
  bool snapshots_supported() const { return snapshots_supported_; }

  // Makes this engine's logged mutations durable as the sync policy
  // requires before acknowledging (kBatch: fdatasync, shared with concurrent
  // callers). The fail-stop error, if any.
  [[nodiscard]] absl::Status Commit();

  // Writes a snapshot set of every job (consistent as of one point: it runs
  // alone for the SnapshotJob calls) and starts a new log segment, then
  // deletes snapshot sets beyond snapshots_kept and log segments older than
  // the oldest kept set. UNIMPLEMENTED when the engine cannot snapshot or
  // restore (then recovery replays the whole log). Returns the set number.
  [[nodiscard]] absl::StatusOr<uint64_t> Checkpoint();

  // Syncs and closes the log. Later mutations fail. Idempotent.
  absl::Status Close();

  // Bytes appended to the log and fdatasyncs since Open.
  uint64_t wal_bytes() const { return wal_->appended_bytes(); }
  uint64_t wal_syncs() const { return wal_->syncs(); }
  // False where the file system cannot reserve log space ahead (then a full
  // disk is detected after applying, and fails stop).
  bool space_reservation() const { return wal_->allocation_guaranteed(); }

  // Engine.
  absl::Status RegisterJob(const JobSpec& spec) override;
  absl::Status DeleteJob(absl::string_view job_id) override;
  std::vector<std::string> ListJobs() const override;
  absl::StatusOr<JobInfo> GetJobInfo(absl::string_view job_id) const override;
  absl::StatusOr<IngestResult> Ingest(absl::string_view job_id,
                                      const StepInput& input) override;
  absl::StatusOr<std::vector<CommittedStep>> FlushPending(
      absl::string_view job_id) override;
  int64_t Poll() override;
  std::vector<std::string> ExpireIdleJobs() override;
  absl::Status VisitHistory(absl::string_view job_id, int layer,
                            absl::FunctionRef<void(const LayerHistory&)> fn) const override;
  absl::StatusOr<ForecastResult> Forecast(absl::string_view job_id,
                                          const ForecastRequest& request) override;
  using Engine::ForecastScores;
  using Engine::GetState;
  using Engine::Health;
  using Engine::ReadEvents;
  absl::StatusOr<std::vector<ForecastScore>> ForecastScores(
      absl::string_view job_id, const Freshness& freshness) const override;
  absl::StatusOr<StateReport> GetState(absl::string_view job_id,
                                       const Freshness& freshness) const override;
  absl::StatusOr<std::vector<Event>> ReadEvents(absl::string_view job_id,
                                                int64_t after_seq, int max_events,
                                                const Freshness& freshness) const override;
  absl::StatusOr<AnalysisProgress> AwaitAnalysis(
      absl::string_view job_id, const Freshness& freshness) const override;
  absl::StatusOr<PlacementRecommendation> RecommendPlacement(
      absl::string_view job_id, const PlacementRequest& request) override;
  absl::StatusOr<HealthReport> Health(absl::string_view job_id,
                                      const Freshness& freshness) const override;
  absl::StatusOr<std::string> SnapshotJob(absl::string_view job_id) const override;
  absl::Status RestoreJob(absl::string_view snapshot) override;

 private:
  struct JobEntry {
    std::mutex mu;  // orders apply+log of one job's calls
    bool multi_source = false;
  };

  DurableEngine(const EngineOptions& options, const DurableOptions& durable, Env* env,
                Clock* base_clock);
  absl::Status Recover(const EngineOptions& inner_options);
  // Rebuilds jobs_ from the inner engine.
  void IndexJobs();
  // OK, or the fail-stop error.
  absl::Status Writable() const;
  // Records a failure after apply (fail stop) and returns the error to give.
  absl::Status FailStop(const absl::Status& cause);
  int64_t NowNanos() const { return absl::ToUnixNanos(clock_.BaseNow()); }
  std::shared_ptr<JobEntry> FindJob(absl::string_view job_id) const;
  absl::Status AfterWrite();  // Commit() when sync_each_call
  absl::Status PruneLocked(const std::vector<uint64_t>& sets);

  const DurableOptions durable_;
  Env* const env_;
  const std::string wal_dir_;
  ReplayClock clock_;
  std::unique_ptr<FileLock> lock_;
  std::unique_ptr<Engine> inner_;
  std::unique_ptr<WalWriter> wal_;
  SnapshotStore store_;
  bool snapshots_supported_ = false;
  RecoveryReport report_;

  mutable std::shared_mutex registry_mu_;
  // Guarded by registry_mu_ (written under the exclusive lock).
  absl::flat_hash_map<std::string, std::shared_ptr<JobEntry>> jobs_;

  mutable std::mutex failed_mu_;
  absl::Status failed_;  // guarded by failed_mu_: fail-stop error

  std::mutex checkpoint_mu_;  // one Checkpoint at a time
  uint64_t next_set_ = 1;     // guarded by checkpoint_mu_
  // Set number -> its WAL segment, for the sets known (guarded by checkpoint_mu_).
  std::map<uint64_t, uint64_t> set_segments_;
};

}  // namespace moecast::durability

#endif  // MOECAST_ENGINE_DURABILITY_DURABLE_ENGINE_H_
