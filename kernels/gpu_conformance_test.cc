// Each GPU kernel against the CPU reference (core::cpu, itself held to the
// engine by cpu_reference_test), on fresh random inputs each run, with every
// output buffer poisoned (NaN bytes) before the run so that unwritten
// elements show. Edges: one series, length-1 history, zero counts, and a
// large batch. Without a GPU every test skips with the reason.
//
// Tolerances (absolute unless noted): sw_avg / ema / holt 1e-12 (FMA
// contraction on the GPU); ARIMA css 1e-7 relative, forecasts 1e-6 relative
// to 1 + |level| (the LM path differs by rounding); LSTM 1e-5 (float
// accumulation order); bootstrap closed form 1e-9 relative (reduction order).
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/batch.h"
#include "kernels/core/batch_ops.h"
#include "kernels/testing_util.h"

namespace moecast {
namespace kernels {
namespace {

using core::CoreStatus;

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    const CoreStatus s = core::gpu::DeviceCount(&count);
    if (s != CoreStatus::kOk) {
      GTEST_SKIP() << "no GPU here (" << core::CoreStatusName(s) << ": "
                   << core::gpu::LastErrorString()
                   << "); the CPU reference tests still run";
    }
    ASSERT_EQ(core::gpu::StreamCreate(&stream_), CoreStatus::kOk);
  }
  void TearDown() override {
    for (void* p : allocations_) core::gpu::Free(p);
    if (stream_ != nullptr) core::gpu::StreamDestroy(stream_);
  }
  // A device copy of v (or, with poison, NaN-filled buffer of its size).
  template <typename T>
  T* Dev(const std::vector<T>& v, bool poison = false) {
    void* p = nullptr;
    EXPECT_EQ(core::gpu::Malloc(&p, sizeof(T) * v.size() + 1), CoreStatus::kOk);
    allocations_.push_back(p);
    if (poison) {
      EXPECT_EQ(core::gpu::Memset(p, 0xff, sizeof(T) * v.size(), stream_), CoreStatus::kOk);
    } else {
      EXPECT_EQ(core::gpu::CopyToDevice(p, v.data(), sizeof(T) * v.size(), stream_),
                CoreStatus::kOk);
    }
    return static_cast<T*>(p);
  }
  template <typename T>
  std::vector<T> Host(const T* d, size_t n) {
    std::vector<T> v(n);
    EXPECT_EQ(core::gpu::CopyToHost(v.data(), d, sizeof(T) * n, stream_), CoreStatus::kOk);
    EXPECT_EQ(core::gpu::StreamSynchronize(stream_), CoreStatus::kOk)
        << core::gpu::LastErrorString();
    return v;
  }
  void* stream_ = nullptr;
  std::vector<void*> allocations_;
};

TEST_F(GpuTest, CheapPredictorsMatchCpu) {
  const uint64_t seed = testing_util::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int64_t S : {int64_t{1}, int64_t{1000}, int64_t{1} << 20}) {
    const int m = S == 1 ? 1 : 8;
    const int window = 7;
    core::SwAvgShape sh;
    sh.series = S;
    sh.window = window;
    std::vector<float> ring(window * S, 0.0f);
    std::vector<double> sum(S, 0.0), es(S, 0.0), level(S, 0.0), trend(S, 0.0);
    const int64_t groups = S / m;
    std::vector<double> alpha(groups, 0.2), beta(groups, 0.1), phi(groups, 0.95);
    float* d_ring = Dev(ring);
    double* d_sum = Dev(sum);
    double* d_es = Dev(es);
    double* d_level = Dev(level);
    double* d_trend = Dev(trend);
    double* d_alpha = Dev(alpha);
    double* d_beta = Dev(beta);
    double* d_phi = Dev(phi);
    std::vector<double> x(S);
    double* d_x = Dev(x, true);
    int since = 0;
    for (int step = 1; step <= 2 * window + 1; ++step) {
      x = testing_util::RandomProportions(&rng, static_cast<int>(S / m), m);
      ASSERT_EQ(core::gpu::CopyToDevice(d_x, x.data(), 8 * S, stream_), CoreStatus::kOk);
      const bool resum = ++since >= window;
      if (resum) since = 0;
      ASSERT_EQ(core::cpu::SwAvgObserve(sh, resum, x.data(), ring.data(), sum.data(), 0), CoreStatus::kOk);
      ASSERT_EQ(core::gpu::SwAvgObserve(sh, resum, d_x, d_ring, d_sum, stream_), CoreStatus::kOk);
      ASSERT_EQ(core::cpu::EmaObserve(S, step > 1, 0.9, x.data(), es.data(), 0), CoreStatus::kOk);
      ASSERT_EQ(core::gpu::EmaObserve(S, step > 1, 0.9, d_x, d_es, stream_), CoreStatus::kOk);
      ASSERT_EQ(core::cpu::HoltObserve(S, m, step > 1, alpha.data(), beta.data(), phi.data(),
                                       x.data(), level.data(), trend.data(), 0),
                CoreStatus::kOk);
      ASSERT_EQ(core::gpu::HoltObserve(S, m, step > 1, d_alpha, d_beta, d_phi, d_x, d_level,
                                       d_trend, stream_),
                CoreStatus::kOk);
      sh.head = sh.head + 1 == window ? 0 : sh.head + 1;
      if (sh.count < window) ++sh.count;
      if (!(step == 1 || step == window || step == 2 * window + 1)) continue;
      for (int h : {1, 3, 50}) {
        std::vector<double> w(sh.count), out(S), hout(S);
        core::SwAvgWeights(sh.count, h, w.data());
        double* d_w = Dev(w);
        double* d_out = Dev(out, true);
        double* d_hout = Dev(hout, true);
        ASSERT_EQ(core::cpu::SwAvgForecast(sh, h, w.data(), ring.data(), sum.data(), out.data(), 0),
                  CoreStatus::kOk);
        ASSERT_EQ(core::gpu::SwAvgForecast(sh, h, d_w, d_ring, d_sum, d_out, stream_),
                  CoreStatus::kOk);
        ASSERT_EQ(core::cpu::HoltForecast(S, m, h, phi.data(), level.data(), trend.data(),
                                          hout.data(), 0),
                  CoreStatus::kOk);
        ASSERT_EQ(core::gpu::HoltForecast(S, m, h, d_phi, d_level, d_trend, d_hout, stream_),
                  CoreStatus::kOk);
        const std::vector<double> g_out = Host(d_out, S), g_hout = Host(d_hout, S),
                                  g_es = Host(d_es, S);
        for (int64_t s = 0; s < S; ++s) {
          ASSERT_NEAR(g_out[s], out[s], 1e-12) << "sw_avg S=" << S << " s=" << s;
          ASSERT_NEAR(g_hout[s], hout[s], 1e-12) << "holt S=" << S << " s=" << s;
          ASSERT_NEAR(g_es[s], es[s], 1e-12) << "ema S=" << S << " s=" << s;
        }
      }
    }
  }
}

