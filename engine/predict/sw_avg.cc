// sw_avg(W): the recursive sliding-window average of Cong et al.
#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/internal/cpu_dispatch.h"
#include "engine/internal/mutex.h"
#include "engine/predict/basic_predictors.h"

namespace moecast {

std::vector<double> SwAvgHorizonWeights(int window, int horizon) {
  const int w = window;
  // Each value in the sliding window, as weights over the W observations.
  std::deque<std::vector<double>> values;
  std::vector<double> running(w, 1.0);  // sum of the window's weight vectors
  for (int i = 0; i < w; ++i) {
    std::vector<double> unit(w, 0.0);
    unit[i] = 1.0;
    values.push_back(std::move(unit));
  }
  std::vector<double> mean(w, 0.0);
  std::vector<double> next(w);
  for (int k = 0; k < horizon; ++k) {
    for (int i = 0; i < w; ++i) next[i] = running[i] / w;
    for (int i = 0; i < w; ++i) {
      mean[i] += next[i];
      running[i] += next[i] - values.front()[i];
    }
    values.pop_front();
    values.push_back(next);
  }
  for (double& v : mean) v /= horizon;
  return mean;
}

namespace {

// Weight vectors depend only on (W, h), so one process-wide cache serves every
// stream. Entries are never removed; references stay valid.
const std::vector<double>& SharedWeights(int window, int horizon) {
  static internal::Mutex mu;
  static auto* cache =
      new std::map<std::pair<int, int>, std::unique_ptr<std::vector<double>>>();
  internal::MutexLock lock(&mu);
  auto& slot = (*cache)[std::make_pair(window, horizon)];
  if (slot == nullptr) {
    slot = std::make_unique<std::vector<double>>(
        SwAvgHorizonWeights(window, horizon));
  }
  return *slot;
}

// The per-step loops over experts, compiled for AVX2 and the baseline.
// Raw pointers: Debian's Abseil hardens Span::operator[] with a bounds
// check, which keeps these loops from vectorising.

// The ring holds floats (half the memory; 7 digits is far below sampling
// noise); the running sum adds exactly what the ring stores.
MOECAST_AVX2_CLONES void ReplaceRow(const double* __restrict__ in, int m,
                                    bool full, float* __restrict__ slot,
                                    double* __restrict__ sum) {
  if (full) {
    for (int e = 0; e < m; ++e) {
      const float x = static_cast<float>(in[e]);
      sum[e] += static_cast<double>(x) - slot[e];
      slot[e] = x;
    }
  } else {
    for (int e = 0; e < m; ++e) {
      const float x = static_cast<float>(in[e]);
      sum[e] += x;
      slot[e] = x;
    }
  }
}

// out[e] = shared * sum[e] + sum_i scales[i] * rows[i][e], added in row
// order (the same result, bit for bit, as scaling `sum` into out and adding
// one scaled row per pass), a block of experts at a time kept in registers
// across all rows: one pass over out instead of one per row.
MOECAST_AVX2_CLONES void ScaleAddRows(const double* __restrict__ sum,
                                      double shared,
                                      const float* const* __restrict__ rows,
                                      const double* __restrict__ scales,
                                      int nrows, int m,
                                      double* __restrict__ out) {
  constexpr int kBlock = 16;
  int e0 = 0;
  for (; e0 + kBlock <= m; e0 += kBlock) {
    double acc[kBlock];
    for (int j = 0; j < kBlock; ++j) acc[j] = shared * sum[e0 + j];
    for (int i = 0; i < nrows; ++i) {
      const float* __restrict__ row = rows[i] + e0;
      const double scale = scales[i];
      for (int j = 0; j < kBlock; ++j) acc[j] += scale * row[j];
    }
    for (int j = 0; j < kBlock; ++j) out[e0 + j] = acc[j];
  }
  for (int e = e0; e < m; ++e) {
    double acc = shared * sum[e];
    for (int i = 0; i < nrows; ++i) acc += scales[i] * rows[i][e];
    out[e] = acc;
  }
}

MOECAST_AVX2_CLONES void AddRow(const float* __restrict__ row, int m,
                                double* __restrict__ out) {
  for (int e = 0; e < m; ++e) out[e] += row[e];
}

class SwAvgPredictor final : public Predictor {
 public:
  SwAvgPredictor(int m, int window)
      : name_(absl::StrCat("sw_avg(", window, ")")),
        m_(m),
        window_(window),
        ring_(static_cast<size_t>(m) * window, 0.0f),
        sum_(m, 0.0) {}

  const std::string& name() const override { return name_; }
  int num_experts() const override { return m_; }
  int memory_steps() const override { return window_; }

  void Observe(absl::Span<const double> p) override {
    ReplaceRow(p.data(), m_, count_ == window_,
               ring_.data() + static_cast<size_t>(head_) * m_, sum_.data());
    if (count_ < window_) ++count_;
    head_ = head_ + 1 == window_ ? 0 : head_ + 1;
    // Recompute the running sum from the ring every W steps, so rounding in
    // the add/subtract updates cannot accumulate.
    if (++since_resum_ >= window_) {
      since_resum_ = 0;
      std::fill(sum_.begin(), sum_.end(), 0.0);
      for (int i = 0; i < count_; ++i) AddRow(Row(i), m_, sum_.data());
    }
  }

