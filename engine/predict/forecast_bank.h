// ForecastBank: every predictor of one (job, layer) stream, the online scorer
// that tracks each predictor's realised error at each horizon, and `auto`,
// which answers with the predictor that has lately been best at that horizon.
//
// Scoring (design section 4): at every max(1, h/10)-th step the bank takes
// each predictor's forecast of the mean over the next h steps (normalised:
// clipped at 0, summing to 1); h steps later it compares it with the realised
// token-weighted mean, sum_t c_e(t) / sum_t sum_e c_e(t), computed from
// cumulative counts snapshotted at the origin. So about ten forecasts per
// predictor and horizon are pending at any time, and memory stays
// O(predictors x horizons x 10 x M). The error tracked for `auto` is an
// exponentially weighted mean of L1 over the most recent scored origins
// (half-life `error_half_life` origins).
//
// `auto` at horizon h blends, at the time of the forecast, the `auto_blend`
// predictors with the smallest tracked error at h, weighted by 1/error^2
// (auto_blend = 1: the best one alone). Until every predictor has 3 scored
// forecasts at h (a long horizon is first scored h steps after the start):
// in a stable layer (set_stable_history) it takes the predictor whose memory
// (Predictor::memory_steps) is nearest h on a log scale, the smoother that
// averages about as many steps as it forecasts, among those that average only
// steps of the stable period (min(memory, steps observed) <= the stable
// history: none reaches back into a drift); otherwise, and with
// auto_memory_prior off, it ranks by the longest shorter horizon that has
// them, and before any score it takes the first predictor. (Shorter horizons'
// scores favour fast smoothers, which lose far ahead where a stable load
// returns to its long-run mean.)
// Intervals: each predictor keeps the last `residual_window` scaled residuals
// (y_e - f_e) / sqrt(f_e) of its scored forecasts at each horizon, pooled
// over experts (8 experts per scored forecast, in rotation); the interval at level q is f_e + sqrt(f_e) * [Q((1-q)/2),
// Q((1+q)/2)], clipped to [0, 1].
//
// Thread-safety: not thread-safe; the owning job serializes access.
#ifndef MOECAST_ENGINE_PREDICT_FORECAST_BANK_H_
#define MOECAST_ENGINE_PREDICT_FORECAST_BANK_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/internal/snapshot_codec.h"
#include "engine/predict/predictor.h"

namespace moecast {

struct ForecastBankOptions {
  // Horizons (steps) that are scored and that `auto` chooses for. A forecast
  // at another horizon uses the nearest scored one for its choice.
  std::vector<int> horizons = {1, 10, 100, 1000};
  // Half-life, in scored origins, of the error `auto` ranks predictors by.
  double error_half_life = 10;
  // Weight of the long-run mean error (over every scored forecast) against
  // the recent one in auto's ranking: 0 ranks by the recent error alone.
  // (0.5 and 0.8 were no better on the bundled traces: BENCHMARKS.md.)
  double auto_long_run_weight = 0.0;
  // `auto` blends the forecasts of this many best-ranked predictors, weighted
  // by 1 / error^2 (1: it picks the best one).
  int auto_blend = 3;
  // ... counting only those whose error is within this fraction of the best.
  double auto_blend_margin = 0.1;
  // Before auto has scores at a horizon, a stable layer takes the predictor
  // whose memory is nearest that horizon (see above); false: the ranking of
  // the longest shorter horizon with scores, in every state.
  bool auto_memory_prior = true;
  // Scaled residuals kept per predictor and horizon for intervals.
  int residual_window = 512;
  // Also compute the per-step MAPE of every scored forecast (the mean over
  // the h future steps of mean_e |f_e - p_e(t)| / p_e(t)). Costs O(M) per
  // pending forecast per step: for the bench, off in the engine.
  bool per_step_mape = false;
};

// One forecast scored once its horizon has passed.
struct ScoredForecast {
  int predictor = 0;        // index into predictor_names(); -1 is auto
  int horizon = 0;
  int64_t origin_step = 0;  // the last step observed when it was made
  int64_t origin_index = 0; // steps observed before it (0-based count)
  double l1 = 0;            // sum_e |f_e - y_e|
  double mape = 0;          // mean over experts with y_e > 0
  int mape_experts_excluded = 0;  // experts with y_e = 0
  double step_mape = 0;     // if per_step_mape
  // The normalised forecast and the realised mean (M values each); valid
  // only during the listener call.
  absl::Span<const float> forecast;
  absl::Span<const double> realised;
};

struct PredictorScore {
  std::string name;
  int horizon = 0;
  int64_t scored = 0;        // forecasts scored so far
  double recent_l1 = 0;      // the error auto ranks by (NaN before a score)
  double mean_l1 = 0;        // over every scored forecast
};

struct BankForecast {
  std::string predictor;     // the predictor that answered ("a+b": auto's blend)
  std::vector<double> mean;  // M values, >= 0, sum 1
  std::vector<double> lower, upper;  // M values; empty until scores exist
};

class ForecastBank {
 public:
  // `predictors` all have the same num_experts (>= 2); top_k >= 1. Returns
  // INVALID_ARGUMENT for bad options (no predictors, non-positive or
  // repeated horizons, bad half-life or windows).
  static absl::StatusOr<std::unique_ptr<ForecastBank>> Create(
      std::vector<std::unique_ptr<Predictor>> predictors,
      const ForecastBankOptions& options);

