// Helpers shared by the libFuzzer targets in fuzz/.
//
//   ByteReader in(data, size);
//   int layers = in.IntInRange(1, 4);     // consumes bytes from the front
//   std::string rest = in.Rest();          // the remaining bytes
//
// A reader that runs out of bytes returns the range's minimum (or false /
// empty), so every input decodes to something.
//
// TempDir: one private directory per process under $TEST_TMPDIR / $TMPDIR /
// /tmp, for targets whose code under test reads files.
//
// Thread-safety: not thread-safe (fuzz targets run on one thread).
#ifndef MOECAST_FUZZ_FUZZ_UTIL_H_
#define MOECAST_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace moecast::fuzz {

class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t remaining() const { return size_ - pos_; }

  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  bool Bool() { return (Byte() & 1) != 0; }

  // A value in [lo, hi] from one or two bytes.
  int64_t IntInRange(int64_t lo, int64_t hi) {
    if (hi <= lo) return lo;
    const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
    uint64_t v = Byte();
    if (span > 256) v = (v << 8) | Byte();
    return lo + static_cast<int64_t>(v % span);
  }

  // `n` bytes (fewer at the end).
  std::string Bytes(size_t n) {
    n = n < remaining() ? n : remaining();
    std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }

  std::string Rest() { return Bytes(remaining()); }

  // Bytes up to (not including) the next `sep`, which is consumed; the
  // rest when there is none.
  std::string Until(char sep) {
    const void* hit = pos_ < size_ ? std::memchr(data_ + pos_, sep, size_ - pos_)
                                   : nullptr;
    if (hit == nullptr) return Rest();
    const size_t n = static_cast<const uint8_t*>(hit) - (data_ + pos_);
    std::string out = Bytes(n);
    ++pos_;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// A private directory for this process, created on first use.
inline const std::string& TempDir() {
  static const std::string* dir = [] {
    const char* base = std::getenv("TEST_TMPDIR");
    if (base == nullptr || *base == '\0') base = std::getenv("TMPDIR");
    if (base == nullptr || *base == '\0') base = "/tmp";
    std::string pattern = std::string(base) + "/moecast_fuzz.XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    return new std::string(pattern);
  }();
  return *dir;
}

// Writes `bytes` to TempDir()/name and returns the path.
inline std::string WriteTempFile(const std::string& name,
                                 const std::string& bytes) {
  const std::string path = TempDir() + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) std::abort();
  return path;
}

// Aborts (a crash the fuzzer reports) when an invariant does not hold.
#define MOECAST_FUZZ_CHECK(cond)                                          \
  do {                                                                    \
    if (!(cond)) {                                                        \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,     \
                   __LINE__, #cond);                                      \
      std::abort();                                                       \
    }                                                                     \
  } while (0)

}  // namespace moecast::fuzz

#endif  // MOECAST_FUZZ_FUZZ_UTIL_H_
