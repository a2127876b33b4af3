#include "bench/grpc_load/load_util.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace moecast::grpc_load {

absl::StatusOr<Shape> ParseShape(absl::string_view text, int top_k) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, 'x');
  Shape s;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &s.layers) ||
      !absl::SimpleAtoi(parts[1], &s.experts) || s.layers <= 0 || s.experts <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape must be LAYERSxEXPERTS (e.g. 58x256), got '", text, "'"));
  }
  if (top_k > 0) {
    s.top_k = top_k;
  } else if (s.layers == 58 && s.experts == 256) {
    s.top_k = 8;
  } else if (s.layers == 16 && s.experts == 64) {
    s.top_k = 2;
  } else {
    s.top_k = std::min(2, s.experts);
  }
  if (s.top_k < 1 || s.top_k > s.experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be in 1..", s.experts, ", got ", s.top_k));
  }
  return s;
}

double Percentile(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double n = static_cast<double>(sorted.size());
  int64_t idx = static_cast<int64_t>(std::ceil(q * n)) - 1;
  idx = std::clamp<int64_t>(idx, 0, static_cast<int64_t>(sorted.size()) - 1);
  return static_cast<double>(sorted[idx]);
}

LatencySummary Summarize(std::vector<int64_t> samples_ns) {
  LatencySummary s;
  if (samples_ns.empty()) return s;
  std::sort(samples_ns.begin(), samples_ns.end());
  s.count = static_cast<int64_t>(samples_ns.size());
  long double sum = 0;
  for (int64_t v : samples_ns) sum += v;
  s.mean_us = static_cast<double>(sum / s.count) / 1e3;
  s.p50_us = Percentile(samples_ns, 0.50) / 1e3;
  s.p99_us = Percentile(samples_ns, 0.99) / 1e3;
  s.p999_us = Percentile(samples_ns, 0.999) / 1e3;
  s.max_us = static_cast<double>(samples_ns.back()) / 1e3;
  return s;
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

absl::StatusOr<std::vector<int>> ParseIntList(absl::string_view text) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v) || v <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected positive integers separated by ',', got '", text, "'"));
    }
    out.push_back(v);
  }
  return out;
}

void CapShares(std::vector<double>* p, double cap) {
  std::vector<double>& v = *p;
  double total = std::accumulate(v.begin(), v.end(), 0.0);
  if (total <= 0) return;
  for (double& x : v) x /= total;
  // Each round caps at least one more entry, so at most size() rounds.
  for (size_t round = 0; round < v.size(); ++round) {
    double excess = 0, free_mass = 0;
    for (double x : v) {
      if (x > cap) {
        excess += x - cap;
      } else if (x < cap) {
        free_mass += x;
      }
    }
    if (excess <= 0) break;
    for (double& x : v) {
      if (x >= cap) {
        x = cap;
      } else if (free_mass > 0) {
        x += excess * x / free_mass;
      }
    }
  }
}

StepGenerator::StepGenerator(const Shape& shape, const GeneratorOptions& options,
                             uint64_t seed)
    : shape_(shape), options_(options), rng_(seed) {
  const int m = shape_.experts;
  base_.resize(static_cast<size_t>(shape_.values()));
  std::uniform_real_distribution<double> exponent(options_.zipf_min, options_.zipf_max);
  std::vector<int> order(m);
  std::vector<double> p(m);
  for (int l = 0; l < shape_.layers; ++l) {
    const double s = exponent(rng_);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng_);
    for (int rank = 0; rank < m; ++rank) {
      p[order[rank]] = 1.0 / std::pow(rank + 1.0, s);
    }
    CapShares(&p, 1.0 / shape_.top_k);
    std::copy(p.begin(), p.end(), base_.begin() + static_cast<int64_t>(l) * m);
  }
}

double StepGenerator::Next(std::vector<double>* counts) {
  const int m = shape_.experts;
  counts->assign(static_cast<size_t>(shape_.values()), 0.0);
  const double tokens = std::max(1.0, std::round(options_.tokens_per_step));
  const int64_t assignments = static_cast<int64_t>(tokens) * shape_.top_k;
  std::vector<double> p(m);
  for (int l = 0; l < shape_.layers; ++l) {
    const double* b = base_.data() + static_cast<int64_t>(l) * m;
    // Dirichlet(concentration * base) via normalized gammas.
    for (int e = 0; e < m; ++e) {
      const double alpha = std::max(1e-3, options_.concentration * b[e]);
      p[e] = std::gamma_distribution<double>(alpha, 1.0)(rng_);
    }
    CapShares(&p, 1.0 / shape_.top_k);
    // Multinomial(assignments, p) by sequential conditional binomials.
    int64_t left = assignments;
    double mass = 1.0;
    double* c = counts->data() + static_cast<int64_t>(l) * m;
    for (int e = 0; e < m && left > 0; ++e) {
      int64_t x;
      if (e == m - 1 || mass <= p[e]) {
        x = left;
      } else {
        const double q = std::clamp(p[e] / mass, 0.0, 1.0);
        x = std::binomial_distribution<int64_t>(left, q)(rng_);
      }
      c[e] = static_cast<double>(x);
      left -= x;
      mass -= p[e];
    }
    // Each token picks K distinct experts, so no expert gets more than
    // `tokens` assignments; the multinomial can overshoot where a share is
    // near its 1/K cap. The excess goes to the following experts with room.
    double excess = 0;
    for (int e = 0; e < m; ++e) {
      if (c[e] > tokens) {
        excess += c[e] - tokens;
        c[e] = tokens;
      }
    }
    for (int i = 0; excess > 0 && i < 2 * m; ++i) {
      double& x = c[i % m];
      const double move = std::min(excess, tokens - x);
      x += move;
      excess -= move;
    }
  }
  return tokens;
}

void LogitsFromCounts(const Shape& shape, const std::vector<double>& counts,
                      std::vector<double>* logits) {
  const int m = shape.experts;
  logits->assign(static_cast<size_t>(shape.values()), 0.0);
  for (int l = 0; l < shape.layers; ++l) {
    const double* c = counts.data() + static_cast<int64_t>(l) * m;
    double* out = logits->data() + static_cast<int64_t>(l) * m;
    double sum = 0;
    for (int e = 0; e < m; ++e) sum += std::max(0.0, c[e]);
    const double denom = sum + 0.5 * m;
    double mean = 0;
    for (int e = 0; e < m; ++e) {
      out[e] = std::log((std::max(0.0, c[e]) + 0.5) / denom);
      mean += out[e];
    }
    mean /= m;
    double var = 0;
    for (int e = 0; e < m; ++e) var += (out[e] - mean) * (out[e] - mean);
    const double sd = std::sqrt(var / m);
    for (int e = 0; e < m; ++e) out[e] = sd > 1e-12 ? (out[e] - mean) / sd : 0.0;
  }
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "model name")) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    }
  }
  return "unknown";
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  if (!(in >> a >> b >> c)) return "unknown";
  return absl::StrCat(a, " ", b, " ", c);
}

}  // namespace moecast::grpc_load
