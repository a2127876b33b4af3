// gamma_eff, the congestion coefficient of expert routing (design section 6,
// after Mouzouni 2026, "Three Phases of Expert Routing"), fitted on one
// window of steps of one MoE layer.
//
// Model: expert qualities q_e (by default the mean pre-softmax router logit
// over ALL tokens, centred) and loads rho_e (sum 1) in the equilibrium
//   rho_e = softmax_e((q_e - gamma_rho * rho_e) / sigma)
// (equilibrium.h: unique for gamma_rho > -2*sigma; the design's convex
// potential covers gamma_rho >= -sigma). A softmax router is assumed; a
// sigmoid-plus-bias router (DeepSeek-V3 style) is outside the model.
//
// Units (the convention; kGammaUnitsConvention): rho_e = n_e / A sums to 1,
// f_e = n_e / N sums to K, l_e = M * rho_e averages 1, so that
//   gamma_rho = K * gamma_f = M * gamma_l.
// Every gamma, SE and CI below is in f units unless its name ends in _rho or
// _l. With the Switch/HF aux loss alpha * M * sum_e f_e P_e, gamma_explicit
// = alpha * M (f units) and gamma_implicit = gamma_f - gamma_explicit.
// (A = sum_e n_e, the assignments made; A = N*K when no token is dropped. The
// fit normalises loads by A so that they sum to 1; dropped_fraction reports
// 1 - A/(N*K).)
//
// Window statistics: per step t, counts n_e(t), tokens N_t and the quality
// inputs. The fit uses n_e = sum_t n_e(t) and the token-weighted means
// sum_t N_t x_e(t) / sum_t N_t of the quality input x: the mean logit
// (kMeanLogit, the default), the mean router probability, whose log is the
// quality (kLogMeanProb: log of the mean, not mean of logs), or the mean
// per-token standardised logit (kStdLogit). The quality is centred (its
// mean over experts subtracted); the fit does not depend on the shift.
// The estimators answer different questions: with mean-logit quality, hard
// top-K selection on heterogeneous tokens can make loads sharper than
// softmax(q), and gamma comes out negative (reported, never clamped).
//
// Estimators:
//  - Maximum likelihood (the headline gamma_f): maximise
//    sum_e n_e log rho_hat_e(gamma) over gamma_rho in (-2 sigma (1 - 1e-6),
//    1e6 * M * sigma], rho_hat(gamma) the equilibrium. A safeguarded 1-D
//    root search on the score, which comes from the implicit derivative
//    d rho_hat / d gamma = -H^{-1} S rho / sigma (Fisher scoring, then
//    secant steps, inside a sign-change bracket; every evaluation is one
//    warm-started Newton solve). A maximum at the lower end
//    (at_lower_bound) means the loads are sharper than any unique
//    equilibrium: gamma_f is then that end (-2 sigma / K), flagged and
//    warned about, and the unrestricted closed form shows how far below it
//    the data point; at_upper_bound means the likelihood still rises at the
//    top (loads flatter than, or anti-correlated with, the quality).
//    se_f: the Fisher-information standard error 1/sqrt(I(gamma)) / K with
//    I = A * Var_rho(d log rho_hat / d gamma), i.e. the A assignments taken
//    as independent multinomial draws. It ignores batch-to-batch
//    over-dispersion (then too small) and the K-distinct-experts constraint
//    (variance N K rho (1 - K rho) < A rho (1 - rho): then slightly too
//    large); the bootstrap below captures both. R^2 (r2): deviance-based,
//    1 - D(gamma_hat) / D_uniform with D(gamma) = 2 sum_e n_e log(rho_obs_e
//    / rho_hat_e(gamma)) (0 log 0 = 0) and D_uniform the same for uniform
//    loads: the share of the loads' deviation from uniform that the fitted
//    equilibrium explains (1 on exact equilibrium loads; NaN when the loads
//    are exactly uniform). Zero counts need no smoothing here.
//  - Closed form, a fast check: y_e = q_e - sigma log rho_e regressed on
//    rho_e with an intercept by (weighted) least squares; gamma_rho is the
//    slope. Weights n_e (kCounts, default: Var(log rho_hat_e) ~ 1/n_e) or 1
//    (kUniform). R^2 is the weighted R^2 of that regression; SE the usual
//    WLS slope SE, sqrt(SSR / (M - 2) / Sxx) (NaN for M = 2). Exact on
//    equilibrium loads, biased low with small counts because the noisy rho
//    is on both sides (errors in variables): bias_f is the first-order
//    estimate (C - gamma V) / (Sxx - V) / K at the MLE's gamma, with the
//    load noise Var_e = rho_e (1 - K rho_e) / A of independent sampling,
//    C = sum_e w_e [(1 - w_e/W)(-sigma Var_e/rho_e) + (rho_e - rho_bar)
//    sigma Var_e / (2 rho_e^2)] (y sharing the noise; E log bias) and V =
//    sum_e w_e (1 - w_e/W) Var_e (attenuation), weights taken as fixed
//    (batch over-dispersion makes the real bias larger); bootstrap_bias_f
//    is the bootstrap's estimate, mean(replicates) - estimate. small_counts
//    flags min_e n_e < closed_form_min_count.
//  - Bootstrap: resample the window's steps with replacement
//    (bootstrap_replicates times), sum their statistics, refit both
//    estimators; percentile CI at ci_level, each end the ((B + 1) p)-th of
//    the B sorted replicates (interpolated between neighbours, clamped to
//    the extremes; Davison & Hinkley 1997, sec. 5.2: the sample quantile's
//    (B - 1) p + 1 draws the ends inward at small B), bootstrap_se_f the
//    replicates' standard deviation.
//    The random stream is splitmix64 from `seed` with a multiply-shift index
//    draw, so the same inputs and seed give identical results on every
//    platform. Needs >= 2 steps. Over T steps the percentile interval
//    covers a little less than its level (bootstrap variance (T-1)/T of the
//    true one; normal rather than t_{T-1} tails): coverage_test.cc measures
//    it per case at T = 30, and at M = 256, T = 100 (the engine's window):
//    95.0% with 50 replicates, 94.6% with 100 (4000 draws each).
//  - Temperature view: T such that softmax(q/T) has the observed load-
//    weighted mean quality sum_e rho_e q_e (the maximum-likelihood T, a
//    monotone 1-D solve in 1/T). Near uniform load T ~= sigma + gamma_rho/M
//    (temperature_linearized). T < 0 when loads anti-correlate with q; 0
//    when rho puts all its mass on the top-quality experts; +inf for
//    loads with the uniform mean quality; NaN for constant q.
//
// Edge cases and flags:
//  - Zero counts: where the observed load's log is needed (closed form), a
//    window with any zero count uses (n_e + 0.5) / (A + 0.5 M) for every
//    expert (the design's (n+0.5)/(N K+0.5 M) when nothing is dropped), and
//    (n_e + 0.5) as the kCounts weights; zero_count_experts counts them.
//  - weakly_identified: near-uniform loads or near-constant quality, where
//    the likelihood is nearly flat in gamma: load_cv = sd_e(M rho_e) <
//    weak_identification_cv, or load_cv < weak_identification_noise_ratio *
//    sampling_cv (the CV that sampling noise alone gives, sqrt(mean_e M^2
//    rho_e (1 - K rho_e) / A)), or sd_e(q) / sigma < weak_identification_cv.
//  - Scope: k_over_m = K/M and max_k_load = max_e K rho_e (near 1 the top-K
//    ceiling binds and softmax loads no longer apply; warned at >= 0.9).
//  - Fit quality: l1_in_sample = sum_e |rho_hat_e - rho_obs_e|, and the
//    held-out epsilon_l: fit the MLE on the even-indexed steps (0, 2, ...),
//    predict the odd-indexed steps' loads from their own quality with that
//    gamma, heldout_l1 = sum_e |rho_hat_odd_e - rho_obs_odd_e|, next to its
//    sampling floor sum_e sqrt(2/pi) sqrt(rho_hat_e (1 - K rho_hat_e) / A_odd)
//    (section 2). Needs >= 2 steps. (To score the next window instead, call
//    PredictLoads with this window's gamma_rho and that window's quality.)
//
// Usage:
//   GammaWindow w;
//   w.num_experts = 64;
//   for (...) w.AddStep(tokens, counts, logit_means);   // one call per step
//   GammaOptions o;
//   o.top_k = 8;
//   MOECAST_ASSIGN_OR_RETURN(GammaFit fit, FitGamma(w, o));
//   // fit.gamma_f [fit.ci_low_f, fit.ci_high_f], fit.closed_form.gamma_f ...
//
// Performance: each fit (the window's, each replicate's) is a handful of
// warm-started O(M) Newton solves. A replicate's search starts at the
// window's estimate, its first solve from the window's equilibrium moved to
// the replicate's quality (to second order), takes Newton steps on the
// score with its exact curvature, solves the equilibrium to a residual of
// 1e-9 and stops at a relative step of 1e-5 without evaluating the last
// point: the replicates' gamma move by < 1e-7 relative against solving
// everything to 1e-15 (on the analysis bench's windows), far below the
// bootstrap's own Monte Carlo error. The solver's O(M) loops are compiled
// for AVX2 and the baseline (picked at load time; the same results, no FMA
// contraction). bench/analysis measures the engine's case (`--part=fits`):
// M = 256, K = 8, 100 steps, 50 replicates, under 1 ms per layer on one
// core of the shared development machine.
//
// Thread-safety: pure functions; call them from any thread.
#ifndef MOECAST_ENGINE_HEALTH_GAMMA_GAMMA_H_
#define MOECAST_ENGINE_HEALTH_GAMMA_GAMMA_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace moecast {

