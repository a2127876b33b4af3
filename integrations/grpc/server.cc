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
  if (options.service.max_concurrent_streams < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_concurrent_streams must be >= 1, got ",
                     options.service.max_concurrent_streams));
  }
  const TlsOptions& tls = options.tls;
  if (tls.cert_chain_pem.empty() != tls.private_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both the certificate chain and the private key (one is empty)");
  }
  if (!tls.client_ca_pem.empty() && !tls.enabled()) {
    return absl::InvalidArgumentError(
        "a client CA (mutual TLS) needs the server certificate and key too");
  }
  if (options.auth_token.find_first_of(" \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError("the auth token contains whitespace");
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<MoecastServer> server(new MoecastServer());
  server->options_ = options;
  ServiceOptions service_options = options.service;
  service_options.auth_token = options.auth_token;
  server->service_ = std::make_unique<MoecastService>(engine, service_options);

  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (tls.enabled()) {
    grpc::SslServerCredentialsOptions ssl(
        tls.client_ca_pem.empty()
            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = tls.client_ca_pem;
    ssl.pem_key_cert_pairs.push_back({tls.private_key_pem, tls.cert_chain_pem});
    credentials = grpc::SslServerCredentials(ssl);
  } else {
    credentials = grpc::InsecureServerCredentials();
  }

  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "could not listen on '", options.listen, "'",
        tls.enabled() ? " (or the TLS certificate/key could not be loaded)" : ""));
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
