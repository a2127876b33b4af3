// FitGamma: unit identities, flags (zero counts, weak identification,
// negative gamma, the uniqueness limit, saturation), the temperature view,
// the aux-loss split, the held-out L1, bootstrap determinism, the quality
// trajectories, and input errors.
#include "engine/health/gamma/gamma.h"

#include <cmath>
#include <string>
#include <vector>

#include "engine/health/gamma/test_util.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::Contains;
using ::testing::HasSubstr;

using gamma_test::ExactWindow;
using gamma_test::RandomQuality;

GammaOptions Options(int k, int replicates = 0) {
  GammaOptions o;
  o.top_k = k;
  o.bootstrap_replicates = replicates;
  return o;
}

std::vector<double> Softmax(const std::vector<double>& a) {
  double mx = a[0];
  for (double v : a) mx = std::max(mx, v);
  std::vector<double> s(a.size());
  double z = 0;
  for (size_t e = 0; e < a.size(); ++e) z += (s[e] = std::exp(a[e] - mx));
  for (double& v : s) v /= z;
  return s;
}

// A window whose counts are `loads` * tokens * k at every step.
GammaWindow LoadsWindow(const std::vector<double>& q,
                        const std::vector<double>& loads, int k, int steps,
                        double tokens) {
  GammaWindow w;
  w.num_experts = static_cast<int>(q.size());
  std::vector<double> c(q.size());
  for (size_t e = 0; e < q.size(); ++e) c[e] = loads[e] * tokens * k;
  for (int t = 0; t < steps; ++t) w.AddStep(tokens, c, q);
  return w;
}

TEST(FitGamma, UnitIdentitiesAndConvention) {
  gamma_test::Rng rng(1);
  const std::vector<double> q = RandomQuality(32, 0.5, rng);
  GammaWindow w = ExactWindow(q, 40.0, 4, 5, 1e6);
  ASSERT_OK_AND_ASSIGN(GammaFit fit, FitGamma(w, Options(4, 50)));
  EXPECT_DOUBLE_EQ(fit.gamma_rho, 4 * fit.gamma_f);
  EXPECT_DOUBLE_EQ(fit.gamma_rho, 32 * fit.gamma_l);
  EXPECT_NEAR(fit.gamma_f, 10.0, 1e-9);
  EXPECT_NEAR(fit.gamma_l, 40.0 / 32, 1e-9);
  EXPECT_DOUBLE_EQ(fit.closed_form.gamma_rho, 4 * fit.closed_form.gamma_f);
  EXPECT_EQ(fit.top_k, 4);
  EXPECT_EQ(fit.num_steps, 5);
  EXPECT_DOUBLE_EQ(fit.tokens, 5e6);
  EXPECT_NEAR(fit.assignments, 4 * 5e6, 1e-3);
  EXPECT_NEAR(fit.dropped_fraction, 0, 1e-12);
  EXPECT_DOUBLE_EQ(fit.k_over_m, 4.0 / 32);
  double mx = 0;
  for (double v : fit.observed_load) mx = std::max(mx, v);
  EXPECT_DOUBLE_EQ(fit.max_k_load, 4 * mx);
  EXPECT_THAT(std::string(kGammaUnitsConvention),
              HasSubstr("gamma_rho = K*gamma_f = M*gamma_l"));
  EXPECT_FALSE(fit.has_aux_loss);
  EXPECT_TRUE(fit.warnings.empty()) << fit.warnings[0];
}

TEST(FitGamma, TwoExperts) {
  // One degree of freedom: both estimators are exact; the closed form's SE
  // has no residual degrees of freedom.
  GammaWindow w = ExactWindow({0.4, -0.4}, 1.5, 1, 3, 1e6);
  ASSERT_OK_AND_ASSIGN(GammaFit fit, FitGamma(w, Options(1, 20)));
  EXPECT_NEAR(fit.gamma_rho, 1.5, 1e-9);
  EXPECT_NEAR(fit.closed_form.gamma_rho, 1.5, 1e-9);
  EXPECT_TRUE(std::isnan(fit.closed_form.se_f));
  EXPECT_GT(fit.se_f, 0);
}

