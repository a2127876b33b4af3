// WalWriter: appends framed records (wal_format.h) to the current segment of
// a write-ahead log, rotates segments, and makes them durable by a sync
// policy.
//
//   MOECAST_ASSIGN_OR_RETURN(auto wal, WalWriter::Create(env, dir + "/wal", 7, {}));
//   MOECAST_RETURN_IF_ERROR(wal->Reserve(n));      // before applying
//   ... apply the mutation ...
//   MOECAST_RETURN_IF_ERROR(wal->Append(RecordType::kIngest, payload, n));
//   MOECAST_RETURN_IF_ERROR(wal->Commit());        // before acknowledging
//
// Space reservation: Reserve(n) makes sure n more bytes of the current
// segment are allocated on disk (fallocate with KEEP_SIZE, in chunks of
// preallocate_bytes), so that an Append of a reserved record cannot fail for
// lack of space. A caller that must apply a change before it can log it
// (the engine validates a step only by applying it) reserves first: a full
// disk then refuses the change before anything is applied. Where the file
// system cannot fallocate, Reserve succeeds without that guarantee
// (allocation_guaranteed() is false).
//
// Errors: a failed Reserve or a torn Append that could be cut back changes
// nothing and later calls may succeed (e.g. once space is freed). A failed
// Sync, or an Append that could not be cut back, is sticky: every later call
// returns it (after a failed fdatasync the page cache's state is unknown;
// recovery from the files on disk is the only safe way on).
//
// Thread-safety: thread-safe. Appends are serialized; Sync runs without
// blocking appends, and concurrent Syncs share one fdatasync (group commit).
#ifndef MOECAST_ENGINE_DURABILITY_WAL_WRITER_H_
#define MOECAST_ENGINE_DURABILITY_WAL_WRITER_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/durability/env.h"
#include "engine/durability/wal_format.h"

namespace moecast::durability {

// When appended records become durable (docs/RELIABILITY.md compares them).
enum class WalSyncMode {
  // Commit() fdatasyncs before returning: an acknowledged call survives
  // power loss. Concurrent callers share fdatasyncs.
  kBatch,
  // A background thread fdatasyncs every sync_interval; Commit() does not
  // wait. A process crash loses nothing written (it is in the page cache);
  // power loss loses at most the last sync_interval of acknowledged calls.
  kInterval,
  // Only segment rotation and Close sync. A process crash loses nothing
  // written; power loss loses whatever the kernel had not written back.
  kNone,
};

absl::string_view WalSyncModeName(WalSyncMode mode);

struct WalWriterOptions {
  // A segment that has grown past this many bytes is closed and a new one
  // started at the next Reserve. Larger segments: fewer files; smaller: old
  // log is deleted sooner after a snapshot.
  uint64_t segment_bytes = uint64_t{64} << 20;
  // Disk space reserved ahead of the write position, in bytes (one fallocate
  // per chunk).
  uint64_t preallocate_bytes = uint64_t{4} << 20;
  WalSyncMode sync = WalSyncMode::kBatch;
  // kInterval: how often the background thread syncs (> 0).
  absl::Duration sync_interval = absl::Milliseconds(10);
};

class WalWriter {
 public:
  // Creates segment `segment` (which must not exist yet in use; an existing
  // file of that name is truncated) in `wal_dir`, writes its header, syncs
  // it and the directory.
  static absl::StatusOr<std::unique_ptr<WalWriter>> Create(
      Env* env, std::string wal_dir, uint64_t segment, WalWriterOptions options);

  ~WalWriter();  // Close()s, ignoring errors.
  WalWriter(const WalWriter&) = delete;
  WalWriter& operator=(const WalWriter&) = delete;

  // Framed size of a record with `payload_bytes` of payload.
  static uint64_t RecordBytes(uint64_t payload_bytes) {
    return kRecordHeaderBytes + payload_bytes;
  }

  // Reserves disk space for a record of `record_bytes` (RecordBytes) bytes;
  // may rotate to a new segment first. RESOURCE_EXHAUSTED ("no space left on
  // device (...)") when the space is not there; the sticky error if any.
  [[nodiscard]] absl::Status Reserve(uint64_t record_bytes);
  // Gives back a reservation that will not be used.
  void Unreserve(uint64_t record_bytes);

  // Appends one record. `reserved_bytes` is what Reserve was given for it (0
  // if nothing was reserved). On error nothing of the record remains in the
  // file unless the error is sticky (see the header comment).
  [[nodiscard]] absl::Status Append(RecordType type, absl::string_view payload,
                                    uint64_t reserved_bytes);

  // Makes everything appended so far durable (fdatasync; shared with
  // concurrent callers). A failure is sticky.
  [[nodiscard]] absl::Status Sync();

  // What the sync policy requires before a caller acknowledges: kBatch:
  // Sync(); otherwise the sticky error, if any.
  [[nodiscard]] absl::Status Commit();

  // Syncs and closes the current segment and starts the next one; returns
  // its number. Waits for reservations in flight to be used or released.
  [[nodiscard]] absl::StatusOr<uint64_t> Rotate();

  // The segment being appended to.
  uint64_t segment() const;
  // The sticky error, or OK.
  absl::Status status() const;
  // False where the file system could not reserve space (see above).
  bool allocation_guaranteed() const;
  // Bytes appended and fdatasyncs done since Create.
  uint64_t appended_bytes() const;
  uint64_t syncs() const;

  // Stops the sync thread, syncs and closes the segment. Idempotent.
  absl::Status Close();

 private:
  WalWriter(Env* env, std::string wal_dir, WalWriterOptions options);
  // Opens segment `number` and writes its header.
  absl::Status OpenSegmentLocked(uint64_t number);
  absl::Status RotateLocked(std::unique_lock<std::mutex>& lock);
  void SyncLoop();

  Env* const env_;
  const std::string dir_;
  const WalWriterOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<WritableFile> file_;  // guarded by mu_
  uint64_t segment_ = 0;                // guarded by mu_
  uint64_t allocated_end_ = 0;          // guarded by mu_: offset reserved on disk
  uint64_t reserved_ = 0;               // guarded by mu_: promised to callers
  bool allocate_supported_ = true;      // guarded by mu_
  uint64_t written_ = 0;                // guarded by mu_: bytes appended, all segments
  uint64_t synced_ = 0;                 // guarded by mu_: of written_, durable
  bool syncing_ = false;                // guarded by mu_: a leader is in fdatasync
  uint64_t syncs_ = 0;                  // guarded by mu_
  absl::Status error_;                  // guarded by mu_: sticky
  bool closed_ = false;                 // guarded by mu_
  bool stop_ = false;                   // guarded by mu_
  std::thread sync_thread_;
};

}  // namespace moecast::durability

#endif  // MOECAST_ENGINE_DURABILITY_WAL_WRITER_H_
