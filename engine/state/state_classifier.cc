#include "engine/state/state_classifier.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/internal/cpu_dispatch.h"

namespace moecast {
namespace {

// Population variance from running sums, clamped at 0 against rounding.
double Variance(double sum, double sum_sq, int n) {
  if (n < 2) return 0;
  const double v = (sum_sq - sum * sum / n) / (n - 1);
  return v > 0 ? v : 0;
}

constexpr double kTiny = 1e-300;

// The per-step loops over experts, compiled for AVX2 and the baseline
// (cpu_dispatch.h); one pass each.

// Removes the oldest step (and its difference with the next) from the sums.
MOECAST_AVX2_CLONES void DropOldest(const float* __restrict__ oldest,
                                    const float* __restrict__ second, int m,
                                    double* __restrict__ sum,
                                    double* __restrict__ sum_sq,
                                    double* __restrict__ sum_diff_sq) {
  for (int e = 0; e < m; ++e) {
    const double o = oldest[e];
    const double d = static_cast<double>(second[e]) - o;
    sum[e] -= o;
    sum_sq[e] -= o * o;
    sum_diff_sq[e] -= d * d;
  }
}

// Adds a step (stored as floats in `slot`) to the sums; `newest`, the step
// before it, may be null.
MOECAST_AVX2_CLONES void AddNewest(const double* __restrict__ in,
                                   const float* __restrict__ newest, int m,
                                   float* __restrict__ slot,
                                   double* __restrict__ sum,
                                   double* __restrict__ sum_sq,
                                   double* __restrict__ sum_diff_sq) {
  if (newest == nullptr) {
    for (int e = 0; e < m; ++e) {
      const float x = static_cast<float>(in[e]);
      const double xd = x;
      sum[e] += xd;
      sum_sq[e] += xd * xd;
      slot[e] = x;
    }
    return;
  }
  for (int e = 0; e < m; ++e) {
    const float x = static_cast<float>(in[e]);
    const double xd = x;
    const double d = xd - newest[e];
    sum[e] += xd;
    sum_sq[e] += xd * xd;
    sum_diff_sq[e] += d * d;
    slot[e] = x;
  }
}

// DropOldest then AddNewest in one pass, for a full window: `slot` holds
// the oldest step (it is overwritten with the new one), `second` the step
// after it and `newest` the step before the new one. Per expert the same
// operations in the same order as the two passes, so the same sums.
MOECAST_AVX2_CLONES void ReplaceOldest(const double* __restrict__ in,
                                       const float* __restrict__ second,
                                       const float* __restrict__ newest, int m,
                                       float* __restrict__ slot,
                                       double* __restrict__ sum,
                                       double* __restrict__ sum_sq,
                                       double* __restrict__ sum_diff_sq) {
  for (int e = 0; e < m; ++e) {
    const double o = slot[e];
    const double d_old = static_cast<double>(second[e]) - o;
    const float x = static_cast<float>(in[e]);
    const double xd = x;
    const double d_new = xd - newest[e];
    double s = sum[e], s2 = sum_sq[e], sd = sum_diff_sq[e];
    s -= o;
    s2 -= o * o;
    sd -= d_old * d_old;
    s += xd;
    s2 += xd * xd;
    sd += d_new * d_new;
    sum[e] = s;
    sum_sq[e] = s2;
    sum_diff_sq[e] = sd;
    slot[e] = x;
  }
}

// Sum over experts of the window variance (clamped at 0 against rounding),
// and the sum of squared successive differences: the drift ratio's two
// sums, in one vectorised pass without a division per expert.
MOECAST_AVX2_CLONES void DriftSums(const double* __restrict__ sum,
                                   const double* __restrict__ sum_sq,
                                   const double* __restrict__ sum_diff_sq,
                                   int m, int n, double* var_out,
                                   double* diff_out) {
  const double inv_n = 1.0 / n;
  double var = 0;
  double diff = 0;
#pragma omp simd reduction(+ : var, diff)
  for (int e = 0; e < m; ++e) {
    const double v = sum_sq[e] - sum[e] * sum[e] * inv_n;
    var += v > 0 ? v : 0;
    diff += sum_diff_sq[e];
  }
  *var_out = var;
  *diff_out = diff;
}

}  // namespace

absl::string_view LoadStateName(LoadState state) {
  return state == LoadState::kStable ? "stable" : "transient";
}

absl::Status ValidateStateOptions(const StateOptions& o) {
  if (o.window < 10 || o.window > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("state: window = ", o.window, " must be in [10, 100000]"));
  }
  if (!(o.leave_threshold >= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("state: leave_threshold = ", o.leave_threshold,
                     " must be >= 1 (the drift ratio of a stationary load)"));
  }
  if (!(o.enter_threshold >= o.leave_threshold) ||
      !std::isfinite(o.enter_threshold)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "state: enter_threshold = ", o.enter_threshold,
        " must be finite and >= leave_threshold = ", o.leave_threshold));
  }
  if (o.min_dwell_steps < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "state: min_dwell_steps = ", o.min_dwell_steps, " must be >= 0"));
  }
  if (!(o.job_transient_fraction >= 0 && o.job_transient_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("state: job_transient_fraction = ",
                     o.job_transient_fraction, " must be in [0, 1)"));
  }
  return absl::OkStatus();
}

