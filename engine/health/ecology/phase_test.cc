#include "engine/health/ecology/phase.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kZ95 = 1.959963984540054;

// Standard normal draws from mt19937 by Box-Muller (std::normal_distribution
// differs between standard libraries; this does not).
class Gaussian {
 public:
  explicit Gaussian(uint32_t seed) : rng_(seed) {}
  double operator()() {
    const double u1 = (rng_() + 1.0) / 4294967297.0;  // (0, 1)
    const double u2 = rng_() / 4294967296.0;
    return std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
  }

 private:
  std::mt19937 rng_;
};

struct Trajectory {
  std::vector<PhaseChange> changes;
  std::vector<Phase> phases;  // after each window
};

// Feeds mu[i] + noise as window i (last step 1000 * (i + 1)), with a 95% CI
// of half-width `half_width` that matches the noise (se = half_width / 1.96).
Trajectory Feed(PhaseTracker& t, const std::vector<double>& mu,
                double half_width, uint32_t seed) {
  Gaussian g(seed);
  Trajectory r;
  for (size_t i = 0; i < mu.size(); ++i) {
    const double gamma = mu[i] + half_width / kZ95 * g();
    auto c = t.Observe({static_cast<int64_t>(1000 * (i + 1)), gamma,
                        gamma - half_width, gamma + half_width});
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok()) return r;
    if (c->has_value()) r.changes.push_back(**c);
    r.phases.push_back(t.phase());
  }
  return r;
}

std::string Describe(const Trajectory& r) {
  std::string s;
  for (const PhaseChange& c : r.changes) {
    s += std::string(PhaseName(c.to)) + "@" + std::to_string(c.window_index) +
         " ";
  }
  return s;
}

// ---------------------------------------------------------------------------
// Options and input

TEST(PhaseOptionsTest, DefaultsAreValid) {
  PhaseOptions o;
  EXPECT_OK(ValidatePhaseOptions(o));
  EXPECT_EQ(PhaseTracker::MinWindowsToLeaveUnknown(o), 10);
}

TEST(PhaseOptionsTest, RejectsBadOptions) {
  auto bad = [](auto mutate, const char* field) {
    PhaseOptions o;
    mutate(o);
    EXPECT_THAT(ValidatePhaseOptions(o),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(field)))
        << field;
    EXPECT_THAT(PhaseTracker::Create(o),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(field)));
  };
  bad([](PhaseOptions& o) { o.fit_windows = 2; }, "fit_windows = 2");
  bad([](PhaseOptions& o) { o.confirm_windows = 0; }, "confirm_windows");
  bad([](PhaseOptions& o) { o.min_windows_in_phase = 0; },
      "min_windows_in_phase");
  bad([](PhaseOptions& o) { o.point_ci_level = 1; }, "point_ci_level");
  bad([](PhaseOptions& o) { o.point_ci_level = kNaN; }, "point_ci_level");
  bad([](PhaseOptions& o) { o.slope_ci_level = 0; }, "slope_ci_level");
  bad([](PhaseOptions& o) { o.flat_ci_level = 0.99; }, "flat_ci_level");
  bad([](PhaseOptions& o) { o.flat_ci_level = 0; }, "flat_ci_level");
  bad([](PhaseOptions& o) { o.min_relative_se = -0.1; }, "min_relative_se");
  bad([](PhaseOptions& o) { o.min_relative_se = 1.5; }, "min_relative_se");
}

