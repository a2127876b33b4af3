#include "engine/predict/arima/arima.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

// Levels of an ARIMA(p,d,q) with mean mu of the differenced series,
// innovations N(0, sigma^2), after a burn-in of 300 steps.
std::vector<double> Simulate(const std::vector<double>& phi,
                             const std::vector<double>& theta, int d, double mu,
                             double sigma, int n, uint64_t seed,
                             double start_level = 0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, sigma);
  const int burn = 300;
  const int p = phi.size(), q = theta.size();
  std::vector<double> u(n + burn, 0.0), e(n + burn, 0.0);
  for (int t = 0; t < n + burn; ++t) {
    e[t] = noise(rng);
    double v = e[t];
    for (int i = 1; i <= p && t - i >= 0; ++i) v += phi[i - 1] * u[t - i];
    for (int j = 1; j <= q && t - j >= 0; ++j) v += theta[j - 1] * e[t - j];
    u[t] = v;
  }
  std::vector<double> x(n);
  for (int t = 0; t < n; ++t) x[t] = u[burn + t] + mu;
  for (int k = 0; k < d; ++k) {
    double level = k == d - 1 ? start_level : 0;
    for (int t = 0; t < n; ++t) {
      level += x[t];
      x[t] = level;
    }
  }
  return x;
}

ArimaOptions Orders(int p, int d, int q) {
  ArimaOptions o;
  o.p = p;
  o.d = d;
  o.q = q;
  return o;
}

// ---------------------------------------------------------------------------
// Options

TEST(ArimaOptionsTest, DefaultsAreValid) {
  EXPECT_OK(ValidateArimaOptions(ArimaOptions()));
  EXPECT_EQ(ArimaMinFitObservations(ArimaOptions()), 250);
}

TEST(ArimaOptionsTest, RejectsBadOptionsNamingFieldAndValue) {
  struct Case {
    void (*mutate)(ArimaOptions&);
    const char* message;
  };
  const Case cases[] = {
      {[](ArimaOptions& o) { o.p = -1; },
       "ArimaOptions.p must be in [0, 10], got -1"},
      {[](ArimaOptions& o) { o.p = 11; },
       "ArimaOptions.p must be in [0, 10], got 11"},
      {[](ArimaOptions& o) { o.d = 3; },
       "ArimaOptions.d must be in [0, 2], got 3"},
      {[](ArimaOptions& o) { o.d = -1; },
       "ArimaOptions.d must be in [0, 2], got -1"},
      {[](ArimaOptions& o) { o.q = 12; },
       "ArimaOptions.q must be in [0, 10], got 12"},
      {[](ArimaOptions& o) { o.fit_window = 60; }, "ArimaOptions.fit_window"},
      {[](ArimaOptions& o) { o.fit_window = 60; }, "got 60"},
      {[](ArimaOptions& o) { o.refit_every = 0; },
       "ArimaOptions.refit_every must be >= 1, got 0"},
      {[](ArimaOptions& o) { o.max_iterations = 0; },
       "ArimaOptions.max_iterations"},
      {[](ArimaOptions& o) { o.tolerance = 0; }, "ArimaOptions.tolerance"},
  };
  for (const Case& c : cases) {
    ArimaOptions o;
    c.mutate(o);
    EXPECT_THAT(
        ValidateArimaOptions(o),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)));
    EXPECT_THAT(
        MakeArimaPredictor(8, o),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)));
  }
  // The window minimum is p + d + q + 50: 61 for the defaults.
  ArimaOptions o;
  o.fit_window = 61;
  EXPECT_OK(ValidateArimaOptions(o));
  EXPECT_THAT(MakeArimaPredictor(1, ArimaOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("num_experts must be >= 2, got 1")));
}

TEST(ArimaOptionsTest, Names) {
  EXPECT_EQ(MakeArimaPredictor(4).value()->name(), "arima(5,1,5)");
  ArimaOptions o = Orders(2, 0, 1);
  EXPECT_EQ(MakeArimaPredictor(4, o).value()->name(), "arima(2,0,1)");
  o = Orders(1, 1, 1);
  o.drift = true;
  EXPECT_EQ(MakeArimaPredictor(4, o).value()->name(), "arima(1,1,1)+drift");
}

