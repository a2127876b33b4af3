#include <httplib.h>

#include <cmath>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "integrations/metrics/metrics_server.h"
#include "integrations/metrics/prometheus_text.h"

namespace moecast::metrics {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

// Parses a text page into "name{labels}" -> value, checking the syntax of
// every line and that each family has one HELP and one TYPE before its
// samples.
std::map<std::string, double> Parse(const std::string& text) {
  static const std::regex kSample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? ([-+0-9.eE]+|NaN|[+-]Inf)$)");
  static const std::regex kComment(R"(^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$)");
  std::map<std::string, double> out;
  std::map<std::string, int> help, type;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, kComment)) {
      (m[1] == "HELP" ? help : type)[m[2]]++;
      continue;
    }
    EXPECT_TRUE(std::regex_match(line, m, kSample)) << "bad line: " << line;
    if (m.empty()) continue;
    EXPECT_EQ(type[m[1]], 1) << "no single TYPE before " << line;
    EXPECT_EQ(help[m[1]], 1) << "no single HELP before " << line;
    const std::string key = std::string(m[1]) + std::string(m[2]);
    EXPECT_EQ(out.count(key), 0u) << "duplicate series " << key;
    out[key] = m[3] == "NaN" ? std::nan("") : std::stod(m[3]);
  }
  return out;
}

// `steps` steps of a constant load per layer; from step `switch_at` on
// (if >= 0) both layers' loads switch to another (L1 0.6 and 0.4).
std::unique_ptr<Engine> EngineWithJob(int steps, int switch_at = -1) {
  std::unique_ptr<Engine> engine = Engine::Create(EngineOptions()).value();
  JobSpec spec;
  spec.job_id = "train-1";
  spec.num_layers = 2;
  spec.num_experts = 4;
  spec.top_k = 2;
  spec.predictors = {"last_value", "sw_avg(10)"};
  spec.horizons = {1, 10};
  EXPECT_OK(engine->RegisterJob(spec));
  const std::vector<double> counts = {40, 20, 20, 20, 10, 30, 30, 30};
  const std::vector<double> switched = {10, 30, 30, 30, 30, 10, 30, 30};
  for (int t = 0; t < steps; ++t) {
    StepInput in;
    in.step = t;
    in.counts = switch_at >= 0 && t >= switch_at ? switched : counts;
    EXPECT_OK(engine->Ingest("train-1", in).status());
  }
  return engine;
}

TEST(PrometheusTextTest, JobLevelSeries) {
  std::unique_ptr<Engine> engine = EngineWithJob(300);
  const std::map<std::string, double> m =
      Parse(RenderMetrics(*engine, nullptr, MetricsOptions()));
  const std::string job = "{job_id=\"train-1\"}";
  EXPECT_EQ(m.at("moecast_jobs"), 1);
  EXPECT_EQ(m.at("moecast_job_committed_steps_total" + job), 300);
  EXPECT_EQ(m.at("moecast_job_last_step" + job), 299);
  EXPECT_EQ(m.at("moecast_job_rejected_calls_total" + job), 0);
  EXPECT_GT(m.at("moecast_job_memory_bytes" + job), 0);
  // Constant loads: stable, forecasts exact.
  EXPECT_EQ(m.at("moecast_job_stable" + job), 1);
  EXPECT_EQ(m.at("moecast_job_transient_layers" + job), 0);
  EXPECT_NEAR(m.at("moecast_forecast_error{job_id=\"train-1\",horizon=\"1\"}"), 0, 1e-6);
  EXPECT_NEAR(m.at("moecast_forecast_error{job_id=\"train-1\",horizon=\"10\"}"), 0, 1e-6);
  // 300 steps: at least one health window (default 100 steps) has closed.
  EXPECT_EQ(m.at("moecast_job_dead_experts" + job), 0);
  EXPECT_NEAR(m.at("moecast_job_max_over_mean" + job), (1.6 + 1.2) / 2, 1e-9);
  // No router logits: no gamma_eff series; no service: no service counters;
  // no per-layer series by default.
  for (const auto& [key, value] : m) {
    EXPECT_EQ(key.find("moecast_job_gamma_eff"), std::string::npos) << key;
    EXPECT_EQ(key.find("moecast_steps_received_total"), std::string::npos) << key;
    EXPECT_EQ(key.find("layer="), std::string::npos) << key;
  }
}

TEST(PrometheusTextTest, PerLayerSeriesWhenAsked) {
  std::unique_ptr<Engine> engine = EngineWithJob(300);
  MetricsOptions options;
  options.per_layer = true;
  const std::map<std::string, double> m = Parse(RenderMetrics(*engine, nullptr, options));
  EXPECT_EQ(m.at("moecast_layer_stable{job_id=\"train-1\",layer=\"1\"}"), 1);
  EXPECT_NEAR(m.at("moecast_layer_max_over_mean{job_id=\"train-1\",layer=\"0\"}"), 1.6, 1e-9);
  EXPECT_EQ(m.at("moecast_layer_dead_experts{job_id=\"train-1\",layer=\"1\"}"), 0);
}

