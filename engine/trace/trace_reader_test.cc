// Tests of TraceReader and TraceWriter (design section 7).
#include "engine/trace/trace_reader.h"

#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/testing/status_matchers.h"
#include "engine/testing/temp_files.h"
#include "engine/trace/trace.h"
#include "engine/trace/trace_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::AllOf;
using ::testing::DoubleEq;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::moecast::testing::TempPath;
using ::moecast::testing::WriteFile;
using ::moecast::testing::WriteGzipFile;
using ::testing::IsEmpty;
using ::testing::Optional;
using ::testing::StartsWith;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------
// Helpers.




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

// Reads a whole trace; the first error from Open or Next is returned.
absl::StatusOr<std::vector<TraceStep>> ReadTrace(
    const std::string& counts, const std::string& router = "",
    TraceLayout* layout = nullptr) {
  absl::StatusOr<std::unique_ptr<TraceReader>> reader =
      TraceReader::Open(counts, router);
  if (!reader.ok()) return reader.status();
  if (layout != nullptr) *layout = (*reader)->layout();
  std::vector<TraceStep> steps;
  while (true) {
    TraceStep step;
    absl::StatusOr<bool> more = (*reader)->Next(&step);
    if (!more.ok()) return more.status();
    if (!*more) break;
    steps.push_back(std::move(step));
  }
  return steps;
}

// Matches an INVALID_ARGUMENT status "PATH:LINE:COLUMN: ..." containing
// `phrase`.
::testing::Matcher<absl::Status> IsTraceError(const std::string& path, int line,
                                              int column,
                                              const std::string& phrase) {
  return StatusIs(
      absl::StatusCode::kInvalidArgument,
      AllOf(StartsWith(absl::StrCat(path, ":", line, ":", column, ": ")),
            HasSubstr(phrase)));
}

// A deterministic count for (step, layer, expert).
double CountAt(int64_t step, int l, int e) {
  return static_cast<double>((step * 31 + l * 7 + e * 13) % 97);
}

// A trace of `num_steps` steps with step numbers 0, 2, 3, 5, 6, 8, ...
std::vector<TraceStep> MakeSteps(const TraceLayout& layout, int num_steps) {
  const int n = layout.num_layers() * layout.num_experts;
  std::vector<TraceStep> steps;
  for (int k = 0; k < num_steps; ++k) {
    TraceStep s;
    s.step = k + k / 2;
    for (int l = 0; l < layout.num_layers(); ++l) {
      for (int e = 0; e < layout.num_experts; ++e) {
        s.counts.push_back(CountAt(s.step, l, e));
      }
    }
    if (layout.has_tokens) s.tokens = 1000 + k;
    for (int i = 0; i < n; ++i) {
      const double x = k * n + i + 1;
      if (layout.has_router) s.router_z.push_back(std::sin(x) * 7.3);
      if (layout.has_router_probs) s.router_p.push_back(1.0 / (x + 2.0));
      if (layout.has_router_std) s.router_s.push_back(std::cos(x) * 1e-3 * x);
    }
    steps.push_back(std::move(s));
  }
  return steps;
}

absl::Status WriteTrace(const std::string& counts, const std::string& router,
                        const TraceLayout& layout,
                        const std::vector<TraceStep>& steps) {
  absl::StatusOr<std::unique_ptr<TraceWriter>> writer =
      TraceWriter::Open(counts, router, layout);
  if (!writer.ok()) return writer.status();
  for (const TraceStep& s : steps) {
    absl::Status st = (*writer)->Write(s);
    if (!st.ok()) return st;
  }
  return (*writer)->Close();
}

// Router values are written with 9 significant digits: within half a unit
// of the 9th digit.
void ExpectNear9Digits(const std::vector<double>& got,
                       const std::vector<double>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 5e-9 * std::abs(want[i]) + 1e-300)
        << what << "[" << i << "]";
  }
}

TraceLayout Layout(int experts, std::vector<int64_t> layer_ids) {
  TraceLayout layout;
  layout.num_experts = experts;
  layout.layer_ids = std::move(layer_ids);
  return layout;
}

// ---------------------------------------------------------------------------
// Writer -> reader round trips.

struct RoundTripCase {
  const char* name;
  bool gz;
  bool tokens;
  bool router;
  bool probs;
  bool std_logits;
};

void PrintTo(const RoundTripCase& c, std::ostream* os) { *os << c.name; }

class RoundTripTest : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(RoundTripTest, ReadsBackWhatWasWritten) {
  const RoundTripCase& c = GetParam();
  TraceLayout layout = Layout(3, {3, 5, 9});
  layout.has_tokens = c.tokens;
  layout.has_router = c.router;
  layout.has_router_probs = c.probs;
  layout.has_router_std = c.std_logits;
  const std::string suffix = c.gz ? ".csv.gz" : ".csv";
  const std::string counts =
      TempPath(absl::StrCat("rt_", c.name, ".counts", suffix));
  const std::string router =
      c.router ? TempPath(absl::StrCat("rt_", c.name, ".router", suffix)) : "";
  const std::vector<TraceStep> want = MakeSteps(layout, 7);
  ASSERT_OK(WriteTrace(counts, router, layout, want));
  if (c.gz) {
    // Really compressed: gzip magic.
    EXPECT_THAT(ReadRaw(counts), StartsWith("\x1f\x8b"));
  } else {
    EXPECT_THAT(ReadRaw(counts),
                StartsWith(c.tokens ? "step,layer,tokens,c0,c1,c2\n0,3,1000,"
                                    : "step,layer,c0,c1,c2\n0,3,"));
  }

