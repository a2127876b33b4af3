#include "engine/state/shift_detector.h"

#include <cmath>
#include <random>
#include <vector>

#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

// A layer of M experts whose tokens each pick K distinct experts from the
// current pool's distribution (sequential draws without replacement).
class Router {
 public:
  Router(int m, int k, uint32_t seed) : m_(m), k_(k), rng_(seed) {}

  // Proportions of one step of `tokens` tokens drawn from `dist`; sets
  // *assignments.
  std::vector<double> Step(const std::vector<double>& dist, int tokens,
                           double* assignments) {
    std::vector<double> counts(m_, 0.0);
    for (int t = 0; t < tokens; ++t) {
      std::vector<double> w = dist;
      for (int j = 0; j < k_; ++j) {
        std::discrete_distribution<int> pick(w.begin(), w.end());
        const int e = pick(rng_);
        counts[e] += 1;
        w[e] = 0;
      }
    }
    *assignments = static_cast<double>(tokens) * k_;
    for (double& c : counts) c /= *assignments;
    return counts;
  }

 private:
  const int m_, k_;
  std::mt19937 rng_;
};

// Two skewed distributions over M experts at L1 distance about `target`.
std::vector<double> Skewed(int m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::gamma_distribution<double> g(1.0, 1.0);
  std::vector<double> p(m);
  double sum = 0;
  for (double& v : p) sum += v = g(rng);
  for (double& v : p) v /= sum;
  return p;
}

std::vector<double> Mix(const std::vector<double>& a, const std::vector<double>& b,
                        double w) {
  std::vector<double> out(a.size());
  for (size_t e = 0; e < a.size(); ++e) out[e] = (1 - w) * a[e] + w * b[e];
  return out;
}

double L1(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (size_t e = 0; e < a.size(); ++e) d += std::abs(a[e] - b[e]);
  return d;
}

struct FeedResult {
  std::vector<Shift> shifts;
};

// Steps of `tokens` tokens: distribution `before` until `change` (or never
// if change < 0), then `after`.
FeedResult Feed(int tokens, int steps, int change, const std::vector<double>& before,
         const std::vector<double>& after, uint32_t seed) {
  Router router(32, 4, seed);
  ShiftDetector d(32, ShiftOptions());
  FeedResult run;
  for (int t = 0; t < steps; ++t) {
    double a = 0;
    const std::vector<double> p =
        router.Step(change >= 0 && t >= change ? after : before, tokens, &a);
    if (std::optional<Shift> s = d.Observe(t, p, a)) run.shifts.push_back(*s);
  }
  return run;
}

TEST(ShiftDetectorTest, NoFalseShiftOnAStationaryLoad) {
  const std::vector<double> p = Skewed(32, 1);
  for (int tokens : {8, 32, 128}) {
    const FeedResult run = Feed(tokens, 3000, -1, p, p, 10 + tokens);
    EXPECT_TRUE(run.shifts.empty())
        << tokens << " tokens/step: " << run.shifts.size() << " false shift(s), first at "
        << run.shifts[0].step << " size " << run.shifts[0].size;
  }
}

TEST(ShiftDetectorTest, SeesAnAbruptChangeAtEveryTokenCount) {
  const std::vector<double> a = Skewed(32, 1);
  const std::vector<double> b = Skewed(32, 2);
  for (double w : {0.6, 1.0}) {
    const std::vector<double> after = Mix(a, b, w);
    const double size = L1(a, after);
    for (int tokens : {8, 32, 128}) {
      SCOPED_TRACE(::testing::Message() << tokens << " tokens/step, L1 " << size);
      const int change = 1000;
      const FeedResult run = Feed(tokens, 1600, change, a, after, 20 + tokens);
      ASSERT_EQ(run.shifts.size(), 1u);
      const Shift& s = run.shifts[0];
      EXPECT_GE(s.step, change);
      EXPECT_LE(s.step, change + 100) << "detected late";
      EXPECT_NEAR(static_cast<double>(s.change_step), change, s.window);
      EXPECT_GT(s.size, 0.5 * size);
      EXPECT_LT(s.size, 1.5 * size + 0.2);
    }
  }
}

TEST(ShiftDetectorTest, WindowFollowsTheAssignmentsPerStep) {
  const std::vector<double> p = Skewed(32, 3);
  Router router(32, 4, 5);
  for (int tokens : {8, 128}) {
    ShiftDetector d(32, ShiftOptions());
    for (int t = 0; t < 20; ++t) {
      double a = 0;
      const std::vector<double> x = router.Step(p, tokens, &a);
      d.Observe(t, x, a);
    }
    // 2,000 assignments per window at 4 assignments per token.
    EXPECT_EQ(d.window(), tokens == 8 ? 63 : 4);
  }
}

