// The CPU side of the crossover: forecasting many jobs with a loop of
// Engine::Forecast (one job at a time, one (job, layer) stream at a time, on
// the calling thread) against one ForecastJobs call on the CPU backend (all
// cores), in the same process, on the same engine.
//
//   bazel run -c opt //kernels:engine_batch_benchmark [-- --benchmark_filter=...]
//   flags of this binary (before the benchmark flags):
//     --scale=full   1, 4, 16, 64 jobs of 58 x 256 and of 16 x 64 (default)
//     --scale=small  1 and 4 jobs only (a quick check)
//
// Each job: history_capacity_steps 256, 200 committed steps of counts from a
// softmax of random-walk logits, bank {sw_avg(100), ema(0.9)} (arima jobs:
// {arima(1,1,1)}, 260 steps, so past the first fit at 250), horizon 100.
// What is compared:
//   engine_loop    for each job: Engine::Forecast(job, {h}, predictor). The
//                  engine keeps every predictor's state up to date on ingest,
//                  so this is a forecast from ready state (for arima: from its
//                  last refit, no refit in the call).
//   forecast_jobs  ForecastJobs(engine, all jobs, {predictor, h, kCpu}):
//                  rebuilds the state from the rings (sw_avg: 100 steps; ema:
//                  all 200 steps; arima: a cold fit of every series on 260
//                  steps) in one batched call per (M, steps) group.
//   arimacss_loop  (arima only) the engine's ArimaCss cold fit + forecast per
//                  series, one thread, on the same windows: what the engine
//                  pays per refit, for comparison with forecast_jobs.
// At the end a table prints forecast_jobs / engine_loop per size, in wall time
// and in the process's CPU time over all threads (< 1: the batch is faster).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "engine/engine.h"
#include "engine/predict/arima/arima.h"
#include "kernels/engine_batch.h"

namespace moecast {
namespace kernels {
namespace {

struct WorldKey {
  int jobs, layers, experts;
  bool arima;
  bool operator<(const WorldKey& o) const {
    return std::tie(jobs, layers, experts, arima) < std::tie(o.jobs, o.layers, o.experts, o.arima);
  }
};

struct World {
  std::unique_ptr<Engine> engine;
  std::vector<std::string> ids;
};

// One world at a time (64 jobs of 58 x 256 hold about 1 GB of rings).
World& GetWorld(const WorldKey& k) {
  static WorldKey current{-1, -1, -1, false};
  static World* world = nullptr;
  if (world != nullptr && !(current < k) && !(k < current)) return *world;
  delete world;
  world = new World;
  current = k;
  EngineOptions o;
  o.history_capacity_steps = 256;
  world->engine = *Engine::Create(o);
  std::mt19937_64 rng(42);
  std::normal_distribution<double> step(0.0, 0.05), init(0.0, 1.0);
  const int steps = k.arima ? 260 : 200;
  const int lm = k.layers * k.experts;
  for (int j = 0; j < k.jobs; ++j) {
    JobSpec spec;
    spec.job_id = absl::StrCat("job", j);
    spec.num_layers = k.layers;
    spec.num_experts = k.experts;
    spec.top_k = 8 < k.experts ? 8 : 1;
    spec.health = false;
    spec.horizons = {100};
    spec.predictors = k.arima ? std::vector<std::string>{"arima(1,1,1)"}
                              : std::vector<std::string>{"sw_avg(100)", "ema(0.9)"};
    if (!world->engine->RegisterJob(spec).ok()) std::abort();
    std::vector<double> z(lm), c(lm);
    for (double& v : z) v = init(rng);
    for (int t = 0; t < steps; ++t) {
      for (int l = 0; l < k.layers; ++l) {
        double sum = 0;
        for (int e = 0; e < k.experts; ++e) sum += std::exp(z[l * k.experts + e] += step(rng));
        for (int e = 0; e < k.experts; ++e) {
          c[l * k.experts + e] = std::round(4096.0 * spec.top_k * std::exp(z[l * k.experts + e]) / sum);
        }
      }
      StepInput in;
      in.step = t;
      in.counts = c;
      if (!world->engine->Ingest(spec.job_id, in).ok()) std::abort();
    }
    world->ids.push_back(spec.job_id);
  }
  return *world;
}

constexpr int kHorizon = 100;

void EngineLoop(benchmark::State& state, WorldKey k, std::string predictor) {
  World& w = GetWorld(k);
  ForecastRequest r;
  r.predictor = predictor;
  r.horizons = {kHorizon};
  for (auto _ : state) {
    for (const std::string& id : w.ids) {
      absl::StatusOr<ForecastResult> f = w.engine->Forecast(id, r);
      if (!f.ok()) {
        state.SkipWithError(std::string(f.status().message()).c_str());
        return;
      }
      benchmark::DoNotOptimize(f->layers.data());
    }
  }
  state.counters["series"] = static_cast<double>(k.jobs) * k.layers * k.experts;
}

void ForecastJobsBench(benchmark::State& state, WorldKey k, std::string predictor) {
  World& w = GetWorld(k);
  BatchForecastRequest r;
  r.predictor = predictor;
  r.horizon = kHorizon;
  r.batch.backend = Backend::kCpu;
  absl::Duration gather, compute, scatter;
  int64_t calls = 0;
  for (auto _ : state) {
    absl::StatusOr<BatchForecastResult> f = ForecastJobs(*w.engine, w.ids, r);
    if (!f.ok()) {
      state.SkipWithError(std::string(f.status().message()).c_str());
      return;
    }
    gather += f->gather;
    compute += f->compute;
    scatter += f->scatter;
    ++calls;
    benchmark::DoNotOptimize(f->jobs.data());
  }
  state.counters["series"] = static_cast<double>(k.jobs) * k.layers * k.experts;
  state.counters["gather_ms"] = absl::ToDoubleMilliseconds(gather) / calls;
  state.counters["compute_ms"] = absl::ToDoubleMilliseconds(compute) / calls;
  state.counters["scatter_ms"] = absl::ToDoubleMilliseconds(scatter) / calls;
}

// The engine's own refit cost: ArimaCss cold fits of every series, one thread.
void ArimaCssLoop(benchmark::State& state, WorldKey k) {
  World& w = GetWorld(k);
  ArimaOptions o;
  o.p = 1;
  o.d = 1;
  o.q = 1;
  std::vector<std::vector<double>> series;  // every (job, layer, expert)
  for (const std::string& id : w.ids) {
    for (int l = 0; l < k.layers; ++l) {
      std::vector<std::vector<double>> rows;
      (void)w.engine->VisitHistory(id, l, [&](const LayerHistory& h) {
        for (int age = std::min(h.size(), o.fit_window) - 1; age >= 0; --age) {
          const StepView v = h.Recent(age);
          rows.emplace_back(v.proportions.begin(), v.proportions.end());
        }
      });
      for (int e = 0; e < k.experts; ++e) {
        std::vector<double> x;
        for (const auto& r : rows) x.push_back(r[e]);
        series.push_back(std::move(x));
      }
    }
  }
  ArimaCss css(o);
  std::vector<double> params(css.num_params()), path(kHorizon);
  for (auto _ : state) {
    for (const std::vector<double>& x : series) {
      css.Fit(x, false, absl::MakeSpan(params));
      css.ForecastPath(x, params, absl::MakeSpan(path));
      benchmark::DoNotOptimize(path.data());
    }
  }
  state.counters["series"] = static_cast<double>(series.size());
}

// Keeps each run's real time per iteration, by name, for the ratio table.
class Recorder : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (!r.error_occurred && r.iterations > 0) {
        // function_name: the registered name, without "/real_time".
        times_[r.run_name.function_name] = {r.GetAdjustedRealTime(), r.GetAdjustedCPUTime()};
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  // Per iteration, ms: wall time and the process's CPU time (all threads).
  const std::map<std::string, std::pair<double, double>>& times() const { return times_; }

