#include "engine/predict/predictor_factory.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/match.h"
#include "engine/predict/arima/arima.h"
#include "engine/predict/basic_predictors.h"
#include "engine/predict/lstm/lstm.h"
#include "engine/predict/lstm/lstm_e.h"

namespace moecast {
namespace {

// Splits "kind(a,b)" into kind and its arguments; "kind" has none.
absl::Status ParseName(absl::string_view text, std::string* kind,
                       std::vector<std::string>* args) {
  text = absl::StripAsciiWhitespace(text);
  const size_t open = text.find('(');
  if (open == absl::string_view::npos) {
    *kind = std::string(text);
    return absl::OkStatus();
  }
  if (text.back() != ')') {
    return absl::InvalidArgumentError(
        absl::StrCat("predictor '", text, "': missing ')'"));
  }
  *kind = std::string(absl::StripAsciiWhitespace(text.substr(0, open)));
  absl::string_view inner = text.substr(open + 1, text.size() - open - 2);
  if (!absl::StripAsciiWhitespace(inner).empty()) {
    for (absl::string_view a : absl::StrSplit(inner, ',')) {
      args->push_back(std::string(absl::StripAsciiWhitespace(a)));
    }
  }
  return absl::OkStatus();
}

absl::Status ArgCount(absl::string_view text, const std::vector<std::string>& args,
                      size_t most) {
  if (args.size() <= most) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "predictor '", text, "' takes at most ", most, " parameter(s), got ",
      args.size()));
}

}  // namespace

std::string KnownPredictorsHelp() {
  return "last_value, sw_avg(W) (default W=100), ema(theta) (default 0.9), "
         "ewm(W) (span, default 1000), holt, arima(p,d,q) (default 5,1,5; append +drift for a drift term), "
         "lstm(WEIGHTS_FILE), lstm_e(WEIGHTS_FILE) (per-expert LSTM, any number of experts)";
}

std::vector<std::string> DefaultPredictorNames() {
  return {"last_value", "sw_avg(100)", "ema(0.9)", "holt", "ewm(300)", "ewm(3000)"};
}

std::vector<std::string> LegacyDefaultPredictorNames() {
  return {"last_value", "sw_avg(100)", "ema(0.9)", "holt"};
}

absl::StatusOr<std::unique_ptr<Predictor>> MakePredictor(absl::string_view name,
                                                         int num_experts) {
  std::string kind;
  std::vector<std::string> args;
  absl::string_view text = absl::StripAsciiWhitespace(name);
  const bool drift = absl::EndsWith(text, "+drift");
  if (drift) text.remove_suffix(6);
  if (absl::Status s = ParseName(text, &kind, &args); !s.ok()) return s;
  if (drift && kind != "arima") {
    return absl::InvalidArgumentError(absl::StrCat(
        "predictor '", name, "': only arima takes +drift"));
  }
  auto bad_number = [&](const std::string& arg) {
    return absl::InvalidArgumentError(absl::StrCat(
        "predictor '", name, "': parameter '", arg, "' is not a number"));
  };
  if (kind == "last_value") {
    if (absl::Status s = ArgCount(name, args, 0); !s.ok()) return s;
    return MakeLastValuePredictor(num_experts);
  }
  if (kind == "sw_avg") {
    if (absl::Status s = ArgCount(name, args, 1); !s.ok()) return s;
    int window = 100;
    if (!args.empty() && !absl::SimpleAtoi(args[0], &window)) {
      return bad_number(args[0]);
    }
    return MakeSwAvgPredictor(num_experts, window);
  }
  if (kind == "ema") {
    if (absl::Status s = ArgCount(name, args, 1); !s.ok()) return s;
    double theta = 0.9;
    if (!args.empty() && (!absl::SimpleAtod(args[0], &theta) || !std::isfinite(theta))) {
      return bad_number(args[0]);
    }
    return MakeEmaPredictor(num_experts, theta);
  }
  if (kind == "ewm") {
    if (absl::Status s = ArgCount(name, args, 1); !s.ok()) return s;
    int span = 1000;
    if (!args.empty() && !absl::SimpleAtoi(args[0], &span)) {
      return bad_number(args[0]);
    }
    return MakeEwmPredictor(num_experts, span);
  }
  if (kind == "arima") {
    ArimaOptions options;
    options.drift = drift;
    if (!args.empty()) {
      if (args.size() != 3) {
        return absl::InvalidArgumentError(absl::StrCat(
            "predictor '", name, "' takes 3 parameters (p,d,q) or none, got ",
            args.size()));
      }
      int* orders[3] = {&options.p, &options.d, &options.q};
      for (int i = 0; i < 3; ++i) {
        if (!absl::SimpleAtoi(args[i], orders[i])) return bad_number(args[i]);
      }
    }
    return MakeArimaPredictor(num_experts, options);
  }
  if (kind == "lstm") {
    if (args.size() != 1 || args[0].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "predictor '", name, "' takes the path of its weights file: "
          "lstm(PATH)"));
    }
    return MakeLstmPredictor(num_experts, args[0]);
  }
  if (kind == "lstm_e") {
    if (args.size() != 1 || args[0].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "predictor '", name, "' takes the path of its weights file: "
          "lstm_e(PATH)"));
    }
    return MakeLstmEPredictor(num_experts, args[0]);
  }
  if (kind == "holt") {
    if (absl::Status s = ArgCount(name, args, 0); !s.ok()) return s;
    return MakeHoltPredictor(num_experts);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown predictor '", name, "'; known: ", KnownPredictorsHelp(),
      ", and auto (the bank's choice)"));
}

}  // namespace moecast
