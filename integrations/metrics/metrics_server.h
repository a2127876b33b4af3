// MetricsServer: serves a metrics page over HTTP at /metrics (anything else is
// 404), for Prometheus to scrape.
//
//   MOECAST_ASSIGN_OR_RETURN(auto server, MetricsServer::Start("127.0.0.1:9464",
//       [&] { return RenderMetrics(*engine, nullptr, {}); }));
//   server->port();   // the bound port (":0" picks a free one)
//
// Plain HTTP: bind it to loopback or a trusted network (it serves counts and
// job ids, no control).
//
// Thread-safety: `render` is called from the server's threads, possibly
// concurrently; Stop is idempotent and called by the destructor.
#ifndef MOECAST_INTEGRATIONS_METRICS_METRICS_SERVER_H_
#define MOECAST_INTEGRATIONS_METRICS_METRICS_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace moecast::metrics {

class MetricsServer {
 public:
  // Listens on `listen` ("host:port"). INVALID_ARGUMENT for a malformed
  // address, UNAVAILABLE when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& listen, std::function<std::string()> render);

  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  void Stop();

 private:
  MetricsServer() = default;

  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace moecast::metrics

#endif  // MOECAST_INTEGRATIONS_METRICS_METRICS_SERVER_H_
