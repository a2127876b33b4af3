#include "engine/trace/line_reader.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/testing/status_matchers.h"
#include "engine/testing/temp_files.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::moecast::testing::TempPath;
using ::moecast::testing::WriteFile;
using ::moecast::testing::WriteGzipFile;
using ::testing::StartsWith;

constexpr size_t kMiB = 1 << 20;




std::string ReadRaw(const std::string& path) {
  std::string data;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return data;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) data.append(buf, n);
  std::fclose(f);
  return data;
}

// All lines of `reader` until Next returns false.
std::vector<std::string> ReadLines(LineReader* reader) {
  std::vector<std::string> lines;
  absl::string_view line;
  while (reader->Next(&line)) lines.emplace_back(line);
  return lines;
}

// Opens `path` and returns all its lines; fails the test on any error.
std::vector<std::string> ReadAllLines(const std::string& path) {
  auto reader = LineReader::Open(path);
  EXPECT_OK(reader);
  if (!reader.ok()) return {};
  std::vector<std::string> lines = ReadLines(reader->get());
  EXPECT_OK((*reader)->status());
  return lines;
}

TEST(LineReaderTest, ReadsLinesAndCountsThem) {
  const std::string content = "a,b\n1,2\n\n3,4\n";
  const std::string path = WriteFile("plain.txt", content);
  ASSERT_OK_AND_ASSIGN(auto reader, LineReader::Open(path));
  EXPECT_EQ(reader->path(), path);
  EXPECT_EQ(reader->file_size(), static_cast<int64_t>(content.size()));
  EXPECT_EQ(reader->line_number(), 0);
  absl::string_view line;
  const char* const want[] = {"a,b", "1,2", "", "3,4"};
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(reader->Next(&line)) << i;
    EXPECT_EQ(line, want[i]);
    EXPECT_EQ(reader->line_number(), i + 1);
  }
  EXPECT_FALSE(reader->Next(&line));
  EXPECT_FALSE(reader->Next(&line));  // stays at the end
  EXPECT_EQ(reader->line_number(), 4);
  EXPECT_OK(reader->status());
  EXPECT_EQ(reader->bytes_consumed(), reader->file_size());
}

TEST(LineReaderTest, StripsCrLf) {
  EXPECT_THAT(ReadAllLines(WriteFile("crlf.txt", "a\r\nb\r\n\r\nc\r\n")),
              ElementsAre("a", "b", "", "c"));
  // A lone '\r' inside a line is kept; only the terminator is stripped.
  EXPECT_THAT(ReadAllLines(WriteFile("cr_inside.txt", "a\rb\n")),
              ElementsAre("a\rb"));
}

TEST(LineReaderTest, LastLineWithoutNewline) {
  EXPECT_THAT(ReadAllLines(WriteFile("no_final_nl.txt", "a\nlast")),
              ElementsAre("a", "last"));
  EXPECT_THAT(ReadAllLines(WriteFile("no_final_crlf.txt", "a\r\nlast\r")),
              ElementsAre("a", "last"));
  EXPECT_THAT(ReadAllLines(WriteFile("single.txt", "x")), ElementsAre("x"));
}

TEST(LineReaderTest, TrailingEmptyLinesAreLines) {
  EXPECT_THAT(ReadAllLines(WriteFile("trailing.txt", "a\n\n\n")),
              ElementsAre("a", "", ""));
}

TEST(LineReaderTest, EmptyFile) {
  const std::string path = WriteFile("empty.txt", "");
  ASSERT_OK_AND_ASSIGN(auto reader, LineReader::Open(path));
  absl::string_view line;
  EXPECT_FALSE(reader->Next(&line));
  EXPECT_EQ(reader->line_number(), 0);
  EXPECT_OK(reader->status());
  EXPECT_EQ(reader->file_size(), 0);
}

TEST(LineReaderTest, ReadsGzipWithOrWithoutSuffix) {
  const std::string content = "step,layer\n0,1\r\n2,3";
  EXPECT_THAT(ReadAllLines(WriteGzipFile("c.csv.gz", content)),
              ElementsAre("step,layer", "0,1", "2,3"));
  EXPECT_THAT(ReadAllLines(WriteGzipFile("c_gzip_no_suffix.csv", content)),
              ElementsAre("step,layer", "0,1", "2,3"));
  // A plain file named .gz is read as plain text.
  EXPECT_THAT(ReadAllLines(WriteFile("plain_named.gz", content)),
              ElementsAre("step,layer", "0,1", "2,3"));
  // An empty gzip stream is an empty file.
  EXPECT_THAT(ReadAllLines(WriteGzipFile("empty.gz", "")), ElementsAre());
}

