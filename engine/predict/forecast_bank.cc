#include "engine/predict/forecast_bank.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/internal/cpu_dispatch.h"

namespace moecast {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Scored forecasts every predictor needs at a horizon before auto ranks by it.
constexpr int64_t kMinScoresToRank = 3;

// Experts whose residual each scored forecast adds to the interval ring.
constexpr int kResidualsPerScore = 8;

int Stride(int horizon) { return std::max(1, horizon / 10); }

// The per-expert loops of Observe, each one pass over M values, compiled for
// AVX2 and the baseline (cpu_dispatch.h). Raw pointers: Debian's Abseil
// bounds-checks Span::operator[], which keeps loops from vectorising.

MOECAST_AVX2_CLONES void AddScaled(const double* __restrict__ in, double scale,
                                   int m, double* __restrict__ cum) {
  for (int e = 0; e < m; ++e) cum[e] += in[e] * scale;
}

// realised[e] = (cum[e] - start[e]) * inv_total: the token-weighted mean
// share of each expert since an origin.
MOECAST_AVX2_CLONES void RealisedMean(const double* __restrict__ cum,
                                      const double* __restrict__ start,
                                      double inv_total, int m,
                                      double* __restrict__ realised) {
  for (int e = 0; e < m; ++e) realised[e] = (cum[e] - start[e]) * inv_total;
}

MOECAST_AVX2_CLONES double L1(const float* __restrict__ f,
                              const double* __restrict__ y, int m) {
  double l1 = 0;
#pragma omp simd reduction(+ : l1)
  for (int e = 0; e < m; ++e) l1 += std::abs(f[e] - y[e]);
  return l1;
}

// The scaled residuals (y_e - f_e) / sqrt(max(f_e, 1e-12)) of experts
// e0 .. e0 + n - 1 into out[0 .. n): independent lanes (a square root and a
// division each), vectorised.
MOECAST_AVX2_CLONES void ScaledResiduals(const float* __restrict__ f,
                                         const double* __restrict__ y, int e0,
                                         int n, float* __restrict__ out) {
#pragma omp simd
  for (int i = 0; i < n; ++i) {
    const double fe = f[e0 + i];
    out[i] = static_cast<float>((y[e0 + i] - fe) /
                                std::sqrt(std::max<double>(fe, 1e-12)));
  }
}

// NormalizeForecast(raw) stored as floats in `out`, and w * the normalised
// values added to `blend` (if not null): a summing pass and a writing pass
// (raw itself is left as it is).
MOECAST_AVX2_CLONES void NormalizeInto(const double* __restrict__ raw, int m,
                                       float* __restrict__ out,
                                       float* __restrict__ blend, double w) {
  double sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int e = 0; e < m; ++e) sum += raw[e] > 0 ? raw[e] : 0;  // NaN -> 0
  if (!(sum > 0 && sum < 1e300)) {
    const double u = 1.0 / m;
    for (int e = 0; e < m; ++e) out[e] = static_cast<float>(u);
    if (blend != nullptr) {
      for (int e = 0; e < m; ++e) blend[e] += static_cast<float>(w * u);
    }
    return;
  }
  const double inv = 1.0 / sum;
  if (blend == nullptr) {
    for (int e = 0; e < m; ++e) {
      out[e] = static_cast<float>((raw[e] > 0 ? raw[e] : 0) * inv);
    }
  } else {
    for (int e = 0; e < m; ++e) {
      const double v = (raw[e] > 0 ? raw[e] : 0) * inv;
      out[e] = static_cast<float>(v);
      blend[e] += static_cast<float>(w * v);
    }
  }
}

