#include "engine/predict/predictor_factory.h"

#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

TEST(PredictorFactoryTest, BuildsEveryKnownName) {
  struct Case {
    const char* text;
    const char* name;
  };
  for (const Case& c : {Case{"last_value", "last_value"},
                        Case{"sw_avg", "sw_avg(100)"},
                        Case{" sw_avg( 20 ) ", "sw_avg(20)"},
                        Case{"ema", "ema(0.9)"},
                        Case{"ema(0.50)", "ema(0.5)"},
                        Case{"holt", "holt"},
                        Case{"ewm", "ewm(1000)"},
                        Case{"ewm(300)", "ewm(300)"},
                        Case{"arima", "arima(5,1,5)"},
                        Case{"arima(1,1,1)", "arima(1,1,1)"},
                        Case{"arima(2,0,1)", "arima(2,0,1)"},
                        Case{"arima(1,1,1)+drift", "arima(1,1,1)+drift"}}) {
    ASSERT_OK_AND_ASSIGN(auto p, MakePredictor(c.text, 8));
    EXPECT_EQ(p->name(), c.name) << c.text;
    EXPECT_EQ(p->num_experts(), 8);
  }
  for (const std::string& name : DefaultPredictorNames()) {
    ASSERT_OK_AND_ASSIGN(auto p, MakePredictor(name, 4));
    EXPECT_EQ(p->name(), name);
  }
  for (const std::string& name : LegacyDefaultPredictorNames()) {
    ASSERT_OK_AND_ASSIGN(auto p, MakePredictor(name, 4));
    EXPECT_EQ(p->name(), name);
  }
}

TEST(PredictorFactoryTest, BuildsAnLstmFromItsWeights) {
  ASSERT_OK_AND_ASSIGN(auto p, MakePredictor("lstm(bench/lstm/tiny_moe_m16.lstm)", 16));
  EXPECT_EQ(p->name(), "lstm");
  // The file was trained for 16 experts.
  EXPECT_THAT(MakePredictor("lstm(bench/lstm/tiny_moe_m16.lstm)", 8),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("16")));
  EXPECT_THAT(MakePredictor("lstm(no/such/file.lstm)", 16),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no/such/file.lstm")));
  EXPECT_THAT(MakePredictor("lstm", 16),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lstm(PATH)")));
}

TEST(PredictorFactoryTest, BuildsAPerExpertLstmForAnyNumberOfExperts) {
  for (int M : {8, 16, 32, 256}) {
    ASSERT_OK_AND_ASSIGN(auto p, MakePredictor("lstm_e(bench/lstm/lstm_e_h16.lstm)", M));
    EXPECT_EQ(p->name(), "lstm_e");
    EXPECT_EQ(p->num_experts(), M);
  }
  EXPECT_THAT(MakePredictor("lstm_e(bench/lstm/tiny_moe_m16.lstm)", 16),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lstm(PATH)")));
  EXPECT_THAT(MakePredictor("lstm_e(no/such/file.lstm)", 16),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no/such/file.lstm")));
  EXPECT_THAT(MakePredictor("lstm_e", 16),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lstm_e(PATH)")));
}

TEST(PredictorFactoryTest, RejectsBadNames) {
  struct Case {
    const char* text;
    const char* phrase;
  };
  for (const Case& c : {Case{"prophet", "unknown predictor 'prophet'"},
                        Case{"sw_avg(ten)", "parameter 'ten' is not a number"},
                        Case{"sw_avg(0)", "window = 0"},
                        Case{"sw_avg(10,2)", "takes at most 1 parameter"},
                        Case{"ema(1.5)", "theta = 1.5"},
                        Case{"ema(nan)", "not a number"},
                        Case{"ema(0.5", "missing ')'"},
                        Case{"holt(3)", "takes at most 0"},
                        Case{"ewm(0)", "span = 0"},
                        Case{"ewm(1.5)", "parameter '1.5' is not a number"},
                        Case{"ewm(3,4)", "takes at most 1 parameter"},
                        Case{"last_value(1)", "takes at most 0"},
                        Case{"arima(1,1)", "takes 3 parameters"},
                        Case{"arima(1,x,1)", "parameter 'x' is not a number"},
                        Case{"arima(11,1,1)", "ArimaOptions.p must be in [0, 10], got 11"},
                        Case{"ema(0.5)+drift", "only arima takes +drift"}}) {
    EXPECT_THAT(MakePredictor(c.text, 8),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.phrase)))
        << c.text;
  }
}

}  // namespace
}  // namespace moecast
