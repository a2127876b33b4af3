// ForecastJobs against the engine's own Forecast, on generated jobs (several
// jobs, different L, same and different M, steps without assignments), fresh
// random data every run (the seed is printed with every failure). On a machine
// without a GPU every batch runs on the CPU reference (kAuto falls back).
//
// Tolerances (absolute, on the renormalised shares), and why:
//   sw_avg   1e-12: the same float ring values; only the running window sum's
//            order of additions differs (the engine adds and subtracts, the
//            batch sums the window afresh).
//   ema      2^-23 + theta^n. The ring stores each proportion as float
//            (relative error <= 2^-24) while the engine's EMA saw doubles; an
//            EMA is a convex combination of its inputs, so the raw state is
//            within 2^-24 max(x), and renormalising can add as much again.
//            theta^n: the batch restarts the EMA at the oldest of the n steps
//            it reads (n <= history_capacity_steps); the engine's state before
//            it, s, and that step, x, both lie in [0, 1], so the two states
//            differ by theta^(n-1) * theta * |s - x| <= theta^n at the end.
//            With the default ring (1024) and theta = 0.9 the batch reads the
//            last 372 steps (0.9^372 < 1e-17); a 32-step ring shows the term.
//   holt     1e-6: the parameters are the engine's own grid choice on the
//            same float window (identical arithmetic); after the fit the
//            engine's filter runs on doubles and the batch on the floats, and
//            the damped-trend forecast level + k*trend (k <= phi/(1-phi) <= 19)
//            amplifies that 6e-8 input difference by at most ~20.
//   arima    vs the engine at its first fit (a cold CSS fit, steps ==
//            ArimaMinFitObservations): 1e-5 (the engine fits on doubles, the
//            batch on the ring's floats; LM stops at a relative decrease of
//            1e-8, so the two fits agree to ~1e-6 in the forecast). Later the
//            engine's fit is warm-started from its previous refit and up to
//            refit_every - 1 steps old, which a fit from the ring cannot
//            reproduce: there the batch is held to the engine's ArimaCss run
//            cold on the same ring window, at 1e-6 x (1 + level) (the
//            kernels' CPU reference vs ArimaCss, kernels/README.md).
//            Before the first fit: the mean of the steps, 2^-23.
//   lstm     5e-5: the kernels' 2e-5 against the engine (the engine pools
//            projected steps in float, the kernel pools block means in
//            double) plus float storage, doubled by renormalisation.
#include "kernels/engine_batch.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/predict/arima/arima.h"
#include "engine/predict/lstm/lstm.h"
#include "engine/predict/predictor.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/testing_util.h"

