// arima_css_tool: the CSS fitter of arima.h from the command line, for the
// statsmodels comparison (statsmodels_comparison.py).
//
//   arima_css_tool --p=1 --d=1 --q=1 [--drift=0] [--max_iterations=50]
//                  [--horizon=100] --series=FILE [--params=FILE]
//
// FILE (--series): one series of levels per line, oldest first, numbers
// separated by spaces or commas. FILE (--params, optional): one line per
// series with p + q + 1 numbers [phi_1..phi_p theta_1..theta_q mu] at which
// to evaluate our CSS (and our forecasts).
//
// Prints a JSON array with one object per series:
//   {"n": .., "phi": [..], "theta": [..], "mu": .., "css": ..,
//    "start_css": .., "iterations": .., "warm_start": false,
//    "degenerate": false, "forecast": [horizon values],
//    "css_at": .., "forecast_at": [..]}      (the last two with --params)
// Exit status 2 on bad arguments or input.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "engine/predict/arima/arima.h"

namespace moecast {
namespace {

bool ReadRows(const std::string& path, std::vector<std::vector<double>>* rows,
              std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = "cannot open " + path;
    return false;
  }
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    std::vector<double> row;
    for (absl::string_view field :
         absl::StrSplit(line, absl::ByAnyChar(" ,\t"), absl::SkipEmpty())) {
      double v;
      if (!absl::SimpleAtod(field, &v)) {
        *error = path + ":" + std::to_string(line_no) +
                 ": not a number: " + std::string(field);
        return false;
      }
      row.push_back(v);
    }
    if (!row.empty()) rows->push_back(std::move(row));
  }
  return true;
}

void PrintArray(const double* v, int n) {
  std::printf("[");
  for (int i = 0; i < n; ++i) std::printf("%s%.17g", i ? ", " : "", v[i]);
  std::printf("]");
}

int Main(int argc, char** argv) {
  ArimaOptions o;
  int horizon = 100;
  std::string series_path, params_path;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg(argv[i]);
    const size_t eq = arg.find('=');
    if (arg.substr(0, 2) != "--" || eq == absl::string_view::npos) {
      std::fprintf(stderr, "bad argument: %s\n", argv[i]);
      return 2;
    }
    const absl::string_view key = arg.substr(2, eq - 2);
    const absl::string_view value = arg.substr(eq + 1);
    int iv = 0;
    const bool is_int = absl::SimpleAtoi(value, &iv);
    if (key == "series") {
      series_path = std::string(value);
    } else if (key == "params") {
      params_path = std::string(value);
    } else if (!is_int) {
      std::fprintf(stderr, "bad argument: %s\n", argv[i]);
      return 2;
    } else if (key == "p") {
      o.p = iv;
    } else if (key == "d") {
      o.d = iv;
    } else if (key == "q") {
      o.q = iv;
    } else if (key == "drift") {
      o.drift = iv != 0;
    } else if (key == "max_iterations") {
      o.max_iterations = iv;
    } else if (key == "horizon") {
      horizon = iv;
    } else {
      std::fprintf(stderr, "unknown argument: %s\n", argv[i]);
      return 2;
    }
  }
  // The fitter does not use fit_window; make it valid whatever the orders.
  o.fit_window = o.p + o.d + o.q + kArimaMinExtraObservations;
  const absl::Status status = ValidateArimaOptions(o);
  if (!status.ok() || horizon < 1 || series_path.empty()) {
    std::fprintf(stderr, "bad options: %s\n",
                 status.ok() ? "need --series and --horizon >= 1"
                             : status.ToString().c_str());
    return 2;
  }
  std::vector<std::vector<double>> series, params;
  std::string error;
  if (!ReadRows(series_path, &series, &error) ||
      (!params_path.empty() && !ReadRows(params_path, &params, &error))) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }
  ArimaCss css(o);
  const int np = css.num_params();
  if (!params_path.empty()) {
    if (params.size() != series.size()) {
      std::fprintf(stderr, "%zu parameter rows for %zu series\n", params.size(),
                   series.size());
      return 2;
    }
    for (const auto& row : params) {
      if (static_cast<int>(row.size()) != np) {
        std::fprintf(stderr, "a parameter row needs %d values\n", np);
        return 2;
      }
    }
  }
  std::vector<double> fit(np), path(horizon);
  std::printf("[\n");
  for (size_t s = 0; s < series.size(); ++s) {
    const std::vector<double>& x = series[s];
    std::fill(fit.begin(), fit.end(), 0.0);
    const ArimaFitStats st =
        css.Fit(x, /*warm_start=*/false, absl::MakeSpan(fit));
    css.ForecastPath(x, fit, absl::MakeSpan(path));
    std::printf("{\"n\": %zu, \"phi\": ", x.size());
    PrintArray(fit.data(), o.p);
    std::printf(", \"theta\": ");
    PrintArray(fit.data() + o.p, o.q);
    std::printf(
        ", \"mu\": %.17g, \"css\": %.17g, \"start_css\": %.17g, "
        "\"iterations\": %d, \"warm_start\": %s, \"degenerate\": %s, "
        "\"forecast\": ",
        fit[np - 1], st.css, st.start_css, st.iterations,
        st.warm_start ? "true" : "false", st.degenerate ? "true" : "false");
    PrintArray(path.data(), horizon);
    if (!params.empty()) {
      const double at = css.Css(x, params[s]);
      css.ForecastPath(x, params[s], absl::MakeSpan(path));
      std::printf(", \"css_at\": %.17g, \"forecast_at\": ", at);
      PrintArray(path.data(), horizon);
    }
    std::printf("}%s\n", s + 1 < series.size() ? "," : "");
  }
  std::printf("]\n");
  return 0;
}

}  // namespace
}  // namespace moecast

int main(int argc, char** argv) { return moecast::Main(argc, argv); }
