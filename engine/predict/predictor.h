// Predictor: forecasts the load proportions of one MoE layer's experts.
//
// A predictor sees one stream: every step, the M load proportions p[e] of one
// (job, layer) (non-negative, summing to 1). It forecasts, for a horizon h,
// the mean proportion of each expert over the next h steps, and on request
// the per-step path. Raw forecasts may be slightly negative or not sum to 1;
// NormalizeForecast() clips at 0 and renormalises, and the engine applies it
// to every answer.
//
//   std::unique_ptr<Predictor> p = ...;    // see predictor_factory.h
//   for (each step) p->Observe(proportions);
//   std::vector<double> mean(M);
//   p->Forecast(/*horizon=*/100, absl::MakeSpan(mean));
//   NormalizeForecast(absl::MakeSpan(mean));
//
// Before the first observation every predictor forecasts the uniform 1/M.
// Steps without assignments (all proportions 0) are not passed to Observe.
//
// Thread-safety: not thread-safe; one stream is driven by one thread at a
// time (the engine serializes calls on a job).
#ifndef MOECAST_ENGINE_PREDICT_PREDICTOR_H_
#define MOECAST_ENGINE_PREDICT_PREDICTOR_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/internal/snapshot_codec.h"

namespace moecast {

class Predictor {
 public:
  virtual ~Predictor() = default;

  // A stable name with its parameters, e.g. "sw_avg(100)", "arima(5,1,5)".
  virtual const std::string& name() const = 0;

  virtual int num_experts() const = 0;

  // Observes one step's proportions (num_experts() values, >= 0, sum 1).
  // Must be cheap (O(M), amortised): it runs on the ingest path. Expensive
  // work (refits) happens in Forecast or Refresh.
  virtual void Observe(absl::Span<const double> proportions) = 0;

  // Brings any periodically refitted model up to date (e.g. ARIMA's refit
  // every R steps). Forecast calls it when needed; a caller may call it
  // earlier, off the latency-critical path. Default: nothing to do.
  virtual void Refresh() {}

  // Writes the forecast mean proportion over the next `horizon` steps
  // (horizon >= 1) to `out` (num_experts() values).
  virtual void Forecast(int horizon, absl::Span<double> out) = 0;

  // Writes the per-step forecast of the next `steps` steps to `out`
  // (steps x num_experts() values, row s = step t+1+s). steps >= 1.
  virtual void ForecastPath(int steps, absl::Span<double> out) = 0;

  // True if Refresh() would now do a periodic refit (the expensive kind).
  // The analysis stage then runs Refresh() as a separate task, on one of its
  // periodic threads, before the step's forecasts are taken. Default false.
  virtual bool refit_due() const { return false; }

  // Forgets every observation (fitted parameters stay), so that the steps
  // after a load shift are not averaged with those before it: the bank then
  // replays the steps since the shift's change point into it. Only a
  // smoother whose memory (window or span, in steps) is at most `max_memory`
  // restarts; a longer one keeps the long-run mean, which is the better
  // forecast far ahead when mixes recur. Returns false, keeping its state,
  // if the predictor does not restart: the default (a memory of a few steps,
  // or a fitted model that adapts on its own). Implemented by sw_avg, ewm.
  virtual bool Restart(int max_memory) { return false; }

  // True if Forecast writes the same values for every horizon (a flat
  // forecast: last_value, ema), so that a caller may compute it once per
  // step. Default false.
  virtual bool flat_forecast() const { return false; }

  // About how many past steps the forecast averages over: its window, span
  // or 1 / (1 - theta); 1 for last_value. 0 (the default) for a model with
  // no such scale (holt, arima, lstm). `auto` uses it before it has scores
  // at a horizon (ForecastBank).
  virtual int memory_steps() const { return 0; }

  // Bytes of state held for this stream.
  virtual int64_t MemoryBytes() const = 0;

  // Snapshots (Engine::SnapshotJob): SaveTo writes everything the
  // predictor's later answers depend on (fitted parameters and refit
  // schedules included, so that a restore never refits); LoadFrom reads it
  // into a predictor made by the same factory with the same name and
  // num_experts, after which every call answers bit for bit as the saved
  // predictor would. LoadFrom reports DATA_LOSS (through `in`) for bytes
  // that do not fit this predictor. The defaults report UNIMPLEMENTED: a
  // predictor without them cannot be snapshotted.
  virtual absl::Status SaveTo(internal::SnapshotWriter& out) const;
  virtual void LoadFrom(internal::SnapshotReader& in);
};

// Clips negative values to 0 and rescales to sum 1; if nothing positive is
// left, writes the uniform 1/M.
void NormalizeForecast(absl::Span<double> values);

}  // namespace moecast

#endif  // MOECAST_ENGINE_PREDICT_PREDICTOR_H_
