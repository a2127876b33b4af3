// arima(p,d,q): conditional-sum-of-squares ARIMA per expert. See arima.h.
#include "engine/predict/arima/arima.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "Eigen/Dense"
#include "absl/strings/str_cat.h"

namespace moecast {
namespace {

constexpr int kMaxParams = 2 * kArimaMaxOrder + 1;
constexpr int kMaxLongAr = 30;
constexpr int kMaxRegressors =
    kMaxLongAr > kMaxParams ? kMaxLongAr : kMaxParams;
constexpr double kMaxLambda = 1e10;
constexpr double kShrink = 0.95;

// Small dense matrices live on the stack (no heap allocation).
using SmallMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, 0,
                                  kMaxRegressors, kMaxRegressors>;
using SmallVector =
    Eigen::Matrix<double, Eigen::Dynamic, 1, 0, kMaxRegressors, 1>;

bool AllFinite(const double* v, int n) {
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(v[i])) return false;
  }
  return true;
}

// Recursive point forecasts. uh[0..p): centred differenced values, newest
// first (overwritten); eh[0..q): residuals, newest first; lev[0..d): the last
// value of the k-times differenced levels (overwritten). Calls
// sink(s, level) for s = 0..steps-1.
template <typename Sink>
void RunForecast(int p, int d, int q, const double* phi, const double* theta,
                 double mu, double* uh, const double* eh, double* lev,
                 int steps, Sink&& sink) {
  // Once the MA terms are past (s > q) and every u in the AR state is below
  // `negligible` (relative to the levels), u-hat stays there: the rest is
  // w-hat = mu, integrated (no AR products).
  double scale = std::fabs(mu);
  for (int k = 0; k < d; ++k) scale = std::max(scale, std::fabs(lev[k]));
  const double negligible = 1e-16 * scale;
  int s = 1;
  for (; s <= steps; ++s) {
    // Oldest terms first: the newest value (the previous step's u-hat)
    // enters last, so the recursion waits on it for one multiply-add.
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
      for (int i = 0; i < p; ++i) settled &= std::fabs(uh[i]) <= negligible;
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

// Levinson step-up: reflection coefficients kappa[0..n) to the coefficients
// a[0..n) of x_t = sum_i a_i x_{t-i}, and if `da` is given the Jacobian
// da[i * n + j] = d a_i / d kappa_j.
void StepUp(const double* kappa, int n, double* a, double* da) {
  double prev[kArimaMaxOrder];
  double dprev[kArimaMaxOrder * kArimaMaxOrder];
  for (int m = 1; m <= n; ++m) {
    const double k = kappa[m - 1];
    std::copy(a, a + m - 1, prev);
    for (int i = 0; i < m - 1; ++i) a[i] = prev[i] - k * prev[m - 2 - i];
    a[m - 1] = k;
    if (da == nullptr) continue;
    // Rows of the order-(m-1) Jacobian live in da with stride n.
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

// Levinson step-down: a[0..n) to reflection coefficients kappa[0..n) (kappa
// [m-1] is that of order m); false if some |kappa| >= 1 or not finite.
bool StepDown(const double* a, int n, double* kappa) {
  double cur[kArimaMaxOrder];
  double next[kArimaMaxOrder];
  std::copy(a, a + n, cur);
  for (int m = n; m >= 1; --m) {
    const double k = cur[m - 1];
    if (!(std::fabs(k) < 1)) return false;
    kappa[m - 1] = k;
    const double inv = 1.0 / (1.0 - k * k);
    for (int i = 0; i < m - 1; ++i)
      next[i] = (cur[i] + k * cur[m - 2 - i]) * inv;
    std::copy(next, next + m - 1, cur);
  }
  return true;
}

}  // namespace

absl::Status ValidateArimaOptions(const ArimaOptions& o) {
  if (o.p < 0 || o.p > kArimaMaxOrder) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ArimaOptions.p must be in [0, ", kArimaMaxOrder, "], got ", o.p));
  }
  if (o.d < 0 || o.d > 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("ArimaOptions.d must be in [0, 2], got ", o.d));
  }
  if (o.q < 0 || o.q > kArimaMaxOrder) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ArimaOptions.q must be in [0, ", kArimaMaxOrder, "], got ", o.q));
  }
  const int min_window = o.p + o.d + o.q + kArimaMinExtraObservations;
  if (o.fit_window < min_window || o.fit_window > 1000000) {
    return absl::InvalidArgumentError(
        absl::StrCat("ArimaOptions.fit_window must be in [p + d + q + ",
                     kArimaMinExtraObservations, " = ", min_window,
                     ", 1000000], got ", o.fit_window));
  }
  if (o.refit_every < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ArimaOptions.refit_every must be >= 1, got ", o.refit_every));
  }
  if (o.max_iterations < 1 || o.max_iterations > 10000) {
    return absl::InvalidArgumentError(
        absl::StrCat("ArimaOptions.max_iterations must be in [1, 10000], got ",
                     o.max_iterations));
  }
  if (!(o.tolerance >= 1e-15 && o.tolerance <= 1e-2)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ArimaOptions.tolerance must be in [1e-15, 1e-2], got ", o.tolerance));
  }
  return absl::OkStatus();
}

