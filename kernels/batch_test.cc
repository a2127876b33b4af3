// The host API: backend selection and fallback, errors, and the CPU paths
// against the engine. (The GPU paths are in gpu_conformance_test.cc.)
#include "kernels/batch.h"

#include <memory>
#include <random>
#include <vector>

#include "engine/predict/basic_predictors.h"
#include "engine/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/testing_util.h"

namespace moecast {
namespace kernels {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

BatchOptions Cpu() {
  BatchOptions o;
  o.backend = Backend::kCpu;
  o.cpu_threads = 2;
  return o;
}

TEST(BackendTest, AutoFallsBackToCpuWithoutGpu) {
  if (GpuAvailable()) GTEST_SKIP() << "a GPU is present; this checks the fallback";
  BatchOptions o;
  o.gpu_min_series = 0;
  EXPECT_EQ(ResolveBackend(o, 1 << 20), Backend::kCpu);
  EXPECT_THAT(GpuStatus(), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  o.backend = Backend::kGpu;
  EXPECT_EQ(ResolveBackend(o, 1), Backend::kGpu);
  EXPECT_THAT(MakeEmaBatch(4, 2, 0.9, o), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  auto auto_batch = MakeEmaBatch(4, 2, 0.9, BatchOptions());
  ASSERT_TRUE(auto_batch.ok()) << auto_batch.status();
  EXPECT_EQ((*auto_batch)->backend(), Backend::kCpu);
}

TEST(BackendTest, AutoUsesCrossover) {
  if (!GpuAvailable()) GTEST_SKIP() << "no GPU: kAuto always picks the CPU here";
  BatchOptions o;
  o.gpu_min_series = 1000;
  EXPECT_EQ(ResolveBackend(o, 999), Backend::kCpu);
  EXPECT_EQ(ResolveBackend(o, 1000), Backend::kGpu);
}

TEST(CheapBatchTest, SwAvgMatchesEngineAndChecksSizes) {
  const uint64_t seed = testing_util::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int m = 8, g = 3, window = 5;
  auto batch = MakeSwAvgBatch(g * m, m, window, Cpu());
  ASSERT_TRUE(batch.ok()) << batch.status();
  std::vector<std::unique_ptr<Predictor>> engine;
  for (int i = 0; i < g; ++i) engine.push_back(*MakeSwAvgPredictor(m, window));
  std::vector<double> out(g * m), eng(m);
  ASSERT_TRUE((*batch)->Forecast(3, absl::MakeSpan(out)).ok());
  for (double v : out) EXPECT_EQ(v, 1.0 / m) << "uniform before the first step";
  for (int step = 0; step < 13; ++step) {
    const std::vector<double> x = testing_util::RandomProportions(&rng, g, m);
    ASSERT_TRUE((*batch)->Observe(x).ok());
    for (int i = 0; i < g; ++i) engine[i]->Observe(absl::MakeConstSpan(x.data() + i * m, m));
    ASSERT_TRUE((*batch)->Forecast(4, absl::MakeSpan(out)).ok());
    for (int i = 0; i < g; ++i) {
      engine[i]->Forecast(4, absl::MakeSpan(eng));
      for (int e = 0; e < m; ++e) ASSERT_NEAR(out[i * m + e], eng[e], 1e-12);
    }
  }
  std::vector<double> short_x(5);
  EXPECT_THAT((*batch)->Observe(short_x),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has 5 values, want 24")));
  EXPECT_THAT((*batch)->Forecast(0, absl::MakeSpan(out)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("horizon = 0")));
}

TEST(CheapBatchTest, RejectsBadShapesAndParameters) {
  EXPECT_THAT(MakeSwAvgBatch(10, 3, 5, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("divide series = 10")));
  EXPECT_THAT(MakeSwAvgBatch(6, 3, 0, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("window = 0")));
  EXPECT_THAT(MakeEmaBatch(6, 3, 1.0, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("theta = 1")));
  EXPECT_THAT(MakeHoltBatch(6, 3, {HoltGroupParams()}, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("want series / group_size = 2")));
  EXPECT_THAT(MakeHoltBatch(3, 3, {HoltGroupParams{0.0, 0.1, 0.9}}, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("group 0 has alpha = 0")));
}

TEST(CheapBatchTest, HoltAndEmaMatchEngine) {
  const uint64_t seed = testing_util::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int m = 4, g = 2;
  auto holt = MakeHoltBatch(g * m, m, {HoltGroupParams(), HoltGroupParams()}, Cpu());
  auto ema = MakeEmaBatch(g * m, m, 0.8, Cpu());
  ASSERT_TRUE(holt.ok() && ema.ok());
  std::vector<std::unique_ptr<Predictor>> eh, ee;
  for (int i = 0; i < g; ++i) {
    eh.push_back(*MakeHoltPredictor(m));
    ee.push_back(*MakeEmaPredictor(m, 0.8));
  }
  std::vector<double> out(g * m), eng(m);
  for (int step = 0; step < 20; ++step) {
    for (int h : {1, 9}) {
      ASSERT_TRUE((*holt)->Forecast(h, absl::MakeSpan(out)).ok());
      for (int i = 0; i < g; ++i) {
        eh[i]->Forecast(h, absl::MakeSpan(eng));
        for (int e = 0; e < m; ++e) ASSERT_NEAR(out[i * m + e], eng[e], 1e-12) << "holt";
      }
      ASSERT_TRUE((*ema)->Forecast(h, absl::MakeSpan(out)).ok());
      for (int i = 0; i < g; ++i) {
        ee[i]->Forecast(h, absl::MakeSpan(eng));
        for (int e = 0; e < m; ++e) ASSERT_NEAR(out[i * m + e], eng[e], 1e-12) << "ema";
      }
    }
    const std::vector<double> x = testing_util::RandomProportions(&rng, g, m);
    ASSERT_TRUE((*holt)->Observe(x).ok());
    ASSERT_TRUE((*ema)->Observe(x).ok());
    for (int i = 0; i < g; ++i) {
      eh[i]->Observe(absl::MakeConstSpan(x.data() + i * m, m));
      ee[i]->Observe(absl::MakeConstSpan(x.data() + i * m, m));
    }
  }
}

TEST(StatelessBatchTest, ArgumentErrorsNameTheValue) {
  std::vector<double> hist(10), params(3);
  ArimaBatchConfig c;
  c.p = 11;
  EXPECT_THAT(ArimaFitForecastBatch(c, 1, 10, hist, {}, 1, absl::MakeSpan(params), Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(11, 1, 5)")));
  c.p = 1;
  c.q = 1;
  EXPECT_THAT(ArimaFitForecastBatch(c, 2, 10, hist, {}, 1, absl::MakeSpan(params), Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("history has 10 values, want 20")));
  BootstrapBatchConfig b;
  b.steps = 3;
  b.experts = 4;
  b.top_k = 5;
  EXPECT_THAT(GammaBootstrapBatch(b, {}, {}, {}, Cpu()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("top_k = 5")));
}

TEST(StatelessBatchTest, ArimaFitsThroughTheApi) {
  const uint64_t seed = testing_util::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int S = 5, n = 200;
  std::vector<double> hist(static_cast<size_t>(n) * S);
  for (int s = 0; s < S; ++s) {
    const std::vector<double> x = testing_util::SimulateArma(&rng, n, 1, s);
    for (int t = 0; t < n; ++t) hist[static_cast<size_t>(t) * S + s] = x[t];
  }
  ArimaBatchConfig c;
  c.p = 1;
  c.q = 1;
  std::vector<double> params(3 * S, 0.0);
  auto r = ArimaFitForecastBatch(c, S, n, hist, {}, 10, absl::MakeSpan(params), Cpu());
  ASSERT_TRUE(r.ok()) << r.status();
  for (int s = 0; s < S; ++s) {
    EXPECT_GT(r->css[s], 0);
    EXPECT_GT(r->iterations[s], 0);
    EXPECT_EQ(r->flags[s], 0);
    EXPECT_LT(std::fabs(params[s]), 1.0) << "phi inside the stationary region";
  }
  // A warm refit starts at the fit and cannot raise S.
  std::vector<uint8_t> warm(S, 1);
  auto r2 = ArimaFitForecastBatch(c, S, n, hist, warm, 10, absl::MakeSpan(params), Cpu());
  ASSERT_TRUE(r2.ok()) << r2.status();
  for (int s = 0; s < S; ++s) {
    EXPECT_EQ(r2->flags[s], 1);
    EXPECT_LE(r2->css[s], r->css[s] * (1 + 1e-12));
  }
}

}  // namespace
}  // namespace kernels
}  // namespace moecast
