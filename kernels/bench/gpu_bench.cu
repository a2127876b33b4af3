// gpu_bench: times every kernel of kernels/core at 1k, 10k, 100k and 1M
// series with CUDA events, next to the CPU reference on all cores in the same
// run, and prints bytes moved and flops (simple models, stated below) against
// the device's measured copy bandwidth. Self-contained: no Bazel, no Abseil,
// no gRPC (build.sh builds it with nvcc alone).
//
//   ./gpu_bench                 all kernels, all sizes
//   ./gpu_bench --sizes=1000,10000 --cpu-cap=20000 --threads=16
//
// Without a GPU it says so and still runs the CPU reference (CPU figures).
// Expensive CPU runs (ARIMA, LSTM, bootstrap) are timed on at most --cpu-cap
// series and scaled linearly (marked "~"): the work is independent per series.
//
// Scenarios (series S):
//   sw_avg.observe / .forecast(h=1) / .forecast(h=100)   W = 100
//   ema.observe, holt.observe, holt.forecast(h=100)
//   arima(5,1,5).cold / .warm   window n = 500, max_iterations = 10
//   lstm   M = 16, H = 32, 1 layer, lookback 32 x block 8; S / M streams
//   bootstrap   M = 256, T = 100 steps, R = 200 replicates; S / M windows
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/core/batch_ops.h"

using namespace moecast::kernels::core;  // NOLINT: a bench binary

