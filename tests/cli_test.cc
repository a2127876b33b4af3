// End-to-end tests of the moecast commands (replay, bench, plan, simulate):
// each runs in-process on files written to a temporary directory, as a user
// would run it.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/trace/trace_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "engine/testing/temp_files.h"
#include "integrations/cli/commands.h"
#include "tests/cli_runner.h"

namespace moecast {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

using ::moecast::testing::CommandRun;
using ::moecast::testing::Moecast;
using ::moecast::testing::TempPath;
using ::moecast::testing::WriteFile;

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
  const std::string path = WriteFile(
      "bad.counts.csv",
      "step,layer,c0,c1\n0,0,1,2\n0,1,3,4\n1,0,5,x\n1,1,1,1\n");
  CommandRun r = Moecast({"replay", "--counts", path, "--top_k=1", "--progress=off"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, IsEmpty());
  EXPECT_THAT(r.err, HasSubstr(path + ":4:7: column 'c1': count 'x' is not a "
                                      "number"));
}

TEST(CliReplayTest, MissingLayerFailsWithFileLine) {
  const std::string path = WriteFile(
      "gap.counts.csv", "step,layer,c0,c1\n0,0,1,2\n0,1,3,4\n1,0,5,6\n2,0,1,1\n2,1,1,1\n");
  CommandRun r = Moecast({"replay", "--counts", path, "--top_k=1", "--progress=off"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr(path + ":5:1: step 1 lacks layer 1"));
}

TEST(CliReplayTest, EngineRejectionPointsAtTheStepsLine) {
  // tokens = 1 but 3 assignments with top_k 2.
  const std::string path = WriteFile(
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
  const std::string bad = WriteFile(
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

TEST(CliPlanTest, PlansBothModesAndDecides) {
  const std::string loads = WriteFile(
      "loads.json",
      "{\"loads\": [[90, 10, 10, 10, 5, 5, 5, 5], [1, 2, 3, 4, 5, 6, 7, 80]]}");
  const std::string json = TempPath("plan.json");
  CommandRun r = Moecast({"plan", "--loads", loads, "--slots=12", "--gpus=4",
                          "--nodes=2", "--groups=2", "--json", json});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("2 layers x 8 experts -> 12 slots on 4 GPUs "
                               "(2 nodes, 2 groups), mode default"));
  std::ifstream f(json);
  std::stringstream text;
  text << f.rdbuf();
  for (const char* key : {"\"phy2log\"", "\"log2phy\"", "\"logcnt\"", "\"gpu_loads\"",
                          "\"balancedness\"", "\"balancedness_summed\"",
                          "\"max_over_mean\"", "\"moved_experts\"", "\"moved_bytes\"",
                          "\"plan_ms\"", "\"transfers\""}) {
    EXPECT_THAT(text.str(), HasSubstr(key));
  }
  // --repeat: the same plan again, its warm times summarised.
  CommandRun again = Moecast({"plan", "--loads", loads, "--slots=12", "--gpus=4",
                              "--repeat=4"});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_THAT(again.out, HasSubstr("planned again 3 times: median "));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("planned again")));
  CommandRun e = Moecast({"plan", "--loads", loads, "--slots=12", "--gpus=4",
                          "--mode=eplb"});
  EXPECT_EQ(e.code, 0) << e.err;
  EXPECT_THAT(e.out, HasSubstr("mode eplb"));

  // The plan as the current placement: nothing moves, and the decision holds.
  const std::string current = WriteFile(
      "current.json",
      "{\"phy2log\": [[0, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2], "
      "[7, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1]]}");
  CommandRun d = Moecast({"plan", "--loads", loads, "--slots=12", "--gpus=4",
                          "--current", current, "--bytes_per_expert=4e7",
                          "--intra_bw=1e11", "--inter_bw=2e10",
                          "--tokens_per_step=65536", "--time_per_token=2e-7",
                          "--horizon_steps=1000", "--tradeoff"});
  EXPECT_EQ(d.code, 0) << d.err;
  EXPECT_THAT(d.out, HasSubstr("current placement: balancedness"));
  EXPECT_THAT(d.out, HasSubstr("decision: "));
  EXPECT_THAT(d.out, HasSubstr("trade-off"));

  // Loads that moved: with the default migration model the plan moves only
  // what pays, so the decision agrees with the plan; --nomarginal takes the
  // best balance; a migration too dear for any move keeps everything.
  const std::string moved = WriteFile(
      "moved.json",
      "{\"loads\": [[10, 10, 10, 10, 5, 5, 5, 90], [80, 2, 3, 4, 5, 6, 7, 1]]}");
  const std::string spread = WriteFile(
      "spread.json",
      "{\"phy2log\": [[0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3], "
      "[0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3]]}");
  CommandRun pay = Moecast({"plan", "--loads", moved, "--slots=12", "--gpus=4",
                            "--current", spread});
  EXPECT_EQ(pay.code, 0) << pay.err;
  EXPECT_THAT(pay.out, HasSubstr("decision: REBALANCE"));
  CommandRun dear = Moecast({"plan", "--loads", moved, "--slots=12", "--gpus=4",
                             "--current", spread, "--bytes_per_expert=1e15"});
  EXPECT_EQ(dear.code, 0) << dear.err;
  EXPECT_THAT(dear.out, HasSubstr("moves: 0 experts"));
  EXPECT_THAT(dear.out, HasSubstr("decision: hold"));
  CommandRun all = Moecast({"plan", "--loads", moved, "--slots=12", "--gpus=4",
                            "--current", spread, "--bytes_per_expert=1e15",
                            "--nomarginal"});
  EXPECT_EQ(all.code, 0) << all.err;
  EXPECT_THAT(all.out, ::testing::Not(HasSubstr("moves: 0 experts")));
}

TEST(CliPlanTest, FoldsPerSlotLoadsThroughTheCurrentPlacement) {
  // Expert 0 served 10 + 5 on its two slots, expert 3 served 30 + 10.
  const std::string slot_loads = WriteFile(
      "slot_loads.json", "{\"slot_loads\": [[10, 10, 20, 30, 5, 5, 10, 10]]}");
  const std::string current =
      WriteFile("slot_current.json", "{\"phy2log\": [[0, 1, 2, 3, 0, 1, 2, 3]]}");
  const std::string json = TempPath("slot_plan.json");
  CommandRun r = Moecast({"plan", "--loads", slot_loads, "--current", current,
                          "--slots=8", "--gpus=4", "--json", json});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("1 layers x 4 experts -> 8 slots"));
  CommandRun missing = Moecast({"plan", "--loads", slot_loads, "--slots=8", "--gpus=4"});
  EXPECT_EQ(missing.code, 2);
  EXPECT_THAT(missing.err, HasSubstr("slot_loads need --current"));
}

// Fuzz finding (fuzz/corpus/plan/regress_slot_loads_huge_expert): with
// slot_loads, the expert count came from the largest id in phy2log, so an id
// of 2e9 made the folded loads 2e9 doubles per layer (std::bad_alloc or the
// OOM killer) instead of an error.
TEST(CliPlanTest, RejectsSlotLoadsWithAnExpertIdBeyondTheSlots) {
  const std::string slot_loads =
      WriteFile("huge_slot_loads.json", "{\"slot_loads\": [[1, 2]]}");
  const std::string current =
      WriteFile("huge_current.json", "{\"phy2log\": [[0, 2000000000]]}");
  CommandRun r = Moecast({"plan", "--loads", slot_loads, "--current", current,
                          "--slots=2", "--gpus=1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("phy2log names expert 2000000000"));
}

TEST(CliPlanTest, RejectsBadInputWithTheReason) {
  const std::string loads = WriteFile("l2.json", "{\"loads\": [[1, 2, 3, 4]]}");
  const std::string bad_value = WriteFile("l3.json", "{\"loads\": [[1, 2], [3, \"x\"]]}");
  const std::string ragged = WriteFile("l4.json", "{\"loads\": [[1, 2], [3]]}");
  const std::string no_key = WriteFile("l5.json", "{\"load\": [[1, 2]]}");
  const std::string not_json = WriteFile("l6.json", "[[1, 2]");
  const std::string negative = WriteFile("l7.json", "{\"loads\": [[1, -2, 3, 4]]}");
  const std::string cur_shape = WriteFile("c1.json", "{\"phy2log\": [[0, 1, 2, 3]]}");
  const std::string cur_unknown =
      WriteFile("c2.json", "{\"phy2log\": [[0, 1, 2, 3, 9, 0, 1, 2]]}");
  struct Case {
    std::vector<std::string> args;
    int code;
    const char* phrase;
  };
  const Case cases[] = {
      {{"plan", "--loads", loads, "--slots=6", "--gpus=4"}, 1,
       "num_slots (6) is not a multiple of num_gpus (4)"},
      {{"plan", "--loads", loads, "--slots=2", "--gpus=2"}, 1, "num_slots"},
      {{"plan", "--loads", loads, "--slots=8", "--gpus=4", "--nodes=3"}, 1,
       "num_nodes"},
      {{"plan", "--loads", loads, "--slots=8", "--gpus=4", "--groups=3"}, 1,
       "num_groups"},
      {{"plan", "--loads", bad_value, "--slots=4", "--gpus=2"}, 1,
       "loads[1][1] is not a number"},
      {{"plan", "--loads", ragged, "--slots=4", "--gpus=2"}, 1,
       "loads[1] has 1 values, loads[0] has 2"},
      {{"plan", "--loads", no_key, "--slots=4", "--gpus=2"}, 1,
       "expected an object with the key \"loads\""},
      {{"plan", "--loads", not_json, "--slots=4", "--gpus=2"}, 1, "not valid JSON"},
      {{"plan", "--loads", negative, "--slots=4", "--gpus=2"}, 1, "-2"},
      {{"plan", "--loads", loads, "--slots=8", "--gpus=4", "--current", cur_shape}, 1,
       "phy2log is 1 x 4, expected layers x slots = 1 x 8"},
      {{"plan", "--loads", loads, "--slots=8", "--gpus=4", "--current", cur_unknown},
       1, "9"},
      {{"plan", "--loads", loads, "--slots=8", "--gpus=4", "--mode=fast"}, 2,
       "--mode"},
      {{"plan", "--loads", loads, "--slots=8", "--gpus=4", "--exclude=1,x"}, 2,
       "--exclude: 'x' is not an integer"},
      {{"plan", "--loads", loads, "--slots=8", "--gpus=4", "--tokens_per_step=10"}, 2,
       "need --current"},
      {{"plan", "--loads", loads, "--slots=8", "--gpus=4", "--max_moves=3",
        "--move_budget=4"}, 2, "--max_moves (3) and --move_budget (4) disagree"},
      {{"plan", "--loads", loads, "--slots=8", "--gpus=4", "--max_moves=-2"}, 2,
       "--max_moves"},
      {{"plan", "--loads", loads, "--slots=8", "--gpus=4", "--repeat=0"}, 2,
       "--repeat"},
      {{"plan", "--loads", loads, "--slots=8", "--gpus=4", "--repeat=x"}, 2,
       "--repeat"},
      {{"plan", "--loads", loads, "--slots=8", "--gpus=4", "--bytes_per_expert=-1"}, 2,
       "bytes_per_expert must be finite and >= 0, got -1"},
      {{"plan", "--loads", TempPath("none.json"), "--slots=8", "--gpus=4"}, 1,
       "cannot open"},
      {{"plan", "--slots=8", "--gpus=4"}, 2, "--loads is required"},
  };
  for (const Case& c : cases) {
    CommandRun r = Moecast(c.args);
    EXPECT_EQ(r.code, c.code) << c.phrase << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.phrase));
  }
}

TEST(CliSimulateTest, ComparesThePolicies) {
  const std::string counts = TempPath("sim.counts.csv.gz");
  WriteTrace(counts, "", 600);
  const std::string json = TempPath("sim.json");
  CommandRun r = Moecast({"simulate", "--counts", counts, "--top_k=2", "--slots=8",
                          "--gpus=4", "--window=100", "--interval=200",
                          "--json", json});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("600 steps, 2 layers x 4 experts -> 8 slots on 4 GPUs"));
  EXPECT_THAT(r.out, HasSubstr("periodic"));
  EXPECT_THAT(r.out, HasSubstr("oracle"));
  EXPECT_THAT(r.out, HasSubstr("moecast"));
  std::ifstream f(json);
  std::stringstream text;
  text << f.rdbuf();
  EXPECT_THAT(text.str(), HasSubstr("\"mean_balancedness\""));
  EXPECT_THAT(text.str(), HasSubstr("\"moved_bytes\""));
  EXPECT_THAT(text.str(), HasSubstr("\"rebalances\""));
  EXPECT_THAT(text.str(), HasSubstr("\"total_time_s\""));
  EXPECT_THAT(r.out, HasSubstr("total s"));
  CommandRun scaled = Moecast({"simulate", "--counts", counts, "--top_k=2", "--slots=8",
                               "--gpus=4", "--window=100", "--interval=200",
                               "--policy=periodic", "--tokens_per_step=5000"});
  EXPECT_EQ(scaled.code, 0) << scaled.err;
  EXPECT_THAT(scaled.out, HasSubstr("token volume: 5000 assignments per layer per step"));