  TraceLayout got_layout;
  ASSERT_OK_AND_ASSIGN(std::vector<TraceStep> got,
                       ReadTrace(counts, router, &got_layout));
  EXPECT_EQ(got_layout.num_experts, 3);
  EXPECT_THAT(got_layout.layer_ids, ElementsAre(3, 5, 9));
  EXPECT_EQ(got_layout.num_layers(), 3);
  EXPECT_EQ(got_layout.has_tokens, c.tokens);
  EXPECT_EQ(got_layout.has_router, c.router);
  EXPECT_EQ(got_layout.has_router_probs, c.probs);
  EXPECT_EQ(got_layout.has_router_std, c.std_logits);

  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < want.size(); ++k) {
    SCOPED_TRACE(absl::StrCat("step index ", k));
    EXPECT_EQ(got[k].step, want[k].step);
    // Header is line 1, then 3 rows per step.
    EXPECT_EQ(got[k].first_line, 2 + 3 * static_cast<int64_t>(k));
    EXPECT_EQ(got[k].tokens, want[k].tokens);
    EXPECT_THAT(got[k].counts, ElementsAreArray(want[k].counts));
    ExpectNear9Digits(got[k].router_z, want[k].router_z, "router_z");
    ExpectNear9Digits(got[k].router_p, want[k].router_p, "router_p");
    ExpectNear9Digits(got[k].router_s, want[k].router_s, "router_s");
    EXPECT_EQ(got[k].router_z.empty(), !c.router);
    EXPECT_EQ(got[k].router_p.empty(), !c.probs);
    EXPECT_EQ(got[k].router_s.empty(), !c.std_logits);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllLayouts, RoundTripTest,
    ::testing::Values(
        RoundTripCase{"plain", false, false, false, false, false},
        RoundTripCase{"gz", true, false, false, false, false},
        RoundTripCase{"plain_tokens", false, true, false, false, false},
        RoundTripCase{"gz_tokens", true, true, false, false, false},
        RoundTripCase{"plain_z", false, false, true, false, false},
        RoundTripCase{"gz_z", true, false, true, false, false},
        RoundTripCase{"plain_tokens_zps", false, true, true, true, true},
        RoundTripCase{"gz_tokens_zps", true, true, true, true, true},
        RoundTripCase{"gz_zp", true, false, true, true, false},
        RoundTripCase{"plain_zs", false, true, true, false, true}),
    [](const ::testing::TestParamInfo<RoundTripCase>& info) {
      return std::string(info.param.name);
    });

TEST(RoundTripTest, Float32RouterValuesAndLargeCountsSurvive) {
  TraceLayout layout = Layout(2, {0});
  layout.has_router = true;
  layout.has_router_probs = true;
  TraceStep s;
  s.step = 123456789012;
  s.counts = {0, 9.0e15};
  s.router_z = {static_cast<float>(-3.14159265358979),
                static_cast<float>(1e-30)};
  s.router_p = {static_cast<float>(0.1), static_cast<float>(0.9)};
  const std::string counts = TempPath("exact.counts.csv");
  const std::string router = TempPath("exact.router.csv");
  ASSERT_OK(WriteTrace(counts, router, layout, {s}));
  ASSERT_OK_AND_ASSIGN(std::vector<TraceStep> got, ReadTrace(counts, router));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].step, 123456789012);
  EXPECT_THAT(got[0].counts, ElementsAre(0, 9.0e15));
  // 9 significant digits identify a float: a float32 logit survives exactly
  // (as a float).
  auto as_floats = [](const std::vector<double>& v) {
    return std::vector<float>(v.begin(), v.end());
  };
  EXPECT_EQ(as_floats(got[0].router_z), as_floats(s.router_z));
  EXPECT_EQ(as_floats(got[0].router_p), as_floats(s.router_p));
  EXPECT_THAT(got[0].router_s, IsEmpty());
}

TEST(RoundTripTest, ReaderLayoutFeedsWriter) {
  // Copying a trace through the reader's layout reproduces the same files.
  TraceLayout layout = Layout(4, {1, 2, 60});
  layout.has_tokens = true;
  layout.has_router = true;
  layout.has_router_std = true;
  const std::string c1 = TempPath("copy1.counts.csv");
  const std::string r1 = TempPath("copy1.router.csv");
  ASSERT_OK(WriteTrace(c1, r1, layout, MakeSteps(layout, 5)));
  TraceLayout read_layout;
  ASSERT_OK_AND_ASSIGN(std::vector<TraceStep> steps,
                       ReadTrace(c1, r1, &read_layout));
  const std::string c2 = TempPath("copy2.counts.csv");
  const std::string r2 = TempPath("copy2.router.csv");
  ASSERT_OK(WriteTrace(c2, r2, read_layout, steps));
  EXPECT_EQ(ReadRaw(c1), ReadRaw(c2));
  EXPECT_EQ(ReadRaw(r1), ReadRaw(r2));
}

// ---------------------------------------------------------------------------
// Reader generality.

TEST(TraceReaderTest, ColumnsInAnyOrder) {
  const std::string counts = WriteFile("anyorder.counts.csv",
                                       "c1,tokens,c0,layer,step\n"
                                       "4,100,3,7,0\n"
                                       "2,100,1,5,0\n"
                                       "6,200,5,5,1\n"
                                       "8,200,7,7,1\n");
  const std::string router = WriteFile("anyorder.router.csv",
                                       "s1,z1,layer,p0,step,z0,p1,s0\n"
                                       "-4,0.4,7,0.3,0,0.3,0.7,-3\n"
                                       "-2,0.2,5,0.1,0,0.1,0.9,-1\n"
                                       "-6,0.6,5,0.5,1,0.5,0.5,-5\n"
                                       "-8,0.8,7,0.7,1,0.7,0.3,-7\n");
  TraceLayout layout;
  ASSERT_OK_AND_ASSIGN(std::vector<TraceStep> steps,
                       ReadTrace(counts, router, &layout));
  EXPECT_EQ(layout.num_experts, 2);
  EXPECT_THAT(layout.layer_ids, ElementsAre(5, 7));
  EXPECT_TRUE(layout.has_tokens);
  EXPECT_TRUE(layout.has_router);
  EXPECT_TRUE(layout.has_router_probs);
  EXPECT_TRUE(layout.has_router_std);
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].step, 0);
  EXPECT_THAT(steps[0].tokens, Optional(100));
  EXPECT_THAT(steps[0].counts, ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(steps[0].router_z, ElementsAre(0.1, 0.2, 0.3, 0.4));
  EXPECT_THAT(steps[0].router_p, ElementsAre(0.1, 0.9, 0.3, 0.7));
  EXPECT_THAT(steps[0].router_s, ElementsAre(-1, -2, -3, -4));
  EXPECT_EQ(steps[1].step, 1);
  EXPECT_THAT(steps[1].tokens, Optional(200));
  EXPECT_THAT(steps[1].counts, ElementsAre(5, 6, 7, 8));
  EXPECT_THAT(steps[1].router_z, ElementsAre(0.5, 0.6, 0.7, 0.8));
  EXPECT_THAT(steps[1].router_s, ElementsAre(-5, -6, -7, -8));
}