TEST(PhaseTrackerTest, RejectsBadPointsWithoutRecordingThem) {
  PhaseTracker t(PhaseOptions{});
  EXPECT_THAT(t.Observe({100, kNaN, 1, 2}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("must be finite")));
  EXPECT_THAT(t.Observe({100, 1.5, 2, 1}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("ci_lo = 2 > ci_hi = 1")));
  EXPECT_EQ(t.windows(), 0);
  ASSERT_OK(t.Observe({100, 1.5, 1, 2}));
  EXPECT_THAT(t.Observe({100, 1.5, 1, 2}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not follow")));
  EXPECT_EQ(t.windows(), 1);
  // A negative gamma and an estimate outside its own CI are accepted.
  EXPECT_OK(t.Observe({200, -3, -1, 0}));
}

// ---------------------------------------------------------------------------
// The slope

TEST(PhaseTrackerTest, WeightedSlopeAndItsIntervalOnAnExactLine) {
  PhaseTracker t(PhaseOptions{});
  // y = 10 + 0.002 x at x = 1000..6000, se = 1 everywhere.
  for (int i = 1; i <= 6; ++i) {
    const double y = 10 + 0.002 * 1000 * i;
    ASSERT_OK(t.Observe({1000 * i, y, y - kZ95, y + kZ95}));
  }
  ASSERT_TRUE(t.slope().has_value());
  const SlopeEstimate& s = *t.slope();
  EXPECT_EQ(s.points, 6);
  EXPECT_NEAR(s.slope, 0.002, 1e-12);
  EXPECT_DOUBLE_EQ(s.scale_factor, 1);  // no scatter: the CIs decide
  // se_b = 1 / sqrt(Sxx), Sxx = 1000^2 * 17.5.
  const double se_b = 1 / std::sqrt(1.75e7);
  EXPECT_NEAR(s.standard_error, se_b, 1e-12);
  EXPECT_NEAR(s.lo, 0.002 - kZ95 * se_b, 1e-9);
  EXPECT_NEAR(s.hi, 0.002 + kZ95 * se_b, 1e-9);
  EXPECT_EQ(s.trend, Trend::kRising);
}

// Ordinary least squares slope and its residual standard error.
void Ols(const std::vector<double>& x, const std::vector<double>& y,
         double* slope, double* se) {
  const int n = static_cast<int>(x.size());
  double xm = 0, ym = 0;
  for (int i = 0; i < n; ++i) {
    xm += x[i] / n;
    ym += y[i] / n;
  }
  double sxx = 0, sxy = 0;
  for (int i = 0; i < n; ++i) {
    sxx += (x[i] - xm) * (x[i] - xm);
    sxy += (x[i] - xm) * (y[i] - ym);
  }
  *slope = sxy / sxx;
  double rss = 0;
  for (int i = 0; i < n; ++i) {
    const double r = y[i] - ym - *slope * (x[i] - xm);
    rss += r * r;
  }
  *se = std::sqrt(rss / (n - 2) / sxx);
}

TEST(PhaseTrackerTest, ScatterBeyondTheCIsWidensTheInterval) {
  const std::vector<double> x = {1000, 2000, 3000, 4000, 5000, 6000};
  const std::vector<double> y = {20, 23, 19, 25, 21, 26};
  double b, se;
  Ols(x, y, &b, &se);
  // Equal, too narrow CIs (se = 0.1): the scale factor brings the interval
  // to the OLS residual one.
  PhaseTracker narrow(PhaseOptions{});
  for (int i = 0; i < 6; ++i) {
    ASSERT_OK(narrow.Observe({static_cast<int64_t>(x[i]), y[i],
                              y[i] - 0.1 * kZ95, y[i] + 0.1 * kZ95}));
  }
  EXPECT_NEAR(narrow.slope()->slope, b, 1e-12);
  EXPECT_GT(narrow.slope()->scale_factor, 1);
  EXPECT_NEAR(narrow.slope()->standard_error, se, 1e-12);
  // Zero-width CIs: OLS with the residual variance, the same numbers.
  PhaseTracker zero(PhaseOptions{});
  for (int i = 0; i < 6; ++i) {
    ASSERT_OK(zero.Observe({static_cast<int64_t>(x[i]), y[i], y[i], y[i]}));
  }
  EXPECT_NEAR(zero.slope()->slope, b, 1e-12);
  EXPECT_NEAR(zero.slope()->standard_error, se, 1e-12);
  // Wide CIs (se = 10): the points fit within them, S = 1, and the interval
  // is the CIs' own: 10 / sqrt(Sxx).
  PhaseTracker wide(PhaseOptions{});
  for (int i = 0; i < 6; ++i) {
    ASSERT_OK(wide.Observe({static_cast<int64_t>(x[i]), y[i], y[i] - 10 * kZ95,
                            y[i] + 10 * kZ95}));
  }
  EXPECT_DOUBLE_EQ(wide.slope()->scale_factor, 1);
  EXPECT_NEAR(wide.slope()->standard_error, 10 / std::sqrt(1.75e7), 1e-12);
  EXPECT_EQ(wide.slope()->trend, Trend::kFlat);
}

TEST(PhaseTrackerTest, ANarrowCIDoesNotTakeOverTheFit) {
  // Five points on y = 0 with se = 1 and one outlier at y = 5 whose CI is
  // nearly zero wide: its se is floored at 0.1 * the median se (0.1), so its
  // weight is 100, not 10^12.
  PhaseTracker t(PhaseOptions{});
  for (int i = 1; i <= 6; ++i) {
    const double y = i == 6 ? 5 : 0;
    const double hw = i == 6 ? 1e-9 : kZ95;
    ASSERT_OK(t.Observe({1000 * i, y, y - hw, y + hw}));
  }
  // Hand-computed WLS with weights 1,1,1,1,1,100 at x = 1..6 (thousands):
  // xw = 615/105, yw = 500/105; Sxy = 100 * (6 - xw) * (5 - yw) +
  // sum_{x<6} (x - xw)(0 - yw).
  const double sw = 105, xw = 615.0 / sw, yw = 500.0 / sw;
  double sxx = 100 * (6 - xw) * (6 - xw), sxy = 100 * (6 - xw) * (5 - yw);
  for (int x = 1; x <= 5; ++x) {
    sxx += (x - xw) * (x - xw);
    sxy += (x - xw) * (0 - yw);
  }
  EXPECT_NEAR(t.slope()->slope * 1000, sxy / sxx, 1e-9);
}

// ---------------------------------------------------------------------------
// Phases

TEST(PhaseTrackerTest, UnknownUntilEnoughWindows) {
  PhaseOptions o;
  PhaseTracker t(o);
  const int needed = PhaseTracker::MinWindowsToLeaveUnknown(o);  // 10
  for (int i = 0; i < needed - 1; ++i) {
    ASSERT_OK_AND_ASSIGN(auto c, t.Observe({100 * (i + 1), 20, 19, 21}));
    EXPECT_FALSE(c.has_value());
    EXPECT_EQ(t.phase(), Phase::kUnknown);
    EXPECT_EQ(t.slope().has_value(), i + 1 >= o.fit_windows);
  }
  ASSERT_OK_AND_ASSIGN(auto c, t.Observe({100 * needed, 20, 19, 21}));
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->from, Phase::kUnknown);
  EXPECT_EQ(c->to, Phase::kStabilization);
  EXPECT_EQ(c->window_index, needed - 1);
  EXPECT_EQ(c->step, 100 * needed);
  EXPECT_EQ(c->candidate_since_step, 100 * o.fit_windows);
  EXPECT_TRUE(c->usual_order);
  EXPECT_EQ(t.phase(), Phase::kStabilization);
  EXPECT_EQ(t.phase_since_step(), 100 * needed);
}

// The synthetic OLMoE-like trajectory: 14 -> 36 over 12 windows (indices
// 0..11), 25 windows at 36 (12..36), 36 -> 9 over 30 windows (37..66).
std::vector<double> OlmoeLike() {
  std::vector<double> mu;
  for (int i = 0; i < 12; ++i) mu.push_back(14 + 22.0 * i / 11);
  for (int i = 0; i < 25; ++i) mu.push_back(36);
  for (int i = 1; i <= 30; ++i) mu.push_back(36 - 27.0 * i / 30);
  return mu;
}

TEST(PhaseTrackerTest, RisePlateauDeclineGivesTheThreePhasesInOrder) {
  // Tolerance, in windows after the true change point (the calibration in
  // phase.h measured surge 9, stabilization 6..24 with median 9,
  // relaxation 3..9 with median 6 over 500 series): surge at index 9, the
  // earliest possible; stabilization 5..25 windows after the plateau begins
  // (index 12), median over the seeds <= 10; relaxation 2..10 windows after
  // the decline begins (index 37), median <= 7.
  const std::vector<double> mu = OlmoeLike();
  std::vector<int> stab_lags, relax_lags;
  for (uint32_t seed = 1; seed <= 21; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    PhaseTracker t(PhaseOptions{});
    const Trajectory r = Feed(t, mu, /*half_width=*/1.5, seed);
    ASSERT_EQ(r.changes.size(), 3u) << Describe(r);
    const PhaseChange& surge = r.changes[0];
    const PhaseChange& stab = r.changes[1];
    const PhaseChange& relax = r.changes[2];
    EXPECT_EQ(surge.from, Phase::kUnknown);
    EXPECT_EQ(surge.to, Phase::kSurge);
    EXPECT_EQ(surge.window_index, 9);
    EXPECT_GT(surge.slope.lo, 0);
    EXPECT_EQ(stab.from, Phase::kSurge);
    EXPECT_EQ(stab.to, Phase::kStabilization);
    stab_lags.push_back(static_cast<int>(stab.window_index) - 12);
    EXPECT_GE(stab_lags.back(), 5);
    EXPECT_LE(stab_lags.back(), 25);
    EXPECT_LE(stab.slope.flat_lo, 0);
    EXPECT_GE(stab.slope.flat_hi, 0);
    EXPECT_EQ(relax.from, Phase::kStabilization);
    EXPECT_EQ(relax.to, Phase::kRelaxation);
    relax_lags.push_back(static_cast<int>(relax.window_index) - 37);
    EXPECT_GE(relax_lags.back(), 2);
    EXPECT_LE(relax_lags.back(), 10);
    EXPECT_LT(relax.slope.hi, 0);
    for (const PhaseChange& c : r.changes) {
      EXPECT_TRUE(c.usual_order);
      EXPECT_LE(c.candidate_since_step, c.step);
      EXPECT_EQ(c.step, 1000 * (c.window_index + 1));
    }
    EXPECT_EQ(t.phase(), Phase::kRelaxation);
    ASSERT_TRUE(t.peak().has_value());
    EXPECT_GT(t.peak()->gamma, 35);
    EXPECT_EQ(t.start()->step, 1000);
  }
  std::sort(stab_lags.begin(), stab_lags.end());
  std::sort(relax_lags.begin(), relax_lags.end());
  EXPECT_LE(stab_lags[stab_lags.size() / 2], 10);
  EXPECT_LE(relax_lags[relax_lags.size() / 2], 7);
}

TEST(PhaseTrackerTest, FlatNoisySeriesDoesNotFlap) {
  const std::vector<double> mu(300, 30.0);
  for (uint32_t seed = 1; seed <= 10; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    PhaseTracker t(PhaseOptions{});
    const Trajectory r = Feed(t, mu, /*half_width=*/1.5, seed);
    ASSERT_LE(r.changes.size(), 1u) << Describe(r);
    for (Phase p : r.phases) {
      EXPECT_TRUE(p == Phase::kUnknown || p == Phase::kStabilization)
          << PhaseName(p);
    }
  }
}

TEST(PhaseTrackerTest, MonotoneDeclineIsRelaxation) {
  // OLMoE's relaxation: 27 -> 9, here over 30 windows.
  std::vector<double> mu;
  for (int i = 0; i < 30; ++i) mu.push_back(27 - 18.0 * i / 29);
  for (uint32_t seed = 1; seed <= 10; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    PhaseTracker t(PhaseOptions{});
    const Trajectory r = Feed(t, mu, /*half_width=*/1.5, seed);
    ASSERT_EQ(r.changes.size(), 1u) << Describe(r);
    EXPECT_EQ(r.changes[0].from, Phase::kUnknown);
    EXPECT_EQ(r.changes[0].to, Phase::kRelaxation);
    EXPECT_LT(r.changes[0].slope.hi, 0);
    EXPECT_EQ(t.phase(), Phase::kRelaxation);
  }
}

TEST(PhaseTrackerTest, APlateauThenARiseIsReportedOutOfOrder) {
  // Noise-free: 20 windows at 10, then +1 per window.
  PhaseTracker t(PhaseOptions{});
  std::vector<PhaseChange> changes;
  for (int i = 0; i < 40; ++i) {
    const double y = i < 20 ? 10 : 10 + (i - 19);
    ASSERT_OK_AND_ASSIGN(auto c, t.Observe({10 * (i + 1), y, y - 1, y + 1}));
    if (c.has_value()) changes.push_back(*c);
  }
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].to, Phase::kStabilization);
  EXPECT_TRUE(changes[0].usual_order);
  EXPECT_EQ(changes[1].from, Phase::kStabilization);
  EXPECT_EQ(changes[1].to, Phase::kSurge);
  EXPECT_FALSE(changes[1].usual_order);
  EXPECT_GT(changes[1].window_index, 20);
}

