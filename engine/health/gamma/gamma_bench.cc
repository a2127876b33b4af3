// Times FitGamma on synthetic windows (not a test: no assertions). Prints,
// per configuration, the median wall time of `repeats` fits.
//
//   bazel run //engine/health/gamma:gamma_bench
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "engine/health/gamma/equilibrium.h"
#include "engine/health/gamma/gamma.h"
#include "engine/health/gamma/multitype.h"
#include "engine/health/gamma/test_util.h"

namespace moecast {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

void TimeFit(int m, int k, int steps, int replicates, bool heldout,
             int repeats) {
  gamma_test::Rng rng(1234 + m);
  const std::vector<double> q = gamma_test::RandomQuality(m, 1.0, rng);
  const double gamma_rho = 2.0 * m;  // gamma_l = 2
  const std::vector<double> rho = gamma_test::EquilibriumLoads(q, gamma_rho);
  GammaWindow w;
  w.num_experts = m;
  const int64_t tokens = 4096;
  for (int t = 0; t < steps; ++t) {
    // Multinomial over the N*K assignments (timing only).
    w.AddStep(tokens, gamma_test::SampleCounts(rho, 1, tokens * k, rng), q);
  }
  GammaOptions o;
  o.top_k = k;
  o.bootstrap_replicates = replicates;
  o.heldout = heldout;
  std::vector<double> times;
  GammaFit fit;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    absl::StatusOr<GammaFit> f = FitGamma(w, o);
    times.push_back(Ms(Clock::now() - t0));
    if (!f.ok()) {
      std::printf("error: %s\n", std::string(f.status().message()).c_str());
      return;
    }
    fit = *f;
  }
  std::sort(times.begin(), times.end());
  std::printf(
      "FitGamma M=%d K=%d steps=%d replicates=%d heldout=%d: median %.3f ms "
      "(min %.3f, max %.3f, %d runs); gamma_f=%.4f (true %.4f) CI [%.4f, "
      "%.4f], MLE solves %d, Newton steps %d\n",
      m, k, steps, replicates, heldout ? 1 : 0, times[times.size() / 2],
      times.front(), times.back(), repeats, fit.gamma_f, gamma_rho / k,
      fit.ci_low_f, fit.ci_high_f, fit.mle_evaluations, fit.solver_iterations);
}

void TimeSolve(int m, double gamma_rho, int repeats) {
  gamma_test::Rng rng(99 + m);
  const std::vector<double> q = gamma_test::RandomQuality(m, 1.0, rng);
  std::vector<double> times;
  Equilibrium eq;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    absl::StatusOr<Equilibrium> e = SolveEquilibrium(q, gamma_rho);
    times.push_back(Ms(Clock::now() - t0));
    eq = *e;
  }
  std::sort(times.begin(), times.end());
  std::printf(
      "SolveEquilibrium M=%d gamma_rho=%g (cold start): median %.4f ms, %d "
      "Newton steps, residual %.2e\n",
      m, gamma_rho, times[times.size() / 2], eq.iterations, eq.residual);
}

}  // namespace
}  // namespace moecast

int main() {
  using moecast::TimeFit;
  using moecast::TimeSolve;
  for (double g : {-1.9, -1.0, 0.0, 128.0, 512.0, 5120.0})
    TimeSolve(256, g, 101);
  TimeFit(64, 8, 100, 0, false, 21);
  TimeFit(64, 8, 100, 200, true, 21);
  TimeFit(256, 8, 100, 0, false, 21);
  TimeFit(256, 8, 100, 200, false, 21);
  TimeFit(256, 8, 100, 200, true, 21);
  return 0;
}