StateClassifier::StateClassifier(int num_experts, int top_k,
                                 const StateOptions& options)
    : m_(num_experts),
      k_(top_k),
      options_(options),
      ring_(static_cast<size_t>(num_experts) * options.window, 0.0f),
      inv_kn_(options.window, 0.0),
      sum_(num_experts, 0.0),
      sum_sq_(num_experts, 0.0),
      sum_diff_sq_(num_experts, 0.0) {}

const float* StateClassifier::Row(int age) const {
  int slot = head_ - 1 - age;
  if (slot < 0) slot += options_.window;
  return ring_.data() + static_cast<size_t>(slot) * m_;
}

std::optional<StateTransition> StateClassifier::Observe(
    int64_t step, absl::Span<const double> p, double tokens, int layer) {
  const int w = options_.window;
  if (!started_) {
    started_ = true;
    state_since_ = step;
  }
  float* slot = ring_.data() + static_cast<size_t>(head_) * m_;
  if (count_ == w && Row(w - 1) == slot) {
    // The steady state: the oldest step (and its difference with the next)
    // leaves the sums and the new one enters, in one pass.
    ReplaceOldest(p.data(), Row(w - 2), Row(0), m_, slot, sum_.data(),
                  sum_sq_.data(), sum_diff_sq_.data());
    --count_;
  } else {
    if (count_ == w) {
      // Drop the oldest step and its difference with the next one.
      DropOldest(Row(w - 1), Row(w - 2), m_, sum_.data(), sum_sq_.data(),
                 sum_diff_sq_.data());
      --count_;
    }
    AddNewest(p.data(), count_ > 0 ? Row(0) : nullptr, m_, slot, sum_.data(),
              sum_sq_.data(), sum_diff_sq_.data());
  }
  inv_kn_[head_] = tokens > 0 ? 1.0 / (k_ * tokens) : 0.0;
  head_ = head_ + 1 == w ? 0 : head_ + 1;
  ++count_;
  if (++since_resum_ >= w) {
    // Recompute the sums from the ring so that rounding cannot accumulate.
    since_resum_ = 0;
    std::fill(sum_.begin(), sum_.end(), 0.0);
    std::fill(sum_sq_.begin(), sum_sq_.end(), 0.0);
    std::fill(sum_diff_sq_.begin(), sum_diff_sq_.end(), 0.0);
    for (int age = count_ - 1; age >= 0; --age) {
      const float* row = Row(age);
      const float* next = age > 0 ? Row(age - 1) : nullptr;
      for (int e = 0; e < m_; ++e) {
        sum_[e] += row[e];
        sum_sq_[e] += static_cast<double>(row[e]) * row[e];
        if (next != nullptr) {
          const double d = static_cast<double>(next[e]) - row[e];
          sum_diff_sq_[e] += d * d;
        }
      }
    }
  }

  ++steps_in_state_;
  if (count_ < w || steps_in_state_ < options_.min_dwell_steps) {
    return std::nullopt;
  }
  const double r = *drift_ratio();
  const LoadState from = state_;
  if (state_ == LoadState::kStable && r > options_.enter_threshold) {
    state_ = LoadState::kTransient;
  } else if (state_ == LoadState::kTransient && r < options_.leave_threshold) {
    state_ = LoadState::kStable;
  }
  if (state_ == from) return std::nullopt;
  state_since_ = step;
  steps_in_state_ = 0;
  return StateTransition{step, layer, from, state_, r};
}