// The units convention, to print next to the numbers.
inline constexpr char kGammaUnitsConvention[] =
    "gamma_f: f_e = n_e/N sums to K; gamma_rho = K*gamma_f = M*gamma_l "
    "(rho sums to 1, l = M*rho averages 1); aux loss alpha*M*sum_e f_e*P_e "
    "gives gamma_explicit = alpha*M in f units, gamma_implicit = gamma_f - "
    "gamma_explicit";

enum class QualityEstimator {
  kMeanLogit = 0,    // token-weighted mean pre-softmax logit (default)
  kLogMeanProb = 1,  // log of the token-weighted mean router probability
  kStdLogit = 2,     // token-weighted mean per-token standardised logit
};
inline constexpr int kNumQualityEstimators = 3;

// "mean_logit" / "log_mean_prob" / "std_logit".
absl::string_view QualityEstimatorName(QualityEstimator estimator);
// Parses those names; INVALID_ARGUMENT otherwise.
absl::StatusOr<QualityEstimator> ParseQualityEstimator(absl::string_view name);

enum class ClosedFormWeights {
  kCounts,   // w_e = n_e (n_e + 0.5 when zero counts are smoothed)
  kUniform,  // w_e = 1
};

// One window of steps of one layer. Arrays are T x M row-major (step-major).
struct GammaWindow {
  int num_experts = 0;  // M >= 2
  // T >= 1 values: tokens N_t of each step (> 0, finite).
  std::vector<double> tokens;
  // T x M: n_e(t), (token, slot) assignments to expert e; >= 0, finite
  // (non-integers allowed); n_e(t) <= N_t and sum_e n_e(t) <= K N_t (each
  // token picks K distinct experts; 1e-9 relative slack); sum over the
  // window > 0.
  std::vector<double> counts;
  // T x M: mean pre-softmax router logit of each expert over ALL tokens of
  // the step, finite. Needed for kMeanLogit; else may be empty.
  std::vector<double> logit_mean;
  // T x M, optional (empty): mean router probability of each expert over all
  // tokens, > 0 and finite. Needed for kLogMeanProb.
  std::vector<double> prob_mean;
  // T x M, optional (empty): mean over tokens of the standardised logit
  // ((z - mean_e z) / sd_e z per token), finite. Needed for kStdLogit.
  std::vector<double> std_logit_mean;
  // Optional (empty or T values): the step numbers, for reporting windows by
  // their last step.
  std::vector<int64_t> step_ids;

