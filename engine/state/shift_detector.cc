#include "engine/state/shift_detector.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/internal/cpu_dispatch.h"

namespace moecast {
namespace {

// Steps whose mean assignments size the window.
constexpr int kSizingSteps = 10;
// Distances needed before the noise median is trusted.
constexpr int kMinHistory = 16;

// add: sum += scale * counts (one pass).
MOECAST_AVX2_CLONES void AddCounts(const float* __restrict__ counts, double scale,
                                   int m, double* __restrict__ sum) {
  for (int e = 0; e < m; ++e) sum[e] += scale * counts[e];
}

// The step leaving the test window joins the reference.
MOECAST_AVX2_CLONES void MoveCounts(const float* __restrict__ counts, int m,
                                    double* __restrict__ from,
                                    double* __restrict__ to) {
  for (int e = 0; e < m; ++e) {
    from[e] -= counts[e];
    to[e] += counts[e];
  }
}

MOECAST_AVX2_CLONES void StoreCounts(const double* __restrict__ p, double a, int m,
                                     float* __restrict__ slot,
                                     double* __restrict__ sum) {
  for (int e = 0; e < m; ++e) {
    const float c = static_cast<float>(p[e] * a);
    slot[e] = c;
    sum[e] += c;
  }
}

MOECAST_AVX2_CLONES double MeanL1(const double* __restrict__ a, double inv_a,
                                  const double* __restrict__ b, double inv_b,
                                  int m) {
  double d = 0;
#pragma omp simd reduction(+ : d)
  for (int e = 0; e < m; ++e) d += std::abs(a[e] * inv_a - b[e] * inv_b);
  return d;
}

}  // namespace

absl::Status ValidateShiftOptions(const ShiftOptions& o) {
  if (!(o.assignments_per_window > 0) || !std::isfinite(o.assignments_per_window)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shift: assignments_per_window = ", o.assignments_per_window,
        " must be positive"));
  }
  if (o.min_window < 1 || o.max_window < o.min_window || o.max_window > 100000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shift: windows [", o.min_window, ", ", o.max_window,
        "] must satisfy 1 <= min_window <= max_window <= 100000"));
  }
  if (!(o.min_size >= 0 && o.min_size <= 2)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shift: min_size = ", o.min_size, " must be in [0, 2] (an L1 distance)"));
  }
  if (!(o.noise_multiple >= 1) || !std::isfinite(o.noise_multiple)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shift: noise_multiple = ", o.noise_multiple, " must be >= 1"));
  }
  if (o.persistence < 1 || o.persistence > 10000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shift: persistence = ", o.persistence, " must be in [1, 10000]"));
  }
  if (o.scales.empty() || o.scales.size() > 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shift: ", o.scales.size(), " scales, expected 1 to 8"));
  }
  for (size_t i = 0; i < o.scales.size(); ++i) {
    if (o.scales[i] < 1 || o.scales[i] > 1000 || (i > 0 && o.scales[i] <= o.scales[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shift: scales must increase within [1, 1000]; scale ", o.scales[i],
          " at position ", i, " does not"));
    }
  }
  if (o.restart_max_memory < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shift: restart_max_memory = ", o.restart_max_memory, " must be >= 1 (steps)"));
  }
  if (o.noise_history < kMinHistory || o.noise_history > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("shift: noise_history = ", o.noise_history, " must be in [",
                     kMinHistory, ", 100000]"));
  }
  return absl::OkStatus();
}

ShiftOptions ScaledShiftOptions(const ShiftOptions& options, int scale) {
  ShiftOptions o = options;
  o.assignments_per_window *= scale;
  o.min_window *= scale;
  o.max_window *= scale;
  o.scales = {1};
  return o;
}

ShiftDetector::ShiftDetector(int num_experts, const ShiftOptions& options)
    : m_(num_experts), options_(options), test_sum_(num_experts, 0.0),
      ref_sum_(num_experts, 0.0) {}

void ShiftDetector::Restart() {
  n_ = 0;
  std::fill(test_sum_.begin(), test_sum_.end(), 0.0);
  std::fill(ref_sum_.begin(), ref_sum_.end(), 0.0);
  test_total_ = ref_total_ = 0;
  above_ = 0;
}

