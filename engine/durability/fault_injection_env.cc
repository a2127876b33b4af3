#include "engine/durability/fault_injection_env.h"

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace moecast::durability {

class FaultFile final : public WritableFile {
 public:
  FaultFile(FaultInjectionEnv* env, std::string path, std::unique_ptr<WritableFile> base,
            std::shared_ptr<FaultInjectionEnv::FileState> state)
      : env_(env), path_(std::move(path)), base_(std::move(base)), state_(std::move(state)) {}

  absl::Status Append(absl::string_view data) override {
    uint64_t fits = data.size();
    {
      std::lock_guard<std::mutex> lock(env_->mu_);
      if (env_->fail_append_) return ErrnoStatus(EIO, "appending to", path_);
      if (env_->limit_ >= 0) {
        const uint64_t end = state_->size + data.size();
        const uint64_t grow = end > state_->usage() ? end - state_->usage() : 0;
        const uint64_t room = static_cast<uint64_t>(
            std::max<int64_t>(0, env_->limit_ - env_->used_));
        if (grow > room) fits = data.size() - (grow - room);
      }
    }
    absl::Status s = base_->Append(data.substr(0, fits));
    {
      std::lock_guard<std::mutex> lock(env_->mu_);
      const uint64_t before = state_->usage();
      state_->size = base_->size();
      env_->used_ += static_cast<int64_t>(state_->usage() - before);
    }
    if (!s.ok()) return s;
    if (fits < data.size()) {
      return ErrnoStatus(ENOSPC, absl::StrCat("appending ", data.size(), " bytes to"), path_);
    }
    return absl::OkStatus();
  }

  uint64_t size() const override { return base_->size(); }

  absl::Status Truncate(uint64_t size) override {
    absl::Status s = base_->Truncate(size);
    std::lock_guard<std::mutex> lock(env_->mu_);
    const uint64_t before = state_->usage();
    state_->size = base_->size();
    if (state_->allocated > size) state_->allocated = size;  // truncation frees it
    if (state_->synced > size) state_->synced = size;
    env_->used_ -= static_cast<int64_t>(before - state_->usage());
    return s;
  }

  absl::Status Sync() override {
    uint64_t size;
    {
      std::lock_guard<std::mutex> lock(env_->mu_);
      if (env_->fail_sync_) return ErrnoStatus(EIO, "fdatasync of", path_);
      size = state_->size;
    }
    absl::Status s = base_->Sync();
    if (s.ok()) {
      std::lock_guard<std::mutex> lock(env_->mu_);
      if (size > state_->synced) state_->synced = size;
    }
    return s;
  }

  absl::Status Allocate(uint64_t offset, uint64_t length) override {
    std::lock_guard<std::mutex> lock(env_->mu_);
    if (!env_->allocate_supported_) return absl::UnimplementedError("no fallocate here");
    const uint64_t end = offset + length;
    const uint64_t grow = end > state_->usage() ? end - state_->usage() : 0;
    if (env_->limit_ >= 0 && env_->used_ + static_cast<int64_t>(grow) > env_->limit_) {
      return ErrnoStatus(ENOSPC, absl::StrCat("reserving ", length, " bytes for"), path_);
    }
    env_->used_ += static_cast<int64_t>(grow);
    if (end > state_->allocated) state_->allocated = end;
    return absl::OkStatus();
  }

  absl::Status Close() override { return base_->Close(); }

 private:
  FaultInjectionEnv* const env_;
  const std::string path_;
  std::unique_ptr<WritableFile> base_;
  std::shared_ptr<FaultInjectionEnv::FileState> state_;
};

void FaultInjectionEnv::SetSpaceLimit(int64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  limit_ = bytes;
}

int64_t FaultInjectionEnv::SpaceUsed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_;
}

void FaultInjectionEnv::SetFailSync(bool fail) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_sync_ = fail;
}

void FaultInjectionEnv::SetFailAppend(bool fail) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_append_ = fail;
}

void FaultInjectionEnv::SetAllocateSupported(bool supported) {
  std::lock_guard<std::mutex> lock(mu_);
  allocate_supported_ = supported;
}

void FaultInjectionEnv::DropUnsyncedData() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [path, state] : files_) {
    if (state->size > state->synced) {
      (void)base_->TruncateFile(path, state->synced);
      used_ -= static_cast<int64_t>(state->usage());
      state->size = state->synced;
      state->allocated = state->synced;
      used_ += static_cast<int64_t>(state->usage());
    }
  }
}

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectionEnv::NewWritableFile(
    const std::string& path) {
  absl::StatusOr<std::unique_ptr<WritableFile>> f = base_->NewWritableFile(path);
  if (!f.ok()) return f.status();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(path);
  if (it != files_.end()) used_ -= static_cast<int64_t>(it->second->usage());
  auto state = std::make_shared<FileState>();
  files_[path] = state;
  return std::unique_ptr<WritableFile>(new FaultFile(this, path, *std::move(f), state));
}

absl::Status FaultInjectionEnv::RemoveFile(const std::string& path) {
  absl::Status s = base_->RemoveFile(path);
  if (s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = files_.find(path);
    if (it != files_.end()) {
      used_ -= static_cast<int64_t>(it->second->usage());
      files_.erase(it);
    }
  }
  return s;
}

absl::Status FaultInjectionEnv::Rename(const std::string& from, const std::string& to) {
  absl::Status s = base_->Rename(from, to);
  if (s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = files_.find(from);
    if (it != files_.end()) {
      files_[to] = it->second;
      files_.erase(it);
    }
  }
  return s;
}

absl::Status FaultInjectionEnv::TruncateFile(const std::string& path, uint64_t size) {
  absl::Status s = base_->TruncateFile(path, size);
  if (s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = files_.find(path);
    if (it != files_.end()) {
      used_ -= static_cast<int64_t>(it->second->usage());
      it->second->size = std::min(it->second->size, size);
      it->second->allocated = std::min(it->second->allocated, size);
      it->second->synced = std::min(it->second->synced, size);
      used_ += static_cast<int64_t>(it->second->usage());
    }
  }
  return s;
}

}  // namespace moecast::durability