TEST(LineReaderTest, GzipProgressReachesFileSize) {
  std::string content;
  for (int i = 0; i < 100000; ++i) content += std::to_string(i) + ",x\n";
  const std::string path = WriteGzipFile("progress.gz", content);
  ASSERT_OK_AND_ASSIGN(auto reader, LineReader::Open(path));
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(reader->file_size(), st.st_size);
  absl::string_view line;
  int64_t n = 0;
  int64_t last_consumed = 0;
  while (reader->Next(&line)) {
    ASSERT_EQ(line, std::to_string(n) + ",x");
    ++n;
    const int64_t consumed = reader->bytes_consumed();
    ASSERT_GE(consumed, last_consumed);
    ASSERT_LE(consumed, reader->file_size());
    last_consumed = consumed;
  }
  EXPECT_OK(reader->status());
  EXPECT_EQ(n, 100000);
  EXPECT_EQ(reader->line_number(), 100000);
  EXPECT_EQ(reader->bytes_consumed(), reader->file_size());
}

TEST(LineReaderTest, LinesLongerThanTheReadChunk) {
  // 3 MiB line between short ones: spans several 1 MiB reads.
  std::string big(3 * kMiB, 'x');
  for (size_t i = 0; i < big.size(); i += 4099) big[i] = 'a' + (i % 26);
  const std::string content = "head\n" + big + "\r\ntail\n" + big;
  for (bool gz : {false, true}) {
    SCOPED_TRACE(gz ? "gzip" : "plain");
    const std::string path =
        gz ? WriteGzipFile("long.gz", content) : WriteFile("long.txt", content);
    ASSERT_OK_AND_ASSIGN(auto reader, LineReader::Open(path));
    absl::string_view line;
    ASSERT_TRUE(reader->Next(&line));
    EXPECT_EQ(line, "head");
    ASSERT_TRUE(reader->Next(&line));
    EXPECT_EQ(line.size(), big.size());
    EXPECT_TRUE(line == big);
    EXPECT_EQ(reader->line_number(), 2);
    ASSERT_TRUE(reader->Next(&line));
    EXPECT_EQ(line, "tail");
    ASSERT_TRUE(reader->Next(&line));  // last line, no terminator
    EXPECT_TRUE(line == big);
    EXPECT_EQ(reader->line_number(), 4);
    EXPECT_FALSE(reader->Next(&line));
    EXPECT_OK(reader->status());
  }
}

TEST(LineReaderTest, TerminatorSplitAcrossReadChunks) {
  // The 1 MiB read boundary falls between '\r' and '\n', and elsewhere
  // exactly after a '\n'.
  std::string content(kMiB - 1, 'a');
  content += "\r\n";
  content += std::string(kMiB - 1, 'b');
  content += "\n";
  content += "c\n";
  const std::vector<std::string> lines =
      ReadAllLines(WriteFile("boundary.txt", content));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], std::string(kMiB - 1, 'a'));
  EXPECT_EQ(lines[1], std::string(kMiB - 1, 'b'));
  EXPECT_EQ(lines[2], "c");
}

TEST(LineReaderTest, ManyLinesAcrossChunks) {
  std::string content;
  for (int i = 0; i < 400000; ++i) content += "row" + std::to_string(i) + "\n";
  ASSERT_GT(content.size(), 3 * kMiB);
  const std::vector<std::string> lines =
      ReadAllLines(WriteFile("many.txt", content));
  ASSERT_EQ(lines.size(), 400000u);
  for (int i = 0; i < 400000; ++i) {
    ASSERT_EQ(lines[i], "row" + std::to_string(i)) << i;
  }
}

TEST(LineReaderTest, LineLongerThanMaxIsResourceExhausted) {
  const std::string path = WriteFile(
      "too_long.txt", "ok\n" + std::string(3 * kMiB, 'x') + "\nmore\n");
  ASSERT_OK_AND_ASSIGN(auto reader, LineReader::Open(path, kMiB));
  absl::string_view line;
  ASSERT_TRUE(reader->Next(&line));
  EXPECT_EQ(line, "ok");
  EXPECT_FALSE(reader->Next(&line));
  EXPECT_THAT(
      reader->status(),
      StatusIs(absl::StatusCode::kResourceExhausted,
               StartsWith(path + ":2: line is longer than 1048576 bytes")));
  EXPECT_FALSE(reader->Next(&line));  // the error sticks
  EXPECT_THAT(reader->status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr(":2:")));
}

