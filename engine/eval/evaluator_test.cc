#include "engine/eval/evaluator.h"

#include <algorithm>
#include <cmath>
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

constexpr int kExperts = 8;
constexpr int kTopK = 2;
constexpr int kTokens = 256;

// Counts of one step: kTokens tokens, each picking kTopK distinct experts
// (Gumbel-top-k on log weights).
std::vector<double> Sample(const std::vector<double>& w, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(1e-12, 1.0);
  std::vector<double> c(w.size(), 0.0);
  std::vector<std::pair<double, int>> keys(w.size());
  for (int t = 0; t < kTokens; ++t) {
    for (size_t e = 0; e < w.size(); ++e) {
      keys[e] = {std::log(w[e]) - std::log(-std::log(u(rng))), static_cast<int>(e)};
    }
    std::partial_sort(keys.begin(), keys.begin() + kTopK, keys.end(),
                      [](auto& a, auto& b) { return a.first > b.first; });
    for (int j = 0; j < kTopK; ++j) c[keys[j].second] += 1;
  }
  return c;
}

// Two layers: the load drifts for `drift_steps` steps, then holds still;
// from step `switch_at` on (if >= 0) the experts' weights are reversed.
std::string WriteTrace(const std::string& name, int steps, int drift_steps,
                       int switch_at = -1) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/", name, ".counts.csv.gz");
  TraceLayout layout;
  layout.num_experts = kExperts;
  layout.layer_ids = {0, 1};
  layout.has_tokens = true;
  auto writer = TraceWriter::Open(path, "", layout).value();
  std::mt19937 rng(17);
  std::normal_distribution<double> walk(0, 0.1);
  std::vector<std::vector<double>> logits(2, std::vector<double>(kExperts, 0.0));
  for (int l = 0; l < 2; ++l) {
    for (int e = 0; e < kExperts; ++e) logits[l][e] = -0.3 * e;
  }
  for (int t = 0; t < steps; ++t) {
    TraceStep s;
    s.step = t;
    s.tokens = kTokens;
    for (int l = 0; l < 2; ++l) {
      std::vector<double> w(kExperts);
      for (int e = 0; e < kExperts; ++e) {
        if (t < drift_steps) logits[l][e] += walk(rng);
        const int from = switch_at >= 0 && t >= switch_at ? kExperts - 1 - e : e;
        w[e] = std::exp(logits[l][from]);
      }
      std::vector<double> c = Sample(w, rng);
      s.counts.insert(s.counts.end(), c.begin(), c.end());
    }
    EXPECT_OK(writer->Write(s));
  }
  EXPECT_OK(writer->Close());
  return path;
}

const EvalResult* Find(const EvalReport& r, const std::string& p, int h,
                       const std::string& state) {
  for (const EvalResult& x : r.results) {
    if (x.predictor == p && x.horizon == h && x.state == state) return &x;
  }
  return nullptr;
}

const FloorResult* FindFloor(const std::vector<FloorResult>& v, int h,
                             const std::string& state) {
  for (const FloorResult& x : v) {
    if (x.horizon == h && x.state == state) return &x;
  }
  return nullptr;
}

TEST(EvaluatorTest, PureSamplingNoiseSitsOnTheFloors) {
  const std::string path = WriteTrace("noise", 1500, 0);
  auto reader = TraceReader::Open(path).value();
  EvalOptions o;
  o.top_k = kTopK;
  o.horizons = {1, 10, 100};
  ASSERT_OK_AND_ASSIGN(EvalReport r, Evaluate(*reader, o));
  EXPECT_EQ(r.steps, 1500);
  EXPECT_EQ(r.layers, 2);
  // Every predictor plus auto, every horizon, state "all".
  for (const std::string& p : r.predictors) {
    for (int h : o.horizons) {
      const EvalResult* x = Find(r, p, h, "all");
      ASSERT_NE(x, nullptr) << p << " h=" << h;
      // Origins every max(1, h/10) steps, scored once h steps have passed.
      const int stride = std::max(1, h / 10);
      const int64_t origins = (1500 - h) / stride;
      EXPECT_EQ(x->n, 2 * origins) << p << " h=" << h;
    }
  }
  // Pure sampling noise: the empirical floor equals the sampling floor, and
  // the window mean forecasts at about that floor at h = 1.
  for (int h : o.horizons) {
    const FloorResult* s = FindFloor(r.noise_floor, h, "all");
    const FloorResult* e = FindFloor(r.empirical_floor, h, "all");
    ASSERT_NE(s, nullptr);
    ASSERT_NE(e, nullptr);
    EXPECT_NEAR(e->l1 / s->l1, 1.0, 0.1) << "h=" << h;
  }
  const double floor1 = FindFloor(r.noise_floor, 1, "all")->l1;
  const double sw1 = Find(r, "sw_avg(100)", 1, "all")->l1;
  EXPECT_GT(sw1, floor1 * 0.95);
  EXPECT_LT(sw1, floor1 * 1.15);
  // The layers are stable once the first window is full, and stay so.
  for (int l = 0; l < 2; ++l) EXPECT_EQ(r.stable_from[l], o.state.min_dwell_steps - 1);
  EXPECT_EQ(r.transitions.size(), 2u);
  ASSERT_EQ(r.timing.size(), r.predictors.size() - 1);
  for (const EvalTiming& t : r.timing) EXPECT_GT(t.update_us, 0);
}

