#include "engine/health/ecology/phase.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moecast {
namespace {

// Standard normal quantile: Acklam's rational approximation (relative error
// 1.15e-9) refined by one Halley step on erfc.
double NormalQuantile(double p) {
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                             -2.759285104469687e+02, 1.383577518672690e+02,
                             -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                             -1.556989798598866e+02, 6.680131188771972e+01,
                             -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                             -2.400758277161838e+00, -2.549732539343734e+00,
                             4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                             2.445134137142996e+00, 3.754408661907416e+00};
  const double lo = 0.02425;
  double x;
  if (p < lo) {
    const double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= 1 - lo) {
    const double q = p - 0.5;
    const double r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) *
        q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const double q = std::sqrt(-2 * std::log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
  const double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

// Two-sided interval's normal quantile for a confidence level.
double TwoSidedZ(double level) { return NormalQuantile(0.5 + level / 2); }

bool UsualOrder(Phase from, Phase to) {
  if (from == Phase::kUnknown) return true;
  auto rank = [](Phase p) {
    switch (p) {
      case Phase::kSurge:
        return 1;
      case Phase::kStabilization:
        return 2;
      case Phase::kRelaxation:
        return 3;
      case Phase::kUnknown:
        return 0;
    }
    return 0;
  };
  return rank(to) > rank(from);
}

}  // namespace

absl::string_view PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kUnknown:
      return "unknown";
    case Phase::kSurge:
      return "surge";
    case Phase::kStabilization:
      return "stabilization";
    case Phase::kRelaxation:
      return "relaxation";
  }
  return "invalid";
}

absl::string_view TrendName(Trend trend) {
  switch (trend) {
    case Trend::kRising:
      return "rising";
    case Trend::kFlat:
      return "flat";
    case Trend::kFalling:
      return "falling";
    case Trend::kUndecided:
      return "undecided";
  }
  return "invalid";
}

absl::Status ValidatePhaseOptions(const PhaseOptions& o) {
  if (o.fit_windows < 3 || o.fit_windows > 10000) {
    return absl::InvalidArgumentError(
        absl::StrCat("phase: fit_windows = ", o.fit_windows,
                     " must be in [3, 10000] (a slope CI needs n - 2 >= 1)"));
  }
  if (o.confirm_windows < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "phase: confirm_windows = ", o.confirm_windows, " must be >= 1"));
  }
  if (o.min_windows_in_phase < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("phase: min_windows_in_phase = ", o.min_windows_in_phase,
                     " must be >= 1"));
  }
  if (!(o.point_ci_level > 0 && o.point_ci_level < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "phase: point_ci_level = ", o.point_ci_level, " must be in (0, 1)"));
  }
  if (!(o.slope_ci_level > 0 && o.slope_ci_level < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "phase: slope_ci_level = ", o.slope_ci_level, " must be in (0, 1)"));
  }
  if (!(o.flat_ci_level > 0 && o.flat_ci_level <= o.slope_ci_level)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "phase: flat_ci_level = ", o.flat_ci_level,
        " must be in (0, slope_ci_level = ", o.slope_ci_level, "]"));
  }
  if (!(o.min_relative_se >= 0 && o.min_relative_se <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "phase: min_relative_se = ", o.min_relative_se, " must be in [0, 1]"));
  }
  return absl::OkStatus();
}

PhaseTracker::PhaseTracker(const PhaseOptions& options)
    : options_(options),
      z_point_(TwoSidedZ(options.point_ci_level)),
      z_slope_(TwoSidedZ(options.slope_ci_level)),
      z_flat_(TwoSidedZ(options.flat_ci_level)) {}

absl::StatusOr<PhaseTracker> PhaseTracker::Create(const PhaseOptions& options) {
  absl::Status s = ValidatePhaseOptions(options);
  if (!s.ok()) return s;
  return PhaseTracker(options);
}