// w * a normalised forecast added to `blend`.
MOECAST_AVX2_CLONES void BlendAdd(const float* __restrict__ in, int m,
                                  float* __restrict__ blend, double w) {
  for (int e = 0; e < m; ++e) blend[e] += static_cast<float>(w * in[e]);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ForecastBank>> ForecastBank::Create(
    std::vector<std::unique_ptr<Predictor>> predictors,
    const ForecastBankOptions& options) {
  if (predictors.empty()) {
    return absl::InvalidArgumentError("forecast bank: no predictors");
  }
  const int m = predictors[0]->num_experts();
  std::set<std::string> names;
  for (const auto& p : predictors) {
    if (p->num_experts() != m) {
      return absl::InvalidArgumentError(absl::StrCat(
          "forecast bank: predictor ", p->name(), " has ", p->num_experts(),
          " experts, ", predictors[0]->name(), " has ", m));
    }
    if (!names.insert(p->name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("forecast bank: predictor ", p->name(), " is listed twice"));
    }
    if (p->name() == "auto") {
      return absl::InvalidArgumentError(
          "forecast bank: 'auto' is the bank's own choice, not a predictor");
    }
  }
  if (options.horizons.empty()) {
    return absl::InvalidArgumentError("forecast bank: no horizons");
  }
  std::set<int> seen;
  for (int h : options.horizons) {
    if (h < 1 || h > 1000000) {
      return absl::InvalidArgumentError(
          absl::StrCat("forecast bank: horizon ", h, " must be in [1, 1000000]"));
    }
    if (!seen.insert(h).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("forecast bank: horizon ", h, " is listed twice"));
    }
  }
  if (!(options.error_half_life > 0) || !std::isfinite(options.error_half_life)) {
    return absl::InvalidArgumentError(
        absl::StrCat("forecast bank: error_half_life = ",
                     options.error_half_life, " must be positive"));
  }
  if (options.auto_blend < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "forecast bank: auto_blend = ", options.auto_blend, " must be >= 1"));
  }
  if (options.residual_window < 16 || options.residual_window > (1 << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("forecast bank: residual_window = ",
                     options.residual_window, " must be in [16, 16777216]"));
  }
  return std::unique_ptr<ForecastBank>(
      new ForecastBank(std::move(predictors), options));
}

ForecastBank::ForecastBank(std::vector<std::unique_ptr<Predictor>> predictors,
                           const ForecastBankOptions& options)
    : m_(predictors[0]->num_experts()),
      options_(options),
      error_decay_(std::exp2(-1.0 / options.error_half_life)),
      predictors_(std::move(predictors)),
      tracks_((predictors_.size() + 1) * options.horizons.size()),
      cum_counts_(m_, 0.0),
      scratch_(m_, 0.0) {
  for (const auto& p : predictors_) names_.push_back(p->name());
  for (Track& t : tracks_) t.recent_l1 = kNaN;
  // Origins with pending forecasts at horizon h: at most ceil(h / stride).
  // Their count buffers are allocated once and reused, so a bank's memory
  // is fixed after construction (and the same after a restore).
  for (int h : options_.horizons) {
    max_snapshots_ += (h + Stride(h) - 1) / Stride(h);
  }
  snapshot_pool_.resize(max_snapshots_, std::vector<double>(m_, 0.0));
  realised_.assign(m_, 0.0);
}

int ForecastBank::TakeBuffer() {
  int id;
  if (free_buffers_.empty()) {
    id = static_cast<int>(buffers_.size());
    buffers_.emplace_back(m_);
    buffer_refs_.push_back(0);
  } else {
    id = free_buffers_.back();
    free_buffers_.pop_back();
  }
  buffer_refs_[id] = 1;
  return id;
}

void ForecastBank::ReleaseBuffer(int buffer) {
  if (--buffer_refs_[buffer] == 0) free_buffers_.push_back(buffer);
}

ForecastBank::Snapshot* ForecastBank::FindSnapshot(int64_t origin) {
  auto it = std::lower_bound(
      snapshots_.begin(), snapshots_.end(), origin,
      [](const Snapshot& s, int64_t o) { return s.origin < o; });
  return it != snapshots_.end() && it->origin == origin ? &*it : nullptr;
}

const ForecastBank::Snapshot* ForecastBank::FindSnapshot(int64_t origin) const {
  return const_cast<ForecastBank*>(this)->FindSnapshot(origin);
}

int ForecastBank::HorizonIndex(int horizon) const {
  int best = 0;
  double best_dist = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < options_.horizons.size(); ++i) {
    const double d = std::abs(std::log(static_cast<double>(horizon)) -
                              std::log(static_cast<double>(options_.horizons[i])));
    if (d < best_dist) {
      best_dist = d;
      best = static_cast<int>(i);
    }
  }
  return best;
}