  int num_steps() const { return static_cast<int>(tokens.size()); }
  // Appends one step; an empty span leaves that optional input out (all
  // steps must then leave it out). Sizes are checked by FitGamma.
  void AddStep(double step_tokens, absl::Span<const double> step_counts,
               absl::Span<const double> step_logit_mean,
               absl::Span<const double> step_prob_mean = {},
               absl::Span<const double> step_std_logit_mean = {});
};

struct GammaOptions {
  // Top-k K, in [1, M]. Required (0 is rejected).
  int top_k = 0;
  // Router softmax temperature sigma (> 0, finite), logit units.
  double sigma = 1.0;
  QualityEstimator estimator = QualityEstimator::kMeanLogit;
  ClosedFormWeights closed_form_weights = ClosedFormWeights::kCounts;
  // Bootstrap replicates (>= 0; 0 or a one-step window: no CI, fields NaN).
  int bootstrap_replicates = 200;
  // Seed of the bootstrap's random stream; fixed so that results repeat.
  uint64_t seed = 0x6d6f656361737431ULL;
  // Two-sided CI level, in (0, 1).
  double ci_level = 0.95;
  // The closed form is flagged small_counts when the smallest expert count
  // over the window is below this (>= 0, assignments). Default 1000: the
  // log-load bias (1 - K rho)/(2 n) is then <= 5e-4, each load's relative
  // noise <= 1/sqrt(1000) ~= 3%, and the errors-in-variables bias of
  // gamma_l about sigma (1 - K/M) / (n_min cv^2) stays <= 0.1 sigma for a
  // load CV >= 0.1 (typical MoE imbalance is 0.2-0.5).
  double closed_form_min_count = 1000;
  // weakly_identified thresholds (see the header): load CV (and sd(q)/sigma)
  // below weak_identification_cv (>= 0, default 0.01: loads within 1% of
  // uniform), or load CV below weak_identification_noise_ratio (>= 0)
  // times the sampling-noise CV.
  double weak_identification_cv = 0.01;
  double weak_identification_noise_ratio = 2.0;
  // The aux-loss coefficient alpha (>= 0, finite) when the job has a
  // Switch/HF load-balancing loss; unset: no explicit/implicit split.
  std::optional<double> aux_loss_alpha;
  // Compute the held-out L1 (one more MLE fit on the even steps).
  bool heldout = true;
};