int ArimaMinFitObservations(const ArimaOptions& o) {
  return std::max(o.fit_window / 2,
                  o.p + o.d + o.q + kArimaMinExtraObservations);
}

bool ArimaIsStationary(absl::Span<const double> a, double max_reflection) {
  const int n = static_cast<int>(a.size());
  if (n > kArimaMaxOrder) return false;
  double cur[kArimaMaxOrder];
  double next[kArimaMaxOrder];
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(a[i])) return false;
    cur[i] = a[i];
  }
  // Levinson step-down: the order-m polynomial's last coefficient is the
  // reflection coefficient k_m; a_{m-1,i} = (a_{m,i} + k a_{m,m-i}) / (1-k^2).
  for (int m = n; m >= 1; --m) {
    const double k = cur[m - 1];
    if (!(std::fabs(k) <= max_reflection)) return false;
    const double inv = 1.0 / (1.0 - k * k);
    for (int i = 0; i < m - 1; ++i) {
      next[i] = (cur[i] + k * cur[m - 2 - i]) * inv;
    }
    std::copy(next, next + m - 1, cur);
  }
  return true;
}

// ---------------------------------------------------------------------------
// ArimaCss

struct ArimaCss::Workspace {
  int capacity = 0;       // longest differenced series the buffers hold
  std::vector<double> w;  // differenced series
  std::vector<double> u;  // w - mu
  std::vector<double> e;  // residuals at the current parameters
  std::vector<double> e_trial;
  std::vector<double> ehat;  // long-AR residuals (Hannan-Rissanen)
  std::vector<double> jac;   // row-major capacity x k, rows t = p..m-1
  Eigen::MatrixXd design;    // capacity x kMaxRegressors
  Eigen::VectorXd target;    // capacity
  SmallMatrix jtj;
  SmallVector jte;

  void Reserve(int m, int k) {
    if (m <= capacity) return;
    capacity = m;
    w.resize(m);
    u.resize(m);
    e.resize(m);
    e_trial.resize(m);
    ehat.resize(m);
    jac.resize(static_cast<size_t>(m) * std::max(k, 1));
    design.resize(m, kMaxRegressors);
    target.resize(m);
  }
};

ArimaCss::ArimaCss(const ArimaOptions& o)
    : p_(o.p),
      d_(o.d),
      q_(o.q),
      has_mean_(o.d == 0 || o.drift),
      k_(o.p + o.q + (o.d == 0 || o.drift ? 1 : 0)),
      max_iterations_(o.max_iterations),
      tolerance_(o.tolerance),
      ws_(std::make_unique<Workspace>()) {}

ArimaCss::~ArimaCss() = default;

int ArimaCss::workspace_capacity() const { return ws_->capacity; }

void ArimaCss::ReserveWorkspace(int m) { ws_->Reserve(m, k_); }

int64_t ArimaCss::MemoryBytes() const {
  const int64_t c = ws_->capacity;
  return static_cast<int64_t>(sizeof(*this) + sizeof(Workspace)) +
         8 * (5 * c + c * std::max(k_, 1) + c * kMaxRegressors + c);
}

int ArimaCss::Difference(absl::Span<const double> x) {
  const int n = static_cast<int>(x.size());
  const int m = n - d_;
  if (m <= 0) return 0;
  ws_->Reserve(m, k_);
  double* w = ws_->w.data();
  const double* v = x.data();  // raw pointers: hardened Span::operator[]
  if (d_ == 0) {
    std::copy(v, v + n, w);
  } else if (d_ == 1) {
    for (int t = 0; t < m; ++t) w[t] = v[t + 1] - v[t];
  } else {
    for (int t = 0; t < m; ++t) w[t] = v[t + 2] - 2 * v[t + 1] + v[t];
  }
  return m;
}

double ArimaCss::Residuals(int m, const double* params, double* e) {
  const double* phi = params;
  const double* theta = params + p_;
  const double mu = params[p_ + q_];
  const double* w = ws_->w.data();
  double* u = ws_->u.data();
  for (int t = 0; t < m; ++t) u[t] = w[t] - mu;
  for (int t = 0; t < std::min(p_, m); ++t) e[t] = 0;
  // The AR part has no recursion (vectorizes); the MA recursion then runs
  // with its oldest terms first, so that each step waits on e_{t-1} for one
  // multiply-subtract only.
  for (int t = p_; t < m; ++t) {
    double r = u[t];
    for (int i = 1; i <= p_; ++i) r -= phi[i - 1] * u[t - i];
    e[t] = r;
  }
  for (int t = p_; t < m; ++t) {
    const int jmax = std::min(q_, t - p_);
    double r = e[t];
    for (int j = jmax; j >= 1; --j) r -= theta[j - 1] * e[t - j];
    e[t] = r;
  }
  double s = 0;
  for (int t = p_; t < m; ++t) s += e[t] * e[t];
  return s;
}

