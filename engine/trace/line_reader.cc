#include "engine/trace/line_reader.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace moecast {
namespace {

constexpr size_t kChunkBytes = 1 << 20;

}  // namespace

absl::StatusOr<std::unique_ptr<LineReader>> LineReader::Open(
    const std::string& path, size_t max_line_bytes) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": is a directory, not a trace file"));
  }
  gzFile gz = gzopen(path.c_str(), "rb");
  if (gz == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  gzbuffer(gz, 256 << 10);
  return std::unique_ptr<LineReader>(
      new LineReader(path, gz, static_cast<int64_t>(st.st_size),
                     max_line_bytes));
}

LineReader::LineReader(std::string path, void* gz, int64_t file_size,
                       size_t max_line_bytes)
    : path_(std::move(path)),
      gz_(gz),
      file_size_(file_size),
      max_line_bytes_(max_line_bytes) {}

LineReader::~LineReader() { gzclose(static_cast<gzFile>(gz_)); }

int64_t LineReader::bytes_consumed() const {
  const z_off_t off = gzoffset(static_cast<gzFile>(gz_));
  return off < 0 ? 0 : static_cast<int64_t>(off);
}

// Reads more bytes after the unread part of the buffer. Returns false at the
// end of the file or on an error.
bool LineReader::Fill() {
  if (eof_) return false;
  if (begin_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (buffer_.size() < end_ + kChunkBytes) buffer_.resize(end_ + kChunkBytes);
  gzFile gz = static_cast<gzFile>(gz_);
  const int n = gzread(gz, buffer_.data() + end_, kChunkBytes);
  if (n < 0) {
    int errnum = 0;
    const char* msg = gzerror(gz, &errnum);
    status_ = absl::DataLossError(absl::StrCat(
        path_, ":", line_number_ + 1, ": cannot read: ",
        errnum == Z_ERRNO ? std::strerror(errno) : msg,
        " (corrupt or truncated gzip data?)"));
    eof_ = true;
    return false;
  }
  if (n == 0) {
    int errnum = 0;
    const char* msg = gzerror(gz, &errnum);
    if (errnum != Z_OK && errnum != Z_STREAM_END) {
      status_ = absl::DataLossError(
          absl::StrCat(path_, ":", line_number_ + 1, ": cannot read: ", msg,
                       " (corrupt or truncated gzip data?)"));
    }
    eof_ = true;
    return false;
  }
  end_ += static_cast<size_t>(n);
  return true;
}

bool LineReader::Next(absl::string_view* line) {
  if (!status_.ok()) return false;
  size_t scan_from = begin_;
  while (true) {
    const void* nl = std::memchr(buffer_.data() + scan_from, '\n',
                                 end_ - scan_from);
    if (nl != nullptr) {
      const size_t pos = static_cast<const char*>(nl) - buffer_.data();
      if (pos - begin_ > max_line_bytes_) {
        status_ = absl::ResourceExhaustedError(
            absl::StrCat(path_, ":", line_number_ + 1,
                         ": line is longer than ", max_line_bytes_, " bytes"));
        return false;
      }
      size_t stop = pos;
      if (stop > begin_ && buffer_[stop - 1] == '\r') --stop;
      *line = absl::string_view(buffer_.data() + begin_, stop - begin_);
      begin_ = pos + 1;
      ++line_number_;
      return true;
    }
    if (end_ - begin_ > max_line_bytes_) {
      status_ = absl::ResourceExhaustedError(
          absl::StrCat(path_, ":", line_number_ + 1, ": line is longer than ",
                       max_line_bytes_, " bytes"));
      return false;
    }
    const size_t scanned = end_ - begin_;
    if (!Fill()) {
      if (!status_.ok()) return false;
      if (end_ > begin_) {  // last line without a terminator
        if (end_ - begin_ > max_line_bytes_) {
          status_ = absl::ResourceExhaustedError(absl::StrCat(
              path_, ":", line_number_ + 1, ": line is longer than ",
              max_line_bytes_, " bytes"));
          return false;
        }
        size_t stop = end_;
        if (buffer_[stop - 1] == '\r') --stop;
        *line = absl::string_view(buffer_.data() + begin_, stop - begin_);
        begin_ = end_;
        ++line_number_;
        return true;
      }
      return false;
    }
    scan_from = begin_ + scanned;
  }
}

}  // namespace moecast
