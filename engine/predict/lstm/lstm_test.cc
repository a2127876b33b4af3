#include "engine/predict/lstm/lstm.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "engine/predict/lstm/lstm_test_util.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// Test data, relative to the runfiles root (the test's working directory).
constexpr char kTinyWeights[] = "engine/predict/lstm/testdata/tiny.lstm";
constexpr char kTinyGolden[] = "engine/predict/lstm/testdata/tiny.golden.txt";
constexpr char kTrainedWeights[] = "bench/lstm/tiny_moe_m16.lstm";
constexpr char kTrainedGolden[] = "bench/lstm/tiny_moe_m16.golden.txt";

using lstm_testing::RandomShares;
using lstm_testing::ReadFile;
using lstm_testing::TempPath;
using lstm_testing::WriteTemp;

// Runs every case of a golden file written by bench/lstm/train_lstm.py
// (float64 PyTorch on the float32 weights as stored) through a fresh
// predictor; returns the largest absolute difference from PyTorch.
double CheckGolden(const std::string& weights, const std::string& golden_path) {
  const lstm_testing::Golden g = lstm_testing::ReadGolden(golden_path);
  EXPECT_FALSE(g.cases.empty());
  return lstm_testing::CheckGoldenCases(
      g, golden_path, [&](int m) { return MakeLstmPredictor(m, weights); }, 1e-5);
}

TEST(LstmGoldenTest, MatchesPyTorchOnTestFixture) {
  // 2 layers, partial oldest block, single step, ring wrap-around.
  const double worst = CheckGolden(kTinyWeights, kTinyGolden);
  EXPECT_LE(worst, 1e-5);
  std::cout << "tiny fixture: max |C++ - PyTorch| = " << worst << "\n";
}

TEST(LstmGoldenTest, MatchesPyTorchOnTrainedModel) {
  const double worst = CheckGolden(kTrainedWeights, kTrainedGolden);
  EXPECT_LE(worst, 1e-5);
  std::cout << "trained model: max |C++ - PyTorch| = " << worst << "\n";
}

// ---------------------------------------------------------------------------
// Interface contract.

TEST(LstmPredictorTest, NameAndSizes) {
  ASSERT_OK_AND_ASSIGN(auto p, MakeLstmPredictor(5, kTinyWeights));
  EXPECT_EQ(p->name(), "lstm");
  EXPECT_EQ(p->num_experts(), 5);
  EXPECT_GT(p->MemoryBytes(), 12 * 5 * 8);
}

TEST(LstmPredictorTest, UniformBeforeData) {
  ASSERT_OK_AND_ASSIGN(auto p, MakeLstmPredictor(5, kTinyWeights));
  std::vector<double> out(5, -1);
  for (int h : {1, 3, 20, 1000}) {
    p->Forecast(h, absl::MakeSpan(out));
    for (double v : out) EXPECT_DOUBLE_EQ(v, 0.2);
  }
  std::vector<double> path(7 * 5, -1);
  p->Refresh();
  p->ForecastPath(7, absl::MakeSpan(path));
  for (double v : path) EXPECT_DOUBLE_EQ(v, 0.2);
}

// Forecast(h) is the mean of ForecastPath(h) for every h, and equals the head
// at a trained horizon; after the last trained horizon it stays constant.
void CheckPathConsistency(Predictor* p, const std::vector<int>& trained, int max_steps) {
  const int M = p->num_experts();
  std::vector<double> path(static_cast<size_t>(max_steps) * M);
  p->ForecastPath(max_steps, absl::MakeSpan(path));
  std::vector<double> sum(M, 0.0), out(M), prefix(M);
  for (int h = 1; h <= max_steps; ++h) {
    for (int e = 0; e < M; ++e) sum[e] += path[static_cast<size_t>(h - 1) * M + e];
    p->Forecast(h, absl::MakeSpan(out));
    for (int e = 0; e < M; ++e) {
      ASSERT_NEAR(out[e], sum[e] / h, 1e-12) << "h=" << h << " e=" << e;
    }
    // A shorter path is a prefix of the longer one.
    if (h == 7 || h == max_steps) {
      std::vector<double> shorter(static_cast<size_t>(h) * M);
      p->ForecastPath(h, absl::MakeSpan(shorter));
      for (size_t i = 0; i < shorter.size(); ++i) ASSERT_EQ(shorter[i], path[i]);
    }
  }
  // Constant after the last trained horizon.
  std::vector<double> last(M), far(M);
  p->Forecast(trained.back(), absl::MakeSpan(last));
  p->Forecast(trained.back() * 10 + 3, absl::MakeSpan(far));
  for (int e = 0; e < M; ++e) EXPECT_DOUBLE_EQ(far[e], last[e]);
  // Any h below the first trained horizon gives the first head.
  std::vector<double> first(M), below(M);
  p->Forecast(trained.front(), absl::MakeSpan(first));
  p->Forecast(0, absl::MakeSpan(below));  // clamped to 1
  if (trained.front() == 1) {
    for (int e = 0; e < M; ++e) EXPECT_DOUBLE_EQ(below[e], first[e]);
  }
}