TEST(EvaluatorTest, DriftThenStabilityIsAttributedByState) {
  const std::string path = WriteTrace("drift", 2500, 800);
  auto reader = TraceReader::Open(path).value();
  EvalOptions o;
  o.top_k = kTopK;
  o.horizons = {1, 10};
  ASSERT_OK_AND_ASSIGN(EvalReport r, Evaluate(*reader, o));
  for (int l = 0; l < 2; ++l) {
    EXPECT_GT(r.stable_from[l], 800) << l;
    EXPECT_LT(r.stable_from[l], 800 + o.state.window + 100) << l;
  }
  const EvalResult* transient = Find(r, "sw_avg(100)", 10, "transient");
  const EvalResult* stable = Find(r, "sw_avg(100)", 10, "stable");
  ASSERT_NE(transient, nullptr);
  ASSERT_NE(stable, nullptr);
  EXPECT_EQ(transient->n + stable->n, Find(r, "sw_avg(100)", 10, "all")->n);
  // A window mean lags a drifting load: worse in the transient state.
  EXPECT_GT(transient->l1, 1.5 * stable->l1);
  // The series holds the busiest experts of layer 0 at h = 10.
  EXPECT_EQ(r.series.experts.size(), 3u);
  EXPECT_EQ(r.series.actual.size(), 3u);
  EXPECT_FALSE(r.series.steps.empty());
  EXPECT_EQ(r.series.steps.size(), r.series.actual[0].size());
  EXPECT_EQ(r.series.steps.size(), r.series.state.size());

  const std::string json = EvalReportToJson(r);
  for (const char* key :
       {"\"results\"", "\"noise_floor\"", "\"empirical_floor\"", "\"transitions\"",
        "\"timing\"", "\"series\"", "\"predictor\": \"auto\"", "\"state\": \"stable\"",
        "\"step_mape\"", "\"update_us\"", "\"forecast_us\"", "\"from\": \"transient\""}) {
    EXPECT_THAT(json, HasSubstr(key));
  }
}

// An abrupt switch: each layer reports one shift at its change point, the
// stable layers are transient by the detection step, and sw_avg restarts there (lower error
// around the switch than without the restart).
TEST(EvaluatorTest, ShiftsAreReportedAndRestartTheSmoothers) {
  const std::string path = WriteTrace("switch", 2000, 0, /*switch_at=*/1000);
  EvalOptions options;
  options.top_k = kTopK;
  options.predictors = {"last_value", "sw_avg(100)"};
  options.timing_steps = 0;
  double l1[2] = {0, 0};
  for (bool restart : {true, false}) {
    auto reader = TraceReader::Open(path).value();
    options.shift.restart_predictors = restart;
    ASSERT_OK_AND_ASSIGN(EvalReport r, Evaluate(*reader, options));
    ASSERT_EQ(r.shifts.size(), 2u);
    EXPECT_EQ(r.layer_shifts, 2);
    for (const EvalShift& s : r.shifts) {
      EXPECT_NEAR(static_cast<double>(s.change_step), 1000, 2) << s.layer;
      EXPECT_GE(s.step, 1000);
      EXPECT_LE(s.step, 1010);
      EXPECT_GT(s.size, 0.5);
      bool turned_transient = false;
      for (const EvalTransition& t : r.transitions) {
        // (by R or, at the latest, by the shift itself)
        turned_transient |= t.layer == s.layer && t.step >= 1000 && t.step <= s.step &&
                            t.to == "transient";
      }
      EXPECT_TRUE(turned_transient) << "layer " << s.layer;
    }
    const EvalResult* x = Find(r, "sw_avg(100)", 10, "all");
    ASSERT_NE(x, nullptr);
    l1[restart ? 0 : 1] = x->l1;
  }
  EXPECT_LT(l1[0], l1[1]);
}

TEST(EvaluatorTest, RejectsBadOptions) {
  const std::string path = WriteTrace("small", 50, 0);
  struct Case {
    void (*mutate)(EvalOptions&);
    const char* phrase;
  };
  const Case cases[] = {
      {[](EvalOptions& o) { o.top_k = 0; }, "top_k = 0"},
      {[](EvalOptions& o) { o.top_k = 9; }, "top_k = 9 exceeds the trace's 8 experts"},
      {[](EvalOptions& o) { o.horizons = {0}; }, "horizon 0"},
      {[](EvalOptions& o) { o.horizons = {}; }, "no horizons"},
      {[](EvalOptions& o) { o.series_layer = 2; }, "series layer 2 is out of range"},
      {[](EvalOptions& o) { o.predictors = {"prophet"}; }, "unknown predictor 'prophet'"},
      {[](EvalOptions& o) { o.max_steps = -1; }, "max_steps = -1"},
  };
  for (const Case& c : cases) {
    auto reader = TraceReader::Open(path).value();
    EvalOptions o;
    o.top_k = kTopK;
    c.mutate(o);
    EXPECT_THAT(Evaluate(*reader, o),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.phrase)))
        << c.phrase;
  }
}

}  // namespace
}  // namespace moecast
