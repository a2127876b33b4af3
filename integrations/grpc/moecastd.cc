// moecastd: the moecast gRPC server.
//
//   moecastd [--listen ADDR] [limits] [--auth_token_file F]
//            [--tls_cert F --tls_key F [--tls_client_ca F]]
//
// --listen defaults to 127.0.0.1:50051 (port 0 picks a free port; the bound
// port is printed). `moecastd --help` lists every flag. SIGTERM or SIGINT
// stop accepting calls, let in-flight ones finish (5 s grace), and exit 0.
// Once a second the daemon commits timed-out multi-source steps and deletes
// jobs idle longer than --idle_job_expiry_s.
#include <pthread.h>
#include <signal.h>

#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "engine/engine.h"
#include "integrations/grpc/daemon_config.h"
#include "integrations/grpc/server.h"
#include "integrations/metrics/metrics_server.h"
#include "integrations/metrics/prometheus_text.h"

int main(int argc, char** argv) {
  namespace api = moecast::grpc_api;
  absl::StatusOr<api::DaemonConfig> config =
      api::ParseDaemonFlags(std::vector<std::string>(argv + 1, argv + argc));
  if (!config.ok()) {
    std::fprintf(stderr, "moecastd: %s (moecastd --help lists the flags)\n",
                 std::string(config.status().message()).c_str());
    return 2;
  }
  if (config->help) {
    std::printf("%s", api::DaemonUsage().c_str());
    return 0;
  }
  // Block the stop signals in every thread (gRPC's included); main waits for
  // them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  absl::StatusOr<std::unique_ptr<moecast::Engine>> engine =
      moecast::Engine::Create(config->engine);
  if (!engine.ok()) {
    std::fprintf(stderr, "moecastd: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<api::MoecastServer>> server =
      api::MoecastServer::Start(engine->get(), config->server);
  if (!server.ok()) {
    std::fprintf(stderr, "moecastd: %s\n", server.status().ToString().c_str());
    return 1;
  }
  const api::ServerOptions& so = config->server;
  std::printf("moecastd: listening on %s (port %d)%s%s%s\n", so.listen.c_str(),
              (*server)->port(),
              so.tls.enabled() ? ", TLS" : ", plaintext",
              so.tls.client_ca_pem.empty() ? "" : " with client certificates",
              so.auth_token.empty() ? "" : ", bearer token required");
  std::fflush(stdout);

  std::unique_ptr<moecast::metrics::MetricsServer> metrics;
  if (!config->metrics_listen.empty()) {
    moecast::metrics::MetricsOptions metrics_options;
    metrics_options.per_layer = config->metrics_per_layer;
    api::MoecastServer* grpc_server = server->get();
    moecast::Engine* eng = engine->get();
    absl::StatusOr<std::unique_ptr<moecast::metrics::MetricsServer>> started =
        moecast::metrics::MetricsServer::Start(
            config->metrics_listen, [eng, grpc_server, metrics_options] {
              const api::ServiceStats stats = grpc_server->Stats();
              return moecast::metrics::RenderMetrics(*eng, &stats, metrics_options);
            });
    if (!started.ok()) {
      std::fprintf(stderr, "moecastd: %s\n", started.status().ToString().c_str());
      return 1;
    }
    metrics = *std::move(started);
    std::printf("moecastd: metrics on http://%s/metrics (port %d)\n",
                config->metrics_listen.c_str(), metrics->port());
    std::fflush(stdout);
  }

  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::thread poller([&] {
    std::unique_lock<std::mutex> lock(mu);
    while (!cv.wait_for(lock, std::chrono::seconds(1), [&] { return stop; })) {
      (*engine)->Poll();
      const std::vector<std::string> expired = (*engine)->ExpireIdleJobs();
      if (!expired.empty()) {
        std::printf("moecastd: expired idle jobs: %s\n",
                    absl::StrJoin(expired, ", ").c_str());
        std::fflush(stdout);
      }
    }
  });

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::printf("moecastd: signal %d, shutting down\n", sig);
  std::fflush(stdout);
  if (metrics != nullptr) metrics->Stop();
  (*server)->Shutdown();
  (*server)->Wait();
  {
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
  }
  cv.notify_all();
  poller.join();
  server->reset();
  std::printf("moecastd: stopped\n");
  return 0;
}
