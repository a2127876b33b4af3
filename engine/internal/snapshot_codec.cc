#include "engine/internal/snapshot_codec.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace moecast::internal {
namespace {

constexpr bool kLittleEndian = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;

// ---- CRC32C ---------------------------------------------------------------

struct Crc32cTable {
  uint32_t t[256];
  Crc32cTable() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
      t[i] = c;
    }
  }
};

uint32_t Crc32cTableUpdate(uint32_t crc, const unsigned char* p, size_t n) {
  static const Crc32cTable* table = new Crc32cTable();
  for (size_t i = 0; i < n; ++i) crc = table->t[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t Crc32cSse42Update(
    uint32_t crc, const unsigned char* p, size_t n) {
  uint64_t c = crc;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n > 0) {
    c32 = _mm_crc32_u8(c32, *p++);
    --n;
  }
  return c32;
}
#endif

// Fixed-width little-endian values: memcpy on little-endian hosts, bytes
// reversed otherwise.
template <typename T>
void StoreLe(T v, char* out) {
  std::memcpy(out, &v, sizeof(T));
  if (!kLittleEndian) std::reverse(out, out + sizeof(T));
}

template <typename T>
T LoadLe(const char* in) {
  char buf[sizeof(T)];
  std::memcpy(buf, in, sizeof(T));
  if (!kLittleEndian) std::reverse(buf, buf + sizeof(T));
  T v;
  std::memcpy(&v, buf, sizeof(T));
  return v;
}

template <typename T>
void AppendArray(std::string* out, const T* v, size_t n) {
  const size_t at = out->size();
  out->resize(at + n * sizeof(T));
  char* dst = out->data() + at;
  if (kLittleEndian) {
    if (n > 0) std::memcpy(dst, v, n * sizeof(T));
  } else {
    for (size_t i = 0; i < n; ++i) StoreLe(v[i], dst + i * sizeof(T));
  }
}

template <typename T>
void CopyArray(const char* src, T* out, size_t n) {
  if (kLittleEndian) {
    if (n > 0) std::memcpy(out, src, n * sizeof(T));
  } else {
    for (size_t i = 0; i < n; ++i) out[i] = LoadLe<T>(src + i * sizeof(T));
  }
}

}  // namespace

uint32_t Crc32c(absl::string_view data) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  uint32_t crc = 0xffffffffu;
#if defined(__x86_64__)
  static const bool has_sse42 = __builtin_cpu_supports("sse4.2");
  if (has_sse42) return Crc32cSse42Update(crc, p, data.size()) ^ 0xffffffffu;
#endif
  return Crc32cTableUpdate(crc, p, data.size()) ^ 0xffffffffu;
}

namespace {

void WriteHeader(char* header, absl::string_view payload) {
  std::memcpy(header, kSnapshotMagic, 6);
  StoreLe<uint16_t>(kSnapshotVersion, header + 6);
  StoreLe<uint64_t>(payload.size(), header + 8);
  StoreLe<uint32_t>(Crc32c(payload), header + 16);
  StoreLe<uint32_t>(Crc32c(absl::string_view(header, 20)), header + 20);
}

}  // namespace

std::string FrameSnapshot(absl::string_view payload) {
  std::string out(kSnapshotHeaderBytes, '\0');
  out.append(payload.data(), payload.size());
  WriteHeader(out.data(), absl::string_view(out).substr(kSnapshotHeaderBytes));
  return out;
}

std::string SealSnapshot(SnapshotWriter& w) {
  std::string out = std::move(w.out_);
  w.out_.clear();
  if (w.room_ != kSnapshotHeaderBytes) {  // not made by ForSnapshot()
    return FrameSnapshot(absl::string_view(out).substr(w.room_));
  }
  WriteHeader(out.data(), absl::string_view(out).substr(kSnapshotHeaderBytes));
  return out;
}

