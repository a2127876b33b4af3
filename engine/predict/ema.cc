// ema(theta): exponential moving average with a flat forecast.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/predict/basic_predictors.h"

namespace moecast {
namespace {

class EmaPredictor final : public Predictor {
 public:
  EmaPredictor(int m, double theta)
      : name_(absl::StrCat("ema(", theta, ")")), theta_(theta), s_(m, 1.0 / m) {}

  const std::string& name() const override { return name_; }
  bool flat_forecast() const override { return true; }
  int memory_steps() const override {
    return static_cast<int>(std::lround(std::min(1e9, 1 / (1 - theta_))));
  }
  int num_experts() const override { return static_cast<int>(s_.size()); }

  void Observe(absl::Span<const double> p) override {
    if (!started_) {
      std::copy(p.begin(), p.end(), s_.begin());
      started_ = true;
      return;
    }
    const double a = 1 - theta_;
    const double* in = p.data();
    double* s = s_.data();
    for (size_t e = 0; e < s_.size(); ++e) s[e] += a * (in[e] - s[e]);
  }

  void Forecast(int, absl::Span<double> out) override {
    std::copy(s_.begin(), s_.end(), out.begin());
  }

  void ForecastPath(int steps, absl::Span<double> out) override {
    for (int s = 0; s < steps; ++s) {
      std::copy(s_.begin(), s_.end(), out.begin() + s * s_.size());
    }
  }

  int64_t MemoryBytes() const override {
    return static_cast<int64_t>(sizeof(*this) + s_.size() * sizeof(double));
  }

  absl::Status SaveTo(internal::SnapshotWriter& out) const override {
    out.PutBool(started_);
    out.PutDoubles(s_);
    return absl::OkStatus();
  }

  void LoadFrom(internal::SnapshotReader& in) override {
    started_ = in.Bool("started");
    in.DoublesExact("s", absl::MakeSpan(s_));
  }

 private:
  const std::string name_;
  const double theta_;
  bool started_ = false;
  std::vector<double> s_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Predictor>> MakeEmaPredictor(int m,
                                                            double theta) {
  if (m < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ema: num_experts = ", m, " must be >= 1"));
  }
  if (!(theta >= 0 && theta < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ema: theta = ", theta, " must be in [0, 1) (the weight of the old value)"));
  }
  return std::unique_ptr<Predictor>(new EmaPredictor(m, theta));
}

}  // namespace moecast
