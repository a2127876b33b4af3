// Status propagation helpers.
//
// Debian 12's Abseil (20220623) predates ABSL_RETURN_IF_ERROR and
// ABSL_ASSIGN_OR_RETURN; these are the small equivalents moecast uses.
//
//   MOECAST_RETURN_IF_ERROR(ValidateSpec(spec));
//   MOECAST_ASSIGN_OR_RETURN(auto reader, TraceReader::Open(path));
#ifndef MOECAST_ENGINE_STATUS_MACROS_H_
#define MOECAST_ENGINE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MOECAST_RETURN_IF_ERROR(expr)                \
  do {                                               \
    ::absl::Status moecast_status_ = (expr);         \
    if (!moecast_status_.ok()) return moecast_status_; \
  } while (0)

#define MOECAST_STATUS_CONCAT_INNER_(a, b) a##b
#define MOECAST_STATUS_CONCAT_(a, b) MOECAST_STATUS_CONCAT_INNER_(a, b)

#define MOECAST_ASSIGN_OR_RETURN(lhs, rexpr) \
  MOECAST_ASSIGN_OR_RETURN_IMPL_(            \
      MOECAST_STATUS_CONCAT_(moecast_statusor_, __LINE__), lhs, rexpr)

#define MOECAST_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();   \
  lhs = std::move(statusor).value()

#endif  // MOECAST_ENGINE_STATUS_MACROS_H_