TEST(LstmPredictorTest, PathConsistentWithForecast) {
  ASSERT_OK_AND_ASSIGN(auto p, MakeLstmPredictor(5, kTinyWeights));
  uint64_t rng = 1;
  for (int t = 0; t < 40; ++t) {
    p->Observe(RandomShares(5, &rng));
    if (t == 0 || t == 4 || t == 39) CheckPathConsistency(p.get(), {1, 4, 20}, 60);
  }
}

TEST(LstmPredictorTest, TrainedModelPathConsistentWithForecast) {
  ASSERT_OK_AND_ASSIGN(auto w, LstmWeights::Load(kTrainedWeights));
  const int M = w->model().num_experts;
  ASSERT_OK_AND_ASSIGN(auto p, MakeLstmPredictor(M, w));
  uint64_t rng = 7;
  for (int t = 0; t < 300; ++t) p->Observe(RandomShares(M, &rng));
  CheckPathConsistency(p.get(), w->model().horizons, w->model().horizons.back() + 50);
  // Raw outputs of a sane model are close to proportions.
  std::vector<double> out(M);
  for (int h : w->model().horizons) {
    p->Forecast(h, absl::MakeSpan(out));
    double sum = 0;
    for (double v : out) sum += v;
    EXPECT_NEAR(sum, 1.0, 0.1) << "h=" << h;
  }
}

TEST(LstmPredictorTest, RefreshAndRepeatedForecastAgree) {
  ASSERT_OK_AND_ASSIGN(auto w, LstmWeights::Load(kTinyWeights));
  ASSERT_OK_AND_ASSIGN(auto a, MakeLstmPredictor(5, w));
  ASSERT_OK_AND_ASSIGN(auto b, MakeLstmPredictor(5, w));  // shares the weights
  uint64_t rng = 3;
  std::vector<double> fa(5), fb(5), again(5);
  for (int t = 0; t < 25; ++t) {
    const auto p = RandomShares(5, &rng);
    a->Observe(p);
    b->Observe(p);
    b->Refresh();
    for (int h : {1, 5, 30}) {
      a->Forecast(h, absl::MakeSpan(fa));
      b->Forecast(h, absl::MakeSpan(fb));
      a->Forecast(h, absl::MakeSpan(again));
      for (int e = 0; e < 5; ++e) {
        EXPECT_EQ(fa[e], fb[e]);
        EXPECT_EQ(fa[e], again[e]);
      }
    }
  }
  // The forecast moves when new data arrives.
  a->Forecast(1, absl::MakeSpan(fa));
  a->Observe({0.9, 0.025, 0.025, 0.025, 0.025});
  a->Forecast(1, absl::MakeSpan(fb));
  EXPECT_NE(fa, fb);
}

TEST(LstmPredictorTest, SharedWeightsStreamsAreIndependent) {
  ASSERT_OK_AND_ASSIGN(auto w, LstmWeights::Load(kTinyWeights));
  ASSERT_OK_AND_ASSIGN(auto a, MakeLstmPredictor(5, w));
  ASSERT_OK_AND_ASSIGN(auto b, MakeLstmPredictor(5, w));
  a->Observe({0.6, 0.1, 0.1, 0.1, 0.1});
  std::vector<double> out(5);
  b->Forecast(10, absl::MakeSpan(out));
  for (double v : out) EXPECT_DOUBLE_EQ(v, 0.2);
}

