// DaemonConfig: moecastd's command line, parsed and checked, as the engine's
// and the server's options.
//
//   MOECAST_ASSIGN_OR_RETURN(DaemonConfig config, ParseDaemonFlags(args));
//   Engine::Create(config.engine); MoecastServer::Start(engine, config.server);
//
// Files named by flags (token, certificates) are read here, so that a
// missing or empty file is reported before the server starts.
//
// Thread-safety: plain functions and value types.
#ifndef MOECAST_INTEGRATIONS_GRPC_DAEMON_CONFIG_H_
#define MOECAST_INTEGRATIONS_GRPC_DAEMON_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/options.h"
#include "integrations/grpc/server.h"

namespace moecast::grpc_api {

struct DaemonConfig {
  EngineOptions engine;
  ServerOptions server;
  // Non-empty: serve Prometheus metrics over HTTP at this host:port.
  std::string metrics_listen;
  bool metrics_per_layer = false;
  bool help = false;        // --help: print DaemonUsage() and exit 0
  // Durability (engine/durability/durable_engine.h). Empty data_dir: state
  // is in memory only (the default).
  std::string data_dir;
  std::string wal_sync = "batch";  // batch | interval | none
  double wal_sync_ms = 10;         // --wal_sync=interval: fdatasync period
  double snapshot_every_s = 300;   // 0: snapshot only on clean shutdown
  int64_t wal_segment_bytes = int64_t{64} << 20;
};

// Parses moecastd's flags (argv without the program name). INVALID_ARGUMENT
// naming the flag for an unknown flag, a malformed or out-of-range value, an
// unreadable or empty file, or an inconsistent combination (e.g. --tls_key
// without --tls_cert).
absl::StatusOr<DaemonConfig> ParseDaemonFlags(const std::vector<std::string>& args);

// The flag list for --help.
std::string DaemonUsage();

// The whole file, or NOT_FOUND / INVALID_ARGUMENT naming `what` and `path`.
absl::StatusOr<std::string> ReadSmallFile(absl::string_view what, const std::string& path);

}  // namespace moecast::grpc_api

#endif  // MOECAST_INTEGRATIONS_GRPC_DAEMON_CONFIG_H_
