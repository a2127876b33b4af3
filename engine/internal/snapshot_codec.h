// Snapshot codec: the little-endian, fixed-width encoding that
// Engine::SnapshotJob writes and Engine::RestoreJob reads, and the framing
// (magic, format version, length, CRC32C) around it. docs/snapshot-format.md
// describes the bytes.
//
//   SnapshotWriter w;
//   size_t s = w.BeginSection(SnapshotTag("HIST"));
//   w.PutI64(step);
//   w.PutDoubles(values);            // u64 count, then raw IEEE bits
//   w.EndSection(s);
//   std::string bytes = FrameSnapshot(w.Release());
//
//   MOECAST_ASSIGN_OR_RETURN(absl::string_view payload, UnframeSnapshot(bytes));
//   SnapshotReader r(payload, "snapshot");
//   SnapshotReader h = r.Section(SnapshotTag("HIST"), "history");
//   int64_t step = h.I64("step");
//   h.DoublesExact("values", absl::MakeSpan(values));
//   h.ExpectEnd();
//   if (!r.ok()) return r.status();
//
// Readers fail sticky: the first problem (bytes missing, a length over what
// is left or over a stated limit, a value out of range) is recorded, every
// later read returns zeros and reads nothing, and status() reports the first
// problem with the field's path ("layer 3 / bank / holt: level"). Every
// length is checked against the bytes that remain before anything is
// allocated, so a corrupt input cannot make a reader allocate more than the
// input's size. Sections read from a reader share its status.
//
// Doubles and floats travel as their raw bits: a restored value is the saved
// one bit for bit (NaN payloads and signed zeros included).
//
// Thread-safety: plain values; not thread-safe.
#ifndef MOECAST_ENGINE_INTERNAL_SNAPSHOT_CODEC_H_
#define MOECAST_ENGINE_INTERNAL_SNAPSHOT_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace moecast::internal {

// The 6 magic bytes every snapshot starts with.
inline constexpr char kSnapshotMagic[] = "MCSNAP";
// The format version this build writes and the only one it reads.
inline constexpr uint16_t kSnapshotVersion = 1;
// magic (6) + version (2) + payload length (8) + payload CRC32C (4) +
// header CRC32C (4).
inline constexpr size_t kSnapshotHeaderBytes = 24;

// A section tag from four ASCII characters, e.g. SnapshotTag("HIST").
constexpr uint32_t SnapshotTag(const char (&s)[5]) {
  return static_cast<uint32_t>(static_cast<unsigned char>(s[0])) |
         static_cast<uint32_t>(static_cast<unsigned char>(s[1])) << 8 |
         static_cast<uint32_t>(static_cast<unsigned char>(s[2])) << 16 |
         static_cast<uint32_t>(static_cast<unsigned char>(s[3])) << 24;
}

// CRC-32C (Castagnoli, reflected, init and final xor 0xffffffff), e.g.
// Crc32c("123456789") = 0xe3069283. SSE4.2 instructions where the CPU has
// them, a table otherwise.
uint32_t Crc32c(absl::string_view data);

// Prepends the header to `payload`.
std::string FrameSnapshot(absl::string_view payload);

class SnapshotWriter;
// The framed snapshot of what `w` holds, without copying the payload: `w`
// must have been constructed with kSnapshotHeaderBytes of room
// (SnapshotWriter::ForSnapshot()). Leaves `w` empty.
std::string SealSnapshot(SnapshotWriter& w);

// Checks the header and both checksums and returns the payload (a view into
// `bytes`). DATA_LOSS for too few bytes, a wrong magic, a header or payload
// checksum mismatch, or a length that does not match; INVALID_ARGUMENT for a
// format version other than kSnapshotVersion (the header itself intact).
absl::StatusOr<absl::string_view> UnframeSnapshot(absl::string_view bytes);

class SnapshotWriter {
 public:
  SnapshotWriter() = default;
  // A writer whose bytes start after room for the header (SealSnapshot).
  static SnapshotWriter ForSnapshot() { return SnapshotWriter(kSnapshotHeaderBytes); }
  SnapshotWriter(SnapshotWriter&&) = default;
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;

  void PutU8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void PutBool(bool v) { PutU8(v ? 1 : 0); }
  void PutU32(uint32_t v);
  void PutI32(int32_t v) { PutU32(static_cast<uint32_t>(v)); }
  void PutU64(uint64_t v);
  void PutI64(int64_t v) { PutU64(static_cast<uint64_t>(v)); }
  void PutDouble(double v);
  void PutFloat(float v);
  // u64 length, then the bytes.
  void PutString(absl::string_view s);
  // u8 presence, then the value if present.
  void PutOptionalDouble(const std::optional<double>& v);
  void PutOptionalI64(const std::optional<int64_t>& v);