TEST(LineReaderTest, LongLineWithinMaxIsFine) {
  const std::string big(2 * kMiB, 'y');
  const std::string path = WriteFile("within_max.txt", big + "\nz\n");
  ASSERT_OK_AND_ASSIGN(auto reader, LineReader::Open(path, 4 * kMiB));
  EXPECT_THAT(ReadLines(reader.get()), ElementsAre(big, "z"));
  EXPECT_OK(reader->status());
}

// Regression: max_line_bytes was once checked only before reading another
// chunk, so a long line whose terminator was already buffered got through.
TEST(LineReaderTest, ShortLineOverSmallMaxIsResourceExhausted) {
  for (const std::string& content :
       {std::string(200, 'x') + "\n", std::string(200, 'x')}) {
    const std::string path = WriteFile("over_small_max.txt", content);
    ASSERT_OK_AND_ASSIGN(auto reader, LineReader::Open(path, 100));
    absl::string_view line;
    EXPECT_FALSE(reader->Next(&line));
    EXPECT_THAT(
        reader->status(),
        StatusIs(absl::StatusCode::kResourceExhausted,
                 StartsWith(path + ":1: line is longer than 100 bytes")));
  }
}

TEST(LineReaderTest, TruncatedGzipIsDataLoss) {
  std::string content;
  for (int i = 0; i < 20000; ++i) {
    content +=
        std::to_string(i) + "," + std::to_string(i * 7919 % 10007) + "\n";
  }
  const std::string full = ReadRaw(WriteGzipFile("whole.gz", content));
  ASSERT_GT(full.size(), 1000u);
  const std::string path =
      WriteFile("truncated.gz", full.substr(0, full.size() / 2));
  ASSERT_OK_AND_ASSIGN(auto reader, LineReader::Open(path));
  absl::string_view line;
  int64_t n = 0;
  while (reader->Next(&line)) {
    // Every line returned is a complete line of the original.
    ASSERT_EQ(line, std::to_string(n) + "," + std::to_string(n * 7919 % 10007));
    ++n;
  }
  EXPECT_LT(n, 20000);
  EXPECT_THAT(
      reader->status(),
      StatusIs(absl::StatusCode::kDataLoss,
               StartsWith(absl::StrCat(path, ":", n + 1, ": cannot read"))));
  EXPECT_THAT(reader->status().message(), HasSubstr("truncated gzip"));
}

TEST(LineReaderTest, TruncatedGzipTrailerIsDataLoss) {
  // Only the 8-byte CRC/size trailer is missing: all data decompresses.
  const std::string full = ReadRaw(WriteGzipFile("whole2.gz", "a\nb\n"));
  const std::string path =
      WriteFile("no_trailer.gz", full.substr(0, full.size() - 8));
  ASSERT_OK_AND_ASSIGN(auto reader, LineReader::Open(path));
  ReadLines(reader.get());
  EXPECT_THAT(reader->status(),
              StatusIs(absl::StatusCode::kDataLoss, StartsWith(path + ":")));
}

TEST(LineReaderTest, CorruptGzipIsDataLoss) {
  std::string content;
  for (int i = 0; i < 5000; ++i) content += "line " + std::to_string(i) + "\n";
  std::string data = ReadRaw(WriteGzipFile("whole3.gz", content));
  ASSERT_GT(data.size(), 100u);
  for (size_t i = 20; i < data.size() - 20; i += 7) data[i] ^= 0x5a;
  const std::string path = WriteFile("corrupt.gz", data);
  ASSERT_OK_AND_ASSIGN(auto reader, LineReader::Open(path));
  ReadLines(reader.get());
  EXPECT_THAT(reader->status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(StartsWith(path + ":"),
                             HasSubstr("corrupt or truncated gzip"))));
}

TEST(LineReaderTest, OpenErrors) {
  const std::string missing = TempPath("does_not_exist.csv");
  EXPECT_THAT(LineReader::Open(missing),
              StatusIs(absl::StatusCode::kNotFound,
                       StartsWith(missing + ": no such file")));
  const std::string dir = ::testing::TempDir();
  EXPECT_THAT(LineReader::Open(dir),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith(dir + ": is a directory")));
}

}  // namespace
}  // namespace moecast