double ArimaCss::Linearize(int m, const double* params, double s) {
  if (s < 0) s = Residuals(m, params, ws_->e.data());
  const double* theta = params + p_;
  const double* u = ws_->u.data();
  const double* e = ws_->e.data();
  const int rows = m - p_;
  const int k = k_;
  double sum_phi = 0;
  for (int i = 0; i < p_; ++i) sum_phi += params[i];
  // J row-major, row r = t - p: the raw inputs a(t) of the derivative
  // recursions, then the MA filter J(r) = a(r) - sum_j theta_j J(r - j)
  // applied to all columns of a row at once (independent chains, so the
  // loop runs at throughput rather than at the latency of one recursion).
  // d e_t / d theta_j is d e_t / d theta_1 shifted by j - 1 rows (its inputs
  // -e_{t-j} are shifts of each other and vanish before t = p), so only the
  // phi columns, theta_1 and mu are filtered; theta_2..q are copied.
  double* jac = ws_->jac.data();
  const double mean_input = -(1.0 - sum_phi);
  for (int r = 0; r < rows; ++r) {
    const int t = p_ + r;
    double* row = jac + static_cast<size_t>(r) * k;
    for (int i = 1; i <= p_; ++i) row[i - 1] = -u[t - i];
    if (q_ > 0) row[p_] = r >= 1 ? -e[t - 1] : 0;
    if (has_mean_) row[p_ + q_] = mean_input;
    // Per column the oldest terms first, so that each row waits on the
    // previous one for a single multiply-subtract.
    const int jmax = std::min(q_, r);
    const int filtered = q_ > 0 ? p_ + 1 : p_;
    for (int col = 0; col < filtered; ++col) {
      double v = row[col];
      for (int j = jmax; j >= 1; --j) {
        v -= theta[j - 1] * row[col - static_cast<ptrdiff_t>(j) * k];
      }
      row[col] = v;
    }
    if (has_mean_) {
      double v = row[p_ + q_];
      for (int j = jmax; j >= 1; --j) {
        v -= theta[j - 1] * row[p_ + q_ - static_cast<ptrdiff_t>(j) * k];
      }
      row[p_ + q_] = v;
    }
    for (int j = 2; j <= q_; ++j) {
      row[p_ + j - 1] =
          r >= j - 1 ? row[p_ - static_cast<ptrdiff_t>(j - 1) * k] : 0.0;
    }
  }
  using RowMajor =
      Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const RowMajor> j(jac, rows, k);
  ws_->jtj.setZero(k, k);
  ws_->jtj.selfadjointView<Eigen::Lower>().rankUpdate(j.transpose());
  ws_->jtj.triangularView<Eigen::StrictlyUpper>() =
      ws_->jtj.transpose().triangularView<Eigen::StrictlyUpper>();
  ws_->jte.resize(k);
  ws_->jte.noalias() =
      j.transpose() * Eigen::Map<const Eigen::VectorXd>(e + p_, rows);
  return s;
}

bool ArimaCss::Feasible(const double* params) const {
  if (!AllFinite(params, p_ + q_ + 1)) return false;
  if (!ArimaIsStationary(absl::MakeConstSpan(params, p_))) return false;
  double neg[kArimaMaxOrder];
  for (int j = 0; j < q_; ++j) neg[j] = -params[p_ + j];
  return ArimaIsStationary(absl::MakeConstSpan(neg, q_));
}

void ArimaCss::MakeFeasible(double* params) const {
  for (int i = 0; i < p_ + q_ + 1; ++i) {
    if (!std::isfinite(params[i])) params[i] = 0;
  }
  if (!has_mean_) params[p_ + q_] = 0;
  double* phi = params;
  for (int round = 0;
       round < 300 && !ArimaIsStationary(absl::MakeConstSpan(phi, p_));
       ++round) {
    double f = 1;
    for (int i = 0; i < p_; ++i) phi[i] *= (f *= kShrink);
  }
  if (!ArimaIsStationary(absl::MakeConstSpan(phi, p_))) {
    std::fill(phi, phi + p_, 0.0);
  }
  double neg[kArimaMaxOrder];
  double* theta = params + p_;
  for (int round = 0; round < 300; ++round) {
    for (int j = 0; j < q_; ++j) neg[j] = -theta[j];
    if (ArimaIsStationary(absl::MakeConstSpan(neg, q_))) return;
    double f = 1;
    for (int j = 0; j < q_; ++j) theta[j] *= (f *= kShrink);
  }
  std::fill(theta, theta + q_, 0.0);
}

namespace {
// The box for reflection coefficients in the fit: a hair inside the margin so
// that the coefficients it gives pass ArimaIsStationary after rounding.
constexpr double kBox = kArimaMaxReflection - 1e-10;
}  // namespace

bool ArimaCss::ToInternal(const double* params, double* z) const {
  double a[kArimaMaxOrder];
  for (int i = 0; i < p_; ++i) a[i] = params[i];
  if (!StepDown(a, p_, z)) return false;
  for (int j = 0; j < q_; ++j) a[j] = -params[p_ + j];
  if (!StepDown(a, q_, z + p_)) return false;
  for (int i = 0; i < p_ + q_; ++i) z[i] = std::clamp(z[i], -kBox, kBox);
  z[p_ + q_] = params[p_ + q_];
  return std::isfinite(z[p_ + q_]);
}

