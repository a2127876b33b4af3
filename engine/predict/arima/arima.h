// arima(p,d,q): per-expert ARIMA forecasts, fitted by conditional sum of
// squares (design section 4, after Cong et al.).
//
// Model. Each expert's proportion series x_t is its own stream. With
// w_t = (1 - L)^d x_t (d in {0, 1, 2}) and u_t = w_t - mu:
//
//   u_t = phi_1 u_{t-1} + ... + phi_p u_{t-p}
//         + e_t + theta_1 e_{t-1} + ... + theta_q e_{t-q}
//
// i.e. e_t = w_t - c - sum_i phi_i w_{t-i} - sum_j theta_j e_{t-j} with
// c = mu (1 - sum_i phi_i). The MA sign is statsmodels' (theta(L) = 1 +
// theta_1 L + ...). Mean / drift: for d = 0, mu (the series mean) is always
// estimated. For d >= 1, mu is the drift of the differenced series; it is
// fixed at 0 unless ArimaOptions::drift is set, because a drift extrapolated
// over h = 2000 steps walks a bounded proportion off its range (statsmodels:
// trend="n" for d >= 1 matches drift = false; trend="t" with d = 1 matches
// drift = true, its coefficient being mu).
//
// Estimator. Conditional sum of squares (CSS) on the last fit_window levels:
// difference d times (n - d values w_0..w_{n-d-1}), condition on the first p
// of them, set pre-sample residuals to 0 (e_t = 0 for t < p), and minimise
// S = sum_{t=p}^{n-d-1} e_t^2 over (phi, theta, mu) by Levenberg-Marquardt
// with the exact Jacobian of e, from the recursions
//   de_t/dphi_i   = -u_{t-i}        - sum_k theta_k de_{t-k}/dphi_i
//   de_t/dtheta_j = -e_{t-j}        - sum_k theta_k de_{t-k}/dtheta_j
//   de_t/dmu      = -(1 - sum phi)  - sum_k theta_k de_{t-k}/dmu
// (zero before t = p; the theta_j columns are shifts of the theta_1 one).
//
// Constraints. phi(z) = 1 - sum phi_i z^i must be stationary and theta(z) =
// 1 + sum theta_j z^j invertible, with a margin: LM works in the reflection
// (partial autocorrelation) coordinates of each polynomial, kappa, mapped to
// coefficients by the Levinson step-up recursion (with its exact Jacobian),
// and every |kappa| is boxed to <= 0.999 (kArimaMaxReflection). In those
// coordinates the region is exactly the box, so LM is a box-constrained
// problem: variables at a bound whose gradient points outward are held
// (active set), trial points are clipped to the box, and an optimum on the
// boundary (CSS often wants an MA root on the unit circle) is reached
// rather than crept towards. Each step solves (A + lambda diag(A)) delta =
// -g with A = J'J, g = J'e in kappa coordinates (LDLT, at most 21 x 21, on
// the stack); lambda follows Nielsen's rule (down to x1/3 after a good step,
// x2, x4, ... after failed ones); a step is accepted only if it lowers S.
// LM stops when an accepted step lowers S by less than `tolerance`
// (relative), when lambda passes 1e10, or after max_iterations trial steps.
// ArimaIsStationary checks the same margin (Schur-Cohn step-down).
//
// Start values. Cold fits use Hannan-Rissanen: a long AR(L) by least squares
// (L = max(2 max(p, q), 10), at most 30 and a quarter of the window), its
// residuals as e-hat, then least squares of u_t on u_{t-1..t-p} and
// e-hat_{t-1..t-q}; mu starts at the mean of w; a start outside the region
// is pulled in by scaling coefficient i by 0.95^i (every root moves outward
// by 1/0.95) until it is inside. The CSS surface of an over-parameterised
// ARMA has several local minima (e.g. (5,1,5) on data from a low-order model:
// near-cancelling AR and MA roots), so a cold fit with q > 0 also runs LM
// from the pure AR(p) least-squares start (theta = 0) and from phi = theta = 0,
// and keeps the lowest S: a heuristic, not a global optimum. Refits start
// from the previous fit only (warm start), so the optimisation continues
// where the last refit stopped and follows one basin.
//
// Iterations. max_iterations defaults to 10 per LM run. On a synthetic
// layer (32 experts, 3000 steps of softmax(random-walk logits + noise)), the
// forecast error of arima(5,1,5) was flat in the cap (L1 at h = 1: 0.0833
// at 10, 0.0848 at 200; at h = 100: 0.0879 both) while the refit CPU grew
// 5.7x from 10 to 200: more iterations fit the window's noise, not the
// future. Use a larger cap (and a smaller tolerance) to fit to convergence,
// as the statsmodels comparison does.
//
// Fallback. Until ArimaMinFitObservations(options) steps have been seen
// (max(fit_window / 2, p + d + q + 50)), the forecast of every horizon is the
// mean of the steps seen so far (uniform 1/M before the first). A window whose
// differenced series is constant (e.g. a dead expert, or an exact linear trend
// with drift) gets phi = theta = 0: a flat forecast at the last value (the
// constant for d = 0, the trend with drift).
//
// Refit policy. Observe only appends the step to a ring of fit_window rows
// (one copy of M doubles; it also sums the steps until the first fit).
// Refresh() (called by Forecast/ForecastPath) fits all experts when the
// minimum is first reached and refits them all once refit_every steps have
// arrived since the last fit (lazily: after a long silence, one refit).
// Between refits it brings each expert's residuals e_t..e_{t-q+1} up to date
// with the current parameters over the steps that arrived since (at most
// refit_every - 1 steps x (p + q) per expert); if those steps have left the
// ring (refit_every > fit_window - p - d), the residuals restart at 0 from the
// oldest stored step, as in CSS.
//
// Forecasts. Recursive point forecasts: u-hat_{t+s} = sum phi_i u_{t+s-i}
// (observed or forecast) + sum_{j >= s} theta_j e_{t+s-j}, w-hat = u-hat + mu,
// then integrated d times back to levels. Forecast(h) is the mean of the
// first h of them, ForecastPath(steps) writes them all (so the mean of the
// path's rows is Forecast(h)); both cost O(h (p + d)) per expert with no
// allocation, and once the AR state has decayed below 1e-16 of the level,
// the rest is w-hat = mu integrated (O(d) per step). With phi stationary,
// w-hat tends geometrically to mu, so for d <= 1 without drift long horizons
// settle at a finite level (slowly if a reflection coefficient is near the
// 0.999 bound). Outputs are raw (they may leave [0, 1]); the caller
// normalises (NormalizeForecast).
//
// Memory per stream, in bytes (M experts, W = fit_window, k = p + q + 1,
// m = W - d):
//   8 M (W + k + max(q, 1) + 1) + 8 W        state: the ring, parameters,
//                                             residuals, sums, one window
//   + 8 m (36 + p + q + [mean]) + ~8 KiB     the fit workspace (reused by
//                                             all M experts)
//   Defaults (5,1,5), W = 500, M = 256: 1,058,816 + 4,000 + 183,632 + ~8 KiB
//   = 1.20 MiB (MemoryBytes() reports it; 58 such layers: 69 MiB).
//
// Cost (bench/arima/arima_benchmark.cc, one layer of 256 experts, defaults,
// CPU time on a shared 2-core x86-64 machine): Observe 45 ns per step; a
// warm refit of the layer 53 ms (207 us per expert: ~10 LM iterations of
// ~21 us); the first (cold, three-start) fit 167 ms; Forecast at h = 1 /
// 100 / 2000: 12 us / 0.24 ms / 2.9 ms. With max_iterations = 50: warm
// refit 216 ms, cold fit 761 ms. Per expert and LM iteration: O(W (p + q))
// for the residuals, O(W (p + 1) q) for the Jacobian, O(W k^2) for J'J.
//
// Thread-safety: as Predictor (one thread drives one stream).
#ifndef MOECAST_ENGINE_PREDICT_ARIMA_ARIMA_H_
#define MOECAST_ENGINE_PREDICT_ARIMA_ARIMA_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/predict/predictor.h"

