#include "engine/internal/snapshot_codec.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast::internal {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

TEST(Crc32cTest, KnownValues) {
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c("123456789"), 0xe3069283u);
  // Long input: the 8-byte path and the byte tail agree with the table.
  std::string a(1000, 'a');
  EXPECT_EQ(Crc32c(a), Crc32c(a.substr(0, 1000)));
  EXPECT_NE(Crc32c(a), Crc32c(a.substr(0, 999)));
}

TEST(SnapshotCodecTest, RoundTripsEveryType) {
  SnapshotWriter w;
  const size_t s = w.BeginSection(SnapshotTag("TEST"));
  w.PutU8(7);
  w.PutBool(true);
  w.PutI32(-5);
  w.PutI64(-(int64_t{1} << 40));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  w.PutDouble(-0.0);
  w.PutDouble(nan);
  w.PutFloat(1.5f);
  w.PutString("hello");
  w.PutOptionalDouble(std::nullopt);
  w.PutOptionalI64(42);
  w.PutDoubles(std::vector<double>{1, 2, 3});
  w.PutFloats(std::vector<float>{4, 5});
  w.PutI32s(std::vector<int>{-1, 1});
  w.PutStrings(std::vector<std::string>{"a", "bc"});
  w.EndSection(s);
  const std::string bytes = FrameSnapshot(w.Release());
  ASSERT_OK_AND_ASSIGN(absl::string_view payload, UnframeSnapshot(bytes));
  SnapshotReader r(payload, "t");
  SnapshotReader b = r.Section(SnapshotTag("TEST"), "test");
  EXPECT_EQ(b.U8("u8"), 7);
  EXPECT_TRUE(b.Bool("bool"));
  EXPECT_EQ(b.I32("i32"), -5);
  EXPECT_EQ(b.I64("i64"), -(int64_t{1} << 40));
  const double z = b.Double("zero");
  EXPECT_TRUE(std::signbit(z));
  EXPECT_TRUE(std::isnan(b.Double("nan")));
  EXPECT_EQ(b.Float("float"), 1.5f);
  EXPECT_EQ(b.String("string", 100), "hello");
  EXPECT_FALSE(b.OptionalDouble("opt").has_value());
  EXPECT_EQ(b.OptionalI64("opt"), 42);
  EXPECT_EQ(b.Doubles("doubles", 10), (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(b.Floats("floats", 10), (std::vector<float>{4, 5}));
  EXPECT_EQ(b.I32s("ints", 10), (std::vector<int>{-1, 1}));
  EXPECT_EQ(b.Strings("strings", 10, 10), (std::vector<std::string>{"a", "bc"}));
  b.ExpectEnd();
  r.ExpectEnd();
  EXPECT_OK(r.status());
}

TEST(SnapshotCodecTest, ReaderFailsStickyWithTheFieldName) {
  SnapshotWriter w;
  w.PutU32(3);
  const std::string bytes = w.Release();
  SnapshotReader r(bytes, "ctx");
  EXPECT_EQ(r.U32("first"), 3u);
  EXPECT_EQ(r.I64("second"), 0);
  EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kDataLoss,
                                   HasSubstr("ctx: second: truncated")));
  EXPECT_EQ(r.U32("third"), 0u);
  EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("second")));
}

TEST(SnapshotCodecTest, HugeCountsFailWithoutAllocating) {
  SnapshotWriter w;
  w.PutU64(uint64_t{1} << 60);  // a count far beyond the bytes that follow
  w.PutDouble(1);
  const std::string bytes = w.Release();
  SnapshotReader r(bytes, "ctx");
  EXPECT_TRUE(r.Doubles("values", size_t{1} << 62).empty());
  EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("values")));
  SnapshotReader limited(bytes, "ctx");
  EXPECT_TRUE(limited.Doubles("values", 4).empty());
  EXPECT_THAT(limited.status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("exceeds the limit 4")));
}

TEST(SnapshotCodecTest, SectionsCheckTagAndLength) {
  SnapshotWriter w;
  size_t s = w.BeginSection(SnapshotTag("AAAA"));
  w.PutU32(1);
  w.EndSection(s);
  const std::string bytes = w.Release();
  {
    SnapshotReader r(bytes, "ctx");
    SnapshotReader b = r.Section(SnapshotTag("BBBB"), "b");
    EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kDataLoss,
                                     HasSubstr("expected section tag")));
  }
  {
    SnapshotReader r(bytes, "ctx");
    SnapshotReader b = r.Section(SnapshotTag("AAAA"), "a");
    b.ExpectEnd();  // 4 bytes unread
    EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("unread")));
  }
  {
    SnapshotReader r(absl::string_view(bytes).substr(0, bytes.size() - 1), "ctx");
    SnapshotReader b = r.Section(SnapshotTag("AAAA"), "a");
    EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
  }
}

TEST(SnapshotCodecTest, FramingRejectsDamage) {
  const std::string good = FrameSnapshot("payload bytes");
  ASSERT_OK_AND_ASSIGN(absl::string_view payload, UnframeSnapshot(good));
  EXPECT_EQ(payload, "payload bytes");
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_THAT(UnframeSnapshot(good.substr(0, n)),
                StatusIs(absl::StatusCode::kDataLoss, ::testing::_))
        << n;
  }
  for (size_t bit = 0; bit < good.size() * 8; ++bit) {
    std::string bad = good;
    bad[bit / 8] ^= static_cast<char>(1 << (bit % 8));
    EXPECT_THAT(UnframeSnapshot(bad), StatusIs(absl::StatusCode::kDataLoss, ::testing::_))
        << bit;
  }
  EXPECT_THAT(UnframeSnapshot(good + "x"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("trailing")));
  std::string magic = good;
  magic[0] = 'X';
  EXPECT_THAT(UnframeSnapshot(magic),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("MCSNAP")));
}

TEST(SnapshotCodecTest, SealMatchesFrame) {
  SnapshotWriter w = SnapshotWriter::ForSnapshot();
  w.PutString("abc");
  SnapshotWriter plain;
  plain.PutString("abc");
  EXPECT_EQ(SealSnapshot(w), FrameSnapshot(plain.Release()));
}

}  // namespace
}  // namespace moecast::internal