TEST(ArimaStationarityTest, SchurCohn) {
  EXPECT_TRUE(ArimaIsStationary({}));
  EXPECT_TRUE(ArimaIsStationary({0.5}));
  EXPECT_FALSE(ArimaIsStationary({1.2}));
  EXPECT_FALSE(ArimaIsStationary({-0.9995}));    // beyond the 0.999 margin
  EXPECT_TRUE(ArimaIsStationary({1.5, -0.56}));  // roots 1/0.7, 1/0.8
  EXPECT_FALSE(ArimaIsStationary({0.5, 0.6}));   // a root at 0.94
  EXPECT_FALSE(ArimaIsStationary({1.0, 0.0, 0.0, 0.0, 0.0}));
}

// ---------------------------------------------------------------------------
// The CSS fitter

TEST(ArimaCssTest, RecoversArima111) {
  // phi = 0.6, theta = 0.3, n = 3000: asymptotic standard errors about
  // 0.02 (phi) and 0.025 (theta); tolerance 0.06.
  const std::vector<double> x = Simulate({0.6}, {0.3}, 1, 0, 1.0, 3000, 11);
  ArimaCss css(Orders(1, 1, 1));
  std::vector<double> params(3);
  const ArimaFitStats st = css.Fit(x, false, absl::MakeSpan(params));
  EXPECT_FALSE(st.degenerate);
  EXPECT_NEAR(params[0], 0.6, 0.06);
  EXPECT_NEAR(params[1], 0.3, 0.06);
  EXPECT_EQ(params[2], 0.0);  // no drift
  EXPECT_LE(st.css, st.start_css);
}

TEST(ArimaCssTest, RecoversAr2WithMean) {
  // AR(2) phi = (0.5, -0.3), mean 2: standard errors about 0.017; the mean's
  // about 0.023.
  const std::vector<double> x =
      Simulate({0.5, -0.3}, {}, 0, 2.0, 1.0, 3000, 12);
  ArimaCss css(Orders(2, 0, 0));
  EXPECT_TRUE(css.estimates_mean());
  std::vector<double> params(3);
  css.Fit(x, false, absl::MakeSpan(params));
  EXPECT_NEAR(params[0], 0.5, 0.05);
  EXPECT_NEAR(params[1], -0.3, 0.05);
  EXPECT_NEAR(params[2], 2.0, 0.08);
}

TEST(ArimaCssTest, RecoversMa1) {
  // MA(1) theta = 0.5 around 0.3: standard error about 0.016.
  const std::vector<double> x = Simulate({}, {0.5}, 0, 0.3, 1.0, 3000, 13);
  ArimaCss css(Orders(0, 0, 1));
  std::vector<double> params(2);
  css.Fit(x, false, absl::MakeSpan(params));
  EXPECT_NEAR(params[0], 0.5, 0.05);
  EXPECT_NEAR(params[1], 0.3, 0.08);
}

TEST(ArimaCssTest, RecoversNegativeCoefficientsAndDrift) {
  // ARIMA(1,1,1) with drift 0.2, phi = -0.5, theta = 0.4.
  const std::vector<double> x = Simulate({-0.5}, {0.4}, 1, 0.2, 1.0, 3000, 14);
  ArimaOptions o = Orders(1, 1, 1);
  o.drift = true;
  ArimaCss css(o);
  std::vector<double> params(3);
  css.Fit(x, false, absl::MakeSpan(params));
  EXPECT_NEAR(params[0], -0.5, 0.08);
  EXPECT_NEAR(params[1], 0.4, 0.08);
  EXPECT_NEAR(params[2], 0.2, 0.06);
}