SlopeEstimate PhaseTracker::Fit() const {
  const int n = static_cast<int>(recent_.size());
  std::vector<double> se(n);
  for (int i = 0; i < n; ++i) {
    se[i] = (recent_[i].ci_hi - recent_[i].ci_lo) / (2 * z_point_);
  }
  std::vector<double> sorted = se;
  std::nth_element(sorted.begin(), sorted.begin() + n / 2, sorted.end());
  double median = sorted[n / 2];
  if (n % 2 == 0) {
    median =
        (median + *std::max_element(sorted.begin(), sorted.begin() + n / 2)) /
        2;
  }
  const bool weighted = median > 0;
  std::vector<double> w(n, 1.0);
  if (weighted) {
    const double floor = options_.min_relative_se * median;
    for (int i = 0; i < n; ++i) {
      const double s = std::max(se[i], floor);
      // s = 0 only with min_relative_se = 0: give such a point the weight of
      // the narrowest positive CI rather than an infinite one.
      w[i] = s > 0 ? 1 / (s * s) : -1;
    }
    double wmax = 0;
    for (double v : w) wmax = std::max(wmax, v);
    for (double& v : w) {
      if (v < 0) v = wmax;
    }
  }
  // Centre x on the newest step so that large step numbers lose no digits.
  const double x0 = static_cast<double>(recent_.back().step);
  double sw = 0, sx = 0, sy = 0;
  for (int i = 0; i < n; ++i) {
    const double x = static_cast<double>(recent_[i].step) - x0;
    sw += w[i];
    sx += w[i] * x;
    sy += w[i] * recent_[i].gamma;
  }
  const double xm = sx / sw;
  const double ym = sy / sw;
  double sxx = 0, sxy = 0;
  for (int i = 0; i < n; ++i) {
    const double dx = static_cast<double>(recent_[i].step) - x0 - xm;
    sxx += w[i] * dx * dx;
    sxy += w[i] * dx * (recent_[i].gamma - ym);
  }
  SlopeEstimate r;
  r.points = n;
  r.slope = sxy / sxx;  // sxx > 0: steps are distinct
  double chi2 = 0;
  for (int i = 0; i < n; ++i) {
    const double dx = static_cast<double>(recent_[i].step) - x0 - xm;
    const double res = recent_[i].gamma - ym - r.slope * dx;
    chi2 += w[i] * res * res;
  }
  const double reduced = chi2 / (n - 2);
  double var_b;
  if (weighted) {
    r.scale_factor = std::sqrt(std::max(1.0, reduced));
    var_b = r.scale_factor * r.scale_factor / sxx;
  } else {
    r.scale_factor = 1;
    var_b = reduced / sxx;  // OLS with the residual variance
  }
  r.standard_error = std::sqrt(var_b);
  r.lo = r.slope - z_slope_ * r.standard_error;
  r.hi = r.slope + z_slope_ * r.standard_error;
  r.flat_lo = r.slope - z_flat_ * r.standard_error;
  r.flat_hi = r.slope + z_flat_ * r.standard_error;
  if (r.lo > 0) {
    r.trend = Trend::kRising;
  } else if (r.hi < 0) {
    r.trend = Trend::kFalling;
  } else if (r.flat_lo <= 0 && r.flat_hi >= 0) {
    r.trend = Trend::kFlat;
  } else {
    r.trend = Trend::kUndecided;
  }
  return r;
}

bool PhaseTracker::SurgeEvidence() const {
  if (!reference_.has_value() || !best_lo_after_reference_.has_value()) {
    return false;
  }
  const double bar =
      options_.surge_needs_disjoint_ci ? reference_->ci_hi : reference_->gamma;
  return *best_lo_after_reference_ > bar;
}

