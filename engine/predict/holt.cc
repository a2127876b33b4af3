// holt: damped-trend exponential smoothing, parameters fitted per layer on a
// recent window by grid search.
#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/predict/basic_predictors.h"

namespace moecast {
namespace {

struct HoltParams {
  double alpha = 0.1;
  double beta = 0.05;
  double phi = 0.9;
};

// Mean over k = 1..h of (phi + phi^2 + ... + phi^k).
double DampedTrendMean(double phi, int h) {
  if (phi >= 1.0) return (h + 1) / 2.0;
  const double g_h = phi * (1 - std::pow(phi, h)) / (1 - phi);
  return phi / (1 - phi) * (1 - g_h / h);
}

class HoltPredictor final : public Predictor {
 public:
  HoltPredictor(int m, HoltOptions options)
      : m_(m),
        options_(std::move(options)),
        level_(m, 1.0 / m),
        trend_(m, 0.0),
        ring_(static_cast<size_t>(m) * options_.fit_window, 0.0f),
        scratch_level_(m),
        scratch_trend_(m) {}

  const std::string& name() const override { return name_; }
  int num_experts() const override { return m_; }

  void Observe(absl::Span<const double> p) override {
    float* slot = ring_.data() + static_cast<size_t>(head_) * m_;
    const double* in = p.data();
    for (int e = 0; e < m_; ++e) slot[e] = static_cast<float>(in[e]);
    head_ = head_ + 1 == options_.fit_window ? 0 : head_ + 1;
    if (count_ < options_.fit_window) ++count_;
    ++since_fit_;
    if (!started_) {
      std::copy(p.begin(), p.end(), level_.begin());
      std::fill(trend_.begin(), trend_.end(), 0.0);
      started_ = true;
      return;
    }
    Step(params_, in, level_.data(), trend_.data());
  }

  bool refit_due() const override {
    const bool first_fit = !fitted_ && count_ >= options_.fit_window / 2;
    return first_fit || (fitted_ && since_fit_ >= options_.refit_every);
  }

  void Refresh() override {
    if (refit_due()) Fit();
  }

  void Forecast(int horizon, absl::Span<double> out) override {
    Refresh();
    const double k = DampedTrendMean(params_.phi, horizon);
    double* o = out.data();  // raw: Span's hardened [] blocks vectorising
    for (int e = 0; e < m_; ++e) o[e] = level_[e] + k * trend_[e];
  }

  void ForecastPath(int steps, absl::Span<double> out) override {
    Refresh();
    double g = 0;
    double phi_k = 1;
    for (int s = 0; s < steps; ++s) {
      phi_k *= params_.phi;
      g += phi_k;
      double* row = out.data() + static_cast<size_t>(s) * m_;
      for (int e = 0; e < m_; ++e) row[e] = level_[e] + g * trend_[e];
    }
  }

  int64_t MemoryBytes() const override {
    return static_cast<int64_t>(
        sizeof(*this) + (level_.size() + trend_.size() + ring_.size() +
                         scratch_level_.size() + scratch_trend_.size()) *
                            sizeof(double));
  }

  // The fitted parameters and the refit schedule travel with the state, so
  // a restored predictor refits exactly when the saved one would have.
  absl::Status SaveTo(internal::SnapshotWriter& out) const override {
    out.PutI32(options_.fit_window);
    out.PutDouble(params_.alpha);
    out.PutDouble(params_.beta);
    out.PutDouble(params_.phi);
    out.PutBool(started_);
    out.PutBool(fitted_);
    out.PutI32(since_fit_);
    out.PutDoubles(level_);
    out.PutDoubles(trend_);
    out.PutI32(head_);
    out.PutI32(count_);
    // The ring fills from slot 0: the occupied slots are [0, count_).
    out.PutRawFloats(ring_.data(), static_cast<size_t>(count_) * m_);
    return absl::OkStatus();
  }

  void LoadFrom(internal::SnapshotReader& in) override {
    const int fit_window = in.I32("fit_window");
    if (in.ok() && fit_window != options_.fit_window) {
      in.Fail("fit_window", absl::StrCat("saved for ", fit_window, ", this is ",
                                         options_.fit_window));
      return;
    }
    HoltParams params;
    params.alpha = in.Double("alpha");
    params.beta = in.Double("beta");
    params.phi = in.Double("phi");
    const bool started = in.Bool("started");
    const bool fitted = in.Bool("fitted");
    const int since_fit = in.IntIn("since_fit", 0, std::numeric_limits<int>::max());
    in.DoublesExact("level", absl::MakeSpan(level_));
    in.DoublesExact("trend", absl::MakeSpan(trend_));
    const int w = options_.fit_window;
    const int head = in.IntIn("head", 0, w - 1);
    const int count = in.IntIn("count", 0, w);
    if (in.ok() && count < w && head != count) {
      in.Fail("head", absl::StrCat(head, " does not follow a ring of ", count,
                                   " steps"));
    }
    if (!in.ok()) return;
    in.RawFloats("ring", ring_.data(), static_cast<size_t>(count) * m_);
    params_ = params;
    started_ = started;
    fitted_ = fitted;
    since_fit_ = since_fit;
    head_ = head;
    count_ = count;
  }

