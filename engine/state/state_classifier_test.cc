#include "engine/state/state_classifier.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

// Counts of one step: n tokens, each picking k distinct experts by
// Gumbel-top-k on log(weights) (sampling without replacement).
std::vector<double> SampleStep(const std::vector<double>& weights, int n,
                               int k, std::mt19937& rng) {
  const int m = static_cast<int>(weights.size());
  std::vector<double> logw(m);
  for (int e = 0; e < m; ++e) logw[e] = std::log(weights[e]);
  std::uniform_real_distribution<double> u(1e-12, 1.0);
  std::vector<double> counts(m, 0.0);
  std::vector<std::pair<double, int>> keys(m);
  for (int t = 0; t < n; ++t) {
    for (int e = 0; e < m; ++e) keys[e] = {logw[e] - std::log(-std::log(u(rng))), e};
    std::partial_sort(keys.begin(), keys.begin() + k, keys.end(),
                      [](auto& a, auto& b) { return a.first > b.first; });
    for (int j = 0; j < k; ++j) counts[keys[j].second] += 1;
  }
  return counts;
}

std::vector<double> Proportions(const std::vector<double>& c) {
  double s = 0;
  for (double v : c) s += v;
  std::vector<double> p(c.size());
  for (size_t e = 0; e < c.size(); ++e) p[e] = c[e] / s;
  return p;
}

std::vector<double> Skewed(int m) {
  std::vector<double> w(m);
  for (int e = 0; e < m; ++e) w[e] = 1.0 / (1 + e);  // Zipf-like
  return w;
}

TEST(StateClassifierTest, PureSamplingNoiseIsStableAtAnyTokenCountAndTopK) {
  const int m = 16;
  for (int k : {1, 2, 8}) {
    for (int n : {1, 16, 512, 4096}) {
      SCOPED_TRACE(::testing::Message() << "k=" << k << " n=" << n);
      std::mt19937 rng(1000 * k + n);
      StateOptions options;
      StateClassifier c(m, k, options);
      std::vector<double> w = Skewed(m);
      const int steps = 700;
      int transitions_to_transient = 0;
      int64_t stable_at = -1;
      for (int t = 0; t < steps; ++t) {
        auto p = Proportions(SampleStep(w, n, k, rng));
        auto tr = c.Observe(t, p, n, 0);
        if (tr && tr->to == LoadState::kStable && stable_at < 0) stable_at = t;
        if (tr && tr->to == LoadState::kTransient) ++transitions_to_transient;
      }
      // First decision once the window is full and the dwell has passed.
      EXPECT_EQ(stable_at, options.min_dwell_steps - 1);
      EXPECT_EQ(transitions_to_transient, 0);
      EXPECT_EQ(c.state(), LoadState::kStable);
      StateSignals s = c.Signals();
      ASSERT_TRUE(s.drift_ratio.has_value());
      EXPECT_GT(*s.drift_ratio, 0.7);
      EXPECT_LT(*s.drift_ratio, 1.4);
      // Pure sampling noise is at the sampling floor: dispersion about 1.
      ASSERT_TRUE(s.dispersion.has_value());
      EXPECT_GT(*s.dispersion, 0.7);
      EXPECT_LT(*s.dispersion, 1.4);
      ASSERT_TRUE(s.half_drift.has_value());
      EXPECT_LT(*s.half_drift, 3.0);
    }
  }
}

// Weights whose logits take a random walk of the given step size.
class DriftingLoad {
 public:
  explicit DriftingLoad(int m, uint32_t seed) : logits_(m, 0.0), rng_(seed) {}
  std::vector<double> Next(double step_size) {
    std::normal_distribution<double> d(0, step_size);
    for (double& z : logits_) z += d(rng_);
    std::vector<double> w(logits_.size());
    for (size_t e = 0; e < w.size(); ++e) w[e] = std::exp(logits_[e]);
    return w;
  }
  std::mt19937& rng() { return rng_; }

 private:
  std::vector<double> logits_;
  std::mt19937 rng_;
};

