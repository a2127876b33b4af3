// What the two LSTM predictors (lstm.h: one network over a layer's experts;
// lstm_e.h: one network run per expert) share: the weights files'
// little-endian encoding, their errors and file I/O, and the step from the
// per-horizon head means to forecasts (the piecewise-constant path of
// lstm.h's "Other horizons and the path"). Internal to engine/predict/lstm.
#ifndef MOECAST_ENGINE_PREDICT_LSTM_LSTM_SHARED_H_
#define MOECAST_ENGINE_PREDICT_LSTM_LSTM_SHARED_H_

#include <cstdint>
#include <string>
#include <vector>

#include "Eigen/Dense"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moecast::lstm_internal {

// Little-endian, independent of the host's byte order.
void PutU32(uint32_t v, std::string* out);
void PutF32(float f, std::string* out);
uint32_t GetU32(const char* p);
float GetF32(const char* p);

// INVALID_ARGUMENT "source: what".
absl::Status Bad(absl::string_view source, absl::string_view what);
// OK if v is finite and > 0; else Bad naming `name`.
absl::Status ValidateScale(absl::string_view name, float v, absl::string_view source);

// The whole file: NOT_FOUND if it does not exist, PERMISSION_DENIED if it
// cannot be opened, DATA_LOSS on a read error.
absl::StatusOr<std::string> ReadWeightsFile(const std::string& path);
// Writes (truncates) `path`: PERMISSION_DENIED if it cannot be created,
// DATA_LOSS if the write fails.
absl::Status WriteWeightsFile(const std::string& path, const std::string& bytes);

// From the head means y (M x K, y(e, k) the mean over the next hz[k] steps,
// hz increasing) fills cum(e, k) = hz[k] y(e, k) and step(e, k), the path's
// value on steps (hz[k-1], hz[k]]. cum and step are resized to M x K.
void PathPieces(const std::vector<int>& hz, const Eigen::MatrixXd& y,
                Eigen::MatrixXd* cum, Eigen::MatrixXd* step);

// The mean over the next `horizon` steps of that path (M values to out):
// y(., k) at a trained horizon, the last head's beyond the last one.
void MeanOverHorizon(const std::vector<int>& hz, const Eigen::MatrixXd& y,
                     const Eigen::MatrixXd& cum, const Eigen::MatrixXd& step,
                     int horizon, double* out);

// The path itself for `steps` steps (steps x M values to out, row s = step
// s + 1): step(., k) on (hz[k-1], hz[k]], the last head's mean beyond.
void PathOverSteps(const std::vector<int>& hz, const Eigen::MatrixXd& y,
                   const Eigen::MatrixXd& step, int steps, double* out);

}  // namespace moecast::lstm_internal

#endif  // MOECAST_ENGINE_PREDICT_LSTM_LSTM_SHARED_H_
