// Synthetic windows for the gamma tests and the timing binary.
//
// Thread-safety: plain functions; a Rng belongs to one thread.
#ifndef MOECAST_ENGINE_HEALTH_GAMMA_TEST_UTIL_H_
#define MOECAST_ENGINE_HEALTH_GAMMA_TEST_UTIL_H_

#include <cstdint>
#include <random>
#include <vector>

#include "engine/health/gamma/gamma.h"

namespace moecast {
namespace gamma_test {

using Rng = std::mt19937_64;

// M standard-normal draws times sd, centred.
std::vector<double> RandomQuality(int m, double sd, Rng& rng);

// The equilibrium loads of q at gamma_rho (sigma given); aborts on error.
std::vector<double> EquilibriumLoads(const std::vector<double>& q,
                                     double gamma_rho, double sigma = 1.0);

// A window of `steps` steps whose counts are exactly rho_e * N * K
// (continuous) with rho the equilibrium of q at gamma_rho, N = tokens per
// step, and logit_mean = q at every step (prob_mean and std_logit_mean
// left empty).
GammaWindow ExactWindow(const std::vector<double>& q, double gamma_rho, int k,
                        int steps, double tokens, double sigma = 1.0);

// Counts of one step of n tokens, each picking k distinct experts, with
// E[count_e] = n * k * rho_e exactly (requires k * max rho <= 1):
//  - k = 1: a multinomial(n, rho) draw (sequential binomials);
//  - k > 1: per token, Madow's systematic sampling with inclusion
//    probabilities pi_e = k rho_e over a fresh random order of the experts
//    (one uniform u; the experts whose cumulative-pi interval contains u,
//    u + 1, ..., u + k - 1), which picks exactly k distinct experts with
//    P(e picked) = pi_e.
std::vector<double> SampleCounts(const std::vector<double>& rho, int k,
                                 int64_t n, Rng& rng);

// A window of `steps` steps of `tokens` tokens drawn by SampleCounts from the
// equilibrium of q at gamma_rho, logit_mean = q at every step.
GammaWindow SampledWindow(const std::vector<double>& q, double gamma_rho, int k,
                          int steps, int64_t tokens, Rng& rng,
                          double sigma = 1.0);

}  // namespace gamma_test
}  // namespace moecast

#endif  // MOECAST_ENGINE_HEALTH_GAMMA_TEST_UTIL_H_
