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

#include <cstdint>
#include <cstring>
#include <vector>

namespace moecast {
namespace gamma_internal {

// sum_{e < m} f(e) in four interleaved partial sums, combined as (s0 + s1)
// + (s2 + s3), then the tail: four independent add chains (which the
// compiler may also pair into vectors) instead of one; a fixed order, so
// results repeat bit for bit.
template <typename F>
inline double Sum4(int m, F f) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int e = 0;
  for (; e + 4 <= m; e += 4) {
    s0 += f(e);
    s1 += f(e + 1);
    s2 += f(e + 2);
    s3 += f(e + 3);
  }
  double sum = (s0 + s1) + (s2 + s3);
  for (; e < m; ++e) sum += f(e);
  return sum;
}

// exp(x) for x <= 0, in plain double arithmetic (so the compiler can
// vectorise loops over it, and every platform gets the same bits): x =
// k ln2 + r with |r| <= ln2/2 (Cody-Waite, fdlibm's split of ln2), exp(r) by
// its Taylor polynomial of degree 13 (truncation below 4e-18 relative),
// times 2^k through the exponent bits. Within a few ulps of exp(x); x below
// -708 gives exp(-708) ~ 3e-308 instead of a subnormal or 0, which no sum
// of probabilities here can tell apart.
inline double ExpNonPositive(double x) {
  constexpr double kLog2e = 1.44269504088896338700e+00;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52
  x = x < -708.0 ? -708.0 : x;
  const double kd = x * kLog2e + kShift;  // round(x / ln2) in the low bits
  const double k = kd - kShift;
  const double r = (x - k * kLn2Hi) - k * kLn2Lo;
  // Estrin's scheme (short dependency chains) on sum_{j <= 13} r^j / j!.
  const double r2 = r * r;
  const double r4 = r2 * r2;
  const double r8 = r4 * r4;
  const double p01 = 1.0 + r;
  const double p23 = 0.5 + r * (1.0 / 6.0);
  const double p45 = 1.0 / 24.0 + r * (1.0 / 120.0);
  const double p67 = 1.0 / 720.0 + r * (1.0 / 5040.0);
  const double p89 = 1.0 / 40320.0 + r * (1.0 / 362880.0);
  const double p1011 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0);
  const double p1213 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0);
  const double y = (p01 + r2 * p23) + r4 * (p45 + r2 * p67) +
                   r8 * ((p89 + r2 * p1011) + r4 * p1213);
  uint64_t kbits, ybits;
  std::memcpy(&kbits, &kd, sizeof kbits);
  std::memcpy(&ybits, &y, sizeof ybits);
  ybits += kbits << 52;  // the low bits of kd hold k (two's complement)
  double out;
  std::memcpy(&out, &ybits, sizeof out);
  return out;
}

// log(x) for positive, finite, normal x, in plain double arithmetic (so
// loops over it vectorise, with the same bits everywhere): fdlibm's e_log.c
// (x = 2^k m with m in [sqrt(2)/2, sqrt(2)), log(m) from s = (m-1)/(m+1) by
// its degree-14 polynomial in s), its branches replaced by bit operations.
// Within an ulp or two of log(x).
inline double LogPositive(double x) {
  constexpr double kLn2Hi = 6.93147180369123816490e-01;
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  constexpr double kLg1 = 6.666666666666735130e-01;
  constexpr double kLg2 = 3.999999999940941908e-01;
  constexpr double kLg3 = 2.857142874366239149e-01;
  constexpr double kLg4 = 2.222219843214978396e-01;
  constexpr double kLg5 = 1.818357216161805012e-01;
  constexpr double kLg6 = 1.531383769920937332e-01;
  constexpr double kLg7 = 1.479819860511658591e-01;
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const uint64_t mant = bits & 0x000fffffffffffffULL;
  // 0x10000000000000 when the mantissa is >= sqrt(2)'s: then m = mantissa/2
  // and k one more.
  const uint64_t up = (mant + 0x00095f6400000000ULL) & 0x0010000000000000ULL;
  const uint64_t mbits = mant | (up ^ 0x3ff0000000000000ULL);
  // k + 1023 + 2^52 as a double's bits, then k.
  const uint64_t kbits = 0x4330000000000000ULL | ((bits >> 52) + (up >> 52));
  double m, kd;
  std::memcpy(&m, &mbits, sizeof m);
  std::memcpy(&kd, &kbits, sizeof kd);
  const double k = kd - (4503599627370496.0 + 1023.0);
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  const double w = z * z;
  const double t1 = w * (kLg2 + w * (kLg4 + w * kLg6));
  const double t2 = z * (kLg1 + w * (kLg3 + w * (kLg5 + w * kLg7)));
  const double r = t2 + t1;
  const double hfsq = 0.5 * f * f;
  return k * kLn2Hi - ((hfsq - (s * (hfsq + r) + k * kLn2Lo)) - f);
}

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
  // Solve's trial point (load, probabilities, log-probabilities, gradient).
  std::vector<double> tload, tprobs, tlog_probs, tg;
  // MaximizeLikelihood's load derivatives and warm start.
  std::vector<double> dload, d2load, next_warm;
  // The single-type Sherman-Morrison factor (dinv above): c = gamma/sigma
  // and 1 - c s.D^{-1}s.
  double single_c = 0;
  double single_denom = 1;
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
// linearisation). Each Newton step is taken in full when that at least
// halves the residual (its probabilities then serve the next iteration),
// else damped by a backtracking line search on Phi. Never fails; see
// state->converged.
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

