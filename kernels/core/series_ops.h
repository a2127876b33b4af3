// Per-series algorithms shared by the CPU reference (g++) and the CUDA
// kernels (nvcc): one function computes one series (or one stream, or one
// bootstrap replicate), reading and writing through a stride, so that the same
// code runs on a contiguous per-thread buffer on the CPU (stride 1) and on a
// series-major structure of arrays on the GPU (element t of series s at
// t * S + s: consecutive threads touch consecutive addresses).
//
// Each function mirrors an engine implementation, which the CPU reference
// tests check (kernels/cpu_reference_test.cc):
//   sw_avg, ema, holt   engine/predict/{sw_avg,ema,holt}.cc (update, forecast)
//   ARIMA CSS fit       engine/predict/arima/arima.cc (ArimaCss::Fit and
//                       ForecastPath: the same objective, reflection
//                       parameterisation, box, active set, LM damping and
//                       cold starts)
//   LSTM inference      engine/predict/lstm/lstm.cc (the same model; block
//                       means are pooled before the input projection, which
//                       changes float rounding only)
//   gamma bootstrap     engine/health/gamma/gamma.cc (the same splitmix64
//                       draws, resampled sums, quality and closed form)
//
// Plain C++17 with no library beyond <cmath>/<cstdint>; no allocation.
// Thread-safety: pure functions of their arguments.
#ifndef MOECAST_KERNELS_CORE_SERIES_OPS_H_
#define MOECAST_KERNELS_CORE_SERIES_OPS_H_

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define MOECAST_HD __host__ __device__
#else
#define MOECAST_HD
#endif

namespace moecast {
namespace kernels {
namespace core {

// ---------------------------------------------------------------------------
// Small helpers (device-safe: no std:: calls).

MOECAST_HD inline double Min(double a, double b) { return a < b ? a : b; }
MOECAST_HD inline double Max(double a, double b) { return a > b ? a : b; }
MOECAST_HD inline int MinI(int a, int b) { return a < b ? a : b; }
MOECAST_HD inline int MaxI(int a, int b) { return a > b ? a : b; }
MOECAST_HD inline double Clamp(double v, double lo, double hi) {
  return v < lo ? lo : (hi < v ? hi : v);
}
// True for finite values (NaN and +-inf give false); no -ffast-math here.
MOECAST_HD inline bool Finite(double v) { return v - v == 0.0; }

// ---------------------------------------------------------------------------
// sw_avg(W): a ring of W float rows and a running double sum per series; all
// series of a batch advance together, so head/count are shared scalars.

struct SwAvgShape {
  int64_t series = 0;  // S
  int window = 1;      // W
  int head = 0;        // ring row the next observation goes to
  int count = 0;       // rows held, <= W
};

// Ring row of window position i (0 = oldest) for a given head and count.
MOECAST_HD inline int SwAvgRow(int head, int count, int window, int i) {
  int slot = head - count + i;
  if (slot < 0) slot += window;
  return slot;
}

// One observation for series s. `shape` is the state before the step;
// `resum` (the engine's every-W-steps recomputation) is decided by the caller
// for the whole batch. ring is [W][S], sum [S].
MOECAST_HD inline void SwAvgObserveOne(const SwAvgShape& sh, bool resum,
                                       int64_t s, double x_in, float* ring,
                                       double* sum) {
  const int64_t S = sh.series;
  float* slot = ring + static_cast<int64_t>(sh.head) * S + s;
  const float x = static_cast<float>(x_in);
  double acc = sum[s];
  if (sh.count == sh.window) {
    acc += static_cast<double>(x) - *slot;
  } else {
    acc += x;
  }
  *slot = x;
  if (resum) {
    const int count = sh.count == sh.window ? sh.count : sh.count + 1;
    const int head = sh.head + 1 == sh.window ? 0 : sh.head + 1;
    acc = 0;
    for (int i = 0; i < count; ++i) {
      acc += ring[static_cast<int64_t>(SwAvgRow(head, count, sh.window, i)) * S + s];
    }
  }
  sum[s] = acc;
}

// Mean forecast over the next h steps for series s; `weights` are
// SwAvgHorizonWeights(count, h) (count values, oldest first).
MOECAST_HD inline double SwAvgForecastOne(const SwAvgShape& sh, int horizon,
                                          const double* weights, int64_t s,
                                          const float* ring, const double* sum) {
  if (sh.count == 0) return 1.0;  // the caller writes 1/M (unknown here)
  const int distinct = MinI(horizon - 1, sh.count);
  const double shared = weights[sh.count - 1];
  double o = shared * sum[s];
  for (int i = 0; i < distinct; ++i) {
    const double extra = weights[i] - shared;
    o += extra * ring[static_cast<int64_t>(SwAvgRow(sh.head, sh.count, sh.window, i)) *
                          sh.series + s];
  }
  return o;
}

// ---------------------------------------------------------------------------
// ema(theta): s <- s + (1 - theta)(x - s), the first observation copied.

MOECAST_HD inline double EmaUpdateOne(bool started, double theta, double s,
                                      double x) {
  if (!started) return x;
  const double a = 1 - theta;
  return s + a * (x - s);
}

// ---------------------------------------------------------------------------
// holt: damped trend with parameters per group of series (a layer's experts).

struct HoltParamsHD {
  double alpha = 0.1;
  double beta = 0.05;
  double phi = 0.9;
};

// One smoothing step; returns the squared one-step error.
MOECAST_HD inline double HoltStepOne(const HoltParamsHD& q, double x,
                                     double* level, double* trend) {
  const double damped = q.phi * *trend;
  const double predicted = *level + damped;
  const double err = x - predicted;
  const double new_level = predicted + q.alpha * err;
  *trend = damped + q.beta * (new_level - *level - damped);
  *level = new_level;
  return err * err;
}

// Mean over k = 1..h of (phi + ... + phi^k).
MOECAST_HD inline double HoltDampedTrendMean(double phi, int h) {
  if (phi >= 1.0) return (h + 1) / 2.0;
  const double g_h = phi * (1 - pow(phi, h)) / (1 - phi);
  return phi / (1 - phi) * (1 - g_h / h);
}

// ---------------------------------------------------------------------------
// ARIMA(p,d,q) by conditional sum of squares (see engine/predict/arima/arima.h
// for the model and estimator; this is the same algorithm, per series).

constexpr int kArimaMaxOrderHD = 10;
constexpr int kArimaMaxParamsHD = 2 * kArimaMaxOrderHD + 1;
constexpr int kArimaMaxLongAr = 30;
constexpr int kArimaMaxRegressors = 30;
constexpr double kArimaMaxReflectionHD = 0.999;
constexpr double kArimaBox = kArimaMaxReflectionHD - 1e-10;
constexpr double kArimaMaxLambda = 1e10;
constexpr double kArimaShrink = 0.95;

struct ArimaConfig {
  int p = 5;
  int d = 1;
  int q = 5;
  bool has_mean = false;  // d == 0 || drift
  int max_iterations = 10;
  double tolerance = 1e-8;
  MOECAST_HD int num_params() const { return p + q + 1; }
  MOECAST_HD int k() const { return p + q + (has_mean ? 1 : 0); }
};

// Flags in ArimaFitResult::flags.
constexpr int kArimaWarm = 1;
constexpr int kArimaDegenerate = 2;

struct ArimaFitResult {
  double start_css = 0;
  double css = 0;
  int iterations = 0;
  int flags = 0;
  double forecast = 0;  // mean of the next h levels (when h >= 1)
};

// One series: levels x[t * sx] (t < n, oldest first); scratch e and e2, each
// n values at stride se.
struct ArimaSeries {
  const double* x;
  int64_t sx;
  int n;
  double* e;
  double* e2;
  int64_t se;

