// The shared-load equilibrium solver and the likelihood maximiser
// (internal.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/health/gamma/internal.h"
#include "engine/internal/cpu_dispatch.h"

namespace moecast {
namespace gamma_internal {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// s_i, log s_i at L for every type.
MOECAST_AVX2_CLONES
void EvalProbs(const Problem& p, double gamma, const double* load,
               double* probs, double* log_probs) {
  const int m = p.num_experts;
  const double inv_sigma = 1.0 / p.sigma;
  for (int i = 0; i < p.num_types; ++i) {
    const double* q = p.quality + static_cast<size_t>(i) * m;
    double* ls = log_probs + static_cast<size_t>(i) * m;
    double* s = probs + static_cast<size_t>(i) * m;
    for (int e = 0; e < m; ++e) ls[e] = (q[e] - gamma * load[e]) * inv_sigma;
    // Four running maxima and sums (independent chains).
    double mx4[4] = {ls[0], ls[0], ls[0], ls[0]};
    int e = 0;
    for (; e + 4 <= m; e += 4) {
      for (int j = 0; j < 4; ++j) mx4[j] = ls[e + j] > mx4[j] ? ls[e + j] : mx4[j];
    }
    double mx = std::max(std::max(mx4[0], mx4[1]), std::max(mx4[2], mx4[3]));
    for (; e < m; ++e) mx = std::max(mx, ls[e]);
    for (e = 0; e < m; ++e) s[e] = ExpNonPositive(ls[e] - mx);
    double z4[4] = {0, 0, 0, 0};
    for (e = 0; e + 4 <= m; e += 4) {
      for (int j = 0; j < 4; ++j) z4[j] += s[e + j];
    }
    double z = (z4[0] + z4[1]) + (z4[2] + z4[3]);
    for (; e < m; ++e) z += s[e];
    const double lz = mx + std::log(z);
    const double inv_z = 1.0 / z;
    for (e = 0; e < m; ++e) {
      ls[e] -= lz;
      s[e] *= inv_z;
    }
  }
}

// x = H v with H = I + (gamma/sigma) sum_i w_i S_i at probs.
void ApplyHessian(const Problem& p, double gamma, const double* probs,
                  const double* v, double* x) {
  const int m = p.num_experts;
  const double c = gamma / p.sigma;
  for (int e = 0; e < m; ++e) x[e] = v[e];
  if (c == 0) return;
  for (int i = 0; i < p.num_types; ++i) {
    const double w = p.mass[i];
    if (w == 0) continue;
    const double* s = probs + static_cast<size_t>(i) * m;
    double sv = 0;
    for (int e = 0; e < m; ++e) sv += s[e] * v[e];
    const double cw = c * w;
    for (int e = 0; e < m; ++e) x[e] += cw * s[e] * (v[e] - sv);
  }
}

// Solves the k x k system a z = b in place (partial pivoting). False if
// singular.
bool SolveSmall(int k, double* a, double* b) {
  for (int col = 0; col < k; ++col) {
    int piv = col;
    for (int r = col + 1; r < k; ++r) {
      if (std::fabs(a[r * k + col]) > std::fabs(a[piv * k + col])) piv = r;
    }
    if (!(std::fabs(a[piv * k + col]) > 0)) return false;
    if (piv != col) {
      for (int j = 0; j < k; ++j) std::swap(a[col * k + j], a[piv * k + j]);
      std::swap(b[col], b[piv]);
    }
    const double inv = 1.0 / a[col * k + col];
    for (int r = col + 1; r < k; ++r) {
      const double f = a[r * k + col] * inv;
      if (f == 0) continue;
      for (int j = col; j < k; ++j) a[r * k + j] -= f * a[col * k + j];
      b[r] -= f * b[col];
    }
  }
  for (int r = k - 1; r >= 0; --r) {
    double acc = b[r];
    for (int j = r + 1; j < k; ++j) acc -= a[r * k + j] * b[j];
    b[r] = acc / a[r * k + r];
  }
  return true;
}

// Dense Cholesky solve of H x = r (H formed explicitly). False if H is not
// numerically positive definite.
bool SolveDense(const Problem& p, double gamma, const double* probs,
                const double* r, double* x, Workspace* ws) {
  const int m = p.num_experts;
  const double c = gamma / p.sigma;
  std::vector<double>& h = ws->dense;
  h.assign(static_cast<size_t>(m) * m, 0.0);
  for (int e = 0; e < m; ++e) h[static_cast<size_t>(e) * m + e] = 1.0;
  for (int i = 0; i < p.num_types; ++i) {
    const double cw = c * p.mass[i];
    if (cw == 0) continue;
    const double* s = probs + static_cast<size_t>(i) * m;
    for (int e = 0; e < m; ++e) {
      double* row = &h[static_cast<size_t>(e) * m];
      row[e] += cw * s[e];
      const double f = cw * s[e];
      for (int j = 0; j <= e; ++j) row[j] -= f * s[j];
    }
  }
  // In-place lower Cholesky.
  for (int j = 0; j < m; ++j) {
    double* rj = &h[static_cast<size_t>(j) * m];
    double d = rj[j];
    for (int t = 0; t < j; ++t) d -= rj[t] * rj[t];
    if (!(d > 0)) return false;
    const double ljj = std::sqrt(d);
    rj[j] = ljj;
    for (int i = j + 1; i < m; ++i) {
      double* ri = &h[static_cast<size_t>(i) * m];
      double acc = ri[j];
      for (int t = 0; t < j; ++t) acc -= ri[t] * rj[t];
      ri[j] = acc / ljj;
    }
  }
  for (int i = 0; i < m; ++i) {
    const double* ri = &h[static_cast<size_t>(i) * m];
    double acc = r[i];
    for (int t = 0; t < i; ++t) acc -= ri[t] * x[t];
    x[i] = acc / ri[i];
  }
  for (int i = m - 1; i >= 0; --i) {
    double acc = x[i];
    for (int t = i + 1; t < m; ++t)
      acc -= h[static_cast<size_t>(t) * m + i] * x[t];
    x[i] = acc / h[static_cast<size_t>(i) * m + i];
  }
  return true;
}

// One type with gamma >= 0: H = D - c s s^T with D = 1 + c s >= 1 and
// c = gamma/sigma, solved by Sherman-Morrison, which is stable here
// (1 - c s.D^{-1}s = 1 - sum_e s_e c s_e / (1 + c s_e) > 0, every term
// positive). Factor once per probabilities, then each right-hand side costs
// two passes.
bool SingleTypeFast(const Problem& p, double gamma) {
  return p.num_types == 1 && gamma >= 0;
}

MOECAST_AVX2_CLONES
void FactorSingle(const Problem& p, double gamma, const double* s,
                  Workspace* ws) {
  const int m = p.num_experts;
  const double c = gamma / p.sigma;
  ws->dinv.resize(m);
  double* dinv = ws->dinv.data();
  for (int e = 0; e < m; ++e) dinv[e] = 1.0 / (1.0 + c * s[e]);
  const double sds = Sum4(m, [&](int e) { return s[e] * s[e] * dinv[e]; });
  ws->single_denom = 1.0 - c * sds;
  ws->single_c = c;
}

MOECAST_AVX2_CLONES
void SolveSingle(int m, const double* s, const double* r, double* x,
                 const Workspace& ws) {
  const double* dinv = ws.dinv.data();
  const double sdr = Sum4(m, [&](int e) { return s[e] * dinv[e] * r[e]; });
  const double z = ws.single_c * sdr / ws.single_denom;
  for (int e = 0; e < m; ++e) x[e] = dinv[e] * (r[e] + z * s[e]);
}

// Solves H x = r: Woodbury on H = D - sum_i c_i s_i s_i^T (D diagonal) when
// D is safely positive, checked by its residual; else dense Cholesky.
// Returns false if neither works. Sets *dense when the dense path ran.
// `factored`: the previous call was at the same gamma and probabilities, so
// the single-type factor in *ws is reused.
MOECAST_AVX2_CLONES
bool SolveHessian(const Problem& p, double gamma, const double* probs,
                  const double* r, double* x, Workspace* ws, bool* dense,
                  bool factored = false) {
  const int m = p.num_experts;
  const int k = p.num_types;
  const double c = gamma / p.sigma;
  if (SingleTypeFast(p, gamma)) {
    if (!factored) FactorSingle(p, gamma, probs, ws);
    SolveSingle(m, probs, r, x, *ws);
    return true;
  }
  std::vector<double>& dinv = ws->dinv;
  dinv.resize(m);
  bool woodbury = true;
  for (int e = 0; e < m; ++e) {
    double de = 1.0;
    for (int i = 0; i < k; ++i) {
      de += c * p.mass[i] * probs[static_cast<size_t>(i) * m + e];
    }
    if (!(de >= 0.25)) woodbury = false;
    dinv[e] = 1.0 / de;
  }
  double rmax = 0;
  for (int e = 0; e < m; ++e) rmax = std::max(rmax, std::fabs(r[e]));
  if (woodbury) {
    // Ds_j = D^{-1} s_j; G_ij = delta_ij - c_i s_i.Ds_j; b_i = c_i s_i.D^{-1}r.
    std::vector<double>& ds = ws->wk;
    ds.resize(static_cast<size_t>(k) * m);
    for (int j = 0; j < k; ++j) {
      const double* s = probs + static_cast<size_t>(j) * m;
      double* dj = &ds[static_cast<size_t>(j) * m];
      for (int e = 0; e < m; ++e) dj[e] = s[e] * dinv[e];
    }
    for (int e = 0; e < m; ++e) x[e] = r[e] * dinv[e];
    std::vector<double>& gm = ws->ww;
    std::vector<double>& z = ws->wz;
    gm.assign(static_cast<size_t>(k) * k, 0.0);
    z.assign(k, 0.0);
    for (int i = 0; i < k; ++i) {
      const double ci = c * p.mass[i];
      const double* si = probs + static_cast<size_t>(i) * m;
      double b = 0;
      for (int e = 0; e < m; ++e) b += si[e] * x[e];
      z[i] = ci * b;
      for (int j = 0; j < k; ++j) {
        double acc = 0;
        const double* dj = &ds[static_cast<size_t>(j) * m];
        if (ci != 0) {
          for (int e = 0; e < m; ++e) acc += si[e] * dj[e];
        }
        gm[static_cast<size_t>(i) * k + j] = (i == j ? 1.0 : 0.0) - ci * acc;
      }
    }
    bool ok;
    if (k == 1) {
      ok = gm[0] != 0;
      if (ok) z[0] /= gm[0];
    } else {
      ok = SolveSmall(k, gm.data(), z.data());
    }
    if (ok) {
      for (int j = 0; j < k; ++j) {
        if (z[j] == 0) continue;
        const double* dj = &ds[static_cast<size_t>(j) * m];
        for (int e = 0; e < m; ++e) x[e] += z[j] * dj[e];
      }
      // Residual check, except for one type, where the formula is stable:
      // for gamma >= 0, D >= 1 and 0 < G <= 1; for gamma < 0, D >= 0.25
      // (checked above, woodbury) and H = D + |c| s s^T with G >= 1, so
      // cond(H) <= 4 (1 + |c| |s|^2) < 12 (|c| < 2 where the equilibrium is
      // unique) and the residual is within a few ulps of |r|, far inside the
      // 1e-9 |r| below.
      bool finite = true;
      for (int e = 0; e < m; ++e) {
        if (!std::isfinite(x[e])) finite = false;
      }
      if (finite && k == 1) return true;
      std::vector<double>& hx = ws->hx;
      hx.resize(m);
      ApplyHessian(p, gamma, probs, x, hx.data());
      double err = 0;
      for (int e = 0; e < m; ++e) err = std::max(err, std::fabs(hx[e] - r[e]));
      if (finite && err <= 1e-9 * rmax + 1e-300) return true;
    }
  }
  *dense = true;
  return SolveDense(p, gamma, probs, r, x, ws);
}

// Phi(L + t d) - Phi(L), with s_i the probabilities at L; stable for small
// |gamma| (log1p/expm1) and exact in the gamma = 0 limit.
double MeritChange(const Problem& p, double gamma, const double* load,
                   const double* probs, const double* d, double t) {
  const int m = p.num_experts;
  double ld = 0, dd = 0;
  for (int e = 0; e < m; ++e) {
    ld += load[e] * d[e];
    dd += d[e] * d[e];
  }
  double change = t * ld + 0.5 * t * t * dd;
  const double c = -gamma * t / p.sigma;  // x_e = c * d_e
  double dmax = 0;
  for (int e = 0; e < m; ++e) dmax = std::max(dmax, std::fabs(d[e]));
  for (int i = 0; i < p.num_types; ++i) {
    const double w = p.mass[i];
    if (w == 0) continue;
    const double* s = probs + static_cast<size_t>(i) * m;
    if (gamma == 0) {
      double sd = 0;
      for (int e = 0; e < m; ++e) sd += s[e] * d[e];
      change -= w * t * sd;
      continue;
    }
    double r;
    if (std::fabs(c) * dmax <= 0.5) {
      double acc = 0;
      for (int e = 0; e < m; ++e) acc += s[e] * std::expm1(c * d[e]);
      r = std::log1p(acc);
    } else {
      double mx = -std::numeric_limits<double>::infinity();
      for (int e = 0; e < m; ++e) {
        if (s[e] > 0) mx = std::max(mx, c * d[e]);
      }
      double acc = 0;
      for (int e = 0; e < m; ++e) {
        if (s[e] > 0) acc += s[e] * std::exp(c * d[e] - mx);
      }
      r = mx + std::log(acc);
    }
    change += w * (p.sigma / gamma) * r;
  }
  return change;
}

}  // namespace

double ResidualFloor(const Problem& p, double gamma, const double* load) {
  double mx = 0;
  for (int e = 0; e < p.num_experts; ++e) mx = std::max(mx, std::fabs(load[e]));
  return 1e-13 + 8 * std::numeric_limits<double>::epsilon() *
                     (std::fabs(gamma) / p.sigma) * mx * mx;
}

double MleLowerBound(double sigma) {
  return kUniquenessLimitInSigma * sigma * (1.0 - 1e-6);
}

double MleUpperBound(int num_experts, double sigma) {
  return 1e6 * num_experts * sigma;
}

MOECAST_AVX2_CLONES
void Solve(const Problem& p, double gamma, double tol, int max_iter,
           const double* warm, Workspace* ws, State* st) {
  const int m = p.num_experts;
  const int k = p.num_types;
  st->gamma = gamma;
  st->load.resize(m);
  st->probs.resize(static_cast<size_t>(k) * m);
  st->log_probs.resize(static_cast<size_t>(k) * m);
  st->iterations = 0;
  st->converged = false;
  st->dense_fallback = false;
  if (warm != nullptr) {
    std::copy(warm, warm + m, st->load.begin());
  } else {
    double* load = st->load.data();
    const double t0 = std::max(p.sigma + gamma / m, 0.25 * p.sigma);
    // Softmax of q_i / t0, mixed by mass (probs as scratch).
    std::fill(load, load + m, 0.0);
    for (int i = 0; i < k; ++i) {
      const double* q = p.quality + static_cast<size_t>(i) * m;
      double mx = -std::numeric_limits<double>::infinity();
      for (int e = 0; e < m; ++e) mx = std::max(mx, q[e] / t0);
      double z = 0;
      for (int e = 0; e < m; ++e) z += std::exp(q[e] / t0 - mx);
      for (int e = 0; e < m; ++e) {
        load[e] += p.mass[i] * std::exp(q[e] / t0 - mx) / z;
      }
    }
  }
  std::vector<double>& g = ws->g;
  std::vector<double>& d = ws->d;
  g.resize(m);
  d.resize(m);
  // The trial point of a full Newton step and its probabilities.
  std::vector<double>& tload = ws->tload;
  std::vector<double>& tprobs = ws->tprobs;
  std::vector<double>& tlog = ws->tlog_probs;
  std::vector<double>& tg = ws->tg;
  tload.resize(m);
  tprobs.resize(static_cast<size_t>(k) * m);
  tlog.resize(static_cast<size_t>(k) * m);
  tg.resize(m);
  // g = L - P(L) at `load` from its probabilities; returns max_e |g_e|.
  auto gradient = [&](const double* load, const double* probs, double* out) {
    double res = 0;
    if (k == 1) {
      for (int e = 0; e < m; ++e) out[e] = load[e] - probs[e];
      // Four running maxima (independent chains).
      double r4[4] = {0, 0, 0, 0};
      int e = 0;
      for (; e + 4 <= m; e += 4) {
        for (int j = 0; j < 4; ++j) {
          const double a = std::fabs(out[e + j]);
          r4[j] = a > r4[j] ? a : r4[j];
        }
      }
      res = std::max(std::max(r4[0], r4[1]), std::max(r4[2], r4[3]));
      for (; e < m; ++e) res = std::max(res, std::fabs(out[e]));
      return res;
    }
    for (int e = 0; e < m; ++e) {
      double pe = 0;
      for (int i = 0; i < k; ++i) {
        pe += p.mass[i] * probs[static_cast<size_t>(i) * m + e];
      }
      out[e] = load[e] - pe;
      res = std::max(res, std::fabs(out[e]));
    }
    return res;
  };
  double best_res = std::numeric_limits<double>::infinity();
  int stalled = 0;
  bool evaluated = false;  // probs and g are those of the current load
  double res = 0;
  for (;;) {
    if (!evaluated) {
      EvalProbs(p, gamma, st->load.data(), st->probs.data(),
                st->log_probs.data());
      res = gradient(st->load.data(), st->probs.data(), g.data());
    }
    evaluated = false;
    st->residual = res;
    if (res <= tol) {
      st->converged = true;
      break;
    }
    double* load = st->load.data();
    // Rounding floor: once the residual is near it, two steps in a row that
    // do not improve on the best residual so far (rounding can make it
    // oscillate) end the solve (converged if within the floor). (The floor
    // is below floor_bound, loads being at most 1.)
    const double floor_bound =
        1e-13 + 8 * std::numeric_limits<double>::epsilon() *
                    (std::fabs(gamma) / p.sigma);
    const double floor =
        res < 100 * floor_bound ? ResidualFloor(p, gamma, load) : floor_bound;
    if (res < 100 * floor && res >= best_res) {
      if (++stalled >= 2) {
        st->converged = res <= floor;
        break;
      }
    } else {
      stalled = 0;
    }
    best_res = std::min(best_res, res);
    if (st->iterations >= max_iter) break;
    bool dense = false;
    bool ok = SolveHessian(p, gamma, st->probs.data(), g.data(), d.data(), ws,
                           &dense);
    if (dense) st->dense_fallback = true;
    for (int e = 0; e < m; ++e) d[e] = -d[e];
    const double* gp = g.data();
    const double* dp = d.data();
    double gd = Sum4(m, [&](int e) { return gp[e] * dp[e]; });
    bool have_trial = false;
    double tres = 0;
    // Takes the full Newton step evaluated into the trial buffers.
    auto accept_trial = [&] {
      st->load.swap(tload);
      st->probs.swap(tprobs);
      st->log_probs.swap(tlog);
      g.swap(tg);
      res = tres;
      evaluated = true;
    };
    if (!ok || !(gd < 0)) {  // not a descent direction: steepest descent
      gd = 0;
      for (int e = 0; e < m; ++e) {
        d[e] = -g[e];
        gd -= g[e] * g[e];
      }
    } else {
      // The full Newton step, kept when it at least halves the residual
      // (near the solution it squares it): no line search then, and its
      // probabilities serve the next iteration. Otherwise the damped step
      // below, from the same point.
      for (int e = 0; e < m; ++e) tload[e] = load[e] + d[e];
      EvalProbs(p, gamma, tload.data(), tprobs.data(), tlog.data());
      tres = gradient(tload.data(), tprobs.data(), tg.data());
      have_trial = true;
      if (tres <= 0.5 * res) {
        accept_trial();
        ++st->iterations;
        continue;
      }
    }
    double t = 1.0;
    if (-gd > 1e-26) {
      for (int bt = 0; bt < 60; ++bt) {
        const double change =
            MeritChange(p, gamma, load, st->probs.data(), d.data(), t);
        if (change <= 1e-4 * t * gd) break;
        t *= 0.5;
      }
    }
    if (t == 1.0 && have_trial) {  // the full step after all: evaluated
      accept_trial();
    } else {
      for (int e = 0; e < m; ++e) load[e] += t * d[e];
    }
    ++st->iterations;
  }
}

MOECAST_AVX2_CLONES
void PredictLoadForQuality(const Problem& p, const State& st,
                           const double* q_new, Workspace* ws,
                           std::vector<double>* out) {
  const int m = p.num_experts;
  out->assign(st.load.begin(), st.load.end());
  if (p.num_types != 1) return;
  const double sigma = p.sigma;
  const double gamma = st.gamma;
  const double* s = st.probs.data();
  // First order: H dL = S dq / sigma.
  std::vector<double>& rhs = ws->tmp;
  rhs.resize(m);
  const double* q = p.quality;
  const double inv_sigma = 1.0 / sigma;
  const double sdq = Sum4(m, [&](int e) { return s[e] * (q_new[e] - q[e]); });
  for (int e = 0; e < m; ++e) {
    rhs[e] = s[e] * ((q_new[e] - q[e]) - sdq) * inv_sigma;
  }
  std::vector<double>& dl = ws->v;
  dl.resize(m);
  bool dense = false;
  if (!SolveHessian(p, gamma, s, rhs.data(), dl.data(), ws, &dense)) return;
  // Second order: H d2L = T, T_e = s_e ((x_e - s.x)^2 - Var_s(x)) with
  // x = da = (dq - gamma dL) / sigma.
  std::vector<double>& xv = ws->tg;
  xv.resize(m);
  double* x = xv.data();
  const double* dlp = dl.data();
  for (int e = 0; e < m; ++e) {
    x[e] = ((q_new[e] - q[e]) - gamma * dlp[e]) * inv_sigma;
  }
  const double xbar = Sum4(m, [&](int e) { return s[e] * x[e]; });
  const double var = Sum4(m, [&](int e) {
    const double dx = x[e] - xbar;
    return s[e] * dx * dx;
  });
  for (int e = 0; e < m; ++e) {
    rhs[e] = s[e] * ((x[e] - xbar) * (x[e] - xbar) - var);
  }
  std::vector<double>& d2l = ws->d2load;
  d2l.resize(m);
  if (!SolveHessian(p, gamma, s, rhs.data(), d2l.data(), ws, &dense,
                    /*factored=*/true)) {
    std::fill(d2l.begin(), d2l.end(), 0.0);
  }
  for (int e = 0; e < m; ++e) {
    const double v = dl[e] + 0.5 * d2l[e];
    if (!std::isfinite(v)) {
      out->assign(st.load.begin(), st.load.end());
      return;
    }
    (*out)[e] += v;
  }
}

MOECAST_AVX2_CLONES
void LoadDerivative(const Problem& p, const State& st, Workspace* ws,
                    std::vector<double>* dload) {
  const int m = p.num_experts;
  std::vector<double>& rhs = ws->tmp;
  rhs.assign(m, 0.0);
  const double* load = st.load.data();
  for (int i = 0; i < p.num_types; ++i) {
    const double w = p.mass[i];
    if (w == 0) continue;
    const double* s = st.probs.data() + static_cast<size_t>(i) * m;
    const double sl = Sum4(m, [&](int e) { return s[e] * load[e]; });
    const double ws_ = w / p.sigma;
    for (int e = 0; e < m; ++e) rhs[e] += ws_ * s[e] * (load[e] - sl);
  }
  dload->resize(m);
  bool dense = false;
  if (!SolveHessian(p, st.gamma, st.probs.data(), rhs.data(), dload->data(), ws,
                    &dense)) {
    std::fill(dload->begin(), dload->end(), kNaN);
    return;
  }
  for (int e = 0; e < m; ++e) (*dload)[e] = -(*dload)[e];
}

MOECAST_AVX2_CLONES
Likelihood EvaluateLikelihood(const Problem& p, const Counts& c,
                              const State& st, const std::vector<double>& dload,
                              Workspace* ws) {
  const int m = p.num_experts;
  Likelihood out;
  std::vector<double>& v = ws->v;
  v.resize(m);
  for (int e = 0; e < m; ++e) v[e] = st.load[e] + st.gamma * dload[e];
  for (int i = 0; i < p.num_types; ++i) {
    const double* s = st.probs.data() + static_cast<size_t>(i) * m;
    const double* ls = st.log_probs.data() + static_cast<size_t>(i) * m;
    const double* n = c.counts + static_cast<size_t>(i) * m;
    const double total = c.totals[i];
    if (total <= 0) continue;
    const double* vp = v.data();
    const double sv = Sum4(m, [&](int e) { return s[e] * vp[e]; });
    out.loglik +=
        Sum4(m, [&](int e) { return n[e] > 0 ? n[e] * ls[e] : 0.0; });
    const double score =
        Sum4(m, [&](int e) { return (n[e] - total * s[e]) * vp[e]; });
    const double var = Sum4(m, [&](int e) {
      const double dv = vp[e] - sv;
      return s[e] * dv * dv;
    });
    out.score -= score / p.sigma;
    out.fisher += total * var / (p.sigma * p.sigma);
  }
  return out;
}

namespace {

// SingleTypeCurvature; `factored` as for SolveHessian (true right after
// LoadDerivative on the same state).
MOECAST_AVX2_CLONES
double Curvature(const Problem& p, const Counts& c, const State& st,
                 const std::vector<double>& dload, Workspace* ws,
                 std::vector<double>* d2load, bool factored) {
  if (p.num_types != 1) return kNaN;
  const int m = p.num_experts;
  const double sigma = p.sigma;
  const double gamma = st.gamma;
  const double* s = st.probs.data();
  const double* load = st.load.data();
  const double* dl = dload.data();
  // x = a', its s-mean and s-variance, and s.L'.
  const double inv_sigma = 1.0 / sigma;
  std::vector<double>& xv = ws->tmp;
  xv.resize(m);
  double* x = xv.data();
  for (int e = 0; e < m; ++e) x[e] = -(load[e] + gamma * dl[e]) * inv_sigma;
  const double xbar = Sum4(m, [&](int e) { return s[e] * x[e]; });
  const double sdl = Sum4(m, [&](int e) { return s[e] * dl[e]; });
  const double var = Sum4(m, [&](int e) {
    const double dx = x[e] - xbar;
    return s[e] * dx * dx;
  });
  std::vector<double>& rhs = ws->v;
  rhs.resize(m);
  for (int e = 0; e < m; ++e) {
    const double dx = x[e] - xbar;
    rhs[e] = s[e] * (dx * dx - var) - 2 * inv_sigma * s[e] * (dl[e] - sdl);
  }
  d2load->resize(m);
  bool dense = false;
  if (!SolveHessian(p, gamma, s, rhs.data(), d2load->data(), ws, &dense,
                    factored)) {
    return kNaN;
  }
  const double* n = c.counts;
  const double total = c.totals[0];
  const double* d2 = d2load->data();
  double curv = Sum4(m, [&](int e) {
    const double a2 = -(2 * dl[e] + gamma * d2[e]) * inv_sigma;
    return (n[e] - total * s[e]) * a2;
  });
  const double lx = Sum4(m, [&](int e) { return dl[e] * x[e]; });
  curv -= total * lx;
  return std::isfinite(curv) ? curv : kNaN;
}

}  // namespace

double SingleTypeCurvature(const Problem& p, const Counts& c,
                           const State& st, const std::vector<double>& dload,
                           Workspace* ws, std::vector<double>* d2load) {
  return Curvature(p, c, st, dload, ws, d2load, /*factored=*/false);
}

MleResult MaximizeLikelihood(const Problem& p, const Counts& c, double gamma0,
                             double lo, double hi, double rel_tol,
                             const double* warm, Workspace* ws) {
  MleResult r;
  SearchOptions o;
  o.rel_tol = rel_tol;
  MaximizeLikelihood(p, c, gamma0, lo, hi, o, warm, ws, &r);
  return r;
}

void MaximizeLikelihood(const Problem& p, const Counts& c, double gamma0,
                        double lo, double hi, const SearchOptions& options,
                        const double* warm, Workspace* ws, MleResult* out) {
  constexpr int kMaxEvaluations = 200;
  constexpr int kSolveMaxIter = 100;
  const double rel_tol = options.rel_tol;
  const bool final_state = options.final_state;
  const double sigma = p.sigma;
  const int m = p.num_experts;
  const bool single = p.num_types == 1;
  MleResult& r = *out;
  r.gamma = 0;
  r.lik = Likelihood();
  r.evaluations = 0;
  r.solver_iterations = 0;
  r.max_residual = 0;
  r.at_lower_bound = r.at_upper_bound = false;
  r.converged = false;
  r.solver_failed = false;
  std::vector<double>& dload = ws->dload;
  std::vector<double>& d2load = ws->d2load;
  std::vector<double>& next_warm = ws->next_warm;
  next_warm.resize(m);
  State& cur = r.state;
  Likelihood lik;
  double curv = kNaN;
  auto eval = [&](double g, const double* start) {
    Solve(p, g, options.solve_tol, kSolveMaxIter, start, ws, &cur);
    ++r.evaluations;
    r.solver_iterations += cur.iterations;
    r.max_residual = std::max(r.max_residual, cur.residual);
    if (!cur.converged) r.solver_failed = true;
    LoadDerivative(p, cur, ws, &dload);
    lik = EvaluateLikelihood(p, c, cur, dload, ws);
    // LoadDerivative left the factor of this state's Hessian.
    curv = single ? Curvature(p, c, cur, dload, ws, &d2load, /*factored=*/true)
                  : kNaN;
  };
  double g = gamma0;
  if (!std::isfinite(g)) g = 0;
  g = std::min(std::max(g, lo), hi);
  eval(g, warm);
  double a = lo, b = hi;
  bool a_known = false, b_known = false;
  double g_prev = std::numeric_limits<double>::quiet_NaN();
  double u_prev = g_prev;
  for (int it = 0; it < kMaxEvaluations; ++it) {
    const double u = lik.score;
    if (!std::isfinite(u)) break;
    if (u > 0) {
      a = g;
      a_known = true;
    } else if (u < 0) {
      b = g;
      b_known = true;
    } else {
      r.converged = true;
      break;
    }
    if (u < 0 && g <= lo) {
      r.at_lower_bound = true;
      r.converged = true;
      break;
    }
    if (u > 0 && g >= hi) {
      r.at_upper_bound = true;
      r.converged = true;
      break;
    }
    const double scale = std::fabs(g) + sigma;
    if (a_known && b_known && b - a <= rel_tol * scale) {
      r.converged = true;
      break;
    }
    double step = std::numeric_limits<double>::quiet_NaN();
    const double slope = (u - u_prev) / (g - g_prev);
    if (curv < 0) {  // NaN compares false
      step = -u / curv;
    } else if (std::isfinite(slope) && slope < 0) {
      step = -u / slope;
    } else if (lik.fisher > 0) {
      step = u / lik.fisher;
    }
    const double cap = 8 * scale;
    if (!std::isfinite(step)) step = u > 0 ? cap : -cap;
    step = std::min(std::max(step, -cap), cap);
    // A step below the tolerance ends the search (at g + step, evaluated
    // below when final_state) unless it would leave the range.
    const bool small_step = std::fabs(step) <= rel_tol * scale;
    double gn = g + step;
    if (!small_step && !(gn > a && gn < b)) {
      if (a_known && b_known) {
        gn = 0.5 * (a + b);  // bisect the bracket
      } else if (u < 0) {
        // Only b = g is known: past the lower end, go to it; a step the
        // wrong way goes down by the cap instead.
        gn = gn <= a ? lo : g - cap;
      } else {
        gn = gn >= b ? hi : g + cap;
      }
    }
    gn = std::min(std::max(gn, lo), hi);
    if (small_step && !final_state) {
      g = gn;
      r.converged = true;
      break;
    }
    // Warm start: Taylor prediction of the new load.
    const double* start = nullptr;
    const double dg = gn - g;
    if (std::fabs(dg) <= scale && std::isfinite(dload[0])) {
      if (std::isfinite(curv) && std::isfinite(d2load[0])) {
        for (int e = 0; e < m; ++e) {
          next_warm[e] = cur.load[e] + dg * (dload[e] + 0.5 * dg * d2load[e]);
        }
      } else {
        for (int e = 0; e < m; ++e) next_warm[e] = cur.load[e] + dload[e] * dg;
      }
      start = next_warm.data();
    }
    g_prev = g;
    u_prev = u;
    g = gn;
    eval(g, start);
    if (small_step) {
      r.converged = true;
      break;
    }
  }
  r.gamma = g;
  r.lik = lik;
}

MleResult FitMle(const std::vector<double>& q, const std::vector<double>& n,
                 double a, double sigma, double gamma0, const double* warm,
                 double rel_tol, Workspace* ws) {
  MleResult r;
  SearchOptions o;
  o.rel_tol = rel_tol;
  FitMle(q, n, a, sigma, gamma0, warm, o, ws, &r);
  return r;
}

void FitMle(const std::vector<double>& q, const std::vector<double>& n,
            double a, double sigma, double gamma0, const double* warm,
            const SearchOptions& options, Workspace* ws, MleResult* r) {
  static const double kOne = 1.0;
  Problem p;
  p.num_experts = static_cast<int>(q.size());
  p.num_types = 1;
  p.mass = &kOne;
  p.quality = q.data();
  p.sigma = sigma;
  Counts c;
  c.counts = n.data();
  c.totals = &a;
  MaximizeLikelihood(p, c, gamma0, MleLowerBound(sigma),
                     MleUpperBound(p.num_experts, sigma), options, warm, ws, r);
}

double Pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = x.size();
  if (n < 3 || y.size() != n) return std::numeric_limits<double>::quiet_NaN();
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (!(sxx > 0) || !(syy > 0)) return std::numeric_limits<double>::quiet_NaN();
  return sxy / std::sqrt(sxx * syy);
}

}  // namespace gamma_internal
}  // namespace moecast
