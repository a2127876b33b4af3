#include "engine/eval/simulator.h"

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/testing/status_matchers.h"
#include "engine/trace/trace_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

// 2 layers x 16 experts; the hot experts change every 400 steps (a regime
// switch a window sum lags behind); Poisson noise around the regime's load.
std::string WriteRegimeTrace(int steps) {
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/regimes.counts.csv.gz");
  TraceLayout layout;
  layout.num_experts = 16;
  layout.layer_ids = {0, 1};
  auto writer = TraceWriter::Open(path, "", layout).value();
  std::mt19937 rng(3);
  std::vector<double> weight(16);
  for (int t = 0; t < steps; ++t) {
    if (t % 400 == 0) {
      std::uniform_real_distribution<double> u(0, 1);
      for (double& w : weight) w = std::pow(u(rng), 3) * 400 + 5;
    }
    TraceStep s;
    s.step = t;
    for (int l = 0; l < 2; ++l) {
      for (int e = 0; e < 16; ++e) {
        std::poisson_distribution<int> d(weight[(e + 5 * l) % 16]);
        s.counts.push_back(d(rng));
      }
    }
    EXPECT_OK(writer->Write(s));
  }
  EXPECT_OK(writer->Close());
  return path;
}

SimulateOptions Options(const std::string& policy) {
  SimulateOptions o;
  o.top_k = 2;
  o.num_slots = 24;
  o.num_gpus = 8;
  o.num_nodes = 2;
  o.num_groups = 4;
  o.policy = policy;
  o.window = 400;
  o.interval = 400;
  return o;
}

TEST(SimulatorTest, OracleBoundsTheOthersAndMoecastMovesLess) {
  const std::string path = WriteRegimeTrace(4000);
  std::map<std::string, SimulateReport> reports;
  for (const char* policy : {"periodic", "oracle", "moecast"}) {
    auto reader = TraceReader::Open(path).value();
    SimulateOptions o = Options(policy);
    o.check_every = o.interval;  // the same cadence for all three
    ASSERT_OK_AND_ASSIGN(reports[policy], Simulate(*reader, o));
  }
  const SimulateReport& periodic = reports["periodic"];
  const SimulateReport& oracle = reports["oracle"];
  const SimulateReport& moecast = reports["moecast"];
  EXPECT_EQ(periodic.steps, 4000);
  // Decisions at steps 400, 800, ..., 3600.
  EXPECT_EQ(periodic.decisions.size(), 9u);
  EXPECT_EQ(oracle.decisions.size(), 9u);
  EXPECT_EQ(moecast.decisions.size(), 9u);
  // The oracle plans on the loads that follow: the best balance.
  EXPECT_GT(oracle.mean_balancedness, periodic.mean_balancedness);
  EXPECT_GE(oracle.mean_balancedness, moecast.mean_balancedness);
  // eplb ignores the current placement and moves almost everything.
  EXPECT_LT(moecast.moved_experts, periodic.moved_experts);
  for (const auto& [name, r] : reports) {
    EXPECT_GT(r.mean_balancedness, 0) << name;
    EXPECT_LE(r.mean_balancedness, 1) << name;
    EXPECT_LE(r.min_balancedness, r.mean_balancedness) << name;
    EXPECT_GT(r.moe_time_s, 0) << name;
    EXPECT_EQ(r.series_steps.size(), r.series_balancedness.size());
  }
  const std::string json = SimulateReportToJson(moecast);
  EXPECT_THAT(json, HasSubstr("\"policy\": \"moecast\""));
  EXPECT_THAT(json, HasSubstr("\"total_time_s\""));
}

// tokens_per_step sets the volume of both the decisions and the scoring: the
// trace's counts are scaled to it, so eplb's placements (which do not depend
// on the volume) score exactly that much more MoE time; and the policies that
// weigh migration against MoE time move more when the volume is larger.
TEST(SimulatorTest, OneTokenVolumeForDecisionsAndScoring) {
  const std::string path = WriteRegimeTrace(2000);
  auto run = [&](const char* policy, double tokens) {
    auto reader = TraceReader::Open(path).value();
    SimulateOptions o = Options(policy);
    o.migration.tokens_per_step = tokens;
    absl::StatusOr<SimulateReport> r = Simulate(*reader, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return *r;
  };
  const SimulateReport own = run("periodic", 0);
  EXPECT_GT(own.trace_tokens_per_step, 0);
  EXPECT_EQ(own.tokens_per_step, own.trace_tokens_per_step);
  const double n3 = 3 * own.trace_tokens_per_step;
  const SimulateReport tripled = run("periodic", n3);
  EXPECT_EQ(tripled.tokens_per_step, n3);
  EXPECT_NEAR(tripled.moe_time_s, 3 * own.moe_time_s, 1e-9 * own.moe_time_s);
  EXPECT_EQ(tripled.moved_experts, own.moved_experts);
  EXPECT_DOUBLE_EQ(tripled.total_time_s, tripled.moe_time_s + tripled.migration_s);

  for (const char* policy : {"oracle", "moecast"}) {
    SCOPED_TRACE(policy);
    const SimulateReport small = run(policy, own.trace_tokens_per_step / 1000);
    const SimulateReport large = run(policy, own.trace_tokens_per_step * 1000);
    // At a thousandth of the volume only the forced moves are made (the
    // starting placement has duplicates on a GPU to remove).
    EXPECT_LT(small.moved_experts, large.moved_experts);
    EXPECT_LE(small.rebalances, 1);
    EXPECT_DOUBLE_EQ(large.total_time_s, large.moe_time_s + large.migration_s);
  }
}

// By default moecast checks every min(interval, 100) steps and rebalances
// only when it pays.
TEST(SimulatorTest, MoecastChecksOftenByDefault) {
  const std::string path = WriteRegimeTrace(1000);
  auto reader = TraceReader::Open(path).value();
  ASSERT_OK_AND_ASSIGN(SimulateReport r, Simulate(*reader, Options("moecast")));
  ASSERT_EQ(r.decisions.size(), 9u);  // steps 100, ..., 900
  EXPECT_EQ(r.decisions[0].step, 100);
  int64_t adopted = 0;
  for (const SimulateDecision& d : r.decisions) adopted += d.adopted;
  EXPECT_LE(r.rebalances, adopted);
  EXPECT_LT(adopted, 9);  // not every check pays
}

TEST(SimulatorTest, RejectsBadOptions) {
  const std::string path = WriteRegimeTrace(10);
  struct Case {
    void (*mutate)(SimulateOptions&);
    const char* phrase;
  };
  const Case cases[] = {
      {[](SimulateOptions& o) { o.policy = "lucky"; }, "policy 'lucky'"},
      {[](SimulateOptions& o) { o.top_k = 0; }, "top_k = 0"},
      {[](SimulateOptions& o) { o.interval = 0; }, "interval (0)"},
      {[](SimulateOptions& o) { o.num_slots = 20; }, "num_slots (20)"},
      {[](SimulateOptions& o) { o.migration.tokens_per_step = -1; },
       "simulate: migration: tokens_per_step must be finite and >= 0, got -1"},
      {[](SimulateOptions& o) { o.migration.intra_node_bandwidth = 0; },
       "intra_node_bandwidth must be finite and > 0, got 0"},
  };
  for (const Case& c : cases) {
    auto reader = TraceReader::Open(path).value();
    SimulateOptions o = Options("periodic");
    c.mutate(o);
    EXPECT_THAT(Simulate(*reader, o),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.phrase)))
        << c.phrase;
  }
}

}  // namespace
}  // namespace moecast