TEST(FitGamma, AuxLossSplit) {
  gamma_test::Rng rng(2);
  const std::vector<double> q = RandomQuality(64, 0.3, rng);
  GammaWindow w = ExactWindow(q, 8 * 20.0, 8, 3, 1e6);  // gamma_f = 20
  GammaOptions o = Options(8);
  o.aux_loss_alpha = 0.01;
  ASSERT_OK_AND_ASSIGN(GammaFit fit, FitGamma(w, o));
  EXPECT_TRUE(fit.has_aux_loss);
  EXPECT_DOUBLE_EQ(fit.gamma_explicit_f, 0.64);  // alpha * M
  EXPECT_NEAR(fit.gamma_implicit_f, 20.0 - 0.64, 1e-8);
  EXPECT_NEAR(fit.eff_over_explicit, 20.0 / 0.64, 1e-8);
}

TEST(FitGamma, ZeroCountsAreSmoothedAndCounted) {
  const std::vector<double> q = {1.0, 0.5, 0.0, -0.5, -1.0, 0.2, -0.2, 0.0};
  const std::vector<double> n = {40, 25, 12, 6, 0, 15, 2, 0};  // two zeros
  GammaWindow w;
  w.num_experts = 8;
  w.AddStep(100, n, q);
  GammaOptions o = Options(1);
  o.closed_form_weights = ClosedFormWeights::kUniform;
  ASSERT_OK_AND_ASSIGN(GammaFit fit, FitGamma(w, o));
  EXPECT_EQ(fit.zero_count_experts, 2);
  EXPECT_THAT(fit.warnings, Contains(HasSubstr("2 experts with zero count")));
  // The closed form is OLS of q - log((n + 0.5)/(A + 0.5 M)) on that load.
  const double a = 100, denom = a + 0.5 * 8;
  double sx = 0, sy = 0;
  std::vector<double> x(8), y(8);
  for (int e = 0; e < 8; ++e) {
    x[e] = (n[e] + 0.5) / denom;
    y[e] = q[e] - std::log(x[e]);
    sx += x[e];
    sy += y[e];
  }
  double sxx = 0, sxy = 0;
  for (int e = 0; e < 8; ++e) {
    sxx += (x[e] - sx / 8) * (x[e] - sx / 8);
    sxy += (x[e] - sx / 8) * (y[e] - sy / 8);
  }
  EXPECT_NEAR(fit.closed_form.gamma_rho, sxy / sxx, 1e-9);
  EXPECT_TRUE(std::isfinite(fit.gamma_f));  // the MLE needs no smoothing
  EXPECT_TRUE(fit.closed_form.small_counts);
  EXPECT_THAT(fit.warnings, Contains(HasSubstr("closed form biased low")));
  EXPECT_LT(fit.closed_form.bias_f, 0);
  // Observed loads are the raw counts.
  EXPECT_DOUBLE_EQ(fit.observed_load[4], 0.0);
  EXPECT_DOUBLE_EQ(fit.observed_load[0], 0.4);
}