TEST_F(GpuTest, ArimaMatchesCpu) {
  const uint64_t seed = testing_util::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  struct Case { int p, d, q, n; int64_t S; };
  for (const Case& k : {Case{1, 1, 1, 300, 1}, Case{5, 1, 5, 300, 257}, Case{2, 0, 1, 1, 3},
                        Case{1, 1, 1, 200, 20000}}) {
    SCOPED_TRACE(::testing::Message() << "p " << k.p << " d " << k.d << " q " << k.q
                                      << " n " << k.n << " S " << k.S);
    const core::ArimaConfig c{k.p, k.d, k.q, k.d == 0, 20, 1e-8};
    const int64_t S = k.S;
    const int np = k.p + k.q + 1, nq = std::max(k.q, 1);
    std::vector<double> hist(k.n * S);
    for (int64_t s = 0; s < S; ++s) {
      const std::vector<double> x = testing_util::SimulateArma(&rng, k.n, k.d, static_cast<int>(s));
      for (int t = 0; t < k.n; ++t) hist[t * S + s] = x[t];
    }
    std::vector<double> params(np * S, 0.0), le(nq * S), css(S), fc(S);
    std::vector<int> it(S), fl(S);
    double* d_hist = Dev(hist);
    double* d_params = Dev(params);
    double* d_le = Dev(le, true);
    double* d_css = Dev(css, true);
    double* d_fc = Dev(fc, true);
    int* d_it = Dev(it, true);
    int* d_fl = Dev(fl, true);
    std::vector<double> scratch(2 * k.n * S);
    double* d_scratch = Dev(scratch, true);
    ASSERT_EQ(core::cpu::ArimaFitForecast(c, S, k.n, hist.data(), nullptr, 10, params.data(),
                                          le.data(), css.data(), nullptr, it.data(), fl.data(),
                                          fc.data(), nullptr, 0),
              CoreStatus::kOk);
    ASSERT_EQ(core::gpu::ArimaFitForecast(c, S, k.n, d_hist, nullptr, 10, d_params, d_le, d_css,
                                          nullptr, d_it, d_fl, d_fc, d_scratch, stream_),
              CoreStatus::kOk);
    const std::vector<double> g_css = Host(d_css, S), g_fc = Host(d_fc, S);
    const std::vector<int> g_fl = Host(d_fl, S);
    for (int64_t s = 0; s < S; ++s) {
      const double last = hist[(k.n - 1) * S + s];
      ASSERT_EQ(g_fl[s], fl[s]) << "s " << s;
      ASSERT_NEAR(g_css[s], css[s], 1e-7 * css[s] + 1e-15) << "s " << s;
      ASSERT_NEAR(g_fc[s], fc[s], 1e-6 * (1 + std::fabs(last))) << "s " << s;
    }
  }
}

