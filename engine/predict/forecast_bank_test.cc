#include "engine/predict/forecast_bank.h"

#include <cmath>
#include <random>
#include <vector>

#include "engine/predict/basic_predictors.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::DoubleNear;
using ::testing::HasSubstr;

std::vector<std::unique_ptr<Predictor>> Bank(int m) {
  std::vector<std::unique_ptr<Predictor>> v;
  v.push_back(MakeLastValuePredictor(m).value());
  v.push_back(MakeSwAvgPredictor(m, 50).value());
  return v;
}

std::unique_ptr<ForecastBank> MakeBank(int m, ForecastBankOptions o = {}) {
  return ForecastBank::Create(Bank(m), o).value();
}

TEST(ForecastBankTest, RejectsBadOptions) {
  ForecastBankOptions o;
  EXPECT_THAT(ForecastBank::Create({}, o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no predictors")));
  std::vector<std::unique_ptr<Predictor>> mixed;
  mixed.push_back(MakeLastValuePredictor(2).value());
  mixed.push_back(MakeSwAvgPredictor(3, 5).value());
  EXPECT_THAT(ForecastBank::Create(std::move(mixed), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has 3 experts")));
  std::vector<std::unique_ptr<Predictor>> twice;
  twice.push_back(MakeLastValuePredictor(2).value());
  twice.push_back(MakeLastValuePredictor(2).value());
  EXPECT_THAT(ForecastBank::Create(std::move(twice), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("listed twice")));
  o.horizons = {1, 0};
  EXPECT_THAT(ForecastBank::Create(Bank(2), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("horizon 0")));
  o.horizons = {5, 5};
  EXPECT_THAT(ForecastBank::Create(Bank(2), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("horizon 5 is listed twice")));
  o = ForecastBankOptions();
  o.error_half_life = 0;
  EXPECT_THAT(ForecastBank::Create(Bank(2), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("error_half_life")));
  o = ForecastBankOptions();
  o.residual_window = 1;
  EXPECT_THAT(ForecastBank::Create(Bank(2), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("residual_window")));
}

// After a shift the smoothers with memory <= max_memory forget the old load
// and replay the rows given; the others (ema, a longer ewm) keep their state.
TEST(ForecastBankTest, RestartPredictorsForgetsTheOldLoadUpToMaxMemory) {
  const int m = 4;
  const std::vector<double> old_load = {0.7, 0.1, 0.1, 0.1};
  const std::vector<double> new_load = {0.1, 0.1, 0.1, 0.7};
  std::vector<std::unique_ptr<Predictor>> v;
  v.push_back(MakeSwAvgPredictor(m, 50).value());
  v.push_back(MakeEwmPredictor(m, 300).value());
  v.push_back(MakeEwmPredictor(m, 3000).value());
  v.push_back(MakeEmaPredictor(m, 0.9).value());
  std::unique_ptr<ForecastBank> bank = ForecastBank::Create(std::move(v), {}).value();
  int64_t step = 0;
  for (int t = 0; t < 200; ++t, ++step) bank->Observe(step, old_load, 100);
  // Three steps of the new load, the last one observed normally first.
  std::vector<double> rows;
  for (int t = 0; t < 3; ++t) {
    rows.insert(rows.end(), new_load.begin(), new_load.end());
    if (t < 2) bank->Observe(step++, new_load, 100);
  }
  bank->ObservePredictors(new_load);
  EXPECT_EQ(bank->RestartPredictors(rows, /*max_memory=*/1000), 2);
  bank->Advance(step++, new_load, 100);
  for (const char* name : {"sw_avg(50)", "ewm(300)"}) {
    const BankForecast f = bank->Forecast(10, name, 0.9).value();
    for (int e = 0; e < m; ++e) EXPECT_NEAR(f.mean[e], new_load[e], 1e-6) << name;
  }
  // ewm(3000) and ema(0.9) still carry the old load.
  EXPECT_GT(bank->Forecast(10, "ewm(3000)", 0.9).value().mean[0], 0.5);
  EXPECT_GT(bank->Forecast(10, "ema(0.9)", 0.9).value().mean[0], 0.2);
  // With a smaller max_memory only sw_avg(50) restarts.
  EXPECT_EQ(bank->RestartPredictors(rows, /*max_memory=*/100), 1);
}

TEST(ForecastBankTest, ScoresAgainstTheTokenWeightedRealisedMean) {
  ForecastBankOptions o;
  o.horizons = {3};
  o.per_step_mape = true;
  auto bank = MakeBank(2, o);
  std::vector<ScoredForecast> scored;
  bank->set_listener([&](const ScoredForecast& s) { scored.push_back(s); });
  const std::vector<double> a = {0.5, 0.2, 0.4, 0.9, 0.3, 0.6};
  const std::vector<double> assign = {10, 10, 30, 10, 20, 40};
  for (size_t t = 0; t < a.size(); ++t) {
    bank->Observe(100 + t, std::vector<double>{a[t], 1 - a[t]}, assign[t]);
  }
  // Origins at every step (stride 1); the first, made after step 100 (index
  // 1), is scored after step 103. last_value forecast = (0.5, 0.5).
  ScoredForecast first;
  bool found = false;
  for (const auto& s : scored) {
    if (s.predictor == 0 && s.origin_step == 100) {
      first = s;
      found = true;
    }
  }
  ASSERT_TRUE(found);
  const double y0 = (0.2 * 10 + 0.4 * 30 + 0.9 * 10) / 50;  // token-weighted
  EXPECT_NEAR(first.l1, 2 * std::abs(0.5 - y0), 1e-6);
  EXPECT_NEAR(first.mape,
              (std::abs(0.5 - y0) / y0 + std::abs(0.5 - (1 - y0)) / (1 - y0)) / 2,
              1e-6);
  const double step_mape =
      ((0.3 / 0.2 + 0.3 / 0.8) / 2 + (0.1 / 0.4 + 0.1 / 0.6) / 2 +
       (0.4 / 0.9 + 0.4 / 0.1) / 2) / 3;
  EXPECT_NEAR(first.step_mape, step_mape, 1e-6);
  // Origins at indices 1..3 are scored by index 6: 3 per predictor, 3 auto.
  int per_predictor[3] = {0, 0, 0};
  for (const auto& s : scored) ++per_predictor[s.predictor + 1];
  EXPECT_EQ(per_predictor[0], 3);
  EXPECT_EQ(per_predictor[1], 3);
  EXPECT_EQ(per_predictor[2], 3);
}

TEST(ForecastBankTest, PendingForecastsAndMemoryStayBounded) {
  ForecastBankOptions o;
  o.horizons = {1, 10, 100, 1000};
  o.residual_window = 16;  // rings full early, so memory is at steady state
  auto bank = MakeBank(8, o);
  int64_t scored_1000 = 0;
  bank->set_listener([&](const ScoredForecast& s) {
    if (s.horizon == 1000 && s.predictor == 0) ++scored_1000;
  });
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  std::vector<double> p(8);
  int64_t memory_at_3000 = 0;
  for (int t = 0; t < 6000; ++t) {
    double sum = 0;
    for (double& v : p) sum += v = u(rng);
    for (double& v : p) v /= sum;
    bank->Observe(t, p, 100);
    if (t == 2999) memory_at_3000 = bank->MemoryBytes();
  }
  // Origins every 100 steps at indices 100..5000 are scored by index 6000.
  EXPECT_EQ(scored_1000, 50);
  // Twice the steps, the same memory: pending forecasts, snapshots and
  // buffers are bounded.
  EXPECT_LE(bank->MemoryBytes(), memory_at_3000 * 1.01);
}

// A bank restored from a snapshot continues exactly as the saved one: same
// forecasts, scores and memory. The flat predictors' forecasts taken at one
// origin for several horizons are one shared buffer in a live bank, and are
// shared again after the restore.
TEST(ForecastBankTest, RestoredBankContinuesBitForBit) {
  auto predictors = [] {
    std::vector<std::unique_ptr<Predictor>> v;
    v.push_back(MakeLastValuePredictor(6).value());  // flat
    v.push_back(MakeSwAvgPredictor(6, 20).value());  // not flat
    v.push_back(MakeEwmPredictor(6, 30).value());    // flat
    return v;
  };
  ForecastBankOptions o;
  o.horizons = {1, 10, 100};
  auto live = ForecastBank::Create(predictors(), o).value();
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> u(0.2, 1.8);
  auto step = [&rng, &u] {
    std::vector<double> p(6);
    double sum = 0;
    for (double& v : p) sum += v = u(rng);
    for (double& v : p) v /= sum;
    return p;
  };
  for (int t = 0; t < 437; ++t) live->Observe(t, step(), 50);
  internal::SnapshotWriter w;
  ASSERT_TRUE(live->SaveTo(w).ok());
  const std::string bytes = w.Release();
  auto restored = ForecastBank::Create(predictors(), o).value();
  internal::SnapshotReader r(bytes, "bank");
  restored->LoadFrom(r);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(restored->MemoryBytes(), live->MemoryBytes());
  std::vector<std::pair<double, double>> scored;  // (live, restored) L1
  live->set_listener([&](const ScoredForecast& s) { scored.push_back({s.l1, -1}); });
  size_t next = 0;
  restored->set_listener([&](const ScoredForecast& s) {
    ASSERT_LT(next, scored.size());
    scored[next++].second = s.l1;
  });
  for (int t = 437; t < 700; ++t) {
    const std::vector<double> p = step();
    live->Observe(t, p, 50);
    restored->Observe(t, p, 50);
  }
  ASSERT_GT(scored.size(), 500u);
  EXPECT_EQ(next, scored.size());
  for (const auto& [a, b] : scored) EXPECT_EQ(a, b);
  for (int h : {1, 10, 37, 100}) {
    const BankForecast a = live->Forecast(h, "auto", 0.9).value();
    const BankForecast b = restored->Forecast(h, "auto", 0.9).value();
    EXPECT_EQ(a.predictor, b.predictor);
    EXPECT_EQ(a.mean, b.mean);
    EXPECT_EQ(a.lower, b.lower);
  }
  EXPECT_EQ(restored->MemoryBytes(), live->MemoryBytes());
  // Saving again writes the same bytes.
  internal::SnapshotWriter w1, w2;
  ASSERT_TRUE(live->SaveTo(w1).ok());
  ASSERT_TRUE(restored->SaveTo(w2).ok());
  EXPECT_EQ(w1.Release(), w2.Release());
}

// Proportions of a 4-expert load around `base` with i.i.d. noise.
std::vector<double> Noisy(const std::vector<double>& base, std::mt19937& rng,
                          double sd) {
  std::normal_distribution<double> n(0, sd);
  std::vector<double> p(base.size());
  double sum = 0;
  for (size_t e = 0; e < base.size(); ++e) sum += p[e] = std::max(1e-4, base[e] + n(rng));
  for (double& v : p) v /= sum;
  return p;
}

// Before auto has scores at a long horizon, a stable layer takes the
// smoother whose memory is nearest that horizon, among those that average
// only steps of the stable period; a transient layer (or the option off)
// ranks by the shorter horizon's scores.
TEST(ForecastBankTest, MemoryPriorBeforeScoresAtALongHorizon) {
  auto predictors = [] {
    std::vector<std::unique_ptr<Predictor>> v;
    v.push_back(MakeLastValuePredictor(4).value());   // memory 1
    v.push_back(MakeEmaPredictor(4, 0.9).value());     // memory 10
    v.push_back(MakeEwmPredictor(4, 300).value());     // memory 300
    v.push_back(MakeEwmPredictor(4, 3000).value());    // memory 3000
    return v;
  };
  ForecastBankOptions o;
  o.horizons = {1, 10, 1000};
  std::mt19937 rng(7);
  // A load that jumps every 20 steps: at h = 1 and 10 last_value is best.
  std::vector<std::vector<double>> steps;
  std::vector<double> level = {0.4, 0.3, 0.2, 0.1};
  std::uniform_real_distribution<double> u(0.05, 1);
  for (int t = 0; t < 600; ++t) {
    if (t % 20 == 0) {
      double sum = 0;
      for (double& v : level) sum += v = u(rng);
      for (double& v : level) v /= sum;
    }
    steps.push_back(Noisy(level, rng, 0.001));
  }
  auto run = [&](ForecastBankOptions options, int64_t stable_history) {
    auto bank = ForecastBank::Create(predictors(), options).value();
    for (int t = 0; t < 600; ++t) {
      bank->set_stable_history(stable_history < 0 ? t + 1 : stable_history);
      bank->Observe(t, steps[t], 512);
    }
    return bank;
  };
  // No scores at h = 1000 yet (600 steps).
  EXPECT_EQ(run(o, 0)->AutoChoice(10), "last_value");
  EXPECT_EQ(run(o, 0)->AutoChoice(1000), "last_value");  // transient: h = 10's
  auto stable = run(o, -1);                               // stable throughout
  EXPECT_EQ(stable->AutoChoice(1000), "ewm(3000)");       // log-nearest 1000
  EXPECT_EQ(stable->AutoChoice(10), "last_value");        // scored: evidence
  // Stable for the last 400 of 600 steps: ewm(3000) averages all 600, some
  // from before; ewm(300) is the nearest that does not. Stable for the last
  // 250: ema(0.9).
  EXPECT_EQ(run(o, 400)->AutoChoice(1000), "ewm(300)");
  EXPECT_EQ(run(o, 250)->AutoChoice(1000), "ema(0.9)");
  o.auto_memory_prior = false;
  EXPECT_EQ(run(o, -1)->AutoChoice(1000), "last_value");
}

TEST(ForecastBankTest, AutoPicksTheBestPredictorPerRegime) {
  ForecastBankOptions o;
  o.horizons = {1, 10};
  // I.i.d. noise around a fixed load: the window mean beats the last value.
  auto noisy = MakeBank(4, o);
  std::mt19937 rng(11);
  const std::vector<double> base = {0.4, 0.3, 0.2, 0.1};
  for (int t = 0; t < 2000; ++t) noisy->Observe(t, Noisy(base, rng, 0.03), 512);
  EXPECT_EQ(noisy->AutoChoice(1), "sw_avg(50)");
  EXPECT_EQ(noisy->AutoChoice(10), "sw_avg(50)");
  // A load that jumps to a new level every 40 steps: the last value wins at
  // short horizons.
  auto jumpy = MakeBank(4, o);
  std::vector<double> level = base;
  std::uniform_real_distribution<double> u(0.05, 1);
  for (int t = 0; t < 2000; ++t) {
    if (t % 40 == 0) {
      double sum = 0;
      for (double& v : level) sum += v = u(rng);
      for (double& v : level) v /= sum;
    }
    jumpy->Observe(t, Noisy(level, rng, 0.002), 512);
  }
  EXPECT_EQ(jumpy->AutoChoice(1), "last_value");
  // auto's own realised error is within 5% of the best predictor's.
  for (auto* bank : {noisy.get(), jumpy.get()}) {
    for (int h : {1, 10}) {
      double best = 1e9, autos = 0;
      for (const PredictorScore& s : bank->Scores()) {
        if (s.horizon != h) continue;
        if (s.name == "auto") autos = s.mean_l1;
        else best = std::min(best, s.mean_l1);
      }
      EXPECT_LE(autos, best * 1.05) << "h=" << h;
    }
  }
}

TEST(ForecastBankTest, ForecastAnswersAndIntervalsCover) {
  ForecastBankOptions o;
  o.horizons = {1};
  auto bank = MakeBank(4, o);
  std::mt19937 rng(5);
  const std::vector<double> base = {0.4, 0.3, 0.2, 0.1};
  for (int t = 0; t < 1000; ++t) bank->Observe(t, Noisy(base, rng, 0.02), 100);
  ASSERT_OK_AND_ASSIGN(BankForecast f, bank->Forecast(1, "auto", 0.9));
  EXPECT_EQ(f.predictor, "sw_avg(50)");
  double sum = 0;
  for (double v : f.mean) sum += v;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  ASSERT_EQ(f.lower.size(), 4u);
  // Empirical coverage of the next 400 steps.
  int inside = 0, total = 0;
  for (int t = 1000; t < 1400; ++t) {
    ASSERT_OK_AND_ASSIGN(BankForecast g, bank->Forecast(1, "sw_avg(50)", 0.9));
    auto p = Noisy(base, rng, 0.02);
    for (int e = 0; e < 4; ++e) {
      inside += p[e] >= g.lower[e] && p[e] <= g.upper[e];
      ++total;
    }
    bank->Observe(t, p, 100);
  }
  const double coverage = static_cast<double>(inside) / total;
  EXPECT_GT(coverage, 0.8);
  EXPECT_LT(coverage, 0.98);
  EXPECT_THAT(bank->Forecast(1, "arima(9,9,9)", 0.9),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("arima(9,9,9)")));
  EXPECT_THAT(bank->Forecast(0, "auto", 0.9),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("horizon 0")));
  EXPECT_THAT(bank->Forecast(1, "auto", 1.0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("level 1")));
  ASSERT_OK_AND_ASSIGN(std::vector<double> path, bank->ForecastPath(3, "last_value"));
  EXPECT_EQ(path.size(), 12u);
}

}  // namespace
}  // namespace moecast