void ArimaCss::FromInternal(const double* z, double* params, double* t) const {
  double a[kArimaMaxOrder];
  double da[kArimaMaxOrder * kArimaMaxOrder];
  if (t != nullptr) std::fill(t, t + k_ * k_, 0.0);  // column-major k x k
  auto block = [&](int n, int offset, double sign) {
    StepUp(z + offset, n, a, t == nullptr ? nullptr : da);
    for (int i = 0; i < n; ++i) params[offset + i] = sign * a[i];
    if (t == nullptr) return;
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        t[(offset + j) * k_ + offset + i] = sign * da[i * n + j];
      }
    }
  };
  block(p_, 0, 1.0);
  block(q_, p_, -1.0);
  params[p_ + q_] = z[p_ + q_];
  if (t != nullptr && has_mean_) t[(p_ + q_) * k_ + p_ + q_] = 1;
}

double ArimaCss::Minimize(int m, double* params, int* iterations) {
  // Levenberg-Marquardt over z = (reflection coefficients of phi and of
  // theta, mu) in the box |kappa| <= kBox (see arima.h). Coefficients
  // c(z) by the Levinson step-up, J_z = J_c T with T = dc/dz. Bound
  // variables whose gradient points out of the box are held (active set),
  // trial points are clipped to the box. Nielsen's damping update: lambda
  // shrinks by up to 3x after a good step (gain ratio rho near 1) and grows
  // by nu = 2, 4, 8, ... after failed ones.
  double z[kMaxParams];
  double z_trial[kMaxParams];
  double trial[kMaxParams];
  if (!ToInternal(params, z)) {
    std::fill(z, z + p_ + q_, 0.0);
    z[p_ + q_] =
        has_mean_ && std::isfinite(params[p_ + q_]) ? params[p_ + q_] : 0.0;
  }
  FromInternal(z, params, nullptr);  // the point z represents
  double t_buf[kMaxParams * kMaxParams];
  SmallMatrix t(k_, k_);
  SmallMatrix at(k_, k_);
  SmallMatrix a_z(k_, k_);
  SmallVector g_z(k_);
  // `s_known`: S at params with ws_->e and ws_->u already computed there.
  auto linearize = [&](double s_known) {
    const double s = Linearize(m, params, s_known);
    FromInternal(z, trial, t_buf);
    for (int j = 0; j < k_; ++j) {
      for (int i = 0; i < k_; ++i) t(i, j) = t_buf[j * k_ + i];
    }
    at.noalias() = ws_->jtj * t;
    a_z.noalias() = t.transpose() * at;
    g_z.noalias() = t.transpose() * ws_->jte;
    return s;
  };
  double s = linearize(-1);
  if (k_ == 0 || !(s > 0)) return s;
  double lambda = 1e-3;
  double nu = 2;
  bool held[kMaxParams];
  SmallMatrix a(k_, k_);
  SmallVector rhs(k_);
  SmallVector delta(k_);
  Eigen::LDLT<SmallMatrix> ldlt(k_);
  for (int it = 0; it < max_iterations_; ++it) {
    ++*iterations;
    // Active set: at the bound, with descent (-g) pointing outward.
    int free_count = 0;
    for (int i = 0; i < k_; ++i) {
      held[i] = i < p_ + q_ && std::fabs(z[i]) >= kBox && g_z[i] * z[i] < 0;
      free_count += !held[i];
    }
    if (free_count == 0) break;
    double max_diag = 0;
    for (int i = 0; i < k_; ++i) max_diag = std::max(max_diag, a_z(i, i));
    const double floor_diag =
        std::max(max_diag * 1e-12, std::numeric_limits<double>::min());
    a = a_z;
    rhs = -g_z;
    for (int i = 0; i < k_; ++i) {
      if (held[i]) {
        a.row(i).setZero();
        a.col(i).setZero();
        a(i, i) = 1;
        rhs[i] = 0;
      } else {
        a(i, i) += lambda * std::max(a_z(i, i), floor_diag) + floor_diag;
      }
    }
    ldlt.compute(a);
    delta = ldlt.solve(rhs);
    double s_trial = std::numeric_limits<double>::infinity();
    double predicted = 0;
    if (ldlt.info() == Eigen::Success && delta.allFinite()) {
      for (int i = 0; i < k_; ++i) {
        z_trial[i] = z[i] + delta[i];
        if (i < p_ + q_) z_trial[i] = std::clamp(z_trial[i], -kBox, kBox);
        delta[i] = z_trial[i] - z[i];
      }
      if (!has_mean_) z_trial[p_ + q_] = z[p_ + q_];
      FromInternal(z_trial, trial, nullptr);
      // S(z + delta) ~ S + 2 g'delta + delta' A delta.
      predicted = -(2 * g_z.dot(delta) + delta.dot(a_z * delta));
      s_trial = Residuals(m, trial, ws_->e_trial.data());
    }
    if (!(s_trial < s)) {
      lambda *= nu;
      nu *= 2;
      if (lambda > kMaxLambda) break;
      continue;
    }
    const double relative = (s - s_trial) / s;
    const double rho = predicted > 0 ? (s - s_trial) / predicted : 0;
    const double r = 2 * rho - 1;
    lambda = std::max(lambda * std::max(1.0 / 3, 1 - r * r * r), 1e-12);
    nu = 2;
    std::copy(z_trial, z_trial + p_ + q_ + 1, z);
    std::copy(trial, trial + p_ + q_ + 1, params);
    s = s_trial;
    std::swap(ws_->e, ws_->e_trial);  // ws_->u is already the trial's
    if (relative < tolerance_ || !(s > 0)) break;
    s = linearize(s);
  }
  return s;
}