TEST(ArimaCssTest, ObjectiveDecreasesFromTheStart) {
  // Over-parameterised (5,1,5) on ARIMA(2,1,1) series of 500 steps, with the
  // default iteration cap.
  for (uint64_t seed = 20; seed < 30; ++seed) {
    const std::vector<double> x =
        Simulate({0.5, 0.2}, {-0.3}, 1, 0, 1.0, 500, seed);
    ArimaCss css(ArimaOptions{});
    std::vector<double> params(css.num_params());
    const ArimaFitStats st = css.Fit(x, false, absl::MakeSpan(params));
    EXPECT_LT(st.css, st.start_css - 1e-3 * std::fabs(st.start_css))
        << "seed " << seed;
    EXPECT_GT(st.iterations, 0);
    EXPECT_NEAR(st.css, css.Css(x, params), 1e-9 * st.css);
    EXPECT_TRUE(ArimaIsStationary(absl::MakeConstSpan(params.data(), 5)));
    std::vector<double> neg(5);
    for (int j = 0; j < 5; ++j) neg[j] = -params[5 + j];
    EXPECT_TRUE(ArimaIsStationary(neg));
    // A warm refit from the fit does not go back up.
    std::vector<double> again = params;
    const ArimaFitStats warm = css.Fit(x, true, absl::MakeSpan(again));
    EXPECT_TRUE(warm.warm_start);
    EXPECT_NEAR(warm.start_css, st.css, 1e-9 * st.css);
    EXPECT_LE(warm.css, st.css * (1 + 1e-12));
  }
}

TEST(ArimaCssTest, ConvergesToAConstrainedLocalMinimum) {
  // With enough iterations the fit is a local minimum of S over the
  // stationary and invertible region (some of these fits end on its
  // boundary, a reflection coefficient at 0.999): no feasible random
  // perturbation does better.
  ArimaOptions o;
  o.max_iterations = 3000;
  ArimaCss css(o);
  for (uint64_t seed = 20; seed < 26; ++seed) {
    const std::vector<double> x =
        Simulate({0.5, 0.2}, {-0.3}, 1, 0, 1.0, 500, seed);
    std::vector<double> params(css.num_params());
    const ArimaFitStats st = css.Fit(x, false, absl::MakeSpan(params));
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> step(0.0, 1e-3);
    std::vector<double> neg(5);
    int tried = 0;
    for (int trial = 0; trial < 40; ++trial) {
      std::vector<double> other = params;
      for (int i = 0; i < 10; ++i) other[i] += step(rng);
      for (int j = 0; j < 5; ++j) neg[j] = -other[5 + j];
      if (!ArimaIsStationary(absl::MakeConstSpan(other.data(), 5)) ||
          !ArimaIsStationary(neg)) {
        continue;
      }
      ++tried;
      EXPECT_GE(css.Css(x, other), st.css * (1 - 1e-9)) << "seed " << seed;
    }
    EXPECT_GT(tried, 10);
  }
}

TEST(ArimaCssTest, ScaleInvariant) {
  // Proportions are ~1e-3 with tiny differences: the fit must not depend on
  // the scale.
  const std::vector<double> x = Simulate({0.6}, {0.3}, 1, 0, 1.0, 500, 15);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = 0.004 + 1e-5 * x[i];
  ArimaCss css(Orders(1, 1, 1));
  std::vector<double> a(3), b(3);
  css.Fit(x, false, absl::MakeSpan(a));
  css.Fit(y, false, absl::MakeSpan(b));
  EXPECT_NEAR(a[0], b[0], 1e-5);
  EXPECT_NEAR(a[1], b[1], 1e-5);
}

TEST(ArimaCssTest, ConstantAndShortSeriesAreDegenerate) {
  ArimaCss css(ArimaOptions{});
  std::vector<double> params(11, 0.7);
  const std::vector<double> flat(300, 0.125);
  const ArimaFitStats st = css.Fit(flat, false, absl::MakeSpan(params));
  EXPECT_TRUE(st.degenerate);
  for (double v : params) EXPECT_EQ(v, 0.0);
  std::vector<double> path(50);
  css.ForecastPath(flat, params, absl::MakeSpan(path));
  for (double v : path) EXPECT_DOUBLE_EQ(v, 0.125);
  const std::vector<double> short_series = {0.1, 0.2, 0.3};
  EXPECT_TRUE(css.Fit(short_series, false, absl::MakeSpan(params)).degenerate);
}

