#include "engine/health/gamma/test_util.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <utility>

#include "engine/health/gamma/equilibrium.h"

namespace moecast {
namespace gamma_test {

std::vector<double> RandomQuality(int m, double sd, Rng& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> q(m);
  double mean = 0;
  for (double& v : q) {
    v = sd * normal(rng);
    mean += v;
  }
  mean /= m;
  for (double& v : q) v -= mean;
  return q;
}

std::vector<double> EquilibriumLoads(const std::vector<double>& q,
                                     double gamma_rho, double sigma) {
  EquilibriumOptions o;
  o.sigma = sigma;
  absl::StatusOr<Equilibrium> eq = SolveEquilibrium(q, gamma_rho, o);
  if (!eq.ok()) {
    std::fprintf(stderr, "EquilibriumLoads: %s\n",
                 std::string(eq.status().message()).c_str());
    std::abort();
  }
  return eq->load;
}

GammaWindow ExactWindow(const std::vector<double>& q, double gamma_rho, int k,
                        int steps, double tokens, double sigma) {
  const std::vector<double> rho = EquilibriumLoads(q, gamma_rho, sigma);
  GammaWindow w;
  w.num_experts = static_cast<int>(q.size());
  std::vector<double> counts(q.size());
  for (size_t e = 0; e < q.size(); ++e) counts[e] = rho[e] * tokens * k;
  for (int t = 0; t < steps; ++t) w.AddStep(tokens, counts, q);
  return w;
}

std::vector<double> SampleCounts(const std::vector<double>& rho, int k,
                                 int64_t n, Rng& rng) {
  const int m = static_cast<int>(rho.size());
  std::vector<double> counts(m, 0.0);
  if (k == 1) {
    int64_t left = n;
    double mass_left = 1.0;
    for (int e = 0; e < m && left > 0; ++e) {
      if (e == m - 1) {
        counts[e] = static_cast<double>(left);
        break;
      }
      const double p = std::min(1.0, std::max(0.0, rho[e] / mass_left));
      std::binomial_distribution<int64_t> bin(left, p);
      const int64_t c = bin(rng);
      counts[e] = static_cast<double>(c);
      left -= c;
      mass_left -= rho[e];
    }
    return counts;
  }
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  std::vector<int> order(m);
  std::iota(order.begin(), order.end(), 0);
  for (int64_t tok = 0; tok < n; ++tok) {
    for (int i = m - 1; i > 0; --i) {
      std::uniform_int_distribution<int> pick(0, i);
      std::swap(order[i], order[pick(rng)]);
    }
    const double u = unif(rng);
    double cum = 0;
    int next = 0;  // the next threshold u + next
    for (int i = 0; i < m && next < k; ++i) {
      const int e = order[i];
      const double hi = cum + k * rho[e];
      if (u + next < hi) {  // [cum, hi) contains u + next (pi_e <= 1)
        counts[e] += 1;
        ++next;
      }
      cum = hi;
    }
  }
  return counts;
}

GammaWindow SampledWindow(const std::vector<double>& q, double gamma_rho, int k,
                          int steps, int64_t tokens, Rng& rng, double sigma) {
  const std::vector<double> rho = EquilibriumLoads(q, gamma_rho, sigma);
  GammaWindow w;
  w.num_experts = static_cast<int>(q.size());
  for (int t = 0; t < steps; ++t) {
    w.AddStep(static_cast<double>(tokens), SampleCounts(rho, k, tokens, rng),
              q);
  }
  return w;
}

}  // namespace gamma_test
}  // namespace moecast