absl::StatusOr<std::optional<PhaseChange>> PhaseTracker::Observe(
    const GammaPoint& p) {
  if (!std::isfinite(p.gamma) || !std::isfinite(p.ci_lo) ||
      !std::isfinite(p.ci_hi)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "phase: window at step ", p.step, " has gamma = ", p.gamma, ", CI [",
        p.ci_lo, ", ", p.ci_hi, "]; all must be finite"));
  }
  if (p.ci_lo > p.ci_hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("phase: window at step ", p.step, " has ci_lo = ", p.ci_lo,
                     " > ci_hi = ", p.ci_hi));
  }
  if (!recent_.empty() && p.step <= recent_.back().step) {
    return absl::InvalidArgumentError(absl::StrCat(
        "phase: window at step ", p.step,
        " does not follow the last window, at step ", recent_.back().step));
  }

  const int64_t index = windows_++;
  if (!start_.has_value()) {
    start_ = p;
    phase_since_step_ = p.step;
    reference_ = p;
  } else {
    // Track the rise's reference (fixed at the start while unknown, the
    // trough since the phase began otherwise) and the best evidence above it.
    if (phase_ != Phase::kUnknown && p.gamma < reference_->gamma) {
      reference_ = p;
      best_lo_after_reference_.reset();
    } else if (!best_lo_after_reference_.has_value() ||
               p.ci_lo > *best_lo_after_reference_) {
      best_lo_after_reference_ = p.ci_lo;
    }
  }
  if (!peak_.has_value() || p.gamma > peak_->gamma) peak_ = p;
  recent_.push_back(p);
  if (static_cast<int>(recent_.size()) > options_.fit_windows) {
    recent_.pop_front();
  }
  if (static_cast<int>(recent_.size()) < options_.fit_windows) {
    return std::optional<PhaseChange>();
  }

  slope_ = Fit();
  Phase c = Phase::kUnknown;  // no candidate
  switch (slope_->trend) {
    case Trend::kFlat:
      c = Phase::kStabilization;
      break;
    case Trend::kFalling:
      c = Phase::kRelaxation;
      break;
    case Trend::kRising:
      if (SurgeEvidence()) c = Phase::kSurge;
      break;
    case Trend::kUndecided:
      break;
  }
  // A window that supports the current phase ends the streak; one without a
  // candidate (undecided slope, or a rise without surge evidence) leaves it
  // as it is; one with another candidate starts a new streak.
  if (c == Phase::kUnknown) {
    // no evidence either way
  } else if (c == phase_) {
    candidate_ = Phase::kUnknown;
    candidate_streak_ = 0;
  } else if (c == candidate_) {
    ++candidate_streak_;
  } else {
    candidate_ = c;
    candidate_streak_ = 1;
    candidate_since_step_ = p.step;
  }
  const bool dwelt =
      phase_ == Phase::kUnknown ||
      index - phase_since_window_ >= options_.min_windows_in_phase;
  if (candidate_ == Phase::kUnknown ||
      candidate_streak_ < options_.confirm_windows || !dwelt) {
    return std::optional<PhaseChange>();
  }
  PhaseChange change;
  change.step = p.step;
  change.window_index = index;
  change.candidate_since_step = candidate_since_step_;
  change.from = phase_;
  change.to = candidate_;
  change.slope = *slope_;
  change.usual_order = UsualOrder(phase_, candidate_);
  phase_ = candidate_;
  phase_since_step_ = p.step;
  phase_since_window_ = index;
  candidate_ = Phase::kUnknown;
  candidate_streak_ = 0;
  reference_ = p;  // a new rise is measured from the trough after this
  best_lo_after_reference_.reset();
  return std::optional<PhaseChange>(change);
}

namespace {

void PutPoint(internal::SnapshotWriter& out, const GammaPoint& p) {
  out.PutI64(p.step);
  out.PutDouble(p.gamma);
  out.PutDouble(p.ci_lo);
  out.PutDouble(p.ci_hi);
}

GammaPoint ReadPoint(internal::SnapshotReader& in, absl::string_view field) {
  GammaPoint p;
  p.step = in.I64(field);
  p.gamma = in.Double(field);
  p.ci_lo = in.Double(field);
  p.ci_hi = in.Double(field);
  return p;
}

void PutOptionalPoint(internal::SnapshotWriter& out,
                      const std::optional<GammaPoint>& p) {
  out.PutBool(p.has_value());
  if (p.has_value()) PutPoint(out, *p);
}

std::optional<GammaPoint> ReadOptionalPoint(internal::SnapshotReader& in,
                                            absl::string_view field) {
  if (!in.Bool(field)) return std::nullopt;
  return ReadPoint(in, field);
}

Phase ReadPhase(internal::SnapshotReader& in, absl::string_view field) {
  const int v = in.IntIn(field, 0, static_cast<int>(Phase::kRelaxation));
  return static_cast<Phase>(v);
}

}  // namespace

