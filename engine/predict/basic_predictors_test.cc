#include "engine/predict/basic_predictors.h"

#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "engine/internal/snapshot_codec.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::DoubleNear;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pointwise;

std::vector<double> Fc(Predictor& p, int h) {
  std::vector<double> out(p.num_experts(), -1.0);
  p.Forecast(h, absl::MakeSpan(out));
  return out;
}

// Mean of the first h rows of ForecastPath.
std::vector<double> PathMean(Predictor& p, int h) {
  const int m = p.num_experts();
  std::vector<double> path(static_cast<size_t>(h) * m, -1.0);
  p.ForecastPath(h, absl::MakeSpan(path));
  std::vector<double> mean(m, 0.0);
  for (int s = 0; s < h; ++s) {
    for (int e = 0; e < m; ++e) mean[e] += path[s * m + e] / h;
  }
  return mean;
}

// A random walk on the simplex.
std::vector<std::vector<double>> Series(int steps, int m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0, 0.05);
  std::vector<double> logits(m, 0.0);
  std::vector<std::vector<double>> out;
  for (int t = 0; t < steps; ++t) {
    for (double& z : logits) z += noise(rng);
    std::vector<double> p(m);
    double sum = 0;
    for (int e = 0; e < m; ++e) sum += p[e] = std::exp(logits[e]);
    for (double& v : p) v /= sum;
    out.push_back(p);
  }
  return out;
}

std::vector<std::unique_ptr<Predictor>> AllBasic(int m) {
  std::vector<std::unique_ptr<Predictor>> v;
  v.push_back(MakeLastValuePredictor(m).value());
  v.push_back(MakeSwAvgPredictor(m, 7).value());
  v.push_back(MakeEmaPredictor(m, 0.9).value());
  v.push_back(MakeHoltPredictor(m).value());
  v.push_back(MakeEwmPredictor(m, 50).value());
  return v;
}

TEST(BasicPredictorsTest, UniformBeforeAnyData) {
  for (auto& p : AllBasic(4)) {
    EXPECT_THAT(Fc(*p, 1), Each(0.25)) << p->name();
    EXPECT_THAT(Fc(*p, 100), Each(DoubleNear(0.25, 1e-12))) << p->name();
  }
}

TEST(BasicPredictorsTest, ConstantSeriesForecastsTheConstant) {
  const std::vector<double> x = {0.5, 0.3, 0.2};
  for (auto& p : AllBasic(3)) {
    for (int t = 0; t < 300; ++t) p->Observe(x);
    for (int h : {1, 10, 1000}) {
      // Window predictors store floats: 7 significant digits.
      EXPECT_THAT(Fc(*p, h), Pointwise(DoubleNear(1e-7), x))
          << p->name() << " h=" << h;
    }
  }
}

TEST(BasicPredictorsTest, PathMeanEqualsHorizonMean) {
  auto series = Series(500, 5, 1);
  for (auto& p : AllBasic(5)) {
    for (const auto& x : series) p->Observe(x);
    for (int h : {1, 2, 3, 6, 7, 8, 50}) {
      EXPECT_THAT(Fc(*p, h), Pointwise(DoubleNear(1e-9), PathMean(*p, h)))
          << p->name() << " h=" << h;
    }
  }
}

TEST(BasicPredictorsTest, Names) {
  auto v = AllBasic(2);
  EXPECT_EQ(v[0]->name(), "last_value");
  EXPECT_EQ(v[1]->name(), "sw_avg(7)");
  EXPECT_EQ(v[2]->name(), "ema(0.9)");
  EXPECT_EQ(v[3]->name(), "holt");
  EXPECT_EQ(v[4]->name(), "ewm(50)");
}

TEST(LastValueTest, ReturnsTheLastStep) {
  auto p = MakeLastValuePredictor(2).value();
  p->Observe(std::vector<double>{0.9, 0.1});
  p->Observe(std::vector<double>{0.4, 0.6});
  EXPECT_THAT(Fc(*p, 5), ElementsAre(0.4, 0.6));
}

TEST(SwAvgTest, NextStepIsTheWindowMean) {
  auto p = MakeSwAvgPredictor(2, 3).value();
  for (double a : {0.1, 0.2, 0.3, 0.4}) p->Observe(std::vector<double>{a, 1 - a});
  EXPECT_THAT(Fc(*p, 1), ElementsAre(DoubleNear(0.3, 1e-7), DoubleNear(0.7, 1e-7)));
}

