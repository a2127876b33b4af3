// MoecastServer: a grpc::Server serving moecast.v1.Moecast over an Engine,
// with the grpc.health.v1 health service and server reflection.
//
//   ServerOptions options;
//   options.listen = "127.0.0.1:0";          // port 0: pick a free one
//   MOECAST_ASSIGN_OR_RETURN(auto server, MoecastServer::Start(engine, options));
//   server->port();                          // the bound port
//   server->Shutdown();                      // stop accepting, finish in-flight
//
// Thread-safety: Start/Shutdown/Wait from any thread; Shutdown is idempotent.
#ifndef MOECAST_INTEGRATIONS_GRPC_SERVER_H_
#define MOECAST_INTEGRATIONS_GRPC_SERVER_H_

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "grpcpp/server.h"
#include "integrations/grpc/service.h"

namespace moecast::grpc_api {

// TLS for the listening port. PEM contents, not file names.
struct TlsOptions {
  // The server's certificate chain and private key (both set, or TLS is off).
  std::string cert_chain_pem;
  std::string private_key_pem;
  // Set: mutual TLS. Clients must present a certificate signed by this CA.
  std::string client_ca_pem;

  bool enabled() const { return !cert_chain_pem.empty(); }
};

struct ServerOptions {
  // host:port to listen on. Port 0 picks a free port.
  std::string listen = "127.0.0.1:50051";
  // Off (default): insecure (plaintext) credentials.
  TlsOptions tls;
  // Non-empty: every moecast.v1 call must carry the metadata
  // "authorization: Bearer <auth_token>", else UNAUTHENTICATED. (The
  // grpc.health.v1 and reflection services stay open.)
  std::string auth_token;
  // Largest message received or sent, in bytes (> 0).
  int max_message_bytes = 64 << 20;
  // In-flight calls get this long to finish on Shutdown before they are
  // cancelled.
  absl::Duration shutdown_grace = absl::Seconds(5);
  ServiceOptions service;
};

class MoecastServer {
 public:
  // Builds and starts the server. `engine` is not owned and must outlive the
  // server. INVALID_ARGUMENT for bad options, UNAVAILABLE if the address
  // cannot be bound.
  static absl::StatusOr<std::unique_ptr<MoecastServer>> Start(
      Engine* engine, const ServerOptions& options);

  ~MoecastServer();  // Shuts down.

  // The bound port.
  int port() const { return port_; }

  // The service's counters (for metrics).
  ServiceStats Stats() const { return service_->Stats(); }

  // Stops accepting calls, ends Watch streams, and waits for in-flight calls
  // (up to shutdown_grace, then cancels them).
  void Shutdown();

  // Blocks until the server has shut down.
  void Wait();

 private:
  MoecastServer() = default;

  ServerOptions options_;
  std::unique_ptr<MoecastService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::mutex shutdown_mu_;
  bool shut_down_ = false;
};

}  // namespace moecast::grpc_api

#endif  // MOECAST_INTEGRATIONS_GRPC_SERVER_H_