TEST(ShiftDetectorTest, SnapshotRestoresAndContinuesIdentically) {
  const std::vector<double> a = Skewed(32, 1), b = Skewed(32, 2);
  Router router(32, 4, 9);
  std::vector<std::vector<double>> steps;
  std::vector<double> assignments;
  for (int t = 0; t < 1200; ++t) {
    double x = 0;
    steps.push_back(router.Step(t < 700 ? a : b, 32, &x));
    assignments.push_back(x);
  }
  ShiftDetector first(32, ShiftOptions());
  for (int t = 0; t < 500; ++t) first.Observe(t, steps[t], assignments[t]);
  internal::SnapshotWriter w;
  first.SaveTo(w);
  const std::string bytes = w.Release();
  ShiftDetector second(32, ShiftOptions());
  internal::SnapshotReader r(bytes, "shift");
  second.LoadFrom(r);
  r.ExpectEnd();
  ASSERT_OK(r.status());
  int found = 0;
  for (int t = 500; t < 1200; ++t) {
    std::optional<Shift> x = first.Observe(t, steps[t], assignments[t]);
    std::optional<Shift> y = second.Observe(t, steps[t], assignments[t]);
    ASSERT_EQ(x.has_value(), y.has_value()) << t;
    if (x) {
      ++found;
      EXPECT_EQ(x->step, y->step);
      EXPECT_EQ(x->change_step, y->change_step);
      EXPECT_EQ(x->size, y->size);
    }
  }
  EXPECT_EQ(found, 1);
  ShiftDetector other(16, ShiftOptions());
  internal::SnapshotReader r2(bytes, "shift");
  other.LoadFrom(r2);
  EXPECT_THAT(r2.status(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("num_experts")));
}

// The monitor reports one shift per change (whichever scale sees it first)
// and hands over the proportions of every step since the change point.
TEST(ShiftMonitorTest, ReportsOnceAndKeepsTheStepsSinceTheChange) {
  const std::vector<double> a = Skewed(32, 1), b = Skewed(32, 2);
  Router router(32, 4, 17);
  ShiftMonitor monitor(32, ShiftOptions());
  EXPECT_EQ(monitor.detectors().size(), ShiftOptions().scales.size());
  std::vector<std::vector<double>> seen;
  std::vector<Shift> shifts;
  std::vector<double> rows;
  for (int t = 0; t < 1600; ++t) {
    double x = 0;
    seen.push_back(router.Step(t < 1000 ? a : b, 32, &x));
    if (std::optional<Shift> s = monitor.Observe(t, seen.back(), x)) {
      shifts.push_back(*s);
      rows.assign(monitor.since_change().begin(), monitor.since_change().end());
    } else {
      EXPECT_TRUE(monitor.since_change().empty()) << t;
    }
  }
  ASSERT_EQ(shifts.size(), 1u);
  const Shift& s = shifts[0];
  ASSERT_LE(s.change_step, s.step);
  ASSERT_EQ(rows.size(), static_cast<size_t>(s.step - s.change_step + 1) * 32);
  for (int64_t t = s.change_step; t <= s.step; ++t) {
    for (int e = 0; e < 32; ++e) {
      // The detector stores counts as floats: 7 digits.
      EXPECT_NEAR(rows[(t - s.change_step) * 32 + e], seen[t][e], 1e-6) << t;
    }
  }
}

TEST(ShiftDetectorTest, BadOptionsAreRejected) {
  ShiftOptions o;
  EXPECT_OK(ValidateShiftOptions(o));
  o.min_window = 0;
  EXPECT_THAT(ValidateShiftOptions(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("min_window")));
  o = ShiftOptions();
  o.noise_multiple = 0.5;
  EXPECT_THAT(ValidateShiftOptions(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("noise_multiple = 0.5")));
  o = ShiftOptions();
  o.min_size = 3;
  EXPECT_THAT(ValidateShiftOptions(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("min_size = 3")));
  o = ShiftOptions();
  o.restart_max_memory = 0;
  EXPECT_THAT(ValidateShiftOptions(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("restart_max_memory = 0")));
  o = ShiftOptions();
  o.assignments_per_window = -1;
  EXPECT_THAT(ValidateShiftOptions(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("assignments_per_window")));
}

}  // namespace
}  // namespace moecast