ForecastBank::Weights ForecastBank::AutoWeights(int h) const {
  // Rank by the recent error at horizon h once every predictor has enough
  // scores there; until then (a long horizon is first scored h steps after
  // the start, and then only every h/10 steps), by the longest shorter
  // horizon that has them.
  for (int k = h; k >= 0; --k) {
    bool ready = true;
    for (size_t j = 0; j < predictors_.size() && ready; ++j) {
      ready = TrackOf(static_cast<int>(j), k).scored >= kMinScoresToRank;
    }
    if (!ready || (k < h && MemoryPrior(h) >= 0)) continue;
    absl::InlinedVector<std::pair<double, int>, 8> ranked;
    for (size_t j = 0; j < predictors_.size(); ++j) {
      const Track& t = TrackOf(static_cast<int>(j), k);
      const double lambda = options_.auto_long_run_weight;
      ranked.emplace_back(
          (1 - lambda) * t.recent_l1 + lambda * (t.sum_l1 / t.scored),
          static_cast<int>(j));
    }
    std::sort(ranked.begin(), ranked.end());
    // Blend only predictors within auto_blend_margin of the best: mixing in
    // a clearly worse one costs more than averaging out noise gains.
    size_t n = std::min<size_t>(ranked.size(), options_.auto_blend);
    for (size_t i = 1; i < n; ++i) {
      if (ranked[i].first > ranked[0].first * (1 + options_.auto_blend_margin)) {
        n = i;
        break;
      }
    }
    Weights weights;
    double total = 0;
    for (size_t i = 0; i < n; ++i) {
      const double err = std::max(ranked[i].first, 1e-12);
      const double w = 1.0 / (err * err);
      weights.emplace_back(ranked[i].second, w);
      total += w;
    }
    for (auto& [j, w] : weights) w /= total;
    return weights;
  }
  const int prior = MemoryPrior(h);
  return {{prior >= 0 ? prior : 0, 1.0}};
}

int ForecastBank::MemoryPrior(int h) const {
  if (!options_.auto_memory_prior || stable_history_ <= 0) return -1;
  const double target = std::log(static_cast<double>(options_.horizons[h]));
  int best = -1;
  double best_dist = 0;
  for (size_t j = 0; j < predictors_.size(); ++j) {
    const int memory = predictors_[j]->memory_steps();
    if (memory <= 0 || std::min<int64_t>(memory, index_) > stable_history_) continue;
    const double d = std::abs(std::log(static_cast<double>(memory)) - target);
    if (best < 0 || d < best_dist) {  // ties: the first listed
      best = static_cast<int>(j);
      best_dist = d;
    }
  }
  return best;
}

std::string ForecastBank::AutoLabel(const Weights& weights) const {
  if (weights.size() == 1) return names_[weights[0].first];
  std::string label;
  for (const auto& [j, w] : weights) {
    absl::StrAppend(&label, label.empty() ? "" : "+", names_[j]);
  }
  return label;
}

std::string ForecastBank::AutoChoice(int horizon) const {
  return AutoLabel(AutoWeights(HorizonIndex(horizon)));
}

void ForecastBank::Observe(int64_t step, absl::Span<const double> p,
                           double assignments, bool take_origins) {
  ObservePredictors(p);
  Advance(step, p, assignments, take_origins);
}

void ForecastBank::ObservePredictors(absl::Span<const double> p) {
  for (auto& predictor : predictors_) predictor->Observe(p);
}

int ForecastBank::RestartPredictors(absl::Span<const double> rows,
                                    int max_memory) {
  const size_t steps = rows.size() / m_;
  int restarted = 0;
  for (auto& predictor : predictors_) {
    if (!predictor->Restart(max_memory)) continue;
    ++restarted;
    for (size_t i = 0; i < steps; ++i) predictor->Observe(rows.subspan(i * m_, m_));
  }
  return restarted;
}

void ForecastBank::AppendDueRefits(std::vector<Predictor*>* refits) const {
  for (const auto& predictor : predictors_) {
    if (predictor->refit_due()) refits->push_back(predictor.get());
  }
}

