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

// One steady-state step of the two windows in one pass (n >= 2w): the
// step in `slot` (n - 2w) leaves the reference, the step in `moved` (n - w)
// goes from the test window to the reference, and the new step's counts
// replace `slot` and join the test window. Per expert the same operations
// in the same order as AddCounts(-1), MoveCounts and StoreCounts, so the
// sums are bit-identical to those three passes.
MOECAST_AVX2_CLONES void SlideCounts(const double* __restrict__ p, double a, int m,
                                     float* __restrict__ slot,
                                     const float* __restrict__ moved,
                                     double* __restrict__ test,
                                     double* __restrict__ ref) {
  for (int e = 0; e < m; ++e) {
    const float out = slot[e];
    const float mv = moved[e];
    const float c = static_cast<float>(p[e] * a);
    ref[e] = (ref[e] + -1.0 * out) + mv;
    test[e] = (test[e] - mv) + c;
    slot[e] = c;
  }
}

// SlideCounts for three detectors of one layer (ShiftMonitor's default
// scales) in one pass: the new step's counts are computed once and stored in
// each detector's ring, and each sum sees the same operations as in
// SlideCounts.
struct SlideArgs {
  float* slot;
  const float* moved;
  double* test;
  double* ref;
};
MOECAST_AVX2_CLONES void SlideCounts3(
    const double* __restrict__ p, double a, int m, float* __restrict__ slot0,
    const float* __restrict__ moved0, double* __restrict__ test0,
    double* __restrict__ ref0, float* __restrict__ slot1,
    const float* __restrict__ moved1, double* __restrict__ test1,
    double* __restrict__ ref1, float* __restrict__ slot2,
    const float* __restrict__ moved2, double* __restrict__ test2,
    double* __restrict__ ref2) {
  for (int e = 0; e < m; ++e) {
    const float c = static_cast<float>(p[e] * a);
    const float out0 = slot0[e], mv0 = moved0[e];
    ref0[e] = (ref0[e] + -1.0 * out0) + mv0;
    test0[e] = (test0[e] - mv0) + c;
    slot0[e] = c;
    const float out1 = slot1[e], mv1 = moved1[e];
    ref1[e] = (ref1[e] + -1.0 * out1) + mv1;
    test1[e] = (test1[e] - mv1) + c;
    slot1[e] = c;
    const float out2 = slot2[e], mv2 = moved2[e];
    ref2[e] = (ref2[e] + -1.0 * out2) + mv2;
    test2[e] = (test2[e] - mv2) + c;
    slot2[e] = c;
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

void ShiftDetector::Remember(double d) {
  if (static_cast<int>(history_.size()) < options_.noise_history) {
    history_.push_back(d);
  } else {
    removed_.push_back(history_[history_head_]);
    history_[history_head_] = d;
    history_head_ = (history_head_ + 1) % options_.noise_history;
  }
  added_.push_back(d);
}

void ShiftDetector::ResortHistory() {
  sorted_.clear();
  added_.clear();
  removed_.clear();
  nans_ = 0;
  for (double d : history_) {
    if (std::isnan(d)) {
      ++nans_;
    } else {
      sorted_.push_back(d);
    }
  }
  std::sort(sorted_.begin(), sorted_.end());
}

void ShiftDetector::MergeHistory() {
  // The few distances added and removed since the last median (at most 8
  // each while the history is longer than that) go into sorted_ in one
  // forward pass. Equal values are interchangeable, so a value both added
  // and removed cancels out, and every other removed value is in sorted_.
  const auto drop_nans = [this](std::vector<double>& v, int sign) {
    const auto end = std::remove_if(v.begin(), v.end(),
                                    [](double x) { return std::isnan(x); });
    nans_ += sign * static_cast<int>(v.end() - end);
    v.erase(end, v.end());
    std::sort(v.begin(), v.end());
  };
  drop_nans(added_, 1);
  drop_nans(removed_, -1);
  {
    size_t i = 0, j = 0, ka = 0, kr = 0;
    while (i < added_.size() && j < removed_.size()) {
      if (added_[i] < removed_[j]) {
        added_[ka++] = added_[i++];
      } else if (removed_[j] < added_[i]) {
        removed_[kr++] = removed_[j++];
      } else {
        ++i;
        ++j;
      }
    }
    while (i < added_.size()) added_[ka++] = added_[i++];
    while (j < removed_.size()) removed_[kr++] = removed_[j++];
    added_.resize(ka);
    removed_.resize(kr);
  }
  if (!added_.empty() || !removed_.empty()) {
    scratch_.resize(sorted_.size() + added_.size() - removed_.size());
    double* out = scratch_.data();
    size_t a = 0, r = 0;
    for (const double x : sorted_) {
      while (a < added_.size() && added_[a] < x) *out++ = added_[a++];
      if (r < removed_.size() && x == removed_[r]) {
        ++r;
        continue;
      }
      *out++ = x;
    }
    while (a < added_.size()) *out++ = added_[a++];
    sorted_.swap(scratch_);
  }
  added_.clear();
  removed_.clear();
}

double ShiftDetector::Median() {
  MergeHistory();
  const size_t k = history_.size() / 2;
  // The element nth_element would place at k: without NaNs, the k-th
  // smallest, read from the sorted copy instead of a selection every time.
  if (nans_ == 0) return sorted_[k];
  scratch_.assign(history_.begin(), history_.end());
  std::nth_element(scratch_.begin(), scratch_.begin() + k, scratch_.end());
  return scratch_[k];
}

bool ShiftDetector::Prepare(double assignments) {
  since_change_.clear();
  if (!(assignments > 0)) return false;
  if (window_ == 0) {
    sizing_assignments_ += assignments;
    if (++sizing_steps_ < kSizingSteps) return false;
    const double per_step = sizing_assignments_ / sizing_steps_;
    window_ = static_cast<int>(std::clamp(
        std::ceil(options_.assignments_per_window / per_step),
        static_cast<double>(options_.min_window),
        static_cast<double>(options_.max_window)));
    ring_.assign(static_cast<size_t>(2 * window_) * m_, 0.0f);
    totals_.assign(2 * window_, 0.0);
    steps_.assign(2 * window_, 0);
    Restart();
    return false;
  }
  return true;
}

void ShiftDetector::SlideTotals(int64_t step, double assignments) {
  const int w = window_;
  const size_t slot = static_cast<size_t>(n_ % (2 * w));
  const size_t moved = static_cast<size_t>((n_ + w) % (2 * w));  // n - w
  if (n_ >= 2 * w) ref_total_ -= totals_[slot];  // step n - 2w leaves
  if (n_ >= w) {  // step n - w goes from the test window to the reference
    test_total_ -= totals_[moved];
    ref_total_ += totals_[moved];
  }
  totals_[slot] = assignments;
  steps_[slot] = step;
  test_total_ += assignments;
  ++n_;
}

std::optional<Shift> ShiftDetector::Observe(int64_t step,
                                            absl::Span<const double> p,
                                            double assignments) {
  if (!Prepare(assignments)) return std::nullopt;
  const int w = window_;
  const size_t slot = static_cast<size_t>(n_ % (2 * w));
  float* row = ring_.data() + slot * m_;
  const size_t moved = static_cast<size_t>((n_ + w) % (2 * w));  // n - w
  if (n_ >= 2 * w) {  // steady state: both windows slide in one pass
    SlideCounts(p.data(), assignments, m_, row, ring_.data() + moved * m_,
                test_sum_.data(), ref_sum_.data());
  } else {  // the windows fill
    if (n_ >= w) {  // step n - w leaves the test window for the reference
      MoveCounts(ring_.data() + moved * m_, m_, test_sum_.data(), ref_sum_.data());
    }
    StoreCounts(p.data(), assignments, m_, row, test_sum_.data());
  }
  SlideTotals(step, assignments);
  return Evaluate(step);
}

std::optional<Shift> ShiftDetector::Evaluate(int64_t step) {
  if (n_ < 2 * window_ || !(test_total_ > 0) || !(ref_total_ > 0)) {
    return std::nullopt;
  }
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
      s.window = window_;
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
  Remember(d);
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
         // test and ref sums; the history, its sorted copy and the buffer
         // the sorted copy is merged into
         (2 * int64_t{m_} + 3 * int64_t{options_.noise_history}) *
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
  ResortHistory();
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
  // Three scales past their windows' fill (the default, and the steady
  // state): their windows slide in one pass over the step's counts.
  // Otherwise each detector observes alone; either way the same values.
  bool fused = detectors_.size() == 3;
  for (const auto& d : detectors_) {
    fused = fused && d->window_ > 0 && d->n_ >= 2 * d->window_ &&
            static_cast<int>(p.size()) == d->m_;
  }
  if (fused && assignments > 0) {
    SlideArgs args[3];
    for (int k = 0; k < 3; ++k) {
      ShiftDetector& d = *detectors_[k];
      (void)d.Prepare(assignments);  // sized: clears since_change_ only
      const int w = d.window_;
      const size_t slot = static_cast<size_t>(d.n_ % (2 * w));
      const size_t moved = static_cast<size_t>((d.n_ + w) % (2 * w));
      args[k] = SlideArgs{d.ring_.data() + slot * d.m_, d.ring_.data() + moved * d.m_,
                          d.test_sum_.data(), d.ref_sum_.data()};
    }
    SlideCounts3(p.data(), assignments, detectors_[0]->m_, args[0].slot,
                 args[0].moved, args[0].test, args[0].ref, args[1].slot,
                 args[1].moved, args[1].test, args[1].ref, args[2].slot,
                 args[2].moved, args[2].test, args[2].ref);
  }
  for (size_t k = 0; k < detectors_.size(); ++k) {
    std::optional<Shift> s;
    if (fused && assignments > 0) {
      detectors_[k]->SlideTotals(step, assignments);
      s = detectors_[k]->Evaluate(step);
    } else {
      s = detectors_[k]->Observe(step, p, assignments);
    }
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