TEST(SwAvgTest, ShortHistoryUsesWhatThereIs) {
  auto p = MakeSwAvgPredictor(2, 100).value();
  p->Observe(std::vector<double>{0.2, 0.8});
  p->Observe(std::vector<double>{0.4, 0.6});
  EXPECT_THAT(Fc(*p, 1), ElementsAre(DoubleNear(0.3, 1e-7), DoubleNear(0.7, 1e-7)));
  EXPECT_THAT(Fc(*p, 40), Pointwise(DoubleNear(1e-12), PathMean(*p, 40)));
}

TEST(SwAvgTest, HorizonWeightsSumToOneAndTendToTheRamp) {
  for (int h : {1, 5, 100, 2000}) {
    std::vector<double> w = SwAvgHorizonWeights(10, h);
    EXPECT_NEAR(std::accumulate(w.begin(), w.end(), 0.0), 1.0, 1e-12) << h;
  }
  EXPECT_THAT(SwAvgHorizonWeights(4, 1), Each(DoubleNear(0.25, 1e-15)));
  // Long horizons: weights proportional to 1, 2, ..., W (newest heaviest).
  std::vector<double> w = SwAvgHorizonWeights(4, 200000);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(w[i], (i + 1) / 10.0, 1e-4) << i;
}

TEST(SwAvgTest, RunningSumDoesNotDrift) {
  auto p = MakeSwAvgPredictor(3, 10).value();
  auto series = Series(20000, 3, 7);
  for (const auto& x : series) p->Observe(x);
  // The window stores floats; sum exactly those.
  std::vector<double> direct(3, 0.0);
  for (int t = 20000 - 10; t < 20000; ++t) {
    for (int e = 0; e < 3; ++e) direct[e] += static_cast<float>(series[t][e]);
  }
  for (double& v : direct) v /= 10;
  EXPECT_THAT(Fc(*p, 1), Pointwise(DoubleNear(1e-14), direct));
}

TEST(EmaTest, FollowsTheRecursion) {
  auto p = MakeEmaPredictor(2, 0.75).value();
  p->Observe(std::vector<double>{1.0, 0.0});  // starts at the first value
  p->Observe(std::vector<double>{0.0, 1.0});
  // s = 0.75 * (1, 0) + 0.25 * (0, 1)
  EXPECT_THAT(Fc(*p, 3), ElementsAre(DoubleNear(0.75, 1e-15), DoubleNear(0.25, 1e-15)));
  auto last = MakeEmaPredictor(2, 0.0).value();
  last->Observe(std::vector<double>{1.0, 0.0});
  last->Observe(std::vector<double>{0.3, 0.7});
  EXPECT_THAT(Fc(*last, 1), ElementsAre(DoubleNear(0.3, 1e-15), DoubleNear(0.7, 1e-15)));
}

// The weights of ewm(W) are (1 - a)^i, a = 2 / (W + 1), normalised over the
// steps seen: checked against the direct sum.
TEST(EwmTest, IsTheNormalisedExponentialWeightingAtEveryStep) {
  const int span = 9;
  const double decay = 1 - 2.0 / (span + 1);
  auto series = Series(60, 3, 7);
  auto p = MakeEwmPredictor(3, span).value();
  EXPECT_TRUE(p->flat_forecast());
  for (size_t t = 0; t < series.size(); ++t) {
    p->Observe(series[t]);
    std::vector<double> direct(3, 0.0);
    double weights = 0;
    for (size_t i = 0; i <= t; ++i) {
      const double w = std::pow(decay, static_cast<double>(i));
      weights += w;
      for (int e = 0; e < 3; ++e) direct[e] += w * series[t - i][e];
    }
    for (double& v : direct) v /= weights;
    EXPECT_THAT(Fc(*p, 1), Pointwise(DoubleNear(1e-12), direct)) << "t=" << t;
    EXPECT_THAT(Fc(*p, 500), Pointwise(DoubleNear(1e-12), direct)) << "flat";
  }
}

// Start-up adjusted: the first step is forecast as itself, the first two as
// their weighted mean (not pulled towards the uniform start).
TEST(EwmTest, StartsFromTheDataNotFromUniform) {
  auto p = MakeEwmPredictor(2, 1000).value();
  p->Observe(std::vector<double>{0.9, 0.1});
  EXPECT_THAT(Fc(*p, 1), ElementsAre(DoubleNear(0.9, 1e-15), DoubleNear(0.1, 1e-15)));
  p->Observe(std::vector<double>{0.5, 0.5});
  const double d = 1 - 2.0 / 1001;
  EXPECT_THAT(Fc(*p, 1), ElementsAre(DoubleNear((0.5 + d * 0.9) / (1 + d), 1e-15),
                                     DoubleNear((0.5 + d * 0.1) / (1 + d), 1e-15)));
  // ewm(1) is the last value.
  auto last = MakeEwmPredictor(2, 1).value();
  last->Observe(std::vector<double>{0.9, 0.1});
  last->Observe(std::vector<double>{0.3, 0.7});
  EXPECT_THAT(Fc(*last, 4), ElementsAre(DoubleNear(0.3, 1e-15), DoubleNear(0.7, 1e-15)));
}