TEST(TraceReaderTest, NonContiguousLayersInAnyRowOrder) {
  const std::string counts = WriteFile("layers.counts.csv",
                                       "step,layer,c0,c1\n"
                                       "10,9,90,91\n"
                                       "10,3,30,31\n"
                                       "10,5,50,51\n"
                                       "20,5,52,53\n"
                                       "20,9,92,93\n"
                                       "20,3,32,33\n");
  TraceLayout layout;
  ASSERT_OK_AND_ASSIGN(std::vector<TraceStep> steps,
                       ReadTrace(counts, "", &layout));
  EXPECT_THAT(layout.layer_ids, ElementsAre(3, 5, 9));
  EXPECT_FALSE(layout.has_tokens);
  EXPECT_FALSE(layout.has_router);
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].step, 10);
  EXPECT_EQ(steps[0].first_line, 2);
  EXPECT_EQ(steps[0].tokens, std::nullopt);
  EXPECT_THAT(steps[0].counts, ElementsAre(30, 31, 50, 51, 90, 91));
  EXPECT_THAT(steps[0].router_z, IsEmpty());
  EXPECT_EQ(steps[1].step, 20);
  EXPECT_EQ(steps[1].first_line, 5);
  EXPECT_THAT(steps[1].counts, ElementsAre(32, 33, 52, 53, 92, 93));
}

TEST(TraceReaderTest, CrLfBomQuotesAndSpaces) {
  const std::string counts =
      WriteFile("dialect.counts.csv",
                "\xEF\xBB\xBF\"step\", \"layer\" ,\"c0\",\tc1\r\n"
                " 0 , 1 ,\t12.0\t, 1.2e1 \r\n"
                "\"0\",\"2\",\"3\",\"4\"\r\n"
                "1,1,0.5e1,  60e-1\r\n"
                "1,2,7,8\r\n");
  const std::string router =
      WriteFile("dialect.router.csv",
                "\xEF\xBB\xBFstep,layer,\"z0\",\"z1\"\r\n"
                "0,1, -1.5 ,\"2.5\"\r\n"
                "0,2,1e-3,-0\r\n"
                "1,1,3,4\r\n"
                "1,2,5,6\r\n");
  ASSERT_OK_AND_ASSIGN(std::vector<TraceStep> steps, ReadTrace(counts, router));
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_THAT(steps[0].counts, ElementsAre(12, 12, 3, 4));
  EXPECT_THAT(steps[0].router_z, ElementsAre(-1.5, 2.5, 1e-3, 0));
  EXPECT_THAT(steps[1].counts, ElementsAre(5, 6, 7, 8));
  EXPECT_THAT(steps[1].router_z, ElementsAre(3, 4, 5, 6));
}

TEST(TraceReaderTest, TrailingBlankLinesAndMissingFinalNewline) {
  const char* const variants[] = {
      "step,layer,c0,c1\n0,0,1,2\n1,0,3,4\n\n\n",
      "step,layer,c0,c1\n0,0,1,2\n1,0,3,4\n \t\r\n\r\n",
      "step,layer,c0,c1\n0,0,1,2\n1,0,3,4",
      "step,layer,c0,c1\r\n0,0,1,2\r\n1,0,3,4\r",
  };
  for (const char* content : variants) {
    SCOPED_TRACE(::testing::PrintToString(std::string(content)));
    const std::string counts = WriteFile("tail.counts.csv", content);
    const std::string router =
        WriteFile("tail.router.csv", "step,layer,z0,z1\n0,0,1,2\n1,0,3,4\n\n");
    ASSERT_OK_AND_ASSIGN(std::vector<TraceStep> steps,
                         ReadTrace(counts, router));
    ASSERT_EQ(steps.size(), 2u);
    EXPECT_THAT(steps[1].counts, ElementsAre(3, 4));
    EXPECT_THAT(steps[1].router_z, ElementsAre(3, 4));
  }
}

TEST(TraceReaderTest, GzipDetectedFromContentNotName) {
  const std::string content = "step,layer,c0,c1\n0,0,1,2\n0,1,3,4\n";
  for (const std::string& path :
       {WriteGzipFile("gz_no_suffix.counts.csv", content),
        WriteFile("plain_with_suffix.counts.csv.gz", content),
        WriteGzipFile("gz_bom.counts.csv.gz", "\xEF\xBB\xBF" + content)}) {
    SCOPED_TRACE(path);
    ASSERT_OK_AND_ASSIGN(std::vector<TraceStep> steps, ReadTrace(path));
    ASSERT_EQ(steps.size(), 1u);
    EXPECT_THAT(steps[0].counts, ElementsAre(1, 2, 3, 4));
  }
}