TEST(FitGamma, NearUniformLoadsAreWeaklyIdentified) {
  gamma_test::Rng rng(3);
  const int m = 16;
  const std::vector<double> q = RandomQuality(m, 1.0, rng);
  // Exactly uniform loads.
  GammaWindow flat = LoadsWindow(q, std::vector<double>(m, 1.0 / m), 1, 4, 1e6);
  ASSERT_OK_AND_ASSIGN(GammaFit f1, FitGamma(flat, Options(1)));
  EXPECT_TRUE(f1.weakly_identified);
  EXPECT_DOUBLE_EQ(f1.load_cv, 0.0);
  EXPECT_THAT(f1.warnings, Contains(HasSubstr("weakly identified")));
  // Loads within 0.5% of uniform (CV below the default 0.01).
  GammaWindow near = ExactWindow(q, 200.0 * m, 1, 4, 1e9);
  ASSERT_OK_AND_ASSIGN(GammaFit f2, FitGamma(near, Options(1)));
  EXPECT_LT(f2.load_cv, 0.01);
  EXPECT_TRUE(f2.weakly_identified);
  // Load spread at the sampling-noise level: 1000 tokens over 16 experts.
  GammaWindow noisy;
  noisy.num_experts = m;
  std::vector<double> tiny_q = RandomQuality(m, 0.05, rng);
  gamma_test::Rng rng2(4);
  const std::vector<double> rho = gamma_test::EquilibriumLoads(tiny_q, 1.0);
  for (int t = 0; t < 2; ++t) {
    noisy.AddStep(500, gamma_test::SampleCounts(rho, 1, 500, rng2), tiny_q);
  }
  ASSERT_OK_AND_ASSIGN(GammaFit f3, FitGamma(noisy, Options(1)));
  EXPECT_LT(f3.load_cv, 2 * f3.sampling_cv);
  EXPECT_TRUE(f3.weakly_identified);
  // Constant quality: every gamma predicts uniform loads.
  std::vector<double> loads = Softmax(q);
  GammaWindow const_q =
      LoadsWindow(std::vector<double>(m, 0.7), loads, 1, 2, 1e6);
  ASSERT_OK_AND_ASSIGN(GammaFit f4, FitGamma(const_q, Options(1)));
  EXPECT_LT(f4.quality_sd, 1e-12);
  EXPECT_TRUE(f4.weakly_identified);
  // A well-identified window is not flagged.
  ASSERT_OK_AND_ASSIGN(GammaFit ok,
                       FitGamma(ExactWindow(q, 8.0, 1, 4, 1e6), Options(1)));
  EXPECT_FALSE(ok.weakly_identified);
}

TEST(FitGamma, NegativeGammaIsReportedNotClamped) {
  gamma_test::Rng rng(5);
  const std::vector<double> q = RandomQuality(16, 0.8, rng);
  ASSERT_OK_AND_ASSIGN(GammaFit fit,
                       FitGamma(ExactWindow(q, -1.2, 2, 3, 1e8), Options(2)));
  EXPECT_NEAR(fit.gamma_f, -0.6, 1e-9);
  EXPECT_NEAR(fit.closed_form.gamma_f, -0.6, 1e-9);
  EXPECT_TRUE(fit.negative);
  EXPECT_FALSE(fit.at_lower_bound);
  EXPECT_THAT(fit.warnings, Contains(HasSubstr("< 0, reported as is")));
  EXPECT_THAT(fit.warnings, Contains(HasSubstr("hard top-K selection")));
  EXPECT_LT(fit.temperature, 1.0);  // sharper than softmax(q)
}

TEST(FitGamma, LoadsSharperThanAnyUniqueEquilibriumHitTheLimit) {
  gamma_test::Rng rng(6);
  std::vector<double> q = RandomQuality(16, 1.0, rng);
  // softmax(2.5 q): far sharper than the equilibrium at -2 sigma.
  std::vector<double> sharp_logits(q);
  for (double& v : sharp_logits) v *= 2.5;
  GammaWindow w = LoadsWindow(q, Softmax(sharp_logits), 1, 3, 1e6);
  ASSERT_OK_AND_ASSIGN(GammaFit fit, FitGamma(w, Options(1)));
  EXPECT_TRUE(fit.at_lower_bound);
  EXPECT_TRUE(fit.negative);
  EXPECT_NEAR(fit.gamma_rho, -2.0, 1e-5);
  EXPECT_GT(fit.gamma_rho, -2.0);
  // The closed form is unrestricted and says how far below.
  EXPECT_LT(fit.closed_form.gamma_rho, -2.0);
  EXPECT_THAT(fit.warnings, Contains(HasSubstr("uniqueness limit")));
  EXPECT_TRUE(fit.converged);
}

