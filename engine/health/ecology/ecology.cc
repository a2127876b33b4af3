#include "engine/health/ecology/ecology.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moecast {

// ---------------------------------------------------------------------------
// E

absl::string_view EKindName(EKind kind) {
  switch (kind) {
    case EKind::kFinite:
      return "finite";
    case EKind::kUnbounded:
      return "unbounded";
    case EKind::kIndeterminate:
      return "indeterminate";
    case EKind::kMissing:
      return "missing";
  }
  return "unknown";
}

namespace {

struct EInput {
  const char* symbol;
  const char* name;
  std::optional<double> value;
};

}  // namespace

absl::StatusOr<EParameter> ComputeE(std::optional<double> temperature,
                                    std::optional<double> entropy_weight,
                                    std::optional<double> oracle_weight,
                                    std::optional<double> balance_weight,
                                    double warn_below) {
  if (!std::isfinite(warn_below) || warn_below < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "E: warn_below = ", warn_below, " must be finite and >= 0"));
  }
  const EInput inputs[4] = {
      {"T", "router temperature", temperature},
      {"H", "routing-entropy weight", entropy_weight},
      {"O", "oracle weight", oracle_weight},
      {"B", "balance weight", balance_weight},
  };
  EParameter e;
  e.warn_below = warn_below;
  for (const EInput& in : inputs) {
    if (!in.value.has_value()) {
      e.missing.push_back(in.symbol);
      continue;
    }
    const double v = *in.value;
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "E: ", in.symbol, " (", in.name, ") = ", v, " must be finite"));
    }
    if (v < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "E: ", in.symbol, " (", in.name, ") = ", v, " must be >= 0"));
    }
  }
  if (!e.missing.empty()) {
    e.kind = EKind::kMissing;
    e.message = absl::StrCat(
        "E = T*H/(O+B) is unknown: ", absl::StrJoin(e.missing, ", "),
        e.missing.size() == 1 ? " is" : " are", " not declared");
    return e;
  }
  const double th = *temperature * *entropy_weight;
  const double ob = *oracle_weight + *balance_weight;
  if (ob == 0) {
    if (th > 0) {
      e.kind = EKind::kUnbounded;
      e.message = absl::StrCat(
          "E is unbounded: O+B = 0 (no oracle or balance "
          "weight) with T*H = ",
          th);
    } else {
      e.kind = EKind::kIndeterminate;
      e.message =
          "E is indeterminate (0/0): T*H = 0 and O+B = 0; the E >= 0.5 "
          "criterion says nothing about this router";
    }
    return e;
  }
  const double value = th / ob;
  if (!std::isfinite(value)) {  // T*H overflowed
    e.kind = EKind::kUnbounded;
    e.message = absl::StrCat("E is unbounded: T*H overflows (O+B = ", ob, ")");
    return e;
  }
  e.kind = EKind::kFinite;
  e.value = value;
  e.below_threshold = value < warn_below;
  if (e.below_threshold) {
    e.message = absl::StrCat("E = ", value, " (T*H = ", th, ", O+B = ", ob,
                             ") is below ", warn_below,
                             ": Zhang (2026) saw zero dead experts only with "
                             "E >= 0.5; expect dead experts");
  } else {
    e.message = absl::StrCat("E = ", value, " (T*H = ", th, ", O+B = ", ob,
                             ") is at or above ", warn_below);
  }
  return e;
}

// ---------------------------------------------------------------------------
// Dead experts

absl::string_view SparseWindowPolicyName(SparseWindowPolicy policy) {
  return policy == SparseWindowPolicy::kReset ? "reset" : "skip";
}

absl::string_view DeadExpertEventTypeName(DeadExpertEventType type) {
  return type == DeadExpertEventType::kDeath ? "death" : "revival";
}

absl::Status ValidateDeadExpertOptions(const DeadExpertOptions& o) {
  if (!(o.alpha_dead > 0 && o.alpha_dead < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dead experts: alpha_dead = ", o.alpha_dead, " must be in (0, 1)"));
  }
  if (o.window_steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dead experts: window_steps = ", o.window_steps, " must be >= 1"));
  }
  if (o.dead_windows < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dead experts: dead_windows = ", o.dead_windows, " must be >= 1"));
  }
  if (!std::isfinite(o.min_assignments_per_expert_factor) ||
      o.min_assignments_per_expert_factor < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dead experts: min_assignments_per_expert_factor = ",
        o.min_assignments_per_expert_factor, " must be finite and >= 0"));
  }
  if (!std::isfinite(o.revive_factor) || o.revive_factor < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("dead experts: revive_factor = ", o.revive_factor,
                     " must be finite and >= 1"));
  }
  if (o.revive_windows < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dead experts: revive_windows = ", o.revive_windows, " must be >= 1"));
  }
  if (o.sparse_windows != SparseWindowPolicy::kReset &&
      o.sparse_windows != SparseWindowPolicy::kSkip) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dead experts: sparse_windows = ", static_cast<int>(o.sparse_windows),
        " is not a policy"));
  }
  return absl::OkStatus();
}