TEST(TraceReaderTest, SingleStepAndEndOfTrace) {
  const std::string counts =
      WriteFile("single.counts.csv", "step,layer,c0,c1\n4,0,1,2\n");
  ASSERT_OK_AND_ASSIGN(auto reader, TraceReader::Open(counts));
  TraceStep step;
  ASSERT_OK_AND_ASSIGN(bool more, reader->Next(&step));
  EXPECT_TRUE(more);
  EXPECT_EQ(step.step, 4);
  EXPECT_EQ(step.first_line, 2);
  EXPECT_THAT(step.counts, ElementsAre(1, 2));
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(more, reader->Next(&step));
    EXPECT_FALSE(more);
  }
  EXPECT_DOUBLE_EQ(reader->progress(), 1.0);
}

TEST(TraceReaderTest, NextOverwritesTheStep) {
  const std::string counts = WriteFile(
      "reuse.counts.csv", "step,layer,tokens,c0,c1\n0,0,5,1,2\n1,0,6,3,4\n");
  ASSERT_OK_AND_ASSIGN(auto reader, TraceReader::Open(counts));
  TraceStep step;
  step.router_z = {1, 2, 3};  // stale content is replaced
  ASSERT_OK_AND_ASSIGN(bool more, reader->Next(&step));
  ASSERT_TRUE(more);
  EXPECT_THAT(step.router_z, IsEmpty());
  ASSERT_OK_AND_ASSIGN(more, reader->Next(&step));
  ASSERT_TRUE(more);
  EXPECT_EQ(step.step, 1);
  EXPECT_EQ(step.first_line, 3);
  EXPECT_THAT(step.tokens, Optional(6));
  EXPECT_THAT(step.counts, ElementsAre(3, 4));
}

// ---------------------------------------------------------------------------
// Malformed input: every case is an error naming file:line:column.

constexpr char kCounts[] =
    "step,layer,c0,c1\n0,0,1,2\n0,1,3,4\n1,0,5,6\n1,1,7,8\n";
constexpr char kRouter[] =
    "step,layer,z0,z1\n0,0,0.5,-0.5\n0,1,1,2\n1,0,3,4\n1,1,5,6\n";

struct MalformedCase {
  const char* name;
  const char* counts;
  const char* router;  // nullptr: no router file
  bool in_router;      // the error names the router file
  int line;
  int column;
  const char* phrase;
};

void PrintTo(const MalformedCase& c, std::ostream* os) { *os << c.name; }

class MalformedTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedTest, ErrorNamesFileLineAndColumn) {
  const MalformedCase& c = GetParam();
  const std::string counts =
      WriteFile(absl::StrCat(c.name, ".counts.csv"), c.counts);
  const std::string router =
      c.router == nullptr
          ? ""
          : WriteFile(absl::StrCat(c.name, ".router.csv"), c.router);
  EXPECT_THAT(
      ReadTrace(counts, router).status(),
      IsTraceError(c.in_router ? router : counts, c.line, c.column, c.phrase));
}

#define H "step,layer,c0,c1\n"
#define HT "step,layer,tokens,c0,c1\n"
#define HR "step,layer,z0,z1\n"

