// absl::Status <-> grpc::Status: the one place moecast maps status codes
// between the engine and gRPC. Codes map one to one (both follow
// google.rpc.Code); the message is kept as is.
//
//   return ToGrpcStatus(engine->RegisterJob(spec));
//
// Thread-safety: free functions without state.
#ifndef MOECAST_INTEGRATIONS_GRPC_STATUS_CONVERSION_H_
#define MOECAST_INTEGRATIONS_GRPC_STATUS_CONVERSION_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace moecast::grpc_api {

grpc::StatusCode ToGrpcCode(absl::StatusCode code);
absl::StatusCode FromGrpcCode(grpc::StatusCode code);

// Code mapped, message kept. OK maps to OK (without a message).
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace moecast::grpc_api

#endif  // MOECAST_INTEGRATIONS_GRPC_STATUS_CONVERSION_H_
