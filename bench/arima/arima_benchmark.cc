// arima(p,d,q) costs (engine/predict/arima): the ingest-path Observe, the
// periodic warm refit of a layer, the first (cold) fit, and forecasts.
//
//   bazel run -c opt //bench/arima:arima_benchmark
//
// Data: one MoE layer of M experts whose proportions are a softmax of
// per-expert logits doing a slow random walk (sd 0.02 per step) plus
// step noise (sd 0.1), the shape of real routing loads. Default model
// arima(5,1,5), fit_window 500, refit_every 100, max_iterations 10, unless
// named otherwise (the _it50 variants: max_iterations 50).
//
// Counters:
//   per_expert      CPU time per expert of what the benchmark times (CPU
//                   time, not wall: the machines are shared)
//   lm_iters        Levenberg-Marquardt trial steps per expert per fit
//   state_MiB       MemoryBytes() of the stream
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/predict/arima/arima.h"

namespace moecast {
namespace {

class LoadGenerator {
 public:
  LoadGenerator(int m, uint64_t seed) : logit_(m), row_(m), rng_(seed) {
    for (double& v : logit_) v = n01_(rng_);
  }
  const std::vector<double>& Next() {
    double sum = 0;
    for (size_t e = 0; e < row_.size(); ++e) {
      logit_[e] += 0.02 * n01_(rng_);
      row_[e] = std::exp(logit_[e] + 0.1 * n01_(rng_));
      sum += row_[e];
    }
    for (double& v : row_) v /= sum;
    return row_;
  }

 private:
  std::vector<double> logit_, row_;
  std::mt19937_64 rng_;
  std::normal_distribution<double> n01_{0.0, 1.0};
};

ArimaOptions Options(int p, int d, int q, int max_iterations = 10) {
  ArimaOptions o;
  o.p = p;
  o.d = d;
  o.q = q;
  o.max_iterations = max_iterations;
  return o;
}

void SetPerExpert(benchmark::State& state, int m) {
  state.counters["per_expert"] =
      benchmark::Counter(m, benchmark::Counter::kIsIterationInvariantRate |
                                benchmark::Counter::kInvert);
}

// One step of M proportions into Observe (the ingest path).
void BM_ArimaObserve(benchmark::State& state) {
  const int m = state.range(0);
  auto predictor = MakeArimaPredictor(m).value();
  LoadGenerator gen(m, 1);
  std::vector<std::vector<double>> rows;
  for (int i = 0; i < 64; ++i) rows.push_back(gen.Next());
  int i = 0;
  for (auto _ : state) {
    predictor->Observe(rows[i]);
    i = (i + 1) & 63;
  }
  state.SetItemsProcessed(state.iterations() * m);
  SetPerExpert(state, m);
}

// The periodic refit of one layer: refit_every new steps arrive (not
// timed), then Refresh() refits all M experts from their previous fits.
void BM_ArimaWarmRefit(benchmark::State& state, ArimaOptions o) {
  const int m = state.range(0);
  auto predictor = MakeArimaPredictor(m, o).value();
  const ArimaRefitStats* stats = GetArimaRefitStats(*predictor);
  LoadGenerator gen(m, 2);
  for (int t = 0; t < o.fit_window; ++t) predictor->Observe(gen.Next());
  predictor->Refresh();  // the cold first fit
  int64_t iterations = 0;
  for (auto _ : state) {
    state.PauseTiming();
    for (int t = 0; t < o.refit_every; ++t) predictor->Observe(gen.Next());
    state.ResumeTiming();
    predictor->Refresh();
    iterations += stats->last_iterations;
  }
  SetPerExpert(state, m);
  state.counters["lm_iters"] =
      static_cast<double>(iterations) / (state.iterations() * m);
  state.counters["state_MiB"] = predictor->MemoryBytes() / 1048576.0;
}

// The first fit of one layer (three starts per expert).
void BM_ArimaColdFit(benchmark::State& state, ArimaOptions o) {
  const int m = state.range(0);
  LoadGenerator gen(m, 3);
  int64_t iterations = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto predictor = MakeArimaPredictor(m, o).value();
    for (int t = 0; t < o.fit_window; ++t) predictor->Observe(gen.Next());
    state.ResumeTiming();
    predictor->Refresh();
    iterations += GetArimaRefitStats(*predictor)->last_iterations;
    state.PauseTiming();
    predictor.reset();
    state.ResumeTiming();
  }
  SetPerExpert(state, m);
  state.counters["lm_iters"] =
      static_cast<double>(iterations) / (state.iterations() * m);
}

// Forecast(h) of a fitted layer (no new steps: no refit, no catch-up).
void BM_ArimaForecast(benchmark::State& state) {
  const int m = 256;
  const int h = state.range(0);
  auto predictor = MakeArimaPredictor(m).value();
  LoadGenerator gen(m, 4);
  for (int t = 0; t < 500; ++t) predictor->Observe(gen.Next());
  predictor->Refresh();
  std::vector<double> out(m);
  for (auto _ : state) {
    predictor->Forecast(h, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out.data());
  }
  SetPerExpert(state, m);
}

// One step in, then Forecast(100): the residual catch-up plus a forecast.
void BM_ArimaObserveAndForecast(benchmark::State& state) {
  const int m = 256;
  ArimaOptions o;
  o.refit_every = 1 << 30;  // isolate the catch-up from refits
  auto predictor = MakeArimaPredictor(m, o).value();
  LoadGenerator gen(m, 5);
  for (int t = 0; t < 500; ++t) predictor->Observe(gen.Next());
  predictor->Refresh();
  std::vector<std::vector<double>> rows;
  for (int i = 0; i < 64; ++i) rows.push_back(gen.Next());
  std::vector<double> out(m);
  int i = 0;
  for (auto _ : state) {
    predictor->Observe(rows[i]);
    i = (i + 1) & 63;
    predictor->Forecast(100, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out.data());
  }
  SetPerExpert(state, m);
}

BENCHMARK(BM_ArimaObserve)->Arg(256);
BENCHMARK_CAPTURE(BM_ArimaWarmRefit, arima_5_1_5, Options(5, 1, 5))
    ->Arg(256)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ArimaWarmRefit, arima_5_1_5_it50, Options(5, 1, 5, 50))
    ->Arg(256)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ArimaWarmRefit, arima_1_1_1, Options(1, 1, 1))
    ->Arg(256)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ArimaColdFit, arima_5_1_5, Options(5, 1, 5))
    ->Arg(256)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);
BENCHMARK_CAPTURE(BM_ArimaColdFit, arima_5_1_5_it50, Options(5, 1, 5, 50))
    ->Arg(256)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(2);
BENCHMARK(BM_ArimaForecast)
    ->Arg(1)
    ->Arg(100)
    ->Arg(2000)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ArimaObserveAndForecast)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace moecast

BENCHMARK_MAIN();