const MalformedCase kMalformedCases[] = {
    // Headers.
    {"empty_file", "", nullptr, false, 1, 1,
     "empty file; expected a header line"},
    {"header_only", H, nullptr, false, 2, 1, "no data rows after the header"},
    {"header_then_blank_lines", H "\n\n", nullptr, false, 2, 1,
     "no data rows after the header"},
    {"missing_step", "layer,c0,c1\n0,1,2\n", nullptr, false, 1, 12,
     "missing column 'step'"},
    {"missing_layer", "step,c0,c1\n0,1,2\n", nullptr, false, 1, 11,
     "missing column 'layer'"},
    {"missing_counts", "step,layer\n0,0\n", nullptr, false, 1, 11,
     "missing columns 'c0'"},
    {"missing_counts_with_tokens", "step,layer,tokens\n0,0,1\n", nullptr, false,
     1, 18, "missing columns 'c0'"},
    {"unknown_column", "step,layer,foo,c0,c1\n0,0,9,1,2\n", nullptr, false, 1,
     12, "unknown column 'foo'"},
    {"router_column_in_counts", "step,layer,c0,c1,z0\n", nullptr, false, 1, 18,
     "unknown column 'z0'"},
    {"leading_zero_column", "step,layer,c0,c01\n", nullptr, false, 1, 15,
     "unknown column 'c01'"},
    {"bare_prefix_column", "step,layer,c,c0,c1\n", nullptr, false, 1, 12,
     "unknown column 'c'"},
    {"header_trailing_comma", "step,layer,c0,c1,\n", nullptr, false, 1, 18,
     "unknown column ''"},
    {"blank_line_before_header", "\n" H "0,0,1,2\n", nullptr, false, 1, 1,
     "unknown column ''"},
    {"case_sensitive_names", "Step,layer,c0,c1\n", nullptr, false, 1, 1,
     "unknown column 'Step'"},
    {"duplicate_layer", "step,layer,c0,c1,layer\n", nullptr, false, 1, 18,
     "column 'layer' appears twice (first at column 6)"},
    {"duplicate_count", "step,layer,c0,c1,c0\n", nullptr, false, 1, 18,
     "column 'c0' appears twice (first at column 12)"},
    {"duplicate_after_unquoting", "step,layer,c0,c1,\"c1\"\n", nullptr, false,
     1, 18, "column 'c1' appears twice (first at column 15)"},
    {"count_columns_with_hole", "step,layer,c0,c1,c3\n0,0,1,2,3\n", nullptr,
     false, 1, 20, "column 'c2' is missing; expected c0..c2"},
    {"count_columns_not_from_0", "step,layer,c1,c2\n", nullptr, false, 1, 17,
     "column 'c0' is missing"},
    {"one_expert", "step,layer,c0\n0,0,1\n", nullptr, false, 1, 14,
     "has 1 expert column; a MoE layer has at least 2"},
    // Rows.
    {"too_few_fields", H "0,0,1\n", nullptr, false, 2, 6,
     "row has 3 fields, the header has 4"},
    {"too_many_fields", H "0,0,1,2,9\n", nullptr, false, 2, 9,
     "row has 5 fields, the header has 4"},
    {"trailing_comma", H "0,0,1,2,\n", nullptr, false, 2, 9,
     "row has 5 fields, the header has 4"},
    {"ragged_later_row", H "0,0,1,2\n0,1,3\n", nullptr, false, 3, 6,
     "row has 3 fields"},
    {"non_integer_count", H "0,0,2.5,1\n", nullptr, false, 2, 5,
     "column 'c0': count '2.5' is not an integer"},
    {"negative_count", H "0,0,1,-3\n", nullptr, false, 2, 7,
     "column 'c1': count '-3' is negative"},
    {"non_number_count", H "0,0,abc,1\n", nullptr, false, 2, 5,
     "column 'c0': count 'abc' is not a number"},
    {"empty_count", H "0,0,,1\n", nullptr, false, 2, 5,
     "column 'c0': count '' is empty"},
    {"nan_count", H "0,0,1,nan\n", nullptr, false, 2, 7,
     "count 'nan' is not finite"},
    {"non_number_step", H "x,0,1,2\n", nullptr, false, 2, 1,
     "step 'x' is not a number; expected a non-negative integer"},
    {"fractional_step", H "0,0,1,2\n0.5,0,1,2\n", nullptr, false, 3, 1,
     "step '0.5' is not an integer"},
    {"negative_layer", H "0,-1,1,2\n", nullptr, false, 2, 3,
     "layer '-1' is negative"},
    {"empty_layer", H "0,,1,2\n", nullptr, false, 2, 3, "layer '' is empty"},
    {"fractional_tokens", HT "0,0,1.5,1,2\n", nullptr, false, 2, 5,
     "tokens '1.5' is not an integer"},
    // Step structure.
    {"step_decreases", H "0,0,1,2\n0,1,1,2\n5,0,1,2\n5,1,1,2\n3,0,1,2\n",
     nullptr, false, 6, 1, "step 3 follows step 5; steps must increase"},
    {"step_decreases_after_first", H "1,0,1,2\n1,1,1,2\n0,0,1,2\n", nullptr,
     false, 4, 1, "step 0 follows step 1"},
    {"step_listed_again", H "0,0,1,2\n0,1,1,2\n1,0,1,2\n1,1,1,2\n0,0,1,2\n",
     nullptr, false, 6, 1, "step 0 follows step 1"},
    {"step_lacks_layer", H "0,0,1,2\n0,1,1,2\n1,0,1,2\n2,0,1,2\n2,1,1,2\n",
     nullptr, false, 5, 1,
     "step 1 lacks layer 1; every step must list the 2 layers of the first "
     "step (0,1)"},
    {"last_step_lacks_layer", H "0,0,1,2\n0,1,1,2\n1,1,1,2\n", nullptr, false,
     5, 1, "step 1 lacks layer 0"},
    {"last_step_lacks_layer_no_newline", H "0,0,1,2\n0,1,1,2\n1,1,1,2", nullptr,
     false, 5, 1, "step 1 lacks layer 0"},
    {"layer_not_in_first_step",
     H "0,0,1,2\n0,1,1,2\n1,0,1,2\n1,1,1,2\n1,2,1,2\n", nullptr, false, 6, 3,
     "layer 2 is not among the layers of the first step (0,1)"},
    {"layer_twice_in_first_step", H "0,0,1,2\n0,1,1,2\n0,0,1,2\n", nullptr,
     false, 4, 3, "step 0 lists layer 0 twice (first at line 2)"},
    {"layer_twice_in_later_step", H "0,0,1,2\n0,1,1,2\n1,1,1,2\n1,1,1,2\n",
     nullptr, false, 5, 3, "step 1 lists layer 1 twice (first at line 4)"},
    {"tokens_differ_first_step", HT "0,0,10,1,2\n0,1,11,3,4\n", nullptr, false,
     3, 5, "tokens 11 differs from 10 on another layer of step 0"},
    {"tokens_differ_later_step",
     HT "0,0,10,1,2\n0,1,10,3,4\n1,0,20,1,1\n1,1,21,1,1\n", nullptr, false, 5,
     5, "tokens 21 differs from 20 on another layer of step 1"},
    {"blank_line_in_data", H "0,0,1,2\n\n0,1,3,4\n", nullptr, false, 3, 1,
     "blank line inside the data (line 4 has a row after it)"},
    {"whitespace_line_in_data", H "0,0,1,2\n0,1,3,4\n \t\n1,0,5,6\n1,1,7,8\n",
     nullptr, false, 4, 1, "blank line inside the data (line 5"},
    {"blank_line_after_header", H "\n0,0,1,2\n", nullptr, false, 2, 1,
     "blank line inside the data (line 3"},
    // Router file.
    {"router_empty", kCounts, "", true, 1, 1, "empty file"},
    {"router_more_experts", kCounts, "step,layer,z0,z1,z2\n0,0,1,2,3\n", true,
     1, 1, "router file has 3 experts (z columns) but"},
    {"router_missing_z", kCounts, "step,layer,p0,p1\n", true, 1, 17,
     "missing columns 'z0'"},
    {"router_tokens_column", kCounts, "step,layer,tokens,z0,z1\n", true, 1, 12,
     "unknown column 'tokens'"},
    {"router_count_column", kCounts, "step,layer,c0,c1\n", true, 1, 12,
     "unknown column 'c0'"},
    {"router_fewer_p_than_z", kCounts, "step,layer,z0,z1,p0\n", true, 1, 20,
     "has 1 'p' columns but 2 'z' columns"},
    {"router_more_s_than_z", kCounts, "step,layer,z0,z1,s0,s1,s2\n", true, 1,
     26, "has 3 's' columns but 2 'z' columns"},
    {"router_p_hole", kCounts, "step,layer,z0,z1,p0,p2\n", true, 1, 23,
     "column 'p1' is missing"},
    {"router_rows_swapped_layers", kCounts,
     HR "0,1,1,2\n0,0,0.5,-0.5\n1,0,3,4\n1,1,5,6\n", true, 2, 3,
     "router row is step 0 layer 1 but the counts row at "},
    {"router_row_other_step", kCounts,
     HR "0,0,1,2\n1,0,1,2\n0,1,3,4\n1,1,5,6\n", true, 3, 1,
     "router row is step 1 layer 0 but the counts row at "},
    {"router_shorter", kCounts, HR "0,0,1,2\n0,1,1,2\n1,0,1,2\n", true, 5, 1,
     "router file ends here, but the counts file has a row for step 1 layer 1"},
    {"router_header_only", kCounts, HR, true, 2, 1, "router file ends here"},
    {"router_longer", kCounts,
     HR "0,0,1,2\n0,1,1,2\n1,0,1,2\n1,1,1,2\n2,0,1,2\n", true, 6, 1,
     "router file has a row for step 2 layer 0 after the counts file ended"},
    {"router_nan", kCounts, HR "0,0,nan,0.5\n0,1,1,2\n1,0,3,4\n1,1,5,6\n", true,
     2, 5, "column 'z0': value 'nan' is not finite"},
    {"router_minus_inf", kCounts, HR "0,0,1,2\n0,1,1,-inf\n1,0,3,4\n1,1,5,6\n",
     true, 3, 7, "column 'z1': value '-inf' is not finite"},
    {"router_inf_prob", kCounts, "step,layer,z0,z1,p0,p1\n0,0,1,2,0.5,inf\n",
     true, 2, 13, "column 'p1': value 'inf' is not finite"},
    {"router_non_number", kCounts, HR "0,0,abc,1\n", true, 2, 5,
     "column 'z0': value 'abc' is not a number"},
    {"router_empty_value", kCounts, HR "0,0,1,\n", true, 2, 7,
     "column 'z1': value '' is empty"},
    {"router_ragged", kCounts, HR "0,0,1\n", true, 2, 6,
     "row has 3 fields, the header has 4"},
    {"router_blank_line", kCounts, HR "0,0,1,2\n\n0,1,1,2\n1,0,1,2\n1,1,1,2\n",
     true, 3, 1, "blank line inside the data"},
};