TEST(FitGamma, AntiCorrelatedLoadsRunToTheUpperEnd) {
  gamma_test::Rng rng(7);
  std::vector<double> q = RandomQuality(16, 1.0, rng);
  std::vector<double> neg(q);
  for (double& v : neg) v = -0.5 * v;
  GammaWindow w = LoadsWindow(q, Softmax(neg), 1, 2, 1e6);
  ASSERT_OK_AND_ASSIGN(GammaFit fit, FitGamma(w, Options(1)));
  EXPECT_TRUE(fit.at_upper_bound);
  EXPECT_THAT(fit.warnings, Contains(HasSubstr("still rising")));
  EXPECT_LT(fit.temperature, 0);  // loads anti-correlated with quality
}

TEST(FitGamma, TemperatureView) {
  gamma_test::Rng rng(8);
  // gamma = 0: the loads are softmax(q / sigma), so T = sigma.
  const std::vector<double> q = RandomQuality(32, 1.0, rng);
  ASSERT_OK_AND_ASSIGN(GammaFit zero,
                       FitGamma(ExactWindow(q, 0.0, 1, 2, 1e9), Options(1)));
  EXPECT_NEAR(zero.temperature, 1.0, 1e-9);
  // Near uniform: T ~= sigma + gamma_rho / M.
  const std::vector<double> small_q = RandomQuality(32, 0.01, rng);
  for (double gl : {0.5, 2.0, 10.0}) {
    GammaOptions o = Options(1);
    o.weak_identification_cv = 0;
    ASSERT_OK_AND_ASSIGN(
        GammaFit fit, FitGamma(ExactWindow(small_q, gl * 32, 1, 2, 1e12), o));
    EXPECT_NEAR(fit.temperature, 1 + gl, 2e-3 * (1 + gl)) << gl;
    EXPECT_NEAR(fit.temperature_linearized, 1 + gl, 1e-6) << gl;
  }
}

TEST(FitGamma, HeldOutL1NearItsSamplingFloor) {
  gamma_test::Rng rng(9);
  const std::vector<double> q = RandomQuality(16, 1.0, rng);
  GammaWindow w = gamma_test::SampledWindow(q, 8.0, 1, 40, 5000, rng);
  ASSERT_OK_AND_ASSIGN(GammaFit fit, FitGamma(w, Options(1)));
  EXPECT_GT(fit.heldout_l1, 0);
  EXPECT_GT(fit.heldout_l1_floor, 0);
  EXPECT_LT(fit.heldout_l1, 2.0 * fit.heldout_l1_floor);
  EXPECT_GT(fit.heldout_l1, 0.3 * fit.heldout_l1_floor);
  EXPECT_NEAR(fit.heldout_gamma_f, 8.0, 1.0);
  // One step: no held-out half, no bootstrap.
  GammaWindow one;
  one.num_experts = 16;
  const std::vector<double> first(w.counts.begin(), w.counts.begin() + 16);
  one.AddStep(w.tokens[0], first, q);
  ASSERT_OK_AND_ASSIGN(GammaFit single, FitGamma(one, Options(1, 100)));
  EXPECT_TRUE(std::isnan(single.heldout_l1));
  EXPECT_TRUE(std::isnan(single.ci_low_f));
  EXPECT_EQ(single.bootstrap_replicates, 0);
}

TEST(FitGamma, BootstrapRepeatsWithTheSameSeed) {
  gamma_test::Rng rng(10);
  const std::vector<double> q = RandomQuality(32, 1.0, rng);
  GammaWindow w = gamma_test::SampledWindow(q, 40.0, 2, 25, 400, rng);
  GammaOptions o = Options(2, 200);
  ASSERT_OK_AND_ASSIGN(GammaFit a, FitGamma(w, o));
  ASSERT_OK_AND_ASSIGN(GammaFit b, FitGamma(w, o));
  EXPECT_EQ(a.bootstrap_replicates, 200);
  EXPECT_EQ(a.ci_low_f, b.ci_low_f);
  EXPECT_EQ(a.ci_high_f, b.ci_high_f);
  EXPECT_EQ(a.bootstrap_se_f, b.bootstrap_se_f);
  EXPECT_EQ(a.closed_form.ci_low_f, b.closed_form.ci_low_f);
  EXPECT_LT(a.ci_low_f, a.gamma_f);
  EXPECT_GT(a.ci_high_f, a.gamma_f);
  o.seed = 12345;
  ASSERT_OK_AND_ASSIGN(GammaFit c, FitGamma(w, o));
  EXPECT_NE(a.ci_low_f, c.ci_low_f);
  EXPECT_EQ(a.gamma_f, c.gamma_f);  // the point estimate has no randomness
  // The CI level is honoured: a 50% CI is inside the 95% one.
  o.ci_level = 0.5;
  ASSERT_OK_AND_ASSIGN(GammaFit d, FitGamma(w, o));
  EXPECT_GT(d.ci_low_f, c.ci_low_f);
  EXPECT_LT(d.ci_high_f, c.ci_high_f);
}