std::optional<StateTransition> StateClassifier::OnShift(int64_t step, int layer) {
  steps_in_state_ = 0;
  if (state_ == LoadState::kTransient) return std::nullopt;
  state_ = LoadState::kTransient;
  state_since_ = step;
  return StateTransition{step, layer, LoadState::kStable, state_,
                         drift_ratio().value_or(0.0)};
}

std::optional<double> StateClassifier::drift_ratio() const {
  if (count_ < 3) return std::nullopt;
  // sum_e var_e / (sum_e mssd_e / 2), var_e = S_e / (n - 1) and
  // mssd_e = D_e / (n - 1): the (n - 1) cancels.
  double var_sum = 0;
  double diff_sum = 0;
  DriftSums(sum_.data(), sum_sq_.data(), sum_diff_sq_.data(), m_, count_,
            &var_sum, &diff_sum);
  const double half_mssd = diff_sum / (count_ - 1) / 2;
  if (half_mssd <= kTiny) return 1.0;  // a constant load: perfectly stable
  return var_sum / (count_ - 1) / half_mssd;
}

StateSignals StateClassifier::Signals() const {
  StateSignals s;
  s.state = state_;
  s.state_since_step = state_since_;
  s.window_steps = count_;
  s.drift_ratio = drift_ratio();
  auto window_stats = [&](int n, std::vector<double>* var,
                          std::vector<double>* range) {
    n = std::min(n, count_);
    var->assign(m_, 0.0);
    range->assign(m_, 0.0);
    if (n == 0) return;
    std::vector<double> lo(m_, 1e300), hi(m_, -1e300), sum(m_, 0.0), sq(m_, 0.0);
    for (int age = 0; age < n; ++age) {
      const float* row = Row(age);
      for (int e = 0; e < m_; ++e) {
        const double x = row[e];
        sum[e] += x;
        sq[e] += x * x;
        lo[e] = std::min(lo[e], x);
        hi[e] = std::max(hi[e], x);
      }
    }
    for (int e = 0; e < m_; ++e) {
      (*var)[e] = Variance(sum[e], sq[e], n);
      (*range)[e] = hi[e] - lo[e];
    }
  };
  window_stats(10, &s.variance_10, &s.range_10);
  window_stats(options_.window, &s.variance_w, &s.range_w);
  if (count_ >= 3) {
    double var = 0, sampling = 0, inv_kn = 0;
    for (int age = 0; age < count_; ++age) {
      int slot = head_ - 1 - age;
      if (slot < 0) slot += options_.window;
      inv_kn += inv_kn_[slot];
    }
    inv_kn /= count_;
    for (int e = 0; e < m_; ++e) {
      var += s.variance_w[e];
      const double mean = sum_[e] / count_;
      sampling += std::max(0.0, mean * (1 - k_ * mean)) * inv_kn;
    }
    if (sampling > kTiny) s.dispersion = var / sampling;
    // Drift between the means of the window's halves, against noise alone.
    const int n1 = count_ / 2;
    const int n2 = count_ - n1;
    double drift = 0, expected = 0;
    for (int e = 0; e < m_; ++e) {
      double m_new = 0, m_old = 0;
      for (int age = 0; age < n2; ++age) m_new += Row(age)[e];
      for (int age = n2; age < count_; ++age) m_old += Row(age)[e];
      drift += std::abs(m_new / n2 - m_old / n1);
      const double noise_var = sum_diff_sq_[e] / (count_ - 1) / 2;
      expected += std::sqrt(2 / M_PI) *
                  std::sqrt(noise_var * (1.0 / n1 + 1.0 / n2));
    }
    if (expected > kTiny) s.half_drift = drift / expected;
  }
  return s;
}