TEST(ArimaCssTest, ForecastOfArima010IsTheLastValueAndOf100DecaysToMean) {
  // AR(1) with mean: forecasts approach the mean geometrically.
  const std::vector<double> x = Simulate({0.8}, {}, 0, 5.0, 1.0, 1000, 16);
  ArimaCss css(Orders(1, 0, 0));
  std::vector<double> params(2);
  css.Fit(x, false, absl::MakeSpan(params));
  std::vector<double> path(2000);
  css.ForecastPath(x, params, absl::MakeSpan(path));
  const double phi = params[0], mu = params[1];
  double expected = x.back();
  for (int s = 0; s < 50; ++s) {
    expected = mu + phi * (expected - mu);
    EXPECT_NEAR(path[s], expected, 1e-12);
  }
  EXPECT_NEAR(path.back(), mu, 1e-12);
}

// ---------------------------------------------------------------------------
// The predictor

// Proportions of M experts: a slow random walk of logits plus noise.
std::vector<std::vector<double>> Proportions(int m, int steps, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n01(0.0, 1.0);
  std::vector<double> logit(m);
  for (double& v : logit) v = n01(rng);
  std::vector<std::vector<double>> out(steps, std::vector<double>(m));
  for (int t = 0; t < steps; ++t) {
    double sum = 0;
    for (int e = 0; e < m; ++e) {
      logit[e] += 0.02 * n01(rng);
      out[t][e] = std::exp(logit[e] + 0.1 * n01(rng));
      sum += out[t][e];
    }
    for (double& v : out[t]) v /= sum;
  }
  return out;
}

TEST(ArimaPredictorTest, UniformBeforeDataThenMeanUntilFit) {
  const int m = 4;
  auto p = MakeArimaPredictor(m).value();
  EXPECT_EQ(p->num_experts(), m);
  std::vector<double> out(m, -1);
  p->Forecast(10, absl::MakeSpan(out));
  for (double v : out) EXPECT_DOUBLE_EQ(v, 0.25);
  std::vector<double> path(3 * m, -1);
  p->ForecastPath(3, absl::MakeSpan(path));
  for (double v : path) EXPECT_DOUBLE_EQ(v, 0.25);

  p->Observe({0.1, 0.2, 0.3, 0.4});
  p->Observe({0.3, 0.2, 0.1, 0.4});
  p->Forecast(100, absl::MakeSpan(out));
  EXPECT_THAT(out, ::testing::ElementsAre(0.2, 0.2, 0.2, 0.4));
  EXPECT_EQ(GetArimaRefitStats(*p)->refits, 0);
}

TEST(ArimaPredictorTest, ConstantSeriesForecastsThatConstant) {
  for (int d = 0; d <= 2; ++d) {
    ArimaOptions o;
    o.d = d;
    auto p = MakeArimaPredictor(4, o).value();
    const std::vector<double> step = {0.1, 0.2, 0.3, 0.4};
    for (int t = 0; t < 600; ++t) p->Observe(step);
    for (int h : {1, 10, 100, 2000}) {
      std::vector<double> out(4);
      p->Forecast(h, absl::MakeSpan(out));
      for (int e = 0; e < 4; ++e) EXPECT_NEAR(out[e], step[e], 1e-15);
    }
    std::vector<double> path(7 * 4);
    p->ForecastPath(7, absl::MakeSpan(path));
    for (int s = 0; s < 7; ++s) {
      for (int e = 0; e < 4; ++e) EXPECT_NEAR(path[s * 4 + e], step[e], 1e-15);
    }
    EXPECT_EQ(GetArimaRefitStats(*p)->refits, 1) << "d = " << d;
    EXPECT_EQ(GetArimaRefitStats(*p)->last_degenerate, 4);
  }
}

TEST(ArimaPredictorTest, RandomWalkForecastsTheLastValue) {
  ArimaOptions o = Orders(0, 1, 0);
  auto p = MakeArimaPredictor(5, o).value();
  const auto data = Proportions(5, 300, 36);
  for (const auto& row : data) p->Observe(row);
  std::vector<double> out(5);
  p->Forecast(1000, absl::MakeSpan(out));
  for (int e = 0; e < 5; ++e) EXPECT_NEAR(out[e], data.back()[e], 1e-15);
}