#undef H
#undef HT
#undef HR

INSTANTIATE_TEST_SUITE_P(
    AllCases, MalformedTest, ::testing::ValuesIn(kMalformedCases),
    [](const ::testing::TestParamInfo<MalformedCase>& info) {
      return std::string(info.param.name);
    });

TEST(TraceReaderErrorTest, ErrorsInLaterStepsComeFromNext) {
  // The reader streams: steps before the bad row are returned first.
  std::string content = "step,layer,c0,c1\n";
  for (int s = 0; s < 10; ++s) absl::StrAppend(&content, s, ",0,1,2\n");
  content += "10,0,1,x\n";
  const std::string counts = WriteFile("late_error.counts.csv", content);
  ASSERT_OK_AND_ASSIGN(auto reader, TraceReader::Open(counts));
  TraceStep step;
  int good = 0;
  absl::StatusOr<bool> more;
  while ((more = reader->Next(&step)).ok() && *more) ++good;
  EXPECT_THAT(more.status(),
              IsTraceError(counts, 12, 8, "count 'x' is not a number"));
  EXPECT_GE(good, 9);
  EXPECT_LE(good, 10);
}

TEST(TraceReaderErrorTest, TruncatedGzipIsDataLoss) {
  TraceLayout layout = Layout(8, {0, 1, 2, 3});
  const std::string whole = TempPath("whole.counts.csv.gz");
  ASSERT_OK(WriteTrace(whole, "", layout, MakeSteps(layout, 5000)));
  const std::string data = ReadRaw(whole);
  ASSERT_GT(data.size(), 10000u);
  const std::string cut =
      WriteFile("cut.counts.csv.gz", data.substr(0, data.size() / 2));
  EXPECT_THAT(ReadTrace(cut).status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(StartsWith(cut + ":"),
                             HasSubstr("corrupt or truncated gzip"))));
  // The same for a router file.
  TraceLayout rlayout = layout;
  rlayout.has_router = true;
  const std::string counts = TempPath("rwhole.counts.csv");
  const std::string router = TempPath("rwhole.router.csv.gz");
  ASSERT_OK(WriteTrace(counts, router, rlayout, MakeSteps(rlayout, 3000)));
  const std::string rdata = ReadRaw(router);
  const std::string rcut =
      WriteFile("rcut.router.csv.gz", rdata.substr(0, rdata.size() / 2));
  EXPECT_THAT(ReadTrace(counts, rcut).status(),
              StatusIs(absl::StatusCode::kDataLoss, StartsWith(rcut + ":")));
}

TEST(TraceReaderErrorTest, FileErrors) {
  const std::string missing = TempPath("missing.counts.csv");
  EXPECT_THAT(TraceReader::Open(missing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing)));
  const std::string dir = ::testing::TempDir();
  EXPECT_THAT(TraceReader::Open(dir),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir), HasSubstr("is a directory"))));
  const std::string counts = WriteFile("ok.counts.csv", kCounts);
  const std::string missing_router = TempPath("missing.router.csv");
  EXPECT_THAT(TraceReader::Open(counts, missing_router),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(missing_router)));
  EXPECT_THAT(TraceReader::Open(counts, dir),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("is a directory")));
}

// ---------------------------------------------------------------------------
// Writer validation.

