// Builds predictors from their names, as users write them in job specs, on
// the command line and over the API:
//
//   last_value | sw_avg | sw_avg(W) | ema | ema(theta) | holt
//   | arima | arima(p,d,q) | arima(p,d,q)+drift | lstm(WEIGHTS_FILE)
//   | lstm_e(WEIGHTS_FILE)
//
// lstm's weights file (format in lstm/lstm.h) must match the stream's number
// of experts; lstm_e's (per-expert, lstm/lstm_e.h) serves any number. Their
// paths may not contain ',' or ')'.
// Defaults: sw_avg(100), ema(0.9), arima(5,1,5) without drift. A name with parameters is normalised to
// the predictor's own name (e.g. "ema(0.90)" -> "ema(0.9)").
//
// Thread-safety: thread-safe.
#ifndef MOECAST_ENGINE_PREDICT_PREDICTOR_FACTORY_H_
#define MOECAST_ENGINE_PREDICT_PREDICTOR_FACTORY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/predict/predictor.h"

namespace moecast {

// INVALID_ARGUMENT naming the text for an unknown name, malformed
// parameters or parameters out of range.
absl::StatusOr<std::unique_ptr<Predictor>> MakePredictor(absl::string_view name,
                                                         int num_experts);

// The bank a job gets when it names none: last_value, sw_avg(100),
// ema(0.9), holt, and two long-memory smoothers, ewm(300) and ewm(3000), so
// that `auto` has a good choice at every horizon up to thousands of steps
// (calibration: BENCHMARKS.md, "Forecasts at every time scale").
std::vector<std::string> DefaultPredictorNames();

// The default bank before the long-memory smoothers joined it (last_value,
// sw_avg(100), ema(0.9), holt): snapshots of jobs registered without
// predictors and written before then hold it, and restore with it.
std::vector<std::string> LegacyDefaultPredictorNames();

// Every predictor name the factory knows, with parameter syntax (for help
// texts and error messages).
std::string KnownPredictorsHelp();

}  // namespace moecast

#endif  // MOECAST_ENGINE_PREDICT_PREDICTOR_FACTORY_H_