struct ClosedFormFit {
  double gamma_f = 0;    // slope / K
  double gamma_rho = 0;  // the regression slope
  double intercept = 0;  // logit units
  double r2 = 0;         // weighted R^2 of y on rho (NaN if y is constant)
  double se_f = 0;       // WLS slope SE / K (NaN for M = 2)
  double bias_f = 0;     // first-order small-count bias estimate
  double bootstrap_bias_f = 0;  // mean(replicates) - gamma_f (NaN without)
  bool small_counts = false;    // min_e n_e < closed_form_min_count
  double ci_low_f = 0;          // bootstrap percentile CI (NaN without)
  double ci_high_f = 0;
};

struct GammaFit {
  QualityEstimator estimator = QualityEstimator::kMeanLogit;
  int num_experts = 0;
  int top_k = 0;
  int num_steps = 0;
  double sigma = 1.0;
  double tokens = 0;            // sum_t N_t
  double assignments = 0;       // A = sum_e n_e
  double dropped_fraction = 0;  // 1 - A / (K sum_t N_t)

  // Maximum likelihood (the headline), f units unless noted.
  double gamma_f = 0;
  double gamma_rho = 0;       // K * gamma_f
  double gamma_l = 0;         // gamma_rho / M
  double se_f = 0;            // Fisher-information SE (see the header)
  double bootstrap_se_f = 0;  // NaN without bootstrap
  double ci_low_f = 0;        // percentile CI at ci_level; NaN without
  double ci_high_f = 0;
  double ci_level = 0.95;
  int bootstrap_replicates = 0;  // replicates that gave a fit
  int bootstrap_failed = 0;      // replicates without assignments
  double log_likelihood = 0;     // sum_e n_e log rho_hat_e
  double deviance = 0;           // D(gamma_hat)
  double null_deviance = 0;      // D for uniform loads
  double r2 = 0;                 // 1 - deviance / null_deviance
  bool at_lower_bound = false;   // MLE at the uniqueness limit (-2 sigma)
  bool at_upper_bound = false;   // likelihood still rising at the top
  bool converged = true;         // search and every solve converged
  int mle_evaluations = 0;       // equilibrium solves in the main fit
  int solver_iterations = 0;     // their Newton steps
  double solver_residual = 0;    // max residual over those solves

