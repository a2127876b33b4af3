// Exact recovery: loads generated at the equilibrium for a known gamma, with
// huge continuous counts, give gamma back to 1e-9 relative under the MLE and
// the closed form (both weightings), for M = 16 and 64, K = 1, 2, 8 and
// gamma from negative to large; and the unit identities hold.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/health/gamma/gamma.h"
#include "engine/health/gamma/test_util.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using gamma_test::ExactWindow;
using gamma_test::RandomQuality;

TEST(GammaRecovery, ExactEquilibriumLoadsGiveGammaBack) {
  gamma_test::Rng rng(2024);
  int cases = 0;
  for (int m : {16, 64}) {
    for (int k : {1, 2, 8}) {
      // K rho_e must stay <= 1 (a token picks K distinct experts): flatter
      // quality for K = 8.
      const double sd = k == 8 ? 0.25 : k == 2 ? 0.6 : 1.0;
      const std::vector<double> q = RandomQuality(m, sd, rng);
      // gamma_rho: negative (down to -1.9 sigma), small, and gamma_l = 0.5,
      // 2, 6.
      for (double gamma : {-1.9, -1.0, -0.4, 0.3, 0.5 * m, 2.0 * m, 6.0 * m}) {
        SCOPED_TRACE(::testing::Message()
                     << "M=" << m << " K=" << k << " gamma_rho=" << gamma);
        const double tokens = 1e9;
        GammaWindow w = ExactWindow(q, gamma, k, /*steps=*/4, tokens);
        GammaOptions o;
        o.top_k = k;
        o.bootstrap_replicates = 0;
        ASSERT_OK_AND_ASSIGN(GammaFit fit, FitGamma(w, o));
        ASSERT_LE(fit.max_k_load, 1.0);
        const double tol = 1e-9 * std::fabs(gamma);
        EXPECT_NEAR(fit.gamma_rho, gamma, tol);
        EXPECT_NEAR(fit.closed_form.gamma_rho, gamma, tol);
        o.closed_form_weights = ClosedFormWeights::kUniform;
        ASSERT_OK_AND_ASSIGN(GammaFit uniform, FitGamma(w, o));
        EXPECT_NEAR(uniform.closed_form.gamma_rho, gamma, tol);
        // Units: gamma_rho = K gamma_f = M gamma_l, for both estimators.
        EXPECT_NEAR(fit.gamma_rho, k * fit.gamma_f, 1e-12 * std::fabs(gamma));
        EXPECT_NEAR(fit.gamma_rho, m * fit.gamma_l, 1e-12 * std::fabs(gamma));
        EXPECT_NEAR(fit.closed_form.gamma_rho, k * fit.closed_form.gamma_f,
                    1e-12 * std::fabs(gamma));
        // A perfect fit.
        EXPECT_NEAR(fit.r2, 1.0, 1e-9);
        EXPECT_NEAR(fit.closed_form.r2, 1.0, 1e-9);
        EXPECT_LT(fit.l1_in_sample, 1e-10);
        EXPECT_LT(fit.heldout_l1, 1e-8);
        EXPECT_TRUE(fit.converged);
        EXPECT_LT(fit.solver_residual, 1e-12);
        EXPECT_FALSE(fit.at_lower_bound);
        EXPECT_FALSE(fit.at_upper_bound);
        EXPECT_FALSE(fit.weakly_identified);
        EXPECT_EQ(fit.negative, gamma < 0);
        EXPECT_DOUBLE_EQ(fit.k_over_m, static_cast<double>(k) / m);
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 2 * 3 * 7);
}

TEST(GammaRecovery, SigmaOtherThanOne) {
  gamma_test::Rng rng(77);
  const std::vector<double> q = RandomQuality(32, 1.0, rng);
  for (double sigma : {0.5, 2.0}) {
    for (double gamma : {-1.5 * sigma, 20.0}) {
      GammaWindow w = ExactWindow(q, gamma, 1, 3, 1e9, sigma);
      GammaOptions o;
      o.top_k = 1;
      o.sigma = sigma;
      o.bootstrap_replicates = 0;
      ASSERT_OK_AND_ASSIGN(GammaFit fit, FitGamma(w, o));
      EXPECT_NEAR(fit.gamma_rho, gamma, 1e-9 * std::fabs(gamma));
      EXPECT_NEAR(fit.closed_form.gamma_rho, gamma, 1e-9 * std::fabs(gamma));
    }
  }
}

}  // namespace
}  // namespace moecast