namespace {

bool g_gpu = false;
double g_bw_gbs = 0;  // measured D2D copy bandwidth (read + write), GB/s
int g_threads = 0;
int64_t g_cpu_cap = 20000;

#define CK(x)                                                                  \
  do {                                                                         \
    cudaError_t _e = (x);                                                      \
    if (_e != cudaSuccess) {                                                   \
      std::fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(_e), \
                   __FILE__, __LINE__);                                        \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)
#define CS(x)                                                                       \
  do {                                                                              \
    CoreStatus _s = (x);                                                            \
    if (_s != CoreStatus::kOk) {                                                    \
      std::fprintf(stderr, "core error %s (%s) at %s:%d\n", CoreStatusName(_s),     \
                   gpu::LastErrorString(), __FILE__, __LINE__);                     \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

template <typename T>
T* DevCopy(const std::vector<T>& v) {
  T* p = nullptr;
  CK(cudaMalloc(&p, sizeof(T) * std::max<size_t>(v.size(), 1)));
  CK(cudaMemcpy(p, v.data(), sizeof(T) * v.size(), cudaMemcpyHostToDevice));
  return p;
}
template <typename T>
T* DevAlloc(size_t n) {
  T* p = nullptr;
  CK(cudaMalloc(&p, sizeof(T) * std::max<size_t>(n, 1)));
  return p;
}

// Median milliseconds of `reps` runs of fn on the GPU (after one warm-up).
double GpuMs(const std::function<void()>& fn, int reps = 5) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  fn();
  CK(cudaDeviceSynchronize());
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a));
    fn();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float t = 0;
    CK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double CpuMs(const std::function<void()>& fn, int reps) {
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                     .count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void MeasureBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  CK(cudaMalloc(&a, bytes));
  CK(cudaMalloc(&b, bytes));
  const double ms = GpuMs([&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
  g_bw_gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
  CK(cudaFree(a));
  CK(cudaFree(b));
}

// One result line. bytes/flops: the model's totals for the call.
void Report(const char* name, int64_t series, double gpu_ms, double cpu_ms, bool cpu_scaled,
            double bytes, double flops) {
  std::printf("%-24s %9lld", name, static_cast<long long>(series));
  if (g_gpu) {
    const double floor_ms = g_bw_gbs > 0 ? bytes / (g_bw_gbs * 1e9) * 1e3 : 0;
    std::printf(" gpu %10.4f ms  %8.1f GB/s  %9.1f GFLOP/s  x%6.2f of floor", gpu_ms,
                bytes / (gpu_ms * 1e-3) / 1e9, flops / (gpu_ms * 1e-3) / 1e9,
                floor_ms > 0 ? gpu_ms / floor_ms : 0.0);
  }
  std::printf("  cpu %s%10.3f ms", cpu_scaled ? "~" : " ", cpu_ms);
  if (g_gpu) std::printf("  speed-up %8.1fx", cpu_ms / gpu_ms);
  std::printf("  (%.3g B, %.3g flop)\n", bytes, flops);
}

std::vector<double> Proportions(std::mt19937_64* rng, int64_t s, int m) {
  std::vector<double> x(s);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  for (int64_t g = 0; g < s / m; ++g) {
    double sum = 0;
    for (int e = 0; e < m; ++e) sum += (x[g * m + e] = u(*rng));
    for (int e = 0; e < m; ++e) x[g * m + e] /= sum;
  }
  return x;
}

void BenchCheap(int64_t S) {
  std::mt19937_64 rng(1);
  const int W = 100, M = 64;
  const std::vector<double> x = Proportions(&rng, S, M);
  SwAvgShape sh;
  sh.series = S;
  sh.window = W;
  sh.head = 17;
  sh.count = W;
  std::vector<float> ring(static_cast<size_t>(W) * S, 0.01f);
  std::vector<double> sum(S, 1.0), out(S), state(S, 0.01), level(S, 0.01), trend(S, 0.0);
  std::vector<double> w1(W), w100(W);
  SwAvgWeights(W, 1, w1.data());
  SwAvgWeights(W, 100, w100.data());
  const int64_t G = S / M;
  std::vector<double> al(G, 0.1), be(G, 0.05), ph(G, 0.9);
  const double obs_bytes = 32.0 * S, f1_bytes = 16.0 * S, f100_bytes = (16.0 + 4.0 * 99) * S;
  const double cpu_obs = CpuMs([&] { CS(cpu::SwAvgObserve(sh, false, x.data(), ring.data(), sum.data(), g_threads)); }, 3);
  const double cpu_f1 = CpuMs([&] { CS(cpu::SwAvgForecast(sh, 1, w1.data(), ring.data(), sum.data(), out.data(), g_threads)); }, 3);
  const double cpu_f100 = CpuMs([&] { CS(cpu::SwAvgForecast(sh, 100, w100.data(), ring.data(), sum.data(), out.data(), g_threads)); }, 3);
  const double cpu_ema = CpuMs([&] { CS(cpu::EmaObserve(S, true, 0.9, x.data(), state.data(), g_threads)); }, 3);
  const double cpu_holt = CpuMs([&] { CS(cpu::HoltObserve(S, M, true, al.data(), be.data(), ph.data(), x.data(), level.data(), trend.data(), g_threads)); }, 3);
  const double cpu_holtf = CpuMs([&] { CS(cpu::HoltForecast(S, M, 100, ph.data(), level.data(), trend.data(), out.data(), g_threads)); }, 3);
  double g[6] = {0, 0, 0, 0, 0, 0};
  if (g_gpu) {
    double* dx = DevCopy(x);
    float* dring = DevCopy(ring);
    double* dsum = DevCopy(sum);
    double* dout = DevAlloc<double>(S);
    double* dw1 = DevCopy(w1);
    double* dw100 = DevCopy(w100);
    double* dstate = DevCopy(state);
    double* dl = DevCopy(level);
    double* dt = DevCopy(trend);
    double* dal = DevCopy(al);
    double* dbe = DevCopy(be);
    double* dph = DevCopy(ph);
    g[0] = GpuMs([&] { CS(gpu::SwAvgObserve(sh, false, dx, dring, dsum, nullptr)); });
    g[1] = GpuMs([&] { CS(gpu::SwAvgForecast(sh, 1, dw1, dring, dsum, dout, nullptr)); });
    g[2] = GpuMs([&] { CS(gpu::SwAvgForecast(sh, 100, dw100, dring, dsum, dout, nullptr)); });
    g[3] = GpuMs([&] { CS(gpu::EmaObserve(S, true, 0.9, dx, dstate, nullptr)); });
    g[4] = GpuMs([&] { CS(gpu::HoltObserve(S, M, true, dal, dbe, dph, dx, dl, dt, nullptr)); });
    g[5] = GpuMs([&] { CS(gpu::HoltForecast(S, M, 100, dph, dl, dt, dout, nullptr)); });
    // The host API's per-call transfers (x in, out back) for the crossover.
    std::vector<double> host(S);
    const double h2d = GpuMs([&] { CK(cudaMemcpy(dx, x.data(), 8 * S, cudaMemcpyHostToDevice)); });
    const double d2h = GpuMs([&] { CK(cudaMemcpy(host.data(), dout, 8 * S, cudaMemcpyDeviceToHost)); });
    std::printf("%-24s %9lld  with transfers: observe gpu %.4f ms vs cpu %.4f ms; forecast(1) gpu %.4f ms vs cpu %.4f ms -> %s\n",
                "crossover.sw_avg", static_cast<long long>(S), g[0] + h2d, cpu_obs, g[1] + d2h, cpu_f1,
                g[0] + h2d + g[1] + d2h < cpu_obs + cpu_f1 ? "gpu" : "cpu");
    for (void* p : {static_cast<void*>(dx), static_cast<void*>(dring), static_cast<void*>(dsum),
                    static_cast<void*>(dout), static_cast<void*>(dw1), static_cast<void*>(dw100),
                    static_cast<void*>(dstate), static_cast<void*>(dl), static_cast<void*>(dt),
                    static_cast<void*>(dal), static_cast<void*>(dbe), static_cast<void*>(dph)}) {
      CK(cudaFree(p));
    }
  }
  Report("sw_avg.observe", S, g[0], cpu_obs, false, obs_bytes, 3.0 * S);
  Report("sw_avg.forecast(h=1)", S, g[1], cpu_f1, false, f1_bytes, 1.0 * S);
  Report("sw_avg.forecast(h=100)", S, g[2], cpu_f100, false, f100_bytes, 2.0 * 100 * S);
  Report("ema.observe", S, g[3], cpu_ema, false, 24.0 * S, 3.0 * S);
  Report("holt.observe", S, g[4], cpu_holt, false, 40.0 * S, 10.0 * S);
  Report("holt.forecast(h=100)", S, g[5], cpu_holtf, false, 24.0 * S, 2.0 * S);
}

// Tiles `pool` generated ARMA(1,1) level series of length n into S series.
std::vector<double> ArimaHistory(int64_t S, int n) {
  const int pool = 1024;
  std::mt19937_64 rng(7);
  std::normal_distribution<double> z(0.0, 0.01);
  std::vector<std::vector<double>> base(pool, std::vector<double>(n));
  for (int i = 0; i < pool; ++i) {
    double u = 0, e_prev = 0, level = 0.05;
    const double phi = 0.2 + 0.6 * (i % 7) / 7.0, theta = -0.3 + 0.1 * (i % 5);
    for (int t = 0; t < n; ++t) {
      const double e = z(rng);
      u = phi * u + e + theta * e_prev;
      e_prev = e;
      base[i][t] = (level += u);
    }
  }
  std::vector<double> h(static_cast<size_t>(n) * S);
  for (int t = 0; t < n; ++t) {
    for (int64_t s = 0; s < S; ++s) h[t * S + s] = base[s % pool][t];
  }
  return h;
}

void BenchArima(int64_t S) {
  const int n = 500;
  const ArimaConfig c{5, 1, 5, false, 10, 1e-8};
  const int np = 11;
  const int64_t Sc = std::min(S, g_cpu_cap);
  const std::vector<double> hc = ArimaHistory(Sc, n);
  std::vector<double> pc(np * Sc, 0.0), css(Sc), fc(Sc);
  std::vector<int> it(Sc);
  std::vector<uint8_t> warm(Sc, 1);
  const double cold_cpu = CpuMs([&] {
    std::fill(pc.begin(), pc.end(), 0.0);
    CS(cpu::ArimaFitForecast(c, Sc, n, hc.data(), nullptr, 100, pc.data(), nullptr, css.data(), nullptr, it.data(), nullptr, fc.data(), nullptr, g_threads));
  }, 1) * S / Sc;
  double iters = 0;
  for (int v : it) iters += v;
  iters /= Sc;
  const std::vector<double> fitted = pc;
  const double warm_cpu = CpuMs([&] {
    pc = fitted;
    CS(cpu::ArimaFitForecast(c, Sc, n, hc.data(), warm.data(), 100, pc.data(), nullptr, css.data(), nullptr, it.data(), nullptr, fc.data(), nullptr, g_threads));
  }, 1) * S / Sc;
  double g_cold = 0, g_warm = 0;
  if (g_gpu) {
    const std::vector<double> h = ArimaHistory(S, n);
    double* dh = DevCopy(h);
    double* dp = DevAlloc<double>(np * S);
    double* dscr = DevAlloc<double>(2 * static_cast<size_t>(n) * S);
    double* dfc = DevAlloc<double>(S);
    std::vector<uint8_t> wall(S, 1);
    uint8_t* dw = DevCopy(wall);
    g_cold = GpuMs([&] {
      CK(cudaMemsetAsync(dp, 0, sizeof(double) * np * S));
      CS(gpu::ArimaFitForecast(c, S, n, dh, nullptr, 100, dp, nullptr, nullptr, nullptr, nullptr, nullptr, dfc, dscr, nullptr));
    }, 3);
    double* dfit = DevAlloc<double>(np * S);
    CK(cudaMemcpy(dfit, dp, sizeof(double) * np * S, cudaMemcpyDeviceToDevice));
    g_warm = GpuMs([&] {
      CK(cudaMemcpyAsync(dp, dfit, sizeof(double) * np * S, cudaMemcpyDeviceToDevice));
      CS(gpu::ArimaFitForecast(c, S, n, dh, dw, 100, dp, nullptr, nullptr, nullptr, nullptr, nullptr, dfc, dscr, nullptr));
    }, 3);
    for (void* p : {static_cast<void*>(dh), static_cast<void*>(dp), static_cast<void*>(dscr),
                    static_cast<void*>(dfc), static_cast<void*>(dw), static_cast<void*>(dfit)}) {
      CK(cudaFree(p));
    }
  }
  // Model per series and LM iteration: residuals 2 n (p + q) flops, Jacobian
  // 2 n (p + 2) q, J'J and J'e n k (k + 3); bytes: the history read once per
  // pass (~3 passes) plus 2 scratch arrays written and read.
  const double k = 10;
  const double per_iter = 2.0 * n * 10 + 2.0 * n * 7 * 5 + n * k * (k + 3);
  const double flops = per_iter * std::max(iters, 1.0) * S;
  const double bytes = (3.0 * 8 * n + 4.0 * 8 * n) * std::max(iters, 1.0) * S;
  Report("arima(5,1,5).cold", S, g_cold, cold_cpu, Sc < S, bytes, flops);
  Report("arima(5,1,5).warm", S, g_warm, warm_cpu, Sc < S, bytes, flops);
}

void BenchLstm(int64_t S) {
  LstmShapeHD sh;
  sh.num_experts = 16;
  sh.hidden = 32;
  sh.num_layers = 1;
  sh.lookback = 32;
  sh.block = 8;
  sh.anchor_window = 8;
  sh.num_horizons = 3;
  sh.input_scale = 0.05f;
  sh.output_scale = 0.02f;
  const int horizons[3] = {1, 100, 1000};
  const int n = sh.window();
  const int64_t B = std::max<int64_t>(1, S / sh.num_experts);
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  std::vector<float> params(LstmParamCount(sh));
  for (float& v : params) v = u(rng);
  const int64_t Bc = std::min<int64_t>(B, std::max<int64_t>(1, g_cpu_cap / sh.num_experts));
  const std::vector<double> hc = Proportions(&rng, Bc * 16 * n, 16);
  std::vector<double> out(Bc * 16);
  const double cpu = CpuMs([&] {
    CS(cpu::LstmForecast(sh, params.data(), horizons, Bc, n, hc.data(), 100, nullptr, out.data(), g_threads));
  }, 1) * B / Bc;
  double g = 0;
  if (g_gpu) {
    const std::vector<double> h = Proportions(&rng, B * 16 * n, 16);
    float* dp = DevCopy(params);
    int* dhz = DevCopy(std::vector<int>(horizons, horizons + 3));
    double* dh = DevCopy(h);
    float* ds = DevAlloc<float>(LstmScratchFloats(sh) * B);
    double* dout = DevAlloc<double>(B * 16);
    g = GpuMs([&] { CS(gpu::LstmForecast(sh, dp, dhz, B, n, dh, 100, ds, dout, nullptr)); }, 3);
    for (void* p : {static_cast<void*>(dp), static_cast<void*>(dhz), static_cast<void*>(dh),
                    static_cast<void*>(ds), static_cast<void*>(dout)}) {
      CK(cudaFree(p));
    }
  }
  const double flops = B * (2.0 * sh.lookback * 4 * 32 * (16 + 32) + 2.0 * n * 16 + 2.0 * 16 * 32);
  const double bytes = B * (8.0 * n * 16 + 8.0 * 16);
  Report("lstm(M=16,H=32)", B * 16, g, cpu, Bc < B, bytes, flops);
}

void BenchBootstrap(int64_t S) {
  BootstrapShape sh;
  sh.experts = 256;
  sh.steps = 100;
  sh.replicates = 200;
  sh.top_k = 8;
  sh.layers = static_cast<int>(std::max<int64_t>(1, S / sh.experts));
  const int64_t L = sh.layers, T = sh.steps, M = sh.experts, R = sh.replicates;
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  auto make = [&](int64_t layers, std::vector<double>* tok, std::vector<double>* cnt,
                  std::vector<double>* q) {
    tok->assign(layers * T, 4096.0);
    cnt->resize(layers * T * M);
    q->resize(layers * T * M);
    for (size_t i = 0; i < cnt->size(); ++i) {
      (*cnt)[i] = std::floor(8 * 4096.0 / M * u(rng) * 0.9);
      (*q)[i] = u(rng) - 1.0;
    }
  };
  BootstrapShape shc = sh;
  shc.layers = static_cast<int>(std::min<int64_t>(L, std::max<int64_t>(1, g_cpu_cap / M / 8)));
  std::vector<double> tok, cnt, q;
  make(shc.layers, &tok, &cnt, &q);
  std::vector<double> cf(shc.layers * R), a(shc.layers * R), no(shc.layers * R * M),
      qo(shc.layers * R * M);
  const double cpu = CpuMs([&] {
    CS(cpu::GammaBootstrap(shc, tok.data(), cnt.data(), q.data(), cf.data(), a.data(), no.data(), qo.data(), nullptr, g_threads));
  }, 1) * L / shc.layers;
  double g = 0;
  if (g_gpu) {
    make(L, &tok, &cnt, &q);
    double* dt = DevCopy(tok);
    double* dc = DevCopy(cnt);
    double* dq = DevCopy(q);
    double* dcf = DevAlloc<double>(L * R);
    double* da = DevAlloc<double>(L * R);
    double* dn = DevAlloc<double>(L * R * M);
    double* dqo = DevAlloc<double>(L * R * M);
    int* dtimes = DevAlloc<int>(L * R * T);
    g = GpuMs([&] { CS(gpu::GammaBootstrap(sh, dt, dc, dq, dcf, da, dn, dqo, dtimes, nullptr)); }, 3);
    for (void* p : {static_cast<void*>(dt), static_cast<void*>(dc), static_cast<void*>(dq),
                    static_cast<void*>(dcf), static_cast<void*>(da), static_cast<void*>(dn),
                    static_cast<void*>(dqo), static_cast<void*>(dtimes)}) {
      CK(cudaFree(p));
    }
  }
  const double flops = static_cast<double>(L) * R * (4.0 * T * M + 20.0 * M);
  const double bytes = static_cast<double>(L) * R * (16.0 * T * M + 16.0 * M);
  Report("bootstrap(M=256,T=100)", L * M, g, cpu, shc.layers < L, bytes, flops);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sizes = {1000, 10000, 100000, 1000000};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--sizes=", 0) == 0) {
      sizes.clear();
      const char* p = a.c_str() + 8;
      while (*p) {
        sizes.push_back(std::strtoll(p, const_cast<char**>(&p), 10));
        if (*p == ',') ++p;
      }
    } else if (a.rfind("--cpu-cap=", 0) == 0) {
      g_cpu_cap = std::strtoll(a.c_str() + 10, nullptr, 10);
    } else if (a.rfind("--threads=", 0) == 0) {
      g_threads = std::atoi(a.c_str() + 10);
    } else {
      std::fprintf(stderr, "usage: %s [--sizes=1000,10000] [--cpu-cap=N] [--threads=N]\n", argv[0]);
      return 2;
    }
  }
  const int threads = g_threads > 0 ? g_threads : static_cast<int>(std::thread::hardware_concurrency());
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  g_gpu = err == cudaSuccess && count > 0;
  if (!g_gpu) {
    std::printf("NO GPU: %s; running the CPU reference only (%d threads)\n",
                err == cudaSuccess ? "no CUDA device" : cudaGetErrorString(err), threads);
  } else {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    MeasureBandwidth();
    std::printf("GPU: %s, sm_%d%d, %d SMs, %.1f GiB; measured D2D copy bandwidth %.0f GB/s "
                "(read + write); CPU reference on %d threads\n",
                prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                prop.totalGlobalMem / 1073741824.0, g_bw_gbs, threads);
  }
  std::printf("'x of floor' = GPU time / (model bytes / measured bandwidth); "
              "'~' = CPU timed on <= %lld series and scaled linearly\n",
              static_cast<long long>(g_cpu_cap));
  for (int64_t S : sizes) {
    std::printf("--- %lld series ---\n", static_cast<long long>(S));
    BenchCheap(S);
    BenchArima(S);
    BenchLstm(S);
    BenchBootstrap(S);
    std::fflush(stdout);
  }
  return 0;
}
