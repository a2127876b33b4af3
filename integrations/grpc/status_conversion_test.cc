#include "integrations/grpc/status_conversion.h"

#include "gtest/gtest.h"

namespace moecast::grpc_api {
namespace {

TEST(StatusConversionTest, EveryCodeRoundTripsWithItsMessage) {
  for (int c = 0; c <= 16; ++c) {
    const auto code = static_cast<absl::StatusCode>(c);
    const absl::Status in(code, code == absl::StatusCode::kOk ? "" : "msg 'x' 42");
    const grpc::Status g = ToGrpcStatus(in);
    // Both follow google.rpc.Code.
    EXPECT_EQ(static_cast<int>(g.error_code()), c);
    EXPECT_EQ(g.error_message(), std::string(in.message()));
    EXPECT_EQ(FromGrpcStatus(g), in) << c;
    const auto gcode = static_cast<grpc::StatusCode>(c);
    EXPECT_EQ(ToGrpcCode(FromGrpcCode(gcode)), gcode);
    const grpc::Status back = ToGrpcStatus(FromGrpcStatus(grpc::Status(gcode, "m")));
    EXPECT_EQ(back.error_code(), gcode);
    if (c != 0) {
      EXPECT_EQ(back.error_message(), "m");
    }
  }
}

TEST(StatusConversionTest, NamedCodesMap) {
  EXPECT_EQ(ToGrpcCode(absl::StatusCode::kNotFound), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcCode(absl::StatusCode::kFailedPrecondition),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(FromGrpcCode(grpc::StatusCode::ALREADY_EXISTS),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(FromGrpcCode(grpc::StatusCode::RESOURCE_EXHAUSTED),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(StatusConversionTest, UnknownCodesBecomeUnknown) {
  EXPECT_EQ(ToGrpcCode(static_cast<absl::StatusCode>(99)), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(FromGrpcCode(static_cast<grpc::StatusCode>(99)), absl::StatusCode::kUnknown);
}

}  // namespace
}  // namespace moecast::grpc_api
