#include "engine/durability/wal_reader.h"

#include "absl/strings/str_cat.h"

namespace moecast::durability {

bool WalReader::Fail(std::string what) {
  problem_ = absl::StrCat("offset ", pos_, ": ", what, "; ", data_.size() - pos_,
                          " bytes from there on dropped");
  return false;
}

bool WalReader::Next(WalRecord* out) {
  if (corrupt() || pos_ == data_.size()) return false;
  const uint64_t left = data_.size() - pos_;
  if (left < kRecordHeaderBytes) {
    return Fail(absl::StrCat("torn record header (", left, " of ", kRecordHeaderBytes,
                             " bytes)"));
  }
  const char* h = data_.data() + pos_;
  const uint32_t crc = DecodeFixed32(h);
  const uint32_t length = DecodeFixed32(h + 4);
  const uint8_t type = static_cast<uint8_t>(h[8]);
  if (length > kMaxRecordPayloadBytes) {
    return Fail(absl::StrCat("record length ", length, " is out of range"));
  }
  if (type == 0 || type > kMaxRecordType) {
    return Fail(absl::StrCat("unknown record type ", static_cast<int>(type)));
  }
  if (left - kRecordHeaderBytes < length) {
    return Fail(absl::StrCat("torn record (", left - kRecordHeaderBytes, " of ", length,
                             " payload bytes)"));
  }
  const absl::string_view payload(h + kRecordHeaderBytes, length);
  if (RecordCrc(type, payload) != crc) {
    return Fail(absl::StrCat("checksum mismatch in a record of ", length, " bytes"));
  }
  out->type = static_cast<RecordType>(type);
  out->payload = payload;
  out->offset = pos_;
  pos_ += kRecordHeaderBytes + length;
  return true;
}

}  // namespace moecast::durability