absl::StatusOr<absl::string_view> UnframeSnapshot(absl::string_view bytes) {
  if (bytes.size() < kSnapshotHeaderBytes) {
    if (bytes.substr(0, 6) != absl::string_view(kSnapshotMagic, 6).substr(0, bytes.size())) {
      return absl::DataLossError(
          "snapshot: not a moecast snapshot (it does not start with \"MCSNAP\")");
    }
    return absl::DataLossError(absl::StrCat(
        "snapshot: truncated: ", bytes.size(), " bytes, the header alone is ",
        kSnapshotHeaderBytes));
  }
  if (bytes.substr(0, 6) != absl::string_view(kSnapshotMagic, 6)) {
    return absl::DataLossError(
        "snapshot: not a moecast snapshot (it does not start with \"MCSNAP\")");
  }
  const uint32_t header_crc = LoadLe<uint32_t>(bytes.data() + 20);
  if (Crc32c(bytes.substr(0, 20)) != header_crc) {
    return absl::DataLossError("snapshot: header checksum mismatch (corrupt header)");
  }
  const uint16_t version = LoadLe<uint16_t>(bytes.data() + 6);
  if (version != kSnapshotVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot: format version ", version, " is not supported (this build "
        "reads version ", kSnapshotVersion, ")"));
  }
  const uint64_t length = LoadLe<uint64_t>(bytes.data() + 8);
  const uint64_t have = bytes.size() - kSnapshotHeaderBytes;
  if (length != have) {
    return absl::DataLossError(absl::StrCat(
        "snapshot: the header announces ", length, " payload bytes, ", have,
        length > have ? " are present (truncated)" : " are present (trailing bytes)"));
  }
  absl::string_view payload = bytes.substr(kSnapshotHeaderBytes);
  const uint32_t payload_crc = LoadLe<uint32_t>(bytes.data() + 16);
  if (Crc32c(payload) != payload_crc) {
    return absl::DataLossError("snapshot: payload checksum mismatch (corrupt data)");
  }
  return payload;
}

// ---- Writer ---------------------------------------------------------------

void SnapshotWriter::PutU32(uint32_t v) {
  char b[4];
  StoreLe(v, b);
  PutRaw(b, 4);
}

void SnapshotWriter::PutU64(uint64_t v) {
  char b[8];
  StoreLe(v, b);
  PutRaw(b, 8);
}

void SnapshotWriter::PutDouble(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  PutU64(bits);
}

void SnapshotWriter::PutFloat(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  PutU32(bits);
}

void SnapshotWriter::PutString(absl::string_view s) {
  PutU64(s.size());
  PutRaw(s.data(), s.size());
}

void SnapshotWriter::PutOptionalDouble(const std::optional<double>& v) {
  PutBool(v.has_value());
  if (v.has_value()) PutDouble(*v);
}

void SnapshotWriter::PutOptionalI64(const std::optional<int64_t>& v) {
  PutBool(v.has_value());
  if (v.has_value()) PutI64(*v);
}

void SnapshotWriter::PutDoubles(absl::Span<const double> v) {
  PutU64(v.size());
  AppendArray(&out_, v.data(), v.size());
}

void SnapshotWriter::PutFloats(absl::Span<const float> v) {
  PutU64(v.size());
  AppendArray(&out_, v.data(), v.size());
}

void SnapshotWriter::PutI64s(absl::Span<const int64_t> v) {
  PutU64(v.size());
  AppendArray(&out_, v.data(), v.size());
}

void SnapshotWriter::PutI32s(absl::Span<const int> v) {
  static_assert(sizeof(int) == 4, "int must be 32 bits");
  PutU64(v.size());
  AppendArray(&out_, v.data(), v.size());
}

void SnapshotWriter::PutU32s(absl::Span<const uint32_t> v) {
  PutU64(v.size());
  AppendArray(&out_, v.data(), v.size());
}

void SnapshotWriter::PutStrings(absl::Span<const std::string> v) {
  PutU64(v.size());
  for (const std::string& s : v) PutString(s);
}

void SnapshotWriter::PutRawDoubles(const double* v, size_t n) {
  AppendArray(&out_, v, n);
}

void SnapshotWriter::PutRawFloats(const float* v, size_t n) {
  AppendArray(&out_, v, n);
}

size_t SnapshotWriter::BeginSection(uint32_t tag) {
  PutU32(tag);
  const size_t at = out_.size();
  PutU64(0);
  return at;
}

