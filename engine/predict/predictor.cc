#include "engine/predict/predictor.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace moecast {

void NormalizeForecast(absl::Span<double> values) {
  double sum = 0;
  double* v = values.data();
  const size_t n = values.size();
#pragma omp simd reduction(+ : sum)
  for (size_t i = 0; i < n; ++i) {
    v[i] = v[i] > 0 ? v[i] : 0;  // also maps NaN to 0
    sum += v[i];
  }
  if (sum > 0 && sum < 1e300) {
    const double inv = 1.0 / sum;
    for (double& v : values) v *= inv;
  } else if (!values.empty()) {
    std::fill(values.begin(), values.end(), 1.0 / values.size());
  }
}

absl::Status Predictor::SaveTo(internal::SnapshotWriter&) const {
  return absl::UnimplementedError(
      absl::StrCat("predictor ", name(), " cannot be snapshotted"));
}

void Predictor::LoadFrom(internal::SnapshotReader& in) {
  in.FailWith(absl::UnimplementedError(
      absl::StrCat("predictor ", name(), " cannot be restored from a snapshot")));
}

}  // namespace moecast