void ArimaCss::StartValues(int m, bool ar_only, double* params) {
  std::fill(params, params + p_ + q_ + 1, 0.0);
  const double* w = ws_->w.data();
  double mu = 0;
  if (has_mean_) {
    for (int t = 0; t < m; ++t) mu += w[t];
    mu /= m;
  }
  params[p_ + q_] = mu;
  if (p_ == 0 && (q_ == 0 || ar_only)) return;
  double* u = ws_->u.data();
  for (int t = 0; t < m; ++t) u[t] = w[t] - mu;
  Eigen::MatrixXd& x = ws_->design;
  Eigen::VectorXd& y = ws_->target;
  // Least squares of y[0..rows) on x[0..rows, 0..cols) with a tiny ridge;
  // false if the system is degenerate.
  auto least_squares = [&](int rows, int cols, double* out) {
    const auto xb = x.topLeftCorner(rows, cols);
    SmallMatrix a(cols, cols);
    a.noalias() = xb.transpose() * xb;
    SmallVector b(cols);
    b.noalias() = xb.transpose() * y.head(rows);
    const double ridge =
        1e-10 * a.trace() / cols + std::numeric_limits<double>::min();
    for (int i = 0; i < cols; ++i) a(i, i) += ridge;
    Eigen::LDLT<SmallMatrix> ldlt(a);
    SmallVector sol = ldlt.solve(b);
    if (ldlt.info() != Eigen::Success || !sol.allFinite()) return false;
    for (int i = 0; i < cols; ++i) out[i] = sol[i];
    return true;
  };
  // Pure AR(p) least squares.
  auto ar_start = [&]() {
    const int rows = m - p_;
    if (p_ == 0 || rows < 2 * p_ + 2) return;
    for (int r = 0; r < rows; ++r) {
      y[r] = u[p_ + r];
      for (int i = 1; i <= p_; ++i) x(r, i - 1) = u[p_ + r - i];
    }
    if (!least_squares(rows, p_, params)) std::fill(params, params + p_, 0.0);
  };
  if (q_ == 0 || ar_only) {
    ar_start();
    return;
  }
  // Hannan-Rissanen: long AR(L), its residuals, then the ARMA regression.
  const int long_order =
      std::min({std::max(2 * std::max(p_, q_), 10), kMaxLongAr, (m - 1) / 4});
  const int t0 = std::max(p_, long_order + q_);
  if (long_order < 1 || m - long_order < 2 * long_order + 2 ||
      m - t0 < 2 * (p_ + q_) + 5) {
    ar_start();
    return;
  }
  double a[kMaxLongAr];
  {
    const int rows = m - long_order;
    for (int r = 0; r < rows; ++r) {
      y[r] = u[long_order + r];
      for (int i = 1; i <= long_order; ++i) x(r, i - 1) = u[long_order + r - i];
    }
    if (!least_squares(rows, long_order, a)) {
      ar_start();
      return;
    }
  }
  double* ehat = ws_->ehat.data();
  for (int t = 0; t < m; ++t) {
    if (t < long_order) {
      ehat[t] = 0;
      continue;
    }
    double r = u[t];
    for (int i = 1; i <= long_order; ++i) r -= a[i - 1] * u[t - i];
    ehat[t] = r;
  }
  const int rows = m - t0;
  for (int r = 0; r < rows; ++r) {
    const int t = t0 + r;
    y[r] = u[t];
    for (int i = 1; i <= p_; ++i) x(r, i - 1) = u[t - i];
    for (int j = 1; j <= q_; ++j) x(r, p_ + j - 1) = ehat[t - j];
  }
  if (!least_squares(rows, p_ + q_, params)) {
    std::fill(params, params + p_ + q_, 0.0);
    ar_start();
  }
}

void ArimaCss::SaveLastResiduals(int m, const double* e) {
  for (int j = 0; j < q_; ++j) {
    last_e_[j] = m - 1 - j >= 0 ? e[m - 1 - j] : 0.0;
  }
}

double ArimaCss::Css(absl::Span<const double> x,
                     absl::Span<const double> params) {
  const int m = Difference(x);
  if (m == 0) {
    std::fill(last_e_, last_e_ + kArimaMaxOrder, 0.0);
    return 0;
  }
  const double s = Residuals(m, params.data(), ws_->e.data());
  SaveLastResiduals(m, ws_->e.data());
  return s;
}

