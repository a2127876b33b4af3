#include "engine/durability/wal_writer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moecast::durability {

absl::string_view WalSyncModeName(WalSyncMode mode) {
  switch (mode) {
    case WalSyncMode::kBatch:
      return "batch";
    case WalSyncMode::kInterval:
      return "interval";
    case WalSyncMode::kNone:
      return "none";
  }
  return "unknown";
}

WalWriter::WalWriter(Env* env, std::string wal_dir, WalWriterOptions options)
    : env_(env), dir_(std::move(wal_dir)), options_(options) {}

absl::StatusOr<std::unique_ptr<WalWriter>> WalWriter::Create(
    Env* env, std::string wal_dir, uint64_t segment, WalWriterOptions options) {
  if (options.sync == WalSyncMode::kInterval &&
      options.sync_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("WAL sync interval ", absl::FormatDuration(options.sync_interval),
                     " must be > 0"));
  }
  std::unique_ptr<WalWriter> w(new WalWriter(env, std::move(wal_dir), options));
  {
    std::lock_guard<std::mutex> lock(w->mu_);
    if (absl::Status s = w->OpenSegmentLocked(segment); !s.ok()) return s;
  }
  if (options.sync == WalSyncMode::kInterval) {
    w->sync_thread_ = std::thread([p = w.get()] { p->SyncLoop(); });
  }
  return w;
}

WalWriter::~WalWriter() { (void)Close(); }

absl::Status WalWriter::OpenSegmentLocked(uint64_t number) {
  const std::string path = absl::StrCat(dir_, "/", SegmentFileName(number));
  absl::StatusOr<std::unique_ptr<WritableFile>> f = env_->NewWritableFile(path);
  if (!f.ok()) return f.status();
  const std::string header =
      FrameRecord(RecordType::kSegmentHeader, EncodeSegmentHeader(number));
  absl::Status s = (*f)->Append(header);
  if (s.ok()) s = (*f)->Sync();
  if (s.ok()) s = env_->SyncDir(dir_);
  if (!s.ok()) {
    (void)(*f)->Close();
    (void)env_->RemoveFile(path);
    return s;
  }
  file_ = std::shared_ptr<WritableFile>(std::move(*f));
  segment_ = number;
  allocated_end_ = file_->size();
  written_ += header.size();
  synced_ = written_;
  return absl::OkStatus();
}

absl::Status WalWriter::RotateLocked(std::unique_lock<std::mutex>& lock) {
  cv_.wait(lock, [&] { return !syncing_; });
  if (!error_.ok()) return error_;
  std::shared_ptr<WritableFile> old = file_;
  const uint64_t old_segment = segment_;
  const uint64_t old_allocated = allocated_end_;
  if (absl::Status s = old->Sync(); !s.ok()) {
    error_ = s;
    return s;
  }
  ++syncs_;
  synced_ = written_;
  if (absl::Status s = OpenSegmentLocked(old_segment + 1); !s.ok()) {
    // Keep appending to the old segment; a later rotation may succeed.
    file_ = old;
    segment_ = old_segment;
    allocated_end_ = old_allocated;
    return s;
  }
  // Reserved-but-unused blocks past the old segment's end are freed on close
  // by most file systems; the data is synced already.
  (void)old->Close();
  return absl::OkStatus();
}

absl::Status WalWriter::Reserve(uint64_t record_bytes) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!error_.ok()) return error_;
  if (closed_) return absl::FailedPreconditionError("the write-ahead log is closed");
  if (reserved_ == 0 && file_->size() >= options_.segment_bytes) {
    if (absl::Status s = RotateLocked(lock); !s.ok()) return s;
  }
  const uint64_t need_end = file_->size() + reserved_ + record_bytes;
  if (allocate_supported_ && need_end > allocated_end_) {
    absl::Status s = file_->Allocate(allocated_end_,
                                     need_end - allocated_end_ + options_.preallocate_bytes);
    if (s.ok()) {
      allocated_end_ = need_end + options_.preallocate_bytes;
    } else if (absl::IsUnimplemented(s)) {
      allocate_supported_ = false;
    } else {
      // Maybe the chunk does not fit but the record does.
      s = file_->Allocate(allocated_end_, need_end - allocated_end_);
      if (!s.ok()) return s;
      allocated_end_ = need_end;
    }
  }
  reserved_ += record_bytes;
  return absl::OkStatus();
}