TEST(FitGamma, DroppedTokensAndSaturationAreReported) {
  const std::vector<double> q = {2.0, 0.0, -1.0, -1.0};
  // K = 1, 100 tokens, 90 assignments: 10% dropped; expert 0 takes 95%.
  GammaWindow w;
  w.num_experts = 4;
  w.AddStep(100, std::vector<double>{85.5, 2.5, 1.0, 1.0}, q);
  ASSERT_OK_AND_ASSIGN(GammaFit fit, FitGamma(w, Options(1)));
  EXPECT_NEAR(fit.dropped_fraction, 0.1, 1e-12);
  EXPECT_NEAR(fit.observed_load[0], 0.95, 1e-12);  // normalised by A = 90
  EXPECT_NEAR(fit.max_k_load, 0.95, 1e-12);
  EXPECT_THAT(fit.warnings, Contains(HasSubstr("dropped fraction 0.1")));
  EXPECT_THAT(fit.warnings, Contains(HasSubstr("top-K ceiling")));
}

TEST(FitGamma, QualityEstimatorsAndTrajectories) {
  gamma_test::Rng rng(11);
  const int m = 16;
  // Windows with a rise-and-fall gamma trajectory; every token has the same
  // logits q, so the mean router probability is softmax(q) and the mean
  // standardised logit is (q - mean q) / sd q.
  std::vector<GammaWindow> windows;
  const std::vector<double> gl = {0.5, 1.5, 3.0, 4.0, 2.5, 1.0};
  for (size_t j = 0; j < gl.size(); ++j) {
    const std::vector<double> q = RandomQuality(m, 1.0, rng);
    GammaWindow w = ExactWindow(q, gl[j] * m, 2, 3, 1e7);
    double var = 0;
    for (double v : q) var += v * v;
    const double sd = std::sqrt(var / m);
    std::vector<double> std_logit(m);
    for (int e = 0; e < m; ++e) std_logit[e] = q[e] / sd;
    const std::vector<double> prob = Softmax(q);
    for (int t = 0; t < 3; ++t) {
      w.prob_mean.insert(w.prob_mean.end(), prob.begin(), prob.end());
      w.std_logit_mean.insert(w.std_logit_mean.end(), std_logit.begin(),
                              std_logit.end());
      w.step_ids.push_back(100 * static_cast<int64_t>(j) + t);
    }
    windows.push_back(std::move(w));
  }
  GammaOptions o = Options(2);
  o.heldout = false;
  ASSERT_OK_AND_ASSIGN(QualityTrajectories tr,
                       FitQualityTrajectories(windows, o));
  ASSERT_EQ(tr.last_step.size(), gl.size());
  EXPECT_EQ(tr.last_step[0], 2);
  EXPECT_EQ(tr.last_step[5], 502);
  for (int i = 0; i < kNumQualityEstimators; ++i) {
    EXPECT_TRUE(tr.available[i]);
    ASSERT_EQ(tr.gamma_f[i].size(), gl.size());
  }
  const int ml = static_cast<int>(QualityEstimator::kMeanLogit);
  const int lp = static_cast<int>(QualityEstimator::kLogMeanProb);
  const int sl = static_cast<int>(QualityEstimator::kStdLogit);
  for (size_t j = 0; j < gl.size(); ++j) {
    EXPECT_NEAR(tr.gamma_f[ml][j], gl[j] * m / 2, 1e-8);
    // log softmax(q) = q - lse(q): the same quality after centring.
    EXPECT_NEAR(tr.gamma_f[lp][j], tr.gamma_f[ml][j], 1e-8);
  }
  EXPECT_NEAR(tr.correlation[ml][lp], 1.0, 1e-12);
  EXPECT_NEAR(tr.correlation[ml][ml], 1.0, 1e-12);
  EXPECT_TRUE(std::isfinite(tr.correlation[ml][sl]));
  EXPECT_DOUBLE_EQ(tr.correlation[ml][sl], tr.correlation[sl][ml]);
  // A window without prob_mean makes that estimator unavailable.
  windows[3].prob_mean.clear();
  ASSERT_OK_AND_ASSIGN(tr, FitQualityTrajectories(windows, o));
  EXPECT_FALSE(tr.available[lp]);
  EXPECT_TRUE(tr.gamma_f[lp].empty());
  EXPECT_TRUE(std::isnan(tr.correlation[ml][lp]));
  // An error names the window.
  windows[4].counts[0] = -1;
  EXPECT_THAT(FitQualityTrajectories(windows, o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("window 4 (mean_logit): counts[step 0]")));
}

