#include "integrations/grpc/daemon_config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "integrations/cli/flags.h"

namespace moecast::grpc_api {
namespace {

constexpr int64_t kMaxFileBytes = 1 << 20;  // certificates and tokens are small

struct RawFlags {
  std::string listen = "127.0.0.1:50051";
  int64_t max_message_bytes = 64 << 20;
  int64_t max_jobs = EngineOptions().max_jobs;
  int64_t max_layer_experts = EngineOptions().max_layer_experts;
  int64_t max_total_memory_bytes = EngineOptions().max_total_history_bytes;
  int64_t history_steps = EngineOptions().history_capacity_steps;
  int64_t analysis_threads = 0;
  int64_t analysis_niceness = EngineOptions().analysis.thread_niceness;
  int64_t max_concurrent_streams = ServiceOptions().max_concurrent_streams;
  double idle_job_expiry_s = 0;
  std::string auth_token_file, tls_cert, tls_key, tls_client_ca;
  std::string metrics_listen;
  bool metrics_per_layer = false;
  std::string data_dir;
  std::string wal_sync = "batch";
  double wal_sync_ms = 10;
  double snapshot_every_s = 300;
  int64_t wal_segment_bytes = int64_t{64} << 20;
};

void Declare(cli::FlagSet& flags, RawFlags& f) {
  flags.AddString("listen", &f.listen,
                  "host:port to listen on (port 0: a free port, printed)");
  flags.AddInt("max_message_bytes", &f.max_message_bytes,
               "largest gRPC message received or sent", false, 1024,
               std::numeric_limits<int>::max());
  flags.AddInt("max_jobs", &f.max_jobs, "most jobs registered at once", false, 1,
               std::numeric_limits<int>::max());
  flags.AddInt("max_layer_experts", &f.max_layer_experts,
               "most layers x experts per job", false, 1);
  flags.AddInt("max_total_memory_bytes", &f.max_total_memory_bytes,
               "most bytes of history and forecasting state over all jobs", false, 1);
  flags.AddInt("history_steps", &f.history_steps,
               "steps kept per (job, layer) history ring", false, 2,
               std::numeric_limits<int>::max());
  flags.AddInt("analysis_threads", &f.analysis_threads,
               "threads analysing committed steps (0: one fewer than the cores)", false, 0,
               256);
  flags.AddInt("analysis_niceness", &f.analysis_niceness,
               "niceness added to the analysis threads, so ingest keeps priority", false,
               0, 19);
  flags.AddInt("max_concurrent_streams", &f.max_concurrent_streams,
               "most Ingest and Watch streams open at once", false, 1,
               std::numeric_limits<int>::max());
  flags.AddDouble("idle_job_expiry_s", &f.idle_job_expiry_s,
                  "delete jobs that received no step for this many seconds (0: never)");
  flags.AddString("auth_token_file", &f.auth_token_file,
                  "file holding the bearer token calls must carry");
  flags.AddString("tls_cert", &f.tls_cert, "server certificate chain (PEM): turns TLS on");
  flags.AddString("tls_key", &f.tls_key, "server private key (PEM)");
  flags.AddString("tls_client_ca", &f.tls_client_ca,
                  "CA (PEM) that client certificates must chain to: mutual TLS");
  flags.AddString("metrics_listen", &f.metrics_listen,
                  "host:port for Prometheus metrics over HTTP at /metrics (default: off)");
  flags.AddBool("metrics_per_layer", &f.metrics_per_layer,
                "also export per-layer metric series (more series per job)");
  flags.AddString("data_dir", &f.data_dir,
                  "directory for the write-ahead log and snapshots: state survives "
                  "restarts and crashes (default: in memory only)");
  flags.AddString("wal_sync", &f.wal_sync,
                  "batch: fdatasync before answering each RPC that wrote (survives power "
                  "loss); interval: fdatasync every --wal_sync_ms in the background (a "
                  "crash loses nothing, power loss at most that window); none: leave it "
                  "to the kernel");
  flags.AddDouble("wal_sync_ms", &f.wal_sync_ms,
                  "--wal_sync=interval: milliseconds between background fdatasyncs");
  flags.AddDouble("snapshot_every_s", &f.snapshot_every_s,
                  "seconds between snapshot sets (then older log segments are deleted; "
                  "0: only on clean shutdown)");
  flags.AddInt("wal_segment_bytes", &f.wal_segment_bytes,
               "write-ahead log segment size in bytes", false, 4096);
}

}  // namespace

absl::StatusOr<std::string> ReadSmallFile(absl::string_view what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(what, " '", path, "': cannot open: ",
                                            std::strerror(errno)));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  std::string data = buf.str();
  if (data.size() > static_cast<size_t>(kMaxFileBytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " '", path, "': ", data.size(), " bytes, more than ", kMaxFileBytes));
  }
  if (absl::StripAsciiWhitespace(data).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", path, "' is empty"));
  }
  return data;
}

std::string DaemonUsage() {
  cli::FlagSet flags("moecastd");
  RawFlags f;
  Declare(flags, f);
  return absl::StrCat("usage: moecastd [flags]\n", flags.Usage());
}

