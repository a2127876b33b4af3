#include "integrations/cli/flags.h"

#include <string>
#include <vector>

#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast::cli {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

struct Parsed {
  std::string name;
  int64_t count = 7;
  double rate = 0.5;
  bool verbose = false;
};

absl::Status ParseInto(Parsed* p, std::vector<std::string> args) {
  FlagSet flags("test");
  flags.AddString("name", &p->name, "a name", /*required=*/true);
  flags.AddInt("count", &p->count, "a count");
  flags.AddDouble("rate", &p->rate, "a rate");
  flags.AddBool("verbose", &p->verbose, "talk more");
  return flags.Parse(args);
}

TEST(FlagSetTest, AcceptsBothValueFormsAndBooleans) {
  Parsed p;
  ASSERT_OK(ParseInto(&p, {"--name=x", "--count", "12", "-rate=0.25", "--verbose"}));
  EXPECT_EQ(p.name, "x");
  EXPECT_EQ(p.count, 12);
  EXPECT_EQ(p.rate, 0.25);
  EXPECT_TRUE(p.verbose);
  Parsed q;
  q.verbose = true;
  ASSERT_OK(ParseInto(&q, {"--name", "y", "--noverbose"}));
  EXPECT_FALSE(q.verbose);
  EXPECT_EQ(q.count, 7);  // default kept
  Parsed r;
  ASSERT_OK(ParseInto(&r, {"--name=z", "--verbose=false"}));
  EXPECT_FALSE(r.verbose);
}

TEST(FlagSetTest, RejectsBadInputNamingTheFlag) {
  struct Case {
    std::vector<std::string> args;
    const char* phrase;
  };
  const Case cases[] = {
      {{"--count=3"}, "--name is required (a name)"},
      {{"--name=x", "--slots=3"}, "--slots is not a flag of this command"},
      {{"--name=x", "--count=abc"}, "--count='abc' is not an integer"},
      {{"--name=x", "--rate=nan"}, "--rate='nan' is not a finite number"},
      {{"--name=x", "--verbose=maybe"}, "--verbose='maybe' is not true or false"},
      {{"--name=x", "--count"}, "--count needs a value"},
      {{"--name=x", "--name=y"}, "--name is given twice"},
      {{"--name="}, "--name is empty"},
      {{"--name=x", "stray"}, "unexpected argument 'stray'"},
  };
  for (const Case& c : cases) {
    Parsed p;
    EXPECT_THAT(ParseInto(&p, c.args),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.phrase)))
        << c.phrase;
  }
}

TEST(FlagSetTest, IntegerRanges) {
  int64_t n = 5;
  FlagSet flags("test");
  flags.AddInt("n", &n, "a bounded count", false, 1, 10);
  EXPECT_THAT(flags.Parse({"--n=0"}), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("--n=0 must be in [1, 10]")));
  FlagSet again("test");
  again.AddInt("n", &n, "a bounded count", false, 1, 10);
  ASSERT_OK(again.Parse({"--n=10"}));
  EXPECT_EQ(n, 10);
}

TEST(FlagSetTest, HelpSkipsValidation) {
  Parsed p;
  FlagSet flags("test");
  flags.AddString("name", &p.name, "a name", /*required=*/true);
  ASSERT_OK(flags.Parse({"--bogus", "--help"}));
  EXPECT_TRUE(flags.help_requested());
}

TEST(FlagSetTest, UsageListsEveryFlag) {
  Parsed p;
  FlagSet flags("test");
  flags.AddString("name", &p.name, "a name", true);
  flags.AddInt("count", &p.count, "a count");
  const std::string usage = flags.Usage();
  EXPECT_THAT(usage, HasSubstr("--name (required)"));
  EXPECT_THAT(usage, HasSubstr("--count (default 7)"));
  EXPECT_THAT(usage, HasSubstr("a count"));
}

}  // namespace
}  // namespace moecast::cli
