#include "integrations/grpc/server.h"

#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace moecast::grpc_api {

absl::StatusOr<std::unique_ptr<MoecastServer>> MoecastServer::Start(
    Engine* engine, const ServerOptions& options) {
  if (engine == nullptr) return absl::InvalidArgumentError("engine is null");
  if (options.listen.empty()) return absl::InvalidArgumentError("listen address is empty");
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_bytes must be > 0, got ", options.max_message_bytes));
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<MoecastServer> server(new MoecastServer());
  server->options_ = options;
  server->service_ = std::make_unique<MoecastService>(engine, options.service);

  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("could not listen on '", options.listen, "'"));
  }
  return server;
}

MoecastServer::~MoecastServer() { Shutdown(); }

void MoecastServer::Shutdown() {
  std::lock_guard<std::mutex> lock(shutdown_mu_);
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  service_->BeginShutdown();
  const auto grace = absl::ToChronoNanoseconds(options_.shutdown_grace);
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::duration_cast<std::chrono::system_clock::duration>(grace));
}

void MoecastServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace moecast::grpc_api