void SnapshotWriter::EndSection(size_t token) {
  const uint64_t length = out_.size() - token - 8;
  StoreLe(length, out_.data() + token);
}

// ---- Reader ---------------------------------------------------------------

SnapshotReader::SnapshotReader(absl::string_view data, std::string context)
    : data_(data), context_(std::move(context)), status_(&own_status_) {}

SnapshotReader::SnapshotReader(absl::string_view data, std::string context,
                               absl::Status* shared)
    : data_(data), context_(std::move(context)), status_(shared) {}

bool SnapshotReader::Fail(absl::string_view field, absl::string_view message) {
  if (status_->ok()) {
    *status_ = absl::DataLossError(
        absl::StrCat(context_, field.empty() ? "" : ": ", field, ": ", message));
  }
  pos_ = data_.size();
  return false;
}

void SnapshotReader::FailWith(absl::Status status) {
  if (status_->ok()) *status_ = std::move(status);
  pos_ = data_.size();
}

const char* SnapshotReader::Take(absl::string_view field, size_t n) {
  if (!status_->ok()) return nullptr;
  if (n > remaining()) {
    Fail(field, absl::StrCat("truncated: needs ", n, " bytes, ", remaining(),
                             " left"));
    return nullptr;
  }
  const char* p = data_.data() + pos_;
  pos_ += n;
  return p;
}

uint8_t SnapshotReader::U8(absl::string_view field) {
  const char* p = Take(field, 1);
  return p == nullptr ? 0 : static_cast<uint8_t>(*p);
}

bool SnapshotReader::Bool(absl::string_view field) {
  const uint8_t v = U8(field);
  if (v > 1) Fail(field, absl::StrCat("boolean byte is ", v));
  return v == 1;
}

uint32_t SnapshotReader::U32(absl::string_view field) {
  const char* p = Take(field, 4);
  return p == nullptr ? 0 : LoadLe<uint32_t>(p);
}

uint64_t SnapshotReader::U64(absl::string_view field) {
  const char* p = Take(field, 8);
  return p == nullptr ? 0 : LoadLe<uint64_t>(p);
}

double SnapshotReader::Double(absl::string_view field) {
  const uint64_t bits = U64(field);
  double v;
  std::memcpy(&v, &bits, 8);
  return v;
}