  struct Case {
    std::vector<std::string> args;
    int code;
    const char* phrase;
  };
  const Case cases[] = {
      {{"simulate", "--counts", counts, "--top_k=2", "--slots=8", "--gpus=4",
        "--policy=random"}, 2, "--policy='random'"},
      {{"simulate", "--counts", counts, "--top_k=2", "--slots=8", "--gpus=4",
        "--interval=0"}, 2, "--interval=0"},
      {{"simulate", "--counts", counts, "--top_k=2", "--slots=8", "--gpus=4",
        "--tokens_per_step=-5"}, 1, "tokens_per_step must be finite and >= 0, got -5"},
      {{"simulate", "--counts", counts, "--top_k=2", "--slots=6", "--gpus=4"}, 1,
       "num_slots (6) is not a multiple of num_gpus (4)"},
      {{"simulate", "--counts", TempPath("no.counts.csv"), "--top_k=2", "--slots=8",
        "--gpus=4"}, 1, "no such file"},
  };
  for (const Case& c : cases) {
    CommandRun x = Moecast(c.args);
    EXPECT_EQ(x.code, c.code) << c.phrase << "\n" << x.err;
    EXPECT_THAT(x.err, HasSubstr(c.phrase));
  }
}

TEST(CliHealthTest, ReportsWindowsAndEvents) {
  const std::string counts = TempPath("health.counts.csv.gz");
  const std::string router = TempPath("health.router.csv.gz");
  WriteTrace(counts, router, 300);
  const std::string json = TempPath("health.json");
  CommandRun r = Moecast({"health", "--counts", counts, "--router", router,
                          "--top_k=2", "--window=50", "--bootstrap=20",
                          "--temperature=1", "--entropy_weight=0.2",
                          "--oracle_weight=0", "--balance_weight=0", "--json", json});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("300 steps, 2 layers x 4 experts, top_k 2, windows of 50"));
  EXPECT_THAT(r.out, HasSubstr("unbounded"));
  std::ifstream f(json);
  std::stringstream text;
  text << f.rdbuf();
  for (const char* key : {"\"windows\"", "\"step\"", "\"layer\"", "\"gamma_f\"",
                          "\"ci_lo\"", "\"ci_hi\"", "\"r2\"", "\"temperature\"",
                          "\"phase\"", "\"max_over_mean\"", "\"dead_experts\"",
                          "\"events\""}) {
    EXPECT_THAT(text.str(), HasSubstr(key));
  }
  // Without the router file: no gamma_eff, and it says so.
  CommandRun no_router = Moecast({"health", "--counts", counts, "--top_k=2",
                                  "--window=50", "--json", json});
  EXPECT_EQ(no_router.code, 0) << no_router.err;
  EXPECT_THAT(no_router.out, HasSubstr("gamma_eff needs the router-logit means"));
}

