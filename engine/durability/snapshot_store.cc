#include "engine/durability/snapshot_store.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/durability/wal_format.h"
#include "engine/durability/wal_reader.h"

namespace moecast::durability {
namespace {

constexpr char kManifest[] = "MANIFEST";

std::string SetName(uint64_t number) { return absl::StrFormat("%020u", number); }

bool ParseSetName(absl::string_view name, uint64_t* number) {
  if (name.size() != 20) return false;
  for (char c : name) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleAtoi(name, number);
}

uint32_t DataCrc(absl::string_view data) { return RecordCrc(0, data); }

}  // namespace

absl::Status SnapshotStore::RemoveTree(const std::string& set_dir) {
  absl::StatusOr<std::vector<std::string>> names = env_->ListDir(set_dir);
  if (!names.ok()) return names.status();
  for (const std::string& n : *names) {
    if (absl::Status s = env_->RemoveFile(absl::StrCat(set_dir, "/", n)); !s.ok()) return s;
  }
  return env_->RemoveDir(set_dir);
}

absl::StatusOr<std::vector<uint64_t>> SnapshotStore::List() {
  absl::StatusOr<std::vector<std::string>> names = env_->ListDir(dir_);
  if (!names.ok()) return names.status();
  std::vector<uint64_t> sets;
  for (const std::string& n : *names) {
    uint64_t number;
    if (ParseSetName(n, &number)) {
      sets.push_back(number);
    } else if (absl::StartsWith(n, "tmp-")) {
      (void)RemoveTree(absl::StrCat(dir_, "/", n));
    }
  }
  std::sort(sets.rbegin(), sets.rend());
  return sets;
}

absl::Status SnapshotStore::Write(
    uint64_t number, uint64_t wal_segment,
    const std::vector<std::pair<std::string, std::string>>& jobs) {
  const std::string tmp = absl::StrCat(dir_, "/tmp-", SetName(number));
  (void)RemoveTree(tmp);
  if (absl::Status s = env_->CreateDir(tmp); !s.ok()) return s;
  std::string manifest;
  PutFixed64(&manifest, wal_segment);
  PutFixed32(&manifest, static_cast<uint32_t>(jobs.size()));
  absl::Status s;
  for (size_t i = 0; i < jobs.size() && s.ok(); ++i) {
    const std::string name = absl::StrCat("job-", i, ".snap");
    absl::StatusOr<std::unique_ptr<WritableFile>> f =
        env_->NewWritableFile(absl::StrCat(tmp, "/", name));
    if (!f.ok()) {
      s = f.status();
      break;
    }
    s = (*f)->Append(jobs[i].second);
    if (s.ok()) s = (*f)->Sync();
    const absl::Status c = (*f)->Close();
    if (s.ok()) s = c;
    PutFixed32(&manifest, static_cast<uint32_t>(jobs[i].first.size()));
    manifest += jobs[i].first;
    PutFixed32(&manifest, static_cast<uint32_t>(name.size()));
    manifest += name;
    PutFixed64(&manifest, jobs[i].second.size());
    PutFixed32(&manifest, DataCrc(jobs[i].second));
  }
  if (s.ok()) {
    s = WriteFileAtomically(env_, tmp, kManifest,
                            FrameRecord(RecordType::kManifest, manifest));
  }
  if (s.ok()) s = env_->Rename(tmp, absl::StrCat(dir_, "/", SetName(number)));
  if (s.ok()) s = env_->SyncDir(dir_);
  if (!s.ok()) (void)RemoveTree(tmp);
  return s;
}

absl::StatusOr<SnapshotSet> SnapshotStore::Load(uint64_t number) {
  const std::string set_dir = absl::StrCat(dir_, "/", SetName(number));
  const std::string manifest_path = absl::StrCat(set_dir, "/", kManifest);
  absl::StatusOr<std::string> data = env_->ReadFile(manifest_path);
  if (!data.ok()) {
    return absl::DataLossError(absl::StrCat("snapshot manifest: ", data.status().message()));
  }
  WalReader reader(*data);
  WalRecord record;
  if (!reader.Next(&record) || record.type != RecordType::kManifest ||
      reader.good_bytes() != data->size()) {
    return absl::DataLossError(absl::StrCat(
        "snapshot manifest '", manifest_path, "' is corrupt",
        reader.corrupt() ? absl::StrCat(" (", reader.problem(), ")") : ""));
  }
  absl::string_view p = record.payload;
  auto bad = [&](absl::string_view what) {
    return absl::DataLossError(
        absl::StrCat("snapshot manifest '", manifest_path, "': ", what));
  };
  auto take = [&](size_t n, absl::string_view* out) {
    if (p.size() < n) return false;
    *out = p.substr(0, n);
    p.remove_prefix(n);
    return true;
  };
  absl::string_view field;
  if (!take(12, &field)) return bad("too short");
  SnapshotSet set;
  set.number = number;
  set.wal_segment = DecodeFixed64(field.data());
  const uint32_t count = DecodeFixed32(field.data() + 8);
  for (uint32_t i = 0; i < count; ++i) {
    absl::string_view id, name, n;
    if (!take(4, &n) || !take(DecodeFixed32(n.data()), &id)) return bad("truncated entry");
    if (!take(4, &n) || !take(DecodeFixed32(n.data()), &name)) return bad("truncated entry");
    if (!take(12, &field)) return bad("truncated entry");
    // Names are ours (job-<i>.snap); anything else is not followed.
    if (name != absl::StrCat("job-", i, ".snap")) {
      return bad(absl::StrCat("unexpected file name '", name, "'"));
    }
    const uint64_t size = DecodeFixed64(field.data());
    const uint32_t crc = DecodeFixed32(field.data() + 8);
    const std::string path = absl::StrCat(set_dir, "/", name);
    absl::StatusOr<std::string> bytes = env_->ReadFile(path);
    if (!bytes.ok()) return absl::DataLossError(bytes.status().message());
    if (bytes->size() != size || DataCrc(*bytes) != crc) {
      return absl::DataLossError(absl::StrCat(
          "snapshot '", path, "' of job '", id, "' is corrupt (", bytes->size(),
          " bytes, manifest says ", size, ", or checksum mismatch)"));
    }
    set.jobs.emplace_back(std::string(id), *std::move(bytes));
  }
  if (!p.empty()) return bad("trailing bytes");
  return set;
}

absl::Status SnapshotStore::Remove(uint64_t number) {
  return RemoveTree(absl::StrCat(dir_, "/", SetName(number)));
}

}  // namespace moecast::durability
