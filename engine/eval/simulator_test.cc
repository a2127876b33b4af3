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
    ASSERT_OK_AND_ASSIGN(reports[policy], Simulate(*reader, Options(policy)));
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