TEST(FitGamma, SplitWindow) {
  gamma_test::Rng rng(12);
  const std::vector<double> q = RandomQuality(4, 1.0, rng);
  GammaWindow w = ExactWindow(q, 1.0, 1, 12, 100);
  for (int t = 0; t < 12; ++t) w.step_ids.push_back(1000 + t);
  ASSERT_OK_AND_ASSIGN(std::vector<GammaWindow> parts, SplitWindow(w, 5));
  ASSERT_EQ(parts.size(), 2u);  // the trailing 2 steps are dropped
  EXPECT_EQ(parts[1].num_steps(), 5);
  EXPECT_EQ(parts[1].step_ids.back(), 1009);
  EXPECT_EQ(parts[1].counts.size(), 20u);
  EXPECT_TRUE(parts[1].prob_mean.empty());
  EXPECT_THAT(SplitWindow(w, 0), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("steps_per_window")));
}

TEST(FitGamma, EstimatorNames) {
  EXPECT_EQ(QualityEstimatorName(QualityEstimator::kLogMeanProb),
            "log_mean_prob");
  ASSERT_OK_AND_ASSIGN(QualityEstimator e, ParseQualityEstimator("std_logit"));
  EXPECT_EQ(e, QualityEstimator::kStdLogit);
  EXPECT_THAT(ParseQualityEstimator("logit"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown quality estimator \"logit\"")));
}

// Input errors: one case each, by code and the phrase naming the problem.
class FitGammaErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    w_ = GammaWindow();
    w_.num_experts = 3;
    w_.AddStep(10, std::vector<double>{5, 3, 2},
               std::vector<double>{0.1, 0.0, -0.1});
    w_.AddStep(10, std::vector<double>{4, 4, 2},
               std::vector<double>{0.2, 0.0, -0.2});
    o_ = Options(1);
  }
  void ExpectInvalid(const std::string& phrase) {
    EXPECT_THAT(FitGamma(w_, o_), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr(phrase)));
  }
  GammaWindow w_;
  GammaOptions o_;
};

TEST_F(FitGammaErrors, ValidWindowFits) { EXPECT_OK(FitGamma(w_, o_)); }

TEST_F(FitGammaErrors, Sizes) {
  w_.num_experts = 1;
  ExpectInvalid("num_experts must be >= 2, got 1");
  SetUp();
  w_.counts.pop_back();
  ExpectInvalid("counts has 5 values, want steps x num_experts = 2 x 3 = 6");
  SetUp();
  w_.logit_mean.push_back(0);
  ExpectInvalid("logit_mean has 7 values");
  SetUp();
  w_.prob_mean = {0.5};
  ExpectInvalid("prob_mean has 1 values");
  SetUp();
  w_.step_ids = {1};
  ExpectInvalid("step_ids has 1 values, want 0 or steps = 2");
}

