// End-to-end tests of `moecast replay`: the command runs in-process on trace
// files written to a temporary directory, as a user would run it.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/trace/trace_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "integrations/cli/commands.h"

namespace moecast {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

struct CommandRun {
  int code;
  std::string out;
  std::string err;
};

CommandRun Moecast(std::vector<std::string> args) {
  std::ostringstream out, err;
  const int code = cli::RunCommand(args, out, err);
  return {code, out.str(), err.str()};
}

std::string TempPath(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/", name);
}

std::string WriteText(const std::string& name, const std::string& text) {
  const std::string path = TempPath(name);
  std::ofstream(path) << text;
  return path;
}

// A 2-layer, 4-expert, top-2 trace of `steps` steps written by TraceWriter.
void WriteTrace(const std::string& counts, const std::string& router,
                int steps) {
  TraceLayout layout;
  layout.num_experts = 4;
  layout.layer_ids = {1, 3};
  layout.has_tokens = true;
  layout.has_router = !router.empty();
  auto writer = TraceWriter::Open(counts, router, layout);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (int t = 0; t < steps; ++t) {
    TraceStep s;
    s.step = t;
    s.tokens = 8;
    s.counts = {4, 4, 4, 4, double(t % 5), 6, 5, double(5 - t % 5)};
    if (layout.has_router) s.router_z.assign(8, 0.1 * t);
    ASSERT_TRUE((*writer)->Write(s).ok());
  }
  ASSERT_TRUE((*writer)->Close().ok());
}

TEST(CliReplayTest, SummarisesAGzipTraceWithRouter) {
  const std::string counts = TempPath("good.counts.csv.gz");
  const std::string router = TempPath("good.router.csv.gz");
  WriteTrace(counts, router, 50);
  CommandRun r = Moecast({"replay", "--counts", counts, "--router", router,
                   "--top_k=2", "--progress=off"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, IsEmpty());
  EXPECT_THAT(r.out, HasSubstr("job             good\n"));
  EXPECT_THAT(r.out, HasSubstr("steps           50 (steps 0..49; 0 gap(s)"));
  EXPECT_THAT(r.out, HasSubstr("layers          2 (ids 1,3)"));
  EXPECT_THAT(r.out, HasSubstr("experts         4 per layer, top_k 2"));
  EXPECT_THAT(r.out, HasSubstr("tokens          400 (8 per step on average, "
                               "from the tokens column)"));
  EXPECT_THAT(r.out, HasSubstr("router          " + router + " (z)"));
  EXPECT_THAT(r.out, HasSubstr("steps/s"));
  // Layer 1 is uniform: max/mean 1.00.
  EXPECT_THAT(r.out, HasSubstr("        1      1.00"));
}

TEST(CliReplayTest, MaxStepsAndJobFlags) {
  const std::string counts = TempPath("short.counts.csv");
  WriteTrace(counts, "", 30);
  CommandRun r = Moecast({"replay", "--counts", counts, "--top_k=2", "--job=my-job",
                   "--max_steps=10", "--progress=off"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("job             my-job"));
  EXPECT_THAT(r.out, HasSubstr("steps           10 (steps 0..9"));
  EXPECT_THAT(r.out, HasSubstr("router          none"));
}

TEST(CliReplayTest, MalformedTraceFailsWithFileLineColumn) {
  const std::string path = WriteText(
      "bad.counts.csv",
      "step,layer,c0,c1\n0,0,1,2\n0,1,3,4\n1,0,5,x\n1,1,1,1\n");
  CommandRun r = Moecast({"replay", "--counts", path, "--top_k=1", "--progress=off"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, IsEmpty());
  EXPECT_THAT(r.err, HasSubstr(path + ":4:7: column 'c1': count 'x' is not a "
                                      "number"));
}

TEST(CliReplayTest, MissingLayerFailsWithFileLine) {
  const std::string path = WriteText(
      "gap.counts.csv", "step,layer,c0,c1\n0,0,1,2\n0,1,3,4\n1,0,5,6\n2,0,1,1\n2,1,1,1\n");
  CommandRun r = Moecast({"replay", "--counts", path, "--top_k=1", "--progress=off"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr(path + ":5:1: step 1 lacks layer 1"));
}

TEST(CliReplayTest, EngineRejectionPointsAtTheStepsLine) {
  // tokens = 1 but 3 assignments with top_k 2.
  const std::string path = WriteText(
      "tok.counts.csv", "step,layer,tokens,c0,c1\n0,0,1,1,1\n1,0,1,2,1\n");
  CommandRun r = Moecast({"replay", "--counts", path, "--top_k=2", "--progress=off"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr(path + ":3:1: step 1 rejected: "));
  EXPECT_THAT(r.err, HasSubstr("3 assignments, more than tokens x top_k = 1 x 2"));
}

TEST(CliReplayTest, UsageErrors) {
  const std::string counts = TempPath("u.counts.csv");
  WriteTrace(counts, "", 3);
  struct Case {
    std::vector<std::string> args;
    int code;
    const char* phrase;
  };
  const Case cases[] = {
      {{"replay", "--top_k=2"}, 2, "--counts is required"},
      {{"replay", "--counts", counts}, 2, "--top_k is required"},
      {{"replay", "--counts", counts, "--top_k=2", "--bogus"}, 2,
       "--bogus is not a flag of this command"},
      {{"replay", "--counts", counts, "--top_k=2", "--progress=sometimes"}, 2,
       "--progress='sometimes' must be auto, on or off"},
      {{"replay", "--counts", counts, "--top_k=9"}, 1,
       "top_k = 9 must be in [1, num_experts = 4]"},
      {{"replay", "--counts", TempPath("none.counts.csv"), "--top_k=2"}, 1,
       "no such file"},
      {{"replay", "--counts", counts, "--router", TempPath("nr.csv"),
        "--top_k=2"},
       1, "no such file"},
      {{"frobnicate"}, 2, "unknown command 'frobnicate'"},
      {{}, 2, "usage: moecast <command>"},
  };
  for (const Case& c : cases) {
    CommandRun r = Moecast(c.args);
    EXPECT_EQ(r.code, c.code) << c.phrase;
    EXPECT_THAT(r.err, HasSubstr(c.phrase));
  }
}

TEST(CliBenchTest, WritesTablesAndJson) {
  const std::string counts = TempPath("bench.counts.csv.gz");
  WriteTrace(counts, "", 400);
  const std::string json = TempPath("bench.json");
  CommandRun r = Moecast({"bench", "--counts", counts, "--top_k=2", "--horizons=1,10",
                          "--predictors=last_value,sw_avg(20)", "--json", json});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("400 steps, 2 layers x 4 experts, top_k 2"));
  EXPECT_THAT(r.out, HasSubstr("sw_avg(20)"));
  EXPECT_THAT(r.out, HasSubstr("sampling floor"));
  EXPECT_THAT(r.out, HasSubstr("empirical floor"));
  EXPECT_THAT(r.out, HasSubstr("JSON report: " + json));
  std::ifstream f(json);
  std::stringstream text;
  text << f.rdbuf();
  EXPECT_THAT(text.str(), HasSubstr("\"results\": ["));
  EXPECT_THAT(text.str(), HasSubstr("\"predictor\": \"sw_avg(20)\""));
}

TEST(CliBenchTest, RejectsBadFlagsAndTraces) {
  const std::string counts = TempPath("bench2.counts.csv");
  WriteTrace(counts, "", 50);
  const std::string bad = WriteText(
      "bench_bad.counts.csv", "step,layer,c0,c1\n0,0,1,2\n1,0,-1,2\n");
  struct Case {
    std::vector<std::string> args;
    int code;
    const char* phrase;
  };
  const Case cases[] = {
      {{"bench", "--counts", counts, "--top_k=2", "--horizons=1,x"}, 2,
       "--horizons: 'x' is not an integer"},
      {{"bench", "--counts", counts, "--top_k=2", "--horizons=0"}, 2, "horizon 0"},
      {{"bench", "--counts", counts, "--top_k=2", "--predictors=prophet"}, 2,
       "unknown predictor 'prophet'"},
      {{"bench", "--counts", counts, "--top_k=2", "--series_horizon=7"}, 2,
       "--series_horizon=7 is not one of --horizons"},
      {{"bench", "--counts", counts, "--top_k=5"}, 1, "top_k = 5 exceeds"},
      {{"bench", "--counts", bad, "--top_k=1"}, 1, ":3:5: column 'c0': count '-1'"},
      {{"bench", "--top_k=1"}, 2, "--counts is required"},
  };
  for (const Case& c : cases) {
    CommandRun r = Moecast(c.args);
    EXPECT_EQ(r.code, c.code) << c.phrase;
    EXPECT_THAT(r.err, HasSubstr(c.phrase));
  }
}

TEST(CliReplayTest, HelpAndVersion) {
  CommandRun v = Moecast({"version"});
  EXPECT_EQ(v.code, 0);
  EXPECT_THAT(v.out, StartsWith("moecast "));
  CommandRun h = Moecast({"help"});
  EXPECT_EQ(h.code, 0);
  EXPECT_THAT(h.out, HasSubstr("replay"));
}

}  // namespace
}  // namespace moecast