TEST(PrometheusTextTest, ShiftSeries) {
  std::unique_ptr<Engine> engine = EngineWithJob(400, /*switch_at=*/200);
  MetricsOptions options;
  options.per_layer = true;
  const std::map<std::string, double> m = Parse(RenderMetrics(*engine, nullptr, options));
  const std::string job = "{job_id=\"train-1\"}";
  EXPECT_EQ(m.at("moecast_job_shifts_total" + job), 1);
  EXPECT_EQ(m.at("moecast_job_layer_shifts_total" + job), 2);
  EXPECT_EQ(m.at("moecast_layer_shifts_total{job_id=\"train-1\",layer=\"0\"}"), 1);
  EXPECT_EQ(m.at("moecast_layer_shifts_total{job_id=\"train-1\",layer=\"1\"}"), 1);
  EXPECT_EQ(m.at("moecast_job_last_shift_change_step" + job), 200);
  // The job's event carries the layer shift that made the majority.
  const double size = m.at("moecast_job_last_shift_size" + job);
  // (the detector keeps counts as floats: 7 digits).
  EXPECT_TRUE(std::abs(size - 0.6) < 1e-6 || std::abs(size - 0.4) < 1e-6) << size;
  // Without a shift: zero counts and no last-shift series.
  std::unique_ptr<Engine> steady = EngineWithJob(400);
  const std::map<std::string, double> n = Parse(RenderMetrics(*steady, nullptr, options));
  EXPECT_EQ(n.at("moecast_job_shifts_total" + job), 0);
  EXPECT_EQ(n.count("moecast_job_last_shift_change_step" + job), 0u);
}

TEST(PrometheusTextTest, AJobWithoutStepsAndServiceCounters) {
  std::unique_ptr<Engine> engine = EngineWithJob(0);
  grpc_api::ServiceStats stats;
  stats.steps_received = 12;
  stats.steps_committed = 9;
  stats.rejected_steps_by_code = {{"INVALID_ARGUMENT", 2}, {"FAILED_PRECONDITION", 1}};
  stats.unauthenticated_calls = 4;
  stats.last_plan_balancedness = {{"train-1", 0.875}};
  const std::map<std::string, double> m =
      Parse(RenderMetrics(*engine, &stats, MetricsOptions()));
  EXPECT_EQ(m.at("moecast_steps_received_total"), 12);
  EXPECT_EQ(m.at("moecast_steps_committed_total"), 9);
  EXPECT_EQ(m.at("moecast_rejected_steps_total{code=\"INVALID_ARGUMENT\"}"), 2);
  EXPECT_EQ(m.at("moecast_rejected_steps_total{code=\"FAILED_PRECONDITION\"}"), 1);
  EXPECT_EQ(m.at("moecast_unauthenticated_calls_total"), 4);
  EXPECT_EQ(m.at("moecast_plan_balancedness{job_id=\"train-1\"}"), 0.875);
  EXPECT_EQ(m.at("moecast_job_committed_steps_total{job_id=\"train-1\"}"), 0);
  // Before the first step there is no state, no last step.
  EXPECT_EQ(m.count("moecast_job_stable{job_id=\"train-1\"}"), 0u);
  EXPECT_EQ(m.count("moecast_job_last_step{job_id=\"train-1\"}"), 0u);
}

TEST(PrometheusTextTest, EscapesLabelValues) {
  EXPECT_EQ(EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  EXPECT_EQ(EscapeLabelValue("plain-id.1"), "plain-id.1");
}

TEST(MetricsServerTest, ServesMetricsAnd404) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsServer> server,
                       MetricsServer::Start("127.0.0.1:0", [] {
                         return std::string("# HELP x y\n# TYPE x gauge\nx 1\n");
                       }));
  ASSERT_GT(server->port(), 0);
  httplib::Client client("127.0.0.1", server->port());
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "# HELP x y\n# TYPE x gauge\nx 1\n");
  EXPECT_THAT(res->get_header_value("Content-Type"), HasSubstr("version=0.0.4"));
  auto missing = client.Get("/other");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  server->Stop();
  server->Stop();  // idempotent
}

TEST(MetricsServerTest, RejectsBadAddresses) {
  auto render = [] { return std::string(); };
  for (const char* bad : {"", "127.0.0.1", ":80", "127.0.0.1:x", "127.0.0.1:70000"}) {
    EXPECT_THAT(MetricsServer::Start(bad, render),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("host:port")))
        << bad;
  }
  EXPECT_THAT(MetricsServer::Start("203.0.113.7:0", render),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("metrics")));
}

}  // namespace
}  // namespace moecast::metrics