  MOECAST_HD double X(int t) const { return x[t * sx]; }
};

MOECAST_HD inline int ArimaDiffLength(const ArimaConfig& c, int n) {
  return n - c.d > 0 ? n - c.d : 0;
}

// w_t, the d-th difference (t < m).
MOECAST_HD inline double ArimaW(const ArimaConfig& c, const ArimaSeries& s,
                                int t) {
  if (c.d == 0) return s.X(t);
  if (c.d == 1) return s.X(t + 1) - s.X(t);
  return s.X(t + 2) - 2 * s.X(t + 1) + s.X(t);
}

// Residuals at params into e (stride s.se); returns S.
MOECAST_HD inline double ArimaResiduals(const ArimaConfig& c,
                                        const ArimaSeries& s, int m,
                                        const double* params, double* e) {
  const int p = c.p, q = c.q;
  const double* phi = params;
  const double* theta = params + p;
  const double mu = params[p + q];
  const int64_t se = s.se;
  for (int t = 0; t < MinI(p, m); ++t) e[t * se] = 0;
  double sum = 0;
  for (int t = p; t < m; ++t) {
    double r = ArimaW(c, s, t) - mu;
    for (int i = 1; i <= p; ++i) r -= phi[i - 1] * (ArimaW(c, s, t - i) - mu);
    const int jmax = MinI(q, t - p);
    for (int j = jmax; j >= 1; --j) r -= theta[j - 1] * e[(t - j) * se];
    e[t * se] = r;
    sum += r * r;
  }
  return sum;
}

// Levinson step-up (kappa -> a) with optional Jacobian da[i * n + j].
MOECAST_HD inline void ArimaStepUp(const double* kappa, int n, double* a,
                                   double* da) {
  double prev[kArimaMaxOrderHD];
  double dprev[kArimaMaxOrderHD * kArimaMaxOrderHD];
  for (int m = 1; m <= n; ++m) {
    const double k = kappa[m - 1];
    for (int i = 0; i < m - 1; ++i) prev[i] = a[i];
    for (int i = 0; i < m - 1; ++i) a[i] = prev[i] - k * prev[m - 2 - i];
    a[m - 1] = k;
    if (da == nullptr) continue;
    for (int i = 0; i < m - 1; ++i) {
      for (int j = 0; j < m - 1; ++j) dprev[i * n + j] = da[i * n + j];
    }
    for (int i = 0; i < m - 1; ++i) {
      for (int j = 0; j < m - 1; ++j) {
        da[i * n + j] = dprev[i * n + j] - k * dprev[(m - 2 - i) * n + j];
      }
      da[i * n + (m - 1)] = -prev[m - 2 - i];
    }
    for (int j = 0; j < m - 1; ++j) da[(m - 1) * n + j] = 0;
    da[(m - 1) * n + (m - 1)] = 1;
  }
}

// Levinson step-down; false if some |kappa| >= 1 or is not finite.
MOECAST_HD inline bool ArimaStepDown(const double* a, int n, double* kappa) {
  double cur[kArimaMaxOrderHD];
  double next[kArimaMaxOrderHD];
  for (int i = 0; i < n; ++i) cur[i] = a[i];
  for (int m = n; m >= 1; --m) {
    const double k = cur[m - 1];
    if (!(fabs(k) < 1)) return false;
    kappa[m - 1] = k;
    const double inv = 1.0 / (1.0 - k * k);
    for (int i = 0; i < m - 1; ++i) next[i] = (cur[i] + k * cur[m - 2 - i]) * inv;
    for (int i = 0; i < m - 1; ++i) cur[i] = next[i];
  }
  return true;
}

MOECAST_HD inline bool ArimaStationary(const double* a, int n) {
  double cur[kArimaMaxOrderHD];
  double next[kArimaMaxOrderHD];
  for (int i = 0; i < n; ++i) {
    if (!Finite(a[i])) return false;
    cur[i] = a[i];
  }
  for (int m = n; m >= 1; --m) {
    const double k = cur[m - 1];
    if (!(fabs(k) <= kArimaMaxReflectionHD)) return false;
    const double inv = 1.0 / (1.0 - k * k);
    for (int i = 0; i < m - 1; ++i) next[i] = (cur[i] + k * cur[m - 2 - i]) * inv;
    for (int i = 0; i < m - 1; ++i) cur[i] = next[i];
  }
  return true;
}

MOECAST_HD inline bool ArimaFeasible(const ArimaConfig& c, const double* params) {
  for (int i = 0; i < c.p + c.q + 1; ++i) {
    if (!Finite(params[i])) return false;
  }
  if (!ArimaStationary(params, c.p)) return false;
  double neg[kArimaMaxOrderHD];
  for (int j = 0; j < c.q; ++j) neg[j] = -params[c.p + j];
  return ArimaStationary(neg, c.q);
}

MOECAST_HD inline void ArimaMakeFeasible(const ArimaConfig& c, double* params) {
  const int p = c.p, q = c.q;
  for (int i = 0; i < p + q + 1; ++i) {
    if (!Finite(params[i])) params[i] = 0;
  }
  if (!c.has_mean) params[p + q] = 0;
  double* phi = params;
  for (int round = 0; round < 300 && !ArimaStationary(phi, p); ++round) {
    double f = 1;
    for (int i = 0; i < p; ++i) phi[i] *= (f *= kArimaShrink);
  }
  if (!ArimaStationary(phi, p)) {
    for (int i = 0; i < p; ++i) phi[i] = 0;
  }
  double neg[kArimaMaxOrderHD];
  double* theta = params + p;
  for (int round = 0; round < 300; ++round) {
    for (int j = 0; j < q; ++j) neg[j] = -theta[j];
    if (ArimaStationary(neg, q)) return;
    double f = 1;
    for (int j = 0; j < q; ++j) theta[j] *= (f *= kArimaShrink);
  }
  for (int j = 0; j < q; ++j) theta[j] = 0;
}

MOECAST_HD inline bool ArimaToInternal(const ArimaConfig& c,
                                       const double* params, double* z) {
  const int p = c.p, q = c.q;
  double a[kArimaMaxOrderHD];
  for (int i = 0; i < p; ++i) a[i] = params[i];
  if (!ArimaStepDown(a, p, z)) return false;
  for (int j = 0; j < q; ++j) a[j] = -params[p + j];
  if (!ArimaStepDown(a, q, z + p)) return false;
  for (int i = 0; i < p + q; ++i) z[i] = Clamp(z[i], -kArimaBox, kArimaBox);
  z[p + q] = params[p + q];
  return Finite(z[p + q]);
}

// t (column-major k x k) receives d params / d z when non-null.
MOECAST_HD inline void ArimaFromInternal(const ArimaConfig& c, const double* z,
                                         double* params, double* t) {
  const int p = c.p, q = c.q, k = c.k();
  double a[kArimaMaxOrderHD];
  double da[kArimaMaxOrderHD * kArimaMaxOrderHD];
  if (t != nullptr) {
    for (int i = 0; i < k * k; ++i) t[i] = 0;
  }
  for (int block = 0; block < 2; ++block) {
    const int n = block == 0 ? p : q;
    const int offset = block == 0 ? 0 : p;
    const double sign = block == 0 ? 1.0 : -1.0;
    ArimaStepUp(z + offset, n, a, t == nullptr ? nullptr : da);
    for (int i = 0; i < n; ++i) params[offset + i] = sign * a[i];
    if (t == nullptr) continue;
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        t[(offset + j) * k + offset + i] = sign * da[i * n + j];
      }
    }
  }
  params[p + q] = z[p + q];
  if (t != nullptr && c.has_mean) t[(p + q) * k + p + q] = 1;
}

// Solves a x = b for a symmetric positive definite k x k matrix (row stride
// ld) by LDL'; a and b are overwritten (b holds x). False on a non-positive
// or non-finite pivot.
MOECAST_HD inline bool SolveSpd(int k, double* a, int ld, double* b) {
  for (int j = 0; j < k; ++j) {
    double d = a[j * ld + j];
    for (int l = 0; l < j; ++l) d -= a[j * ld + l] * a[j * ld + l] * a[l * ld + l];
    if (!(d > 0) || !Finite(d)) return false;
    a[j * ld + j] = d;
    for (int i = j + 1; i < k; ++i) {
      double v = a[i * ld + j];
      for (int l = 0; l < j; ++l) v -= a[i * ld + l] * a[j * ld + l] * a[l * ld + l];
      a[i * ld + j] = v / d;
    }
  }
  for (int i = 0; i < k; ++i) {
    double v = b[i];
    for (int l = 0; l < i; ++l) v -= a[i * ld + l] * b[l];
    b[i] = v;
  }
  for (int i = 0; i < k; ++i) b[i] /= a[i * ld + i];
  for (int i = k - 1; i >= 0; --i) {
    double v = b[i];
    for (int l = i + 1; l < k; ++l) v -= a[l * ld + i] * b[l];
    b[i] = v;
  }
  for (int i = 0; i < k; ++i) {
    if (!Finite(b[i])) return false;
  }
  return true;
}

// S, J'J (k x k, row-major, stride kArimaMaxParamsHD) and J'e at params; with
// s_known >= 0 the residuals in e are already those of params.
MOECAST_HD inline double ArimaLinearize(const ArimaConfig& c,
                                        const ArimaSeries& s, int m,
                                        const double* params, double* e,
                                        double s_known, double* jtj,
                                        double* jte) {
  const int p = c.p, q = c.q, k = c.k();
  constexpr int ld = kArimaMaxParamsHD;
  constexpr int kRing = kArimaMaxOrderHD + 1;
  const double sum_s = s_known >= 0 ? s_known : ArimaResiduals(c, s, m, params, e);
  const double* theta = params + p;
  const double mu = params[p + q];
  double sum_phi = 0;
  for (int i = 0; i < p; ++i) sum_phi += params[i];
  const double mean_input = -(1.0 - sum_phi);
  for (int i = 0; i < k; ++i) {
    jte[i] = 0;
    for (int j = 0; j < k; ++j) jtj[i * ld + j] = 0;
  }
  // The last q rows of J (a ring), newest at r % kRing.
  double ring[kRing * kArimaMaxParamsHD];
  const int rows = m - p;
  const int filtered = q > 0 ? p + 1 : p;
  const int64_t se = s.se;
  for (int r = 0; r < rows; ++r) {
    const int t = p + r;
    double* row = ring + (r % kRing) * kArimaMaxParamsHD;
    for (int i = 1; i <= p; ++i) row[i - 1] = -(ArimaW(c, s, t - i) - mu);
    if (q > 0) row[p] = r >= 1 ? -e[(t - 1) * se] : 0;
    if (c.has_mean) row[p + q] = mean_input;
    const int jmax = MinI(q, r);
    for (int col = 0; col < filtered; ++col) {
      double v = row[col];
      for (int j = jmax; j >= 1; --j) {
        v -= theta[j - 1] * ring[((r - j) % kRing) * kArimaMaxParamsHD + col];
      }
      row[col] = v;
    }
    if (c.has_mean) {
      double v = row[p + q];
      for (int j = jmax; j >= 1; --j) {
        v -= theta[j - 1] * ring[((r - j) % kRing) * kArimaMaxParamsHD + p + q];
      }
      row[p + q] = v;
    }
    for (int j = 2; j <= q; ++j) {
      row[p + j - 1] =
          r >= j - 1 ? ring[((r - (j - 1)) % kRing) * kArimaMaxParamsHD + p] : 0.0;
    }
    const double et = e[t * se];
    for (int i = 0; i < k; ++i) {
      const double ri = row[i];
      jte[i] += ri * et;
      for (int j = 0; j <= i; ++j) jtj[i * ld + j] += ri * row[j];
    }
  }
  for (int i = 0; i < k; ++i) {
    for (int j = i + 1; j < k; ++j) jtj[i * ld + j] = jtj[j * ld + i];
  }
  return sum_s;
}

// Levenberg-Marquardt in reflection coordinates (engine: ArimaCss::Minimize).
// *e_cur holds the residuals of the current params on return; the two
// pointers may be swapped.
MOECAST_HD inline double ArimaMinimize(const ArimaConfig& c,
                                       const ArimaSeries& s, int m,
                                       double* params, double** e_cur,
                                       double** e_other, int* iterations) {
  const int p = c.p, q = c.q, k = c.k();
  constexpr int ld = kArimaMaxParamsHD;
  double z[kArimaMaxParamsHD];
  double z_trial[kArimaMaxParamsHD];
  double trial[kArimaMaxParamsHD];
  if (!ArimaToInternal(c, params, z)) {
    for (int i = 0; i < p + q; ++i) z[i] = 0;
    z[p + q] = c.has_mean && Finite(params[p + q]) ? params[p + q] : 0.0;
  }
  ArimaFromInternal(c, z, params, nullptr);
  double t_buf[kArimaMaxParamsHD * kArimaMaxParamsHD];
  double jtj[kArimaMaxParamsHD * kArimaMaxParamsHD];
  double jte[kArimaMaxParamsHD];
  double a_z[kArimaMaxParamsHD * kArimaMaxParamsHD];
  double g_z[kArimaMaxParamsHD];
  auto linearize = [&](double s_known) {
    const double sv = ArimaLinearize(c, s, m, params, *e_cur, s_known, jtj, jte);
    ArimaFromInternal(c, z, trial, t_buf);  // t(i, j) = t_buf[j * k + i]
    // a_z = T' A T, g_z = T' g.
    double at[kArimaMaxParamsHD * kArimaMaxParamsHD];
    for (int i = 0; i < k; ++i) {
      for (int j = 0; j < k; ++j) {
        double v = 0;
        for (int l = 0; l < k; ++l) v += jtj[i * ld + l] * t_buf[j * k + l];
        at[i * ld + j] = v;
      }
    }
    for (int i = 0; i < k; ++i) {
      for (int j = 0; j < k; ++j) {
        double v = 0;
        for (int l = 0; l < k; ++l) v += t_buf[i * k + l] * at[l * ld + j];
        a_z[i * ld + j] = v;
      }
      double g = 0;
      for (int l = 0; l < k; ++l) g += t_buf[i * k + l] * jte[l];
      g_z[i] = g;
    }
    return sv;
  };
  double sv = linearize(-1);
  if (k == 0 || !(sv > 0)) return sv;
  double lambda = 1e-3;
  double nu = 2;
  bool held[kArimaMaxParamsHD];
  double a[kArimaMaxParamsHD * kArimaMaxParamsHD];
  double delta[kArimaMaxParamsHD];
  for (int it = 0; it < c.max_iterations; ++it) {
    ++*iterations;
    int free_count = 0;
    for (int i = 0; i < k; ++i) {
      held[i] = i < p + q && fabs(z[i]) >= kArimaBox && g_z[i] * z[i] < 0;
      free_count += !held[i];
    }
    if (free_count == 0) break;
    double max_diag = 0;
    for (int i = 0; i < k; ++i) max_diag = Max(max_diag, a_z[i * ld + i]);
    const double floor_diag = Max(max_diag * 1e-12, 2.2250738585072014e-308);
    for (int i = 0; i < k; ++i) {
      for (int j = 0; j < k; ++j) a[i * ld + j] = a_z[i * ld + j];
      delta[i] = -g_z[i];
    }
    for (int i = 0; i < k; ++i) {
      if (held[i]) {
        for (int j = 0; j < k; ++j) a[i * ld + j] = a[j * ld + i] = 0;
        a[i * ld + i] = 1;
        delta[i] = 0;
      } else {
        a[i * ld + i] += lambda * Max(a_z[i * ld + i], floor_diag) + floor_diag;
      }
    }
    double s_trial = 1.0 / 0.0;
    double predicted = 0;
    if (SolveSpd(k, a, ld, delta)) {
      for (int i = 0; i < k; ++i) {
        z_trial[i] = z[i] + delta[i];
        if (i < p + q) z_trial[i] = Clamp(z_trial[i], -kArimaBox, kArimaBox);
        delta[i] = z_trial[i] - z[i];
      }
      if (!c.has_mean) z_trial[p + q] = z[p + q];
      ArimaFromInternal(c, z_trial, trial, nullptr);
      double gd = 0, dad = 0;
      for (int i = 0; i < k; ++i) {
        gd += g_z[i] * delta[i];
        double v = 0;
        for (int j = 0; j < k; ++j) v += a_z[i * ld + j] * delta[j];
        dad += delta[i] * v;
      }
      predicted = -(2 * gd + dad);
      s_trial = ArimaResiduals(c, s, m, trial, *e_other);
    }
    if (!(s_trial < sv)) {
      lambda *= nu;
      nu *= 2;
      if (lambda > kArimaMaxLambda) break;
      continue;
    }
    const double relative = (sv - s_trial) / sv;
    const double rho = predicted > 0 ? (sv - s_trial) / predicted : 0;
    const double r = 2 * rho - 1;
    lambda = Max(lambda * Max(1.0 / 3, 1 - r * r * r), 1e-12);
    nu = 2;
    for (int i = 0; i < p + q + 1; ++i) {
      z[i] = z_trial[i];
      params[i] = trial[i];
    }
    sv = s_trial;
    double* tmp = *e_cur;
    *e_cur = *e_other;
    *e_other = tmp;
    if (relative < c.tolerance || !(sv > 0)) break;
    sv = linearize(sv);
  }
  return sv;
}

// Least squares with a tiny ridge over rows produced by `row(r, xrow, &y)`.
template <typename RowFn>
MOECAST_HD inline bool ArimaLeastSquares(int rows, int cols, RowFn row,
                                         double* out) {
  constexpr int ld = kArimaMaxRegressors;
  double a[kArimaMaxRegressors * kArimaMaxRegressors];
  double b[kArimaMaxRegressors];
  double xr[kArimaMaxRegressors];
  for (int i = 0; i < cols; ++i) {
    b[i] = 0;
    for (int j = 0; j <= i; ++j) a[i * ld + j] = 0;
  }
  for (int r = 0; r < rows; ++r) {
    double y = 0;
    row(r, xr, &y);
    for (int i = 0; i < cols; ++i) {
      b[i] += xr[i] * y;
      for (int j = 0; j <= i; ++j) a[i * ld + j] += xr[i] * xr[j];
    }
  }
  double trace = 0;
  for (int i = 0; i < cols; ++i) trace += a[i * ld + i];
  for (int i = 0; i < cols; ++i) {
    for (int j = i + 1; j < cols; ++j) a[i * ld + j] = a[j * ld + i];
  }
  const double ridge = 1e-10 * trace / cols + 2.2250738585072014e-308;
  for (int i = 0; i < cols; ++i) a[i * ld + i] += ridge;
  if (!SolveSpd(cols, a, ld, b)) return false;
  for (int i = 0; i < cols; ++i) out[i] = b[i];
  return true;
}

// Hannan-Rissanen start (ar_only: the AR(p) least squares); ehat is scratch
// (stride s.se).
MOECAST_HD inline void ArimaStartValues(const ArimaConfig& c,
                                        const ArimaSeries& s, int m,
                                        bool ar_only, double* params,
                                        double* ehat) {
  const int p = c.p, q = c.q;
  for (int i = 0; i < p + q + 1; ++i) params[i] = 0;
  double mu = 0;
  if (c.has_mean) {
    for (int t = 0; t < m; ++t) mu += ArimaW(c, s, t);
    mu /= m;
  }
  params[p + q] = mu;
  if (p == 0 && (q == 0 || ar_only)) return;
  auto u = [&](int t) { return ArimaW(c, s, t) - mu; };
  auto ar_start = [&]() {
    const int rows = m - p;
    if (p == 0 || rows < 2 * p + 2) return;
    const bool ok = ArimaLeastSquares(
        rows, p,
        [&](int r, double* xr, double* y) {
          *y = u(p + r);
          for (int i = 1; i <= p; ++i) xr[i - 1] = u(p + r - i);
        },
        params);
    if (!ok) {
      for (int i = 0; i < p; ++i) params[i] = 0;
    }
  };
  if (q == 0 || ar_only) {
    ar_start();
    return;
  }
  const int long_order =
      MinI(MinI(MaxI(2 * MaxI(p, q), 10), kArimaMaxLongAr), (m - 1) / 4);
  const int t0 = MaxI(p, long_order + q);
  if (long_order < 1 || m - long_order < 2 * long_order + 2 ||
      m - t0 < 2 * (p + q) + 5) {
    ar_start();
    return;
  }
  double a[kArimaMaxLongAr];
  {
    const bool ok = ArimaLeastSquares(
        m - long_order, long_order,
        [&](int r, double* xr, double* y) {
          *y = u(long_order + r);
          for (int i = 1; i <= long_order; ++i) xr[i - 1] = u(long_order + r - i);
        },
        a);
    if (!ok) {
      ar_start();
      return;
    }
  }
  const int64_t se = s.se;
  for (int t = 0; t < m; ++t) {
    if (t < long_order) {
      ehat[t * se] = 0;
      continue;
    }
    double r = u(t);
    for (int i = 1; i <= long_order; ++i) r -= a[i - 1] * u(t - i);
    ehat[t * se] = r;
  }
  const bool ok = ArimaLeastSquares(
      m - t0, p + q,
      [&](int r, double* xr, double* y) {
        const int t = t0 + r;
        *y = u(t);
        for (int i = 1; i <= p; ++i) xr[i - 1] = u(t - i);
        for (int j = 1; j <= q; ++j) xr[p + j - 1] = ehat[(t - j) * se];
      },
      params);
  if (!ok) {
    for (int i = 0; i < p + q; ++i) params[i] = 0;
    ar_start();
  }
}

// Point forecasts (engine: RunForecast); calls sink(step, level).
template <typename Sink>
MOECAST_HD inline void ArimaRunForecast(int p, int d, int q, const double* phi,
                                        const double* theta, double mu,
                                        double* uh, const double* eh,
                                        double* lev, int steps, Sink sink) {
  double scale = fabs(mu);
  for (int k = 0; k < d; ++k) scale = Max(scale, fabs(lev[k]));
  const double negligible = 1e-16 * scale;
  int s = 1;
  for (; s <= steps; ++s) {
    double uhat = 0;
    for (int j = q; j >= s; --j) uhat += theta[j - 1] * eh[j - s];
    for (int i = p - 1; i >= 0; --i) uhat += phi[i] * uh[i];
    for (int i = p - 1; i > 0; --i) uh[i] = uh[i - 1];
    if (p > 0) uh[0] = uhat;
    double v = uhat + mu;
    for (int k = d - 1; k >= 0; --k) {
      lev[k] += v;
      v = lev[k];
    }
    sink(s - 1, v);
    if (s >= q && (s & 15) == 0) {
      bool settled = true;
      for (int i = 0; i < p; ++i) settled = settled && fabs(uh[i]) <= negligible;
      if (settled) {
        ++s;
        break;
      }
    }
  }
  for (; s <= steps; ++s) {
    double v = mu;
    for (int k = d - 1; k >= 0; --k) {
      lev[k] += v;
      v = lev[k];
    }
    sink(s - 1, v);
  }
}

// Fits one series (engine: ArimaCss::Fit) and, for horizon >= 1, forecasts the
// mean of the next `horizon` levels (engine: ArimaCss::ForecastPath at the
// fitted params, averaged as the predictor's Forecast does). params
// (p + q + 1 values) holds the warm start when `warm`; last_e (q values,
// newest first) receives the last residuals.
MOECAST_HD inline ArimaFitResult ArimaFitOne(const ArimaConfig& c,
                                             const ArimaSeries& s, bool warm,
                                             int horizon, double* params,
                                             double* last_e) {
  ArimaFitResult res;
  const int p = c.p, q = c.q, k = c.k();
  const int np = p + q + 1;
  const int m = ArimaDiffLength(c, s.n);
  double* e = s.e;
  double* e2 = s.e2;
  const int64_t se = s.se;
  bool degenerate = m - p < k + 1;
  if (!degenerate) {
    double mean = 0;
    for (int t = 0; t < m; ++t) mean += ArimaW(c, s, t);
    mean /= m;
    double ss = 0;
    for (int t = 0; t < m; ++t) {
      const double dv = ArimaW(c, s, t) - mean;
      ss += dv * dv;
    }
    double scale = 0;
    for (int t = 0; t < s.n; ++t) scale = Max(scale, fabs(s.X(t)));
    const double sd = sqrt(ss / m);
    degenerate = !(sd > 1e-12 * scale) || !Finite(ss);
  }
  bool have_residuals = false;
  if (degenerate) {
    res.flags |= kArimaDegenerate;
    for (int i = 0; i < np; ++i) params[i] = 0;
    if (c.has_mean && m > 0) {
      const double w0 = ArimaW(c, s, 0);
      double sum = 0;
      for (int t = 0; t < m; ++t) sum += ArimaW(c, s, t) - w0;
      params[p + q] = w0 + sum / m;
    }
    if (m > 0) {
      res.css = res.start_css = ArimaResiduals(c, s, m, params, e);
      have_residuals = true;
    }
  } else {
    if (!c.has_mean) params[p + q] = 0;
    if (warm && ArimaFeasible(c, params)) {
      res.flags |= kArimaWarm;
      res.start_css = ArimaResiduals(c, s, m, params, e);
      ArimaMinimize(c, s, m, params, &e, &e2, &res.iterations);
    } else {
      ArimaStartValues(c, s, m, /*ar_only=*/false, params, e2);
      ArimaMakeFeasible(c, params);
      res.start_css = ArimaResiduals(c, s, m, params, e);
      double best = ArimaMinimize(c, s, m, params, &e, &e2, &res.iterations);
      double other[kArimaMaxParamsHD];
      for (int start = 1; start <= 2 && q > 0; ++start) {
        if (start == 1 && p == 0) continue;
        if (start == 1) {
          ArimaStartValues(c, s, m, /*ar_only=*/true, other, e2);
          ArimaMakeFeasible(c, other);
        } else {
          for (int i = 0; i < np; ++i) other[i] = 0;
          other[p + q] = params[p + q];
        }
        const double sv = ArimaMinimize(c, s, m, other, &e, &e2, &res.iterations);
        if (sv < best) {
          for (int i = 0; i < np; ++i) params[i] = other[i];
          best = sv;
        }
      }
    }
    res.css = ArimaResiduals(c, s, m, params, e);
    have_residuals = true;
  }
  for (int j = 0; j < q; ++j) {
    last_e[j] = have_residuals && m - 1 - j >= 0 ? e[(m - 1 - j) * se] : 0.0;
  }
  if (horizon >= 1) {
    const int n = s.n;
    double uh[kArimaMaxOrderHD] = {};
    double eh[kArimaMaxOrderHD] = {};
    double lev[2] = {0, 0};
    const double mu = params[p + q];
    if (m > 0) {
      for (int i = 0; i < p; ++i) uh[i] = m - 1 - i >= 0 ? ArimaW(c, s, m - 1 - i) - mu : 0.0;
      for (int j = 0; j < q; ++j) eh[j] = last_e[j];
    }
    if (n >= 1 && c.d >= 1) lev[0] = s.X(n - 1);
    if (n >= 2 && c.d >= 2) lev[1] = s.X(n - 1) - s.X(n - 2);
    const double last = n >= 1 ? s.X(n - 1) : 0.0;
    double sum = 0;
    ArimaRunForecast(p, c.d, q, params, params + p, mu, uh, eh, lev, horizon,
                     [&](int, double v) { sum += v - last; });
    res.forecast = last + sum * (1.0 / horizon);
  }
  return res;
}

// ---------------------------------------------------------------------------
// LSTM inference (engine/predict/lstm/lstm.h model), one stream of M experts.

struct LstmShapeHD {
  int num_experts = 0;  // M
  int hidden = 0;       // H
  int num_layers = 0;
  int lookback = 0;  // blocks
  int block = 1;     // steps per block
  int anchor_window = 1;
  int num_horizons = 0;  // K
  float input_scale = 1;
  float output_scale = 1;
  MOECAST_HD int window() const { return lookback * block; }
};

// Offsets into the flat parameter array (floats): per layer l,
// w_ih (4H x I_l), w_hh (4H x H), b (4H, bias_ih + bias_hh), then head_w
// (K*M x H) and head_b (K*M).
MOECAST_HD inline int64_t LstmLayerOffset(const LstmShapeHD& sh, int l) {
  const int64_t H = sh.hidden, M = sh.num_experts;
  int64_t off = 0;
  for (int i = 0; i < l; ++i) {
    const int64_t in = i == 0 ? M : H;
    off += 4 * H * in + 4 * H * H + 4 * H;
  }
  return off;
}
MOECAST_HD inline int64_t LstmParamCount(const LstmShapeHD& sh) {
  const int64_t H = sh.hidden, M = sh.num_experts, K = sh.num_horizons;
  return LstmLayerOffset(sh, sh.num_layers) + K * M * H + K * M;
}
// Scratch values (floats) per stream: h and c per layer, 4H gates, M inputs,
// M anchor (as float) -- and 2 M doubles stored as floats pairs are avoided:
// the anchor is recomputed in double where it is needed.
MOECAST_HD inline int64_t LstmScratchFloats(const LstmShapeHD& sh) {
  return 2 * static_cast<int64_t>(sh.num_layers) * sh.hidden + 4 * sh.hidden +
         sh.num_experts;
}

MOECAST_HD inline float LstmSigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// One stream. history: element (t, e) at hist[t * hs + e * he] for t < n (the
// last n <= W steps, oldest first); n >= 1. params: flat (above). scratch:
// LstmScratchFloats values at stride ss. horizons: K trained horizons.
// Writes y (K values, the head means; at stride ys) and returns the mean
// forecast over `horizon` steps for expert `expert_out`... all experts are
// written to out[e * os] instead.
MOECAST_HD inline void LstmForecastStream(const LstmShapeHD& sh,
                                          const float* params,
                                          const int* horizons,
                                          const double* hist, int64_t hs,
                                          int64_t he, int n, int horizon,
                                          float* scratch, int64_t ss,
                                          double* out, int64_t os) {
  const int M = sh.num_experts, H = sh.hidden, L = sh.num_layers;
  const int K = sh.num_horizons;
  float* hbuf = scratch;                          // L x H
  float* cbuf = scratch + int64_t{L} * H * ss;    // L x H
  float* gates = scratch + int64_t{2} * L * H * ss;  // 4H
  float* in = gates + int64_t{4} * H * ss;        // M (layer-0 input)
#define MC_S(ptr, i) (ptr)[static_cast<int64_t>(i) * ss]
  const int W = sh.window();
  if (n > W) {
    hist += static_cast<int64_t>(n - W) * hs;
    n = W;
  }
  const int na = MinI(n, sh.anchor_window);
  auto anchor = [&](int e) {
    double a = 0;
    for (int t = n - na; t < n; ++t) a += hist[t * hs + e * he];
    return a / na;
  };
  for (int i = 0; i < 2 * L * H; ++i) MC_S(scratch, i) = 0.0f;
  const int B = sh.block;
  const int nb = (n + B - 1) / B;
  const float inv_scale = 1.0f / sh.input_scale;
  for (int j = 0; j < nb; ++j) {
    const int end = n - (nb - 1 - j) * B;
    const int start = MaxI(0, end - B);
    // Layer-0 input: (block mean - anchor) / input_scale, in float.
    for (int e = 0; e < M; ++e) {
      double sum = 0;
      for (int t = start; t < end; ++t) sum += hist[t * hs + e * he];
      const double mean = sum / (end - start);
      MC_S(in, e) = static_cast<float>(mean - anchor(e)) * inv_scale;
    }
    for (int l = 0; l < L; ++l) {
      const int I = l == 0 ? M : H;
      const float* w_ih = params + LstmLayerOffset(sh, l);
      const float* w_hh = w_ih + int64_t{4} * H * I;
      const float* b = w_hh + int64_t{4} * H * H;
      float* h = hbuf + int64_t{l} * H * ss;
      float* cell = cbuf + int64_t{l} * H * ss;
      const float* x = l == 0 ? in : hbuf + int64_t{l - 1} * H * ss;
      for (int r = 0; r < 4 * H; ++r) {
        float g = b[r];
        const float* wi = w_ih + int64_t{r} * I;
        for (int i = 0; i < I; ++i) g += wi[i] * MC_S(x, i);
        const float* wh = w_hh + int64_t{r} * H;
        for (int i = 0; i < H; ++i) g += wh[i] * MC_S(h, i);
        MC_S(gates, r) = g;
      }
      for (int u = 0; u < H; ++u) {
        const float ig = LstmSigmoid(MC_S(gates, u));
        const float fg = LstmSigmoid(MC_S(gates, H + u));
        const float gg = 2.0f * LstmSigmoid(2.0f * MC_S(gates, 2 * H + u)) - 1.0f;
        const float og = LstmSigmoid(MC_S(gates, 3 * H + u));
        const float cnew = fg * MC_S(cell, u) + ig * gg;
        MC_S(cell, u) = cnew;
        const float tc = 1.0f / (1.0f + expf(-2.0f * cnew));
        MC_S(h, u) = og * (2.0f * tc - 1.0f);
      }
    }
  }
  const float* head_w = params + LstmLayerOffset(sh, L);
  const float* head_b = head_w + int64_t{K} * M * H;
  const float* h = hbuf + int64_t{L - 1} * H * ss;
  const double out_scale = sh.output_scale;
  // The horizon's piece of the piecewise-constant path.
  int k = 0;
  const int hh = horizon < 1 ? 1 : horizon;
  const bool beyond = hh >= horizons[K - 1];
  if (!beyond) {
    while (horizons[k] < hh) ++k;
  }
  auto head = [&](int kk, int e) {
    const float* w = head_w + (int64_t{kk} * M + e) * H;
    float v = 0;
    for (int i = 0; i < H; ++i) v += w[i] * MC_S(h, i);
    v += head_b[int64_t{kk} * M + e];
    return static_cast<double>(v);
  };
  for (int e = 0; e < M; ++e) {
    const double a = anchor(e);
    if (beyond) {
      out[e * os] = a + out_scale * head(K - 1, e);
      continue;
    }
    const double hk = horizons[k];
    const double h_prev = k == 0 ? 0.0 : horizons[k - 1];
    const double y_k = a + out_scale * head(k, e);
    const double s_prev =
        k == 0 ? 0.0 : h_prev * (a + out_scale * head(k - 1, e));
    const double step = (hk * y_k - s_prev) / (hk - h_prev);
    out[e * os] = (s_prev + (static_cast<double>(hh) - h_prev) * step) / hh;
  }
#undef MC_S
}

// ---------------------------------------------------------------------------
// gamma_eff bootstrap: the resampled sums and closed form of one replicate.

MOECAST_HD inline uint64_t SplitMix64At(uint64_t seed, uint64_t index) {
  // The (index + 1)-th output of splitmix64 started at `seed`.
  uint64_t z = seed + (index + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

MOECAST_HD inline int DrawIndexAt(uint64_t seed, uint64_t index, int n) {
#ifdef __CUDA_ARCH__
  return static_cast<int>(__umul64hi(SplitMix64At(seed, index),
                                     static_cast<uint64_t>(n)));
#else
  const unsigned __int128 prod =
      static_cast<unsigned __int128>(SplitMix64At(seed, index)) *
      static_cast<uint64_t>(n);
  return static_cast<int>(prod >> 64);
#endif
}

struct BootstrapShape {
  int layers = 1;       // L windows, each resampled independently
  int steps = 0;        // T
  int experts = 0;      // M
  int replicates = 0;   // R
  int top_k = 1;        // K
  double sigma = 1.0;
  bool log_quality = false;    // kLogMeanProb: quality = log(mean prob)
  bool uniform_weights = false;  // ClosedFormWeights::kUniform
  uint64_t seed = 0x6d6f656361737431ULL;
};

// Per-replicate results: the closed-form slope in rho units (NaN when it is
// undefined), the resampled assignments (0: the replicate failed), tokens.
struct BootstrapReplicate {
  double cf_gamma_rho = 0;
  double assignments = 0;
  double tokens = 0;
};

// Closed-form slope from per-expert quality q (centred or not: the slope does
// not depend on the shift) and counts n, with the engine's zero smoothing.
// q and n at strides.
MOECAST_HD inline double ClosedFormSlope(const BootstrapShape& sh,
                                         const double* q, int64_t qs,
                                         const double* n, int64_t ns,
                                         double a) {
  const int m = sh.experts;
  int zeros = 0;
  for (int e = 0; e < m; ++e) zeros += n[e * ns] <= 0;
  const double shift = zeros > 0 ? 0.5 : 0.0;
  const double denom = a + shift * m;
  double sw = 0, sx = 0, sy = 0;
  for (int e = 0; e < m; ++e) {
    const double x = (n[e * ns] + shift) / denom;
    const double y = q[e * qs] - sh.sigma * log(x);
    const double w = sh.uniform_weights ? 1.0 : n[e * ns] + shift;
    sw += w;
    sx += w * x;
    sy += w * y;
  }
  const double nan = 0.0 / 0.0;
  if (!(sw > 0)) return nan;
  const double xb = sx / sw, yb = sy / sw;
  double sxx = 0, sxy = 0;
  for (int e = 0; e < m; ++e) {
    const double x = (n[e * ns] + shift) / denom;
    const double y = q[e * qs] - sh.sigma * log(x);
    const double w = sh.uniform_weights ? 1.0 : n[e * ns] + shift;
    sxx += w * (x - xb) * (x - xb);
    sxy += w * (x - xb) * (y - yb);
  }
  if (!(sxx > 0)) return nan;
  return sxy / sxx;
}

}  // namespace core
}  // namespace kernels
}  // namespace moecast

#endif  // MOECAST_KERNELS_CORE_SERIES_OPS_H_
