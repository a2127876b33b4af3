#include "engine/health/gamma/multitype.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/health/gamma/internal.h"

namespace moecast {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

absl::Status Validate(const MultiTypeWindow& w, const GammaOptions& o,
                      int* num_types) {
  const int m = w.num_experts;
  if (m < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_experts must be >= 2, got ", m));
  }
  if (o.top_k < 1 || o.top_k > m) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top_k = ", o.top_k, " must be in [1, num_experts = ", m, "]"));
  }
  if (!(o.sigma > 0) || !std::isfinite(o.sigma)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sigma must be positive and finite, got ", o.sigma));
  }
  if (w.counts.empty() || w.counts.size() % m != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("counts has ", w.counts.size(),
                     " values, want a positive multiple of num_experts = ", m));
  }
  const int k = static_cast<int>(w.counts.size() / m);
  if (!w.mass.empty() && w.mass.size() != static_cast<size_t>(k)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mass has ", w.mass.size(), " values, want 0 or types = ", k,
        " (counts has ", k, " rows)"));
  }
  if (w.logit_mean.size() != w.counts.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "logit_mean has ", w.logit_mean.size(), " values, want types x ",
        "num_experts = ", k, " x ", m, " = ", w.counts.size()));
  }
  double mass_sum = 0;
  for (size_t i = 0; i < w.mass.size(); ++i) {
    if (!(w.mass[i] >= 0) || !std::isfinite(w.mass[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "mass[", i, "] = ", w.mass[i], " must be >= 0 and finite"));
    }
    mass_sum += w.mass[i];
  }
  if (!w.mass.empty() && !(mass_sum > 0)) {
    return absl::InvalidArgumentError("mass sums to 0");
  }
  double total = 0;
  for (size_t j = 0; j < w.counts.size(); ++j) {
    if (!(w.counts[j] >= 0) || !std::isfinite(w.counts[j])) {
      return absl::InvalidArgumentError(
          absl::StrCat("counts[type ", j / m, "][expert ", j % m,
                       "] = ", w.counts[j], " must be >= 0 and finite"));
    }
    if (!std::isfinite(w.logit_mean[j])) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_mean[type ", j / m, "][expert ", j % m,
                       "] = ", w.logit_mean[j], " is not finite"));
    }
    total += w.counts[j];
  }
  if (!(total > 0)) {
    return absl::InvalidArgumentError(
        "counts are all zero: the window has no assignments");
  }
  *num_types = k;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MultiTypeFit> FitMultiType(const MultiTypeWindow& window,
                                          const GammaOptions& options) {
  int k = 0;
  absl::Status s = Validate(window, options, &k);
  if (!s.ok()) return s;
  const int m = window.num_experts;
  const double sigma = options.sigma;
  const int top_k = options.top_k;

  MultiTypeFit fit;
  fit.num_types = k;
  std::vector<double> totals(k, 0.0);
  double a = 0;
  for (int i = 0; i < k; ++i) {
    for (int e = 0; e < m; ++e)
      totals[i] += window.counts[static_cast<size_t>(i) * m + e];
    a += totals[i];
  }
  fit.mass = window.mass.empty() ? totals : window.mass;
  double mass_sum = 0;
  for (double x : fit.mass) mass_sum += x;
  for (double& x : fit.mass) x /= mass_sum;

  // Pooled single-type window.
  std::vector<double> n(m, 0.0), q(m, 0.0);
  for (int i = 0; i < k; ++i) {
    for (int e = 0; e < m; ++e) {
      n[e] += window.counts[static_cast<size_t>(i) * m + e];
      q[e] += fit.mass[i] * window.logit_mean[static_cast<size_t>(i) * m + e];
    }
  }
  double qmean = 0;
  for (double v : q) qmean += v;
  qmean /= m;
  for (double& v : q) v -= qmean;
  fit.observed_load.resize(m);
  for (int e = 0; e < m; ++e) fit.observed_load[e] = n[e] / a;

  gamma_internal::Workspace ws;
  const gamma_internal::MleResult single =
      gamma_internal::FitMle(q, n, a, sigma, 0.0, nullptr, 1e-13, &ws);
  fit.single_gamma_f = single.gamma / top_k;
  fit.single_fitted_load = single.state.load;

  gamma_internal::Problem p;
  p.num_experts = m;
  p.num_types = k;
  p.mass = fit.mass.data();
  p.quality = window.logit_mean.data();
  p.sigma = sigma;
  gamma_internal::Counts c;
  c.counts = window.counts.data();
  c.totals = totals.data();
  const gamma_internal::MleResult multi = gamma_internal::MaximizeLikelihood(
      p, c, single.gamma, gamma_internal::MleLowerBound(sigma),
      gamma_internal::MleUpperBound(m, sigma), 1e-13, nullptr, &ws);
  fit.gamma_rho = multi.gamma;
  fit.gamma_f = multi.gamma / top_k;
  fit.se_f =
      multi.lik.fisher > 0 ? 1.0 / std::sqrt(multi.lik.fisher) / top_k : kNaN;
  fit.log_likelihood = multi.lik.loglik;
  fit.at_lower_bound = multi.at_lower_bound;
  fit.at_upper_bound = multi.at_upper_bound;
  fit.converged = multi.converged && !multi.solver_failed && single.converged &&
                  !single.solver_failed;
  fit.solver_iterations = multi.solver_iterations + single.solver_iterations;
  fit.solver_residual = std::max(multi.max_residual, single.max_residual);
  fit.fitted_load = multi.state.load;

  fit.l1_multi = fit.l1_single = 0;
  for (int e = 0; e < m; ++e) {
    fit.l1_multi += std::fabs(fit.fitted_load[e] - fit.observed_load[e]);
    fit.l1_single +=
        std::fabs(fit.single_fitted_load[e] - fit.observed_load[e]);
  }
  fit.l1_improvement =
      fit.l1_single > 0 ? (fit.l1_single - fit.l1_multi) / fit.l1_single : kNaN;
  return fit;
}

}  // namespace moecast