namespace moecast {
namespace kernels {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

constexpr double kFloatTol = 1.0 / (1 << 23);  // 2 x 2^-24

struct JobGen {
  std::string id;
  int layers = 2;
  int experts = 16;
  int steps = 50;
  double zero_prob = 0.0;   // chance that a layer's step has no assignments
  int dead_layer = -1;      // a layer that never has assignments
  std::vector<std::string> predictors;  // empty: the engine's default bank
};

std::unique_ptr<Engine> MakeEngine(int capacity = 1024) {
  EngineOptions o;
  o.history_capacity_steps = capacity;
  // The batch rebuilds predictor state from the rings and is compared with
  // the engine's own, which must have seen every step one by one: inline
  // analysis, so a tight ingest loop never triggers the overload policy.
  o.analysis.mode = AnalysisOptions::Mode::kInline;
  absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return *std::move(e);
}

// Registers the job and ingests `steps` steps of counts drawn from a softmax
// of per-expert random-walk logits.
void AddJob(Engine* engine, const JobGen& g, std::mt19937_64* rng) {
  JobSpec spec;
  spec.job_id = g.id;
  spec.num_layers = g.layers;
  spec.num_experts = g.experts;
  spec.top_k = 2;
  spec.health = false;
  spec.predictors = g.predictors;
  ASSERT_OK(engine->RegisterJob(spec));
  const int lm = g.layers * g.experts;
  std::normal_distribution<double> step(0.0, 0.05), init(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> logits(lm), counts(lm);
  for (double& z : logits) z = init(*rng);
  for (int t = 0; t < g.steps; ++t) {
    for (int l = 0; l < g.layers; ++l) {
      double* z = logits.data() + l * g.experts;
      double* c = counts.data() + l * g.experts;
      const bool zero = l == g.dead_layer || u(*rng) < g.zero_prob;
      double sum = 0;
      for (int e = 0; e < g.experts; ++e) sum += std::exp(z[e] += step(*rng));
      for (int e = 0; e < g.experts; ++e) {
        c[e] = zero ? 0.0 : std::round(5000.0 * std::exp(z[e]) / sum * (0.8 + 0.4 * u(*rng)));
      }
    }
    StepInput in;
    in.step = t;
    in.counts = counts;
    ASSERT_OK(engine->Ingest(g.id, in).status());
  }
}

// The engine's answer, per layer, for one predictor and horizon.
std::vector<std::vector<double>> EngineMeans(Engine* engine, const std::string& id,
                                             const std::string& predictor, int horizon) {
  ForecastRequest r;
  r.predictor = predictor;
  r.horizons = {horizon};
  absl::StatusOr<ForecastResult> f = engine->Forecast(id, r);
  EXPECT_TRUE(f.ok()) << f.status();
  std::vector<std::vector<double>> out;
  if (!f.ok()) return out;
  for (const LayerForecast& l : f->layers) out.push_back(l.horizons.at(0).mean);
  return out;
}

// Max |batch - engine| over every job, layer and expert; checks the shapes
// and that each answer is a distribution.
double MaxDiff(Engine* engine, const BatchForecastResult& r,
               const std::vector<std::string>& ids, const std::string& engine_name) {
  double worst = 0;
  EXPECT_EQ(r.jobs.size(), ids.size());
  for (size_t j = 0; j < ids.size(); ++j) {
    const auto want = EngineMeans(engine, ids[j], engine_name, r.horizon);
    EXPECT_EQ(r.jobs[j].job_id, ids[j]);
    EXPECT_EQ(r.jobs[j].layers.size(), want.size());
    for (size_t l = 0; l < want.size() && l < r.jobs[j].layers.size(); ++l) {
      const std::vector<double>& got = r.jobs[j].layers[l].mean;
      EXPECT_EQ(got.size(), want[l].size());
      double sum = 0;
      for (size_t e = 0; e < got.size() && e < want[l].size(); ++e) {
        EXPECT_GE(got[e], 0.0);
        sum += got[e];
        worst = std::max(worst, std::fabs(got[e] - want[l][e]));
      }
      EXPECT_NEAR(sum, 1.0, 1e-12);
    }
  }
  std::fprintf(stderr, "%s h=%d: max |batch - engine| = %.3g\n", engine_name.c_str(),
               r.horizon, worst);
  return worst;
}

// One batched call per (M, steps): keys unique, layers add up.
void CheckGroups(const BatchForecastResult& r) {
  std::set<std::pair<int, int>> keys;
  int layers = 0;
  for (const BatchGroupRun& g : r.groups) {
    EXPECT_TRUE(keys.insert({g.num_experts, g.steps}).second)
        << "two calls for M=" << g.num_experts << " n=" << g.steps;
    EXPECT_EQ(g.series, int64_t{g.layers} * g.num_experts);
    EXPECT_NE(g.backend, Backend::kAuto);
    if (!GpuAvailable()) {
      EXPECT_EQ(g.backend, Backend::kCpu);
    }
    layers += g.layers;
  }
  int total = 0;
  for (const BatchJobForecast& j : r.jobs) total += static_cast<int>(j.layers.size());
  EXPECT_EQ(layers + r.host_layers, total);
  if (!GpuAvailable()) {
    EXPECT_EQ(r.backend, Backend::kCpu);
  }
  EXPECT_GE(r.gather, absl::ZeroDuration());
  EXPECT_GE(r.compute, absl::ZeroDuration());
  EXPECT_GE(r.scatter, absl::ZeroDuration());
}

class EngineBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = testing_util::FreshSeed();
    rng_.seed(seed_);
    std::fprintf(stderr, "seed %llu\n", static_cast<unsigned long long>(seed_));
  }
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

// Several jobs: different L, same and different M, short (< W) and long
// histories, random steps without assignments, a dead layer, one step.
std::vector<JobGen> MixedJobs(std::vector<std::string> predictors = {}) {
  return {
      {"a", 3, 16, 150, 0.05, -1, predictors},
      {"b", 5, 16, 40, 0.0, -1, predictors},
      {"c", 2, 8, 300, 0.1, 1, predictors},
      {"d", 4, 64, 120, 0.02, -1, predictors},
      {"e", 1, 16, 1, 0.0, -1, predictors},
  };
}

TEST_F(EngineBatchTest, SwAvgEqualsEngine) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  auto engine = MakeEngine();
  std::vector<std::string> ids;
  for (const JobGen& g : MixedJobs({"sw_avg(100)", "sw_avg(7)"})) {
    AddJob(engine.get(), g, &rng_);
    ids.push_back(g.id);
  }
  for (const std::string name : {"sw_avg(100)", "sw_avg(7)", "sw_avg"}) {
    for (int h : {1, 7, 100, 1000}) {
      SCOPED_TRACE(::testing::Message() << name << " h=" << h);
      BatchForecastRequest r;
      r.predictor = name;
      r.horizon = h;
      ASSERT_OK_AND_ASSIGN(BatchForecastResult f, ForecastJobs(*engine, ids, r));
      const std::string engine_name = name == std::string("sw_avg") ? "sw_avg(100)" : name;
      EXPECT_EQ(f.predictor, engine_name);
      EXPECT_LE(MaxDiff(engine.get(), f, ids, engine_name), 1e-12);
      CheckGroups(f);
      // Job c's layer 1 never had assignments: uniform, answered on the host.
      EXPECT_EQ(f.jobs[2].layers[1].steps_used, 0);
      for (double v : f.jobs[2].layers[1].mean) EXPECT_EQ(v, 1.0 / 8);
      EXPECT_EQ(f.jobs[4].layers[0].steps_used, 1);
      EXPECT_EQ(f.jobs[4].layers[0].as_of_step, 0);
      for (const BatchJobForecast& j : f.jobs) {
        for (const BatchLayerForecast& l : j.layers) EXPECT_FALSE(l.history_truncated);
      }
    }
  }
}

TEST_F(EngineBatchTest, EmaWithinFloatStorageOfEngine) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  auto engine = MakeEngine();
  std::vector<JobGen> jobs = MixedJobs({"ema(0.9)", "ema(0.5)"});
  jobs.push_back({"long", 2, 16, 600, 0.01, -1, {"ema(0.9)", "ema(0.5)"}});
  std::vector<std::string> ids;
  for (const JobGen& g : jobs) {
    AddJob(engine.get(), g, &rng_);
    ids.push_back(g.id);
  }
  for (const std::string name : {"ema(0.9)", "ema(0.5)"}) {
    SCOPED_TRACE(name);
    BatchForecastRequest r;
    r.predictor = name;
    r.horizon = 10;
    ASSERT_OK_AND_ASSIGN(BatchForecastResult f, ForecastJobs(*engine, ids, r));
    // All history is in the 1024-step ring; the batch reads at most K steps
    // (theta^K <= 1e-17), so only the float storage remains.
    EXPECT_LE(MaxDiff(engine.get(), f, ids, name), kFloatTol + 1e-16);
    CheckGroups(f);
    const int k = name == "ema(0.9)" ? 372 : 57;  // ceil(log 1e-17 / log theta)
    EXPECT_EQ(f.jobs.back().layers[0].steps_used, k) << "job 'long' reads K steps";
  }
}

