// SnapshotStore: sets of per-job snapshots (Engine::SnapshotJob bytes) on
// disk, each with a manifest naming the write-ahead log segment from which
// replay continues.
//
//   DIR/snapshots/<20-digit set number>/MANIFEST
//   DIR/snapshots/<20-digit set number>/job-<index>.snap
//
// File names are indices, never job ids (the ids live inside the manifest),
// so no job id ever becomes a path. A set is written into tmp-<number>/
// (each file written, fsynced), its MANIFEST last, the directory fsynced,
// then renamed to <number>/ and the parent fsynced: a set directory without
// the tmp- prefix is complete, and a crash leaves at most a tmp- directory,
// removed by List().
//
//   SnapshotStore store(env, dir + "/snapshots");
//   MOECAST_RETURN_IF_ERROR(store.Write(7, /*wal_segment=*/12, jobs));
//   MOECAST_ASSIGN_OR_RETURN(std::vector<uint64_t> sets, store.List());
//   MOECAST_ASSIGN_OR_RETURN(SnapshotSet set, store.Load(sets.front()));
//
// Thread-safety: not thread-safe; one writer (the durable engine's
// checkpoint) at a time.
#ifndef MOECAST_ENGINE_DURABILITY_SNAPSHOT_STORE_H_
#define MOECAST_ENGINE_DURABILITY_SNAPSHOT_STORE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/durability/env.h"

namespace moecast::durability {

struct SnapshotSet {
  uint64_t number = 0;
  // Replay continues with this WAL segment (the set covers everything
  // logged in earlier segments).
  uint64_t wal_segment = 0;
  // (job id, SnapshotJob bytes), in the order written.
  std::vector<std::pair<std::string, std::string>> jobs;
};

class SnapshotStore {
 public:
  SnapshotStore(Env* env, std::string dir) : env_(env), dir_(std::move(dir)) {}

  // Numbers of the complete sets, newest first. Removes leftover tmp-
  // directories of interrupted writes.
  [[nodiscard]] absl::StatusOr<std::vector<uint64_t>> List();

  // Writes set `number` durably (see the header comment).
  [[nodiscard]] absl::Status Write(
      uint64_t number, uint64_t wal_segment,
      const std::vector<std::pair<std::string, std::string>>& jobs);

  // Reads and checks set `number`: DATA_LOSS naming the file for a missing,
  // truncated or corrupt manifest or snapshot file.
  [[nodiscard]] absl::StatusOr<SnapshotSet> Load(uint64_t number);

  // Deletes set `number`.
  [[nodiscard]] absl::Status Remove(uint64_t number);

  const std::string& dir() const { return dir_; }

 private:
  absl::Status RemoveTree(const std::string& set_dir);

  Env* const env_;
  const std::string dir_;
};

}  // namespace moecast::durability

#endif  // MOECAST_ENGINE_DURABILITY_SNAPSHOT_STORE_H_