void ForecastBank::Advance(int64_t step, absl::Span<const double> p,
                           double assignments, bool take_origins) {
  AddScaled(p.data(), assignments, m_, cum_counts_.data());
  cum_assignments_ += assignments;
  ++index_;
  last_step_ = step;

  const size_t num_h = options_.horizons.size();
  if (options_.per_step_mape) {
    for (Track& t : tracks_) {
      for (Pending& pending : t.pending) {
        const float* f = Values(pending.buffer);
        double sum = 0;
        int n = 0;
        for (int e = 0; e < m_; ++e) {
          if (p[e] > 0) {
            sum += std::abs(f[e] - p[e]) / p[e];
            ++n;
          }
        }
        if (n > 0) pending.step_mape_sum += sum / n;
      }
    }
  }
  // Score the forecasts whose horizon has passed; their buffers go back to
  // the pools. Every track of a horizon has a forecast from the same origin,
  // so the realised mean is computed once per origin and step.
  for (size_t h = 0; h < num_h; ++h) {
    realised_origin_ = -1;
    for (int j = -1; j < static_cast<int>(predictors_.size()); ++j) {
      Track& t = TrackOf(j, static_cast<int>(h));
      while (!t.pending.empty() &&
             t.pending.front().origin_index + options_.horizons[h] == index_) {
        Score(j, static_cast<int>(h), t);
        // A snapshot lives as long as a pending forecast refers to it.
        Snapshot* snap = FindSnapshot(t.pending.front().origin_index);
        if (--snap->refs == 0) {
          snapshot_pool_.push_back(std::move(snap->counts));
          snapshots_.erase(snapshots_.begin() + (snap - snapshots_.data()));
        }
        ReleaseBuffer(t.pending.front().buffer);
        t.pending.pop_front();
      }
    }
  }
  // New origins.
  if (!take_origins) return;
  for (size_t h = 0; h < num_h; ++h) {
    const int horizon = options_.horizons[h];
    if (index_ % Stride(horizon) != 0) continue;
    if (snapshots_.empty() || snapshots_.back().origin != index_) {
      Snapshot snap;
      snap.origin = index_;
      if (!snapshot_pool_.empty()) {
        snap.counts = std::move(snapshot_pool_.back());
        snapshot_pool_.pop_back();
      }
      snap.counts.assign(cum_counts_.begin(), cum_counts_.end());
      snap.assignments = cum_assignments_;
      snapshots_.push_back(std::move(snap));
    }
    snapshots_.back().refs += static_cast<int>(predictors_.size()) + 1;
    const Weights weights = AutoWeights(static_cast<int>(h));
    Pending blend{step, index_, TakeBuffer()};
    float* blend_values = Values(blend.buffer);
    std::fill(blend_values, blend_values + m_, 0.0f);
    for (size_t j = 0; j < predictors_.size(); ++j) {
      double weight = 0;
      bool blended = false;
      for (const auto& [k, w] : weights) {
        if (k != static_cast<int>(j)) continue;
        weight = w;
        blended = true;
      }
      float* blend_into = blended ? blend_values : nullptr;
      // A flat forecast is the same at every horizon: normalised once per
      // origin and shared by the other horizons' tracks.
      int shared = -1;
      if (predictors_[j]->flat_forecast()) {
        for (size_t k = 0; k < h && shared < 0; ++k) {
          const Track& t = TrackOf(static_cast<int>(j), static_cast<int>(k));
          if (!t.pending.empty() && t.pending.back().origin_index == index_) {
            shared = t.pending.back().buffer;
          }
        }
      }
      Pending pending{step, index_, shared};
      if (shared >= 0) {
        ++buffer_refs_[shared];
        if (blend_into != nullptr) BlendAdd(Values(shared), m_, blend_into, weight);
      } else {
        pending.buffer = TakeBuffer();
        predictors_[j]->Forecast(horizon, absl::MakeSpan(scratch_));
        NormalizeInto(scratch_.data(), m_, Values(pending.buffer), blend_into,
                      weight);
      }
      TrackOf(static_cast<int>(j), static_cast<int>(h))
          .pending.push_back(std::move(pending));
    }
    TrackOf(-1, static_cast<int>(h)).pending.push_back(std::move(blend));
  }
}