// The first-order prediction of a single-type equilibrium load when the
// quality moves from p.quality to q_new (M values) at the state's gamma:
// L + H^{-1} S (q_new - q) / sigma. Writes M values to *out (a warm start
// for the solve at q_new). Multi-type problems get L unchanged.
void PredictLoadForQuality(const Problem& p, const State& state,
                           const double* q_new, Workspace* ws,
                           std::vector<double>* out);

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

// The curvature of the single-type log-likelihood along the equilibrium
// path, d^2 l / d gamma^2 (the negative observed information), at a solved
// state with its dload, and the load's second derivative d2load =
// d^2 L / d gamma^2 (M values): with a = (q - gamma L)/sigma, a' = -(L +
// gamma L')/sigma and s = softmax(a),
//   H L'' = T - 2 S L' / sigma,  T_e = s_e ((a'_e - s.a')^2 - Var_s(a')),
//   l'' = sum_e (n_e - A s_e) a''_e - A L'.a',  a'' = -(2 L' + gamma L'')/sigma.
// NaN when the problem has several types or the derivatives are not finite.
double SingleTypeCurvature(const Problem& p, const Counts& c,
                           const State& state, const std::vector<double>& dload,
                           Workspace* ws, std::vector<double>* d2load);

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
// root search on the score: with one type, Newton steps on the score with
// the exact curvature (SingleTypeCurvature) while it is negative; else (and
// with several types) the first step is Fisher scoring (U / I), later steps
// secant on the score. A bracket [a, b] with U(a) > 0 > U(b) is kept and
// steps leaving it bisect; steps are capped at 8 (|gamma| + sigma). Each
// solve starts from the Taylor prediction of the load at the new gamma
// (second order with one type). Stops when a step is below rel_tol *
// (|gamma| + sigma); the answer is gamma + step, evaluated there (unless
// SearchOptions::final_state is false: then state and lik are those of the
// last evaluation, one small step away, enough when only gamma is wanted).
// Equilibrium solves to a residual of 1e-15 (SearchOptions::solve_tol). At the ends of the
// range the score's sign decides: U(lo+) <= 0 is a maximum at the lower
// bound, U(hi) >= 0 one at (or beyond) the upper bound.
MleResult MaximizeLikelihood(const Problem& p, const Counts& c, double gamma0,
                             double lo, double hi, double rel_tol,
                             const double* warm, Workspace* ws);

// The search's settings: rel_tol as above; each equilibrium solve to
// max_e |L - P(L)| <= solve_tol; final_state as above.
struct SearchOptions {
  double rel_tol = 1e-13;
  double solve_tol = 1e-15;
  bool final_state = true;
};
// The same into *r, reusing its buffers.
void MaximizeLikelihood(const Problem& p, const Counts& c, double gamma0,
                        double lo, double hi, const SearchOptions& options,
                        const double* warm, Workspace* ws, MleResult* r);

// The single-type MLE of quality q (M values) and counts n (M, summing to
// a) over the full range below, from gamma0.
MleResult FitMle(const std::vector<double>& q, const std::vector<double>& n,
                 double a, double sigma, double gamma0, const double* warm,
                 double rel_tol, Workspace* ws);
// The same into *r (reusing its buffers), with the search's settings.
void FitMle(const std::vector<double>& q, const std::vector<double>& n,
            double a, double sigma, double gamma0, const double* warm,
            const SearchOptions& options, Workspace* ws, MleResult* r);

// The MLE's search range for gamma_rho: (-2 sigma (1 - 1e-6), M*sigma*1e6].
double MleLowerBound(double sigma);
double MleUpperBound(int num_experts, double sigma);

// Pearson correlation of two equally long series (NaN when fewer than 3
// points or either is constant).
double Pearson(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace gamma_internal
}  // namespace moecast

#endif  // MOECAST_ENGINE_HEALTH_GAMMA_INTERNAL_H_