  // u64 count, then the values (fixed width, little-endian).
  void PutDoubles(absl::Span<const double> v);
  void PutFloats(absl::Span<const float> v);
  void PutI64s(absl::Span<const int64_t> v);
  void PutI32s(absl::Span<const int> v);
  void PutU32s(absl::Span<const uint32_t> v);
  void PutStrings(absl::Span<const std::string> v);

  // The values without a count (the reader knows how many).
  void PutRawDoubles(const double* v, size_t n);
  void PutRawFloats(const float* v, size_t n);

  // u32 tag and a u64 length patched by EndSection(the returned token).
  size_t BeginSection(uint32_t tag);
  void EndSection(size_t token);

  size_t size() const { return out_.size(); }
  std::string Release() { return std::move(out_); }

 private:
  explicit SnapshotWriter(size_t room) : out_(room, '\0'), room_(room) {}
  friend std::string SealSnapshot(SnapshotWriter& w);

  void PutRaw(const void* data, size_t bytes) {
    out_.append(static_cast<const char*>(data), bytes);
  }
  std::string out_;
  size_t room_ = 0;  // header bytes reserved at the start of out_
};

class SnapshotReader {
 public:
  // Reads `data`; `context` prefixes error messages.
  SnapshotReader(absl::string_view data, std::string context);
  SnapshotReader(const SnapshotReader&) = delete;
  SnapshotReader& operator=(const SnapshotReader&) = delete;

  bool ok() const { return status_->ok(); }
  const absl::Status& status() const { return *status_; }
  size_t remaining() const { return data_.size() - pos_; }
  // The bytes not read yet (to look ahead with a reader of their own).
  absl::string_view rest() const { return data_.substr(pos_); }
  const std::string& context() const { return context_; }

  // Records DATA_LOSS "<context>: <field>: <message>" unless an error is
  // already recorded. Returns false, for `return r.Fail(...)` in bool code.
  bool Fail(absl::string_view field, absl::string_view message);
  // Records `status` (any code) unless an error is already recorded.
  void FailWith(absl::Status status);

  uint8_t U8(absl::string_view field);
  bool Bool(absl::string_view field);  // 0 or 1, else DATA_LOSS
  uint32_t U32(absl::string_view field);
  int32_t I32(absl::string_view field) {
    return static_cast<int32_t>(U32(field));
  }
  uint64_t U64(absl::string_view field);
  int64_t I64(absl::string_view field) {
    return static_cast<int64_t>(U64(field));
  }
  double Double(absl::string_view field);
  float Float(absl::string_view field);
  // An int in [lo, hi], else DATA_LOSS (and lo is returned).
  int IntIn(absl::string_view field, int lo, int hi);
  int64_t I64In(absl::string_view field, int64_t lo, int64_t hi);
  std::string String(absl::string_view field, size_t max_bytes);
  std::optional<double> OptionalDouble(absl::string_view field);
  std::optional<int64_t> OptionalI64(absl::string_view field);

  // A u64 count c <= max_count (and <= what the remaining bytes can hold at
  // `min_element_bytes` each), else DATA_LOSS and 0.
  size_t Count(absl::string_view field, size_t max_count,
               size_t min_element_bytes);

  // Counted arrays, at most `max_count` values.
  std::vector<double> Doubles(absl::string_view field, size_t max_count);
  std::vector<float> Floats(absl::string_view field, size_t max_count);
  std::vector<int64_t> I64s(absl::string_view field, size_t max_count);
  std::vector<int> I32s(absl::string_view field, size_t max_count);
  std::vector<uint32_t> U32s(absl::string_view field, size_t max_count);
  std::vector<std::string> Strings(absl::string_view field, size_t max_count,
                                   size_t max_bytes_each);
  // A counted array whose count must be exactly out.size(), into `out`.
  void DoublesExact(absl::string_view field, absl::Span<double> out);
  void FloatsExact(absl::string_view field, absl::Span<float> out);
  // Uncounted values (PutRaw*), exactly n.
  void RawDoubles(absl::string_view field, double* out, size_t n);
  void RawFloats(absl::string_view field, float* out, size_t n);

  // The next section, which must carry `tag`: a reader over its body that
  // shares this reader's status; `name` extends the context. On any error
  // the returned reader is empty (and failed).
  SnapshotReader Section(uint32_t tag, absl::string_view name);
  // DATA_LOSS if bytes are left unread (a section longer than its contents).
  void ExpectEnd();

 private:
  SnapshotReader(absl::string_view data, std::string context,
                 absl::Status* shared);
  // The next n bytes, or null (and the error recorded) if fewer are left.
  const char* Take(absl::string_view field, size_t n);

  absl::string_view data_;
  size_t pos_ = 0;
  std::string context_;
  absl::Status own_status_;
  absl::Status* status_;
};

}  // namespace moecast::internal

#endif  // MOECAST_ENGINE_INTERNAL_SNAPSHOT_CODEC_H_