TEST(TraceWriterTest, RejectsBadLayouts) {
  const std::string counts = TempPath("badlayout.counts.csv");
  const std::string router = TempPath("badlayout.router.csv");
  struct Case {
    const char* name;
    TraceLayout layout;
    bool give_router_path;
    const char* phrase;
  };
  auto with = [](TraceLayout l, bool router, bool probs, bool std_logits) {
    l.has_router = router;
    l.has_router_probs = probs;
    l.has_router_std = std_logits;
    return l;
  };
  const TraceLayout good = Layout(4, {0, 1});
  const Case cases[] = {
      {"one_expert", Layout(1, {0}), false, ">= 2 experts and >= 1 layer"},
      {"no_layers", Layout(4, {}), false, ">= 2 experts and >= 1 layer"},
      {"repeated_layer", Layout(4, {3, 3}), false,
       "non-negative and increasing"},
      {"descending_layers", Layout(4, {5, 3}), false,
       "non-negative and increasing"},
      {"negative_layer", Layout(4, {-1, 0}), false,
       "non-negative and increasing"},
      {"router_path_without_router", good, true,
       "a router file path was given but the layout has no router columns"},
      {"router_without_path", with(good, true, false, false), false,
       "the layout has router columns but no router file path was given"},
      {"probs_without_router", with(good, false, true, false), false,
       "router p/s columns need router z columns"},
      {"std_without_router", with(good, false, false, true), false,
       "router p/s columns need router z columns"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_THAT(
        TraceWriter::Open(counts, c.give_router_path ? router : "", c.layout),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.phrase)));
  }
}

TEST(TraceWriterTest, UncreatableFileIsNotFound) {
  const std::string bad = TempPath("no_such_dir/x.counts.csv");
  EXPECT_THAT(TraceWriter::Open(bad, "", Layout(2, {0})),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(bad)));
  EXPECT_THAT(TraceWriter::Open(bad + ".gz", "", Layout(2, {0})),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(bad)));
  TraceLayout layout = Layout(2, {0});
  layout.has_router = true;
  EXPECT_THAT(TraceWriter::Open(TempPath("okc.counts.csv"), bad, layout),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(bad)));
}

TEST(TraceWriterTest, RejectsBadSteps) {
  TraceLayout layout = Layout(2, {0, 4});
  layout.has_tokens = true;
  layout.has_router = true;
  layout.has_router_probs = true;
  layout.has_router_std = true;
  const std::string counts = TempPath("badsteps.counts.csv");
  const std::string router = TempPath("badsteps.router.csv");
  ASSERT_OK_AND_ASSIGN(auto writer, TraceWriter::Open(counts, router, layout));
  const TraceStep good = MakeSteps(layout, 1)[0];  // step 0
  ASSERT_OK(writer->Write(good));

  struct Case {
    const char* name;
    void (*mutate)(TraceStep&);
    const char* phrase;
  };
  const Case cases[] = {
      {"counts_too_short", [](TraceStep& s) { s.counts.pop_back(); },
       "counts has 3 values, the layout needs 4"},
      {"counts_too_long", [](TraceStep& s) { s.counts.push_back(1); },
       "counts has 5 values, the layout needs 4"},
      {"router_z_size", [](TraceStep& s) { s.router_z.clear(); },
       "router_z has 0 values, the layout needs 4"},
      {"router_p_size", [](TraceStep& s) { s.router_p.resize(2); },
       "router_p has 2 values"},
      {"router_s_size", [](TraceStep& s) { s.router_s.resize(5); },
       "router_s has 5 values"},
      {"tokens_missing", [](TraceStep& s) { s.tokens.reset(); },
       "the layout has tokens column but the step has no token count"},
      {"step_repeated", [](TraceStep& s) { s.step = 0; },
       "step 0 must be >= 0 and greater than the last written (0)"},
      {"negative_step", [](TraceStep& s) { s.step = -1; }, "must be >= 0"},
      {"fractional_count", [](TraceStep& s) { s.counts[3] = 2.5; },
       "counts[layer 1][expert 1] = 2.5 is not a non-negative integer"},
      {"negative_count", [](TraceStep& s) { s.counts[0] = -1; },
       "counts[layer 0][expert 0] = -1 is not a non-negative integer"},
      {"nan_count", [](TraceStep& s) { s.counts[1] = kNaN; },
       "counts[layer 0][expert 1] = nan is not a non-negative integer"},
      {"inf_count", [](TraceStep& s) { s.counts[2] = kInf; },
       "is not a non-negative integer"},
      {"huge_count", [](TraceStep& s) { s.counts[2] = 1e16; },
       "is not a non-negative integer"},
      {"nan_router_z", [](TraceStep& s) { s.router_z[2] = kNaN; },
       "router value [layer 1][expert 0] is not finite"},
      {"inf_router_p", [](TraceStep& s) { s.router_p[1] = kInf; },
       "router value [layer 0][expert 1] is not finite"},
      {"minus_inf_router_s", [](TraceStep& s) { s.router_s[3] = -kInf; },
       "router value [layer 1][expert 1] is not finite"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TraceStep s = good;
    s.step = 7;
    c.mutate(s);
    EXPECT_THAT(writer->Write(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr(c.phrase)));
  }
  // A rejected step writes nothing: the writer goes on, and the files read
  // back with exactly the accepted steps.
  TraceStep next = good;
  next.step = 7;
  ASSERT_OK(writer->Write(next));
  TraceStep smaller = good;
  smaller.step = 3;
  EXPECT_THAT(writer->Write(smaller),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("step 3 must be >= 0 and greater than the "
                                 "last written (7)")));
  ASSERT_OK(writer->Close());
  ASSERT_OK_AND_ASSIGN(std::vector<TraceStep> steps, ReadTrace(counts, router));
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].step, 0);
  EXPECT_EQ(steps[1].step, 7);
  EXPECT_THAT(steps[1].counts, ElementsAreArray(good.counts));
}

TEST(TraceWriterTest, RejectsTokensWithoutTokensColumn) {
  const std::string counts = TempPath("notokens.counts.csv");
  ASSERT_OK_AND_ASSIGN(auto writer,
                       TraceWriter::Open(counts, "", Layout(2, {0})));
  TraceStep s;
  s.counts = {1, 2};
  s.tokens = 3;
  EXPECT_THAT(writer->Write(s),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("the layout has no tokens column but the step "
                                 "has token count")));
}

