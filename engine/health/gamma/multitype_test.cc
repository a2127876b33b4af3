// FitMultiType: recovery of gamma on a generated mixture of token types,
// the L1 improvement over the pooled single-type fit, and input errors.
#include "engine/health/gamma/multitype.h"

#include <cmath>
#include <vector>

#include "engine/health/gamma/equilibrium.h"
#include "engine/health/gamma/test_util.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

// Types with their own qualities; per-type counts w_i rho_ie * A (exact,
// continuous) at the shared-load equilibrium for gamma_rho.
MultiTypeWindow Mixture(const std::vector<double>& mass, int m,
                        double gamma_rho, gamma_test::Rng& rng,
                        bool give_mass = true) {
  const int k = static_cast<int>(mass.size());
  std::vector<double> q;
  for (int i = 0; i < k; ++i) {
    const std::vector<double> qi = gamma_test::RandomQuality(m, 1.5, rng);
    q.insert(q.end(), qi.begin(), qi.end());
  }
  absl::StatusOr<Equilibrium> eq =
      SolveSharedLoadEquilibrium(mass, q, m, gamma_rho);
  EXPECT_TRUE(eq.ok()) << eq.status();
  MultiTypeWindow w;
  w.num_experts = m;
  if (give_mass) w.mass = mass;
  w.logit_mean = q;
  const double a = 1e9;
  for (int i = 0; i < k; ++i) {
    for (int e = 0; e < m; ++e) {
      w.counts.push_back(mass[i] * eq->type_load[i * m + e] * a);
    }
  }
  return w;
}

TEST(FitMultiType, RecoversGammaOnAMixtureAndBeatsSingleType) {
  gamma_test::Rng rng(21);
  for (double gamma : {-1.5, 2.0, 12.0, 64.0}) {
    SCOPED_TRACE(gamma);
    MultiTypeWindow w = Mixture({0.5, 0.3, 0.2}, 16, gamma, rng);
    GammaOptions o;
    o.top_k = 2;
    ASSERT_OK_AND_ASSIGN(MultiTypeFit fit, FitMultiType(w, o));
    EXPECT_EQ(fit.num_types, 3);
    EXPECT_NEAR(fit.gamma_rho, gamma, 1e-9 * std::fabs(gamma));
    EXPECT_DOUBLE_EQ(fit.gamma_f, fit.gamma_rho / 2);
    EXPECT_TRUE(fit.converged);
    EXPECT_LT(fit.solver_residual, 1e-12);
    EXPECT_LT(fit.l1_multi, 1e-9);
    // The pooled single-type model cannot fit a mixture exactly.
    EXPECT_GT(fit.l1_single, 1e-3);
    EXPECT_GT(fit.l1_improvement, 0.99);
    EXPECT_NE(fit.single_gamma_f, fit.gamma_f);
    EXPECT_GT(fit.se_f, 0);
  }
}

TEST(FitMultiType, SampledMixture) {
  gamma_test::Rng rng(24);
  const int m = 16;
  const std::vector<double> mass = {0.5, 0.3, 0.2};
  const double gamma = 12.0;
  MultiTypeWindow w = Mixture(mass, m, gamma, rng);
  // Replace the exact counts by multinomial draws (K = 1) from each type's
  // equilibrium routing, 200000 tokens in all.
  ASSERT_OK_AND_ASSIGN(
      Equilibrium eq, SolveSharedLoadEquilibrium(mass, w.logit_mean, m, gamma));
  w.counts.clear();
  for (int i = 0; i < 3; ++i) {
    const std::vector<double> rho(eq.type_load.begin() + i * m,
                                  eq.type_load.begin() + (i + 1) * m);
    const std::vector<double> c = gamma_test::SampleCounts(
        rho, 1, static_cast<int64_t>(mass[i] * 200000), rng);
    w.counts.insert(w.counts.end(), c.begin(), c.end());
  }
  GammaOptions o;
  o.top_k = 1;
  ASSERT_OK_AND_ASSIGN(MultiTypeFit fit, FitMultiType(w, o));
  EXPECT_NEAR(fit.gamma_f, gamma, 4 * fit.se_f);
  EXPECT_LT(fit.se_f, 1.0);
  EXPECT_LT(fit.l1_multi, fit.l1_single);
  EXPECT_GT(fit.l1_improvement, 0);
}

TEST(FitMultiType, MassDefaultsToTheCountShares) {
  gamma_test::Rng rng(22);
  MultiTypeWindow w = Mixture({0.6, 0.4}, 8, 5.0, rng, /*give_mass=*/false);
  GammaOptions o;
  o.top_k = 1;
  ASSERT_OK_AND_ASSIGN(MultiTypeFit fit, FitMultiType(w, o));
  EXPECT_NEAR(fit.mass[0], 0.6, 1e-12);
  EXPECT_NEAR(fit.gamma_rho, 5.0, 1e-8);
}

TEST(FitMultiType, OneTypeIsTheSingleTypeFit) {
  gamma_test::Rng rng(23);
  MultiTypeWindow w = Mixture({1.0}, 12, 7.0, rng);
  GammaOptions o;
  o.top_k = 1;
  ASSERT_OK_AND_ASSIGN(MultiTypeFit fit, FitMultiType(w, o));
  EXPECT_NEAR(fit.gamma_f, fit.single_gamma_f, 1e-9);
  EXPECT_NEAR(fit.gamma_rho, 7.0, 1e-8);
}

TEST(FitMultiType, BadInputs) {
  MultiTypeWindow w;
  w.num_experts = 2;
  w.mass = {0.5, 0.5};
  w.counts = {1, 2, 3, 4};
  w.logit_mean = {0, 1, 1, 0};
  GammaOptions o;
  o.top_k = 1;
  EXPECT_OK(FitMultiType(w, o));
  auto expect = [&](const MultiTypeWindow& bad, const GammaOptions& opt,
                    const std::string& phrase) {
    EXPECT_THAT(
        FitMultiType(bad, opt),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(phrase)));
  };
  MultiTypeWindow b = w;
  b.num_experts = 1;
  expect(b, o, "num_experts must be >= 2, got 1");
  b = w;
  b.counts.pop_back();
  expect(b, o, "counts has 3 values, want a positive multiple of num_experts");
  b = w;
  b.mass = {1.0};
  expect(b, o, "mass has 1 values, want 0 or types = 2");
  b = w;
  b.logit_mean.push_back(0);
  expect(b, o, "logit_mean has 5 values");
  b = w;
  b.counts[3] = -4;
  expect(b, o, "counts[type 1][expert 1] = -4 must be >= 0");
  b = w;
  b.logit_mean[2] = NAN;
  expect(b, o, "logit_mean[type 1][expert 0] = nan is not finite");
  b = w;
  b.mass = {-1, 2};
  expect(b, o, "mass[0] = -1 must be >= 0");
  b = w;
  b.mass = {0, 0};
  expect(b, o, "mass sums to 0");
  b = w;
  b.counts = {0, 0, 0, 0};
  expect(b, o, "counts are all zero");
  GammaOptions bad_k = o;
  bad_k.top_k = 3;
  expect(w, bad_k, "top_k = 3 must be in [1, num_experts = 2]");
}

}  // namespace
}  // namespace moecast