TEST(ArimaPredictorTest, DriftContinuesALinearTrend) {
  // x_t = a_e + b_e t: the differenced series is the constant b_e, fitted
  // as the drift mu; the mean of the next h levels is x_T + b (h + 1) / 2.
  ArimaOptions o = Orders(1, 1, 1);
  o.drift = true;
  auto p = MakeArimaPredictor(2, o).value();
  const double a[2] = {0.3, 0.7}, b[2] = {1e-4, -1e-4};
  for (int t = 0; t < 600; ++t) p->Observe({a[0] + b[0] * t, a[1] + b[1] * t});
  for (int h : {1, 10, 1000}) {
    std::vector<double> out(2);
    p->Forecast(h, absl::MakeSpan(out));
    for (int e = 0; e < 2; ++e) {
      EXPECT_NEAR(out[e], a[e] + b[e] * 599 + b[e] * (h + 1) / 2.0, 1e-12)
          << "h = " << h;
    }
  }
}

TEST(ArimaPredictorTest, PathMeanEqualsForecastAndOutputsAreSizedM) {
  const int m = 8;
  auto p = MakeArimaPredictor(m).value();
  const auto data = Proportions(m, 700, 30);
  for (const auto& row : data) p->Observe(row);
  for (int h : {1, 7, 100, 2000}) {
    std::vector<double> out(m, std::numeric_limits<double>::quiet_NaN());
    p->Forecast(h, absl::MakeSpan(out));
    std::vector<double> path(static_cast<size_t>(h) * m,
                             std::numeric_limits<double>::quiet_NaN());
    p->ForecastPath(h, absl::MakeSpan(path));
    for (int e = 0; e < m; ++e) {
      ASSERT_TRUE(std::isfinite(out[e]));
      double mean = 0;
      for (int s = 0; s < h; ++s) mean += path[static_cast<size_t>(s) * m + e];
      mean /= h;
      EXPECT_NEAR(mean, out[e], 1e-12 * std::max(1.0, std::fabs(out[e])))
          << "h = " << h << ", expert " << e;
    }
  }
}

TEST(ArimaPredictorTest, LongHorizonsStayBounded) {
  const int m = 16;
  auto p = MakeArimaPredictor(m).value();
  const auto data = Proportions(m, 1000, 31);
  for (const auto& row : data) p->Observe(row);
  std::vector<double> out(m);
  p->Forecast(2000, absl::MakeSpan(out));
  // The last level plus a bounded excursion: no explosion.
  for (int e = 0; e < m; ++e) {
    EXPECT_TRUE(std::isfinite(out[e]));
    EXPECT_NEAR(out[e], data.back()[e], 0.1) << "expert " << e;
  }
  std::vector<double> path(2000 * m);
  p->ForecastPath(2000, absl::MakeSpan(path));
  for (int e = 0; e < m; ++e) {
    // Bounded everywhere, and nearly settled over the last 500 steps (AR
    // roots may sit close to the unit circle, reflection coefficients up to
    // 0.999, so the decay can be slow, but it is a decay).
    double lo = 1e300, hi = -1e300;
    for (int s = 0; s < 2000; ++s) {
      const double v = path[static_cast<size_t>(s) * m + e];
      ASSERT_TRUE(std::isfinite(v));
      EXPECT_NEAR(v, data.back()[e], 0.1) << "expert " << e << " step " << s;
      if (s >= 1500) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
    }
    EXPECT_LT(hi - lo, 1e-3) << "expert " << e;
  }
  std::vector<double> normalized = out;
  NormalizeForecast(absl::MakeSpan(normalized));
  double sum = 0;
  for (double v : normalized) sum += v;
  EXPECT_NEAR(sum, 1.0, 1e-12);
}