TEST(StateClassifierTest, DetectsSwitchesBetweenDriftAndStabilityWithinDelay) {
  // 0..999 drifting (the load distribution moves every step), 1000..1999
  // fixed, 2000..2999 drifting again. 512 tokens per step, top-2 of 16.
  const int m = 16, k = 2, n = 512;
  DriftingLoad load(m, 42);
  StateOptions options;
  StateClassifier c(m, k, options);
  std::vector<StateTransition> transitions;
  std::vector<double> fixed;
  for (int t = 0; t < 3000; ++t) {
    std::vector<double> w;
    if (t < 1000 || t >= 2000) {
      w = load.Next(0.08);
    } else {
      if (fixed.empty()) fixed = load.Next(0.0);
      w = fixed;
    }
    auto p = Proportions(SampleStep(w, n, k, load.rng()));
    if (auto tr = c.Observe(t, p, n, 3)) transitions.push_back(*tr);
  }
  ASSERT_EQ(transitions.size(), 2u) << "expected exactly stable, then transient";
  EXPECT_EQ(transitions[0].to, LoadState::kStable);
  EXPECT_EQ(transitions[0].layer, 3);
  EXPECT_LT(transitions[0].drift_ratio, options.leave_threshold);
  // Documented delays (docs/states.md): stable within W + 50 steps of the
  // switch, transient within W / 2.
  EXPECT_GE(transitions[0].step, 1000);
  EXPECT_LE(transitions[0].step, 1000 + options.window + 50);
  EXPECT_EQ(transitions[1].to, LoadState::kTransient);
  EXPECT_GT(transitions[1].drift_ratio, options.enter_threshold);
  EXPECT_GE(transitions[1].step, 2000);
  EXPECT_LE(transitions[1].step, 2000 + options.window / 2);
}

TEST(StateClassifierTest, DwellTimeHoldsAState) {
  const int m = 4;
  StateOptions options;
  options.window = 10;
  options.min_dwell_steps = 50;
  StateClassifier c(m, 1, options);
  std::vector<double> p = {0.25, 0.25, 0.25, 0.25};
  std::optional<StateTransition> tr;
  int t = 0;
  for (; t < 50 && !tr; ++t) tr = c.Observe(t, p, 100, 0);
  ASSERT_TRUE(tr.has_value());
  EXPECT_EQ(tr->step, 49);
  // A trend right after the switch cannot flip the state before the dwell.
  for (; t < 99; ++t) {
    const double a = 0.1 + 0.5 * (t - 50) / 50.0;
    std::vector<double> q = {a, (1 - a) / 3, (1 - a) / 3, (1 - a) / 3};
    EXPECT_FALSE(c.Observe(t, q, 100, 0).has_value()) << t;
  }
  std::vector<double> q = {0.7, 0.1, 0.1, 0.1};
  auto flip = c.Observe(99, q, 100, 0);
  ASSERT_TRUE(flip.has_value());
  EXPECT_EQ(flip->to, LoadState::kTransient);
}