TEST_F(EngineBatchTest, EmaRestartedFromAShortRingIsWithinThetaToTheN) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  const int capacity = 32;
  auto engine = MakeEngine(capacity);
  std::vector<std::string> ids;
  for (const JobGen& g : std::vector<JobGen>{{"x", 3, 16, 120, 0.0, -1, {"ema(0.9)"}},
                                             {"y", 2, 8, 90, 0.0, -1, {"ema(0.9)"}}}) {
    AddJob(engine.get(), g, &rng_);
    ids.push_back(g.id);
  }
  BatchForecastRequest r;
  r.predictor = "ema(0.9)";
  r.horizon = 1;
  ASSERT_OK_AND_ASSIGN(BatchForecastResult f, ForecastJobs(*engine, ids, r));
  const double bound = std::pow(0.9, capacity) + kFloatTol;  // 0.034
  const double diff = MaxDiff(engine.get(), f, ids, "ema(0.9)");
  EXPECT_LE(diff, bound);
  // The restart is real (not only float rounding), and it is reported.
  EXPECT_GT(diff, 1e-6);
  for (const BatchJobForecast& j : f.jobs) {
    for (const BatchLayerForecast& l : j.layers) {
      EXPECT_EQ(l.steps_used, capacity);
      EXPECT_TRUE(l.history_truncated);
    }
  }
}

