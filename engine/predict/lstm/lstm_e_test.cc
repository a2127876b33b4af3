#include "engine/predict/lstm/lstm_e.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "engine/internal/snapshot_codec.h"
#include "engine/predict/lstm/lstm.h"
#include "engine/predict/lstm/lstm_test_util.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// Test data, relative to the runfiles root.
constexpr char kFixture[] = "engine/predict/lstm/testdata/tiny_e.lstm";
constexpr char kFixtureGolden[] = "engine/predict/lstm/testdata/tiny_e.golden.txt";
constexpr char kTrained[] = "bench/lstm/lstm_e_h16.lstm";
constexpr char kTrainedGolden16[] = "bench/lstm/lstm_e_h16.m16.golden.txt";
constexpr char kTrainedGolden256[] = "bench/lstm/lstm_e_h16.m256.golden.txt";
constexpr char kSmall[] = "bench/lstm/lstm_e_h8.lstm";
constexpr char kSmallGolden16[] = "bench/lstm/lstm_e_h8.m16.golden.txt";
constexpr char kSmallGolden256[] = "bench/lstm/lstm_e_h8.m256.golden.txt";
constexpr char kMSpecific[] = "bench/lstm/tiny_moe_m16.lstm";

using lstm_testing::RandomShares;
using lstm_testing::ReadFile;
using lstm_testing::WriteTemp;

// Golden files (bench/lstm/train_lstm.py, float64 PyTorch on the stored
// float32 weights); same text format as the lstm predictor's.
double CheckGolden(const std::string& weights, const std::string& golden_path, int expect_m) {
  const lstm_testing::Golden g = lstm_testing::ReadGolden(golden_path);
  EXPECT_EQ(g.num_experts, expect_m);
  EXPECT_FALSE(g.cases.empty());
  return lstm_testing::CheckGoldenCases(
      g, golden_path, [&](int m) { return MakeLstmEPredictor(m, weights); }, 1e-6);
}

TEST(LstmEGoldenTest, MatchesPyTorchOnTwoLayerFixture) {
  const double worst = CheckGolden(kFixture, kFixtureGolden, 5);
  std::cout << "tiny_e fixture (2 layers, M = 5, clipped inputs): max |C++ - PyTorch| = "
            << worst << "\n";
}

// The same trained weights at two numbers of experts.
TEST(LstmEGoldenTest, MatchesPyTorchOnTrainedModelAtM16) {
  const double worst = CheckGolden(kTrained, kTrainedGolden16, 16);
  std::cout << "trained, M = 16: max |C++ - PyTorch| = " << worst << "\n";
}

TEST(LstmEGoldenTest, MatchesPyTorchOnTrainedModelAtM256) {
  const double worst = CheckGolden(kTrained, kTrainedGolden256, 256);
  std::cout << "trained, M = 256: max |C++ - PyTorch| = " << worst << "\n";
}

TEST(LstmEGoldenTest, MatchesPyTorchOnSmallTrainedModelAtM16AndM256) {
  const double w16 = CheckGolden(kSmall, kSmallGolden16, 16);
  const double w256 = CheckGolden(kSmall, kSmallGolden256, 256);
  std::cout << "trained H = 8: max |C++ - PyTorch| = " << w16 << " (M = 16), " << w256
            << " (M = 256)\n";
}

TEST(LstmEPredictorTest, NameSizesAndUniformBeforeData) {
  for (int M : {1, 3, 16, 300}) {
    ASSERT_OK_AND_ASSIGN(auto p, MakeLstmEPredictor(M, kTrained));
    EXPECT_EQ(p->name(), "lstm_e");
    EXPECT_EQ(p->num_experts(), M);
    std::vector<double> out(M, -1.0);
    p->Forecast(10, absl::MakeSpan(out));
    for (double v : out) EXPECT_DOUBLE_EQ(v, 1.0 / M);
    std::vector<double> path(3 * M, -1.0);
    p->ForecastPath(3, absl::MakeSpan(path));
    for (double v : path) EXPECT_DOUBLE_EQ(v, 1.0 / M);
    EXPECT_GT(p->MemoryBytes(), 0);
  }
}