void ShiftDetector::Locate(Shift* shift) {
  // The 2w steps in the ring, oldest first: step n_ - 2w + i is in slot
  // (n_ - 2w + i) % 2w.
  const int len = 2 * window_;
  const int64_t first = n_ - len;
  std::vector<double> before(m_, 0.0), after(m_, 0.0);
  double all_total = 0;
  for (int i = 0; i < len; ++i) {
    const size_t slot = static_cast<size_t>((first + i) % len);
    AddCounts(ring_.data() + slot * m_, 1.0, m_, after.data());
    all_total += totals_[slot];
  }
  double before_total = 0;
  double best = -1;
  for (int k = 1; k < len; ++k) {  // split before step k
    const size_t slot = static_cast<size_t>((first + k - 1) % len);
    MoveCounts(ring_.data() + slot * m_, m_, after.data(), before.data());
    before_total += totals_[slot];
    const double after_total = all_total - before_total;
    if (!(before_total > 0) || !(after_total > 0)) continue;
    const double d =
        MeanL1(before.data(), 1.0 / before_total, after.data(), 1.0 / after_total, m_);
    const double score =
        d * std::sqrt(before_total * after_total / (before_total + after_total));
    if (score > best) {
      best = score;
      shift->size = d;
      shift->change_step = steps_[static_cast<size_t>((first + k) % len)];
    }
  }
}

void ShiftDetector::CollectSince(int64_t change_step) {
  const int len = 2 * window_;
  const int64_t first = n_ - len;
  since_change_.clear();
  for (int i = 0; i < len; ++i) {
    const size_t slot = static_cast<size_t>((first + i) % len);
    if (steps_[slot] < change_step || !(totals_[slot] > 0)) continue;
    const float* row = ring_.data() + slot * m_;
    const double inv = 1.0 / totals_[slot];
    for (int e = 0; e < m_; ++e) since_change_.push_back(row[e] * inv);
  }
}

double ShiftDetector::Median() {
  scratch_.assign(history_.begin(), history_.end());
  const size_t k = scratch_.size() / 2;
  std::nth_element(scratch_.begin(), scratch_.begin() + k, scratch_.end());
  return scratch_[k];
}

std::optional<Shift> ShiftDetector::Observe(int64_t step,
                                            absl::Span<const double> p,
                                            double assignments) {
  since_change_.clear();
  if (!(assignments > 0)) return std::nullopt;
  if (window_ == 0) {
    sizing_assignments_ += assignments;
    if (++sizing_steps_ < kSizingSteps) return std::nullopt;
    const double per_step = sizing_assignments_ / sizing_steps_;
    window_ = static_cast<int>(std::clamp(
        std::ceil(options_.assignments_per_window / per_step),
        static_cast<double>(options_.min_window),
        static_cast<double>(options_.max_window)));
    ring_.assign(static_cast<size_t>(2 * window_) * m_, 0.0f);
    totals_.assign(2 * window_, 0.0);
    steps_.assign(2 * window_, 0);
    Restart();
    return std::nullopt;
  }
  const int w = window_;
  const size_t slot = static_cast<size_t>(n_ % (2 * w));
  float* row = ring_.data() + slot * m_;
  if (n_ >= 2 * w) {  // step n - 2w leaves the reference (its slot is reused)
    AddCounts(row, -1.0, m_, ref_sum_.data());
    ref_total_ -= totals_[slot];
  }
  if (n_ >= w) {  // step n - w leaves the test window for the reference
    const size_t moved = static_cast<size_t>((n_ - w) % (2 * w));
    MoveCounts(ring_.data() + moved * m_, m_, test_sum_.data(), ref_sum_.data());
    test_total_ -= totals_[moved];
    ref_total_ += totals_[moved];
  }
  StoreCounts(p.data(), assignments, m_, row, test_sum_.data());
  totals_[slot] = assignments;
  steps_[slot] = step;
  test_total_ += assignments;
  ++n_;
  if (n_ < 2 * w || !(test_total_ > 0) || !(ref_total_ > 0)) return std::nullopt;

  const double d = MeanL1(test_sum_.data(), 1.0 / test_total_, ref_sum_.data(),
                          1.0 / ref_total_, m_);
  const bool trusted = static_cast<int>(history_.size()) >= kMinHistory;
  const double threshold =
      std::max(options_.min_size, options_.noise_multiple * noise_);
  if (trusted && d > threshold) {
    if (++above_ >= options_.persistence) {
      Shift s;
      s.step = step;
      s.noise = noise_;
      s.window = w;
      Locate(&s);
      CollectSince(s.change_step);
      ++shifts_;
      Restart();
      return s;
    }
    return std::nullopt;  // a streak's distances stay out of the noise history
  }
  above_ = 0;
  // The noise reference: recent distances without a change.
  if (static_cast<int>(history_.size()) < options_.noise_history) {
    history_.push_back(d);
  } else {
    history_[history_head_] = d;
    history_head_ = (history_head_ + 1) % options_.noise_history;
  }
  if (++since_median_ >= 8 || static_cast<int>(history_.size()) <= kMinHistory) {
    since_median_ = 0;
    noise_ = Median();
  }
  return std::nullopt;
}

