// Cost of the `lstm` predictor on one layer: Observe + Forecast per step.
//
// Weights are random, of the trained model's shape (H = 32, lookback 32
// blocks of 8 steps, anchor 16 steps, horizons 1, 10, 100, 1000; see
// README.md) except for M, written to a temporary file and loaded through
// MakeLstmPredictor. The timings do not depend on the weight values.
//
//   bazel run -c opt //bench/lstm:lstm_benchmark
//
// Benchmarks (argument: M, H):
//   BM_ObserveForecast  Observe one step, then Forecast(h = 100): the network
//                       re-runs over the window every step.
//   BM_ObserveForecast4 Observe, then Forecast at 4 horizons (one network run).
//   BM_Observe          Observe alone (the ingest-path cost).
//   BM_ForecastCached   Forecast again at the same step (network not re-run).
//   BM_ForecastPath100  ForecastPath(100) at the same step.
//
// The per-expert `lstm_e` (lstm_e.h), random weights of the shipped files'
// shapes (1 layer, anchor 16, horizons 1, 10, 100, 1000; lstm_e_h16: H = 16,
// lookback 16 blocks of 16 steps; lstm_e_h8: H = 8, 8 blocks of 32 steps):
//   BM_EObserveForecast4 one layer: Observe + Forecast at 1, 10, 100, 1000
//                        (arguments: M, H).
//   BM_Step58            one step of a 58-layer job: for every layer, Observe
//                        + Forecast at the scored horizons 1, 10, 100, 1000,
//                        with lstm_e, the M-specific lstm (H = 32), or the
//                        bank's sw_avg(100) / ema(0.9) as baselines in the
//                        same binary (arguments: M, predictor).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "benchmark/benchmark.h"
#include "engine/predict/lstm/lstm.h"
#include "engine/predict/lstm/lstm_e.h"
#include "engine/predict/predictor_factory.h"
#include "engine/predict/predictor.h"

namespace moecast {
namespace {

// Weights drawn uniformly from +-1/sqrt(H) (PyTorch's LSTM initialisation).
class RandomWeights {
 public:
  RandomWeights(int H, unsigned seed)
      : rng_(seed),
        u_(-1.0f / std::sqrt(static_cast<float>(H)), 1.0f / std::sqrt(static_cast<float>(H))) {}
  std::vector<float> operator()(int64_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = u_(rng_);
    return v;
  }

 private:
  std::mt19937 rng_;
  std::uniform_real_distribution<float> u_;
};

LstmModel RandomModel(int M, int H) {
  RandomWeights fill(H, 42);
  LstmModel m;
  m.num_experts = M;
  m.hidden = H;
  m.lookback = 32;
  m.block = 8;
  m.anchor_window = 16;
  m.horizons = {1, 10, 100, 1000};
  m.input_scale = 0.01f;
  m.output_scale = 0.01f;
  m.description = "random weights for lstm_benchmark";
  LstmModel::Layer layer;
  layer.weight_ih = fill(int64_t{4} * H * M);
  layer.weight_hh = fill(int64_t{4} * H * H);
  layer.bias_ih = fill(4 * H);
  layer.bias_hh = fill(4 * H);
  m.layers.push_back(std::move(layer));
  m.head_weight = fill(int64_t{4} * M * H);
  m.head_bias = fill(int64_t{4} * M);
  return m;
}

// A predictor loaded from a random weights file, and a pool of steps.
struct Fixture {
  std::unique_ptr<Predictor> predictor;
  std::vector<std::vector<double>> steps;

