// Multi-type extension of gamma_eff (design section 6): tokens fall into
// types (e.g. clusters) i with masses w_i (sum 1) and their own qualities
// q_ie; each type routes by
//   rho_ie = softmax_e((q_ie - gamma_rho * L_e) / sigma)
// against the shared load L_e = sum_i w_i rho_ie (equilibrium.h: solved by
// damped Newton on the convex dual Phi(L), unique for gamma_rho > -2 sigma).
// gamma is the maximum-likelihood estimate of sum_{i,e} n_ie log rho_ie over
// gamma_rho in (-2 sigma (1 - 1e-6), 1e6 M sigma] (the same safeguarded 1-D
// score search as gamma.h, with the implicit derivative dL/dgamma).
//
// The comparison with the single-type model: the single-type MLE on the
// pooled window (n_e = sum_i n_ie, q_e = sum_i w_i q_ie: the mean quality
// over all tokens); both models fit one parameter, so their in-sample L1
// errors of the total load against the observed sum_i n_ie / A are
// compared: l1_improvement = (l1_single - l1_multi) / l1_single (> 0: the
// multi-type model predicts the load better; NaN when l1_single = 0).
//
// Usage:
//   MultiTypeWindow w;
//   w.num_experts = 64;
//   w.mass = {0.5, 0.3, 0.2};
//   w.counts = ...;      // 3 x 64
//   w.logit_mean = ...;  // 3 x 64
//   GammaOptions o;
//   o.top_k = 8;
//   MOECAST_ASSIGN_OR_RETURN(MultiTypeFit f, FitMultiType(w, o));
//
// Thread-safety: pure functions; call them from any thread.
#ifndef MOECAST_ENGINE_HEALTH_GAMMA_MULTITYPE_H_
#define MOECAST_ENGINE_HEALTH_GAMMA_MULTITYPE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "engine/health/gamma/gamma.h"

namespace moecast {

// One window's per-type statistics. Arrays are types x M row-major.
struct MultiTypeWindow {
  int num_experts = 0;  // M >= 2
  // k >= 1 token masses (>= 0, finite, positive sum; normalised here), or
  // empty: w_i = sum_e n_ie / sum_{i,e} n_ie.
  std::vector<double> mass;
  // k x M: n_ie >= 0, finite; the window sum > 0.
  std::vector<double> counts;
  // k x M: each type's quality (token-weighted mean router logit over the
  // type's tokens, or another quality estimator's input), finite.
  std::vector<double> logit_mean;
};

struct MultiTypeFit {
  int num_types = 0;
  double gamma_f = 0;  // multi-type MLE, f units (gamma_rho / K)
  double gamma_rho = 0;
  double se_f = 0;  // Fisher SE (per-type multinomials), f units
  double log_likelihood = 0;
  bool at_lower_bound = false;
  bool at_upper_bound = false;
  bool converged = true;
  int solver_iterations = 0;          // Newton steps over all solves
  double solver_residual = 0;         // max residual over all solves
  std::vector<double> mass;           // k, normalised
  std::vector<double> observed_load;  // M: sum_i n_ie / A
  std::vector<double> fitted_load;    // M: L at gamma_rho
  double l1_multi = 0;                // sum_e |L_e - observed_e|

  // The single-type fit of the pooled window.
  double single_gamma_f = 0;
  std::vector<double> single_fitted_load;
  double l1_single = 0;
  double l1_improvement = 0;  // (l1_single - l1_multi) / l1_single
};

// INVALID_ARGUMENT names the field and value: num_experts < 2; no types;
// sizes; negative or non-finite counts or masses; masses summing to 0;
// non-finite logits; no assignments; top_k outside [1, M]; bad sigma.
// Uses options.top_k and options.sigma only.
absl::StatusOr<MultiTypeFit> FitMultiType(const MultiTypeWindow& window,
                                          const GammaOptions& options);

}  // namespace moecast

#endif  // MOECAST_ENGINE_HEALTH_GAMMA_MULTITYPE_H_