// One set of weights per expert: relabelling the experts relabels the
// forecasts; each expert's forecast depends on its own series and on M only.
TEST(LstmEPredictorTest, PermutingExpertsPermutesForecasts) {
  const int M = 24;
  ASSERT_OK_AND_ASSIGN(auto a, MakeLstmEPredictor(M, kTrained));
  ASSERT_OK_AND_ASSIGN(auto b, MakeLstmEPredictor(M, kTrained));
  std::vector<int> perm(M);
  for (int e = 0; e < M; ++e) perm[e] = (e * 7 + 3) % M;  // 7 is coprime to 24
  uint64_t s = 11;
  for (int t = 0; t < 300; ++t) {
    std::vector<double> p = RandomShares(M, &s);
    if (t % 50 < 5) p[2] *= 4;  // some movement
    std::vector<double> q(M);
    for (int e = 0; e < M; ++e) q[perm[e]] = p[e];
    a->Observe(p);
    b->Observe(q);
  }
  std::vector<double> fa(M), fb(M);
  for (int h : {1, 10, 37, 100, 1000}) {
    a->Forecast(h, absl::MakeSpan(fa));
    b->Forecast(h, absl::MakeSpan(fb));
    for (int e = 0; e < M; ++e) EXPECT_DOUBLE_EQ(fa[e], fb[perm[e]]) << "h=" << h;
  }
}

// Forecast(h) is the mean of ForecastPath(h) for every h, exact at trained
// horizons, and constant beyond the last.
TEST(LstmEPredictorTest, PathConsistentWithForecast) {
  for (const char* w : {kFixture, kTrained}) {
    const int M = 7;
    ASSERT_OK_AND_ASSIGN(auto p, MakeLstmEPredictor(M, w));
    uint64_t s = 5;
    for (int t = 0; t < 40; ++t) p->Observe(RandomShares(M, &s));
    const int max_steps = 1200;
    std::vector<double> path(static_cast<size_t>(max_steps) * M), f(M);
    p->ForecastPath(max_steps, absl::MakeSpan(path));
    std::vector<double> sum(M, 0.0);
    for (int h = 1; h <= max_steps; ++h) {
      for (int e = 0; e < M; ++e) sum[e] += path[static_cast<size_t>(h - 1) * M + e];
      p->Forecast(h, absl::MakeSpan(f));
      for (int e = 0; e < M; ++e) {
        ASSERT_NEAR(f[e], sum[e] / h, 1e-12) << w << " h=" << h << " e=" << e;
      }
    }
    std::vector<double> g(M);
    p->Forecast(5000, absl::MakeSpan(f));
    p->Forecast(50000, absl::MakeSpan(g));
    for (int e = 0; e < M; ++e) EXPECT_DOUBLE_EQ(f[e], g[e]);
  }
}

TEST(LstmEPredictorTest, RefreshAndRepeatedForecastAgreeAndStreamsAreIndependent) {
  const int M = 9;
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const LstmEWeights> w, LstmEWeights::Load(kTrained));
  ASSERT_OK_AND_ASSIGN(auto a, MakeLstmEPredictor(M, w));
  ASSERT_OK_AND_ASSIGN(auto b, MakeLstmEPredictor(M, w));
  ASSERT_OK_AND_ASSIGN(auto c, MakeLstmEPredictor(M, w));
  uint64_t s = 3, s2 = 99;
  for (int t = 0; t < 400; ++t) {
    const std::vector<double> p = RandomShares(M, &s);
    a->Observe(p);
    b->Observe(p);
    c->Observe(RandomShares(M, &s2));  // another stream on the same weights
    if (t % 7 == 0) b->Refresh();
  }
  std::vector<double> fa(M), fb(M), fa2(M);
  a->Forecast(100, absl::MakeSpan(fa));
  b->Refresh();
  b->Forecast(100, absl::MakeSpan(fb));
  a->Forecast(100, absl::MakeSpan(fa2));
  for (int e = 0; e < M; ++e) {
    EXPECT_DOUBLE_EQ(fa[e], fb[e]);
    EXPECT_DOUBLE_EQ(fa[e], fa2[e]);
    EXPECT_TRUE(std::isfinite(fa[e]));
  }
}

