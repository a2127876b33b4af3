// The CPU reference of the batched operations (core::cpu in batch_ops.h):
// the per-series functions of series_ops.h, run over all cores with
// std::thread. Plain C++17: it builds with g++ alone (or nvcc) for the
// standalone bench.
#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

#include "kernels/core/batch_ops.h"

namespace moecast {
namespace kernels {
namespace core {

void SwAvgWeights(int window, int horizon, double* out) {
  const int w = window;
  // The window's values as weight vectors over the W observations (a ring).
  std::vector<double> values(static_cast<size_t>(w) * w, 0.0);
  for (int i = 0; i < w; ++i) values[static_cast<size_t>(i) * w + i] = 1.0;
  int front = 0;
  std::vector<double> running(w, 1.0);
  std::vector<double> mean(w, 0.0);
  std::vector<double> next(w);
  for (int k = 0; k < horizon; ++k) {
    for (int i = 0; i < w; ++i) next[i] = running[i] / w;
    double* oldest = values.data() + static_cast<size_t>(front) * w;
    for (int i = 0; i < w; ++i) {
      mean[i] += next[i];
      running[i] += next[i] - oldest[i];
    }
    std::copy(next.begin(), next.end(), oldest);  // becomes the newest
    front = front + 1 == w ? 0 : front + 1;
  }
  for (int i = 0; i < w; ++i) out[i] = mean[i] / horizon;
}

namespace cpu {
namespace {

int ResolveThreads(int threads) {
  if (threads > 0) return threads;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

// Runs fn(begin, end, worker) over [0, n) in contiguous chunks, on up to
// `threads` threads; inline when the work is small (below `grain` per thread).
template <typename Fn>
void ParallelFor(int64_t n, int threads, int64_t grain, Fn fn) {
  threads = ResolveThreads(threads);
  int64_t workers = std::min<int64_t>(threads, (n + grain - 1) / std::max<int64_t>(grain, 1));
  if (workers <= 1) {
    if (n > 0) fn(int64_t{0}, n, 0);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  const int64_t chunk = (n + workers - 1) / workers;
  for (int64_t w = 1; w < workers; ++w) {
    const int64_t b = w * chunk, e = std::min(n, b + chunk);
    if (b >= e) break;
    pool.emplace_back([=] { fn(b, e, static_cast<int>(w)); });
  }
  fn(0, std::min(n, chunk), 0);
  for (std::thread& t : pool) t.join();
}

constexpr int64_t kCheapGrain = 1 << 15;  // series per thread, cheap ops

}  // namespace

CoreStatus SwAvgObserve(const SwAvgShape& sh, bool resum, const double* x,
                        float* ring, double* sum, int threads) {
  if (sh.series < 0 || sh.window < 1 || sh.count < 0 || sh.count > sh.window ||
      sh.head < 0 || sh.head >= sh.window) {
    return CoreStatus::kInvalidArgument;
  }
  ParallelFor(sh.series, threads, kCheapGrain, [&](int64_t b, int64_t e, int) {
    for (int64_t s = b; s < e; ++s) SwAvgObserveOne(sh, resum, s, x[s], ring, sum);
  });
  return CoreStatus::kOk;
}

CoreStatus SwAvgForecast(const SwAvgShape& sh, int horizon,
                         const double* weights, const float* ring,
                         const double* sum, double* out, int threads) {
  if (sh.series < 0 || sh.window < 1 || sh.count < 1 || sh.count > sh.window ||
      horizon < 1) {
    return CoreStatus::kInvalidArgument;
  }
  ParallelFor(sh.series, threads, kCheapGrain, [&](int64_t b, int64_t e, int) {
    for (int64_t s = b; s < e; ++s) {
      out[s] = SwAvgForecastOne(sh, horizon, weights, s, ring, sum);
    }
  });
  return CoreStatus::kOk;
}

CoreStatus EmaObserve(int64_t series, bool started, double theta,
                      const double* x, double* state, int threads) {
  if (series < 0 || !(theta >= 0 && theta < 1)) return CoreStatus::kInvalidArgument;
  ParallelFor(series, threads, kCheapGrain, [&](int64_t b, int64_t e, int) {
    for (int64_t s = b; s < e; ++s) state[s] = EmaUpdateOne(started, theta, state[s], x[s]);
  });
  return CoreStatus::kOk;
}

CoreStatus HoltObserve(int64_t series, int group_size, bool started,
                       const double* alpha, const double* beta,
                       const double* phi, const double* x, double* level,
                       double* trend, int threads) {
  if (series < 0 || group_size < 1) return CoreStatus::kInvalidArgument;
  ParallelFor(series, threads, kCheapGrain, [&](int64_t b, int64_t e, int) {
    for (int64_t s = b; s < e; ++s) {
      if (!started) {
        level[s] = x[s];
        trend[s] = 0;
        continue;
      }
      const int64_t g = s / group_size;
      const HoltParamsHD q{alpha[g], beta[g], phi[g]};
      HoltStepOne(q, x[s], &level[s], &trend[s]);
    }
  });
  return CoreStatus::kOk;
}

CoreStatus HoltForecast(int64_t series, int group_size, int horizon,
                        const double* phi, const double* level,
                        const double* trend, double* out, int threads) {
  if (series < 0 || group_size < 1 || horizon < 1) return CoreStatus::kInvalidArgument;
  ParallelFor(series, threads, kCheapGrain, [&](int64_t b, int64_t e, int) {
    int64_t g_cached = -1;
    double k = 0;
    for (int64_t s = b; s < e; ++s) {
      const int64_t g = s / group_size;
      if (g != g_cached) {
        k = HoltDampedTrendMean(phi[g], horizon);
        g_cached = g;
      }
      out[s] = level[s] + k * trend[s];
    }
  });
  return CoreStatus::kOk;
}

CoreStatus ArimaFitForecast(const ArimaConfig& c, int64_t series, int n,
                            const double* history, const uint8_t* warm,
                            int horizon, double* params, double* last_e,
                            double* css, double* start_css, int* iterations,
                            int* flags, double* forecast, double* /*scratch*/,
                            int threads) {
  if (series < 0 || n < 1 || c.p < 0 || c.p > kArimaMaxOrderHD || c.q < 0 ||
      c.q > kArimaMaxOrderHD || c.d < 0 || c.d > 2 || c.max_iterations < 1) {
    return CoreStatus::kInvalidArgument;
  }
  const int np = c.num_params();
  const int nq = std::max(c.q, 1);
  // Each worker copies its series into contiguous buffers (stride 1): the
  // [n][S] layout is for the GPU's coalescing, not for a CPU cache.
  const int nthreads = ResolveThreads(threads);
  std::vector<std::vector<double>> buffers(nthreads);
  ParallelFor(series, nthreads, 1, [&](int64_t b, int64_t e, int worker) {
    std::vector<double>& buf = buffers[worker];
    buf.assign(static_cast<size_t>(3) * n, 0.0);
    double* x = buf.data();
    double* e1 = x + n;
    double* e2 = e1 + n;
    for (int64_t s = b; s < e; ++s) {
      for (int t = 0; t < n; ++t) x[t] = history[static_cast<int64_t>(t) * series + s];
      double pr[kArimaMaxParamsHD];
      double le[kArimaMaxOrderHD];
      for (int i = 0; i < np; ++i) pr[i] = params[static_cast<int64_t>(i) * series + s];
      const ArimaSeries view{x, 1, n, e1, e2, 1};
      const ArimaFitResult r = ArimaFitOne(c, view, warm != nullptr && warm[s] != 0,
                                           horizon, pr, le);
      for (int i = 0; i < np; ++i) params[static_cast<int64_t>(i) * series + s] = pr[i];
      if (last_e != nullptr) {
        for (int j = 0; j < nq; ++j) {
          last_e[static_cast<int64_t>(j) * series + s] = j < c.q ? le[j] : 0.0;
        }
      }
      if (css != nullptr) css[s] = r.css;
      if (start_css != nullptr) start_css[s] = r.start_css;
      if (iterations != nullptr) iterations[s] = r.iterations;
      if (flags != nullptr) flags[s] = r.flags;
      if (forecast != nullptr) forecast[s] = r.forecast;
    }
  });
  return CoreStatus::kOk;
}

CoreStatus LstmForecast(const LstmShapeHD& sh, const float* params,
                        const int* horizons, int64_t streams, int n,
                        const double* history, int horizon, float* /*scratch*/,
                        double* out, int threads) {
  if (streams < 0 || n < 1 || sh.num_experts < 1 || sh.hidden < 1 ||
      sh.num_layers < 1 || sh.num_horizons < 1 || sh.block < 1 ||
      sh.lookback < 1 || sh.anchor_window < 1) {
    return CoreStatus::kInvalidArgument;
  }
  const int64_t M = sh.num_experts;
  const int64_t S = streams * M;
  const int nthreads = ResolveThreads(threads);
  std::vector<std::vector<float>> buffers(nthreads);
  ParallelFor(streams, nthreads, 1, [&](int64_t b, int64_t e, int worker) {
    std::vector<float>& buf = buffers[worker];
    buf.assign(static_cast<size_t>(LstmScratchFloats(sh)), 0.0f);
    for (int64_t st = b; st < e; ++st) {
      LstmForecastStream(sh, params, horizons, history + st * M, S, 1, n,
                         horizon, buf.data(), 1, out + st * M, 1);
    }
  });
  return CoreStatus::kOk;
}

CoreStatus GammaBootstrap(const BootstrapShape& sh, const double* tokens,
                          const double* counts, const double* quality_input,
                          double* cf_gamma_rho, double* assignments,
                          double* n_out, double* q_out, int* /*scratch_times*/,
                          int threads) {
  if (sh.layers < 0 || sh.steps < 1 || sh.experts < 1 || sh.replicates < 0) {
    return CoreStatus::kInvalidArgument;
  }
  const int T = sh.steps, M = sh.experts, R = sh.replicates;
  const int64_t jobs = static_cast<int64_t>(sh.layers) * R;
  const int nthreads = ResolveThreads(threads);
  ParallelFor(jobs, nthreads, 1, [&](int64_t b, int64_t e, int) {
    std::vector<int> times(T);
    std::vector<double> n(M), wx(M), q(M);
    for (int64_t job = b; job < e; ++job) {
      const int64_t layer = job / R;
      const int r = static_cast<int>(job % R);
      const double* tok = tokens + layer * T;
      const double* cnt = counts + layer * T * M;
      const double* qin = quality_input + layer * T * M;
      std::fill(times.begin(), times.end(), 0);
      for (int i = 0; i < T; ++i) {
        ++times[DrawIndexAt(sh.seed, static_cast<uint64_t>(r) * T + i, T)];
      }
      double tk = 0;
      std::fill(n.begin(), n.end(), 0.0);
      std::fill(wx.begin(), wx.end(), 0.0);
      for (int t = 0; t < T; ++t) {
        if (times[t] == 0) continue;
        const double w = times[t];
        tk += tok[t] * w;
        const double* c = cnt + static_cast<int64_t>(t) * M;
        const double* xv = qin + static_cast<int64_t>(t) * M;
        for (int ex = 0; ex < M; ++ex) {
          n[ex] += w * c[ex];
          wx[ex] += w * (tok[t] * xv[ex]);
        }
      }
      double a = 0;
      for (int ex = 0; ex < M; ++ex) a += n[ex];
      double mean = 0;
      for (int ex = 0; ex < M; ++ex) {
        double v = wx[ex] / tk;
        if (sh.log_quality) v = std::log(v);
        q[ex] = v;
        mean += v;
      }
      mean /= M;
      for (int ex = 0; ex < M; ++ex) q[ex] -= mean;
      const int64_t o = layer * R + r;
      assignments[o] = a > 0 ? a : 0.0;
      cf_gamma_rho[o] = a > 0 ? ClosedFormSlope(sh, q.data(), 1, n.data(), 1, a)
                              : std::nan("");
      if (n_out != nullptr) std::copy(n.begin(), n.end(), n_out + o * M);
      if (q_out != nullptr) std::copy(q.begin(), q.end(), q_out + o * M);
    }
  });
  return CoreStatus::kOk;
}

}  // namespace cpu
}  // namespace core
}  // namespace kernels
}  // namespace moecast