TEST(PhaseTrackerTest, SurgeWaitsForAPeakWhoseCIExcludesTheStart) {
  // Noise-free rise of 2 per window from 14 with CI half-width 6: the slope
  // is significant from the first fit (index 5), a point's ci_lo first
  // exceeds the start's gamma (14) at gamma 22 (index 4) and the start's
  // ci_hi (20) at gamma 28 (index 7).
  auto first_change = [](bool disjoint) {
    PhaseOptions o;
    o.surge_needs_disjoint_ci = disjoint;
    PhaseTracker t(o);
    for (int i = 0; i < 30; ++i) {
      const double y = 14 + 2.0 * i;
      auto c = t.Observe({100 * (i + 1), y, y - 6, y + 6});
      EXPECT_TRUE(c.ok());
      if (c.ok() && c->has_value()) return **c;
    }
    return PhaseChange{};
  };
  const PhaseChange by_value = first_change(false);
  EXPECT_EQ(by_value.to, Phase::kSurge);
  EXPECT_EQ(by_value.window_index, 9);
  const PhaseChange by_interval = first_change(true);
  EXPECT_EQ(by_interval.to, Phase::kSurge);
  EXPECT_EQ(by_interval.window_index, 11);  // streak from index 7
  EXPECT_EQ(by_interval.candidate_since_step, 800);
}

