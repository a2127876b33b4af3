#include "engine/durability/wal_format.h"

#include <zlib.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace moecast::durability {
namespace {
constexpr uint32_t kMaskDelta = 0xa282ead8u;
}

uint32_t RecordCrc(uint8_t type, absl::string_view payload) {
  uLong crc = crc32(0L, Z_NULL, 0);
  crc = crc32(crc, &type, 1);
  // zlib takes uInt lengths: feed large payloads in pieces.
  const auto* p = reinterpret_cast<const Bytef*>(payload.data());
  size_t left = payload.size();
  while (left > 0) {
    const uInt n = static_cast<uInt>(std::min<size_t>(left, 1u << 30));
    crc = crc32(crc, p, n);
    p += n;
    left -= n;
  }
  const uint32_t c = static_cast<uint32_t>(crc);
  return ((c >> 15) | (c << 17)) + kMaskDelta;
}

void PutFixed32(std::string* out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(b, 4);
}

void PutFixed64(std::string* out, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(b, 8);
}

uint32_t DecodeFixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

uint64_t DecodeFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::string FrameRecord(RecordType type, absl::string_view payload) {
  std::string out;
  out.reserve(kRecordHeaderBytes + payload.size());
  const uint8_t t = static_cast<uint8_t>(type);
  PutFixed32(&out, RecordCrc(t, payload));
  PutFixed32(&out, static_cast<uint32_t>(payload.size()));
  out.push_back(static_cast<char>(t));
  out.append(payload.data(), payload.size());
  return out;
}

std::string SegmentFileName(uint64_t number) {
  return absl::StrFormat("%020u.log", number);
}

bool ParseSegmentFileName(absl::string_view name, uint64_t* number) {
  constexpr absl::string_view kSuffix = ".log";
  if (name.size() != 20 + kSuffix.size() || name.substr(20) != kSuffix) return false;
  const absl::string_view digits = name.substr(0, 20);
  for (char c : digits) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleAtoi(digits, number);
}

std::string EncodeSegmentHeader(uint64_t number) {
  std::string out(kSegmentMagic);
  PutFixed32(&out, kWalFormatVersion);
  PutFixed64(&out, number);
  return out;
}

bool DecodeSegmentHeader(absl::string_view payload, uint64_t* number,
                         uint32_t* version) {
  if (payload.size() != kSegmentMagic.size() + 12) return false;
  if (payload.substr(0, kSegmentMagic.size()) != kSegmentMagic) return false;
  *version = DecodeFixed32(payload.data() + kSegmentMagic.size());
  *number = DecodeFixed64(payload.data() + kSegmentMagic.size() + 4);
  return true;
}

}  // namespace moecast::durability
