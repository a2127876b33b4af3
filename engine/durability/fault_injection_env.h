// FaultInjectionEnv: an Env over another (normally the real one) that can run
// out of space, fail syncs or writes with EIO, lack fallocate, and simulate a
// power loss by dropping every byte not yet synced. For tests.
//
//   FaultInjectionEnv env(Env::Default());
//   env.SetSpaceLimit(1 << 20);        // a 1 MiB disk: ENOSPC past it
//   env.SetFailSync(true);             // fdatasync fails with EIO
//   env.DropUnsyncedData();            // "power loss"
//
// Space is counted per file as the larger of its size and the range reserved
// with Allocate, summed over the files this Env created (removals give it
// back). An Append that does not fit writes the part that fits, then fails
// with ENOSPC (a torn write).
//
// Thread-safety: thread-safe.
#ifndef MOECAST_ENGINE_DURABILITY_FAULT_INJECTION_ENV_H_
#define MOECAST_ENGINE_DURABILITY_FAULT_INJECTION_ENV_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "engine/durability/env.h"

namespace moecast::durability {

class FaultInjectionEnv final : public Env {
 public:
  explicit FaultInjectionEnv(Env* base) : base_(base) {}

  // Bytes the files may take in all; negative: unlimited.
  void SetSpaceLimit(int64_t bytes);
  // Bytes the files take now.
  int64_t SpaceUsed() const;
  void SetFailSync(bool fail);
  void SetFailAppend(bool fail);  // EIO, nothing written
  void SetAllocateSupported(bool supported);
  // Truncates every file written through this Env to its size at its last
  // Sync (or to 0), as a power loss would leave it.
  void DropUnsyncedData();

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) override;
  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    return base_->ReadFile(path);
  }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) override {
    return base_->ListDir(dir);
  }
  absl::Status CreateDir(const std::string& dir) override { return base_->CreateDir(dir); }
  absl::Status RemoveFile(const std::string& path) override;
  absl::Status RemoveDir(const std::string& dir) override { return base_->RemoveDir(dir); }
  absl::Status Rename(const std::string& from, const std::string& to) override;
  absl::Status SyncDir(const std::string& dir) override { return base_->SyncDir(dir); }
  absl::Status TruncateFile(const std::string& path, uint64_t size) override;
  absl::StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path) override {
    return base_->LockFile(path);
  }

 private:
  friend class FaultFile;
  struct FileState {
    uint64_t size = 0;
    uint64_t allocated = 0;
    uint64_t synced = 0;
    uint64_t usage() const { return size > allocated ? size : allocated; }
  };

  Env* const base_;
  mutable std::mutex mu_;
  int64_t limit_ = -1;
  int64_t used_ = 0;
  bool fail_sync_ = false;
  bool fail_append_ = false;
  bool allocate_supported_ = true;
  std::map<std::string, std::shared_ptr<FileState>> files_;
};

}  // namespace moecast::durability

#endif  // MOECAST_ENGINE_DURABILITY_FAULT_INJECTION_ENV_H_