TEST_F(GpuTest, LstmMatchesCpu) {
  const uint64_t seed = testing_util::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const LstmModel model = testing_util::RandomLstmModel(&rng, 16, 8, 2);
  const FlatLstm flat = FlattenLstm(model);
  for (int64_t B : {int64_t{1}, int64_t{3712}}) {
    for (int n : {1, 5, model.window()}) {
      const int64_t S = B * 16;
      std::vector<double> hist;
      for (int t = 0; t < n; ++t) {
        const std::vector<double> x = testing_util::RandomProportions(&rng, B, 16);
        hist.insert(hist.end(), x.begin(), x.end());
      }
      std::vector<double> out(S);
      std::vector<float> scratch(core::LstmScratchFloats(flat.shape) * B);
      const float* d_p = Dev(flat.params);
      const int* d_hz = Dev(flat.horizons);
      const double* d_hist = Dev(hist);
      float* d_scratch = Dev(scratch, true);
      double* d_out = Dev(out, true);
      ASSERT_EQ(core::cpu::LstmForecast(flat.shape, flat.params.data(), flat.horizons.data(), B,
                                        n, hist.data(), 7, nullptr, out.data(), 0),
                CoreStatus::kOk);
      ASSERT_EQ(core::gpu::LstmForecast(flat.shape, d_p, d_hz, B, n, d_hist, 7, d_scratch, d_out,
                                        stream_),
                CoreStatus::kOk);
      const std::vector<double> g = Host(d_out, S);
      for (int64_t s = 0; s < S; ++s) ASSERT_NEAR(g[s], out[s], 1e-5) << "B " << B << " n " << n;
    }
  }
}