DeadExpertTracker::DeadExpertTracker(int num_experts,
                                     const DeadExpertOptions& options)
    : m_(num_experts),
      options_(options),
      threshold_(options.alpha_dead / num_experts),
      pending_(num_experts, 0.0),
      dead_(num_experts, false),
      streak_(num_experts, 0),
      streak_start_(num_experts, 0) {}

absl::StatusOr<DeadExpertTracker> DeadExpertTracker::Create(
    int num_experts, const DeadExpertOptions& options) {
  if (num_experts < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dead experts: num_experts = ", num_experts, " must be >= 1"));
  }
  absl::Status s = ValidateDeadExpertOptions(options);
  if (!s.ok()) return s;
  return DeadExpertTracker(num_experts, options);
}

absl::Status DeadExpertTracker::CheckCounts(
    int64_t step, absl::Span<const double> counts) const {
  if (static_cast<int>(counts.size()) != m_) {
    return absl::InvalidArgumentError(absl::StrCat("dead experts: step ", step,
                                                   " has ", counts.size(),
                                                   " counts, expected ", m_));
  }
  if (last_step_.has_value() && step <= *last_step_) {
    return absl::InvalidArgumentError(
        absl::StrCat("dead experts: step ", step,
                     " does not follow the last step seen, ", *last_step_));
  }
  // One branch-free pass (raw pointer: Span's hardened [] blocks
  // vectorising); the loop below only names the first bad value.
  const double* c = counts.data();
  int bad = 0;
  for (int e = 0; e < m_; ++e) {
    // Finite and >= 0: NaN fails the comparison, +inf the bound.
    bad |= !(c[e] >= 0 && c[e] <= std::numeric_limits<double>::max());
  }
  if (bad == 0) return absl::OkStatus();
  for (int e = 0; e < m_; ++e) {
    if (!std::isfinite(counts[e]) || counts[e] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("dead experts: step ", step, " expert ", e,
                       " count = ", counts[e], " must be finite and >= 0"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<DeadExpertEvent>> DeadExpertTracker::ObserveStep(
    int64_t step, absl::Span<const double> counts) {
  absl::Status s = CheckCounts(step, counts);
  if (!s.ok()) return s;
  last_step_ = step;
  for (int e = 0; e < m_; ++e) pending_[e] += counts[e];
  if (++pending_steps_ < options_.window_steps) {
    return std::vector<DeadExpertEvent>();
  }
  // The window's sums stay readable (last_window_counts) until the next
  // window closes; the buffers swap instead of being allocated.
  last_sums_.swap(pending_);
  pending_.assign(m_, 0.0);
  const int steps = pending_steps_;
  pending_steps_ = 0;
  return Evaluate(step, last_sums_, steps);
}

absl::StatusOr<std::vector<DeadExpertEvent>> DeadExpertTracker::ObserveWindow(
    int64_t last_step, absl::Span<const double> counts, int steps) {
  if (pending_steps_ > 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "dead experts: ", pending_steps_,
        " steps of a partial window are pending; windows and single steps "
        "cannot be mixed within a window"));
  }
  if (steps < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("dead experts: window ending at step ", last_step,
                     " spans ", steps, " steps, must be >= 1"));
  }
  absl::Status s = CheckCounts(last_step, counts);
  if (!s.ok()) return s;
  last_step_ = last_step;
  return Evaluate(last_step, std::vector<double>(counts.begin(), counts.end()),
                  steps);
}

std::vector<DeadExpertEvent> DeadExpertTracker::Evaluate(
    int64_t last_step, const std::vector<double>& sums, int steps) {
  ++windows_;
  DeadExpertWindow w;
  w.last_step = last_step;
  w.steps = steps;
  for (double c : sums) w.assignments += c;
  w.qualifying =
      w.assignments > 0 &&
      w.assignments >= options_.min_assignments_per_expert_factor * m_;
  if (w.assignments > 0) {
    w.shares.resize(m_);
    for (int e = 0; e < m_; ++e) w.shares[e] = sums[e] / w.assignments;
  }
  std::vector<DeadExpertEvent> events;
  if (!w.qualifying) {
    if (options_.sparse_windows == SparseWindowPolicy::kReset) {
      std::fill(streak_.begin(), streak_.end(), 0);
    }
    last_window_ = std::move(w);
    return events;
  }
  ++qualifying_windows_;
  const double revive = revival_threshold();
  for (int e = 0; e < m_; ++e) {
    const double share = w.shares[e];
    // An alive expert counts windows below the death threshold; a dead one
    // counts windows above the revival threshold. Anything else breaks the
    // streak.
    const bool toward = dead_[e] ? share > revive : share < threshold_;
    if (!toward) {
      streak_[e] = 0;
      continue;
    }
    if (streak_[e] == 0) streak_start_[e] = last_step;
    ++streak_[e];
    const int needed =
        dead_[e] ? options_.revive_windows : options_.dead_windows;
    if (streak_[e] < needed) continue;
    DeadExpertEvent ev;
    ev.type =
        dead_[e] ? DeadExpertEventType::kRevival : DeadExpertEventType::kDeath;
    ev.step = last_step;
    ev.expert = e;
    ev.share = share;
    ev.threshold = dead_[e] ? revive : threshold_;
    ev.streak_start_step = streak_start_[e];
    events.push_back(ev);
    dead_[e] = !dead_[e];
    streak_[e] = 0;
  }
  last_window_ = std::move(w);
  return events;
}

std::vector<int> DeadExpertTracker::dead_experts() const {
  std::vector<int> out;
  for (int e = 0; e < m_; ++e) {
    if (dead_[e]) out.push_back(e);
  }
  return out;
}

int DeadExpertTracker::num_dead() const {
  return static_cast<int>(std::count(dead_.begin(), dead_.end(), true));
}

void DeadExpertTracker::SaveTo(internal::SnapshotWriter& out) const {
  out.PutI32(m_);
  out.PutDoubles(pending_);
  out.PutI32(pending_steps_);
  out.PutOptionalI64(last_step_);
  std::vector<uint32_t> dead(dead_.begin(), dead_.end());
  out.PutU32s(dead);
  out.PutI32s(streak_);
  out.PutI64s(streak_start_);
  out.PutI64(windows_);
  out.PutI64(qualifying_windows_);
  out.PutBool(last_window_.has_value());
  if (last_window_.has_value()) {
    out.PutI64(last_window_->last_step);
    out.PutI32(last_window_->steps);
    out.PutDouble(last_window_->assignments);
    out.PutBool(last_window_->qualifying);
    out.PutDoubles(last_window_->shares);
  }
}

void DeadExpertTracker::LoadFrom(internal::SnapshotReader& in) {
  const int m = in.I32("num_experts");
  if (in.ok() && m != m_) {
    in.Fail("num_experts", absl::StrCat("saved for ", m, ", this tracker has ", m_));
    return;
  }
  std::vector<double> pending = in.Doubles("pending", m_);
  const int pending_steps = in.IntIn("pending_steps", 0, options_.window_steps - 1);
  const std::optional<int64_t> last_step = in.OptionalI64("last_step");
  const std::vector<uint32_t> dead = in.U32s("dead", m_);
  std::vector<int> streak = in.I32s("streak", m_);
  std::vector<int64_t> streak_start = in.I64s("streak_start", m_);
  const int64_t windows = in.I64("windows");
  const int64_t qualifying = in.I64("qualifying_windows");
  std::optional<DeadExpertWindow> last_window;
  if (in.Bool("has_last_window")) {
    DeadExpertWindow w;
    w.last_step = in.I64("last_window.last_step");
    w.steps = in.I32("last_window.steps");
    w.assignments = in.Double("last_window.assignments");
    w.qualifying = in.Bool("last_window.qualifying");
    w.shares = in.Doubles("last_window.shares", m_);
    last_window = std::move(w);
  }
  if (!in.ok()) return;
  const size_t n = static_cast<size_t>(m_);
  if (pending.size() != n || dead.size() != n || streak.size() != n ||
      streak_start.size() != n) {
    in.Fail("experts", absl::StrCat("per-expert arrays do not all hold ", m_,
                                    " values"));
    return;
  }
  pending_ = std::move(pending);
  pending_steps_ = pending_steps;
  last_sums_.clear();
  last_step_ = last_step;
  for (size_t e = 0; e < n; ++e) dead_[e] = dead[e] != 0;
  streak_ = std::move(streak);
  streak_start_ = std::move(streak_start);
  windows_ = windows;
  qualifying_windows_ = qualifying;
  last_window_ = std::move(last_window);
}

// ---------------------------------------------------------------------------
// Imbalance

absl::StatusOr<ImbalanceMetrics> Imbalance(absl::Span<const double> loads) {
  if (loads.empty()) {
    return absl::InvalidArgumentError("imbalance: no loads (M = 0)");
  }
  const int m = static_cast<int>(loads.size());
  ImbalanceMetrics r;
  r.num_experts = m;
  double max = 0;
  for (int e = 0; e < m; ++e) {
    if (!std::isfinite(loads[e]) || loads[e] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("imbalance: load of expert ", e, " = ", loads[e],
                       " must be finite and >= 0"));
    }
    r.total += loads[e];
    max = std::max(max, loads[e]);
  }
  if (r.total == 0) {
    r.zero_load = true;
    return r;  // the balanced values (1, 0, 0, 1)
  }
  const double mean = r.total / m;
  r.max_over_mean = max / mean;
  r.max_vio = r.max_over_mean - 1;
  double ss = 0;
  double h = 0;
  for (int e = 0; e < m; ++e) {
    const double d = loads[e] - mean;
    ss += d * d;
    const double p = loads[e] / r.total;
    if (p > 0) h -= p * std::log(p);
  }
  r.coefficient_of_variation = std::sqrt(ss / m) / mean;
  r.normalized_entropy = m == 1 ? 1.0 : h / std::log(static_cast<double>(m));
  if (m == 1) {  // exact values, free of rounding in max / mean
    r.max_over_mean = 1;
    r.max_vio = 0;
    r.coefficient_of_variation = 0;
  }
  return r;
}

}  // namespace moecast