int64_t ShiftDetector::MemoryBytes() const {
  // What the detector holds once sized and its noise history full (a
  // function of its options, so the same after a restore).
  const int64_t slots = 2 * static_cast<int64_t>(window_);
  return static_cast<int64_t>(sizeof(*this)) + slots * m_ * int64_t{sizeof(float)} +
         slots * int64_t{sizeof(double) + sizeof(int64_t)} +
         (2 * int64_t{m_} + 2 * int64_t{options_.noise_history}) *
             int64_t{sizeof(double)};
}

void ShiftDetector::SaveTo(internal::SnapshotWriter& out) const {
  out.PutI32(m_);
  out.PutI32(window_);
  out.PutI32(sizing_steps_);
  out.PutDouble(sizing_assignments_);
  out.PutI64(n_);
  out.PutFloats(ring_);
  out.PutDoubles(totals_);
  out.PutI64s(steps_);
  out.PutDoubles(test_sum_);
  out.PutDoubles(ref_sum_);
  out.PutDouble(test_total_);
  out.PutDouble(ref_total_);
  out.PutDoubles(history_);
  out.PutI32(history_head_);
  out.PutDouble(noise_);
  out.PutI32(since_median_);
  out.PutI32(above_);
  out.PutI64(shifts_);
}

void ShiftDetector::LoadFrom(internal::SnapshotReader& in) {
  const int m = in.I32("num_experts");
  if (in.ok() && m != m_) {
    in.Fail("num_experts", absl::StrCat("saved for ", m, ", this has ", m_));
    return;
  }
  const int window = in.IntIn("window", 0, options_.max_window);
  const int sizing_steps = in.IntIn("sizing_steps", 0, kSizingSteps);
  const double sizing_assignments = in.Double("sizing_assignments");
  const int64_t n = in.I64In("n", 0, int64_t{1} << 62);
  const size_t slots = static_cast<size_t>(2 * window);
  std::vector<float> ring = in.Floats("ring", slots * m_);
  std::vector<double> totals = in.Doubles("totals", slots);
  std::vector<int64_t> steps = in.I64s("steps", slots);
  std::vector<double> test_sum = in.Doubles("test_sum", m_);
  std::vector<double> ref_sum = in.Doubles("ref_sum", m_);
  const double test_total = in.Double("test_total");
  const double ref_total = in.Double("ref_total");
  std::vector<double> history = in.Doubles("history", options_.noise_history);
  const int history_head = in.IntIn("history_head", 0, options_.noise_history - 1);
  const double noise = in.Double("noise");
  const int since_median = in.IntIn("since_median", 0, 8);
  const int above = in.IntIn("above", 0, options_.persistence);
  const int64_t shifts = in.I64In("shifts", 0, int64_t{1} << 62);
  if (!in.ok()) return;
  if (ring.size() != slots * m_ || totals.size() != slots || steps.size() != slots ||
      test_sum.size() != static_cast<size_t>(m_) ||
      ref_sum.size() != static_cast<size_t>(m_) ||
      (history_head != 0 && history.size() < static_cast<size_t>(options_.noise_history))) {
    in.Fail("shift", absl::StrCat("window of ", window, " steps does not fit its ",
                                  ring.size(), " values, ", totals.size(),
                                  " totals and ", history.size(), " distances"));
    return;
  }
  window_ = window;
  sizing_steps_ = sizing_steps;
  sizing_assignments_ = sizing_assignments;
  n_ = n;
  ring_ = std::move(ring);
  totals_ = std::move(totals);
  steps_ = std::move(steps);
  test_sum_ = std::move(test_sum);
  ref_sum_ = std::move(ref_sum);
  test_total_ = test_total;
  ref_total_ = ref_total;
  history_ = std::move(history);
  history_head_ = history_head;
  noise_ = noise;
  since_median_ = since_median;
  above_ = above;
  shifts_ = shifts;
}

ShiftMonitor::ShiftMonitor(int num_experts, const ShiftOptions& options) {
  for (int scale : options.scales) {
    detectors_.push_back(std::make_unique<ShiftDetector>(
        num_experts, ScaledShiftOptions(options, scale)));
  }
}

std::optional<Shift> ShiftMonitor::Observe(int64_t step, absl::Span<const double> p,
                                           double assignments) {
  std::optional<Shift> shift;
  last_ = -1;
  for (size_t k = 0; k < detectors_.size(); ++k) {
    std::optional<Shift> s = detectors_[k]->Observe(step, p, assignments);
    if (s.has_value() && !shift.has_value()) {
      shift = s;
      last_ = static_cast<int>(k);
    }
  }
  if (shift.has_value()) {
    for (auto& detector : detectors_) detector->Restart();
  }
  return shift;
}

absl::Span<const double> ShiftMonitor::since_change() const {
  if (last_ < 0) return {};
  return detectors_[last_]->since_change();
}

int64_t ShiftMonitor::MemoryBytes() const {
  int64_t bytes = 0;
  for (const auto& d : detectors_) bytes += d->MemoryBytes();
  return bytes;
}

}  // namespace moecast
