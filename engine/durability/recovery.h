// Recovery: rebuilding an Engine's state from a data directory's snapshot
// sets and write-ahead log (used by DurableEngine::Open).
//
//   1. Snapshots (only when the engine implements RestoreJob): the newest set
//      that loads and restores completely is used; a set that is unreadable,
//      corrupt or refused by RestoreJob is reported and the previous one
//      tried. Replay then starts at the set's WAL segment.
//   2. Without a usable set, replay starts at the first segment; that must be
//      segment 1 (or no segment at all), else the log's beginning was
//      deleted after snapshots that can no longer be used: DATA_LOSS.
//   3. Replay applies every record of every segment from there, in order,
//      each at its logged time (ReplayClock). Segments must be numbered
//      without gaps. A bad record in the last segment is a torn tail: the
//      file is cut at the last intact record and the cut reported with its
//      offset. A bad record in an earlier segment is DATA_LOSS (acknowledged
//      data after it would be lost silently otherwise).
//
// Thread-safety: the functions must not run concurrently with other calls on
// the engine.
#ifndef MOECAST_ENGINE_DURABILITY_RECOVERY_H_
#define MOECAST_ENGINE_DURABILITY_RECOVERY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/durability/env.h"
#include "engine/durability/replay_clock.h"
#include "engine/durability/wal_records.h"
#include "engine/engine.h"

namespace moecast::durability {

struct RecoveryReport {
  // The snapshot set used, or -1 for none.
  int64_t snapshot_set = -1;
  int64_t jobs_restored = 0;      // from the snapshot set
  uint64_t first_segment = 0;     // replayed from (0: nothing to replay)
  int64_t segments_replayed = 0;
  int64_t records_replayed = 0;   // mutations applied
  uint64_t replayed_bytes = 0;
  // Logged multi-source steps that the engine refused again on replay, as it
  // did when they were logged (they are logged for their side effect:
  // timed-out steps they committed).
  int64_t replay_rejections = 0;
  // Torn tails cut, snapshot sets skipped, unexpected replay errors.
  std::vector<std::string> warnings;
  absl::Duration elapsed;

  // One line for a log: what was recovered and from where.
  std::string Summary() const;
};

// Applies one logged mutation to `engine` with `clock` pinned to its time.
// The engine's answer (errors included).
absl::Status ApplyMutation(Engine& engine, const ReplayClock& clock, const Mutation& m);

// Segment numbers found in `wal_dir`, ascending.
absl::StatusOr<std::vector<uint64_t>> ListSegments(Env* env, const std::string& wal_dir);

// Replays `segments` (ascending, consecutive) into `engine`, as described in
// the header comment (step 3). DATA_LOSS for a gap or a bad record before the
// last segment; errors reading files as the Env returns them.
absl::Status ReplaySegments(Env* env, const std::string& wal_dir,
                            const std::vector<uint64_t>& segments, Engine& engine,
                            const ReplayClock& clock, RecoveryReport* report);

}  // namespace moecast::durability

#endif  // MOECAST_ENGINE_DURABILITY_RECOVERY_H_