TEST(CliHealthTest, RejectsBadInput) {
  const std::string counts = TempPath("health2.counts.csv");
  WriteTrace(counts, "", 20);
  struct Case {
    std::vector<std::string> args;
    int code;
    const char* phrase;
  };
  const Case cases[] = {
      {{"health", "--counts", counts, "--top_k=5"}, 1, "--top_k=5 exceeds the trace's 4"},
      {{"health", "--counts", counts, "--top_k=2", "--window=1"}, 2,
       "--window=1 must be in [2,"},
      {{"health", "--counts", counts, "--top_k=2", "--entropy_weight=-0.5"}, 2,
       "-0.5"},
      {{"health", "--counts", TempPath("nope.counts.csv"), "--top_k=2"}, 1,
       "no such file"},
      {{"health", "--top_k=2"}, 2, "--counts is required"},
  };
  for (const Case& c : cases) {
    CommandRun x = Moecast(c.args);
    EXPECT_EQ(x.code, c.code) << c.phrase << "\n" << x.err;
    EXPECT_THAT(x.err, HasSubstr(c.phrase));
  }
}

TEST(CliReplayTest, HelpAndVersion) {
  CommandRun v = Moecast({"version"});
  EXPECT_EQ(v.code, 0);
  EXPECT_THAT(v.out, StartsWith("moecast "));
  CommandRun h = Moecast({"help"});
  EXPECT_EQ(h.code, 0);
  EXPECT_THAT(h.out, HasSubstr("replay"));
  for (auto [command, flag] : {std::make_pair("replay", "--counts"),
                                std::make_pair("bench", "--horizons"),
                                std::make_pair("plan", "--loads"),
                                std::make_pair("simulate", "--policy"),
                                std::make_pair("health", "--router")}) {
    CommandRun c = Moecast({"help", command});
    EXPECT_EQ(c.code, 0) << command << c.err;
    EXPECT_THAT(c.out, HasSubstr(std::string("usage: moecast ") + command));
    EXPECT_THAT(c.out, HasSubstr(flag));
  }
}

}  // namespace
}  // namespace moecast
