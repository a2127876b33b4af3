// The routing equilibrium of the congestion model behind gamma_eff (design
// section 6): given expert qualities q (e.g. mean router logits) and a
// congestion coefficient gamma, the loads rho that satisfy
//
//   rho_e = softmax_e((q_e - gamma * rho_e) / sigma)          (single type)
//
// and its multi-type form: token types i with masses w_i (sum 1) and
// qualities q_ie each route by rho_ie = softmax_e((q_ie - gamma*L_e)/sigma)
// against the shared load L_e = sum_i w_i rho_ie. The single type is the
// case k = 1, w = {1}.
//
// gamma here is in rho units (gamma_rho; loads sum to 1). gamma_f =
// gamma_rho / K and gamma_l = gamma_rho / M (see gamma.h).
//
// Existence, uniqueness and the solver:
//  - The equilibria are exactly the stationary points of
//      Phi(L) = |L|^2/2 + (sigma/gamma) sum_i w_i lse((q_i - gamma*L)/sigma)
//    (the concave dual of the potential below, with the multiplier
//    lambda = gamma*L, negated and divided by gamma so that it stays valid
//    for gamma <= 0). grad Phi = L - sum_i w_i rho_i(L) and
//    Hess Phi = I + (gamma/sigma) sum_i w_i (diag(rho_i) - rho_i rho_i^T).
//    The bracket's eigenvalues lie in [0, 1/2] (a variance of a unit
//    vector's entries under rho_i, at most 1/2 by Popoviciu), so Phi is
//    strictly convex and the equilibrium unique for every gamma > -2*sigma.
//    It always exists (Phi is coercive).
//  - For gamma >= -sigma the loads are also the unique minimiser of the
//    strictly convex primal potential sum_i w_i sum_e (sigma rho_ie log
//    rho_ie - q_ie rho_ie) + (gamma/2) |L|^2 over the simplices (the design's
//    statement); Phi extends uniqueness down to -2*sigma.
//  - At gamma = -2*sigma two experts with equal quality and half the load
//    each bifurcate (pitchfork: for M = 2, x = sigmoid(-gamma(2x - 1)/sigma)
//    has slope 1 at x = 1/2), and below it several equilibria can coexist
//    (herding onto one expert), so rho(gamma) is no longer a function of
//    gamma. The solvers reject gamma <= -2*sigma (OUT_OF_RANGE), and the
//    MLE of gamma.h searches (-2*sigma, ...) and flags a maximum at that end.
//  - Solver: damped Newton on Phi (Armijo backtracking on Phi, evaluated
//    stably near gamma = 0), each step O(M k^2) by Woodbury on the diagonal
//    plus rank-k Hessian; a dense Cholesky solve is the fallback when the
//    diagonal part is not safely positive (possible only for gamma < 0).
//    Start: sum_i w_i softmax(q_i / T0), T0 = max(sigma + gamma/M, sigma/4)
//    (the near-uniform linearisation T ~= sigma + gamma_rho/M). Quadratic
//    convergence: typically 2-6 steps to a residual near 1e-16.
//
// Usage:
//   EquilibriumOptions o;  // sigma = 1
//   MOECAST_ASSIGN_OR_RETURN(Equilibrium eq, SolveEquilibrium(q, 3.5, o));
//   // eq.load[e] = rho_e; eq.iterations, eq.residual
//
// Thread-safety: pure functions; call them from any thread.
#ifndef MOECAST_ENGINE_HEALTH_GAMMA_EQUILIBRIUM_H_
#define MOECAST_ENGINE_HEALTH_GAMMA_EQUILIBRIUM_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace moecast {

struct EquilibriumOptions {
  // Router softmax temperature sigma (> 0, finite), in logit units.
  double sigma = 1.0;
  // Stop when max_e |L_e - sum_i w_i rho_ie(L)| <= tolerance (load units:
  // loads sum to 1). In [0, 1e-3]; values below the rounding floor (about
  // 1e-16) run until the residual stops falling.
  double tolerance = 1e-15;
  // Most Newton steps (>= 1).
  int max_iterations = 100;
};

struct Equilibrium {
  // M loads L_e (single type: rho_e), each > 0, summing to 1 (to rounding).
  std::vector<double> load;
  // k x M row-major: rho_ie = softmax_e((q_ie - gamma*L_e)/sigma) at `load`.
  // For a single type this is softmax((q - gamma*load)/sigma), which equals
  // `load` to within `residual`.
  std::vector<double> type_load;
  int iterations = 0;  // Newton steps taken
  // max_e |L_e - sum_i w_i rho_ie(L)| at the returned load.
  double residual = 0;
  bool dense_fallback = false;  // a Newton step used the dense solve
};

// The gamma_rho below which (inclusive) the equilibrium is not unique in
// general: -2 * sigma.
double EquilibriumUniquenessLimit(double sigma);

// Single type: quality q (M >= 1 finite values, any shift), gamma_rho >
// -2*sigma. INVALID_ARGUMENT names the field and value (empty or non-finite
// quality, bad options, non-finite gamma); OUT_OF_RANGE for gamma_rho <=
// -2*sigma; INTERNAL if Newton does not reach the tolerance or, when the
// tolerance is below it, the rounding floor 1e-13 + 8 eps (|gamma|/sigma)
// max_e L_e^2 (one ulp of a load moves its logit by gamma*ulp/sigma; the
// floor is below 1e-12 unless gamma_rho is enormous, e.g. 1e7 at M = 64).
absl::StatusOr<Equilibrium> SolveEquilibrium(
    absl::Span<const double> quality, double gamma_rho,
    const EquilibriumOptions& options = {});

// Multi-type: mass (k >= 1 values >= 0 with a positive sum; normalised to
// sum 1 here) and quality (k x M row-major, finite). Same errors as
// SolveEquilibrium, plus sizes that do not match.
absl::StatusOr<Equilibrium> SolveSharedLoadEquilibrium(
    absl::Span<const double> mass, absl::Span<const double> quality,
    int num_experts, double gamma_rho, const EquilibriumOptions& options = {});

}  // namespace moecast

#endif  // MOECAST_ENGINE_HEALTH_GAMMA_EQUILIBRIUM_H_