TEST(LstmEPredictorTest, NotSnapshottable) {
  ASSERT_OK_AND_ASSIGN(auto p, MakeLstmEPredictor(4, kTrained));
  internal::SnapshotWriter writer;
  EXPECT_THAT(p->SaveTo(writer), StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("lstm_e")));
}

TEST(LstmEWeightsTest, RoundTripAndDescription) {
  for (const char* file : {kTrained, kSmall}) {
    SCOPED_TRACE(file);
    const std::string bytes = ReadFile(file);
    ASSERT_OK_AND_ASSIGN(LstmEModel m, DecodeLstmEModel(bytes, "trained"));
    EXPECT_EQ(EncodeLstmEModel(m), bytes);
    // The file names the traces it was trained on.
    EXPECT_THAT(m.description, HasSubstr("tiny_moe_aux"));
    EXPECT_THAT(m.description, HasSubstr("tiny_moe_noaux"));
    EXPECT_THAT(m.description, HasSubstr("gptoss20b"));
    const std::string path = WriteTemp("roundtrip_e.lstm", "");
    ASSERT_OK(WriteLstmEModel(m, path));
    EXPECT_EQ(ReadFile(path), bytes);
  }
}

class LstmEMalformedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    good_ = ReadFile(kFixture);
    ASSERT_OK_AND_ASSIGN(model_, DecodeLstmEModel(good_, "tiny_e"));
    header_ = 44 + 4 * model_.horizons.size() + 8 + model_.description.size();
  }
  absl::Status Load(const std::string& name, const std::string& bytes, std::string* path) {
    *path = WriteTemp(name, bytes);
    return MakeLstmEPredictor(5, *path).status();
  }
  static void PutU32(std::string* s, size_t off, uint32_t v) { std::memcpy(&(*s)[off], &v, 4); }
  static void PutF32(std::string* s, size_t off, float v) { std::memcpy(&(*s)[off], &v, 4); }

  std::string good_;
  LstmEModel model_;
  size_t header_ = 0;
};

TEST_F(LstmEMalformedTest, GoodFileLoadsAndMissingFileIsNotFound) {
  std::string path;
  EXPECT_OK(Load("good_e.lstm", good_, &path));
  EXPECT_THAT(MakeLstmEPredictor(5, "/nonexistent/e.lstm").status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/e.lstm")));
}

TEST_F(LstmEMalformedTest, Truncated) {
  std::string path;
  for (size_t keep : {size_t{0}, size_t{7}, size_t{10}, size_t{30}, size_t{47}, header_ - 1,
                      header_ + 10, good_.size() - 1}) {
    const absl::Status s = Load("truncated_e.lstm", good_.substr(0, keep), &path);
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss,
                            AllOf(HasSubstr(path), HasSubstr("truncated"))))
        << "keeping " << keep << " bytes";
  }
}

TEST_F(LstmEMalformedTest, BadMagicAndTheOtherKind) {
  std::string path;
  std::string bad = good_;
  bad[0] = 'X';
  EXPECT_THAT(Load("magic_e.lstm", bad, &path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("bad magic"))));
  EXPECT_THAT(Load("text_e.lstm", "hello, this is not a weights file\n", &path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad magic")));
  // An M-specific lstm file given to lstm_e, and the other way round.
  EXPECT_THAT(MakeLstmEPredictor(16, kMSpecific).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(kMSpecific), HasSubstr("lstm(PATH)"))));
  EXPECT_THAT(MakeLstmPredictor(16, kTrained).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(kTrained), HasSubstr("lstm_e(PATH)"))));
}

