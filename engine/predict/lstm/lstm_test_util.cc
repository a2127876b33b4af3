#include "engine/predict/lstm/lstm_test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "engine/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace moecast::lstm_testing {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
}

std::string WriteTemp(const std::string& name, const std::string& bytes) {
  const std::string path = TempPath(name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
  return path;
}

Golden ReadGolden(const std::string& path) {
  Golden g;
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::string word;
  int version = 0, num_h = 0, num_cases = 0;
  in >> word >> version;
  EXPECT_EQ(word, "moecast-lstm-golden");
  EXPECT_EQ(version, 1);
  in >> word >> g.num_experts;
  EXPECT_EQ(word, "experts");
  in >> word >> num_h;
  EXPECT_EQ(word, "horizons");
  g.horizons.resize(num_h);
  for (int& h : g.horizons) in >> h;
  in >> word >> num_cases;
  EXPECT_EQ(word, "cases");
  for (int c = 0; c < num_cases; ++c) {
    GoldenCase gc;
    int n = 0;
    in >> word >> n;
    EXPECT_EQ(word, "window");
    gc.window.assign(n, std::vector<double>(g.num_experts));
    for (auto& row : gc.window) {
      for (double& v : row) in >> v;
    }
    in >> word;
    EXPECT_EQ(word, "forecast");
    gc.forecast.assign(num_h, std::vector<double>(g.num_experts));
    for (auto& row : gc.forecast) {
      for (double& v : row) in >> v;
    }
    g.cases.push_back(std::move(gc));
  }
  EXPECT_FALSE(in.fail()) << path << ": malformed golden file";
  return g;
}

double CheckGoldenCases(const Golden& g, const std::string& golden_path,
                        const PredictorFactory& make, double tolerance) {
  double worst = 0;
  for (size_t c = 0; c < g.cases.size(); ++c) {
    absl::StatusOr<std::unique_ptr<Predictor>> p = make(g.num_experts);
    EXPECT_OK(p);
    if (!p.ok()) return std::numeric_limits<double>::infinity();
    EXPECT_EQ((*p)->num_experts(), g.num_experts);
    for (const auto& row : g.cases[c].window) (*p)->Observe(row);
    std::vector<double> out(g.num_experts);
    for (size_t k = 0; k < g.horizons.size(); ++k) {
      (*p)->Forecast(g.horizons[k], absl::MakeSpan(out));
      for (int e = 0; e < g.num_experts; ++e) {
        const double d = std::abs(out[e] - g.cases[c].forecast[k][e]);
        worst = std::max(worst, d);
        EXPECT_LE(d, tolerance) << golden_path << " case " << c << " (window "
                                << g.cases[c].window.size() << ") h=" << g.horizons[k]
                                << " expert " << e << ": C++ " << out[e] << " PyTorch "
                                << g.cases[c].forecast[k][e];
      }
    }
  }
  return worst;
}

std::vector<double> RandomShares(int M, uint64_t* state, double floor) {
  std::vector<double> p(M);
  double sum = 0;
  for (double& v : p) {
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    v = floor + static_cast<double>(*state >> 11) / 9007199254740992.0;
    sum += v;
  }
  for (double& v : p) v /= sum;
  return p;
}

}  // namespace moecast::lstm_testing