  bool Restart(int max_memory) override {
    if (window_ > max_memory) return false;
    head_ = count_ = since_resum_ = 0;
    std::fill(sum_.begin(), sum_.end(), 0.0);
    return true;
  }

  void Forecast(int horizon, absl::Span<double> out) override {
    if (count_ == 0) {
      std::fill(out.begin(), out.end(), 1.0 / m_);
      return;
    }
    const std::vector<double>& w = Weights(count_, horizon);
    // Positions at or after min(h - 1, n) share the newest weight.
    const int distinct = std::min(horizon - 1, count_);
    const double shared = w[count_ - 1];
    row_ptrs_.resize(distinct);
    row_scales_.resize(distinct);
    for (int i = 0; i < distinct; ++i) {
      row_ptrs_[i] = Row(i);
      row_scales_[i] = w[i] - shared;
    }
    ScaleAddRows(sum_.data(), shared, row_ptrs_.data(), row_scales_.data(),
                 distinct, m_, out.data());
  }

  void ForecastPath(int steps, absl::Span<double> out) override {
    if (count_ == 0) {
      std::fill(out.begin(), out.end(), 1.0 / m_);
      return;
    }
    // Slide a copy of the window over its own forecasts.
    std::vector<double> window(static_cast<size_t>(count_) * m_);
    for (int i = 0; i < count_; ++i) {
      std::copy(Row(i), Row(i) + m_, window.begin() + static_cast<size_t>(i) * m_);
    }
    std::vector<double> running(sum_);
    int oldest = 0;
    for (int s = 0; s < steps; ++s) {
      double* f = out.data() + static_cast<size_t>(s) * m_;
      double* old = window.data() + static_cast<size_t>(oldest) * m_;
      for (int e = 0; e < m_; ++e) {
        f[e] = running[e] / count_;
        running[e] += f[e] - old[e];
        old[e] = f[e];
      }
      oldest = oldest + 1 == count_ ? 0 : oldest + 1;
    }
  }

  int64_t MemoryBytes() const override {
    return static_cast<int64_t>(sizeof(*this) + ring_.size() * sizeof(float) +
                                sum_.size() * sizeof(double));
  }

  // The weight caches are not state: they are recomputed on demand and
  // identical wherever they come from.
  absl::Status SaveTo(internal::SnapshotWriter& out) const override {
    out.PutI32(window_);
    out.PutI32(head_);
    out.PutI32(count_);
    out.PutI32(since_resum_);
    // The ring fills from slot 0: the occupied slots are [0, count_).
    out.PutRawFloats(ring_.data(), static_cast<size_t>(count_) * m_);
    out.PutDoubles(sum_);
    return absl::OkStatus();
  }

  void LoadFrom(internal::SnapshotReader& in) override {
    const int window = in.I32("window");
    if (in.ok() && window != window_) {
      in.Fail("window", absl::StrCat("saved for ", window, ", this is ", window_));
      return;
    }
    const int head = in.IntIn("head", 0, window_ - 1);
    const int count = in.IntIn("count", 0, window_);
    const int since_resum = in.IntIn("since_resum", 0, window_ - 1);
    if (in.ok() && count < window_ && head != count) {
      in.Fail("head", absl::StrCat(head, " does not follow a ring of ", count,
                                   " steps"));
    }
    if (!in.ok()) return;
    in.RawFloats("ring", ring_.data(), static_cast<size_t>(count) * m_);
    in.DoublesExact("sum", absl::MakeSpan(sum_));
    head_ = head;
    count_ = count;
    since_resum_ = since_resum;
  }

 private:
  // Observation i of the window, oldest first (0 <= i < count_).
  const float* Row(int i) const {
    int slot = head_ - count_ + i;
    if (slot < 0) slot += window_;
    return ring_.data() + static_cast<size_t>(slot) * m_;
  }

  // Full windows use the shared cache; the first W - 1 steps (a shorter
  // window) compute theirs on the spot rather than fill the cache.
  const std::vector<double>& Weights(int n, int horizon) {
    if (n == window_) {
      // A few horizons per stream: a linear scan beats the shared cache's
      // lock and map lookup.
      for (const auto& [h, w] : local_weights_) {
        if (h == horizon) return *w;
      }
      const std::vector<double>& w = SharedWeights(n, horizon);
      local_weights_.emplace_back(horizon, &w);
      return w;
    }
    warmup_weights_ = SwAvgHorizonWeights(n, horizon);
    return warmup_weights_;
  }

  const std::string name_;
  const int m_;
  const int window_;
  std::vector<float> ring_;  // window_ x m_
  std::vector<double> sum_;   // sum of the stored rows
  int head_ = 0;
  int count_ = 0;
  int since_resum_ = 0;
  std::vector<double> warmup_weights_;
  std::vector<std::pair<int, const std::vector<double>*>> local_weights_;
  // Forecast's scratch (not state): the rows with distinct weights.
  std::vector<const float*> row_ptrs_;
  std::vector<double> row_scales_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Predictor>> MakeSwAvgPredictor(int m,
                                                              int window) {
  if (m < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("sw_avg: num_experts = ", m, " must be >= 1"));
  }
  if (window < 1 || window > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("sw_avg: window = ", window, " must be in [1, 100000]"));
  }
  return std::unique_ptr<Predictor>(new SwAvgPredictor(m, window));
}

}  // namespace moecast
