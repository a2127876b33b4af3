// Env: the file-system seam of the durability layer (LevelDB's Env, reduced
// to what a write-ahead log and a snapshot store need), so that tests can
// substitute a fault-injecting file system (fault_injection_env.h).
//
//   Env* env = Env::Default();
//   MOECAST_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f,
//                            env->NewWritableFile(dir + "/000001.log"));
//   MOECAST_RETURN_IF_ERROR(f->Append(bytes));
//   MOECAST_RETURN_IF_ERROR(f->Sync());
//
// Errors carry the operation, the path and strerror: ENOSPC and EDQUOT are
// RESOURCE_EXHAUSTED ("no space left on device (...)"), ENOENT NOT_FOUND,
// EACCES/EPERM PERMISSION_DENIED, ELOOP (a symbolic link where a file or
// directory of ours should be) FAILED_PRECONDITION, anything else
// (EIO, ...) UNAVAILABLE.
//
// Paths: callers build every path from a directory they validated and names
// they generated (numbers); files are opened with O_NOFOLLOW, so a symbolic
// link planted inside the data directory is refused rather than followed.
//
// Thread-safety: Env methods are thread-safe. A WritableFile is used by one
// thread at a time, except that Sync may run concurrently with Append.
#ifndef MOECAST_ENGINE_DURABILITY_ENV_H_
#define MOECAST_ENGINE_DURABILITY_ENV_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moecast::durability {

class WritableFile {
 public:
  virtual ~WritableFile() = default;

  // Appends `data` at the end. On error a prefix of `data` may have been
  // written (a torn write); size() tells how much.
  [[nodiscard]] virtual absl::Status Append(absl::string_view data) = 0;

  // Bytes in the file (as this handle wrote them).
  virtual uint64_t size() const = 0;

  // Cuts the file to `size` bytes (used to take back a torn append).
  [[nodiscard]] virtual absl::Status Truncate(uint64_t size) = 0;

  // Makes the data durable (fdatasync).
  [[nodiscard]] virtual absl::Status Sync() = 0;

  // Reserves disk blocks for [offset, offset + length) without changing the
  // file's size (fallocate FALLOC_FL_KEEP_SIZE), so that later appends into
  // that range cannot fail for lack of space. UNIMPLEMENTED where the file
  // system cannot; RESOURCE_EXHAUSTED when the space is not there.
  [[nodiscard]] virtual absl::Status Allocate(uint64_t offset, uint64_t length) = 0;

  [[nodiscard]] virtual absl::Status Close() = 0;
};

// Holds an advisory lock (flock) on a file until destroyed.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

class Env {
 public:
  virtual ~Env() = default;

  // The POSIX file system. Never null, never destroyed.
  static Env* Default();

  // Creates (or truncates) `path` for appending.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<WritableFile>>
  NewWritableFile(const std::string& path) = 0;

  // The whole file.
  [[nodiscard]] virtual absl::StatusOr<std::string> ReadFile(
      const std::string& path) = 0;

  // Names in `dir` (without "." and ".."), unsorted.
  [[nodiscard]] virtual absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& dir) = 0;

  // Creates `dir` if absent. FAILED_PRECONDITION if it exists and is not a
  // directory or is a symbolic link.
  [[nodiscard]] virtual absl::Status CreateDir(const std::string& dir) = 0;

  [[nodiscard]] virtual absl::Status RemoveFile(const std::string& path) = 0;
  // Removes an empty directory.
  [[nodiscard]] virtual absl::Status RemoveDir(const std::string& dir) = 0;
  [[nodiscard]] virtual absl::Status Rename(const std::string& from,
                                            const std::string& to) = 0;
  // fsync of the directory itself, so that creations, renames and removals
  // in it are durable.
  [[nodiscard]] virtual absl::Status SyncDir(const std::string& dir) = 0;
  [[nodiscard]] virtual absl::Status TruncateFile(const std::string& path,
                                                  uint64_t size) = 0;
  // Takes an exclusive lock on `path` (created if absent); FAILED_PRECONDITION
  // if another process holds it.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<FileLock>> LockFile(
      const std::string& path) = 0;
};

// The status for a failed system call: `op` and `path` name what was being
// done; `err` is errno. Mapping as in the header comment.
absl::Status ErrnoStatus(int err, absl::string_view op, absl::string_view path);

// Writes `data` to `path` durably and atomically: a temporary file beside it,
// fsync, rename over `path`, fsync of the directory.
absl::Status WriteFileAtomically(Env* env, const std::string& dir,
                                 const std::string& name, absl::string_view data);

}  // namespace moecast::durability

#endif  // MOECAST_ENGINE_DURABILITY_ENV_H_
