// Generators shared by the kernels' tests: fresh seeds, proportion steps,
// ARMA series, random LSTM models and gamma windows. Test-only.
#ifndef MOECAST_KERNELS_TESTING_UTIL_H_
#define MOECAST_KERNELS_TESTING_UTIL_H_

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "engine/health/gamma/gamma.h"
#include "engine/predict/lstm/lstm.h"
#include "kernels/lstm_flat.h"

namespace moecast {
namespace kernels {
namespace testing_util {

// The seed of a randomised test (printed by the tests on failure): fixed, so
// that a run is reproducible and CI does not depend on the draw, unless
// MOECAST_TEST_SEED says otherwise: a number, or "random" for a new seed
// every run (to explore; a failing seed is then rerun with its number).
inline uint64_t FreshSeed() {
  const char* env = std::getenv("MOECAST_TEST_SEED");
  if (env == nullptr || *env == '\0') return 20261207;
  if (std::string(env) == "random") {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  return std::strtoull(env, nullptr, 10);
}

// g groups of m proportions (each group sums to 1), concatenated.
inline std::vector<double> RandomProportions(std::mt19937_64* rng, int g, int m) {
  std::normal_distribution<double> z(0.0, 0.7);
  std::vector<double> x(static_cast<size_t>(g) * m);
  for (int i = 0; i < g; ++i) {
    double sum = 0;
    for (int e = 0; e < m; ++e) sum += (x[i * m + e] = std::exp(z(*rng)));
    for (int e = 0; e < m; ++e) x[i * m + e] /= sum;
  }
  return x;
}

// Levels of a well-conditioned ARMA(1,1) (variant picks the coefficients)
// around 0.1, integrated d times.
inline std::vector<double> SimulateArma(std::mt19937_64* rng, int n, int d, int variant) {
  static const double kPhi[] = {0.5, -0.3, 0.7, 0.2};
  static const double kTheta[] = {0.3, -0.4, 0.0, 0.5};
  const double phi = kPhi[variant % 4], theta = kTheta[(variant / 4) % 4];
  std::normal_distribution<double> noise(0.0, 0.01);
  const int burn = 200;
  std::vector<double> u(n + burn, 0.0);
  double e_prev = 0;
  for (int t = 1; t < n + burn; ++t) {
    const double e = noise(*rng);
    u[t] = phi * u[t - 1] + e + theta * e_prev;
    e_prev = e;
  }
  std::vector<double> x(u.begin() + burn, u.end());
  for (int k = 0; k < d; ++k) {
    double level = 0.1;
    for (double& v : x) v = (level += v);
  }
  if (d == 0) {
    for (double& v : x) v += 0.1;
  }
  return x;
}

inline LstmModel RandomLstmModel(std::mt19937_64* rng, int m, int h, int layers) {
  std::uniform_real_distribution<float> w(-0.5f, 0.5f);
  LstmModel model;
  model.num_experts = m;
  model.hidden = h;
  model.lookback = 4;
  model.block = 3;
  model.anchor_window = 5;
  model.horizons = {1, 4, 10};
  model.input_scale = 0.05f;
  model.output_scale = 0.02f;
  auto fill = [&](std::vector<float>* v, size_t n) {
    v->resize(n);
    for (float& x : *v) x = w(*rng);
  };
  for (int l = 0; l < layers; ++l) {
    LstmModel::Layer layer;
    fill(&layer.weight_ih, static_cast<size_t>(4) * h * (l == 0 ? m : h));
    fill(&layer.weight_hh, static_cast<size_t>(4) * h * h);
    fill(&layer.bias_ih, 4 * h);
    fill(&layer.bias_hh, 4 * h);
    model.layers.push_back(std::move(layer));
  }
  fill(&model.head_weight, model.horizons.size() * m * h);
  fill(&model.head_bias, model.horizons.size() * m);
  return model;
}

inline core::LstmShapeHD LstmShapeOf(const LstmModel& model) {
  return FlattenLstm(model).shape;
}
inline std::vector<float> FlattenLstmParams(const LstmModel& model) {
  return FlattenLstm(model).params;
}

// A window of `steps` steps: quality logits with sd 0.3, counts near the
// softmax loads (each count <= N and their sum <= K N); with `zeros`, experts
// 0 and 1 get no assignments.
inline GammaWindow RandomGammaWindow(std::mt19937_64* rng, int m, int k, int steps,
                                     bool zeros) {
  std::normal_distribution<double> z(0.0, 0.3);
  std::uniform_real_distribution<double> jitter(0.8, 1.0);
  GammaWindow w;
  w.num_experts = m;
  std::vector<double> base(m);
  for (double& v : base) v = z(*rng);
  for (int t = 0; t < steps; ++t) {
    const double tokens = 4096;
    std::vector<double> logit(m), p(m), c(m);
    double sum = 0;
    for (int e = 0; e < m; ++e) {
      logit[e] = base[e] + 0.1 * z(*rng);
      sum += (p[e] = std::exp(logit[e]));
    }
    for (int e = 0; e < m; ++e) {
      c[e] = zeros && e < 2 ? 0.0 : std::floor(k * tokens * p[e] / sum * jitter(*rng));
    }
    w.AddStep(tokens, c, logit);
  }
  return w;
}

}  // namespace testing_util
}  // namespace kernels
}  // namespace moecast

#endif  // MOECAST_KERNELS_TESTING_UTIL_H_
