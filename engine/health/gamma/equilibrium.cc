#include "engine/health/gamma/equilibrium.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/health/gamma/internal.h"

namespace moecast {
namespace {

absl::Status ValidateOptions(const EquilibriumOptions& o) {
  if (!(o.sigma > 0) || !std::isfinite(o.sigma)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sigma must be positive and finite, got ", o.sigma));
  }
  if (!(o.tolerance >= 0 && o.tolerance <= 1e-3)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tolerance must be in [0, 1e-3], got ", o.tolerance));
  }
  if (o.max_iterations < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_iterations must be >= 1, got ", o.max_iterations));
  }
  return absl::OkStatus();
}

absl::StatusOr<Equilibrium> SolveImpl(const std::vector<double>& mass,
                                      absl::Span<const double> quality, int m,
                                      double gamma,
                                      const EquilibriumOptions& o) {
  if (!std::isfinite(gamma)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gamma_rho must be finite, got ", gamma));
  }
  const double limit = EquilibriumUniquenessLimit(o.sigma);
  if (!(gamma > limit)) {
    return absl::OutOfRangeError(absl::StrCat(
        "gamma_rho = ", gamma, " is at or below -2*sigma = ", limit,
        ": the equilibrium is no longer unique there"));
  }
  for (size_t j = 0; j < quality.size(); ++j) {
    if (!std::isfinite(quality[j])) {
      return absl::InvalidArgumentError(
          absl::StrCat("quality[type ", j / m, "][expert ", j % m,
                       "] = ", quality[j], " is not finite"));
    }
  }
  gamma_internal::Problem p;
  p.num_experts = m;
  p.num_types = static_cast<int>(mass.size());
  p.mass = mass.data();
  p.quality = quality.data();
  p.sigma = o.sigma;
  gamma_internal::Workspace ws;
  gamma_internal::State st;
  gamma_internal::Solve(p, gamma, o.tolerance, o.max_iterations, nullptr, &ws,
                        &st);
  if (!st.converged) {
    return absl::InternalError(absl::StrCat(
        "equilibrium at gamma_rho = ", gamma, " did not converge after ",
        st.iterations, " Newton steps (residual ", st.residual, ")"));
  }
  Equilibrium eq;
  eq.load = std::move(st.load);
  eq.type_load = std::move(st.probs);
  eq.iterations = st.iterations;
  eq.residual = st.residual;
  eq.dense_fallback = st.dense_fallback;
  return eq;
}

}  // namespace

double EquilibriumUniquenessLimit(double sigma) {
  return gamma_internal::kUniquenessLimitInSigma * sigma;
}

absl::StatusOr<Equilibrium> SolveEquilibrium(
    absl::Span<const double> quality, double gamma_rho,
    const EquilibriumOptions& options) {
  absl::Status s = ValidateOptions(options);
  if (!s.ok()) return s;
  if (quality.empty()) {
    return absl::InvalidArgumentError("quality is empty (need M >= 1 experts)");
  }
  return SolveImpl({1.0}, quality, static_cast<int>(quality.size()), gamma_rho,
                   options);
}

absl::StatusOr<Equilibrium> SolveSharedLoadEquilibrium(
    absl::Span<const double> mass, absl::Span<const double> quality,
    int num_experts, double gamma_rho, const EquilibriumOptions& options) {
  absl::Status s = ValidateOptions(options);
  if (!s.ok()) return s;
  if (num_experts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_experts must be >= 1, got ", num_experts));
  }
  if (mass.empty()) {
    return absl::InvalidArgumentError("mass is empty (need >= 1 type)");
  }
  if (quality.size() != mass.size() * static_cast<size_t>(num_experts)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "quality has ", quality.size(), " values, want types x experts = ",
        mass.size(), " x ", num_experts, " = ", mass.size() * num_experts));
  }
  double total = 0;
  for (size_t i = 0; i < mass.size(); ++i) {
    if (!(mass[i] >= 0) || !std::isfinite(mass[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "mass[", i, "] = ", mass[i], " must be >= 0 and finite"));
    }
    total += mass[i];
  }
  if (!(total > 0)) {
    return absl::InvalidArgumentError("mass sums to 0");
  }
  std::vector<double> w(mass.begin(), mass.end());
  for (double& x : w) x /= total;
  return SolveImpl(w, quality, num_experts, gamma_rho, options);
}

}  // namespace moecast