namespace moecast {

struct ArimaOptions {
  int p = 5;  // AR order, in [0, 10]
  int d = 1;  // differences, in [0, 2]
  int q = 5;  // MA order, in [0, 10]
  // For d >= 1: estimate a mean mu of the differenced series (a drift).
  // Ignored for d = 0, where the mean is always estimated.
  bool drift = false;
  // Levels the model is fitted on; at least p + d + q + 50.
  int fit_window = 500;
  // Steps between refits, >= 1.
  int refit_every = 100;
  // Levenberg-Marquardt trial steps per run, in [1, 10000] (a cold fit runs
  // up to three starts, a warm refit one). See "Iterations" above.
  int max_iterations = 10;
  // LM stops when an accepted step lowers S by less than this fraction.
  double tolerance = 1e-8;
};

// Largest p and q accepted.
inline constexpr int kArimaMaxOrder = 10;
// fit_window must be at least p + d + q + this.
inline constexpr int kArimaMinExtraObservations = 50;
// Bound on every Schur-Cohn reflection coefficient of phi and theta.
inline constexpr double kArimaMaxReflection = 0.999;

// INVALID_ARGUMENT naming the field and the value if `options` is out of range.
absl::Status ValidateArimaOptions(const ArimaOptions& options);

// Steps seen before the first fit: max(fit_window / 2, p + d + q + 50).
int ArimaMinFitObservations(const ArimaOptions& options);

// Whether x_t = sum_i a_i x_{t-i} + noise is stationary with every
// reflection coefficient |k| <= max_reflection (a.size() <= 10). For
// invertibility of theta, pass a_j = -theta_j.
bool ArimaIsStationary(absl::Span<const double> a,
                       double max_reflection = kArimaMaxReflection);

// Results of one fit.
struct ArimaFitStats {
  double start_css = 0;  // S at the start (cold: the Hannan-Rissanen one)
  double css = 0;        // S at the fitted parameters
  int iterations = 0;    // LM trial steps, summed over starts
  bool warm_start = false;
  bool degenerate = false;  // constant differenced series (or too short)
};

// The CSS fitter for one (p, d, q, drift): a reusable workspace. Parameters
// are a vector of num_params() = p + q + 1 values laid out as
// [phi_1..phi_p, theta_1..theta_q, mu] (mu held at 0 when it is not
// estimated). Series are levels x, oldest first. Buffers grow to the longest
// series seen and are then reused: no allocation per fit after the first.
class ArimaCss {
 public:
  // `options` must pass ValidateArimaOptions.
  explicit ArimaCss(const ArimaOptions& options);
  ~ArimaCss();
  ArimaCss(const ArimaCss&) = delete;
  ArimaCss& operator=(const ArimaCss&) = delete;