TEST(TraceWriterTest, WriteAfterCloseFails) {
  const std::string counts = TempPath("closed.counts.csv.gz");
  ASSERT_OK_AND_ASSIGN(auto writer,
                       TraceWriter::Open(counts, "", Layout(2, {0})));
  TraceStep s;
  s.counts = {1, 2};
  ASSERT_OK(writer->Write(s));
  ASSERT_OK(writer->Close());
  EXPECT_OK(writer->Close());  // idempotent
  s.step = 1;
  EXPECT_FALSE(writer->Write(s).ok());
  ASSERT_OK_AND_ASSIGN(std::vector<TraceStep> steps, ReadTrace(counts));
  ASSERT_EQ(steps.size(), 1u);
}

TEST(TraceWriterTest, DestructorFlushes) {
  const std::string counts = TempPath("dtor.counts.csv.gz");
  {
    ASSERT_OK_AND_ASSIGN(auto writer,
                         TraceWriter::Open(counts, "", Layout(2, {0})));
    TraceStep s;
    s.counts = {1, 2};
    ASSERT_OK(writer->Write(s));
  }
  ASSERT_OK_AND_ASSIGN(std::vector<TraceStep> steps, ReadTrace(counts));
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_THAT(steps[0].counts, ElementsAre(1, 2));
}

// Regression: TraceWriter::Write once wrote router_p / router_s values the
// layout has no columns for, producing a router file it could not read back.
TEST(TraceWriterTest, RejectsRouterColumnsTheLayoutLacks) {
  TraceLayout layout = Layout(2, {0});
  layout.has_router = true;  // z columns only
  for (const char* extra : {"router_p", "router_s"}) {
    SCOPED_TRACE(extra);
    const std::string counts =
        TempPath(absl::StrCat("extra_", extra, ".counts.csv"));
    const std::string router =
        TempPath(absl::StrCat("extra_", extra, ".router.csv"));
    ASSERT_OK_AND_ASSIGN(auto writer,
                         TraceWriter::Open(counts, router, layout));
    TraceStep s;
    s.counts = {1, 2};
    s.router_z = {0.5, 0.25};
    ASSERT_OK(writer->Write(s));  // a good step, so the file has a row
    s.step = 1;
    (std::string(extra) == "router_p" ? s.router_p : s.router_s) = {0.4, 0.6};
    EXPECT_THAT(writer->Write(s),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(extra)));
    ASSERT_OK(writer->Close());
    // Whatever was accepted must read back.
    EXPECT_OK(ReadTrace(counts, router));
  }
}

// Regression: TraceWriter::Write once wrote negative token counts, which the
// reader then rejected.
TEST(TraceWriterTest, RejectsNegativeTokens) {
  TraceLayout layout = Layout(2, {0});
  layout.has_tokens = true;
  const std::string counts = TempPath("neg_tokens.counts.csv");
  ASSERT_OK_AND_ASSIGN(auto writer, TraceWriter::Open(counts, "", layout));
  TraceStep s;
  s.counts = {1, 2};
  s.tokens = -5;
  EXPECT_THAT(writer->Write(s), StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("tokens")));
}

// ---------------------------------------------------------------------------
// Streaming a large trace.

TEST(TraceStreamingTest, ReadsALargeGzipTraceCompletely) {
  constexpr int kSteps = 50000;
  constexpr int kLayers = 4;
  constexpr int kExperts = 8;
  TraceLayout layout = Layout(kExperts, {2, 3, 4, 5});
  layout.has_tokens = true;
  const std::string counts = TempPath("big.counts.csv.gz");
  uint64_t want_sum = 0;
  uint64_t want_weighted = 0;
  {
    ASSERT_OK_AND_ASSIGN(auto writer, TraceWriter::Open(counts, "", layout));
    TraceStep s;
    s.counts.resize(kLayers * kExperts);
    for (int k = 0; k < kSteps; ++k) {
      s.step = 2 * k + 1;
      s.tokens = 4096 + k % 3;
      for (int l = 0; l < kLayers; ++l) {
        for (int e = 0; e < kExperts; ++e) {
          const double c = CountAt(s.step, l, e);
          s.counts[l * kExperts + e] = c;
          want_sum += static_cast<uint64_t>(c);
          want_weighted += static_cast<uint64_t>(c) * (l * kExperts + e + 1) *
                           static_cast<uint64_t>(k % 101 + 1);
        }
      }
      ASSERT_OK(writer->Write(s));
    }
    ASSERT_OK(writer->Close());
  }

  ASSERT_OK_AND_ASSIGN(auto reader, TraceReader::Open(counts));
  EXPECT_EQ(reader->layout().num_experts, kExperts);
  EXPECT_THAT(reader->layout().layer_ids, ElementsAre(2, 3, 4, 5));
  TraceStep step;
  int k = 0;
  uint64_t sum = 0;
  uint64_t weighted = 0;
  double last_progress = 0;
  while (true) {
    ASSERT_OK_AND_ASSIGN(bool more, reader->Next(&step));
    if (!more) break;
    ASSERT_EQ(step.step, 2 * k + 1);
    ASSERT_EQ(step.first_line, 2 + static_cast<int64_t>(k) * kLayers);
    ASSERT_THAT(step.tokens, Optional(4096 + k % 3));
    ASSERT_EQ(step.counts.size(), static_cast<size_t>(kLayers * kExperts));
    for (int i = 0; i < kLayers * kExperts; ++i) {
      const uint64_t c = static_cast<uint64_t>(step.counts[i]);
      sum += c;
      weighted += c * (i + 1) * static_cast<uint64_t>(k % 101 + 1);
    }
    const double p = reader->progress();
    ASSERT_GE(p, last_progress);
    ASSERT_LE(p, 1.0);
    last_progress = p;
    ++k;
  }
  EXPECT_EQ(k, kSteps);
  EXPECT_EQ(sum, want_sum);
  EXPECT_EQ(weighted, want_weighted);
  EXPECT_DOUBLE_EQ(reader->progress(), 1.0);
}

}  // namespace
}  // namespace moecast