 private:
  std::map<std::string, std::pair<double, double>> times_;
};

std::string Label(const WorldKey& k) {
  return absl::StrCat("jobs:", k.jobs, "/L", k.layers, "xM", k.experts);
}

}  // namespace
}  // namespace kernels
}  // namespace moecast

int main(int argc, char** argv) {
  using namespace moecast::kernels;
  bool small = false;
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--scale=small") {
      small = true;
    } else if (a != "--scale=full") {
      rest.push_back(argv[i]);
    }
  }
  int rc = static_cast<int>(rest.size());
  benchmark::Initialize(&rc, rest.data());
  std::vector<int> counts = small ? std::vector<int>{1, 4} : std::vector<int>{1, 4, 16, 64};
  struct Row {
    std::string predictor;
    WorldKey key;
  };
  std::vector<Row> rows;
  for (const auto& [layers, experts] : std::vector<std::pair<int, int>>{{58, 256}, {16, 64}}) {
    for (int jobs : counts) {
      const WorldKey k{jobs, layers, experts, false};
      for (const std::string p : {"sw_avg(100)", "ema(0.9)"}) {
        const std::string s = absl::StrCat(p, "/", Label(k));
        benchmark::RegisterBenchmark(("engine_loop/" + s).c_str(), EngineLoop, k, p)
            ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
        benchmark::RegisterBenchmark(("forecast_jobs/" + s).c_str(), ForecastJobsBench, k, p)
            ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
        rows.push_back({p, k});
      }
    }
  }
  // ARIMA at a smaller scale: 1 and 4 jobs of 4 x 64.
  for (int jobs : {1, 4}) {
    const WorldKey k{jobs, 4, 64, true};
    const std::string p = "arima(1,1,1)";
    const std::string s = absl::StrCat(p, "/", Label(k));
    benchmark::RegisterBenchmark(("engine_loop/" + s).c_str(), EngineLoop, k, p)
        ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("forecast_jobs/" + s).c_str(), ForecastJobsBench, k, p)
        ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("arimacss_loop/" + s).c_str(), ArimaCssLoop, k)
        ->UseRealTime()->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
    rows.push_back({p, k});
  }
  Recorder recorder;
  benchmark::RunSpecifiedBenchmarks(&recorder);
  std::printf("\nCPU threads: %u (hardware_concurrency)\n", std::thread::hardware_concurrency());
  std::printf("%-14s %-22s %9s %12s %12s %11s %12s %12s %11s\n", "predictor", "size",
              "series", "engine_wall", "batch_wall", "wall_ratio", "engine_cpu", "batch_cpu",
              "cpu_ratio");
  for (const Row& r : rows) {
    const std::string s = absl::StrCat(r.predictor, "/", Label(r.key));
    auto a = recorder.times().find("engine_loop/" + s);
    auto b = recorder.times().find("forecast_jobs/" + s);
    if (a == recorder.times().end() || b == recorder.times().end()) continue;
    const auto [ew, ec] = a->second;
    const auto [bw, bc] = b->second;
    std::printf("%-14s %-22s %9lld %12.2f %12.2f %11.2f %12.2f %12.2f %11.2f\n",
                r.predictor.c_str(), Label(r.key).c_str(),
                static_cast<long long>(r.key.jobs) * r.key.layers * r.key.experts, ew, bw,
                bw / ew, ec, bc, bc / ec);
  }
  return 0;
}