int64_t StateClassifier::MemoryBytes() const {
  return static_cast<int64_t>(
      sizeof(*this) + ring_.size() * sizeof(float) +
      (inv_kn_.size() + sum_.size() + sum_sq_.size() + sum_diff_sq_.size()) *
          sizeof(double));
}

void StateClassifier::SaveTo(internal::SnapshotWriter& out) const {
  out.PutI32(m_);
  out.PutI32(options_.window);
  out.PutI32(head_);
  out.PutI32(count_);
  out.PutI32(since_resum_);
  // The ring fills from slot 0: the occupied slots are [0, count_).
  out.PutRawFloats(ring_.data(), static_cast<size_t>(count_) * m_);
  out.PutRawDoubles(inv_kn_.data(), static_cast<size_t>(count_));
  out.PutDoubles(sum_);
  out.PutDoubles(sum_sq_);
  out.PutDoubles(sum_diff_sq_);
  out.PutU8(state_ == LoadState::kStable ? 1 : 0);
  out.PutI64(state_since_);
  out.PutI64(steps_in_state_);
  out.PutBool(started_);
}

void StateClassifier::LoadFrom(internal::SnapshotReader& in) {
  const int w = options_.window;
  const int m = in.I32("num_experts");
  const int window = in.I32("window");
  if (in.ok() && (m != m_ || window != w)) {
    in.Fail("shape", absl::StrCat("saved for ", m, " experts and a window of ",
                                  window, " steps, this classifier has ", m_,
                                  " and ", w));
    return;
  }
  const int head = in.IntIn("head", 0, w - 1);
  const int count = in.IntIn("count", 0, w);
  const int since_resum = in.IntIn("since_resum", 0, w - 1);
  if (in.ok() && count < w && head != count) {
    in.Fail("head", absl::StrCat(head, " does not follow a ring of ", count,
                                 " steps"));
  }
  if (!in.ok()) return;
  in.RawFloats("ring", ring_.data(), static_cast<size_t>(count) * m_);
  in.RawDoubles("inv_kn", inv_kn_.data(), static_cast<size_t>(count));
  in.DoublesExact("sum", absl::MakeSpan(sum_));
  in.DoublesExact("sum_sq", absl::MakeSpan(sum_sq_));
  in.DoublesExact("sum_diff_sq", absl::MakeSpan(sum_diff_sq_));
  const uint8_t state = in.U8("state");
  if (state > 1) in.Fail("state", absl::StrCat("unknown state ", state));
  state_ = state == 1 ? LoadState::kStable : LoadState::kTransient;
  state_since_ = in.I64("state_since");
  steps_in_state_ = in.I64("steps_in_state");
  started_ = in.Bool("started");
  head_ = head;
  count_ = count;
  since_resum_ = since_resum;
}

LoadState JobState(absl::Span<const LoadState> layers, double fraction) {
  if (layers.empty()) return LoadState::kTransient;
  int transient = 0;
  for (LoadState s : layers) transient += s == LoadState::kTransient;
  return transient > fraction * layers.size() ? LoadState::kTransient
                                              : LoadState::kStable;
}

}  // namespace moecast