TEST(ArimaPredictorTest, RefitsEveryRStepsWarm) {
  const int m = 6;
  ArimaOptions o;
  o.fit_window = 200;
  o.refit_every = 50;
  auto p = MakeArimaPredictor(m, o).value();
  const ArimaRefitStats* stats = GetArimaRefitStats(*p);
  ASSERT_NE(stats, nullptr);
  const auto data = Proportions(m, 400, 32);
  std::vector<double> out(m);
  int t = 0;
  for (; t < 99; ++t) p->Observe(data[t]);
  p->Forecast(1, absl::MakeSpan(out));
  EXPECT_EQ(stats->refits, 0);  // 99 < min(200 / 2, 61) = 100
  p->Observe(data[t++]);
  p->Refresh();
  EXPECT_EQ(stats->refits, 1);
  EXPECT_EQ(stats->last_warm, 0);
  for (; t < 149; ++t) p->Observe(data[t]);
  p->Forecast(1, absl::MakeSpan(out));
  EXPECT_EQ(stats->refits, 1);
  p->Observe(data[t++]);
  p->Forecast(1, absl::MakeSpan(out));
  EXPECT_EQ(stats->refits, 2);
  EXPECT_EQ(stats->last_warm, m);
  // Many steps without a forecast: one refit when asked.
  for (; t < 400; ++t) p->Observe(data[t]);
  p->Forecast(1, absl::MakeSpan(out));
  EXPECT_EQ(stats->refits, 3);
}

TEST(ArimaPredictorTest, CatchUpMatchesTheFitterOnTheSameData) {
  // First fit on steps [0, 250) (the whole history, W = 500); 37 steps later
  // the predictor's residual state must equal a CSS pass over [0, 287) at the
  // same parameters, hence identical forecasts.
  const int m = 3;
  ArimaOptions o = Orders(2, 1, 2);
  auto p = MakeArimaPredictor(m, o).value();
  const auto data = Proportions(m, 287, 33);
  for (int t = 0; t < 250; ++t) p->Observe(data[t]);
  p->Refresh();
  for (int t = 250; t < 287; ++t) p->Observe(data[t]);
  std::vector<double> path(20 * m);
  p->ForecastPath(20, absl::MakeSpan(path));

  ArimaCss css(o);
  for (int e = 0; e < m; ++e) {
    std::vector<double> x(287);
    for (int t = 0; t < 287; ++t) x[t] = data[t][e];
    std::vector<double> params(css.num_params());
    css.Fit(absl::MakeConstSpan(x.data(), 250), false, absl::MakeSpan(params));
    std::vector<double> expected(20);
    css.ForecastPath(x, params, absl::MakeSpan(expected));
    for (int s = 0; s < 20; ++s) {
      EXPECT_NEAR(path[s * m + e], expected[s], 1e-14) << "step " << s;
    }
  }
}

TEST(ArimaPredictorTest, CatchUpPastTheRingRestartsResiduals) {
  // refit_every > fit_window: residuals restart at the oldest stored step.
  const int m = 3;
  ArimaOptions o = Orders(1, 1, 1);
  o.fit_window = 100;
  o.refit_every = 1000;
  auto p = MakeArimaPredictor(m, o).value();
  const auto data = Proportions(m, 600, 34);
  std::vector<double> out(m);
  for (int t = 0; t < 60; ++t) p->Observe(data[t]);
  p->Forecast(10, absl::MakeSpan(out));
  EXPECT_EQ(GetArimaRefitStats(*p)->refits, 1);
  for (int t = 60; t < 600; ++t) p->Observe(data[t]);
  p->Forecast(10, absl::MakeSpan(out));
  EXPECT_EQ(GetArimaRefitStats(*p)->refits, 1);
  for (int e = 0; e < m; ++e) EXPECT_NEAR(out[e], data.back()[e], 0.05);
}

TEST(ArimaPredictorTest, MemoryBytesCoversTheRing) {
  auto p = MakeArimaPredictor(256).value();
  EXPECT_GE(p->MemoryBytes(), 256 * 500 * 8);
  const auto data = Proportions(256, 260, 35);
  for (const auto& row : data) p->Observe(row);
  p->Refresh();
  EXPECT_LT(p->MemoryBytes(), 256 * 8 * (500 + 11 + 5 + 1) + 400 * 1000);
}

}  // namespace
}  // namespace moecast