TEST_F(LstmEMalformedTest, UnsupportedVersionAndFeatures) {
  std::string path;
  std::string bad = good_;
  PutU32(&bad, 8, 2);
  EXPECT_THAT(Load("version_e.lstm", bad, &path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr("unsupported version 2"))));
  bad = good_;
  PutU32(&bad, 12, 4);
  EXPECT_THAT(Load("features_e.lstm", bad, &path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_features = 4")));
}

TEST_F(LstmEMalformedTest, FieldsOutOfRange) {
  struct Case {
    size_t offset;
    uint32_t value;
    const char* message;
  };
  const size_t h0 = 44;  // horizons[0]
  for (const Case& c : std::vector<Case>{
           {16, 0, "hidden = 0"},
           {16, 5000, "hidden = 5000"},
           {20, 0, "num_layers = 0"},
           {20, 17, "num_layers = 17"},
           {24, 0, "lookback = 0"},
           {28, 0, "block = 0"},
           {24, 70000, "lookback = 70000"},
           {32, 0, "anchor_window = 0"},
           {32, 13, "anchor_window = 13"},  // window is 4 x 3
           {36, 0, "num_horizons = 0"},
           {36, 65, "num_horizons = 65"},
           {40, 70000, "description_bytes = 70000"},
           {h0, 0, "horizons[0] = 0"},
           {h0 + 4, 1, "not strictly increasing"},
       }) {
    std::string bad = good_;
    PutU32(&bad, c.offset, c.value);
    std::string path;
    EXPECT_THAT(Load("range_e.lstm", bad, &path),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr(path), HasSubstr(c.message))))
        << "offset " << c.offset << " value " << c.value;
  }
  const size_t scales = 44 + 4 * model_.horizons.size();
  for (const auto& [off, v, msg] : std::vector<std::tuple<size_t, float, const char*>>{
           {scales, 0.0f, "input_clip"},
           {scales, -1.0f, "input_clip"},
           {scales + 4, std::numeric_limits<float>::quiet_NaN(), "output_scale"},
           {scales + 4, std::numeric_limits<float>::infinity(), "output_scale"}}) {
    std::string bad = good_;
    PutF32(&bad, off, v);
    std::string path;
    EXPECT_THAT(Load("scale_e.lstm", bad, &path),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(msg)));
  }
}

TEST_F(LstmEMalformedTest, TrailingBytesAndNonFiniteParameters) {
  std::string path;
  EXPECT_THAT(Load("trailing_e.lstm", good_ + "xyz", &path),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("trailing bytes: 3")));
  std::string bad = good_;
  PutF32(&bad, header_ + 4 * 2, std::numeric_limits<float>::quiet_NaN());
  EXPECT_THAT(Load("nan_e.lstm", bad, &path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("non-finite"), HasSubstr("weight_ih_l0 at index 2"))));
  bad = good_;
  PutF32(&bad, good_.size() - 4, std::numeric_limits<float>::infinity());
  EXPECT_THAT(Load("inf_e.lstm", bad, &path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("non-finite"), HasSubstr("head_bias"))));
}

TEST_F(LstmEMalformedTest, BadNumberOfExpertsAndInvalidModels) {
  EXPECT_THAT(MakeLstmEPredictor(0, kFixture).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("the stream has 0")));
  EXPECT_THAT(MakeLstmEPredictor(70000, kFixture).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("the stream has 70000")));
  // A window too large for memory at this M.
  LstmEModel big = model_;
  big.lookback = 1024;
  big.block = 1024;
  big.anchor_window = 1;
  ASSERT_OK_AND_ASSIGN(auto w, LstmEWeights::FromModel(big, "big"));
  EXPECT_THAT(MakeLstmEPredictor(1000, w).status(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("2^27")));
  // In-memory models with a wrong tensor size or a bad field are not written.
  LstmEModel m = model_;
  m.head_bias.pop_back();
  EXPECT_THAT(WriteLstmEModel(m, WriteTemp("never_e.lstm", "")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("head_bias has 2 values")));
  m = model_;
  m.horizons = {4, 4, 20};
  EXPECT_THAT(LstmEWeights::FromModel(m, "mem").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not strictly increasing")));
}

}  // namespace
}  // namespace moecast