  ClosedFormFit closed_form;

  double temperature = 0;             // fitted T (see the header)
  double temperature_linearized = 0;  // sigma + gamma_rho / M

  bool weakly_identified = false;
  double load_cv = 0;      // sd_e(M rho_e)
  double sampling_cv = 0;  // sampling-noise CV of M rho_e
  double quality_sd = 0;   // sd_e(q) / sigma
  int zero_count_experts = 0;
  bool negative = false;  // gamma_f < 0 (reported as is)

  bool has_aux_loss = false;
  double gamma_explicit_f = 0;   // alpha * M
  double gamma_implicit_f = 0;   // gamma_f - gamma_explicit_f
  double eff_over_explicit = 0;  // gamma_f / gamma_explicit_f (NaN if 0)

  double k_over_m = 0;    // K / M
  double max_k_load = 0;  // max_e K rho_e

  double l1_in_sample = 0;      // sum_e |rho_hat_e - rho_obs_e|
  double heldout_l1 = 0;        // epsilon_l (NaN without >= 2 steps)
  double heldout_l1_floor = 0;  // its sampling floor
  double heldout_gamma_f = 0;   // the even-steps MLE

  std::vector<double> quality;        // M, centred
  std::vector<double> observed_load;  // M, n_e / A
  std::vector<double> fitted_load;    // M, rho_hat(gamma_hat)
  // Human-readable notes on every raised flag (negative gamma, bounds, weak
  // identification, small counts, smoothing, drops, saturation, solver).
  std::vector<std::string> warnings;
};

// Fits gamma on one window. INVALID_ARGUMENT names the field and the value:
// num_experts < 2; no steps; arrays of the wrong size; negative, non-finite
// or too large counts; non-positive tokens; non-finite logits; the chosen
// estimator's input missing; prob_mean <= 0; a window without assignments;
// bad options (top_k outside [1, M], sigma, ci_level, thresholds, alpha).
absl::StatusOr<GammaFit> FitGamma(const GammaWindow& window,
                                  const GammaOptions& options);

// The equilibrium loads for quality q at gamma_rho (> -2 sigma): the fitted
// model's prediction, e.g. for the next window's quality.
absl::StatusOr<std::vector<double>> PredictLoads(
    absl::Span<const double> quality, double gamma_rho, double sigma = 1.0);

// Splits a window into consecutive, non-overlapping windows of
// steps_per_window steps (>= 1); a trailing partial window is dropped.
absl::StatusOr<std::vector<GammaWindow>> SplitWindow(const GammaWindow& window,
                                                     int steps_per_window);

// gamma_f trajectories under the quality estimators over a sequence of
// windows, and the Pearson correlation of each pair of trajectories.
struct QualityTrajectories {
  // Per window: its last step (step_ids.back() when given, else the index of
  // its last step counting from the first window's first step).
  std::vector<int64_t> last_step;
  // Indexed by static_cast<int>(QualityEstimator). An estimator is
  // available when every window has its input.
  std::array<bool, kNumQualityEstimators> available{};
  std::array<std::vector<double>, kNumQualityEstimators> gamma_f;
  std::array<std::vector<double>, kNumQualityEstimators> ci_low_f;
  std::array<std::vector<double>, kNumQualityEstimators> ci_high_f;
  std::array<std::vector<uint8_t>, kNumQualityEstimators> negative;
  // correlation[a][b]: Pearson r of the gamma_f trajectories (NaN when
  // either is unavailable, fewer than 3 windows, or a constant series).
  std::array<std::array<double, kNumQualityEstimators>, kNumQualityEstimators>
      correlation{};
};

// Fits every window under each available estimator with `options`
// (options.estimator is ignored; set bootstrap_replicates = 0 and heldout =
// false for speed when CIs are not needed). Errors name the window.
absl::StatusOr<QualityTrajectories> FitQualityTrajectories(
    absl::Span<const GammaWindow> windows, const GammaOptions& options);

}  // namespace moecast

#endif  // MOECAST_ENGINE_HEALTH_GAMMA_GAMMA_H_