// ---------------------------------------------------------------------------
// Weights file.

TEST(LstmWeightsTest, RoundTrip) {
  const std::string bytes = ReadFile(kTinyWeights);
  ASSERT_OK_AND_ASSIGN(LstmModel m, DecodeLstmModel(bytes, "tiny"));
  EXPECT_EQ(m.num_experts, 5);
  EXPECT_EQ(m.hidden, 3);
  EXPECT_EQ(m.num_layers(), 2);
  EXPECT_EQ(m.lookback, 4);
  EXPECT_EQ(m.block, 3);
  EXPECT_EQ(m.anchor_window, 5);
  EXPECT_EQ(m.horizons, (std::vector<int>{1, 4, 20}));
  EXPECT_EQ(EncodeLstmModel(m), bytes);
  const std::string path = TempPath("roundtrip.lstm");
  ASSERT_OK(WriteLstmModel(m, path));
  EXPECT_EQ(ReadFile(path), bytes);
}

TEST(LstmWeightsTest, TrainedFileDescribesItself) {
  ASSERT_OK_AND_ASSIGN(auto w, LstmWeights::Load(kTrainedWeights));
  EXPECT_EQ(w->model().num_experts, 16);
  EXPECT_THAT(w->model().description, HasSubstr("trained_on"));
  EXPECT_EQ(w->source(), kTrainedWeights);
}

class MalformedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    good_ = ReadFile(kTinyWeights);
    ASSERT_OK_AND_ASSIGN(model_, DecodeLstmModel(good_, "tiny"));
    header_ = 8 + 4 + 32 + 4 * model_.horizons.size() + 8 + model_.description.size();
  }
  // Writes `bytes` to a file and tries to load it for M = 5.
  absl::Status Load(const std::string& name, const std::string& bytes, std::string* path) {
    *path = WriteTemp(name, bytes);
    return MakeLstmPredictor(5, *path).status();
  }
  static void PutU32(std::string* s, size_t off, uint32_t v) { std::memcpy(&(*s)[off], &v, 4); }
  static void PutF32(std::string* s, size_t off, float v) { std::memcpy(&(*s)[off], &v, 4); }

  std::string good_;
  LstmModel model_;
  size_t header_ = 0;
};

TEST_F(MalformedTest, GoodFileLoads) {
  std::string path;
  EXPECT_OK(Load("good.lstm", good_, &path));
}

TEST_F(MalformedTest, MissingFile) {
  EXPECT_THAT(MakeLstmPredictor(5, "/nonexistent/x.lstm").status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/x.lstm")));
}

TEST_F(MalformedTest, Truncated) {
  std::string path;
  for (size_t keep : {size_t{0}, size_t{5}, size_t{10}, size_t{30}, size_t{48}, header_ - 1,
                      header_ + 10, good_.size() - 1}) {
    const absl::Status s = Load("truncated.lstm", good_.substr(0, keep), &path);
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss,
                            AllOf(HasSubstr(path), HasSubstr("truncated"))))
        << "keeping " << keep << " bytes";
  }
}

TEST_F(MalformedTest, BadMagic) {
  std::string bad = good_;
  bad[0] = 'X';
  std::string path;
  EXPECT_THAT(Load("magic.lstm", bad, &path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("bad magic"))));
  // A text file is not a weights file either.
  EXPECT_THAT(Load("text.lstm", "step,layer,c0\n0,0,1\n", &path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad magic")));
}

TEST_F(MalformedTest, UnsupportedVersion) {
  std::string bad = good_;
  PutU32(&bad, 8, 2);
  std::string path;
  EXPECT_THAT(Load("version.lstm", bad, &path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("unsupported version 2"))));
}

TEST_F(MalformedTest, TrailingBytes) {
  std::string path;
  EXPECT_THAT(Load("trailing.lstm", good_ + "abc", &path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("trailing bytes: 3"))));
}