TEST_F(EngineBatchTest, HoltReproducesTheEngineFit) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  auto engine = MakeEngine();
  // 60 steps: before the first fit (defaults); 150: after the fit at 100;
  // 700: after the refit at 600 (a window of 200 + 100 steps since). M = 64
  // exercises the fit on the top 32 experts.
  std::vector<std::string> ids;
  for (const JobGen& g : std::vector<JobGen>{{"early", 2, 16, 60, 0.0, -1, {}},
                                             {"fitted", 3, 16, 150, 0.0, -1, {}},
                                             {"wide", 2, 64, 150, 0.0, -1, {}},
                                             {"refit", 2, 8, 700, 0.0, -1, {}}}) {
    AddJob(engine.get(), g, &rng_);
    ids.push_back(g.id);
  }
  for (int h : {1, 50, 1000}) {
    SCOPED_TRACE(::testing::Message() << "h=" << h);
    BatchForecastRequest r;
    r.predictor = "holt";
    r.horizon = h;
    ASSERT_OK_AND_ASSIGN(BatchForecastResult f, ForecastJobs(*engine, ids, r));
    EXPECT_LE(MaxDiff(engine.get(), f, ids, "holt"), 1e-6);
    CheckGroups(f);
    EXPECT_EQ(f.jobs[0].layers[0].steps_used, 60);
    EXPECT_EQ(f.jobs[1].layers[0].steps_used, 150);   // window 100 + 50 since
    EXPECT_EQ(f.jobs[3].layers[0].steps_used, 300);   // window 200 + 100 since
  }
  // Given parameters equal to the engine's pre-fit defaults reproduce the
  // engine before its first fit.
  BatchForecastRequest r;
  r.predictor = "holt";
  r.horizon = 20;
  r.holt_params = HoltGroupParams{0.1, 0.05, 0.9};
  ASSERT_OK_AND_ASSIGN(BatchForecastResult f, ForecastJobs(*engine, {ids[0]}, r));
  EXPECT_LE(MaxDiff(engine.get(), f, {ids[0]}, "holt"), 1e-6);
}

// The ring's steps with assignments of one layer, oldest first, as doubles.
std::vector<std::vector<double>> RingSeries(const Engine& engine, const std::string& id,
                                            int layer, int last) {
  std::vector<std::vector<double>> rows;
  EXPECT_OK(engine.VisitHistory(id, layer, [&](const LayerHistory& h) {
    for (int age = h.size() - 1; age >= 0; --age) {
      const StepView v = h.Recent(age);
      if (v.assignments > 0) rows.emplace_back(v.proportions.begin(), v.proportions.end());
    }
  }));
  if (static_cast<int>(rows.size()) > last) rows.erase(rows.begin(), rows.end() - last);
  return rows;
}