void WalWriter::Unreserve(uint64_t record_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  reserved_ -= std::min(reserved_, record_bytes);
  cv_.notify_all();
}

absl::Status WalWriter::Append(RecordType type, absl::string_view payload,
                               uint64_t reserved_bytes) {
  const std::string frame = FrameRecord(type, payload);
  std::lock_guard<std::mutex> lock(mu_);
  reserved_ -= std::min(reserved_, reserved_bytes);
  cv_.notify_all();
  if (!error_.ok()) return error_;
  if (closed_) return absl::FailedPreconditionError("the write-ahead log is closed");
  const uint64_t before = file_->size();
  absl::Status s = file_->Append(frame);
  if (!s.ok()) {
    // Take the torn prefix back so that later records follow intact ones.
    absl::Status cut = file_->Truncate(before);
    allocated_end_ = std::min(allocated_end_, before);
    if (!cut.ok()) {
      error_ = absl::Status(
          s.code(), absl::StrCat(s.message(), "; then could not cut the torn record back: ",
                                 cut.message()));
      return error_;
    }
    return s;
  }
  written_ += frame.size();
  allocated_end_ = std::max(allocated_end_, file_->size());
  return absl::OkStatus();
}

absl::Status WalWriter::Sync() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = written_;
  while (synced_ < target) {
    if (!error_.ok()) return error_;
    if (syncing_) {
      cv_.wait(lock);
      continue;
    }
    syncing_ = true;
    std::shared_ptr<WritableFile> f = file_;
    const uint64_t upto = written_;
    lock.unlock();
    absl::Status s = f->Sync();
    lock.lock();
    syncing_ = false;
    ++syncs_;
    cv_.notify_all();
    if (!s.ok()) {
      error_ = s;
      return s;
    }
    synced_ = std::max(synced_, upto);
  }
  return error_;
}

absl::Status WalWriter::Commit() {
  if (options_.sync == WalSyncMode::kBatch) return Sync();
  return status();
}

absl::StatusOr<uint64_t> WalWriter::Rotate() {
  std::unique_lock<std::mutex> lock(mu_);
  if (!error_.ok()) return error_;
  if (closed_) return absl::FailedPreconditionError("the write-ahead log is closed");
  cv_.wait(lock, [&] { return reserved_ == 0; });
  if (absl::Status s = RotateLocked(lock); !s.ok()) return s;
  return segment_;
}

uint64_t WalWriter::segment() const {
  std::lock_guard<std::mutex> lock(mu_);
  return segment_;
}

absl::Status WalWriter::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

bool WalWriter::allocation_guaranteed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return allocate_supported_;
}

uint64_t WalWriter::appended_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return written_;
}

uint64_t WalWriter::syncs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return syncs_;
}

void WalWriter::SyncLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  const auto period = absl::ToChronoNanoseconds(options_.sync_interval);
  while (!stop_) {
    cv_.wait_for(lock, period, [&] { return stop_; });
    if (stop_) break;
    if (synced_ < written_ && error_.ok() && !syncing_) {
      lock.unlock();
      (void)Sync();  // a failure is sticky; callers see it
      lock.lock();
    }
  }
}

absl::Status WalWriter::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (sync_thread_.joinable()) sync_thread_.join();
  std::unique_lock<std::mutex> lock(mu_);
  if (closed_) return error_;
  cv_.wait(lock, [&] { return !syncing_; });
  closed_ = true;
  absl::Status s = error_;
  if (s.ok() && synced_ < written_) {
    s = file_->Sync();
    if (s.ok()) synced_ = written_;
  }
  const absl::Status c = file_->Close();
  if (s.ok()) s = c;
  if (!s.ok() && error_.ok()) error_ = s;
  return s;
}

}  // namespace moecast::durability
