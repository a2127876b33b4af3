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
  ResetWindow();
}

void HealthMonitor::ResetWindow() {
  // A window's full size up front: growing the buffers step by step would
  // copy them (and fault in fresh pages) several times per window.
  window_ = GammaWindow();
  window_.num_experts = m_;
  const size_t steps = static_cast<size_t>(std::max(options_.window_steps, 1));
  window_.tokens.reserve(steps);
  window_.step_ids.reserve(steps);
  window_.counts.reserve(steps * m_);
  if (window_has_logits_) window_.logit_mean.reserve(steps * m_);
  counts_from_dead_ = options_.dead.window_steps == options_.window_steps &&
                      dead_.pending_steps() == 0;
}

std::vector<double> HealthMonitor::SumWindowRows() const {
  std::vector<double> sums(m_, 0.0);
  for (int t = 0; t < window_.num_steps(); ++t) {
    const double* row = window_.counts.data() + static_cast<size_t>(t) * m_;
    for (int e = 0; e < m_; ++e) sums[e] += row[e];
  }
  return sums;
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
  if (!counts_from_dead_) {
    for (int e = 0; e < m_; ++e) window_counts_[e] += counts[e];
  }
  last_step_ = step;
  if (window_.num_steps() >= options_.window_steps) {
    if (defer_close_) {
      window_due_ = true;
    } else {
      CloseWindow();
    }
  }
  return absl::OkStatus();
}

void HealthMonitor::CloseWindow() { ApplyWindow(FitWindow(TakeDueWindow(), options_)); }

HealthMonitor::DueWindow HealthMonitor::TakeDueWindow() {
  DueWindow due;
  due.layer = layer_;
  due.step = last_step_;
  // An optional input counts only if every step of the window had it.
  if (!window_has_logits_) window_.logit_mean.clear();
  if (!window_has_probs_) window_.prob_mean.clear();
  if (!window_has_std_) window_.std_logit_mean.clear();
  due.window = std::move(window_);
  if (!counts_from_dead_) {
    due.counts = window_counts_;
  } else if (dead_.pending_steps() == 0 &&
             static_cast<int>(dead_.last_window_counts().size()) == m_) {
    // The tracker's window closed with this one (same steps).
    due.counts.assign(dead_.last_window_counts().begin(),
                      dead_.last_window_counts().end());
  } else {
    due.counts = SumWindowRows();  // (not reached while the windows agree)
  }
  due.dead_experts = dead_.dead_experts();
  // Logit buffers are reserved again only if this window had logits.
  window_has_logits_ = !due.window.logit_mean.empty();
  ResetWindow();
  std::fill(window_counts_.begin(), window_counts_.end(), 0.0);
  window_has_logits_ = window_has_probs_ = window_has_std_ = true;
  window_due_ = false;
  return due;
}

HealthWindow HealthMonitor::FitWindow(const DueWindow& due,
                                      const HealthOptions& options) {
  const GammaWindow& window = due.window;
  HealthWindow w;
  w.step = due.step;
  w.layer = due.layer;
  w.steps = window.num_steps();
  w.gamma_f_by_estimator.assign(kNumQualityEstimators, kNaN);
  if (window.logit_mean.empty()) {
    w.gamma_status = "gamma_eff needs router-logit means for every step of the window";
  } else {
    absl::StatusOr<GammaFit> fit = FitGamma(window, options.gamma);
    if (fit.ok()) {
      w.gamma = *fit;
      w.gamma_f_by_estimator[static_cast<int>(QualityEstimator::kMeanLogit)] =
          fit->gamma_f;
    } else {
      w.gamma_status = std::string(fit.status().message());
    }
  }
  if (options.all_estimators) {
    GammaOptions quick = options.gamma;
    quick.bootstrap_replicates = 0;
    quick.heldout = false;
    for (QualityEstimator est :
         {QualityEstimator::kLogMeanProb, QualityEstimator::kStdLogit}) {
      const bool has = est == QualityEstimator::kLogMeanProb
                           ? !window.prob_mean.empty()
                           : !window.std_logit_mean.empty();
      if (!has) continue;
      quick.estimator = est;
      absl::StatusOr<GammaFit> fit = FitGamma(window, quick);
      if (fit.ok()) w.gamma_f_by_estimator[static_cast<int>(est)] = fit->gamma_f;
    }
  }
  absl::StatusOr<ImbalanceMetrics> imbalance = Imbalance(due.counts);
  if (imbalance.ok()) w.imbalance = *imbalance;
  w.dead_experts = due.dead_experts;
  return w;
}