void ForecastBank::Score(int predictor, int h, Track& t) {
  const Pending& pending = t.pending.front();
  const Snapshot& snap = *FindSnapshot(pending.origin_index);
  const double* start = snap.counts.data();
  // The realised token-weighted mean since the origin, shared by every
  // track scored from it in this step.
  if (realised_origin_ != pending.origin_index) {
    const double total = cum_assignments_ - snap.assignments;
    RealisedMean(cum_counts_.data(), start, total > 0 ? 1.0 / total : 0.0, m_,
                 realised_.data());
    realised_origin_ = pending.origin_index;
  }
  const double* realised = realised_.data();
  const float* f = Values(pending.buffer);
  // L1 of the forecast against the realised mean: the only per-expert work
  // every scored forecast needs (vectorised).
  const double l1 = L1(f, realised, m_);
  // Residuals for intervals: a rotating sample of experts per scored
  // forecast bounds the cost (the ring pools experts anyway).
  const int sample = std::min(m_, kResidualsPerScore);
  const int cursor = static_cast<int>(t.residual_cursor);
  float r[kResidualsPerScore];
  // Experts cursor, cursor + 1, ... wrapping at M: at most two runs.
  const int first = std::min(sample, m_ - cursor);
  ScaledResiduals(f, realised, cursor, first, r);
  if (first < sample) ScaledResiduals(f, realised, 0, sample - first, r + first);
  const size_t window = static_cast<size_t>(options_.residual_window);
  for (int i = 0; i < sample; ++i) {
    if (t.residuals.size() < window) {
      t.residuals.push_back(r[i]);
    } else {
      t.residuals[t.residual_head] = r[i];
      t.residual_head =
          t.residual_head + 1 == t.residuals.size() ? 0 : t.residual_head + 1;
    }
  }
  t.residual_cursor = cursor + sample < m_ ? cursor + sample : cursor + sample - m_;
  const double w = t.weight * error_decay_;
  t.recent_l1 = t.scored == 0 ? l1 : (w * t.recent_l1 + l1) / (w + 1);
  t.weight = w + 1;
  t.sum_l1 += l1;
  ++t.scored;
  if (!listener_) return;
  // The full report (MAPE needs a division per expert): only when asked.
  ScoredForecast s;
  s.predictor = predictor;
  s.horizon = options_.horizons[h];
  s.origin_step = pending.origin_step;
  s.origin_index = pending.origin_index;
  s.l1 = l1;
  double mape_sum = 0;
  int mape_n = 0;
  for (int e = 0; e < m_; ++e) {
    const double y = realised[e];
    if (y > 0) {
      mape_sum += std::abs(f[e] - y) / y;
      ++mape_n;
    } else {
      ++s.mape_experts_excluded;
    }
  }
  s.mape = mape_n > 0 ? mape_sum / mape_n : kNaN;
  s.step_mape = options_.per_step_mape ? pending.step_mape_sum / s.horizon : kNaN;
  s.forecast = absl::MakeConstSpan(f, m_);
  s.realised = absl::MakeConstSpan(realised_);
  listener_(s);
}

absl::StatusOr<BankForecast> ForecastBank::Forecast(int horizon,
                                                    absl::string_view predictor,
                                                    double level) {
  if (horizon < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("horizon ", horizon, " must be >= 1"));
  }
  if (!(level > 0 && level < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("interval level ", level, " must be in (0, 1)"));
  }
  const int h = HorizonIndex(horizon);
  int j;
  if (predictor == "auto") {
    const Weights weights = AutoWeights(h);
    BankForecast out;
    out.predictor = AutoLabel(weights);
    out.mean.assign(m_, 0.0);
    for (const auto& [k, w] : weights) {
      predictors_[k]->Forecast(horizon, absl::MakeSpan(scratch_));
      NormalizeForecast(absl::MakeSpan(scratch_));
      for (int e = 0; e < m_; ++e) out.mean[e] += w * scratch_[e];
    }
    NormalizeForecast(absl::MakeSpan(out.mean));
    AddInterval(TrackOf(-1, h), level, &out);
    return out;
  } else {
    auto it = std::find(names_.begin(), names_.end(), predictor);
    if (it == names_.end()) {
      return absl::NotFoundError(absl::StrCat(
          "predictor '", predictor, "' is not in this job's bank (",
          absl::StrJoin(names_, ", "), ", or auto)"));
    }
    j = static_cast<int>(it - names_.begin());
  }
  BankForecast out;
  out.predictor = names_[j];
  out.mean.resize(m_);
  predictors_[j]->Forecast(horizon, absl::MakeSpan(out.mean));
  NormalizeForecast(absl::MakeSpan(out.mean));
  AddInterval(TrackOf(j, h), level, &out);
  return out;
}

void ForecastBank::AddInterval(const Track& t, double level,
                               BankForecast* out) const {
  if (t.residuals.empty()) return;
  std::vector<float> r = t.residuals;
  auto quantile = [&](double q) {
    const size_t k = std::min(r.size() - 1, static_cast<size_t>(q * r.size()));
    std::nth_element(r.begin(), r.begin() + k, r.end());
    return static_cast<double>(r[k]);
  };
  const double lo = quantile((1 - level) / 2);
  const double hi = quantile((1 + level) / 2);
  out->lower.resize(m_);
  out->upper.resize(m_);
  for (int e = 0; e < m_; ++e) {
    const double scale = std::sqrt(std::max(out->mean[e], 1e-12));
    out->lower[e] = std::clamp(out->mean[e] + lo * scale, 0.0, 1.0);
    out->upper[e] = std::clamp(out->mean[e] + hi * scale, 0.0, 1.0);
  }
}