void PhaseTracker::SaveTo(internal::SnapshotWriter& out) const {
  out.PutU64(recent_.size());
  for (const GammaPoint& p : recent_) PutPoint(out, p);
  out.PutI64(windows_);
  PutOptionalPoint(out, start_);
  PutOptionalPoint(out, peak_);
  PutOptionalPoint(out, reference_);
  out.PutOptionalDouble(best_lo_after_reference_);
  out.PutI32(static_cast<int>(phase_));
  out.PutI64(phase_since_step_);
  out.PutI64(phase_since_window_);
  out.PutI32(static_cast<int>(candidate_));
  out.PutI32(candidate_streak_);
  out.PutI64(candidate_since_step_);
  out.PutBool(slope_.has_value());
  if (slope_.has_value()) {
    const SlopeEstimate& s = *slope_;
    out.PutDouble(s.slope);
    out.PutDouble(s.lo);
    out.PutDouble(s.hi);
    out.PutDouble(s.standard_error);
    out.PutDouble(s.flat_lo);
    out.PutDouble(s.flat_hi);
    out.PutDouble(s.scale_factor);
    out.PutI32(s.points);
    out.PutI32(static_cast<int>(s.trend));
  }
}

void PhaseTracker::LoadFrom(internal::SnapshotReader& in) {
  const size_t n = in.Count("recent", static_cast<size_t>(options_.fit_windows), 32);
  std::deque<GammaPoint> recent;
  for (size_t i = 0; i < n && in.ok(); ++i) recent.push_back(ReadPoint(in, "recent"));
  const int64_t windows = in.I64In("windows", 0, int64_t{1} << 62);
  std::optional<GammaPoint> start = ReadOptionalPoint(in, "start");
  std::optional<GammaPoint> peak = ReadOptionalPoint(in, "peak");
  std::optional<GammaPoint> reference = ReadOptionalPoint(in, "reference");
  std::optional<double> best_lo = in.OptionalDouble("best_lo_after_reference");
  const Phase phase = ReadPhase(in, "phase");
  const int64_t phase_since_step = in.I64("phase_since_step");
  const int64_t phase_since_window = in.I64("phase_since_window");
  const Phase candidate = ReadPhase(in, "candidate");
  const int candidate_streak = in.IntIn("candidate_streak", 0, 1 << 30);
  const int64_t candidate_since_step = in.I64("candidate_since_step");
  std::optional<SlopeEstimate> slope;
  if (in.Bool("has_slope")) {
    SlopeEstimate s;
    s.slope = in.Double("slope");
    s.lo = in.Double("slope.lo");
    s.hi = in.Double("slope.hi");
    s.standard_error = in.Double("slope.standard_error");
    s.flat_lo = in.Double("slope.flat_lo");
    s.flat_hi = in.Double("slope.flat_hi");
    s.scale_factor = in.Double("slope.scale_factor");
    s.points = in.I32("slope.points");
    s.trend = static_cast<Trend>(
        in.IntIn("slope.trend", 0, static_cast<int>(Trend::kUndecided)));
    slope = s;
  }
  if (!in.ok()) return;
  if (windows > 0 && (!start.has_value() || !reference.has_value() ||
                      !peak.has_value() || recent.empty())) {
    in.Fail("start", "windows were seen but the first window is missing");
    return;
  }
  recent_ = std::move(recent);
  windows_ = windows;
  start_ = start;
  peak_ = peak;
  reference_ = reference;
  best_lo_after_reference_ = best_lo;
  phase_ = phase;
  phase_since_step_ = phase_since_step;
  phase_since_window_ = phase_since_window;
  candidate_ = candidate;
  candidate_streak_ = candidate_streak;
  candidate_since_step_ = candidate_since_step;
  slope_ = slope;
}

}  // namespace moecast