TEST_F(EngineBatchTest, ArimaEqualsEngineAtItsFirstFitAndArimaCssLater) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  auto engine = MakeEngine();
  const std::string name = "arima(1,1,1)";
  ArimaOptions o;
  o.p = 1;
  o.d = 1;
  o.q = 1;
  const int first = ArimaMinFitObservations(o);  // 250
  std::vector<std::string> ids;
  for (const JobGen& g : std::vector<JobGen>{{"at_fit", 2, 16, first, 0.0, -1, {name}},
                                             {"at_fit8", 3, 8, first, 0.0, -1, {name}},
                                             {"young", 2, 16, 100, 0.1, -1, {name}},
                                             {"later", 2, 8, 420, 0.0, -1, {name}}}) {
    AddJob(engine.get(), g, &rng_);
    ids.push_back(g.id);
  }
  const int h = 20;
  BatchForecastRequest r;
  r.predictor = name;
  r.horizon = h;
  ASSERT_OK_AND_ASSIGN(BatchForecastResult f, ForecastJobs(*engine, ids, r));
  CheckGroups(f);
  EXPECT_EQ(f.host_layers, 2);  // "young": the mean, as the engine before a fit
  const std::vector<std::string> exact(ids.begin(), ids.begin() + 2);
  BatchForecastResult head = f;
  head.jobs.resize(2);
  EXPECT_LE(MaxDiff(engine.get(), head, exact, name), 1e-5);
  BatchForecastResult young = f;
  young.jobs = {f.jobs[2]};
  EXPECT_LE(MaxDiff(engine.get(), young, {ids[2]}, name), kFloatTol);
  // "later": the engine's fit is warm-started and 70 steps old; the batch
  // fits now, cold, on the ring's last fit_window steps. Reference: the
  // engine's ArimaCss on the same window.
  for (int l = 0; l < 2; ++l) {
    const auto rows = RingSeries(*engine, "later", l, o.fit_window);
    ASSERT_EQ(static_cast<int>(rows.size()), 420);
    EXPECT_EQ(f.jobs[3].layers[l].steps_used, 420);
    std::vector<double> want(8);
    for (int e = 0; e < 8; ++e) {
      std::vector<double> x;
      for (const auto& row : rows) x.push_back(row[e]);
      ArimaCss css(o);
      std::vector<double> params(css.num_params(), 0.0);
      css.Fit(x, false, absl::MakeSpan(params));
      std::vector<double> path(h);
      css.ForecastPath(x, params, absl::MakeSpan(path));
      double acc = 0;
      for (double v : path) acc += v;
      want[e] = acc / h;
    }
    NormalizeForecast(absl::MakeSpan(want));
    for (int e = 0; e < 8; ++e) {
      EXPECT_NEAR(f.jobs[3].layers[l].mean[e], want[e], 2e-6 * (1 + want[e]))
          << "layer " << l << " expert " << e;
    }
  }
}

TEST_F(EngineBatchTest, LstmEqualsEngine) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  const std::string dir = ::testing::TempDir();
  LstmModel m16 = testing_util::RandomLstmModel(&rng_, 16, 8, 1);
  LstmModel m8 = testing_util::RandomLstmModel(&rng_, 8, 6, 2);
  const std::string p16 = absl::StrCat(dir, "/eb_m16_", seed_, ".lstm");
  const std::string p8 = absl::StrCat(dir, "/eb_m8_", seed_, ".lstm");
  ASSERT_OK(WriteLstmModel(m16, p16));
  ASSERT_OK(WriteLstmModel(m8, p8));
  auto engine = MakeEngine();
  std::vector<std::string> ids;
  for (const JobGen& g :
       std::vector<JobGen>{{"short", 2, 16, 5, 0.0, -1, {absl::StrCat("lstm(", p16, ")")}},
                           {"long", 3, 16, 80, 0.1, -1, {absl::StrCat("lstm(", p16, ")")}},
                           {"m8", 2, 8, 50, 0.0, -1, {absl::StrCat("lstm(", p8, ")")}}}) {
    AddJob(engine.get(), g, &rng_);
    ids.push_back(g.id);
  }
  ASSERT_OK_AND_ASSIGN(auto w16, LstmWeights::Load(p16));
  ASSERT_OK_AND_ASSIGN(auto w8, LstmWeights::Load(p8));
  for (int h : {1, 4, 7, 30}) {
    SCOPED_TRACE(::testing::Message() << "h=" << h);
    BatchForecastRequest r;
    r.predictor = "lstm";
    r.horizon = h;
    r.lstm_models = {w16, w8};
    ASSERT_OK_AND_ASSIGN(BatchForecastResult f, ForecastJobs(*engine, ids, r));
    EXPECT_LE(MaxDiff(engine.get(), f, ids, "lstm"), 5e-5);
    CheckGroups(f);
    EXPECT_EQ(f.jobs[0].layers[0].steps_used, 5);
    EXPECT_EQ(f.jobs[2].layers[0].steps_used, 12);  // lookback 4 x block 3
  }
  // One file by name: only the M = 16 jobs; the M = 8 job has no model.
  BatchForecastRequest r;
  r.predictor = absl::StrCat("lstm(", p16, ")");
  r.horizon = 4;
  ASSERT_OK_AND_ASSIGN(BatchForecastResult f,
                       ForecastJobs(*engine, {ids[0], ids[1]}, r));
  EXPECT_LE(MaxDiff(engine.get(), f, {ids[0], ids[1]}, "lstm"), 5e-5);
  EXPECT_THAT(ForecastJobs(*engine, ids, r).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'m8'")));
}

