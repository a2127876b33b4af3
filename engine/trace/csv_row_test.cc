#include "engine/trace/csv_row.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast::internal {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

// (text, column) of every field of `line`, for ElementsAre.
std::vector<std::pair<std::string, int>> Split(absl::string_view line) {
  std::vector<CsvField> fields;
  SplitCsvLine(line, &fields);
  std::vector<std::pair<std::string, int>> out;
  for (const CsvField& f : fields)
    out.emplace_back(std::string(f.text), f.column);
  return out;
}

TEST(SplitCsvLineTest, ReportsOneBasedCharacterColumns) {
  EXPECT_THAT(Split("step,layer,c0"),
              ElementsAre(Pair("step", 1), Pair("layer", 6), Pair("c0", 12)));
  EXPECT_THAT(Split("1,22,333"),
              ElementsAre(Pair("1", 1), Pair("22", 3), Pair("333", 6)));
}

TEST(SplitCsvLineTest, EmptyFields) {
  EXPECT_THAT(Split(""), ElementsAre(Pair("", 1)));
  EXPECT_THAT(Split(","), ElementsAre(Pair("", 1), Pair("", 2)));
  EXPECT_THAT(Split("a,,b,"), ElementsAre(Pair("a", 1), Pair("", 3),
                                          Pair("b", 4), Pair("", 6)));
}

TEST(SplitCsvLineTest, TrimsSpacesTabsAndCarriageReturns) {
  // The column is where the field starts, i.e. just after the comma,
  // including any leading whitespace.
  EXPECT_THAT(Split("  a , b\t,\tc\r"),
              ElementsAre(Pair("a", 1), Pair("b", 6), Pair("c", 10)));
  EXPECT_THAT(Split("   "), ElementsAre(Pair("", 1)));
  // Interior whitespace is kept.
  EXPECT_THAT(Split("a b, c\td "),
              ElementsAre(Pair("a b", 1), Pair("c\td", 5)));
}

TEST(SplitCsvLineTest, RemovesOnePairOfSurroundingQuotes) {
  EXPECT_THAT(Split("\"step\",\"layer\""),
              ElementsAre(Pair("step", 1), Pair("layer", 8)));
  // Whitespace outside the quotes is trimmed, inside it is kept.
  EXPECT_THAT(Split(" \" c0 \" "), ElementsAre(Pair(" c0 ", 1)));
  EXPECT_THAT(Split("\"\""), ElementsAre(Pair("", 1)));
  EXPECT_THAT(Split("\"\"x\"\""), ElementsAre(Pair("\"x\"", 1)));
  // Unbalanced or lone quotes are left alone.
  EXPECT_THAT(Split("\""), ElementsAre(Pair("\"", 1)));
  EXPECT_THAT(Split("\"a"), ElementsAre(Pair("\"a", 1)));
  EXPECT_THAT(Split("a\""), ElementsAre(Pair("a\"", 1)));
}

TEST(SplitCsvLineTest, QuotedCommasAreNotSupported) {
  EXPECT_THAT(Split("\"a,b\""), ElementsAre(Pair("\"a", 1), Pair("b\"", 4)));
}

TEST(SplitCsvLineTest, ClearsFieldsFirst) {
  std::vector<CsvField> fields;
  SplitCsvLine("a,b,c", &fields);
  SplitCsvLine("x", &fields);
  ASSERT_EQ(fields.size(), 1u);
  EXPECT_EQ(fields[0].text, "x");
  EXPECT_EQ(fields[0].column, 1);
}

TEST(SplitCsvLineTest, FieldsViewTheLine) {
  const std::string line = "12, 34";
  std::vector<CsvField> fields;
  SplitCsvLine(line, &fields);
  ASSERT_EQ(fields.size(), 2u);
  EXPECT_EQ(fields[1].text.data(), line.data() + 4);
}