TEST_F(MalformedTest, NonFiniteWeight) {
  // weight_hh_l0 index 2: after weight_ih_l0 (4H x M = 12 x 5 floats).
  std::string bad = good_;
  PutF32(&bad, header_ + 4 * (60 + 2), std::numeric_limits<float>::quiet_NaN());
  std::string path;
  EXPECT_THAT(Load("nan.lstm", bad, &path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("non-finite"),
                             HasSubstr("weight_hh_l0 at index 2"))));
  // The last float of the file: head_bias.
  bad = good_;
  PutF32(&bad, bad.size() - 4, std::numeric_limits<float>::infinity());
  EXPECT_THAT(Load("inf.lstm", bad, &path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("non-finite"), HasSubstr("head_bias at index 14"))));
}

TEST_F(MalformedTest, WrongNumExperts) {
  EXPECT_THAT(MakeLstmPredictor(6, kTinyWeights).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(kTinyWeights), HasSubstr("num_experts = 5"),
                             HasSubstr("the stream has 6"))));
  // A file whose M field was changed no longer matches its own size.
  std::string bad = good_;
  PutU32(&bad, 12, 6);
  std::string path;
  EXPECT_FALSE(Load("m6.lstm", bad, &path).ok());
}

TEST_F(MalformedTest, FieldsOutOfRange) {
  struct Case {
    size_t offset;
    uint32_t value;
    const char* message;
  };
  const Case cases[] = {
      {12, 0, "num_experts = 0 is out of range"},
      {16, 0, "hidden = 0 is out of range"},
      {20, 17, "num_layers = 17 is out of range"},
      {24, 0, "lookback = 0"},
      {28, 0, "block = 0"},
      {32, 13, "anchor_window = 13 is out of range [1, 12]"},
      {36, 0, "num_horizons = 0"},
      {36, 1000, "num_horizons = 1000"},
      {40, 1 << 20, "description_bytes"},
      {44, 0, "horizons[0] = 0"},
      {48, 1, "not strictly increasing"},
  };
  for (const Case& c : cases) {
    std::string bad = good_;
    PutU32(&bad, c.offset, c.value);
    std::string path;
    EXPECT_THAT(Load("range.lstm", bad, &path),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr(path), HasSubstr(c.message))))
        << "offset " << c.offset;
  }
  std::string bad = good_;
  PutF32(&bad, 44 + 12, -1.0f);  // input_scale after the 3 horizons
  std::string path;
  EXPECT_THAT(Load("scale.lstm", bad, &path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("input_scale = -1")));
  bad = good_;
  PutF32(&bad, 44 + 16, std::numeric_limits<float>::quiet_NaN());
  EXPECT_THAT(Load("scale.lstm", bad, &path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("output_scale")));
}

TEST_F(MalformedTest, InvalidModelIsNotWritten) {
  LstmModel m = model_;
  m.head_bias.pop_back();
  const std::string path = TempPath("invalid.lstm");
  EXPECT_THAT(WriteLstmModel(m, path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("head_bias has 14 values, expected 15")));
  m = model_;
  m.layers[1].weight_hh[4] = std::nanf("");
  EXPECT_THAT(LstmWeights::FromModel(m, "mem").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("mem: "), HasSubstr("weight_hh_l1 at index 4"))));
}

TEST(LstmLimitsTest, HugeWindowIsRefused) {
  LstmModel m;
  m.num_experts = 200;
  m.hidden = 1;
  m.lookback = 1 << 10;
  m.block = 1 << 10;  // window 2^20 steps
  m.anchor_window = 1;
  m.horizons = {1};
  m.layers.resize(1);
  m.layers[0].weight_ih.assign(4 * 200, 0.0f);
  m.layers[0].weight_hh.assign(4, 0.0f);
  m.layers[0].bias_ih.assign(4, 0.0f);
  m.layers[0].bias_hh.assign(4, 0.0f);
  m.head_weight.assign(200, 0.0f);
  m.head_bias.assign(200, 0.0f);
  ASSERT_OK_AND_ASSIGN(auto w, LstmWeights::FromModel(m, "huge"));
  EXPECT_THAT(MakeLstmPredictor(200, w).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("huge: "), HasSubstr("ring values"))));
}

}  // namespace
}  // namespace moecast