TEST_F(EngineBatchTest, OneJobOneLayerOneStepAndZeroCountSteps) {
  SCOPED_TRACE(::testing::Message() << "seed " << seed_);
  auto engine = MakeEngine();
  AddJob(engine.get(), {"solo", 1, 4, 1, 0.0, -1, {}}, &rng_);
  // Every step of layer 0 without assignments; layer 1 mostly without.
  AddJob(engine.get(), {"sparse", 2, 8, 60, 0.8, 0, {}}, &rng_);
  for (const std::string name : {"sw_avg(100)", "ema(0.9)", "holt"}) {
    SCOPED_TRACE(name);
    BatchForecastRequest r;
    r.predictor = name;
    r.horizon = 5;
    ASSERT_OK_AND_ASSIGN(BatchForecastResult f, ForecastJobs(*engine, {"solo"}, r));
    ASSERT_EQ(f.jobs.size(), 1u);
    ASSERT_EQ(f.jobs[0].layers.size(), 1u);
    EXPECT_EQ(f.groups.size(), 1u);
    EXPECT_LE(MaxDiff(engine.get(), f, {"solo"}, name), kFloatTol);
    ASSERT_OK_AND_ASSIGN(f, ForecastJobs(*engine, {"sparse"}, r));
    EXPECT_LE(MaxDiff(engine.get(), f, {"sparse"}, name), kFloatTol);
    for (double v : f.jobs[0].layers[0].mean) EXPECT_EQ(v, 1.0 / 8);
    EXPECT_EQ(f.jobs[0].layers[0].steps_used, 0);
    EXPECT_GT(f.jobs[0].layers[1].steps_used, 0);
    EXPECT_LT(f.jobs[0].layers[1].steps_used, 60);
  }
}

TEST_F(EngineBatchTest, Errors) {
  auto engine = MakeEngine();
  AddJob(engine.get(), {"ok", 2, 8, 3, 0.0, -1, {}}, &rng_);
  JobSpec empty;
  empty.job_id = "empty";
  empty.num_layers = 1;
  empty.num_experts = 4;
  empty.top_k = 1;
  ASSERT_OK(engine->RegisterJob(empty));
  BatchForecastRequest r;
  EXPECT_THAT(ForecastJobs(*engine, {"ok", "nope"}, r).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'nope'")));
  EXPECT_THAT(ForecastJobs(*engine, {"ok", "empty"}, r).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("'empty'")));
  EXPECT_THAT(ForecastJobs(*engine, {}, r).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no jobs")));
  for (int h : {0, -3, 1000001}) {
    r.horizon = h;
    EXPECT_THAT(ForecastJobs(*engine, {"ok"}, r).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("horizon")));
  }
  r.horizon = 10;
  for (const std::string bad : {"foo", "sw_avg(0)", "sw_avg(x)", "ema(1)", "ema(-0.1)",
                                "holt(3)", "arima(11,1,1)", "arima(1,3,1)", "sw_avg(5",
                                "ema(0.9)+drift", "lstm", "lstm(/nonexistent/file)",
                                "last_value"}) {
    r.predictor = bad;
    EXPECT_THAT(ForecastJobs(*engine, {"ok"}, r).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("predictor")))
        << bad;
  }
  r.predictor = "holt";
  r.holt_params = HoltGroupParams{0.0, 0.1, 0.9};
  EXPECT_THAT(ForecastJobs(*engine, {"ok"}, r).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("holt_params")));
  r.holt_params.reset();
  if (!GpuAvailable()) {
    r.predictor = "sw_avg(10)";
    r.batch.backend = Backend::kGpu;
    EXPECT_THAT(ForecastJobs(*engine, {"ok"}, r).status(),
                StatusIs(absl::StatusCode::kUnavailable, HasSubstr("")));
  }
}

}  // namespace
}  // namespace kernels
}  // namespace moecast