TEST_F(GpuTest, BootstrapMatchesCpu) {
  const uint64_t seed = testing_util::FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (const bool zeros : {false, true}) {
    for (int steps : {1, 2, 100}) {
      core::BootstrapShape sh;
      sh.layers = 4;
      sh.steps = steps;
      sh.experts = 64;
      sh.replicates = 200;
      sh.top_k = 4;
      sh.seed = rng();
      std::vector<double> tokens, counts, quality;
      for (int l = 0; l < sh.layers; ++l) {
        const GammaWindow w = testing_util::RandomGammaWindow(&rng, 64, 4, steps, zeros);
        tokens.insert(tokens.end(), w.tokens.begin(), w.tokens.end());
        counts.insert(counts.end(), w.counts.begin(), w.counts.end());
        quality.insert(quality.end(), w.logit_mean.begin(), w.logit_mean.end());
      }
      const size_t LR = sh.layers * sh.replicates, LRM = LR * 64;
      std::vector<double> cf(LR), a(LR), n(LRM), q(LRM);
      std::vector<int> times(LR * steps);
      ASSERT_EQ(core::cpu::GammaBootstrap(sh, tokens.data(), counts.data(), quality.data(),
                                          cf.data(), a.data(), n.data(), q.data(), nullptr, 0),
                CoreStatus::kOk);
      double* d_cf = Dev(cf, true);
      double* d_a = Dev(a, true);
      double* d_n = Dev(n, true);
      double* d_q = Dev(q, true);
      ASSERT_EQ(core::gpu::GammaBootstrap(sh, Dev(tokens), Dev(counts), Dev(quality), d_cf, d_a,
                                          d_n, d_q, Dev(times, true), stream_),
                CoreStatus::kOk);
      const std::vector<double> g_cf = Host(d_cf, LR), g_a = Host(d_a, LR), g_n = Host(d_n, LRM),
                                g_q = Host(d_q, LRM);
      for (size_t i = 0; i < LR; ++i) {
        ASSERT_NEAR(g_a[i], a[i], 1e-9 * a[i]) << i;
        if (std::isnan(cf[i])) {
          ASSERT_TRUE(std::isnan(g_cf[i])) << i;
        } else {
          ASSERT_NEAR(g_cf[i], cf[i], 1e-9 * (1 + std::fabs(cf[i]))) << i;
        }
      }
      for (size_t i = 0; i < LRM; ++i) {
        ASSERT_NEAR(g_n[i], n[i], 1e-9 * (1 + n[i])) << i;
        ASSERT_NEAR(g_q[i], q[i], 1e-12) << i;
      }
    }
  }
}

TEST_F(GpuTest, HostApiGpuBackendMatchesCpuBackend) {
  BatchOptions gpu, cpu;
  gpu.backend = Backend::kGpu;
  cpu.backend = Backend::kCpu;
  std::mt19937_64 rng(testing_util::FreshSeed());
  auto g = MakeSwAvgBatch(4096, 64, 100, gpu);
  auto c = MakeSwAvgBatch(4096, 64, 100, cpu);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<double> go(4096), co(4096);
  for (int step = 0; step < 150; ++step) {
    const std::vector<double> x = testing_util::RandomProportions(&rng, 64, 64);
    ASSERT_TRUE((*g)->Observe(x).ok());
    ASSERT_TRUE((*c)->Observe(x).ok());
  }
  ASSERT_TRUE((*g)->Forecast(100, absl::MakeSpan(go)).ok());
  ASSERT_TRUE((*c)->Forecast(100, absl::MakeSpan(co)).ok());
  for (int s = 0; s < 4096; ++s) ASSERT_NEAR(go[s], co[s], 1e-12);
}

TEST(GpuAbsentTest, GpuBackendSaysWhy) {
  if (GpuAvailable()) GTEST_SKIP() << "a GPU is present";
  BatchOptions o;
  o.backend = Backend::kGpu;
  const absl::Status s = MakeSwAvgBatch(8, 8, 4, o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_TRUE(s.message().find("CUDA") != absl::string_view::npos) << s;
}

}  // namespace
}  // namespace kernels
}  // namespace moecast
