#include "engine/ingest/step_validator.h"

#include <cmath>
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/internal/cpu_dispatch.h"

namespace moecast::internal {
namespace {

// Names the first bad value of `values`; called only once the fast scan has
// found one, so its cost does not matter.
absl::Status DescribeBadValue(const JobSpec& spec, absl::string_view field,
                              absl::Span<const double> values,
                              bool require_non_negative) {
  const int m = spec.num_experts;
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    const char* what = nullptr;
    if (!std::isfinite(v)) {
      what = "is not finite";
    } else if (require_non_negative && v < 0) {
      what = "is negative";
    }
    if (what != nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "job '%s': %s[layer %d][expert %d] = %g %s", spec.job_id, field,
          i / m, i % m, v, what));
    }
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "job '%s': %s of one layer overflow a double", spec.job_id, field));
}

// Sums c[0..n) into *sum and returns whether every value is finite and
// >= 0: a NaN or infinity makes the sum non-finite, a negative value makes the
// minimum negative. Written as one SIMD reduction (gcc vectorizes floating-
// point reductions only when told the order may change; counts are integers,
// so it does not change the sum). Cloned for AVX2, chosen at load time.
MOECAST_AVX2_CLONES bool SumNonNegativeFinite(
    const double* __restrict__ c, int n, double* sum_out) {
  double sum = 0;
  double low = 0;
#pragma omp simd reduction(+ : sum) reduction(min : low)
  for (int e = 0; e < n; ++e) {
    sum += c[e];
    low = c[e] < low ? c[e] : low;
  }
  *sum_out = sum;
  return (low >= 0) & std::isfinite(sum);
}

// Returns whether every value of v[0..n) is finite: v * 0 is 0 for finite
// values and NaN otherwise, so the sum is NaN exactly when one is not.
MOECAST_AVX2_CLONES bool AllFinite(
    const double* __restrict__ v, size_t n) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (size_t i = 0; i < n; ++i) acc += v[i] * 0.0;
  return std::isfinite(acc);
}

}  // namespace

absl::Status ValidateStep(const JobSpec& spec, const StepInput& in,
                          absl::Span<double> layer_sums) {
  const int64_t expected =
      static_cast<int64_t>(spec.num_layers) * spec.num_experts;
  if (in.source < 0 || in.source >= spec.num_sources) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job '", spec.job_id, "': source ", in.source,
        " is out of range; the job declares ", spec.num_sources,
        spec.num_sources == 1 ? " source (index 0)" : " sources"));
  }
  if (in.step < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job '", spec.job_id, "': step ", in.step, " is negative"));
  }
  if (static_cast<int64_t>(in.counts.size()) != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job '", spec.job_id, "': step ", in.step, " has ", in.counts.size(),
        " counts; the job declares ", spec.num_layers, " layers x ",
        spec.num_experts, " experts = ", expected));
  }
  if (!in.router_logits.empty() &&
      static_cast<int64_t>(in.router_logits.size()) != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job '", spec.job_id, "': step ", in.step, " has ",
        in.router_logits.size(), " router logits; the job declares ",
        spec.num_layers, " layers x ", spec.num_experts, " experts = ",
        expected, " (or send none)"));
  }
  if (in.tokens.has_value() && !(std::isfinite(*in.tokens) && *in.tokens >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("job '", spec.job_id, "': step ", in.step, " tokens = ",
                     *in.tokens, " must be finite and >= 0"));
  }

  const int m = spec.num_experts;
  const double* c = in.counts.data();
  bool ok = true;
  for (int l = 0; l < spec.num_layers; ++l) {
    ok &= SumNonNegativeFinite(c, m, &layer_sums[l]);
    c += m;
  }
  if (!ok) return DescribeBadValue(spec, "counts", in.counts, true);

  if (!in.router_logits.empty()) {
    if (!AllFinite(in.router_logits.data(), in.router_logits.size())) {
      return DescribeBadValue(spec, "router_logits", in.router_logits, false);
    }
  }

  if (in.tokens.has_value()) {
    const double cap = *in.tokens * spec.top_k;
    for (int l = 0; l < spec.num_layers; ++l) {
      // Relative slack for counts produced in floating point.
      if (layer_sums[l] > cap * (1 + 1e-9) + 1e-9) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "job '%s': step %d layer %d has %g assignments, more than tokens "
            "x top_k = %g x %d = %g",
            spec.job_id, in.step, l, layer_sums[l], *in.tokens, spec.top_k,
            cap));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace moecast::internal