  // Observes one step: its proportions (sum 1) and its assignments sum(c)
  // (> 0). Feeds every predictor, takes forecasts at scoring origins and
  // scores those whose horizon has passed (each one reported to the
  // listener, if set). With take_origins false (the engine's overload
  // policy sheds scoring) no new forecasts are taken for scoring; pending
  // ones are still scored when their horizon passes.
  void Observe(int64_t step, absl::Span<const double> proportions,
               double assignments, bool take_origins = true);

  // Observe in two parts, so that periodic refits can run in between as
  // separate tasks (the analysis stage):
  //
  //   bank.ObservePredictors(p);        // feeds every predictor
  //   bank.AppendDueRefits(&refits);    // predictors whose refit is due
  //   for (Predictor* r : refits) r->Refresh();   // any thread, one each
  //   bank.Advance(step, p, assignments, take_origins);  // scoring, origins
  //
  // Same results as Observe (a refit happens at the same step either way).
  void ObservePredictors(absl::Span<const double> proportions);
  void AppendDueRefits(std::vector<Predictor*>* refits) const;
  void Advance(int64_t step, absl::Span<const double> proportions,
               double assignments, bool take_origins = true);

  // After a load shift: restarts every predictor that can with a memory of
  // at most `max_memory` steps (Predictor::Restart) and replays `rows` into them, the proportions of the steps
  // since the shift's change point, oldest first (a multiple of M values,
  // the last row the step just observed). Call it between ObservePredictors
  // and Advance. The scorer's tracks are kept: pending forecasts made before
  // the shift are scored as usual. Returns the predictors restarted.
  int RestartPredictors(absl::Span<const double> rows, int max_memory);

  // Forecast of the mean over the next `horizon` steps by the predictor
  // named `predictor` ("auto" for the bank's choice). Intervals at `level`
  // in (0, 1). NOT_FOUND for an unknown predictor, INVALID_ARGUMENT for a
  // bad horizon or level.
  absl::StatusOr<BankForecast> Forecast(int horizon, absl::string_view predictor,
                                        double level);

  // The per-step path of the next `steps` steps by `predictor` ("auto" uses
  // the choice for horizon `steps`); steps x M values, each row normalised.
  absl::StatusOr<std::vector<double>> ForecastPath(int steps,
                                                   absl::string_view predictor);

  // Which predictor(s) auto uses at `horizon` now ("a+b" for a blend).
  std::string AutoChoice(int horizon) const;

  // How many of the observed steps belong to the layer's current stable
  // period (StateClassifier::StableHistory; 0 while transient). The owner
  // sets it after each step's classification and after a restore, from the
  // restored classifier; it is not part of SaveTo. Only auto's choice before
  // it has scores depends on it. Default 0.
  void set_stable_history(int64_t steps) { stable_history_ = steps; }
  // Steps observed so far (Observe / Advance calls).
  int64_t steps_observed() const { return index_; }

  std::vector<PredictorScore> Scores() const;
  const std::vector<std::string>& predictor_names() const { return names_; }
  const std::vector<int>& horizons() const { return options_.horizons; }
  int num_experts() const { return m_; }

  // Receives every scored forecast (the bench's hook). Auto's own forecasts
  // are scored too, with predictor = -1.
  void set_listener(std::function<void(const ScoredForecast&)> listener) {
    listener_ = std::move(listener);
  }

  int64_t MemoryBytes() const;