 private:
  // One smoothing step; returns the squared one-step error summed over experts.
  template <typename T>
  double Step(const HoltParams& q, const T* x, double* level,
              double* trend) const {
    double sse = 0;
#pragma omp simd reduction(+ : sse)
    for (int e = 0; e < m_; ++e) {
      const double damped = q.phi * trend[e];
      const double predicted = level[e] + damped;
      const double err = x[e] - predicted;
      sse += err * err;
      const double new_level = predicted + q.alpha * err;
      trend[e] = damped + q.beta * (new_level - level[e] - damped);
      level[e] = new_level;
    }
    return sse;
  }

  const float* Row(int i) const {  // oldest first
    int slot = head_ - count_ + i;
    if (slot < 0) slot += options_.fit_window;
    return ring_.data() + static_cast<size_t>(slot) * m_;
  }

  // Runs the filter over the stored window with `q` for the experts in
  // `experts` (all when empty), from level = first row and trend 0, leaving
  // the final state in the scratch buffers (indexed like `experts`, or by
  // expert when empty); returns the one-step squared error after a short
  // burn-in.
  double Run(const HoltParams& q, const std::vector<int>& experts) {
    const int burn_in = std::min(10, count_ / 4);
    double sse = 0;
    if (experts.empty()) {
      std::copy(Row(0), Row(0) + m_, scratch_level_.begin());
      std::fill(scratch_trend_.begin(), scratch_trend_.end(), 0.0);
      for (int i = 1; i < count_; ++i) {
        const double s =
            Step(q, Row(i), scratch_level_.data(), scratch_trend_.data());
        if (i > burn_in) sse += s;
      }
      return sse;
    }
    const int n = static_cast<int>(experts.size());
    for (int j = 0; j < n; ++j) {
      scratch_level_[j] = Row(0)[experts[j]];
      scratch_trend_[j] = 0;
    }
    for (int i = 1; i < count_; ++i) {
      const float* x = Row(i);
      double step_sse = 0;
      for (int j = 0; j < n; ++j) {
        const double damped = q.phi * scratch_trend_[j];
        const double predicted = scratch_level_[j] + damped;
        const double err = x[experts[j]] - predicted;
        step_sse += err * err;
        const double new_level = predicted + q.alpha * err;
        scratch_trend_[j] = damped + q.beta * (new_level - scratch_level_[j] - damped);
        scratch_level_[j] = new_level;
      }
      if (i > burn_in) sse += step_sse;
    }
    return sse;
  }

  void Fit() {
    // Fit on the experts that carry the most load in the window: they
    // dominate the L1 error, and the cost stops growing with M.
    std::vector<int> experts;
    if (m_ > options_.fit_experts) {
      std::vector<double> mean(m_, 0.0);
      for (int i = 0; i < count_; ++i) {
        const float* row = Row(i);
        for (int e = 0; e < m_; ++e) mean[e] += row[e];
      }
      experts.resize(m_);
      for (int e = 0; e < m_; ++e) experts[e] = e;
      std::partial_sort(experts.begin(), experts.begin() + options_.fit_experts,
                        experts.end(),
                        [&](int a, int b) { return mean[a] > mean[b]; });
      experts.resize(options_.fit_experts);
    }
    HoltParams best = params_;
    double best_sse = std::numeric_limits<double>::infinity();
    for (double a : options_.alphas) {
      for (double b : options_.betas) {
        for (double f : options_.phis) {
          const HoltParams q{a, b, f};
          const double sse = Run(q, experts);
          if (sse < best_sse) {
            best_sse = sse;
            best = q;
          }
        }
      }
    }
    params_ = best;
    // Restart every expert's state under the chosen parameters.
    Run(params_, {});
    level_.swap(scratch_level_);
    trend_.swap(scratch_trend_);
    fitted_ = true;
    since_fit_ = 0;
  }

  const std::string name_ = "holt";
  const int m_;
  const HoltOptions options_;
  HoltParams params_;
  bool started_ = false;
  bool fitted_ = false;
  int since_fit_ = 0;
  std::vector<double> level_;
  std::vector<double> trend_;
  std::vector<float> ring_;  // fit_window x m_ (float: half the memory)
  int head_ = 0;
  int count_ = 0;
  std::vector<double> scratch_level_;
  std::vector<double> scratch_trend_;
};

absl::Status CheckGrid(const std::vector<double>& values, absl::string_view name,
                       double lo, double hi) {
  if (values.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("holt: the ", name, " grid is empty"));
  }
  for (double v : values) {
    if (!(v > lo && v <= hi)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "holt: ", name, " = ", v, " must be in (", lo, ", ", hi, "]"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Predictor>> MakeHoltPredictor(
    int m, const HoltOptions& options) {
  if (m < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("holt: num_experts = ", m, " must be >= 1"));
  }
  if (options.fit_window < 4 || options.fit_window > 100000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "holt: fit_window = ", options.fit_window, " must be in [4, 100000]"));
  }
  if (options.fit_experts < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "holt: fit_experts = ", options.fit_experts, " must be >= 1"));
  }
  if (options.refit_every < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "holt: refit_every = ", options.refit_every, " must be >= 1"));
  }
  if (absl::Status s = CheckGrid(options.alphas, "alpha", 0, 1); !s.ok()) return s;
  if (absl::Status s = CheckGrid(options.betas, "beta", 0, 1); !s.ok()) return s;
  if (absl::Status s = CheckGrid(options.phis, "phi", 0, 1); !s.ok()) return s;
  return std::unique_ptr<Predictor>(new HoltPredictor(m, options));
}

}  // namespace moecast
