// Ingestion throughput: one step of per-expert counts into Engine::Ingest, at
// two sizes, next to a memcpy of the same payload (the floor: ingesting has to
// read every count at least once).
//
//   bazel run //bench:ingest_benchmark
//   bash bench/ingest_report.sh        # runs it and prints the ratios
//
// Sizes:
//   16x64    16 MoE layers x 64 experts   (1,024 counts, 8 KiB per step)
//   58x256   58 MoE layers x 256 experts  (14,848 counts, 116 KiB per step;
//            DeepSeek-V3 scale)
// Variants: counts only, and counts + router-logit means (twice the payload);
// history only, and with the default forecasting (classifier + bank).
// One thread; items/s are counts per second.
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/engine.h"

namespace moecast {
namespace {

struct Shape {
  int layers;
  int experts;
};

std::vector<double> RandomCounts(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::poisson_distribution<int> d(40);
  std::vector<double> c(n);
  for (double& v : c) v = d(rng);
  return c;
}

void RunIngest(benchmark::State& state, Shape shape, bool with_router,
               bool forecasting) {
  EngineOptions options;
  auto engine = Engine::Create(options).value();
  JobSpec spec;
  spec.job_id = "bench";
  spec.num_layers = shape.layers;
  spec.num_experts = shape.experts;
  spec.top_k = 8;
  spec.forecasting = forecasting;
  spec.health = forecasting;  // the default job has both; "history only" neither
  if (!engine->RegisterJob(spec).ok()) {
    state.SkipWithError("RegisterJob failed");
    return;
  }
  const int n = shape.layers * shape.experts;
  std::vector<double> counts = RandomCounts(n, 1);
  std::vector<double> logits = RandomCounts(n, 2);
  StepInput in;
  in.counts = counts;
  if (with_router) in.router_logits = logits;
  int64_t step = 0;
  for (auto _ : state) {
    in.step = step++;
    auto r = engine->Ingest("bench", in);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * n * sizeof(double) *
                          (with_router ? 2 : 1));
}

// History only (JobSpec::forecasting and health off): validation and the ring.
void BM_Ingest(benchmark::State& state, Shape shape, bool with_router) {
  RunIngest(state, shape, with_router, /*forecasting=*/false);
}

// The default job: history plus, per layer, the state classifier, the
// forecast bank (last_value, sw_avg(100), ema(0.9), holt, ewm(300),
// ewm(3000), scored at
// horizons 1, 10, 100, 1000, with auto) and the health monitor (no router
// logits here, so no gamma_eff fits).
void BM_IngestWithForecasting(benchmark::State& state, Shape shape) {
  RunIngest(state, shape, /*with_router=*/false, /*forecasting=*/true);
}

// The floor: copy the same payload once per iteration.
void BM_MemcpyFloor(benchmark::State& state, Shape shape, bool with_router) {
  const size_t n = static_cast<size_t>(shape.layers) * shape.experts *
                   (with_router ? 2 : 1);
  std::vector<double> src = RandomCounts(static_cast<int>(n), 1);
  std::vector<double> dst(n);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), n * sizeof(double));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * shape.layers * shape.experts);
  state.SetBytesProcessed(state.iterations() * n * sizeof(double));
}

BENCHMARK_CAPTURE(BM_Ingest, 16x64, Shape{16, 64}, false);
BENCHMARK_CAPTURE(BM_MemcpyFloor, 16x64, Shape{16, 64}, false);
BENCHMARK_CAPTURE(BM_Ingest, 58x256, Shape{58, 256}, false);
BENCHMARK_CAPTURE(BM_MemcpyFloor, 58x256, Shape{58, 256}, false);
BENCHMARK_CAPTURE(BM_IngestWithForecasting, 16x64, Shape{16, 64});
BENCHMARK_CAPTURE(BM_IngestWithForecasting, 58x256, Shape{58, 256});
BENCHMARK_CAPTURE(BM_Ingest, 16x64_router, Shape{16, 64}, true);
BENCHMARK_CAPTURE(BM_MemcpyFloor, 16x64_router, Shape{16, 64}, true);
BENCHMARK_CAPTURE(BM_Ingest, 58x256_router, Shape{58, 256}, true);
BENCHMARK_CAPTURE(BM_MemcpyFloor, 58x256_router, Shape{58, 256}, true);

}  // namespace
}  // namespace moecast

BENCHMARK_MAIN();
