// Cost of forecasting per step, for one layer and for a whole job.
//
//   bazel run //bench:forecast_benchmark
//
// BM_Predictor/<name>/<M>: one predictor, Observe + Forecast(h) of one step,
//   after a warm-up of 2,000 steps (so windows are full and fits exist).
// BM_Bank/<M>: a layer's whole forecast bank per step (default predictors,
//   scoring at horizons 1, 10, 100, 1000, auto).
// BM_Classifier/<M>: the state classifier per step.
// Items are experts (one layer-step = M items); multiply by layers for a job
// (58 x 256 for DeepSeek-V3 scale).
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/predict/forecast_bank.h"
#include "engine/predict/predictor_factory.h"
#include "engine/state/state_classifier.h"

namespace moecast {
namespace {

// A slowly drifting load with sampling noise, precomputed so the benchmark
// measures only the predictors.
std::vector<std::vector<double>> Loads(int m, int steps) {
  std::mt19937 rng(1);
  std::normal_distribution<double> drift(0, 0.01), noise(0, 0.05);
  std::vector<double> logits(m, 0.0);
  std::vector<std::vector<double>> out;
  for (int t = 0; t < steps; ++t) {
    std::vector<double> p(m);
    double sum = 0;
    for (int e = 0; e < m; ++e) {
      logits[e] += drift(rng);
      sum += p[e] = std::exp(logits[e] + noise(rng));
    }
    for (double& v : p) v /= sum;
    out.push_back(std::move(p));
  }
  return out;
}

constexpr int kWarmup = 2000;
constexpr int kCycle = 4096;

void BM_Predictor(benchmark::State& state, const char* name, int horizon) {
  const int m = static_cast<int>(state.range(0));
  auto loads = Loads(m, kCycle);
  auto p = MakePredictor(name, m).value();
  for (int t = 0; t < kWarmup; ++t) p->Observe(loads[t % kCycle]);
  std::vector<double> out(m);
  int64_t t = kWarmup;
  for (auto _ : state) {
    p->Observe(loads[t++ % kCycle]);
    p->Forecast(horizon, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * m);
}

void BM_Bank(benchmark::State& state) {
  const int m = static_cast<int>(state.range(0));
  auto loads = Loads(m, kCycle);
  std::vector<std::unique_ptr<Predictor>> predictors;
  for (const std::string& name : DefaultPredictorNames()) {
    predictors.push_back(MakePredictor(name, m).value());
  }
  auto bank = ForecastBank::Create(std::move(predictors), ForecastBankOptions()).value();
  int64_t t = 0;
  for (; t < kWarmup; ++t) bank->Observe(t, loads[t % kCycle], 1000);
  for (auto _ : state) {
    bank->Observe(t, loads[t % kCycle], 1000);
    ++t;
  }
  state.SetItemsProcessed(state.iterations() * m);
  // Memory of one layer's bank plus its state classifier, in steady state.
  StateClassifier classifier(m, 8, StateOptions());
  state.counters["bytes_per_layer"] =
      static_cast<double>(bank->MemoryBytes() + classifier.MemoryBytes());
}

void BM_Classifier(benchmark::State& state) {
  const int m = static_cast<int>(state.range(0));
  auto loads = Loads(m, kCycle);
  StateClassifier c(m, 8, StateOptions());
  int64_t t = 0;
  for (; t < kWarmup; ++t) c.Observe(t, loads[t % kCycle], 4096, 0);
  for (auto _ : state) {
    auto r = c.Observe(t, loads[t % kCycle], 4096, 0);
    benchmark::DoNotOptimize(r);
    ++t;
  }
  state.SetItemsProcessed(state.iterations() * m);
}

BENCHMARK_CAPTURE(BM_Predictor, last_value_h1, "last_value", 1)->Arg(16)->Arg(256);
BENCHMARK_CAPTURE(BM_Predictor, sw_avg_h1, "sw_avg(100)", 1)->Arg(16)->Arg(256);
BENCHMARK_CAPTURE(BM_Predictor, sw_avg_h10, "sw_avg(100)", 10)->Arg(16)->Arg(256);
BENCHMARK_CAPTURE(BM_Predictor, sw_avg_h1000, "sw_avg(100)", 1000)->Arg(16)->Arg(256);
BENCHMARK_CAPTURE(BM_Predictor, ema_h1, "ema(0.9)", 1)->Arg(16)->Arg(256);
BENCHMARK_CAPTURE(BM_Predictor, holt_h1, "holt", 1)->Arg(16)->Arg(256);
BENCHMARK_CAPTURE(BM_Predictor, holt_h100, "holt", 100)->Arg(16)->Arg(256);
BENCHMARK(BM_Bank)->Arg(16)->Arg(256);
BENCHMARK(BM_Classifier)->Arg(16)->Arg(256);

}  // namespace
}  // namespace moecast

BENCHMARK_MAIN();
