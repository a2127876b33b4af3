// The CPU reference of the kernels (core::cpu) against the engine's own
// implementations, on freshly generated inputs each run (the seed is printed
// with every failure). These tests run everywhere; the GPU conformance tests
// (gpu_conformance_test.cc) then hold the GPU to this reference.
//
// Tolerances (absolute unless noted), and why:
//   sw_avg weights, sw_avg, ema, holt   1e-12: the same arithmetic per series
//   ARIMA (same start)                  css 1e-7 relative, forecast and
//                                       params (p + q <= 3) 1e-6 relative to
//                                       1 + |value|: LDL' without pivoting
//                                       and J'J summation order differ from
//                                       Eigen's, so LM paths differ by rounding
//   LSTM                                2e-5: the engine pools projected steps
//                                       in float; the reference pools block
//                                       means in double before projecting
//   bootstrap closed form               1e-9 relative: same draws and sums
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "engine/health/gamma/gamma.h"
#include "engine/predict/arima/arima.h"
#include "engine/predict/basic_predictors.h"
#include "engine/predict/lstm/lstm.h"
#include "gtest/gtest.h"
#include "kernels/core/batch_ops.h"
#include "kernels/testing_util.h"

namespace moecast {
namespace kernels {
namespace {

using core::CoreStatus;

TEST(SwAvgWeightsTest, MatchesEngine) {
  for (int w : {1, 2, 5, 100}) {
    for (int h : {1, 2, 3, 10, 101, 250}) {
      std::vector<double> ours(w);
      core::SwAvgWeights(w, h, ours.data());
      const std::vector<double> engine = SwAvgHorizonWeights(w, h);
      for (int i = 0; i < w; ++i) {
        ASSERT_NEAR(ours[i], engine[i], 1e-15) << "W=" << w << " h=" << h << " i=" << i;
      }
    }
  }
}

// Drives G engine predictors (M experts each) and the batch (S = G*M series)
// with the same steps; compares forecasts after selected step counts.
TEST(CheapPredictorsTest, SwAvgEmaHoltMatchEngine) {
  const uint64_t seed = testing_util::FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (const int m : {1, 7}) {
    for (const int g : {1, 5}) {
      const int64_t S = int64_t{g} * m;
      const int window = 6;
      const double theta = 0.9;
      std::vector<std::unique_ptr<Predictor>> sw, ema, holt;
      HoltOptions ho;
      ho.fit_window = 200;  // no fit before 100 steps: default parameters
      for (int i = 0; i < g; ++i) {
        sw.push_back(*MakeSwAvgPredictor(m, window));
        ema.push_back(*MakeEmaPredictor(m, theta));
        holt.push_back(*MakeHoltPredictor(m, ho));
      }
      core::SwAvgShape sh;
      sh.series = S;
      sh.window = window;
      std::vector<float> ring(static_cast<size_t>(window) * S, -1e30f);
      std::vector<double> sum(S, 0.0), es(S, 0.0), level(S), trend(S);
      std::vector<double> alpha(g, 0.1), beta(g, 0.05), phi(g, 0.9);
      int since_resum = 0;
      for (int step = 1; step <= 40; ++step) {
        std::vector<double> x = testing_util::RandomProportions(&rng, g, m);
        for (int i = 0; i < g; ++i) {
          const absl::Span<const double> p(x.data() + static_cast<size_t>(i) * m, m);
          sw[i]->Observe(p);
          ema[i]->Observe(p);
          holt[i]->Observe(p);
        }
        const bool resum = ++since_resum >= window;
        if (resum) since_resum = 0;
        ASSERT_EQ(core::cpu::SwAvgObserve(sh, resum, x.data(), ring.data(), sum.data(), 3),
                  CoreStatus::kOk);
        sh.head = sh.head + 1 == window ? 0 : sh.head + 1;
        if (sh.count < window) ++sh.count;
        ASSERT_EQ(core::cpu::EmaObserve(S, step > 1, theta, x.data(), es.data(), 3),
                  CoreStatus::kOk);
        ASSERT_EQ(core::cpu::HoltObserve(S, m, step > 1, alpha.data(), beta.data(),
                                         phi.data(), x.data(), level.data(), trend.data(), 3),
                  CoreStatus::kOk);
        if (!(step <= 3 || step == window || step % 7 == 0)) continue;
        for (int h : {1, 2, window, 3 * window + 1}) {
          std::vector<double> w(sh.count), out(S, 123.0), eng(m);
          core::SwAvgWeights(sh.count, h, w.data());
          ASSERT_EQ(core::cpu::SwAvgForecast(sh, h, w.data(), ring.data(), sum.data(),
                                             out.data(), 3),
                    CoreStatus::kOk);
          std::vector<double> hout(S, 123.0);
          ASSERT_EQ(core::cpu::HoltForecast(S, m, h, phi.data(), level.data(),
                                            trend.data(), hout.data(), 3),
                    CoreStatus::kOk);
          for (int i = 0; i < g; ++i) {
            sw[i]->Forecast(h, absl::MakeSpan(eng));
            for (int e = 0; e < m; ++e) {
              ASSERT_NEAR(out[i * m + e], eng[e], 1e-12)
                  << "sw_avg step " << step << " h " << h << " series " << i * m + e;
            }
            ema[i]->Forecast(h, absl::MakeSpan(eng));
            for (int e = 0; e < m; ++e) {
              ASSERT_NEAR(es[i * m + e], eng[e], 1e-12) << "ema step " << step;
            }
            holt[i]->Forecast(h, absl::MakeSpan(eng));
            for (int e = 0; e < m; ++e) {
              ASSERT_NEAR(hout[i * m + e], eng[e], 1e-12)
                  << "holt step " << step << " h " << h;
            }
          }
        }
      }
    }
  }
}

struct ArimaCase {
  int p, d, q;
  bool drift;
};

TEST(ArimaTest, FitAndForecastMatchEngine) {
  const uint64_t seed = testing_util::FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const ArimaCase cases[] = {{1, 1, 1, false}, {2, 0, 1, false}, {1, 1, 0, true},
                             {0, 1, 2, false}, {5, 1, 5, false}, {2, 2, 0, false}};
  for (const ArimaCase& ac : cases) {
    SCOPED_TRACE(testing::Message() << "arima(" << ac.p << "," << ac.d << "," << ac.q
                                    << ")" << (ac.drift ? "+drift" : ""));
    ArimaOptions o;
    o.p = ac.p;
    o.d = ac.d;
    o.q = ac.q;
    o.drift = ac.drift;
    o.max_iterations = 50;
    o.fit_window = 300;
    core::ArimaConfig c{o.p, o.d, o.q, o.d == 0 || o.drift, o.max_iterations, o.tolerance};
    const int np = o.p + o.q + 1;
    const int n = 300;
    const int S = 12;
    // Well-conditioned series (low-order ARMA, plus one constant and one
    // linear series: the degenerate paths), [n][S].
    std::vector<double> hist(static_cast<size_t>(n) * S);
    for (int s = 0; s < S; ++s) {
      std::vector<double> x = testing_util::SimulateArma(&rng, n, ac.d, s);
      for (int t = 0; t < n; ++t) hist[static_cast<size_t>(t) * S + s] = x[t];
    }
    for (int t = 0; t < n; ++t) hist[static_cast<size_t>(t) * S + 0] = 0.25;
    for (int t = 0; t < n; ++t) hist[static_cast<size_t>(t) * S + 1] = 0.1 + 1e-3 * t;
    for (bool warm : {false, true}) {
      SCOPED_TRACE(warm ? "warm" : "cold");
      std::vector<double> params(static_cast<size_t>(np) * S, 0.0);
      std::vector<uint8_t> warm_flags(S, warm ? 1 : 0);
      std::vector<std::vector<double>> engine_params(S, std::vector<double>(np, 0.0));
      if (warm) {  // warm start from a cold fit on the first 250 steps
        for (int s = 0; s < S; ++s) {
          ArimaCss css(o);
          std::vector<double> x(250);
          for (int t = 0; t < 250; ++t) x[t] = hist[static_cast<size_t>(t) * S + s];
          css.Fit(x, false, absl::MakeSpan(engine_params[s]));
          for (int i = 0; i < np; ++i) params[static_cast<size_t>(i) * S + s] = engine_params[s][i];
        }
      }
      const int h = 17;
      std::vector<double> last_e(static_cast<size_t>(std::max(o.q, 1)) * S, -7);
      std::vector<double> css_out(S, -7), start_out(S, -7), fc(S, -7);
      std::vector<int> iters(S, -7), flags(S, -7);
      ASSERT_EQ(core::cpu::ArimaFitForecast(c, S, n, hist.data(), warm_flags.data(), h,
                                            params.data(), last_e.data(), css_out.data(),
                                            start_out.data(), iters.data(), flags.data(),
                                            fc.data(), nullptr, 4),
                CoreStatus::kOk);
      for (int s = 0; s < S; ++s) {
        SCOPED_TRACE(testing::Message() << "series " << s);
        ArimaCss css(o);
        std::vector<double> x(n);
        for (int t = 0; t < n; ++t) x[t] = hist[static_cast<size_t>(t) * S + s];
        std::vector<double>& ep = engine_params[s];
        const ArimaFitStats st = css.Fit(x, warm, absl::MakeSpan(ep));
        EXPECT_EQ((flags[s] & core::kArimaDegenerate) != 0, st.degenerate);
        EXPECT_EQ((flags[s] & core::kArimaWarm) != 0, st.warm_start);
        EXPECT_NEAR(css_out[s], st.css, 1e-7 * st.css + 1e-15);
        EXPECT_NEAR(start_out[s], st.start_css, 1e-7 * st.start_css + 1e-15);
        // Over-parameterised models have flat directions (near-cancelling
        // roots): there only S and the forecasts are compared.
        if (o.p + o.q <= 3) {
          for (int i = 0; i < np; ++i) {
            EXPECT_NEAR(params[static_cast<size_t>(i) * S + s], ep[i],
                        1e-6 * (1 + std::fabs(ep[i])))
                << "param " << i;
          }
        }
        std::vector<double> path(h);
        css.ForecastPath(x, ep, absl::MakeSpan(path));
        const double last = x[n - 1];
        double acc = 0;
        for (double v : path) acc += v - last;
        EXPECT_NEAR(fc[s], last + acc / h, 1e-6 * (1 + std::fabs(last)));
        const absl::Span<const double> le = css.last_residuals();
        for (int j = 0; j < o.q; ++j) {
          EXPECT_NEAR(last_e[static_cast<size_t>(j) * S + s], le[j], 1e-6) << "e " << j;
        }
      }
    }
  }
}

TEST(ArimaTest, ShortHistoriesAreDegenerateNotUnwritten) {
  core::ArimaConfig c{5, 1, 5, false, 10, 1e-8};
  for (int n : {1, 2, 12}) {
    const int S = 3;
    std::vector<double> hist(static_cast<size_t>(n) * S, 0.3);
    for (int t = 0; t < n; ++t) hist[static_cast<size_t>(t) * S + 1] = 0.1 * t;
    std::vector<double> params(11 * S, 5.0), last_e(5 * S, 9.0), css(S, -1), fc(S, -1);
    std::vector<int> flags(S, -1);
    ASSERT_EQ(core::cpu::ArimaFitForecast(c, S, n, hist.data(), nullptr, 4, params.data(),
                                          last_e.data(), css.data(), nullptr, nullptr,
                                          flags.data(), fc.data(), nullptr, 1),
              CoreStatus::kOk);
    for (int s = 0; s < S; ++s) {
      EXPECT_EQ(flags[s], core::kArimaDegenerate) << "n " << n;
      for (int i = 0; i < 11; ++i) EXPECT_EQ(params[i * S + s], 0.0);
      EXPECT_EQ(fc[s], hist[static_cast<size_t>(n - 1) * S + s]) << "flat forecast";
      EXPECT_GE(css[s], 0.0);
    }
  }
}

TEST(LstmTest, MatchesEngine) {
  const uint64_t seed = testing_util::FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int layers : {1, 2}) {
    LstmModel model = testing_util::RandomLstmModel(&rng, /*m=*/6, /*h=*/5, layers);
    auto weights = LstmWeights::FromModel(model, "random");
    ASSERT_TRUE(weights.ok()) << weights.status();
    const core::LstmShapeHD sh = testing_util::LstmShapeOf(model);
    const std::vector<float> flat = testing_util::FlattenLstmParams(model);
    const int B = 4, M = 6;
    const int W = model.window();
    std::vector<std::unique_ptr<Predictor>> engine;
    for (int b = 0; b < B; ++b) engine.push_back(*MakeLstmPredictor(M, *weights));
    std::vector<double> hist;  // [t][B*M], all steps so far
    for (int step = 1; step <= 2 * W + 3; ++step) {
      const std::vector<double> x = testing_util::RandomProportions(&rng, B, M);
      hist.insert(hist.end(), x.begin(), x.end());
      for (int b = 0; b < B; ++b) {
        engine[b]->Observe(absl::MakeConstSpan(x.data() + b * M, M));
      }
      if (!(step <= 2 || step == W || step % 5 == 0)) continue;
      const int n = std::min(step, W);
      const double* window = hist.data() + static_cast<size_t>(step - n) * B * M;
      for (int h : {1, 3, 4, 7, 10, 50}) {
        std::vector<double> out(B * M, -99.0), eng(M);
        ASSERT_EQ(core::cpu::LstmForecast(sh, flat.data(), model.horizons.data(), B, n,
                                          window, h, nullptr, out.data(), 2),
                  CoreStatus::kOk);
        for (int b = 0; b < B; ++b) {
          engine[b]->Forecast(h, absl::MakeSpan(eng));
          for (int e = 0; e < M; ++e) {
            ASSERT_NEAR(out[b * M + e], eng[e], 2e-5)
                << "layers " << layers << " step " << step << " h " << h;
          }
        }
      }
    }
  }
}

// The engine's interval end (gamma.h): the ((B + 1) p)-th of the B sorted
// replicates, interpolated and clamped.
double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double h = std::min(static_cast<double>(v.size() - 1),
                            std::max(0.0, (v.size() + 1) * p - 1));
  const size_t lo = static_cast<size_t>(std::floor(h));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (h - lo) * (v[hi] - v[lo]);
}

TEST(GammaBootstrapTest, ClosedFormReplicatesMatchEngineCi) {
  const uint64_t seed = testing_util::FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (const bool zeros : {false, true}) {
    for (const int steps : {2, 37}) {
      const int M = 16, K = 2, R = 150, L = 3;
      core::BootstrapShape sh;
      sh.layers = L;
      sh.steps = steps;
      sh.experts = M;
      sh.replicates = R;
      sh.top_k = K;
      sh.seed = rng();
      std::vector<GammaWindow> windows;
      std::vector<double> tokens, counts, quality;
      for (int l = 0; l < L; ++l) {
        windows.push_back(testing_util::RandomGammaWindow(&rng, M, K, steps, zeros));
        const GammaWindow& w = windows.back();
        tokens.insert(tokens.end(), w.tokens.begin(), w.tokens.end());
        counts.insert(counts.end(), w.counts.begin(), w.counts.end());
        quality.insert(quality.end(), w.logit_mean.begin(), w.logit_mean.end());
      }
      std::vector<double> cf(L * R, -1), a(L * R, -1), n_out(L * R * M, -1),
          q_out(L * R * M, -1);
      ASSERT_EQ(core::cpu::GammaBootstrap(sh, tokens.data(), counts.data(), quality.data(),
                                          cf.data(), a.data(), n_out.data(), q_out.data(),
                                          nullptr, 3),
                CoreStatus::kOk);
      for (int l = 0; l < L; ++l) {
        GammaOptions o;
        o.top_k = K;
        o.bootstrap_replicates = R;
        o.seed = sh.seed;
        o.heldout = false;
        absl::StatusOr<GammaFit> fit = FitGamma(windows[l], o);
        ASSERT_TRUE(fit.ok()) << fit.status();
        std::vector<double> draws;
        for (int r = 0; r < R; ++r) {
          EXPECT_GT(a[l * R + r], 0);
          if (std::isfinite(cf[l * R + r])) draws.push_back(cf[l * R + r] / K);
          double qsum = 0;
          for (int e = 0; e < M; ++e) qsum += q_out[(l * R + r) * M + e];
          EXPECT_NEAR(qsum, 0.0, 1e-9) << "quality is centred";
        }
        ASSERT_FALSE(draws.empty());
        double mean = 0;
        for (double v : draws) mean += v;
        mean /= draws.size();
        const double tol = 1e-9 * (1 + std::fabs(fit->closed_form.gamma_f));
        EXPECT_NEAR(mean - fit->closed_form.gamma_f, fit->closed_form.bootstrap_bias_f, tol);
        EXPECT_NEAR(Percentile(draws, 0.025), fit->closed_form.ci_low_f, tol);
        EXPECT_NEAR(Percentile(draws, 0.975), fit->closed_form.ci_high_f, tol);
      }
    }
  }
}

TEST(CpuReferenceTest, RejectsBadShapes) {
  core::SwAvgShape sh;
  sh.series = 4;
  sh.window = 0;
  EXPECT_EQ(core::cpu::SwAvgObserve(sh, false, nullptr, nullptr, nullptr, 1),
            CoreStatus::kInvalidArgument);
  EXPECT_EQ(core::cpu::EmaObserve(3, true, 1.0, nullptr, nullptr, 1),
            CoreStatus::kInvalidArgument);
  core::ArimaConfig c{11, 1, 0, false, 10, 1e-8};
  EXPECT_EQ(core::cpu::ArimaFitForecast(c, 1, 10, nullptr, nullptr, 1, nullptr, nullptr,
                                        nullptr, nullptr, nullptr, nullptr, nullptr,
                                        nullptr, 1),
            CoreStatus::kInvalidArgument);
}

}  // namespace
}  // namespace kernels
}  // namespace moecast