ArimaFitStats ArimaCss::Fit(absl::Span<const double> x, bool warm_start,
                            absl::Span<double> params) {
  ArimaFitStats stats;
  double* out = params.data();
  const int m = Difference(x);
  // Degenerate: too short for the parameters, or a flat differenced series.
  bool degenerate = m - p_ < k_ + 1;
  if (!degenerate) {
    const double* w = ws_->w.data();
    double mean = 0;
    for (int t = 0; t < m; ++t) mean += w[t];
    mean /= m;
    double ss = 0;
    for (int t = 0; t < m; ++t) ss += (w[t] - mean) * (w[t] - mean);
    double scale = 0;
    for (double v : x) scale = std::max(scale, std::fabs(v));
    const double sd = std::sqrt(ss / m);
    degenerate = !(sd > 1e-12 * scale) || !std::isfinite(ss);
  }
  if (degenerate) {
    stats.degenerate = true;
    std::fill(out, out + p_ + q_ + 1, 0.0);
    if (has_mean_ && m > 0) {
      // w_0 + mean(w - w_0): exact for a constant series.
      const double w0 = ws_->w[0];
      double sum = 0;
      for (int t = 0; t < m; ++t) sum += ws_->w[t] - w0;
      out[p_ + q_] = w0 + sum / m;
    }
    if (m > 0) {
      stats.css = stats.start_css = Residuals(m, out, ws_->e.data());
      SaveLastResiduals(m, ws_->e.data());
    } else {
      std::fill(last_e_, last_e_ + kArimaMaxOrder, 0.0);
    }
    return stats;
  }
  if (!has_mean_) out[p_ + q_] = 0;
  if (warm_start && Feasible(out)) {
    stats.warm_start = true;
    stats.start_css = Residuals(m, out, ws_->e.data());
    Minimize(m, out, &stats.iterations);
  } else {
    // Cold: Hannan-Rissanen, pure AR(p) least squares and zero (phi = theta
    // = 0) starts; the lowest S wins. start_css is S at the first.
    StartValues(m, /*ar_only=*/false, out);
    MakeFeasible(out);
    stats.start_css = Residuals(m, out, ws_->e.data());
    double best = Minimize(m, out, &stats.iterations);
    double other[kMaxParams];
    for (int start = 1; start <= 2 && q_ > 0; ++start) {
      if (start == 1 && p_ == 0) continue;  // the same as the zero start
      if (start == 1) {
        StartValues(m, /*ar_only=*/true, other);
        MakeFeasible(other);
      } else {
        std::fill(other, other + p_ + q_ + 1, 0.0);
        other[p_ + q_] = out[p_ + q_];
      }
      const double s = Minimize(m, other, &stats.iterations);
      if (s < best) {
        std::copy(other, other + p_ + q_ + 1, out);
        best = s;
      }
    }
  }
  stats.css = Residuals(m, out, ws_->e.data());
  SaveLastResiduals(m, ws_->e.data());
  return stats;
}

void ArimaCss::ForecastPath(absl::Span<const double> x,
                            absl::Span<const double> params,
                            absl::Span<double> path) {
  const int n = static_cast<int>(x.size());
  const int m = Difference(x);
  double uh[kArimaMaxOrder] = {};
  double eh[kArimaMaxOrder] = {};
  double lev[2] = {};
  const double mu = params[p_ + q_];
  if (m > 0) {
    Residuals(m, params.data(), ws_->e.data());
    SaveLastResiduals(m, ws_->e.data());
    for (int i = 0; i < p_; ++i) {
      uh[i] = m - 1 - i >= 0 ? ws_->w[m - 1 - i] - mu : 0.0;
    }
    std::copy(last_e_, last_e_ + q_, eh);
  }
  if (n >= 1 && d_ >= 1) lev[0] = x[n - 1];
  if (n >= 2 && d_ >= 2) lev[1] = x[n - 1] - x[n - 2];
  RunForecast(p_, d_, q_, params.data(), params.data() + p_, mu, uh, eh, lev,
              static_cast<int>(path.size()),
              [&](int s, double v) { path[s] = v; });
}

// ---------------------------------------------------------------------------
// The predictor

namespace {

class ArimaPredictor final : public Predictor {
 public:
  ArimaPredictor(int m, const ArimaOptions& o)
      : m_(m),
        o_(o),
        np_(o.p + o.q + 1),
        min_fit_(ArimaMinFitObservations(o)),
        name_(absl::StrCat("arima(", o.p, ",", o.d, ",", o.q, ")",
                           o.d >= 1 && o.drift ? "+drift" : "")),
        ring_(static_cast<size_t>(m) * o.fit_window, 0.0),
        sum_(m, 0.0),
        params_(static_cast<size_t>(m) * np_, 0.0),
        eh_(static_cast<size_t>(m) * std::max(o.q, 1), 0.0),
        x_(o.fit_window, 0.0),
        css_(o) {}

  const std::string& name() const override { return name_; }
  int num_experts() const override { return m_; }

  void Observe(absl::Span<const double> p) override {
    const int64_t slot = count_ % o_.fit_window;
    std::copy(p.begin(), p.end(), ring_.begin() + slot * m_);
    ++count_;
    if (count_ <= min_fit_) {
      const double* src = p.data();
      double* sum = sum_.data();
      for (int e = 0; e < m_; ++e) sum[e] += src[e];
    }
  }

  bool refit_due() const override {
    return count_ >= min_fit_ &&
           (!fitted_ || count_ - fit_count_ >= o_.refit_every);
  }

  void Refresh() override {
    if (count_ < min_fit_) return;
    if (!fitted_ || count_ - fit_count_ >= o_.refit_every) {
      Refit();
    } else if (resid_count_ < count_) {
      CatchUp();
    }
  }

