#include "engine/health/monitor.h"

#include <cmath>
#include <string>
#include <vector>

#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

HealthOptions Options(int window) {
  HealthOptions o;
  o.window_steps = window;
  o.gamma.top_k = 1;
  o.gamma.bootstrap_replicates = 20;
  o.dead.window_steps = window;
  return o;
}

TEST(HealthMonitorTest, WindowsWithoutLogitsReportImbalanceAndSayWhy) {
  HealthMonitor m(2, 4, Options(10));
  const std::vector<double> counts = {40, 30, 20, 10};
  for (int t = 0; t < 25; ++t) ASSERT_OK(m.Observe(t, counts, 100, {}));
  std::vector<HealthWindow> windows = m.TakeWindows();
  ASSERT_EQ(windows.size(), 2u);
  EXPECT_EQ(windows[0].step, 9);
  EXPECT_EQ(windows[1].step, 19);
  EXPECT_EQ(windows[0].layer, 2);
  EXPECT_FALSE(windows[0].gamma.has_value());
  EXPECT_THAT(windows[0].gamma_status, HasSubstr("needs router-logit means"));
  EXPECT_NEAR(windows[0].imbalance.max_over_mean, 0.4 / 0.25, 1e-12);
  EXPECT_EQ(m.latest()->step, 19);
  EXPECT_EQ(m.phase(), Phase::kUnknown);
}

TEST(HealthMonitorTest, FitsGammaWhenLogitsArePresent) {
  // Loads at the equilibrium of gamma_rho = 2 for these logits (top-1):
  // rho = softmax(q - 2 rho), found by fixed-point iteration here.
  const std::vector<double> q = {1.0, 0.5, 0.0, -0.5};
  std::vector<double> rho(4, 0.25);
  for (int it = 0; it < 2000; ++it) {
    double z = 0;
    std::vector<double> next(4);
    for (int e = 0; e < 4; ++e) z += next[e] = std::exp(q[e] - 2 * rho[e]);
    for (int e = 0; e < 4; ++e) rho[e] = 0.5 * rho[e] + 0.5 * next[e] / z;
  }
  HealthMonitor m(0, 4, Options(10));
  std::vector<double> counts(4);
  for (int e = 0; e < 4; ++e) counts[e] = rho[e] * 1e7;
  for (int t = 0; t < 10; ++t) ASSERT_OK(m.Observe(t, counts, 1e7, q));
  ASSERT_NE(m.latest(), nullptr);
  ASSERT_TRUE(m.latest()->gamma.has_value()) << m.latest()->gamma_status;
  EXPECT_NEAR(m.latest()->gamma->gamma_f, 2.0, 1e-6);  // K = 1: f = rho units
}

TEST(HealthMonitorTest, DeadExpertsAreEvents) {
  HealthMonitor m(1, 4, Options(10));
  // Expert 3 gets nothing from step 0 on: dead after 3 qualifying windows.
  const std::vector<double> counts = {100, 100, 100, 0};
  for (int t = 0; t < 30; ++t) ASSERT_OK(m.Observe(t, counts, 300, {}));
  std::vector<HealthEvent> events = m.TakeEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, "expert_dead");
  EXPECT_EQ(events[0].expert, 3);
  EXPECT_EQ(events[0].step, 29);
  EXPECT_EQ(events[0].layer, 1);
  EXPECT_EQ(events[0].to, "dead");
  EXPECT_THAT(m.latest()->dead_experts, ElementsAre(3));
  EXPECT_THAT(m.TakeEvents(), IsEmpty());
}

// The window's summed counts come from the dead-expert tracker when its
// windows are the same steps (the default), else from the monitor's own sums:
// either way, and across a mid-window snapshot, the same numbers.
TEST(HealthMonitorTest, WindowCountsAgreeWithOrWithoutTheTrackersSums) {
  HealthOptions shared = Options(10);
  HealthOptions own = Options(10);
  own.dead.window_steps = 7;  // not the same steps: the monitor sums
  HealthMonitor a(0, 4, shared), b(0, 4, own);
  auto counts_at = [](int t) {
    return std::vector<double>{0.1 * t + 1.0 / 3, 7.0 / (t + 1), 2.5, t % 3 + 0.7};
  };
  for (int t = 0; t < 15; ++t) {
    ASSERT_OK(a.Observe(t, counts_at(t), 100, {}));
    ASSERT_OK(b.Observe(t, counts_at(t), 100, {}));
  }
  // Restore `a` mid-window into a fresh monitor and go on with both.
  internal::SnapshotWriter out;
  a.SaveTo(out);
  const std::string bytes = out.Release();
  internal::SnapshotReader in(bytes, "health");
  HealthMonitor restored(0, 4, shared);
  restored.LoadFrom(in);
  ASSERT_OK(in.status());
  for (int t = 15; t < 40; ++t) {
    ASSERT_OK(a.Observe(t, counts_at(t), 100, {}));
    ASSERT_OK(b.Observe(t, counts_at(t), 100, {}));
    ASSERT_OK(restored.Observe(t, counts_at(t), 100, {}));
  }
  const std::vector<HealthWindow> wa = a.TakeWindows();
  const std::vector<HealthWindow> wb = b.TakeWindows();
  const std::vector<HealthWindow> wr = restored.TakeWindows();
  ASSERT_EQ(wa.size(), 4u);
  ASSERT_EQ(wb.size(), 4u);
  ASSERT_EQ(wr.size(), 4u);  // the first was undelivered when saved
  for (size_t i = 0; i < wa.size(); ++i) {
    EXPECT_EQ(wa[i].imbalance.total, wb[i].imbalance.total) << i;
    EXPECT_EQ(wa[i].imbalance.max_over_mean, wb[i].imbalance.max_over_mean) << i;
    EXPECT_EQ(wa[i].imbalance.normalized_entropy, wb[i].imbalance.normalized_entropy)
        << i;
    EXPECT_EQ(wr[i].step, wa[i].step);
    EXPECT_EQ(wr[i].imbalance.total, wa[i].imbalance.total) << i;
    EXPECT_EQ(wr[i].imbalance.coefficient_of_variation,
              wa[i].imbalance.coefficient_of_variation)
        << i;
  }
}

TEST(HealthMonitorTest, RejectsBadInput) {
  HealthMonitor m(0, 4, Options(10));
  EXPECT_THAT(m.Observe(0, std::vector<double>{1, 2, 3}, 10, {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("counts has 3 values, expected 4")));
  EXPECT_THAT(m.Observe(0, std::vector<double>{1, 2, 3, 4}, 0, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tokens = 0")));
  EXPECT_THAT(m.Observe(0, std::vector<double>{1, 2, 3, 4}, 10,
                        std::vector<double>{1, 2}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("logits has 2 values")));
  HealthOptions bad = Options(1);
  EXPECT_THAT(ValidateHealthOptions(bad),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("window_steps = 1")));
}

}  // namespace
}  // namespace moecast