absl::StatusOr<std::vector<double>> ForecastBank::ForecastPath(
    int steps, absl::string_view predictor) {
  if (steps < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("path length ", steps, " must be >= 1"));
  }
  Weights weights;
  if (predictor == "auto") {
    weights = AutoWeights(HorizonIndex(steps));
  } else {
    auto it = std::find(names_.begin(), names_.end(), predictor);
    if (it == names_.end()) {
      return absl::NotFoundError(
          absl::StrCat("predictor '", predictor, "' is not in this job's bank"));
    }
    weights = {{static_cast<int>(it - names_.begin()), 1.0}};
  }
  const size_t n = static_cast<size_t>(steps) * m_;
  std::vector<double> path(n, 0.0);
  std::vector<double> one(weights.size() > 1 ? n : 0);
  for (const auto& [j, w] : weights) {
    if (weights.size() == 1) {
      predictors_[j]->ForecastPath(steps, absl::MakeSpan(path));
      break;
    }
    predictors_[j]->ForecastPath(steps, absl::MakeSpan(one));
    for (size_t i = 0; i < n; ++i) path[i] += w * one[i];
  }
  for (int s = 0; s < steps; ++s) {
    NormalizeForecast(absl::MakeSpan(path.data() + static_cast<size_t>(s) * m_, m_));
  }
  return path;
}

std::vector<PredictorScore> ForecastBank::Scores() const {
  std::vector<PredictorScore> out;
  for (int j = -1; j < static_cast<int>(predictors_.size()); ++j) {
    for (size_t h = 0; h < options_.horizons.size(); ++h) {
      const Track& t = TrackOf(j, static_cast<int>(h));
      PredictorScore s;
      s.name = j < 0 ? "auto" : names_[j];
      s.horizon = options_.horizons[h];
      s.scored = t.scored;
      s.recent_l1 = t.recent_l1;
      s.mean_l1 = t.scored > 0 ? t.sum_l1 / t.scored : kNaN;
      out.push_back(s);
    }
  }
  return out;
}

int64_t ForecastBank::MemoryBytes() const {
  int64_t bytes = sizeof(*this);
  for (const auto& p : predictors_) bytes += p->MemoryBytes();
  for (const Track& t : tracks_) {
    bytes += sizeof(Track) + t.residuals.capacity() * sizeof(float);
    bytes += t.pending.size() * sizeof(Pending);
  }
  for (const Snapshot& snap : snapshots_) {
    bytes += sizeof(Snapshot) + snap.counts.capacity() * sizeof(double);
  }
  bytes += (cum_counts_.size() + scratch_.size()) * sizeof(double);
  for (const auto& buffer : buffers_) {
    bytes += sizeof(buffer) + buffer.capacity() * sizeof(float) + sizeof(int);
  }
  for (const auto& buffer : snapshot_pool_) {
    bytes += buffer.capacity() * sizeof(double);
  }
  bytes += realised_.capacity() * sizeof(double);
  return bytes;
}

absl::Status ForecastBank::SaveTo(internal::SnapshotWriter& out) const {
  using internal::SnapshotTag;
  out.PutI32(m_);
  out.PutStrings(names_);
  out.PutI32s(options_.horizons);
  for (const auto& p : predictors_) {
    const size_t section = out.BeginSection(SnapshotTag("PRED"));
    if (absl::Status s = p->SaveTo(out); !s.ok()) return s;
    out.EndSection(section);
  }
  out.PutU64(tracks_.size());
  for (const Track& t : tracks_) {
    out.PutU64(t.pending.size());
    for (const Pending& p : t.pending) {
      out.PutI64(p.origin_step);
      out.PutI64(p.origin_index);
      out.PutDouble(p.step_mape_sum);
      out.PutRawFloats(Values(p.buffer), m_);
    }
    out.PutI64(t.scored);
    out.PutDouble(t.recent_l1);
    out.PutDouble(t.weight);
    out.PutDouble(t.sum_l1);
    out.PutFloats(t.residuals);
    out.PutU64(t.residuals.capacity());  // MemoryBytes counts it
    out.PutU64(t.residual_head);
    out.PutI64(t.residual_cursor);
  }
  out.PutDoubles(cum_counts_);
  out.PutDouble(cum_assignments_);
  out.PutU64(snapshots_.size());
  for (const Snapshot& snap : snapshots_) {
    out.PutI64(snap.origin);
    out.PutRawDoubles(snap.counts.data(), m_);
    out.PutDouble(snap.assignments);
    out.PutI32(snap.refs);
  }
  out.PutI64(index_);
  out.PutI64(last_step_);
  // Free forecast buffers hold nothing that is read again (they are
  // overwritten when reused), but MemoryBytes counts them.
  out.PutU64(free_buffers_.size());
  return absl::OkStatus();
}