  void Forecast(int horizon, absl::Span<double> out) override {
    Refresh();
    if (!fitted_) {
      Fallback(out.data(), 1);
      return;
    }
    const double inv_h = 1.0 / horizon;
    for (int e = 0; e < m_; ++e) {
      // Sum the departures from the last level (exact for a flat forecast).
      const double last = X(count_ - 1, e);
      double sum = 0;
      RunExpert(e, horizon, [&](int, double v) { sum += v - last; });
      out[e] = last + sum * inv_h;
    }
  }

  void ForecastPath(int steps, absl::Span<double> out) override {
    Refresh();
    if (!fitted_) {
      Fallback(out.data(), steps);
      return;
    }
    double* base = out.data();
    for (int e = 0; e < m_; ++e) {
      RunExpert(e, steps, [&](int s, double v) {
        base[static_cast<size_t>(s) * m_ + e] = v;
      });
    }
  }

  int64_t MemoryBytes() const override {
    return static_cast<int64_t>(sizeof(*this)) +
           8 * static_cast<int64_t>(ring_.size() + sum_.size() +
                                    params_.size() + eh_.size() + x_.size()) +
           css_.MemoryBytes();
  }

  const ArimaRefitStats& stats() const { return stats_; }

  // Snapshots carry the fitted parameters, the residuals and the refit
  // schedule (count_, fit_count_, resid_count_), so a restored predictor
  // refits exactly when the saved one would have and never at restore.
  absl::Status SaveTo(internal::SnapshotWriter& out) const override {
    out.PutI32(o_.fit_window);
    out.PutI32(np_);
    out.PutI32(std::max(o_.q, 1));
    out.PutI64(count_);
    out.PutI64(fit_count_);
    out.PutI64(resid_count_);
    out.PutBool(fitted_);
    // Step s lives in ring row s % fit_window, so the occupied rows are
    // [0, min(count_, fit_window)).
    const int64_t rows = std::min<int64_t>(count_, o_.fit_window);
    out.PutRawDoubles(ring_.data(), static_cast<size_t>(rows) * m_);
    out.PutDoubles(sum_);
    out.PutDoubles(params_);
    out.PutDoubles(eh_);
    out.PutI32(css_.workspace_capacity());
    out.PutI64(stats_.refits);
    out.PutI64(stats_.last_iterations);
    out.PutI32(stats_.last_warm);
    out.PutI32(stats_.last_degenerate);
    return absl::OkStatus();
  }

  void LoadFrom(internal::SnapshotReader& in) override {
    const int fit_window = in.I32("fit_window");
    const int np = in.I32("params_per_expert");
    const int nq = in.I32("residuals_per_expert");
    if (in.ok() && (fit_window != o_.fit_window || np != np_ ||
                    nq != std::max(o_.q, 1))) {
      in.Fail("shape", absl::StrCat("saved for fit_window ", fit_window, ", ",
                                    np, " parameters and ", nq,
                                    " residuals per expert; this predictor has ",
                                    o_.fit_window, ", ", np_, " and ",
                                    std::max(o_.q, 1)));
      return;
    }
    const int64_t kMax = int64_t{1} << 62;
    const int64_t count = in.I64In("count", 0, kMax);
    const int64_t fit_count = in.I64In("fit_count", 0, count);
    const int64_t resid_count = in.I64In("resid_count", fit_count, count);
    const bool fitted = in.Bool("fitted");
    if (in.ok() && fitted && fit_count < min_fit_) {
      in.Fail("fit_count", absl::StrCat("a fit at ", fit_count,
                                        " steps, before the minimum ", min_fit_));
    }
    if (!in.ok()) return;
    const int64_t rows = std::min<int64_t>(count, o_.fit_window);
    in.RawDoubles("ring", ring_.data(), static_cast<size_t>(rows) * m_);
    in.DoublesExact("sum", absl::MakeSpan(sum_));
    in.DoublesExact("params", absl::MakeSpan(params_));
    in.DoublesExact("residuals", absl::MakeSpan(eh_));
    const int capacity = in.IntIn("workspace_capacity", 0, o_.fit_window);
    ArimaRefitStats stats;
    stats.refits = in.I64("refits");
    stats.last_iterations = in.I64("last_iterations");
    stats.last_warm = in.I32("last_warm");
    stats.last_degenerate = in.I32("last_degenerate");
    if (!in.ok()) return;
    if (capacity > 0) css_.ReserveWorkspace(capacity);
    count_ = count;
    fit_count_ = fit_count;
    resid_count_ = resid_count;
    fitted_ = fitted;
    stats_ = stats;
  }

 private:
  double X(int64_t step, int e) const {
    return ring_[static_cast<size_t>(step % o_.fit_window) * m_ + e];
  }

  void Fallback(double* out, int rows) const {
    for (int e = 0; e < m_; ++e) {
      const double v = count_ == 0 ? 1.0 / m_ : sum_[e] / count_;
      for (int s = 0; s < rows; ++s) out[static_cast<size_t>(s) * m_ + e] = v;
    }
  }

