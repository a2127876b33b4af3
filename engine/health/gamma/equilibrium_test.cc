// The equilibrium solvers: residuals, uniqueness range, the multi-type
// shared load, the load's derivative in gamma, and input errors.
#include "engine/health/gamma/equilibrium.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "engine/health/gamma/internal.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

std::vector<double> Normal(int n, double sd, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, sd);
  std::vector<double> v(n);
  for (double& x : v) x = normal(rng);
  return v;
}

std::vector<double> Softmax(const std::vector<double>& a) {
  const double mx = *std::max_element(a.begin(), a.end());
  std::vector<double> s(a.size());
  double z = 0;
  for (size_t e = 0; e < a.size(); ++e) z += (s[e] = std::exp(a[e] - mx));
  for (double& v : s) v /= z;
  return s;
}

// max_e |L_e - sum_i w_i softmax((q_i - gamma L)/sigma)_e|, computed here
// independently of the solver.
double FixedPointResidual(const std::vector<double>& w,
                          const std::vector<double>& q, int m, double gamma,
                          double sigma, const std::vector<double>& load) {
  std::vector<double> p(m, 0.0);
  for (size_t i = 0; i < w.size(); ++i) {
    std::vector<double> a(m);
    for (int e = 0; e < m; ++e) a[e] = (q[i * m + e] - gamma * load[e]) / sigma;
    const std::vector<double> s = Softmax(a);
    for (int e = 0; e < m; ++e) p[e] += w[i] * s[e];
  }
  double r = 0;
  for (int e = 0; e < m; ++e) r = std::max(r, std::fabs(load[e] - p[e]));
  return r;
}

TEST(Equilibrium, ResidualBelow1e12AcrossGammaSizesAndSigma) {
  std::mt19937_64 rng(7);
  for (int m : {2, 16, 64, 256}) {
    for (double sigma : {1.0, 0.5}) {
      const std::vector<double> q = Normal(m, 1.5, rng);
      for (double gl : {-1.99, -1.5, -1.0, -0.3, 0.0, 0.7, 5.0, 100.0}) {
        // gl < 0: gamma in units of sigma; else gamma_l (gamma_rho / M).
        const double gamma = gl < 0 ? gl * sigma : gl * m;
        EquilibriumOptions o;
        o.sigma = sigma;
        ASSERT_OK_AND_ASSIGN(Equilibrium eq, SolveEquilibrium(q, gamma, o));
        SCOPED_TRACE(::testing::Message()
                     << "M=" << m << " sigma=" << sigma << " gamma=" << gamma);
        EXPECT_LT(eq.residual, 1e-12);
        EXPECT_LT(FixedPointResidual({1.0}, q, m, gamma, sigma, eq.load),
                  1e-12);
        double sum = 0;
        for (double v : eq.load) {
          EXPECT_GT(v, 0);
          sum += v;
        }
        EXPECT_NEAR(sum, 1.0, 1e-12);
        EXPECT_LE(eq.iterations, 20);
      }
    }
  }
}

TEST(Equilibrium, GammaZeroIsTheSoftmax) {
  const std::vector<double> q = {0.3, -1.0, 2.0, 0.5};
  ASSERT_OK_AND_ASSIGN(Equilibrium eq, SolveEquilibrium(q, 0.0));
  const std::vector<double> s = Softmax(q);
  for (size_t e = 0; e < q.size(); ++e) EXPECT_NEAR(eq.load[e], s[e], 1e-15);
}

