// last_value: the last observed step, for every horizon.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/predict/basic_predictors.h"

namespace moecast {
namespace {

class LastValuePredictor final : public Predictor {
 public:
  explicit LastValuePredictor(int m) : last_(m, 1.0 / m) {}

  const std::string& name() const override { return name_; }
  bool flat_forecast() const override { return true; }
  int memory_steps() const override { return 1; }
  int num_experts() const override { return static_cast<int>(last_.size()); }

  void Observe(absl::Span<const double> p) override {
    std::copy(p.begin(), p.end(), last_.begin());
  }

  void Forecast(int, absl::Span<double> out) override {
    std::copy(last_.begin(), last_.end(), out.begin());
  }

  void ForecastPath(int steps, absl::Span<double> out) override {
    for (int s = 0; s < steps; ++s) {
      std::copy(last_.begin(), last_.end(), out.begin() + s * last_.size());
    }
  }

  int64_t MemoryBytes() const override {
    return static_cast<int64_t>(sizeof(*this) + last_.size() * sizeof(double));
  }

  absl::Status SaveTo(internal::SnapshotWriter& out) const override {
    out.PutDoubles(last_);
    return absl::OkStatus();
  }

  void LoadFrom(internal::SnapshotReader& in) override {
    in.DoublesExact("last", absl::MakeSpan(last_));
  }

 private:
  const std::string name_ = "last_value";
  std::vector<double> last_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Predictor>> MakeLastValuePredictor(int m) {
  if (m < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("last_value: num_experts = ", m, " must be >= 1"));
  }
  return std::unique_ptr<Predictor>(new LastValuePredictor(m));
}

}  // namespace moecast