  void Refit() {
    const int n = static_cast<int>(std::min<int64_t>(count_, o_.fit_window));
    const int64_t first = count_ - n;
    stats_.last_iterations = 0;
    stats_.last_warm = 0;
    stats_.last_degenerate = 0;
    for (int e = 0; e < m_; ++e) {
      for (int i = 0; i < n; ++i) x_[i] = X(first + i, e);
      double* params = params_.data() + static_cast<size_t>(e) * np_;
      const ArimaFitStats fit = css_.Fit(absl::MakeConstSpan(x_.data(), n),
                                         fitted_, absl::MakeSpan(params, np_));
      stats_.last_iterations += fit.iterations;
      stats_.last_warm += fit.warm_start;
      stats_.last_degenerate += fit.degenerate;
      const absl::Span<const double> last_e = css_.last_residuals();
      std::copy(last_e.begin(), last_e.end(),
                eh_.begin() + static_cast<size_t>(e) * std::max(o_.q, 1));
    }
    ++stats_.refits;
    fitted_ = true;
    fit_count_ = resid_count_ = count_;
  }

  // Extends each expert's residuals e_t over the steps since resid_count_.
  void CatchUp() {
    const int p = o_.p, d = o_.d, q = o_.q;
    const int64_t oldest = count_ - std::min<int64_t>(count_, o_.fit_window);
    int64_t first_new = resid_count_;
    const bool restart = first_new - p - d < oldest;
    if (restart) first_new = oldest + p + d;  // residuals restart at 0
    const int64_t start = first_new - p - d;
    const int len = static_cast<int>(count_ - start);
    for (int e = 0; e < m_; ++e) {
      double* eh = eh_.data() + static_cast<size_t>(e) * std::max(q, 1);
      if (restart) std::fill(eh, eh + q, 0.0);
      const double* params = params_.data() + static_cast<size_t>(e) * np_;
      const double mu = params[p + q];
      // x_ holds the levels, then in place their d-th differences minus mu.
      for (int i = 0; i < len; ++i) x_[i] = X(start + i, e);
      for (int k = 0; k < d; ++k) {
        for (int i = 0; i + 1 < len - k; ++i) x_[i] = x_[i + 1] - x_[i];
      }
      const int m = len - d;
      for (int i = 0; i < m; ++i) x_[i] -= mu;
      for (int i = p; i < m; ++i) {
        double r = x_[i];
        for (int k = 1; k <= p; ++k) r -= params[k - 1] * x_[i - k];
        for (int j = q; j >= 1; --j) r -= params[p + j - 1] * eh[j - 1];
        for (int j = q - 1; j > 0; --j) eh[j] = eh[j - 1];
        if (q > 0) eh[0] = r;
      }
    }
    resid_count_ = count_;
  }

  // Point forecasts of expert e for the next `steps` steps, into sink.
  template <typename Sink>
  void RunExpert(int e, int steps, Sink&& sink) {
    const int p = o_.p, d = o_.d, q = o_.q;
    const double* params = params_.data() + static_cast<size_t>(e) * np_;
    const double mu = params[p + q];
    // The last p + d levels, differenced in place; lev[k] = last value of the
    // k-times differenced series.
    double buf[kArimaMaxOrder + 2] = {};
    double lev[2] = {};
    double uh[kArimaMaxOrder];
    double eh[kArimaMaxOrder];
    const int g = p + d;
    for (int i = 0; i < g; ++i) buf[i] = X(count_ - g + i, e);
    for (int k = 0; k < d; ++k) {
      lev[k] = buf[g - k - 1];
      for (int i = 0; i + 1 < g - k; ++i) buf[i] = buf[i + 1] - buf[i];
    }
    for (int i = 0; i < p; ++i) uh[i] = buf[p - 1 - i] - mu;
    std::copy(eh_.data() + static_cast<size_t>(e) * std::max(q, 1),
              eh_.data() + static_cast<size_t>(e) * std::max(q, 1) + q, eh);
    RunForecast(p, d, q, params, params + p, mu, uh, eh, lev, steps,
                std::forward<Sink>(sink));
  }

  const int m_;
  const ArimaOptions o_;
  const int np_;
  const int min_fit_;
  const std::string name_;
  std::vector<double> ring_;    // fit_window x M, step s in row s % W
  std::vector<double> sum_;     // sum of steps seen, while count_ <= min_fit_
  std::vector<double> params_;  // M x (p + q + 1)
  std::vector<double> eh_;      // M x q: residuals, newest first
  std::vector<double> x_;       // one expert's window (scratch)
  ArimaCss css_;
  int64_t count_ = 0;        // steps observed
  int64_t fit_count_ = 0;    // count_ at the last fit
  int64_t resid_count_ = 0;  // residuals cover steps < resid_count_
  bool fitted_ = false;
  ArimaRefitStats stats_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Predictor>> MakeArimaPredictor(
    int num_experts, const ArimaOptions& options) {
  if (num_experts < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_experts must be >= 2, got ", num_experts));
  }
  const absl::Status s = ValidateArimaOptions(options);
  if (!s.ok()) return s;
  return std::unique_ptr<Predictor>(
      std::make_unique<ArimaPredictor>(num_experts, options));
}

const ArimaRefitStats* GetArimaRefitStats(const Predictor& predictor) {
  const auto* a = dynamic_cast<const ArimaPredictor*>(&predictor);
  return a == nullptr ? nullptr : &a->stats();
}

}  // namespace moecast
