// Internals of the gamma_eff package (equilibrium.h, gamma.h, multitype.h):
// the shared-load equilibrium solver with warm starts and the load's
// derivative in gamma, and the 1-D likelihood maximiser both fits use. Not
// part of the public API.
//
// Notation (see equilibrium.h): k types with masses w_i (sum 1) and
// qualities q_i (k x M, row-major); gamma in rho units; a_i = (q_i -
// gamma*L)/sigma; s_i = softmax(a_i); P(L) = sum_i w_i s_i. The solver finds
// L = P(L) by damped Newton on the convex function
//   Phi(L) = |L|^2/2 + (sigma/gamma) sum_i w_i lse((q_i - gamma*L)/sigma),
// whose gradient is L - P(L) and Hessian H = I + (gamma/sigma) sum_i w_i S_i
// (S_i = diag(s_i) - s_i s_i^T, eigenvalues in [0, 1/2]), positive definite
// for gamma > -2*sigma. (gamma = 0: the second term is read as its limit.)
//
// Thread-safety: plain functions; a Workspace belongs to one thread.
#ifndef MOECAST_ENGINE_HEALTH_GAMMA_INTERNAL_H_
#define MOECAST_ENGINE_HEALTH_GAMMA_INTERNAL_H_

#include <vector>

namespace moecast {
namespace gamma_internal {

// The lower end (exclusive) of the gamma_rho range with a unique
// equilibrium, in units of sigma.
inline constexpr double kUniquenessLimitInSigma = -2.0;

// One equilibrium problem: k types over M experts. Pointers are borrowed.
struct Problem {
  int num_experts = 0;              // M >= 1
  int num_types = 1;                // k >= 1
  const double* mass = nullptr;     // k, >= 0, sum 1
  const double* quality = nullptr;  // k x M, finite
  double sigma = 1.0;               // > 0
};

// Buffers reused across solves (sized on first use).
struct Workspace {
  std::vector<double> g, d, tmp, dinv, hx, dense, wk, ww, wz, v;
};

// The state of a solve: valid after Solve returns.
struct State {
  double gamma = 0;
  std::vector<double> load;       // M: L
  std::vector<double> probs;      // k x M: s_i at L
  std::vector<double> log_probs;  // k x M: log s_i at L (accurate for tiny s)
  int iterations = 0;             // Newton steps taken
  double residual = 0;            // max_e |L_e - P_e(L)|
  bool converged = false;
  bool dense_fallback = false;  // a Newton system was solved densely
};

// Solves L = P(L) at `gamma` (> -2 sigma; not checked here) to
// max_e |L - P(L)| <= tol, in at most max_iter Newton steps. Starts from
// `warm` (M values) when non-null, else from sum_i w_i softmax(q_i / T0)
// with T0 = sigma + gamma/M clamped to >= sigma/4 (the near-uniform
// linearisation). Never fails; see state->converged.
void Solve(const Problem& p, double gamma, double tol, int max_iter,
           const double* warm, Workspace* ws, State* state);

// The residual a double-precision solve can guarantee at `load`: 1e-13
// plus 8 eps (|gamma|/sigma) max_e L_e^2 (one ulp of L_e moves the logit
// gamma*ulp/sigma, hence P_e by about that times P_e). Below 1e-12 unless
// gamma_rho is enormous (e.g. 1e7 at M = 64).
double ResidualFloor(const Problem& p, double gamma, const double* load);

// dL/dgamma at a solved state: -H^{-1} (sum_i w_i S_i L) / sigma.
void LoadDerivative(const Problem& p, const State& state, Workspace* ws,
                    std::vector<double>* dload);

// Per-type counts for the likelihood sum_{i,e} n_ie log s_ie.
struct Counts {
  const double* counts = nullptr;  // k x M, >= 0
  const double* totals = nullptr;  // k: sum_e n_ie
};

// Log-likelihood, score dl/dgamma and expected (Fisher) information of the
// multinomial model with N_i = totals[i] draws from s_i, at a solved state
// (dload = LoadDerivative). The score uses v = L + gamma*dL/dgamma:
// dlog s_ie/dgamma = -(v_e - s_i.v)/sigma.
struct Likelihood {
  double loglik = 0;
  double score = 0;
  double fisher = 0;
};
Likelihood EvaluateLikelihood(const Problem& p, const Counts& c,
                              const State& state,
                              const std::vector<double>& dload, Workspace* ws);

// The maximiser's answer.
struct MleResult {
  double gamma = 0;
  Likelihood lik;
  State state;                  // the equilibrium at gamma
  int evaluations = 0;          // equilibrium solves
  int solver_iterations = 0;    // Newton steps over all solves
  double max_residual = 0;      // over all solves
  bool at_lower_bound = false;  // maximum at the lower end of the range
  bool at_upper_bound = false;  // likelihood still rising at the upper end
  bool converged = false;
  bool solver_failed = false;  // some equilibrium solve did not converge
};

// Maximises the likelihood over gamma in (lo, hi] from gamma0 (clamped into
// the range), warm-starting from `warm` (M loads, or null). A safeguarded
// root search on the score: the first step is Fisher scoring (U / I), later
// steps secant on the score; a bracket [a, b] with U(a) > 0 > U(b) is kept
// and steps leaving it bisect; steps are capped at 8 (|gamma| + sigma).
// Stops when a step is below rel_tol * (|gamma| + sigma). At the ends of the
// range the score's sign decides: U(lo+) <= 0 is a maximum at the lower
// bound, U(hi) >= 0 one at (or beyond) the upper bound.
MleResult MaximizeLikelihood(const Problem& p, const Counts& c, double gamma0,
                             double lo, double hi, double rel_tol,
                             const double* warm, Workspace* ws);

// The single-type MLE of quality q (M values) and counts n (M, summing to
// a) over the full range below, from gamma0.
MleResult FitMle(const std::vector<double>& q, const std::vector<double>& n,
                 double a, double sigma, double gamma0, const double* warm,
                 double rel_tol, Workspace* ws);

// The MLE's search range for gamma_rho: (-2 sigma (1 - 1e-6), M*sigma*1e6].
double MleLowerBound(double sigma);
double MleUpperBound(int num_experts, double sigma);

// Pearson correlation of two equally long series (NaN when fewer than 3
// points or either is constant).
double Pearson(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace gamma_internal
}  // namespace moecast

#endif  // MOECAST_ENGINE_HEALTH_GAMMA_INTERNAL_H_