  // Snapshots: every predictor's state (Predictor::SaveTo), every
  // scorer track (pending forecasts, errors, residual rings), the
  // cumulative counts and the origin snapshots pending forecasts refer to.
  // SaveTo fails (UNIMPLEMENTED) if a predictor cannot be saved.
  // LoadFrom reads them into a bank created with the same predictors and
  // options; bytes that do not fit it, or that are inconsistent (a pending
  // forecast without its origin), are DATA_LOSS through `in`. The listener
  // is not state and is left as it is.
  absl::Status SaveTo(internal::SnapshotWriter& out) const;
  void LoadFrom(internal::SnapshotReader& in);

 private:
  // Pending forecasts refer to their values by buffer id: a flat forecast
  // (the same at every horizon) taken at one origin for several horizons is
  // stored once and shared, reference-counted (buffers_, buffer_refs_).
  struct Pending {
    int64_t origin_step;
    int64_t origin_index;
    int buffer;  // index into buffers_
    double step_mape_sum = 0;
  };
  struct Track {  // one (predictor or auto, horizon)
    std::deque<Pending> pending;
    int64_t scored = 0;
    double recent_l1 = 0;
    double weight = 0;  // of recent_l1's exponential average
    double sum_l1 = 0;
    std::vector<float> residuals;  // ring of scaled residuals
    size_t residual_head = 0;
    int64_t residual_cursor = 0;   // next expert to sample
  };
  // Cumulative counts and assignments after the step an origin was taken at,
  // kept while pending forecasts refer to it.
  struct Snapshot {
    int64_t origin = 0;  // steps observed when taken
    std::vector<double> counts;
    double assignments = 0;
    int refs = 0;  // pending forecasts made at this origin
  };
  // Auto's predictors and weights; at most auto_blend entries.
  using Weights = absl::InlinedVector<std::pair<int, double>, 4>;

  ForecastBank(std::vector<std::unique_ptr<Predictor>> predictors,
               const ForecastBankOptions& options);
  int HorizonIndex(int horizon) const;   // nearest scored horizon
  // The predictor auto takes at horizon index h before it has scores there
  // (auto_memory_prior, stable layer), or -1.
  int MemoryPrior(int h) const;
  // Auto's predictors and weights (summing to 1) at a horizon index.
  Weights AutoWeights(int horizon_index) const;
  std::string AutoLabel(const Weights& w) const;
  void AddInterval(const Track& t, double level, BankForecast* out) const;
  Track& TrackOf(int predictor, int h) {  // predictor -1 = auto
    return tracks_[(predictor + 1) * options_.horizons.size() + h];
  }
  const Track& TrackOf(int predictor, int h) const {
    return tracks_[(predictor + 1) * options_.horizons.size() + h];
  }
  void Score(int predictor, int h, Track& track);
  int TakeBuffer();              // a buffer with one reference
  void ReleaseBuffer(int buffer);
  float* Values(int buffer) { return buffers_[buffer].data(); }
  const float* Values(int buffer) const { return buffers_[buffer].data(); }
  Snapshot* FindSnapshot(int64_t origin);
  const Snapshot* FindSnapshot(int64_t origin) const;

  const int m_;
  const ForecastBankOptions options_;
  const double error_decay_;  // per scored forecast: 2^(-1 / error_half_life)
  std::vector<std::unique_ptr<Predictor>> predictors_;
  std::vector<std::string> names_;
  std::vector<Track> tracks_;
  // Cumulative counts and assignments after each observed step.
  std::vector<double> cum_counts_;
  double cum_assignments_ = 0;
  // Origins that still have pending forecasts, oldest first (a few dozen).
  std::vector<Snapshot> snapshots_;
  int64_t stable_history_ = 0;
  int64_t index_ = 0;  // steps observed
  int64_t last_step_ = 0;
  std::vector<double> scratch_;
  // The realised mean since origin realised_origin_ (-1: none), valid
  // during one Observe call.
  std::vector<double> realised_;
  int64_t realised_origin_ = -1;
  // Count buffers for new origins; live + pooled = max_snapshots_.
  std::vector<std::vector<double>> snapshot_pool_;
  int max_snapshots_ = 0;
  // Forecast buffers (M floats each), their reference counts (0: free) and
  // the free ones.
  std::vector<std::vector<float>> buffers_;
  std::vector<int> buffer_refs_;
  std::vector<int> free_buffers_;
  std::function<void(const ScoredForecast&)> listener_;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_PREDICT_FORECAST_BANK_H_