TEST(StateClassifierTest, SignalsMatchDirectComputation) {
  StateOptions options;
  options.window = 20;
  StateClassifier c(2, 1, options);
  std::vector<double> a;
  for (int t = 0; t < 30; ++t) {
    const double x = 0.5 + 0.1 * std::sin(t);
    a.push_back(x);
    c.Observe(t, std::vector<double>{x, 1 - x}, 1000, 0);
  }
  StateSignals s = c.Signals();
  EXPECT_EQ(s.window_steps, 20);
  auto stats = [&](int n, double* var, double* range) {
    double sum = 0, sq = 0, lo = 1, hi = 0;
    for (int i = 30 - n; i < 30; ++i) {
      // Stored as float.
      const double x = static_cast<float>(a[i]);
      sum += x;
      sq += x * x;
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
    *var = (sq - sum * sum / n) / (n - 1);
    *range = hi - lo;
  };
  double var, range;
  stats(10, &var, &range);
  EXPECT_NEAR(s.variance_10[0], var, 1e-9);
  EXPECT_NEAR(s.range_10[0], range, 1e-9);
  stats(20, &var, &range);
  EXPECT_NEAR(s.variance_w[0], var, 1e-9);
  EXPECT_NEAR(s.range_w[0], range, 1e-9);
}

TEST(StateClassifierTest, AShiftMakesTheLayerTransientAndRestartsTheDwell) {
  StateOptions options;
  options.window = 10;
  options.min_dwell_steps = 50;
  StateClassifier c(3, 1, options);
  const std::vector<double> p = {0.2, 0.3, 0.5};
  int t = 0;
  for (; t < 100; ++t) c.Observe(t, p, 10, 0);
  ASSERT_EQ(c.state(), LoadState::kStable);
  // Stable from its first decision: every step observed is stable history.
  EXPECT_EQ(c.StableHistory(100), 100);
  std::optional<StateTransition> tr = c.OnShift(t, 2);
  ASSERT_TRUE(tr.has_value());
  EXPECT_EQ(tr->step, 100);
  EXPECT_EQ(tr->layer, 2);
  EXPECT_EQ(tr->from, LoadState::kStable);
  EXPECT_EQ(tr->to, LoadState::kTransient);
  EXPECT_EQ(c.state(), LoadState::kTransient);
  EXPECT_EQ(c.StableHistory(100), 0);
  EXPECT_EQ(c.Signals().state_since_step, 100);
  // A second shift while transient changes nothing but the dwell: the
  // constant load turns the layer stable min_dwell_steps after the latest.
  const std::vector<double> q = {0.5, 0.3, 0.2};
  for (; t < 120; ++t) EXPECT_FALSE(c.Observe(t, q, 10, 0).has_value()) << t;
  EXPECT_FALSE(c.OnShift(t, 2).has_value());
  std::optional<StateTransition> back;
  for (; t < 300 && !back; ++t) back = c.Observe(t, q, 10, 0);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->to, LoadState::kStable);
  EXPECT_EQ(back->step, 120 + options.min_dwell_steps - 1);
  EXPECT_EQ(c.StableHistory(t), 0);  // none yet: the steps before drifted
  const int64_t observed = t;
  for (int i = 0; i < 10; ++i, ++t) c.Observe(t, q, 10, 0);
  EXPECT_EQ(c.StableHistory(observed + 10), 10);
}

TEST(StateClassifierTest, ConstantLoadIsStable) {
  StateOptions options;
  StateClassifier c(3, 1, options);
  for (int t = 0; t < 300; ++t) c.Observe(t, std::vector<double>{0.2, 0.3, 0.5}, 10, 0);
  EXPECT_EQ(c.state(), LoadState::kStable);
  EXPECT_EQ(*c.drift_ratio(), 1.0);
}

TEST(StateClassifierTest, BadOptions) {
  StateOptions o;
  o.window = 5;
  EXPECT_THAT(ValidateStateOptions(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("window = 5")));
  o = StateOptions();
  o.leave_threshold = 0.5;
  EXPECT_THAT(ValidateStateOptions(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("leave_threshold = 0.5")));
  o = StateOptions();
  o.enter_threshold = 1.2;
  EXPECT_THAT(ValidateStateOptions(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("enter_threshold = 1.2")));
  o = StateOptions();
  o.min_dwell_steps = -1;
  EXPECT_THAT(ValidateStateOptions(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("min_dwell_steps")));
  o = StateOptions();
  o.job_transient_fraction = 1.0;
  EXPECT_THAT(ValidateStateOptions(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                                HasSubstr("job_transient_fraction")));
  EXPECT_OK(ValidateStateOptions(StateOptions()));
}

TEST(JobStateTest, TransientWhileMoreThanTheFractionIs) {
  using S = LoadState;
  EXPECT_EQ(JobState({S::kTransient, S::kStable}, 0.5), S::kStable);
  EXPECT_EQ(JobState({S::kTransient, S::kTransient, S::kStable}, 0.5),
            S::kTransient);
  EXPECT_EQ(JobState({S::kTransient, S::kStable, S::kStable}, 0.0),
            S::kTransient);
  EXPECT_EQ(JobState({S::kStable, S::kStable}, 0.0), S::kStable);
}

}  // namespace
}  // namespace moecast
