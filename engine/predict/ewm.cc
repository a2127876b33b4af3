// ewm(W): the exponentially weighted mean with span W, start-up adjusted.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/internal/cpu_dispatch.h"
#include "engine/predict/basic_predictors.h"

namespace moecast {
namespace {

// num[e] = x[e] + decay * num[e]: one pass (raw pointers: Span's hardened
// [] keeps loops from vectorising).
MOECAST_AVX2_CLONES void Accumulate(const double* __restrict__ x, double decay,
                                    int m, double* __restrict__ num) {
  for (int e = 0; e < m; ++e) num[e] = x[e] + decay * num[e];
}

MOECAST_AVX2_CLONES void Scale(const double* __restrict__ num, double scale,
                               int m, double* __restrict__ out) {
  for (int e = 0; e < m; ++e) out[e] = num[e] * scale;
}

class EwmPredictor final : public Predictor {
 public:
  EwmPredictor(int m, int span)
      : name_(absl::StrCat("ewm(", span, ")")),
        span_(span),
        decay_(1.0 - 2.0 / (span + 1.0)),
        num_(m, 0.0) {}

  const std::string& name() const override { return name_; }
  int memory_steps() const override { return span_; }
  bool flat_forecast() const override { return true; }
  int num_experts() const override { return static_cast<int>(num_.size()); }

  void Observe(absl::Span<const double> p) override {
    Accumulate(p.data(), decay_, num_experts(), num_.data());
    den_ = 1.0 + decay_ * den_;
    ++count_;
    // Recompute the weight sum from its closed form now and then, so that
    // rounding in the recursion cannot drift (num is a sum of weighted
    // proportions and is renormalised by den on every forecast anyway).
    if (count_ % 4096 == 0) den_ = WeightSum(count_);
  }

  bool Restart(int max_memory) override {
    if (span_ > max_memory) return false;
    std::fill(num_.begin(), num_.end(), 0.0);
    den_ = 0;
    count_ = 0;
    return true;
  }

  void Forecast(int, absl::Span<double> out) override {
    if (count_ == 0) {
      std::fill(out.begin(), out.end(), 1.0 / num_experts());
      return;
    }
    Scale(num_.data(), 1.0 / den_, num_experts(), out.data());
  }

  void ForecastPath(int steps, absl::Span<double> out) override {
    const size_t m = num_.size();
    Forecast(1, out.subspan(0, m));
    for (int s = 1; s < steps; ++s) {
      std::copy(out.begin(), out.begin() + m, out.begin() + s * m);
    }
  }

  int64_t MemoryBytes() const override {
    return static_cast<int64_t>(sizeof(*this) + num_.capacity() * sizeof(double));
  }

  absl::Status SaveTo(internal::SnapshotWriter& out) const override {
    out.PutI32(span_);
    out.PutI64(count_);
    out.PutDouble(den_);
    out.PutDoubles(num_);
    return absl::OkStatus();
  }

  void LoadFrom(internal::SnapshotReader& in) override {
    const int span = in.I32("span");
    if (in.ok() && span != span_) {
      in.Fail("span", absl::StrCat("saved for ", span, ", this is ", span_));
      return;
    }
    const int64_t count = in.I64("count");
    const double den = in.Double("den");
    if (in.ok() && count < 0) {
      in.Fail("count", absl::StrCat(count, " observed steps"));
      return;
    }
    if (in.ok() && !(den >= 0 && den <= WeightSum(count) * (1 + 1e-9) + 1e-12)) {
      in.Fail("den", absl::StrCat(den, " is not the weight sum of ", count, " steps"));
      return;
    }
    in.DoublesExact("num", absl::MakeSpan(num_));
    if (!in.ok()) return;
    count_ = count;
    den_ = den;
  }

 private:
  // sum_{i < n} decay^i.
  double WeightSum(int64_t n) const {
    return (1.0 - std::pow(decay_, static_cast<double>(n))) / (1.0 - decay_);
  }

  const std::string name_;
  const int span_;
  const double decay_;
  std::vector<double> num_;  // sum_i decay^i x(t - i), per expert
  double den_ = 0;           // sum_i decay^i
  int64_t count_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Predictor>> MakeEwmPredictor(int m, int span) {
  if (m < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ewm: num_experts = ", m, " must be >= 1"));
  }
  if (span < 1 || span > 10000000) {
    return absl::InvalidArgumentError(
        absl::StrCat("ewm: span = ", span, " must be in [1, 10000000]"));
  }
  return std::unique_ptr<Predictor>(new EwmPredictor(m, span));
}

}  // namespace moecast