void HealthMonitor::ApplyWindow(HealthWindow w) {
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
  windows_.push_back(w);
  latest_ = std::move(w);
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

// ---- Snapshots -------------------------------------------------------------

namespace {

using internal::SnapshotReader;
using internal::SnapshotWriter;

// Bounds on strings and lists read back (far above anything written).
constexpr size_t kMaxText = size_t{1} << 20;
constexpr size_t kMaxWarnings = 4096;

void PutGammaFit(SnapshotWriter& out, const GammaFit& f) {
  out.PutI32(static_cast<int>(f.estimator));
  out.PutI32(f.num_experts);
  out.PutI32(f.top_k);
  out.PutI32(f.num_steps);
  for (double v : {f.sigma, f.tokens, f.assignments, f.dropped_fraction,
                   f.gamma_f, f.gamma_rho, f.gamma_l, f.se_f, f.bootstrap_se_f,
                   f.ci_low_f, f.ci_high_f, f.ci_level}) {
    out.PutDouble(v);
  }
  out.PutI32(f.bootstrap_replicates);
  out.PutI32(f.bootstrap_failed);
  for (double v : {f.log_likelihood, f.deviance, f.null_deviance, f.r2}) {
    out.PutDouble(v);
  }
  out.PutBool(f.at_lower_bound);
  out.PutBool(f.at_upper_bound);
  out.PutBool(f.converged);
  out.PutI32(f.mle_evaluations);
  out.PutI32(f.solver_iterations);
  out.PutDouble(f.solver_residual);
  const ClosedFormFit& c = f.closed_form;
  for (double v : {c.gamma_f, c.gamma_rho, c.intercept, c.r2, c.se_f, c.bias_f,
                   c.bootstrap_bias_f}) {
    out.PutDouble(v);
  }
  out.PutBool(c.small_counts);
  out.PutDouble(c.ci_low_f);
  out.PutDouble(c.ci_high_f);
  out.PutDouble(f.temperature);
  out.PutDouble(f.temperature_linearized);
  out.PutBool(f.weakly_identified);
  out.PutDouble(f.load_cv);
  out.PutDouble(f.sampling_cv);
  out.PutDouble(f.quality_sd);
  out.PutI32(f.zero_count_experts);
  out.PutBool(f.negative);
  out.PutBool(f.has_aux_loss);
  for (double v : {f.gamma_explicit_f, f.gamma_implicit_f, f.eff_over_explicit,
                   f.k_over_m, f.max_k_load, f.l1_in_sample, f.heldout_l1,
                   f.heldout_l1_floor, f.heldout_gamma_f}) {
    out.PutDouble(v);
  }
  out.PutDoubles(f.quality);
  out.PutDoubles(f.observed_load);
  out.PutDoubles(f.fitted_load);
  out.PutStrings(f.warnings);
}

GammaFit ReadGammaFit(SnapshotReader& in, int m) {
  GammaFit f;
  f.estimator = static_cast<QualityEstimator>(
      in.IntIn("gamma.estimator", 0, kNumQualityEstimators - 1));
  f.num_experts = in.I32("gamma.num_experts");
  f.top_k = in.I32("gamma.top_k");
  f.num_steps = in.I32("gamma.num_steps");
  for (double* v : {&f.sigma, &f.tokens, &f.assignments, &f.dropped_fraction,
                    &f.gamma_f, &f.gamma_rho, &f.gamma_l, &f.se_f,
                    &f.bootstrap_se_f, &f.ci_low_f, &f.ci_high_f, &f.ci_level}) {
    *v = in.Double("gamma");
  }
  f.bootstrap_replicates = in.I32("gamma.bootstrap_replicates");
  f.bootstrap_failed = in.I32("gamma.bootstrap_failed");
  for (double* v : {&f.log_likelihood, &f.deviance, &f.null_deviance, &f.r2}) {
    *v = in.Double("gamma");
  }
  f.at_lower_bound = in.Bool("gamma.at_lower_bound");
  f.at_upper_bound = in.Bool("gamma.at_upper_bound");
  f.converged = in.Bool("gamma.converged");
  f.mle_evaluations = in.I32("gamma.mle_evaluations");
  f.solver_iterations = in.I32("gamma.solver_iterations");
  f.solver_residual = in.Double("gamma.solver_residual");
  ClosedFormFit& c = f.closed_form;
  for (double* v : {&c.gamma_f, &c.gamma_rho, &c.intercept, &c.r2, &c.se_f,
                    &c.bias_f, &c.bootstrap_bias_f}) {
    *v = in.Double("gamma.closed_form");
  }
  c.small_counts = in.Bool("gamma.closed_form.small_counts");
  c.ci_low_f = in.Double("gamma.closed_form.ci_low_f");
  c.ci_high_f = in.Double("gamma.closed_form.ci_high_f");
  f.temperature = in.Double("gamma.temperature");
  f.temperature_linearized = in.Double("gamma.temperature_linearized");
  f.weakly_identified = in.Bool("gamma.weakly_identified");
  f.load_cv = in.Double("gamma.load_cv");
  f.sampling_cv = in.Double("gamma.sampling_cv");
  f.quality_sd = in.Double("gamma.quality_sd");
  f.zero_count_experts = in.I32("gamma.zero_count_experts");
  f.negative = in.Bool("gamma.negative");
  f.has_aux_loss = in.Bool("gamma.has_aux_loss");
  for (double* v : {&f.gamma_explicit_f, &f.gamma_implicit_f,
                    &f.eff_over_explicit, &f.k_over_m, &f.max_k_load,
                    &f.l1_in_sample, &f.heldout_l1, &f.heldout_l1_floor,
                    &f.heldout_gamma_f}) {
    *v = in.Double("gamma");
  }
  f.quality = in.Doubles("gamma.quality", m);
  f.observed_load = in.Doubles("gamma.observed_load", m);
  f.fitted_load = in.Doubles("gamma.fitted_load", m);
  f.warnings = in.Strings("gamma.warnings", kMaxWarnings, kMaxText);
  return f;
}

void PutWindow(SnapshotWriter& out, const HealthWindow& w) {
  out.PutI64(w.step);
  out.PutI32(w.layer);
  out.PutI32(w.steps);
  out.PutBool(w.gamma.has_value());
  if (w.gamma.has_value()) PutGammaFit(out, *w.gamma);
  out.PutString(w.gamma_status);
  out.PutDoubles(w.gamma_f_by_estimator);
  out.PutI32(static_cast<int>(w.phase));
  const ImbalanceMetrics& b = w.imbalance;
  out.PutI32(b.num_experts);
  for (double v : {b.total, b.max_over_mean, b.max_vio,
                   b.coefficient_of_variation, b.normalized_entropy}) {
    out.PutDouble(v);
  }
  out.PutBool(b.zero_load);
  out.PutI32s(w.dead_experts);
}

HealthWindow ReadWindow(SnapshotReader& in, int m) {
  HealthWindow w;
  w.step = in.I64("window.step");
  w.layer = in.I32("window.layer");
  w.steps = in.I32("window.steps");
  if (in.Bool("window.has_gamma")) w.gamma = ReadGammaFit(in, m);
  w.gamma_status = in.String("window.gamma_status", kMaxText);
  w.gamma_f_by_estimator =
      in.Doubles("window.gamma_f_by_estimator", kNumQualityEstimators);
  w.phase = static_cast<Phase>(
      in.IntIn("window.phase", 0, static_cast<int>(Phase::kRelaxation)));
  ImbalanceMetrics& b = w.imbalance;
  b.num_experts = in.I32("window.imbalance.num_experts");
  for (double* v : {&b.total, &b.max_over_mean, &b.max_vio,
                    &b.coefficient_of_variation, &b.normalized_entropy}) {
    *v = in.Double("window.imbalance");
  }
  b.zero_load = in.Bool("window.imbalance.zero_load");
  w.dead_experts = in.I32s("window.dead_experts", m);
  return w;
}

void PutEvent(SnapshotWriter& out, const HealthEvent& e) {
  out.PutI64(e.step);
  out.PutI32(e.layer);
  out.PutString(e.kind);
  out.PutI32(e.expert);
  out.PutString(e.from);
  out.PutString(e.to);
  out.PutString(e.detail);
}

HealthEvent ReadEvent(SnapshotReader& in) {
  HealthEvent e;
  e.step = in.I64("event.step");
  e.layer = in.I32("event.layer");
  e.kind = in.String("event.kind", kMaxText);
  e.expert = in.I32("event.expert");
  e.from = in.String("event.from", kMaxText);
  e.to = in.String("event.to", kMaxText);
  e.detail = in.String("event.detail", kMaxText);
  return e;
}

}  // namespace

void HealthMonitor::SaveTo(SnapshotWriter& out) const {
  using internal::SnapshotTag;
  out.PutI32(layer_);
  out.PutI32(m_);
  size_t section = out.BeginSection(SnapshotTag("DEAD"));
  dead_.SaveTo(out);
  out.EndSection(section);
  section = out.BeginSection(SnapshotTag("PHAS"));
  phase_.SaveTo(out);
  out.EndSection(section);
  // The window being accumulated.
  out.PutI32(window_.num_experts);
  out.PutDoubles(window_.tokens);
  out.PutDoubles(window_.counts);
  out.PutDoubles(window_.logit_mean);
  out.PutDoubles(window_.prob_mean);
  out.PutDoubles(window_.std_logit_mean);
  out.PutI64s(window_.step_ids);
  if (!counts_from_dead_) {
    out.PutDoubles(window_counts_);
  } else if (dead_.pending_steps() == window_.num_steps()) {
    out.PutDoubles(dead_.pending_counts());
  } else {
    out.PutDoubles(SumWindowRows());
  }
  out.PutBool(window_has_logits_);
  out.PutBool(window_has_probs_);
  out.PutBool(window_has_std_);
  out.PutI64(last_step_);
  out.PutU64(events_.size());
  for (const HealthEvent& e : events_) PutEvent(out, e);
  out.PutU64(windows_.size());
  for (const HealthWindow& w : windows_) PutWindow(out, w);
  out.PutBool(latest_.has_value());
  if (latest_.has_value()) PutWindow(out, *latest_);
}

void HealthMonitor::LoadFrom(SnapshotReader& in) {
  using internal::SnapshotTag;
  const int layer = in.I32("layer");
  const int m = in.I32("num_experts");
  if (in.ok() && (layer != layer_ || m != m_)) {
    in.Fail("shape", absl::StrCat("saved for layer ", layer, " with ", m,
                                  " experts, this monitor is layer ", layer_,
                                  " with ", m_));
    return;
  }
  {
    SnapshotReader dead = in.Section(SnapshotTag("DEAD"), "dead experts");
    dead_.LoadFrom(dead);
    dead.ExpectEnd();
  }
  {
    SnapshotReader phase = in.Section(SnapshotTag("PHAS"), "phase");
    phase_.LoadFrom(phase);
    phase.ExpectEnd();
  }
  // A window holds fewer than window_steps steps (it closes at that many).
  const size_t max_steps = static_cast<size_t>(options_.window_steps);
  const size_t max_values = max_steps * static_cast<size_t>(m_);
  GammaWindow window;
  window.num_experts = in.I32("window.num_experts");
  window.tokens = in.Doubles("window.tokens", max_steps);
  window.counts = in.Doubles("window.counts", max_values);
  window.logit_mean = in.Doubles("window.logit_mean", max_values);
  window.prob_mean = in.Doubles("window.prob_mean", max_values);
  window.std_logit_mean = in.Doubles("window.std_logit_mean", max_values);
  window.step_ids = in.I64s("window.step_ids", max_steps);
  std::vector<double> window_counts = in.Doubles("window_counts", m_);
  const bool has_logits = in.Bool("window_has_logits");
  const bool has_probs = in.Bool("window_has_probs");
  const bool has_std = in.Bool("window_has_std");
  const int64_t last_step = in.I64("last_step");
  std::vector<HealthEvent> events;
  const size_t num_events = in.Count("events", size_t{1} << 20, 8);
  for (size_t i = 0; i < num_events && in.ok(); ++i) events.push_back(ReadEvent(in));
  std::vector<HealthWindow> windows;
  const size_t num_windows = in.Count("windows", size_t{1} << 20, 8);
  for (size_t i = 0; i < num_windows && in.ok(); ++i) {
    windows.push_back(ReadWindow(in, m_));
  }
  std::optional<HealthWindow> latest;
  if (in.Bool("has_latest")) latest = ReadWindow(in, m_);
  if (!in.ok()) return;
  const size_t t = window.tokens.size();
  const size_t values = t * static_cast<size_t>(m_);
  // An optional input stops being appended at the first step without it, so
  // it holds whole steps, at most t of them.
  auto optional_ok = [&](const std::vector<double>& v) {
    return v.size() <= values && v.size() % static_cast<size_t>(m_) == 0;
  };
  if (window.num_experts != m_ || t >= max_steps || window.counts.size() != values ||
      !optional_ok(window.logit_mean) || !optional_ok(window.prob_mean) ||
      !optional_ok(window.std_logit_mean) || window.step_ids.size() != t ||
      window_counts.size() != static_cast<size_t>(m_)) {
    in.Fail("window", absl::StrCat("inconsistent window of ", t, " steps"));
    return;
  }
  window_ = std::move(window);
  // The dead-expert tracker's sums stand for the window's when they are the
  // same steps and the same numbers.
  counts_from_dead_ =
      options_.dead.window_steps == options_.window_steps &&
      dead_.pending_steps() == window_.num_steps() &&
      std::equal(window_counts.begin(), window_counts.end(),
                 dead_.pending_counts().begin(), dead_.pending_counts().end());
  window_counts_ = std::move(window_counts);
  window_has_logits_ = has_logits;
  window_has_probs_ = has_probs;
  window_has_std_ = has_std;
  last_step_ = last_step;
  events_ = std::move(events);
  windows_ = std::move(windows);
  latest_ = std::move(latest);
}

}  // namespace moecast