float SnapshotReader::Float(absl::string_view field) {
  const uint32_t bits = U32(field);
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

int SnapshotReader::IntIn(absl::string_view field, int lo, int hi) {
  const int32_t v = I32(field);
  if (v < lo || v > hi) {
    Fail(field, absl::StrCat(v, " is outside [", lo, ", ", hi, "]"));
    return lo;
  }
  return v;
}

int64_t SnapshotReader::I64In(absl::string_view field, int64_t lo, int64_t hi) {
  const int64_t v = I64(field);
  if (v < lo || v > hi) {
    Fail(field, absl::StrCat(v, " is outside [", lo, ", ", hi, "]"));
    return lo;
  }
  return v;
}

size_t SnapshotReader::Count(absl::string_view field, size_t max_count,
                             size_t min_element_bytes) {
  const uint64_t c = U64(field);
  if (!ok()) return 0;
  if (c > max_count) {
    Fail(field, absl::StrCat("count ", c, " exceeds the limit ", max_count));
    return 0;
  }
  if (min_element_bytes > 0 && c > remaining() / min_element_bytes) {
    Fail(field, absl::StrCat("truncated: count ", c, " needs at least ",
                             c * min_element_bytes, " bytes, ", remaining(),
                             " left"));
    return 0;
  }
  return static_cast<size_t>(c);
}

std::string SnapshotReader::String(absl::string_view field, size_t max_bytes) {
  const size_t n = Count(field, max_bytes, 1);
  const char* p = Take(field, n);
  return p == nullptr ? std::string() : std::string(p, n);
}

std::optional<double> SnapshotReader::OptionalDouble(absl::string_view field) {
  if (!Bool(field)) return std::nullopt;
  const double v = Double(field);
  if (!ok()) return std::nullopt;
  return v;
}

std::optional<int64_t> SnapshotReader::OptionalI64(absl::string_view field) {
  if (!Bool(field)) return std::nullopt;
  const int64_t v = I64(field);
  if (!ok()) return std::nullopt;
  return v;
}

// Every counted array reads the same way.
#define MOECAST_SNAPSHOT_COUNTED(Name, T)                                    \
  std::vector<T> SnapshotReader::Name(absl::string_view field,               \
                                      size_t max_count) {                    \
    const size_t n = Count(field, max_count, sizeof(T));                     \
    const char* p = Take(field, n * sizeof(T));                              \
    if (p == nullptr) return {};                                             \
    std::vector<T> v(n);                                                     \
    CopyArray(p, v.data(), n);                                               \
    return v;                                                                \
  }

MOECAST_SNAPSHOT_COUNTED(Doubles, double)
MOECAST_SNAPSHOT_COUNTED(Floats, float)
MOECAST_SNAPSHOT_COUNTED(I64s, int64_t)
MOECAST_SNAPSHOT_COUNTED(I32s, int)
MOECAST_SNAPSHOT_COUNTED(U32s, uint32_t)

#undef MOECAST_SNAPSHOT_COUNTED

std::vector<std::string> SnapshotReader::Strings(absl::string_view field,
                                                 size_t max_count,
                                                 size_t max_bytes_each) {
  const size_t n = Count(field, max_count, 8);
  std::vector<std::string> out;
  for (size_t i = 0; i < n && ok(); ++i) {
    out.push_back(String(field, max_bytes_each));
  }
  if (!ok()) out.clear();
  return out;
}

void SnapshotReader::DoublesExact(absl::string_view field,
                                  absl::Span<double> out) {
  const uint64_t n = U64(field);
  if (!ok()) return;
  if (n != out.size()) {
    Fail(field, absl::StrCat("has ", n, " values, expected ", out.size()));
    return;
  }
  RawDoubles(field, out.data(), out.size());
}

void SnapshotReader::FloatsExact(absl::string_view field,
                                 absl::Span<float> out) {
  const uint64_t n = U64(field);
  if (!ok()) return;
  if (n != out.size()) {
    Fail(field, absl::StrCat("has ", n, " values, expected ", out.size()));
    return;
  }
  RawFloats(field, out.data(), out.size());
}

void SnapshotReader::RawDoubles(absl::string_view field, double* out, size_t n) {
  if (n > remaining() / sizeof(double)) {
    Fail(field, absl::StrCat("truncated: needs ", n, " doubles, ", remaining(),
                             " bytes left"));
    return;
  }
  const char* p = Take(field, n * sizeof(double));
  if (p != nullptr) CopyArray(p, out, n);
}

void SnapshotReader::RawFloats(absl::string_view field, float* out, size_t n) {
  if (n > remaining() / sizeof(float)) {
    Fail(field, absl::StrCat("truncated: needs ", n, " floats, ", remaining(),
                             " bytes left"));
    return;
  }
  const char* p = Take(field, n * sizeof(float));
  if (p != nullptr) CopyArray(p, out, n);
}

SnapshotReader SnapshotReader::Section(uint32_t tag, absl::string_view name) {
  std::string context =
      context_.empty() ? std::string(name) : absl::StrCat(context_, " / ", name);
  const uint32_t got = U32("section tag");
  const uint64_t length = U64("section length");
  if (ok() && got != tag) {
    Fail(name, absl::StrCat("expected section tag 0x", absl::Hex(tag),
                            ", found 0x", absl::Hex(got)));
  }
  if (ok() && length > remaining()) {
    Fail(name, absl::StrCat("truncated: section of ", length, " bytes, ",
                            remaining(), " left"));
  }
  if (!ok()) return SnapshotReader(absl::string_view(), std::move(context), status_);
  const absl::string_view body = data_.substr(pos_, length);
  pos_ += length;
  return SnapshotReader(body, std::move(context), status_);
}

void SnapshotReader::ExpectEnd() {
  if (ok() && remaining() != 0) {
    Fail("", absl::StrCat(remaining(), " unread bytes at the end"));
  }
}

}  // namespace moecast::internal