TEST(Equilibrium, HugeGammaIsNearUniformAndWideLogitsAreHandled) {
  std::mt19937_64 rng(3);
  const std::vector<double> q = Normal(64, 1.0, rng);
  ASSERT_OK_AND_ASSIGN(Equilibrium flat, SolveEquilibrium(q, 1e7));
  for (double v : flat.load) EXPECT_NEAR(v, 1.0 / 64, 1e-6);
  // At gamma = 1e7 one ulp of a load (3.5e-18) moves its logit by 3.5e-11:
  // the residual floor is 1e-13 + 8 eps gamma max L^2 ~= 4e-12.
  EXPECT_LT(flat.residual, 5e-12);
  // Logits spread over hundreds of units: tiny loads, still solved.
  std::vector<double> wide = Normal(64, 200.0, rng);
  for (double g : {-1.9, 0.0, 50.0, 5000.0}) {
    ASSERT_OK_AND_ASSIGN(Equilibrium eq, SolveEquilibrium(wide, g));
    EXPECT_LT(eq.residual, 1e-12) << g;
    EXPECT_LT(FixedPointResidual({1.0}, wide, 64, g, 1.0, eq.load), 1e-12) << g;
  }
}

TEST(Equilibrium, DenseFallbackWhenOneExpertDominatesAtNegativeGamma) {
  // s_0 near 1 with gamma = -1.9: 1 + gamma s_0 < 0.25, so Woodbury is
  // unsafe and the dense solve runs.
  const std::vector<double> q = {6.0, 0.0, 0.0, -1.0};
  ASSERT_OK_AND_ASSIGN(Equilibrium eq, SolveEquilibrium(q, -1.9));
  EXPECT_TRUE(eq.dense_fallback);
  EXPECT_LT(eq.residual, 1e-12);
  EXPECT_LT(FixedPointResidual({1.0}, q, 4, -1.9, 1.0, eq.load), 1e-12);
}

TEST(Equilibrium, UniqueAboveMinusTwoSigmaFromAnyStart) {
  // Between -2 sigma and -sigma the primal potential is not convex, but the
  // dual is: every start reaches the same point.
  std::mt19937_64 rng(11);
  const int m = 8;
  std::vector<double> q = Normal(m, 0.3, rng);
  gamma_internal::Problem p;
  const double one = 1.0;
  p.num_experts = m;
  p.mass = &one;
  p.quality = q.data();
  gamma_internal::Workspace ws;
  gamma_internal::State ref, st;
  gamma_internal::Solve(p, -1.95, 1e-15, 100, nullptr, &ws, &ref);
  ASSERT_TRUE(ref.converged);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<double> start(m);
    double sum = 0;
    for (double& v : start) sum += (v = std::pow(u(rng), 4.0));
    for (double& v : start) v /= sum;
    gamma_internal::Solve(p, -1.95, 1e-15, 100, start.data(), &ws, &st);
    ASSERT_TRUE(st.converged);
    for (int e = 0; e < m; ++e) EXPECT_NEAR(st.load[e], ref.load[e], 1e-12);
  }
}

TEST(Equilibrium, AtOrBelowMinusTwoSigmaIsRejected) {
  // M = 2, equal logits: x = sigmoid(-gamma (2x - 1) / sigma) has slope
  // -gamma/(2 sigma) at x = 1/2, so at gamma = -3 there are three
  // equilibria (x = 1/2 and a symmetric pair).
  const double gamma = -3.0;
  auto f = [&](double x) {
    return 1.0 / (1.0 + std::exp(gamma * (2 * x - 1))) - x;
  };
  EXPECT_GT(f(0.99), -0.1);  // some x > 1/2 with f(x) = 0 exists:
  EXPECT_GT(f(0.6), 0);      // f(0.6) > 0 > f(0.999)
  EXPECT_LT(f(0.999), 0);
  EXPECT_THAT(SolveEquilibrium({0.0, 0.0}, gamma),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("-2*sigma")));
  EXPECT_THAT(SolveEquilibrium({0.0, 0.0}, -2.0),
              StatusIs(absl::StatusCode::kOutOfRange,
                       HasSubstr("gamma_rho = -2 is at or below")));
  EquilibriumOptions o;
  o.sigma = 0.5;
  EXPECT_OK(SolveEquilibrium({0.0, 1.0}, -0.99, o));
  EXPECT_THAT(SolveEquilibrium({0.0, 1.0}, -1.0, o),
              StatusIs(absl::StatusCode::kOutOfRange, HasSubstr("-1")));
  EXPECT_DOUBLE_EQ(EquilibriumUniquenessLimit(0.5), -1.0);
}

