// Test helpers shared by the LSTM predictors' tests (lstm_test, lstm_e_test,
// lstm_alloc_test): whole-file reads and temporary files, the golden files
// written by bench/lstm/train_lstm.py (float64 PyTorch on the stored float32
// weights) and the check of a predictor against them, and random proportion
// vectors from a fixed-seed generator.
//
//   const double worst = CheckGolden(
//       [&](int m) { return MakeLstmPredictor(m, weights); }, golden_path, 1e-5);
//
// Failures are reported through gtest (EXPECT_*). Not thread-safe.
#ifndef MOECAST_ENGINE_PREDICT_LSTM_LSTM_TEST_UTIL_H_
#define MOECAST_ENGINE_PREDICT_LSTM_LSTM_TEST_UTIL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/predict/predictor.h"

namespace moecast::lstm_testing {

// The whole file (binary); an EXPECT failure if it cannot be opened.
std::string ReadFile(const std::string& path);

// $TEST_TMPDIR/name (or /tmp/name).
std::string TempPath(const std::string& name);

// Writes `bytes` to TempPath(name) (truncating it); returns the path.
std::string WriteTemp(const std::string& name, const std::string& bytes);

// A golden file ("moecast-lstm-golden 1"): windows of observed proportions and
// PyTorch's forecasts at the golden horizons.
struct GoldenCase {
  std::vector<std::vector<double>> window;    // n x M, oldest first
  std::vector<std::vector<double>> forecast;  // per golden horizon, M values
};
struct Golden {
  int num_experts = 0;
  std::vector<int> horizons;
  std::vector<GoldenCase> cases;
};

// Parses a golden file; EXPECT failures for a missing or malformed one.
Golden ReadGolden(const std::string& path);

// Makes a fresh predictor for a stream of `num_experts` experts.
using PredictorFactory =
    std::function<absl::StatusOr<std::unique_ptr<Predictor>>(int num_experts)>;

// Runs every case of `g` (read from golden_path, which names it in messages)
// through a fresh predictor from `make`: observes the window, then expects
// Forecast(h) within `tolerance` of PyTorch for every golden horizon h and
// expert. Returns the largest absolute difference (infinity if a predictor
// could not be made).
double CheckGoldenCases(const Golden& g, const std::string& golden_path,
                        const PredictorFactory& make, double tolerance);

// M positive proportions summing to 1, each (floor + uniform[0, 1)) before
// normalising, from the 64-bit LCG `*state` (advanced M times).
std::vector<double> RandomShares(int M, uint64_t* state, double floor = 0.05);

}  // namespace moecast::lstm_testing

#endif  // MOECAST_ENGINE_PREDICT_LSTM_LSTM_TEST_UTIL_H_