  int num_params() const { return p_ + q_ + 1; }
  bool estimates_mean() const { return has_mean_; }

  // Fits on `x` (at least d + 2p + q + 2 values, one more with a mean;
  // shorter or constant series give phi = theta = 0, and mu the mean of the
  // differenced series where mu is estimated). If `warm_start`, `params`
  // holds the start (used if feasible and finite, else a cold start); the
  // fit is written to `params`.
  ArimaFitStats Fit(absl::Span<const double> x, bool warm_start,
                    absl::Span<double> params);

  // S at `params` on `x` (no constraint check).
  double Css(absl::Span<const double> x, absl::Span<const double> params);

  // Point forecasts of the next path.size() levels after x, at `params`.
  void ForecastPath(absl::Span<const double> x, absl::Span<const double> params,
                    absl::Span<double> path);

  // After Fit, Css or ForecastPath: the last q residuals, newest first
  // (0 where the series was too short).
  absl::Span<const double> last_residuals() const {
    return absl::MakeConstSpan(last_e_, q_);
  }

  int64_t MemoryBytes() const;

  // Longest differenced series the workspace buffers hold now (they grow on
  // demand), and a way to grow them to `m` ahead of time: a restored
  // predictor reserves what the saved one had, so that MemoryBytes() agrees.
  int workspace_capacity() const;
  void ReserveWorkspace(int m);

 private:
  struct Workspace;

  // Differences x into w_; returns the length of w (0 if too short).
  int Difference(absl::Span<const double> x);
  // Residuals e_ at `params` over w_[0..m); returns S.
  double Residuals(int m, const double* params, double* e);
  // S, J'J and J'e at `params` (estimated parameters only). With s >= 0,
  // the residuals (ws e and u) are already those of params and S = s.
  double Linearize(int m, const double* params, double s = -1);
  // LM from `params` (clipped into the box); returns S, adds trial steps.
  double Minimize(int m, double* params, int* iterations);
  // Hannan-Rissanen start (ar_only: theta = 0) written to params.
  void StartValues(int m, bool ar_only, double* params);
  // Coefficients <-> z = (reflection coefficients of phi, of -theta, mu);
  // t (column-major k x k, optional) receives d params / d z over the
  // estimated parameters. ToInternal fails if a root is on or inside the
  // unit circle, and clips |kappa| to the box otherwise.
  bool ToInternal(const double* params, double* z) const;
  void FromInternal(const double* z, double* params, double* t) const;
  bool Feasible(const double* params) const;
  void MakeFeasible(double* params) const;
  void SaveLastResiduals(int m, const double* e);

  const int p_, d_, q_;
  const bool has_mean_;
  const int k_;  // estimated parameters: p + q (+ 1 with a mean)
  const int max_iterations_;
  const double tolerance_;
  std::unique_ptr<Workspace> ws_;
  double last_e_[kArimaMaxOrder] = {};
};

// Counters of the predictor's refits (for benchmarks and tests).
struct ArimaRefitStats {
  int64_t refits = 0;           // fits of the whole layer so far
  int64_t last_iterations = 0;  // LM trial steps of the last refit, all experts
  int last_warm = 0;            // experts of the last refit that started warm
  int last_degenerate = 0;      // experts of the last refit with a flat series
};

// The predictor: one ARIMA(p,d,q) per expert, as described at the top.
// Name "arima(p,d,q)", or "arima(p,d,q)+drift" with drift (d >= 1).
absl::StatusOr<std::unique_ptr<Predictor>> MakeArimaPredictor(
    int num_experts, const ArimaOptions& options = ArimaOptions());

// The refit counters of a predictor made by MakeArimaPredictor (nullptr for
// any other predictor).
const ArimaRefitStats* GetArimaRefitStats(const Predictor& predictor);

}  // namespace moecast

#endif  // MOECAST_ENGINE_PREDICT_ARIMA_ARIMA_H_