TEST(Equilibrium, MultiTypeSharedLoad) {
  std::mt19937_64 rng(5);
  const int m = 16, k = 3;
  const std::vector<double> w = {0.5, 0.3, 0.2};
  const std::vector<double> q = Normal(k * m, 1.5, rng);
  for (double g : {-1.9, -0.5, 0.0, 4.0, 40.0, 4000.0}) {
    ASSERT_OK_AND_ASSIGN(Equilibrium eq,
                         SolveSharedLoadEquilibrium(w, q, m, g));
    EXPECT_LT(eq.residual, 1e-12) << g;
    EXPECT_LT(FixedPointResidual(w, q, m, g, 1.0, eq.load), 1e-12) << g;
    // type_load rows are the per-type softmaxes, mixing to the load.
    ASSERT_EQ(eq.type_load.size(), static_cast<size_t>(k * m));
    for (int e = 0; e < m; ++e) {
      double mix = 0;
      for (int i = 0; i < k; ++i) mix += w[i] * eq.type_load[i * m + e];
      EXPECT_NEAR(mix, eq.load[e], 1e-12);
    }
  }
  // Unnormalised masses are normalised; one type is the single-type case.
  const std::vector<double> q1(q.begin(), q.begin() + m);
  ASSERT_OK_AND_ASSIGN(Equilibrium a,
                       SolveSharedLoadEquilibrium({3.0}, q1, m, 2.5));
  ASSERT_OK_AND_ASSIGN(Equilibrium b, SolveEquilibrium(q1, 2.5));
  for (int e = 0; e < m; ++e) EXPECT_NEAR(a.load[e], b.load[e], 1e-15);
}

TEST(Equilibrium, LoadDerivativeMatchesFiniteDifferences) {
  std::mt19937_64 rng(9);
  const int m = 12, k = 2;
  const std::vector<double> w = {0.6, 0.4};
  const std::vector<double> q = Normal(k * m, 1.0, rng);
  gamma_internal::Problem p;
  p.num_experts = m;
  p.num_types = k;
  p.mass = w.data();
  p.quality = q.data();
  gamma_internal::Workspace ws;
  for (double g : {-1.5, 0.0, 3.0, 30.0}) {
    gamma_internal::State st, hi, lo;
    gamma_internal::Solve(p, g, 1e-15, 100, nullptr, &ws, &st);
    std::vector<double> d;
    gamma_internal::LoadDerivative(p, st, &ws, &d);
    const double h = 1e-5 * (1 + std::fabs(g));
    gamma_internal::Solve(p, g + h, 1e-15, 100, nullptr, &ws, &hi);
    gamma_internal::Solve(p, g - h, 1e-15, 100, nullptr, &ws, &lo);
    for (int e = 0; e < m; ++e) {
      const double fd = (hi.load[e] - lo.load[e]) / (2 * h);
      EXPECT_NEAR(d[e], fd, 1e-7 * (1 + std::fabs(fd))) << "gamma " << g;
    }
  }
}