TEST(ParseNonNegativeIntegerTest, AcceptsIntegersAndIntegerValuedDecimals) {
  const struct {
    const char* text;
    int64_t want;
  } cases[] = {
      {"0", 0},
      {"7", 7},
      {"007", 7},
      {"12", 12},
      {"12.0", 12},
      {"12.", 12},
      {"1.2e1", 12},
      {"1.2E1", 12},
      {"120e-1", 12},
      {"1e3", 1000},
      {"0.0", 0},
      {"-0", 0},
      {"9000000000000000", 9000000000000000},
      {"9e15", 9000000000000000},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const char* why = nullptr;
    std::optional<int64_t> v = ParseNonNegativeInteger(c.text, &why);
    ASSERT_TRUE(v.has_value()) << (why != nullptr ? why : "");
    EXPECT_EQ(*v, c.want);
  }
}

TEST(ParseNonNegativeIntegerTest, RejectsWithReason) {
  const struct {
    const char* text;
    const char* why;
  } cases[] = {
      {"", "is empty"},
      {"abc", "is not a number"},
      {"12abc", "is not a number"},
      {"1 2", "is not a number"},
      {"1,2", "is not a number"},
      {".", "is not a number"},
      {"e5", "is not a number"},
      {"2.5", "is not an integer"},
      {"0.1", "is not an integer"},
      {"1e-1", "is not an integer"},
      {"-1", "is negative"},
      {"-0.5", "is negative"},
      {"-1e3", "is negative"},
      {"nan", "is not finite"},
      {"inf", "is not finite"},
      {"-inf", "is not finite"},
      {"1e400", "is not finite"},
      {"1e16", "is too large"},
      {"9000000000000001.0", "is too large"},
      {"1234567890123456789", "is too large"},  // 19 digits
      {"123456789012345678", "is too large"},   // 18 digits: not exact
      // 22 digits: the digit loop used to overflow int64 (fuzz finding).
      {"2222222222222222222222", "is too large"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const char* why = nullptr;
    EXPECT_EQ(ParseNonNegativeInteger(c.text, &why), std::nullopt);
    ASSERT_NE(why, nullptr);
    EXPECT_STREQ(why, c.why);
  }
}

TEST(ParseFiniteDoubleTest, AcceptsFiniteDecimals) {
  const struct {
    const char* text;
    double want;
  } cases[] = {
      {"0", 0.0},
      {"1.5", 1.5},
      {"-2.25", -2.25},
      {"+3", 3.0},
      {"1e-3", 1e-3},
      {"-1.25E2", -125.0},
      {".5", 0.5},
      {"0.123456789", 0.123456789},
      {"1.7976931348623157e308", 1.7976931348623157e308},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const char* why = nullptr;
    std::optional<double> v = ParseFiniteDouble(c.text, &why);
    ASSERT_TRUE(v.has_value()) << (why != nullptr ? why : "");
    EXPECT_EQ(*v, c.want);
  }
}

TEST(ParseFiniteDoubleTest, RejectsWithReason) {
  const struct {
    const char* text;
    const char* why;
  } cases[] = {
      {"", "is empty"},
      {"abc", "is not a number"},
      {"1.5x", "is not a number"},
      {"1..5", "is not a number"},
      {"--1", "is not a number"},
      {"nan", "is not finite"},
      {"NaN", "is not finite"},
      {"inf", "is not finite"},
      {"-inf", "is not finite"},
      {"infinity", "is not finite"},
      {"1e400", "is not finite"},
      {"-1e400", "is not finite"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const char* why = nullptr;
    EXPECT_EQ(ParseFiniteDouble(c.text, &why), std::nullopt);
    ASSERT_NE(why, nullptr);
    EXPECT_STREQ(why, c.why);
  }
}

// Regression: absl::SimpleAtod (strtod underneath) also reads C99
// hexadecimal floats, which once let "0x10" through as the count 16.
TEST(CsvNumberTest, RejectsHexadecimal) {
  for (const char* text : {"0x10", "0X1A", "0x1p4"}) {
    SCOPED_TRACE(text);
    const char* why = nullptr;
    EXPECT_EQ(ParseNonNegativeInteger(text, &why), std::nullopt);
    why = nullptr;
    EXPECT_EQ(ParseFiniteDouble(text, &why), std::nullopt);
  }
}

}  // namespace
}  // namespace moecast::internal
