// LineReader: streams the lines of a text file, plain or gzip-compressed
// (detected from the content, so a .gz suffix is not required to read), in
// bounded memory.
//
//   MOECAST_ASSIGN_OR_RETURN(auto reader, LineReader::Open("a.counts.csv.gz"));
//   absl::string_view line;
//   while (reader->Next(&line)) { ... reader->line_number() ... }
//   MOECAST_RETURN_IF_ERROR(reader->status());   // I/O or gzip errors
//
// Lines are returned without their terminator ("\n" or "\r\n"). A line longer
// than `max_line_bytes` is an error, so a binary file cannot exhaust memory.
//
// Thread-safety: not thread-safe.
#ifndef MOECAST_ENGINE_TRACE_LINE_READER_H_
#define MOECAST_ENGINE_TRACE_LINE_READER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moecast {

class LineReader {
 public:
  static constexpr size_t kDefaultMaxLineBytes = 64 << 20;

  // Opens `path`. NOT_FOUND if it does not exist, PERMISSION_DENIED or
  // INVALID_ARGUMENT (a directory) otherwise, each naming the path.
  static absl::StatusOr<std::unique_ptr<LineReader>> Open(
      const std::string& path, size_t max_line_bytes = kDefaultMaxLineBytes);

  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Sets `*line` to the next line and returns true, or returns false at the
  // end of the file or on an error (then status() says which). `*line` is
  // valid until the next call.
  bool Next(absl::string_view* line);

  // OK, or DATA_LOSS (corrupt or truncated gzip, I/O error) or
  // RESOURCE_EXHAUSTED (line too long), naming the file and line.
  const absl::Status& status() const { return status_; }

  // 1-based number of the line last returned by Next (0 before the first).
  int64_t line_number() const { return line_number_; }

  const std::string& path() const { return path_; }

  // Compressed bytes consumed so far and the file's size, for progress.
  int64_t bytes_consumed() const;
  int64_t file_size() const { return file_size_; }

 private:
  LineReader(std::string path, void* gz, int64_t file_size,
             size_t max_line_bytes);
  bool Fill();

  std::string path_;
  void* gz_;  // gzFile; void* keeps zlib.h out of this header
  int64_t file_size_;
  size_t max_line_bytes_;
  std::string buffer_;
  size_t begin_ = 0;  // first unread byte in buffer_
  size_t end_ = 0;    // one past the last valid byte in buffer_
  bool eof_ = false;
  int64_t line_number_ = 0;
  absl::Status status_;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_TRACE_LINE_READER_H_