// Saved and restored mid-stream, it answers bit for bit as the original
// does from then on; bytes for another span are refused.
TEST(EwmTest, SnapshotRoundTripAndMismatch) {
  auto series = Series(300, 4, 3);
  auto a = MakeEwmPredictor(4, 100).value();
  for (int t = 0; t < 150; ++t) a->Observe(series[t]);
  internal::SnapshotWriter w;
  ASSERT_OK(a->SaveTo(w));
  const std::string bytes = w.Release();
  auto b = MakeEwmPredictor(4, 100).value();
  internal::SnapshotReader r(bytes, "ewm");
  b->LoadFrom(r);
  r.ExpectEnd();
  ASSERT_OK(r.status());
  for (int t = 150; t < 300; ++t) {
    a->Observe(series[t]);
    b->Observe(series[t]);
    EXPECT_EQ(Fc(*a, 1), Fc(*b, 1)) << "t=" << t;
  }
  auto other = MakeEwmPredictor(4, 99).value();
  internal::SnapshotReader r2(bytes, "ewm");
  other->LoadFrom(r2);
  EXPECT_THAT(r2.status(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("span")));
}

TEST(HoltTest, ExtrapolatesADampedTrend) {
  auto p = MakeHoltPredictor(2).value();
  // Expert 0 grows linearly from 0.2 to 0.5 over 400 steps.
  double last = 0;
  for (int t = 0; t < 400; ++t) {
    last = 0.2 + 0.3 * t / 399.0;
    p->Observe(std::vector<double>{last, 1 - last});
  }
  const double step = 0.3 / 399;
  const std::vector<double> f1 = Fc(*p, 1);
  EXPECT_GT(f1[0], last);
  EXPECT_NEAR(f1[0], last + step, step);  // about one step ahead
  const std::vector<double> f100 = Fc(*p, 100);
  EXPECT_GT(f100[0], f1[0]);               // still rising
  EXPECT_LT(f100[0], last + 100 * step);   // but damped
}

TEST(BasicPredictorsTest, BadOptionsAreRejected) {
  EXPECT_THAT(MakeSwAvgPredictor(4, 0), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 HasSubstr("window = 0")));
  EXPECT_THAT(MakeSwAvgPredictor(0, 5), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 HasSubstr("num_experts = 0")));
  EXPECT_THAT(MakeEmaPredictor(4, 1.0), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 HasSubstr("theta = 1")));
  EXPECT_THAT(MakeEmaPredictor(4, -0.1), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  HasSubstr("theta = -0.1")));
  EXPECT_THAT(MakeLastValuePredictor(0), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  HasSubstr("num_experts = 0")));
  EXPECT_THAT(MakeEwmPredictor(4, 0), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("span = 0")));
  EXPECT_THAT(MakeEwmPredictor(0, 10), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("num_experts = 0")));
  HoltOptions o;
  o.fit_window = 2;
  EXPECT_THAT(MakeHoltPredictor(4, o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("fit_window = 2")));
  o = HoltOptions();
  o.phis = {1.5};
  EXPECT_THAT(MakeHoltPredictor(4, o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("phi = 1.5")));
  o = HoltOptions();
  o.alphas.clear();
  EXPECT_THAT(MakeHoltPredictor(4, o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("alpha grid is empty")));
}

TEST(NormalizeForecastTest, ClipsAndRenormalises) {
  std::vector<double> v = {0.5, -0.1, 0.5, std::nan("")};
  NormalizeForecast(absl::MakeSpan(v));
  EXPECT_THAT(v, ElementsAre(0.5, 0.0, 0.5, 0.0));
  std::vector<double> z = {0.0, -1.0};
  NormalizeForecast(absl::MakeSpan(z));
  EXPECT_THAT(z, ElementsAre(0.5, 0.5));
  std::vector<double> s = {1.0, 3.0};
  NormalizeForecast(absl::MakeSpan(s));
  EXPECT_THAT(s, ElementsAre(0.25, 0.75));
}

}  // namespace
}  // namespace moecast