TEST_F(FitGammaErrors, EmptyWindow) {
  GammaWindow empty;
  empty.num_experts = 3;
  EXPECT_THAT(FitGamma(empty, o_), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("window has no steps")));
}

TEST_F(FitGammaErrors, Counts) {
  w_.counts[4] = -1;
  ExpectInvalid("counts[step 1][expert 1] = -1 must be >= 0 and finite");
  SetUp();
  w_.counts[2] = NAN;
  ExpectInvalid("counts[step 0][expert 2] = nan");
  SetUp();
  w_.counts[0] = 11;
  ExpectInvalid("counts[step 0][expert 0] = 11 exceeds the step's tokens 10");
  SetUp();
  w_.counts = {5, 5, 5, 4, 4, 2};
  ExpectInvalid(
      "counts of step 0 sum to 15, more than top_k x tokens = 1 x 10");
  SetUp();
  w_.counts = {0, 0, 0, 0, 0, 0};
  ExpectInvalid("counts are all zero");
  SetUp();
  w_.tokens[1] = 0;
  ExpectInvalid("tokens[step 1] = 0 must be positive");
}

TEST_F(FitGammaErrors, Logits) {
  w_.logit_mean[1] = INFINITY;
  ExpectInvalid("logit_mean[step 0][expert 1] = inf is not finite");
  SetUp();
  w_.logit_mean.clear();
  ExpectInvalid("logit_mean is empty; quality estimator mean_logit needs it");
  SetUp();
  o_.estimator = QualityEstimator::kLogMeanProb;
  ExpectInvalid("prob_mean is empty; quality estimator log_mean_prob needs it");
  w_.prob_mean = {0.5, 0.3, 0.2, 0.5, 0.5, 0.0};
  ExpectInvalid("prob_mean[step 1][expert 2] = 0 must be positive and finite");
  SetUp();
  w_.std_logit_mean = {0, 0, 0, 0, NAN, 0};
  ExpectInvalid("std_logit_mean[step 1][expert 1] = nan is not finite");
}

TEST_F(FitGammaErrors, Options) {
  o_.top_k = 4;
  ExpectInvalid("top_k = 4 must be in [1, num_experts = 3]");
  o_.top_k = 0;
  ExpectInvalid("top_k = 0 must be in [1, num_experts = 3]");
  o_ = Options(1);
  o_.sigma = -1;
  ExpectInvalid("sigma must be positive and finite, got -1");
  o_ = Options(1);
  o_.ci_level = 1;
  ExpectInvalid("ci_level must be in (0, 1), got 1");
  o_ = Options(1);
  o_.bootstrap_replicates = -5;
  ExpectInvalid("bootstrap_replicates must be >= 0, got -5");
  o_ = Options(1);
  o_.aux_loss_alpha = -0.01;
  ExpectInvalid("aux_loss_alpha must be >= 0 and finite, got -0.01");
  o_ = Options(1);
  o_.closed_form_min_count = NAN;
  ExpectInvalid("closed_form_min_count must be >= 0 and finite");
  o_ = Options(1);
  o_.weak_identification_cv = -1;
  ExpectInvalid("weak_identification_cv must be >= 0");
}

TEST(PredictLoads, MatchesTheEquilibriumAndRejectsBadInput) {
  ASSERT_OK_AND_ASSIGN(std::vector<double> r,
                       PredictLoads({1.0, 0.0, -1.0}, 3.0));
  double sum = 0;
  for (double v : r) sum += v;
  EXPECT_NEAR(sum, 1.0, 1e-15);
  EXPECT_THAT(PredictLoads({1.0, 0.0}, -2.5),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("-2*sigma")));
  EXPECT_THAT(PredictLoads({1.0, NAN}, 1.0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("quality[1] = nan")));
}

}  // namespace
}  // namespace moecast
