// The cheap predictors of design section 4: last value, sliding-window
// average, exponential moving average and damped Holt. Each keeps O(M) (or
// O(W*M) for windows) state per stream and updates in O(M) per step.
//
//   auto p = MakeSwAvgPredictor(/*num_experts=*/64, /*window=*/100).value();
//
// ARIMA (arima/) and LSTM (lstm/) have factories of their own;
// predictor_factory.h builds any predictor from its name.
//
// Thread-safety: as Predictor.
#ifndef MOECAST_ENGINE_PREDICT_BASIC_PREDICTORS_H_
#define MOECAST_ENGINE_PREDICT_BASIC_PREDICTORS_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/predict/predictor.h"

namespace moecast {

// next = last observed. Forecasts of every horizon are the last step.
absl::StatusOr<std::unique_ptr<Predictor>> MakeLastValuePredictor(
    int num_experts);

// sw_avg(W), Cong et al.: the next step is the mean of the last W steps;
// further steps slide the window over its own forecasts. The mean over the
// next h steps is then a fixed weight vector over the last W observations,
// computed exactly once per (W, h) (SwAvgHorizonWeights) and cached. All but
// the oldest min(h, W) - 1 weights are equal, so a forecast costs
// O(min(h, W) * M) using a running window sum. With fewer than W steps seen,
// the window is what there is. Requires window >= 1.
absl::StatusOr<std::unique_ptr<Predictor>> MakeSwAvgPredictor(int num_experts,
                                                              int window);

// The weights, oldest first (W values summing to 1), that sw_avg(W) puts on
// its last W observations when forecasting the mean over the next h steps.
std::vector<double> SwAvgHorizonWeights(int window, int horizon);

// ema(theta): s <- theta * s + (1 - theta) * x, theta the weight of the old
// value (TensorRT-LLM's load balancer uses 0.9); s starts at the first
// observation. Flat forecast. Requires 0 <= theta < 1.
absl::StatusOr<std::unique_ptr<Predictor>> MakeEmaPredictor(int num_experts,
                                                            double theta);

// ewm(W): the exponentially weighted mean with span W (the weight of the
// step i steps back is (1 - a)^i, a = 2 / (W + 1), as pandas' ewm(span=W)),
// start-up adjusted: the weights are normalised over the steps seen, so the
// first steps get the plain mean instead of a bias towards the first one. A
// long span is the bank's long memory (a stable load's best forecast far
// ahead is a mean over hundreds or thousands of steps) at O(M) memory and
// O(M) per step. Flat forecast. Requires 1 <= W <= 10^7.
absl::StatusOr<std::unique_ptr<Predictor>> MakeEwmPredictor(int num_experts,
                                                            int span);

struct HoltOptions {
  // Steps of history the parameters are fitted on, and how often they are
  // refitted. Parameters are shared by the experts of a layer (one stream):
  // the grid point with the smallest one-step squared error summed over
  // experts and over the window wins. The grid is searched on the
  // `fit_experts` experts with the largest mean share in the window (they
  // dominate the error); the chosen parameters then restart every expert.
  // A refit costs grid size x fit_window x min(M, fit_experts) steps of the
  // filter, plus one pass over all M: with these defaults about
  // 16 x 200 x 32 / 500 = 205 expert-steps per step, amortised.
  int fit_window = 200;
  int refit_every = 500;
  int fit_experts = 32;
  std::vector<double> alphas = {0.05, 0.1, 0.2, 0.5};  // level, in (0, 1]
  std::vector<double> betas = {0.01, 0.1};             // trend, in (0, 1]
  std::vector<double> phis = {0.8, 0.95};              // damping, in (0, 1]
};

// holt: damped linear trend (Gardner and McKenzie). Level l, trend b,
// damping phi; the forecast k steps ahead is l + (phi + ... + phi^k) b, and
// the mean over h steps is computed in closed form. Until the first fit
// (fit_window / 2 steps), alpha = 0.1, beta = 0.05, phi = 0.9.
absl::StatusOr<std::unique_ptr<Predictor>> MakeHoltPredictor(
    int num_experts, const HoltOptions& options = HoltOptions());

}  // namespace moecast

#endif  // MOECAST_ENGINE_PREDICT_BASIC_PREDICTORS_H_