void ForecastBank::LoadFrom(internal::SnapshotReader& in) {
  using internal::SnapshotTag;
  const int m = in.I32("num_experts");
  const std::vector<std::string> names = in.Strings("predictors", 1024, 4096);
  const std::vector<int> horizons = in.I32s("horizons", 1024);
  if (in.ok() && (m != m_ || names != names_ || horizons != options_.horizons)) {
    in.Fail("bank", absl::StrCat(
        "saved for ", m, " experts, predictors [", absl::StrJoin(names, ", "),
        "] and horizons [", absl::StrJoin(horizons, ", "), "]; this bank has ",
        m_, ", [", absl::StrJoin(names_, ", "), "] and [",
        absl::StrJoin(options_.horizons, ", "), "]"));
    return;
  }
  for (size_t j = 0; j < predictors_.size() && in.ok(); ++j) {
    internal::SnapshotReader p = in.Section(SnapshotTag("PRED"), names_[j]);
    predictors_[j]->LoadFrom(p);
    p.ExpectEnd();
  }
  if (!in.ok()) return;
  const size_t num_tracks = in.Count("tracks", tracks_.size(), 1);
  if (in.ok() && num_tracks != tracks_.size()) {
    in.Fail("tracks", absl::StrCat(num_tracks, " tracks, expected ",
                                   tracks_.size()));
    return;
  }
  const size_t num_h = options_.horizons.size();
  const size_t pending_bytes = 8 * 3 + 4 * static_cast<size_t>(m_);
  std::vector<Track> tracks(tracks_.size());
  // Each pending forecast's values as read; Pending::buffer indexes this
  // until the buffers are rebuilt at the end.
  std::vector<std::vector<float>> values;
  for (size_t i = 0; i < tracks.size() && in.ok(); ++i) {
    Track& t = tracks[i];
    const size_t n = in.Count("pending", size_t{1} << 24, pending_bytes);
    for (size_t k = 0; k < n && in.ok(); ++k) {
      Pending p;
      p.origin_step = in.I64("pending.origin_step");
      p.origin_index = in.I64("pending.origin_index");
      p.step_mape_sum = in.Double("pending.step_mape_sum");
      p.buffer = static_cast<int>(values.size());
      values.emplace_back(m_);
      in.RawFloats("pending.forecast", values.back().data(), m_);
      t.pending.push_back(std::move(p));
    }
    t.scored = in.I64("scored");
    t.recent_l1 = in.Double("recent_l1");
    t.weight = in.Double("weight");
    t.sum_l1 = in.Double("sum_l1");
    std::vector<float> residuals =
        in.Floats("residuals", static_cast<size_t>(options_.residual_window));
    const uint64_t capacity = in.U64("residuals.capacity");
    t.residual_head = in.U64("residual_head");
    t.residual_cursor = in.I64("residual_cursor");
    if (!in.ok()) break;
    if (capacity < residuals.size() ||
        capacity > 2 * static_cast<uint64_t>(options_.residual_window)) {
      in.Fail("residuals.capacity",
              absl::StrCat(capacity, " for ", residuals.size(), " residuals"));
      break;
    }
    if (t.residual_head >= std::max<size_t>(residuals.size(), 1) ||
        (t.residual_head != 0 &&
         residuals.size() < static_cast<size_t>(options_.residual_window))) {
      in.Fail("residual_head", absl::StrCat(t.residual_head, " in a ring of ",
                                            residuals.size()));
      break;
    }
    if (t.residual_cursor < 0 || t.residual_cursor >= m_) {
      in.Fail("residual_cursor",
              absl::StrCat(t.residual_cursor, " is not an expert of ", m_));
      break;
    }
    t.residuals.reserve(capacity);
    t.residuals.assign(residuals.begin(), residuals.end());
  }
  std::vector<double> cum_counts = in.Doubles("cum_counts", m_);
  const double cum_assignments = in.Double("cum_assignments");
  const size_t num_snapshots =
      in.Count("snapshots", size_t{1} << 24, 8 + 8 * static_cast<size_t>(m_) + 8 + 4);
  std::vector<Snapshot> snapshots;
  for (size_t k = 0; k < num_snapshots && in.ok(); ++k) {
    Snapshot snap;
    snap.origin = in.I64("snapshot.index");
    snap.counts.resize(m_);
    in.RawDoubles("snapshot.counts", snap.counts.data(), m_);
    snap.assignments = in.Double("snapshot.assignments");
    snap.refs = in.I32("snapshot.refs");
    if (in.ok() && !snapshots.empty() && snap.origin <= snapshots.back().origin) {
      in.Fail("snapshot.index",
              absl::StrCat("origin ", snap.origin, " after origin ",
                           snapshots.back().origin, " (must increase)"));
    }
    snapshots.push_back(std::move(snap));
  }
  const int64_t index = in.I64("index");
  const int64_t last_step = in.I64("last_step");
  // Free buffers never exceed the most forecasts pending at once, under 20
  // per track (h / max(1, h / 10) < 20).
  const size_t free_buffers = in.Count("pool", 20 * tracks_.size(), 0);
  if (!in.ok()) return;
  if (cum_counts.size() != static_cast<size_t>(m_)) {
    in.Fail("cum_counts", absl::StrCat(cum_counts.size(), " values, expected ", m_));
    return;
  }
  // Every pending forecast must be scorable later (its origin snapshot
  // present, its horizon not yet passed) and every snapshot's reference count
  // must match, or Observe would look up a snapshot that is not there.
  std::map<int64_t, int> refs;
  auto has_snapshot = [&snapshots](int64_t origin) {
    auto it = std::lower_bound(
        snapshots.begin(), snapshots.end(), origin,
        [](const Snapshot& s, int64_t o) { return s.origin < o; });
    return it != snapshots.end() && it->origin == origin;
  };
  for (size_t i = 0; i < tracks.size(); ++i) {
    const int horizon = options_.horizons[i % num_h];
    int64_t previous = -1;
    for (const Pending& p : tracks[i].pending) {
      if (p.origin_index <= previous || p.origin_index < 0 ||
          p.origin_index > index || p.origin_index + horizon <= index ||
          !has_snapshot(p.origin_index)) {
        in.Fail("pending.origin_index",
                absl::StrCat("forecast from origin ", p.origin_index,
                             " at horizon ", horizon, " cannot be pending after ",
                             index, " steps"));
        return;
      }
      previous = p.origin_index;
      ++refs[p.origin_index];
    }
  }
  for (const Snapshot& snap : snapshots) {
    auto it = refs.find(snap.origin);
    if (it == refs.end() || it->second != snap.refs) {
      in.Fail("snapshot.refs",
              absl::StrCat("origin ", snap.origin, " says ", snap.refs,
                           " pending forecasts, ",
                           it == refs.end() ? 0 : it->second, " refer to it"));
      return;
    }
  }
  tracks_ = std::move(tracks);
  cum_counts_ = std::move(cum_counts);
  cum_assignments_ = cum_assignments;
  snapshots_ = std::move(snapshots);
  // Live snapshots plus pooled buffers: max_snapshots_, as before saving.
  snapshot_pool_.resize(
      snapshots_.size() < static_cast<size_t>(max_snapshots_)
          ? max_snapshots_ - snapshots_.size()
          : 0,
      std::vector<double>(m_, 0.0));
  index_ = index;
  last_step_ = last_step;
  // Forecast buffers, shared as a live bank shares them: a flat predictor's
  // forecast at an origin is one buffer for every horizon that took it there.
  buffers_.clear();
  buffer_refs_.clear();
  free_buffers_.clear();
  for (size_t j = 0; j < predictors_.size(); ++j) {
    const bool flat = predictors_[j]->flat_forecast();
    for (size_t h = 0; h < num_h; ++h) {
      for (Pending& p : TrackOf(static_cast<int>(j), static_cast<int>(h)).pending) {
        std::vector<float>& v = values[p.buffer];
        int shared = -1;
        for (size_t k = 0; flat && k < h && shared < 0; ++k) {
          for (const Pending& q : TrackOf(static_cast<int>(j), static_cast<int>(k)).pending) {
            if (q.origin_index == p.origin_index && buffers_[q.buffer] == v) {
              shared = q.buffer;
            }
          }
        }
        if (shared >= 0) {
          ++buffer_refs_[shared];
          p.buffer = shared;
        } else {
          p.buffer = static_cast<int>(buffers_.size());
          buffers_.push_back(std::move(v));
          buffer_refs_.push_back(1);
        }
      }
    }
  }
  for (size_t h = 0; h < num_h; ++h) {
    for (Pending& p : TrackOf(-1, static_cast<int>(h)).pending) {
      std::vector<float>& v = values[p.buffer];
      p.buffer = static_cast<int>(buffers_.size());
      buffers_.push_back(std::move(v));
      buffer_refs_.push_back(1);
    }
  }
  for (size_t k = 0; k < free_buffers; ++k) {
    free_buffers_.push_back(static_cast<int>(buffers_.size()));
    buffers_.emplace_back(m_);
    buffer_refs_.push_back(0);
  }
}

}  // namespace moecast
