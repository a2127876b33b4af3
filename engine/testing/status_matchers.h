// GoogleTest helpers for absl::Status, which Debian 12's Abseil lacks.
//
//   EXPECT_OK(engine->RegisterJob(spec));
//   ASSERT_OK_AND_ASSIGN(auto r, engine->Ingest("a", in));
//   EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
//                                HasSubstr("layer 3")));
#ifndef MOECAST_ENGINE_TESTING_STATUS_MATCHERS_H_
#define MOECAST_ENGINE_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER_P2(StatusIs, code, message_matcher,
           std::string("has code ") + absl::StatusCodeToString(code)) {
  const absl::Status& s = ::moecast::testing::GetStatus(arg);
  *result_listener << "status is " << s.ToString();
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()),
                                       result_listener);
}

}  // namespace moecast::testing

#define MOECAST_TESTING_CONCAT_INNER_(a, b) a##b
#define MOECAST_TESTING_CONCAT_(a, b) MOECAST_TESTING_CONCAT_INNER_(a, b)

#define EXPECT_OK(expr)                                               \
  do {                                                                \
    const ::absl::Status moecast_s_ = ::moecast::testing::GetStatus((expr)); \
    EXPECT_TRUE(moecast_s_.ok()) << moecast_s_.ToString();            \
  } while (0)

#define ASSERT_OK(expr)                                               \
  do {                                                                \
    const ::absl::Status moecast_s_ = ::moecast::testing::GetStatus((expr)); \
    ASSERT_TRUE(moecast_s_.ok()) << moecast_s_.ToString();            \
  } while (0)

#define ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(            \
      MOECAST_TESTING_CONCAT_(moecast_statusor_, __LINE__), lhs, rexpr)

#define ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, rexpr)        \
  auto statusor = (rexpr);                                      \
  ASSERT_TRUE(statusor.ok()) << statusor.status().ToString();   \
  lhs = std::move(statusor).value()

#endif  // MOECAST_ENGINE_TESTING_STATUS_MATCHERS_H_
