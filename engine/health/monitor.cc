#include "engine/health/monitor.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moecast {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

absl::Status ValidateHealthOptions(const HealthOptions& o) {
  if (o.window_steps < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "health: window_steps = ", o.window_steps, " must be >= 2"));
  }
  if (absl::Status s = ValidateDeadExpertOptions(o.dead); !s.ok()) return s;
  return ValidatePhaseOptions(o.phase);
}

HealthMonitor::HealthMonitor(int layer, int num_experts, const HealthOptions& options)
    : layer_(layer),
      m_(num_experts),
      options_(options),
      dead_(num_experts, options.dead),
      phase_(options.phase),
      window_counts_(num_experts, 0.0) {
  window_.num_experts = num_experts;
}

absl::Status HealthMonitor::Observe(int64_t step, absl::Span<const double> counts,
                                    double tokens, absl::Span<const double> logits,
                                    absl::Span<const double> probs,
                                    absl::Span<const double> std_logits) {
  const auto size_error = [&](absl::string_view what, size_t n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "health, layer ", layer_, ", step ", step, ": ", what, " has ", n,
        " values, expected ", m_));
  };
  if (static_cast<int>(counts.size()) != m_) return size_error("counts", counts.size());
  if (!logits.empty() && static_cast<int>(logits.size()) != m_) {
    return size_error("logits", logits.size());
  }
  if (!probs.empty() && static_cast<int>(probs.size()) != m_) {
    return size_error("probs", probs.size());
  }
  if (!std_logits.empty() && static_cast<int>(std_logits.size()) != m_) {
    return size_error("std_logits", std_logits.size());
  }
  if (!(tokens > 0) || !std::isfinite(tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "health, layer ", layer_, ", step ", step, ": tokens = ", tokens,
        " must be positive"));
  }
  // Dead-expert windows follow the same steps (the tracker validates counts
  // and records nothing on error).
  absl::StatusOr<std::vector<DeadExpertEvent>> dead = dead_.ObserveStep(step, counts);
  if (!dead.ok()) return dead.status();
  for (const DeadExpertEvent& e : *dead) {
    const bool death = e.type == DeadExpertEventType::kDeath;
    events_.push_back(HealthEvent{
        e.step, layer_, death ? "expert_dead" : "expert_revived", e.expert,
        death ? "alive" : "dead", death ? "dead" : "alive",
        absl::StrFormat("expert %d: share %.4g %s %.4g in the window ending at "
                        "step %d (streak from step %d)",
                        e.expert, e.share, death ? "<" : ">", e.threshold, e.step,
                        e.streak_start_step)});
  }
  window_has_logits_ &= !logits.empty();
  window_has_probs_ &= !probs.empty();
  window_has_std_ &= !std_logits.empty();
  window_.AddStep(tokens, counts, window_has_logits_ ? logits : absl::Span<const double>(),
                  window_has_probs_ ? probs : absl::Span<const double>(),
                  window_has_std_ ? std_logits : absl::Span<const double>());
  window_.step_ids.push_back(step);
  for (int e = 0; e < m_; ++e) window_counts_[e] += counts[e];
  last_step_ = step;
  if (window_.num_steps() >= options_.window_steps) CloseWindow();
  return absl::OkStatus();
}

void HealthMonitor::CloseWindow() {
  HealthWindow w;
  w.step = last_step_;
  w.layer = layer_;
  w.steps = window_.num_steps();
  w.gamma_f_by_estimator.assign(kNumQualityEstimators, kNaN);
  // An optional input counts only if every step of the window had it.
  if (!window_has_logits_) window_.logit_mean.clear();
  if (!window_has_probs_) window_.prob_mean.clear();
  if (!window_has_std_) window_.std_logit_mean.clear();
  if (window_.logit_mean.empty()) {
    w.gamma_status = "gamma_eff needs router-logit means for every step of the window";
  } else {
    absl::StatusOr<GammaFit> fit = FitGamma(window_, options_.gamma);
    if (fit.ok()) {
      w.gamma = *fit;
      w.gamma_f_by_estimator[static_cast<int>(QualityEstimator::kMeanLogit)] =
          fit->gamma_f;
    } else {
      w.gamma_status = std::string(fit.status().message());
    }
  }
  if (options_.all_estimators) {
    GammaOptions quick = options_.gamma;
    quick.bootstrap_replicates = 0;
    quick.heldout = false;
    for (QualityEstimator est :
         {QualityEstimator::kLogMeanProb, QualityEstimator::kStdLogit}) {
      const bool has = est == QualityEstimator::kLogMeanProb
                           ? !window_.prob_mean.empty()
                           : !window_.std_logit_mean.empty();
      if (!has) continue;
      quick.estimator = est;
      absl::StatusOr<GammaFit> fit = FitGamma(window_, quick);
      if (fit.ok()) w.gamma_f_by_estimator[static_cast<int>(est)] = fit->gamma_f;
    }
  }
  // The phase tracker sees only identified fits: a maximum at a search bound
  // (loads flatter or sharper than any equilibrium of these logits) or a
  // weakly identified window says nothing about the trend.
  const bool identified = w.gamma.has_value() && w.gamma->converged &&
                          !w.gamma->at_lower_bound && !w.gamma->at_upper_bound &&
                          !w.gamma->weakly_identified;
  if (identified) {
    absl::StatusOr<std::optional<PhaseChange>> change = phase_.Observe(
        GammaPoint{w.step, w.gamma->gamma_f, w.gamma->ci_low_f, w.gamma->ci_high_f});
    if (change.ok() && change->has_value()) {
      const PhaseChange& c = **change;
      events_.push_back(HealthEvent{
          c.step, layer_, "phase_change", -1, std::string(PhaseName(c.from)),
          std::string(PhaseName(c.to)),
          absl::StrFormat("%s -> %s (slope %.3g per step, 95%% CI [%.3g, %.3g])%s",
                          PhaseName(c.from), PhaseName(c.to), c.slope.slope,
                          c.slope.lo, c.slope.hi,
                          c.usual_order ? "" : ", out of the usual order")});
    }
  }
  w.phase = phase_.phase();
  absl::StatusOr<ImbalanceMetrics> imbalance = Imbalance(window_counts_);
  if (imbalance.ok()) w.imbalance = *imbalance;
  w.dead_experts = dead_.dead_experts();
  windows_.push_back(w);
  latest_ = std::move(w);
  window_ = GammaWindow();
  window_.num_experts = m_;
  std::fill(window_counts_.begin(), window_counts_.end(), 0.0);
  window_has_logits_ = window_has_probs_ = window_has_std_ = true;
}

std::vector<HealthEvent> HealthMonitor::TakeEvents() {
  std::vector<HealthEvent> out;
  out.swap(events_);
  return out;
}

std::vector<HealthWindow> HealthMonitor::TakeWindows() {
  std::vector<HealthWindow> out;
  out.swap(windows_);
  return out;
}

}  // namespace moecast