// The single-type curvature of the log-likelihood and the load's second
// derivative (MaximizeLikelihood's Newton steps) against central
// differences of the score and of dL/dgamma.
TEST(Equilibrium, CurvatureMatchesFiniteDifferences) {
  std::mt19937_64 rng(11);
  const int m = 16;
  const double one = 1.0;
  const std::vector<double> q = Normal(m, 1.0, rng);
  std::vector<double> n(m);
  double total = 0;
  for (int e = 0; e < m; ++e) total += (n[e] = 100 + 50 * (e % 5));
  gamma_internal::Problem p;
  p.num_experts = m;
  p.mass = &one;
  p.quality = q.data();
  p.sigma = 0.7;
  gamma_internal::Counts c;
  c.counts = n.data();
  c.totals = &total;
  gamma_internal::Workspace ws;
  for (double g : {0.0, 3.0, 30.0}) {
    auto at = [&](double gamma, std::vector<double>* d, std::vector<double>* d2,
                  double* curv) {
      gamma_internal::State st;
      gamma_internal::Solve(p, gamma, 1e-15, 100, nullptr, &ws, &st);
      gamma_internal::LoadDerivative(p, st, &ws, d);
      const double score =
          gamma_internal::EvaluateLikelihood(p, c, st, *d, &ws).score;
      *curv = gamma_internal::SingleTypeCurvature(p, c, st, *d, &ws, d2);
      return score;
    };
    std::vector<double> d, d2, dh, d2h, dl, d2l;
    double curv, ch, cl;
    at(g, &d, &d2, &curv);
    const double h = 1e-4 * (1 + std::fabs(g));
    const double uh = at(g + h, &dh, &d2h, &ch);
    const double ul = at(g - h, &dl, &d2l, &cl);
    const double fd = (uh - ul) / (2 * h);
    EXPECT_NEAR(curv, fd, 1e-6 * (1 + std::fabs(fd))) << "gamma " << g;
    for (int e = 0; e < m; ++e) {
      const double fd2 = (dh[e] - dl[e]) / (2 * h);
      EXPECT_NEAR(d2[e], fd2, 1e-7 * (1 + std::fabs(fd2))) << "gamma " << g;
    }
  }
}

// The solver's exp and the closed form's log stay within 2 ulps of the
// library's.
TEST(Equilibrium, FastExpAndLogWithinTwoUlps) {
  std::mt19937_64 rng(12);
  std::uniform_real_distribution<double> u(0, 1);
  auto ulps = [](double a, double b) {
    const double step = std::nextafter(std::fabs(b), INFINITY) - std::fabs(b);
    return std::fabs(a - b) / step;
  };
  for (int i = 0; i < 200000; ++i) {
    const double x = -u(rng) * (i % 2 == 0 ? 708.0 : 2.0);
    ASSERT_LE(ulps(gamma_internal::ExpNonPositive(x), std::exp(x)), 2.0) << x;
    const double y = std::exp((u(rng) - 0.5) * 1400);
    ASSERT_LE(ulps(gamma_internal::LogPositive(y), std::log(y)), 2.0) << y;
  }
  EXPECT_EQ(gamma_internal::ExpNonPositive(0.0), 1.0);
  EXPECT_EQ(gamma_internal::LogPositive(1.0), 0.0);
  EXPECT_GT(gamma_internal::ExpNonPositive(-1e300), 0.0);
  EXPECT_LT(gamma_internal::ExpNonPositive(-1e300), 1e-300);
}

TEST(Equilibrium, BadInputs) {
  EXPECT_THAT(SolveEquilibrium({}, 1.0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("quality is empty")));
  EXPECT_THAT(SolveEquilibrium({0.0, NAN}, 1.0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("quality[type 0][expert 1] = nan")));
  EXPECT_THAT(SolveEquilibrium({0.0, 1.0}, INFINITY),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("gamma_rho must be finite")));
  EquilibriumOptions o;
  o.sigma = 0;
  EXPECT_THAT(SolveEquilibrium({0.0, 1.0}, 1.0, o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sigma must be positive and finite, got 0")));
  EXPECT_THAT(SolveSharedLoadEquilibrium({0.5, 0.5}, {0, 1, 2}, 2, 1.0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("quality has 3 values, want types x experts "
                                 "= 2 x 2 = 4")));
  EXPECT_THAT(SolveSharedLoadEquilibrium({0.5, -0.5}, {0, 1, 2, 3}, 2, 1.0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("mass[1] = -0.5 must be >= 0")));
  EXPECT_THAT(SolveSharedLoadEquilibrium({0.0, 0.0}, {0, 1, 2, 3}, 2, 1.0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("mass sums to 0")));
}

}  // namespace
}  // namespace moecast
