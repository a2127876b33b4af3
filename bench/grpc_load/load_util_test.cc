// The load bench's pure helpers: shape parsing, percentiles, medians, the
// share cap, the step generator's shape and validity, and the router logits
// derived from a step. No timing.
#include "bench/grpc_load/load_util.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace moecast::grpc_load {
namespace {

TEST(ParseShapeTest, KnownShapesGetTheirTopK) {
  absl::StatusOr<Shape> s = ParseShape("58x256");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->layers, 58);
  EXPECT_EQ(s->experts, 256);
  EXPECT_EQ(s->top_k, 8);
  EXPECT_EQ(s->values(), 14848);
  s = ParseShape("16x64");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->top_k, 2);
  s = ParseShape("4x8", 3);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->top_k, 3);
}

TEST(ParseShapeTest, RejectsMalformed) {
  EXPECT_FALSE(ParseShape("58").ok());
  EXPECT_FALSE(ParseShape("58x").ok());
  EXPECT_FALSE(ParseShape("0x8").ok());
  EXPECT_FALSE(ParseShape("axb").ok());
  EXPECT_FALSE(ParseShape("4x8x2").ok());
  EXPECT_FALSE(ParseShape("4x8", 9).ok());
}

TEST(PercentileTest, NearestRank) {
  std::vector<int64_t> v(1000);
  std::iota(v.begin(), v.end(), 1);  // 1..1000
  EXPECT_EQ(Percentile(v, 0.5), 500);
  EXPECT_EQ(Percentile(v, 0.99), 990);
  EXPECT_EQ(Percentile(v, 0.999), 999);
  EXPECT_EQ(Percentile(v, 1.0), 1000);
  EXPECT_EQ(Percentile(v, 0.0), 1);
  EXPECT_EQ(Percentile({}, 0.5), 0);
  EXPECT_EQ(Percentile({7}, 0.999), 7);
  // Few samples: p999 is the maximum.
  EXPECT_EQ(Percentile({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.999), 10);
}

TEST(SummarizeTest, SortsAndConvertsToMicroseconds) {
  std::vector<int64_t> ns;
  for (int i = 100; i >= 1; --i) ns.push_back(i * 1000);  // 1..100 us, reversed
  LatencySummary s = Summarize(ns);
  EXPECT_EQ(s.count, 100);
  EXPECT_DOUBLE_EQ(s.p50_us, 50);
  EXPECT_DOUBLE_EQ(s.p99_us, 99);
  EXPECT_DOUBLE_EQ(s.p999_us, 100);
  EXPECT_DOUBLE_EQ(s.max_us, 100);
  EXPECT_DOUBLE_EQ(s.mean_us, 50.5);
  EXPECT_EQ(Summarize({}).count, 0);
}

TEST(MedianTest, OddEvenEmpty) {
  EXPECT_DOUBLE_EQ(Median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(Median({4, 1, 3, 2}), 2.5);
  EXPECT_DOUBLE_EQ(Median({}), 0);
}

TEST(ParseIntListTest, Values) {
  absl::StatusOr<std::vector<int>> v = ParseIntList("1,10,100");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, (std::vector<int>{1, 10, 100}));
  EXPECT_FALSE(ParseIntList("1,x").ok());
  EXPECT_FALSE(ParseIntList("0").ok());
}

TEST(CapSharesTest, SumsToOneAndRespectsCap) {
  std::vector<double> p = {100, 10, 1, 1, 1, 1, 1, 1};
  CapShares(&p, 0.25);
  EXPECT_NEAR(std::accumulate(p.begin(), p.end(), 0.0), 1.0, 1e-12);
  for (double x : p) EXPECT_LE(x, 0.25 + 1e-12);
  EXPECT_NEAR(p[0], 0.25, 1e-12);
  EXPECT_NEAR(p[1], 0.25, 1e-12);  // 10 was also above the cap after the first round
  // Order of the uncapped entries is kept.
  EXPECT_NEAR(p[2], p[7], 1e-12);
}

TEST(CapSharesTest, UncappedIsJustNormalized) {
  std::vector<double> p = {1, 2, 3, 4};
  CapShares(&p, 0.5);
  EXPECT_NEAR(p[0], 0.1, 1e-12);
  EXPECT_NEAR(p[3], 0.4, 1e-12);
}

void CheckSteps(const Shape& shape, const GeneratorOptions& options) {
  StepGenerator gen(shape, options, 42);
  const int m = shape.experts;
  // Base: per layer a distribution, capped at 1/K, skewed (not uniform).
  ASSERT_EQ(gen.base().size(), static_cast<size_t>(shape.values()));
  for (int l = 0; l < shape.layers; ++l) {
    const double* b = gen.base().data() + l * m;
    EXPECT_NEAR(std::accumulate(b, b + m, 0.0), 1.0, 1e-9);
    EXPECT_LE(*std::max_element(b, b + m), 1.0 / shape.top_k + 1e-12);
    EXPECT_GT(*std::max_element(b, b + m), 2.0 / m) << "layer " << l << " not skewed";
  }
  std::vector<double> counts, first;
  for (int step = 0; step < 40; ++step) {
    const double tokens = gen.Next(&counts);
    EXPECT_EQ(tokens, std::round(options.tokens_per_step));
    ASSERT_EQ(counts.size(), static_cast<size_t>(shape.values()));
    for (int l = 0; l < shape.layers; ++l) {
      double sum = 0;
      for (int e = 0; e < m; ++e) {
        const double c = counts[l * m + e];
        ASSERT_GE(c, 0);
        ASSERT_EQ(c, std::floor(c)) << "counts are integers";
        // K distinct experts per token: no expert above the step's tokens.
        ASSERT_LE(c, tokens) << "layer " << l << " expert " << e;
        sum += c;
      }
      // What the engine validates: sum(c) <= tokens * K (here equal).
      EXPECT_EQ(sum, tokens * shape.top_k) << "layer " << l;
    }
    if (step == 0) {
      first = counts;
    } else {
      EXPECT_NE(counts, first) << "steps differ";
    }
  }
}

TEST(StepGeneratorTest, DeepSeekV3Shape) {
  CheckSteps(*ParseShape("58x256"), GeneratorOptions());
}

TEST(StepGeneratorTest, SmallShapeAndMultiSourceShare) {
  GeneratorOptions o;
  o.tokens_per_step = 8192.0 / 3;  // one of 3 sources
  CheckSteps(*ParseShape("16x64"), o);
}

TEST(StepGeneratorTest, SeedIsReproducible) {
  Shape shape = *ParseShape("4x16");
  StepGenerator a(shape, GeneratorOptions(), 7), b(shape, GeneratorOptions(), 7);
  std::vector<double> ca, cb;
  a.Next(&ca);
  b.Next(&cb);
  EXPECT_EQ(ca, cb);
}

TEST(LogitsFromCountsTest, StandardisedPerLayerAndOrdered) {
  Shape shape = *ParseShape("16x64");
  StepGenerator gen(shape, GeneratorOptions(), 3);
  std::vector<double> counts, logits;
  gen.Next(&counts);
  LogitsFromCounts(shape, counts, &logits);
  ASSERT_EQ(logits.size(), counts.size());
  for (int l = 0; l < shape.layers; ++l) {
    const double* c = counts.data() + l * shape.experts;
    const double* x = logits.data() + l * shape.experts;
    double mean = 0, sq = 0;
    for (int e = 0; e < shape.experts; ++e) {
      ASSERT_TRUE(std::isfinite(x[e]));
      mean += x[e];
      sq += x[e] * x[e];
    }
    EXPECT_NEAR(mean / shape.experts, 0.0, 1e-9) << "layer " << l;
    EXPECT_NEAR(sq / shape.experts, 1.0, 1e-9) << "layer " << l;
    for (int e = 1; e < shape.experts; ++e) {
      if (c[e] > c[e - 1]) EXPECT_GT(x[e], x[e - 1]);
      if (c[e] == c[e - 1]) EXPECT_DOUBLE_EQ(x[e], x[e - 1]);
    }
  }
}

TEST(LogitsFromCountsTest, EqualCountsGiveZeros) {
  Shape shape = *ParseShape("2x4", 1);
  std::vector<double> counts(8, 5.0), logits;
  counts[4] = counts[5] = counts[6] = counts[7] = 0.0;  // an empty layer too
  LogitsFromCounts(shape, counts, &logits);
  EXPECT_EQ(logits, std::vector<double>(8, 0.0));
}

}  // namespace
}  // namespace moecast::grpc_load