TEST(PhaseTrackerTest, ARiseThatStaysBelowTheStartIsNotASurge) {
  // The first window is high and uncertain (20 +- 10); then a slow but
  // significant rise from 14 to 16.9 whose CIs stay below 20: the slope says
  // rising, but no point's CI excludes the start, so the phase stays unknown.
  PhaseTracker t(PhaseOptions{});
  for (int i = 0; i < 30; ++i) {
    const double y = i == 0 ? 20 : 14 + 0.1 * i;
    const double hw = i == 0 ? 10.0 : 0.2;
    ASSERT_OK(t.Observe({100 * (i + 1), y, y - hw, y + hw}));
  }
  EXPECT_EQ(t.phase(), Phase::kUnknown);
  EXPECT_EQ(t.slope()->trend, Trend::kRising);
}

TEST(PhaseNamesTest, Names) {
  EXPECT_EQ(PhaseName(Phase::kUnknown), "unknown");
  EXPECT_EQ(PhaseName(Phase::kSurge), "surge");
  EXPECT_EQ(PhaseName(Phase::kStabilization), "stabilization");
  EXPECT_EQ(PhaseName(Phase::kRelaxation), "relaxation");
  EXPECT_EQ(TrendName(Trend::kUndecided), "undecided");
}

}  // namespace
}  // namespace moecast