  Fixture(int M, int H) {
    const char* tmp = std::getenv("TMPDIR");
    const std::string path = absl::StrCat(tmp != nullptr ? tmp : "/tmp",
                                          "/lstm_benchmark_", M, "_", H, ".lstm");
    absl::Status s = WriteLstmModel(RandomModel(M, H), path);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      std::abort();
    }
    auto p = MakeLstmPredictor(M, path);
    if (!p.ok()) {
      std::fprintf(stderr, "%s\n", p.status().ToString().c_str());
      std::abort();
    }
    predictor = *std::move(p);
    std::remove(path.c_str());
    std::mt19937 rng(7);
    std::gamma_distribution<double> g(2.0, 1.0);
    steps.assign(1024, std::vector<double>(M));
    for (auto& row : steps) {
      double sum = 0;
      for (double& v : row) sum += (v = g(rng));
      for (double& v : row) v /= sum;
    }
    // Fill the window so every benchmark runs on a full ring.
    for (int t = 0; t < 512; ++t) predictor->Observe(steps[t % steps.size()]);
  }
};

void SetCounters(benchmark::State& state, const Fixture& f) {
  state.counters["mem_KiB"] = f.predictor->MemoryBytes() / 1024.0;
}

void BM_ObserveForecast(benchmark::State& state) {
  const int M = state.range(0), H = state.range(1);
  Fixture f(M, H);
  std::vector<double> out(M);
  size_t t = 0;
  for (auto _ : state) {
    f.predictor->Observe(f.steps[t++ & 1023]);
    f.predictor->Forecast(100, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out.data());
  }
  SetCounters(state, f);
}

void BM_ObserveForecast4(benchmark::State& state) {
  const int M = state.range(0), H = state.range(1);
  Fixture f(M, H);
  std::vector<double> out(M);
  size_t t = 0;
  for (auto _ : state) {
    f.predictor->Observe(f.steps[t++ & 1023]);
    for (int h : {1, 10, 100, 1000}) {
      f.predictor->Forecast(h, absl::MakeSpan(out));
      benchmark::DoNotOptimize(out.data());
    }
  }
}

void BM_Observe(benchmark::State& state) {
  const int M = state.range(0), H = state.range(1);
  Fixture f(M, H);
  size_t t = 0;
  for (auto _ : state) {
    f.predictor->Observe(f.steps[t++ & 1023]);
    benchmark::ClobberMemory();
  }
}

void BM_ForecastCached(benchmark::State& state) {
  const int M = state.range(0), H = state.range(1);
  Fixture f(M, H);
  std::vector<double> out(M);
  f.predictor->Forecast(100, absl::MakeSpan(out));
  for (auto _ : state) {
    f.predictor->Forecast(300, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out.data());
  }
}

void BM_ForecastPath100(benchmark::State& state) {
  const int M = state.range(0), H = state.range(1);
  Fixture f(M, H);
  std::vector<double> out(static_cast<size_t>(100) * M);
  f.predictor->Forecast(100, absl::MakeSpan(out).subspan(0, M));
  for (auto _ : state) {
    f.predictor->ForecastPath(100, absl::MakeSpan(out));
    benchmark::DoNotOptimize(out.data());
  }
}

LstmEModel RandomEModel(int H, int num_layers, int lookback, int block) {
  RandomWeights fill(H, 43);
  LstmEModel m;
  m.hidden = H;
  m.lookback = lookback;
  m.block = block;
  m.anchor_window = 16;
  m.horizons = {1, 10, 100, 1000};
  m.input_clip = 8.0f;
  m.output_scale = 30.0f;
  m.description = "random weights for lstm_benchmark";
  for (int l = 0; l < num_layers; ++l) {
    LstmEModel::Layer layer;
    layer.weight_ih = fill(int64_t{4} * H * (l == 0 ? LstmEModel::kFeatures : H));
    layer.weight_hh = fill(int64_t{4} * H * H);
    layer.bias_ih = fill(4 * H);
    layer.bias_hh = fill(4 * H);
    m.layers.push_back(std::move(layer));
  }
  m.head_weight = fill(int64_t{4} * H);
  m.head_bias = fill(4);
  return m;
}

std::vector<std::vector<double>> RandomSteps(int M) {
  std::mt19937 rng(7);
  std::gamma_distribution<double> g(2.0, 1.0);
  std::vector<std::vector<double>> steps(1024, std::vector<double>(M));
  for (auto& row : steps) {
    double sum = 0;
    for (double& v : row) sum += (v = g(rng));
    for (double& v : row) v /= sum;
  }
  return steps;
}

template <typename T>
T OrDie(absl::StatusOr<T> v) {
  if (!v.ok()) {
    std::fprintf(stderr, "%s\n", v.status().ToString().c_str());
    std::abort();
  }
  return *std::move(v);
}

// Predictors of one kind for `layers` layers of M experts (0: lstm_e of
// lstm_e_h16's shape, 1: M-specific lstm H = 32, 2: sw_avg(100), 3: ema(0.9),
// 4: lstm_e of lstm_e_h8's shape).
std::vector<std::unique_ptr<Predictor>> MakeLayers(int kind, int M, int layers,
                                                    std::string* label) {
  std::vector<std::unique_ptr<Predictor>> out;
  if (kind == 0 || kind == 4) {
    auto w = OrDie(LstmEWeights::FromModel(
        kind == 0 ? RandomEModel(16, 1, 16, 16) : RandomEModel(8, 1, 8, 32), "random"));
    *label = kind == 0 ? "lstm_e(H=16, 16 x 16 steps)" : "lstm_e(H=8, 8 x 32 steps)";
    for (int l = 0; l < layers; ++l) out.push_back(OrDie(MakeLstmEPredictor(M, w)));
  } else if (kind == 1) {
    auto w = OrDie(LstmWeights::FromModel(RandomModel(M, 32), "random"));
    *label = "lstm(H=32)";
    for (int l = 0; l < layers; ++l) out.push_back(OrDie(MakeLstmPredictor(M, w)));
  } else {
    *label = kind == 2 ? "sw_avg(100)" : "ema(0.9)";
    for (int l = 0; l < layers; ++l) out.push_back(OrDie(MakePredictor(*label, M)));
  }
  return out;
}

void BM_EObserveForecast4(benchmark::State& state) {
  const int M = state.range(0), H = state.range(1);
  auto w = OrDie(LstmEWeights::FromModel(
      H == 16 ? RandomEModel(16, 1, 16, 16) : RandomEModel(H, 1, 8, 32), "random"));
  std::unique_ptr<Predictor> p = OrDie(MakeLstmEPredictor(M, w));
  const auto steps = RandomSteps(M);
  for (int t = 0; t < 512; ++t) p->Observe(steps[t & 1023]);
  std::vector<double> out(M);
  size_t t = 0;
  for (auto _ : state) {
    p->Observe(steps[t++ & 1023]);
    for (int h : {1, 10, 100, 1000}) {
      p->Forecast(h, absl::MakeSpan(out));
      benchmark::DoNotOptimize(out.data());
    }
  }
  state.counters["mem_KiB"] = p->MemoryBytes() / 1024.0;
}

void BM_Step58(benchmark::State& state) {
  const int M = state.range(0), kind = state.range(1);
  const int kLayers = 58;
  std::string label;
  auto layers = MakeLayers(kind, M, kLayers, &label);
  state.SetLabel(label);
  const auto steps = RandomSteps(M);
  for (int t = 0; t < 512; ++t) {
    for (auto& p : layers) p->Observe(steps[(t * 7) & 1023]);
  }
  std::vector<double> out(M);
  size_t t = 0;
  for (auto _ : state) {
    for (int l = 0; l < kLayers; ++l) {
      layers[l]->Observe(steps[(t + 31 * l) & 1023]);
      for (int h : {1, 10, 100, 1000}) {
        layers[l]->Forecast(h, absl::MakeSpan(out));
        benchmark::DoNotOptimize(out.data());
      }
    }
    ++t;
  }
}

BENCHMARK(BM_EObserveForecast4)
    ->Args({16, 16})
    ->Args({32, 16})
    ->Args({256, 16})
    ->Args({16, 8})
    ->Args({32, 8})
    ->Args({256, 8});
BENCHMARK(BM_Step58)
    ->Args({256, 4})
    ->Args({256, 0})
    ->Args({256, 1})
    ->Args({256, 2})
    ->Args({256, 3})
    ->Args({16, 4})
    ->Args({16, 0})
    ->Args({16, 1})
    ->Unit(benchmark::kMicrosecond);

#define MOECAST_LSTM_SHAPES Args({16, 32})->Args({256, 32})->Args({256, 64})

BENCHMARK(BM_ObserveForecast)->MOECAST_LSTM_SHAPES;
BENCHMARK(BM_ObserveForecast4)->MOECAST_LSTM_SHAPES;
BENCHMARK(BM_Observe)->MOECAST_LSTM_SHAPES;
BENCHMARK(BM_ForecastCached)->MOECAST_LSTM_SHAPES;
BENCHMARK(BM_ForecastPath100)->MOECAST_LSTM_SHAPES;

}  // namespace
}  // namespace moecast

BENCHMARK_MAIN();