absl::StatusOr<DaemonConfig> ParseDaemonFlags(const std::vector<std::string>& args) {
  cli::FlagSet flags("moecastd");
  RawFlags f;
  Declare(flags, f);
  if (absl::Status s = flags.Parse(args); !s.ok()) return s;
  DaemonConfig config;
  if (flags.help_requested()) {
    config.help = true;
    return config;
  }
  if (f.listen.empty()) return absl::InvalidArgumentError("--listen is empty");
  if (f.metrics_per_layer && f.metrics_listen.empty()) {
    return absl::InvalidArgumentError("--metrics_per_layer needs --metrics_listen");
  }
  if (f.data_dir.empty() && (f.wal_sync != "batch" || f.wal_sync_ms != 10 ||
                             f.snapshot_every_s != 300)) {
    return absl::InvalidArgumentError(
        "--wal_sync, --wal_sync_ms and --snapshot_every_s need --data_dir");
  }
  if (f.wal_sync != "batch" && f.wal_sync != "interval" && f.wal_sync != "none") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--wal_sync=", f.wal_sync, " must be batch, interval or none"));
  }
  if (!std::isfinite(f.wal_sync_ms) || f.wal_sync_ms <= 0 || f.wal_sync_ms > 60000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--wal_sync_ms=", f.wal_sync_ms, " must be in (0, 60000]"));
  }
  if (f.wal_sync_ms != 10 && f.wal_sync != "interval") {
    return absl::InvalidArgumentError("--wal_sync_ms needs --wal_sync=interval");
  }
  if (!std::isfinite(f.snapshot_every_s) || f.snapshot_every_s < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--snapshot_every_s=", f.snapshot_every_s, " must be >= 0 (0: only at shutdown)"));
  }
  config.data_dir = f.data_dir;
  config.wal_sync = f.wal_sync;
  config.wal_sync_ms = f.wal_sync_ms;
  config.snapshot_every_s = f.snapshot_every_s;
  config.wal_segment_bytes = f.wal_segment_bytes;
  config.metrics_listen = f.metrics_listen;
  config.metrics_per_layer = f.metrics_per_layer;
  config.server.listen = f.listen;
  config.server.max_message_bytes = static_cast<int>(f.max_message_bytes);
  config.server.service.max_concurrent_streams = static_cast<int>(f.max_concurrent_streams);
  config.engine.max_jobs = static_cast<int>(f.max_jobs);
  config.engine.max_layer_experts = f.max_layer_experts;
  config.engine.max_total_history_bytes = f.max_total_memory_bytes;
  config.engine.max_job_history_bytes =
      std::min(config.engine.max_job_history_bytes, f.max_total_memory_bytes);
  config.engine.history_capacity_steps = static_cast<int>(f.history_steps);
  config.engine.analysis.step_threads = static_cast<int>(f.analysis_threads);
  config.engine.analysis.thread_niceness = static_cast<int>(f.analysis_niceness);
  if (!std::isfinite(f.idle_job_expiry_s) || f.idle_job_expiry_s < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--idle_job_expiry_s=", f.idle_job_expiry_s, " must be >= 0 (0: never)"));
  }
  if (f.idle_job_expiry_s > 0) {
    config.engine.idle_job_expiry = absl::Seconds(f.idle_job_expiry_s);
  }
  if (!f.auth_token_file.empty()) {
    absl::StatusOr<std::string> token = ReadSmallFile("--auth_token_file", f.auth_token_file);
    if (!token.ok()) return token.status();
    absl::string_view t = absl::StripAsciiWhitespace(*token);
    if (t.find_first_of(" \t\r\n") != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--auth_token_file '", f.auth_token_file,
          "': the token must be one word (it holds whitespace)"));
    }
    config.server.auth_token = std::string(t);
  }
  if (f.tls_cert.empty() != f.tls_key.empty()) {
    return absl::InvalidArgumentError(
        f.tls_cert.empty() ? "--tls_key needs --tls_cert" : "--tls_cert needs --tls_key");
  }
  if (!f.tls_client_ca.empty() && f.tls_cert.empty()) {
    return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
  }
  if (!f.tls_cert.empty()) {
    absl::StatusOr<std::string> cert = ReadSmallFile("--tls_cert", f.tls_cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadSmallFile("--tls_key", f.tls_key);
    if (!key.ok()) return key.status();
    if (cert->find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls_cert '", f.tls_cert, "' holds no PEM certificate (BEGIN CERTIFICATE)"));
    }
    if (key->find("PRIVATE KEY-----") == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls_key '", f.tls_key, "' holds no PEM private key (BEGIN ... PRIVATE KEY)"));
    }
    config.server.tls.cert_chain_pem = *cert;
    config.server.tls.private_key_pem = *key;
    if (!f.tls_client_ca.empty()) {
      absl::StatusOr<std::string> ca = ReadSmallFile("--tls_client_ca", f.tls_client_ca);
      if (!ca.ok()) return ca.status();
      if (ca->find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--tls_client_ca '", f.tls_client_ca,
            "' holds no PEM certificate (BEGIN CERTIFICATE)"));
      }
      config.server.tls.client_ca_pem = *ca;
    }
  }
  return config;
}

}  // namespace moecast::grpc_api
