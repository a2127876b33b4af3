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
//
// With --data_dir DIR every accepted mutation is logged to DIR/wal before it
// is acknowledged (--wal_sync says when it is fdatasynced), snapshot sets are
// written every --snapshot_every_s and on clean shutdown, and a restart
// recovers the state (docs/RELIABILITY.md).
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
#include "engine/durability/durable_engine.h"
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

  namespace dur = moecast::durability;
  absl::StatusOr<std::unique_ptr<moecast::Engine>> engine;
  dur::DurableEngine* durable = nullptr;
  if (config->data_dir.empty()) {
    engine = moecast::Engine::Create(config->engine);
  } else {
    dur::DurableOptions d;
    d.dir = config->data_dir;
    d.sync = config->wal_sync == "interval" ? dur::WalSyncMode::kInterval
             : config->wal_sync == "none"   ? dur::WalSyncMode::kNone
                                            : dur::WalSyncMode::kBatch;
    d.sync_interval = absl::Milliseconds(config->wal_sync_ms);
    d.segment_bytes = static_cast<uint64_t>(config->wal_segment_bytes);
    d.sync_each_call = false;  // the service commits once per RPC
    absl::StatusOr<std::unique_ptr<dur::DurableEngine>> opened =
        dur::DurableEngine::Open(config->engine, d);
    if (opened.ok()) {
      durable = opened->get();
      std::printf("moecastd: data directory %s (wal_sync=%s): recovered %s\n",
                  d.dir.c_str(), config->wal_sync.c_str(),
                  durable->recovery().Summary().c_str());
      if (!durable->space_reservation()) {
        std::printf("moecastd: warning: the file system cannot reserve log space; a full "
                    "disk is detected after a step is applied and stops writes until "
                    "restart\n");
      }
      std::fflush(stdout);
      engine = std::unique_ptr<moecast::Engine>(std::move(*opened));
    } else {
      engine = opened.status();
    }
    config->server.service.commit_writes = [durable] { return durable->Commit(); };
  }
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
  auto checkpoint = [&](const char* why) {
    if (durable == nullptr || !durable->snapshots_supported()) return;
    absl::StatusOr<uint64_t> set = durable->Checkpoint();
    if (set.ok()) {
      std::printf("moecastd: snapshot set %llu written (%s)\n",
                  static_cast<unsigned long long>(*set), why);
    } else {
      std::fprintf(stderr, "moecastd: snapshot (%s) failed: %s\n", why,
                   set.status().ToString().c_str());
    }
    std::fflush(stdout);
  };
  if (durable != nullptr && !durable->snapshots_supported()) {
    std::printf("moecastd: the engine cannot restore snapshots; recovery replays the "
                "whole log\n");
    std::fflush(stdout);
  }
  std::thread poller([&] {
    std::unique_lock<std::mutex> lock(mu);
    auto next_snapshot = std::chrono::steady_clock::now() +
                         std::chrono::milliseconds(static_cast<int64_t>(
                             config->snapshot_every_s * 1000));
    while (!cv.wait_for(lock, std::chrono::seconds(1), [&] { return stop; })) {
      if (config->snapshot_every_s > 0 && std::chrono::steady_clock::now() >= next_snapshot) {
        lock.unlock();
        checkpoint("periodic");
        lock.lock();
        next_snapshot = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(
                            static_cast<int64_t>(config->snapshot_every_s * 1000));
      }
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
  if (durable != nullptr) {
    checkpoint("shutdown");
    if (absl::Status s = durable->Close(); !s.ok()) {
      std::fprintf(stderr, "moecastd: closing the write-ahead log: %s\n",
                   s.ToString().c_str());
    }
  }
  std::printf("moecastd: stopped\n");
  return 0;
}
