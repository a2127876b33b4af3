// WalReader: iterates over the records of one log segment (or manifest) held
// in memory, and stops at the first record that is not whole and intact.
//
//   WalReader reader(file_bytes);
//   WalRecord r;
//   while (reader.Next(&r)) Apply(r.type, r.payload);
//   if (reader.corrupt()) {
//     // reader.good_bytes(): where the intact prefix ends (cut the file
//     // there); reader.problem(): "offset 1234: checksum mismatch ..."
//   }
//
// A clean end (the data ends exactly after a record) is not corrupt. An
// incomplete record at the end (a torn write: fewer bytes than its header or
// its length promise), a length beyond kMaxRecordPayloadBytes, an unknown
// type and a checksum mismatch all stop the reader with corrupt() true; the
// reader never reads past the first bad record, since its length cannot be
// trusted.
//
// Thread-safety: not thread-safe; the data must outlive the reader.
#ifndef MOECAST_ENGINE_DURABILITY_WAL_READER_H_
#define MOECAST_ENGINE_DURABILITY_WAL_READER_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "engine/durability/wal_format.h"

namespace moecast::durability {

struct WalRecord {
  RecordType type = RecordType::kSegmentHeader;
  absl::string_view payload;  // points into the reader's data
  uint64_t offset = 0;        // of the record's header in the data
};

class WalReader {
 public:
  explicit WalReader(absl::string_view data) : data_(data) {}

  // Fills `*out` with the next intact record and returns true; false at the
  // end of the data or at the first bad record (then corrupt() is true).
  bool Next(WalRecord* out);

  // Bytes from the start through the last intact record returned.
  uint64_t good_bytes() const { return pos_; }
  bool corrupt() const { return !problem_.empty(); }
  // Empty, or what is wrong and where ("offset N: ...; M bytes dropped").
  const std::string& problem() const { return problem_; }

 private:
  bool Fail(std::string what);

  absl::string_view data_;
  uint64_t pos_ = 0;
  std::string problem_;
};

}  // namespace moecast::durability

#endif  // MOECAST_ENGINE_DURABILITY_WAL_READER_H_
