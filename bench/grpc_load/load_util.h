// Pure helpers of the gRPC load bench (bench/grpc_load/grpc_load.cc): the
// model shape, latency percentiles over all samples, medians, and a generator
// of realistic steps of per-expert counts (and router-logit means derived
// from them).
//
// Steps: each layer has a fixed skewed base distribution over its experts
// (Zipf with a per-layer exponent, a random expert order per layer, each share
// capped at 1/K because an expert gets at most one assignment per token);
// every step draws its own proportions around it from a Dirichlet and then
// tokens*K assignments from a multinomial, so each layer's counts are
// non-negative integers summing to exactly tokens*K (what the engine's
// validation accepts: sum(c) <= tokens*K).
//
// Thread-safety: StepGenerator is not thread-safe (one per thread); the free
// functions are.
#ifndef MOECAST_BENCH_GRPC_LOAD_LOAD_UTIL_H_
#define MOECAST_BENCH_GRPC_LOAD_LOAD_UTIL_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moecast::grpc_load {

struct Shape {
  int layers = 0;
  int experts = 0;
  int top_k = 0;
  int64_t values() const { return int64_t{layers} * experts; }
};

// Parses "LxM" (e.g. "58x256"). top_k: the given value if > 0, else 8 for
// 58x256 (DeepSeek-V3), 2 for 16x64, and min(2, M) otherwise.
// INVALID_ARGUMENT for a malformed shape or K outside 1..M.
absl::StatusOr<Shape> ParseShape(absl::string_view text, int top_k = 0);

// Latencies of one kind of call, in microseconds (nearest-rank percentiles
// over every sample; no histogram bucketing).
struct LatencySummary {
  int64_t count = 0;
  double mean_us = 0;
  double p50_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  double max_us = 0;
};

// Nearest-rank percentile of `sorted` (ascending), q in [0, 1]: the value at
// index ceil(q*n)-1 (clamped to [0, n-1]). 0 for an empty vector.
double Percentile(const std::vector<int64_t>& sorted, double q);

// Sorts `samples_ns` and summarizes them in microseconds.
LatencySummary Summarize(std::vector<int64_t> samples_ns);

// Median (mean of the two middle values for an even count); 0 if empty.
double Median(std::vector<double> values);

// Splits "a,b,c" into positive ints. INVALID_ARGUMENT otherwise.
absl::StatusOr<std::vector<int>> ParseIntList(absl::string_view text);

struct GeneratorOptions {
  // Tokens in a step (this source's share for multi-source jobs).
  double tokens_per_step = 8192;
  // Zipf exponents of the per-layer base distributions are drawn uniformly
  // from [zipf_min, zipf_max].
  double zipf_min = 0.6;
  double zipf_max = 1.2;
  // Dirichlet concentration around the base (larger: steadier steps).
  double concentration = 3000;
};

// Water-filling cap: scales `p` (non-negative, sum > 0) to sum 1 with every
// entry <= cap (cap * size >= 1 required), moving the excess of capped
// entries onto the others in proportion.
void CapShares(std::vector<double>* p, double cap);

class StepGenerator {
 public:
  StepGenerator(const Shape& shape, const GeneratorOptions& options, uint64_t seed);

  // Fills `counts` (L*M values, layer-major) with the next step's counts.
  // Returns the step's tokens.
  double Next(std::vector<double>* counts);

  // The per-layer base distributions (L*M values; each layer sums to 1).
  const std::vector<double>& base() const { return base_; }

 private:
  Shape shape_;
  GeneratorOptions options_;
  std::mt19937_64 rng_;
  std::vector<double> base_;
};

// Router-logit means for a step of `counts` (L*M values, layer-major), as
// --logits sends them: per layer, the log of the smoothed proportions
// (c_e + 0.5) / (sum + 0.5 M), standardised to mean 0 and standard deviation
// 1 (all 0 for a layer whose counts are all equal). Fills `logits` with L*M
// finite values; experts with more assignments get larger logits.
void LogitsFromCounts(const Shape& shape, const std::vector<double>& counts,
                      std::vector<double>* logits);

// Machine description for the report.
std::string CpuModel();   // "model name" of /proc/cpuinfo, or "unknown"
std::string LoadAverage();  // first three fields of /proc/loadavg

}  // namespace moecast::grpc_load

#endif  // MOECAST_BENCH_GRPC_LOAD_LOAD_UTIL_H_
