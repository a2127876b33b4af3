// The framing shared by the write-ahead log and the snapshot manifests.
//
// A log is a sequence of segment files DIR/wal/<20-digit number>.log. Each
// file is a sequence of records:
//
//   +-----------+------------+--------+-------------------+
//   | crc (4)   | length (4) | type(1)| payload (length)  |
//   +-----------+------------+--------+-------------------+
//
// little-endian; crc is the masked CRC-32 (zlib's polynomial) of the type
// byte and the payload. Unlike LevelDB there are no 32 KiB blocks: records
// are whole (a step of a large model is hundreds of KiB), and a reader cuts
// the file at the first record that is incomplete (a torn write), whose
// length is out of range, whose type is unknown or whose checksum fails. The
// first record of every segment is a kSegmentHeader naming the format
// version and the segment's number, so a file renamed or copied into the
// wrong place is noticed.
//
// Thread-safety: constants and pure functions.
#ifndef MOECAST_ENGINE_DURABILITY_WAL_FORMAT_H_
#define MOECAST_ENGINE_DURABILITY_WAL_FORMAT_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace moecast::durability {

enum class RecordType : uint8_t {
  kSegmentHeader = 1,
  kRegisterJob = 2,
  kDeleteJob = 3,
  kIngest = 4,
  kFlushPending = 5,
  kPoll = 6,          // Engine::Poll committed timed-out steps
  kExpireJobs = 7,    // Engine::ExpireIdleJobs deleted jobs
  kManifest = 8,      // a snapshot set's manifest (snapshot_store.h)
  kRestoreJob = 9,    // Engine::RestoreJob through the durable engine
};
inline constexpr uint8_t kMaxRecordType = 9;

inline constexpr size_t kRecordHeaderBytes = 9;
// Largest payload accepted (a corrupt length field beyond it cuts the log).
inline constexpr uint32_t kMaxRecordPayloadBytes = 1u << 30;
inline constexpr uint32_t kWalFormatVersion = 1;
inline constexpr absl::string_view kSegmentMagic = "moecast-wal";

// CRC-32 of `type` followed by `payload`, masked (LevelDB's rotation plus a
// constant, so that a CRC stored inside checksummed data does not make a
// checksum of zero likely).
uint32_t RecordCrc(uint8_t type, absl::string_view payload);

// Header + payload, ready to append.
std::string FrameRecord(RecordType type, absl::string_view payload);

// Little-endian fixed-width helpers.
void PutFixed32(std::string* out, uint32_t v);
void PutFixed64(std::string* out, uint64_t v);
uint32_t DecodeFixed32(const char* p);
uint64_t DecodeFixed64(const char* p);

// "<20-digit number>.log", and its inverse (false for any other name).
std::string SegmentFileName(uint64_t number);
bool ParseSegmentFileName(absl::string_view name, uint64_t* number);

// The payload of a kSegmentHeader record.
std::string EncodeSegmentHeader(uint64_t number);
bool DecodeSegmentHeader(absl::string_view payload, uint64_t* number, uint32_t* version);

}  // namespace moecast::durability

#endif  // MOECAST_ENGINE_DURABILITY_WAL_FORMAT_H_
