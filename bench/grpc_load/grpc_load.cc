// gRPC load bench: steps of per-expert counts through a MoecastServer over
// loopback, next to the same ingestion done in-process (Engine::Ingest called
// directly, same shape, same job settings, same threads, same steps) in the
// same process, so the report is a ratio against a baseline measured under
// the same machine load.
//
//   bazel build //bench/grpc_load:grpc_load
//   bazel-bin/bench/grpc_load/grpc_load --shape=58x256 --job=history
//       --mode=unary --batch=1 --clients=4 --jobs=4 --seconds=2 --repetitions=3
//       (one command line)
//   bash bench/grpc_load/run_load.sh [--short]   # the standard matrix + table
//
// The server is an in-process MoecastServer on 127.0.0.1:0 (a fresh Engine
// with default EngineOptions per repetition, as moecastd uses), or an
// external moecastd with --server=HOST:PORT (jobs get unique ids and are
// deleted afterwards). Each client is a thread with its own channel (its own
// TCP connection: local subchannel pool).
//
// Jobs: --jobs=J jobs, client c on job c % J. A job with several clients is
// a multi-source job (one source per client, each sending its share of the
// tokens), since calls on one job must carry increasing step numbers per
// source; steps/s then counts the parts received, and committed/s the steps
// the engine committed. (Not in the standard matrix: the in-process sources
// run freely, one gets ahead by max_pending_steps and the engine rejects its
// steps with RESOURCE_EXHAUSTED; rejected steps are reported and not counted
// in steps/s.) --job=history: forecasting and health off (the job
// only keeps history); --job=default: forecasting and health on (the engine's
// default predictor bank and health monitor run on the ingest path).
//
// Modes:
//   unary   IngestBatch with --batch=B steps per call; latency per call.
//   stream  the client-streaming Ingest: every client opens one stream for
//           the measured window and writes batches of B steps; throughput is
//           the steps the server summarized over the time to the summary
//           (latency is only the time Write blocks, flow control included).
//   mixed   unary, plus --forecast_clients clients call Forecast every
//           --forecast_every steps they ingested (needs --job=default).
//
// Steps come from a pool generated before timing (load_util.h: Zipf-skewed
// per-layer proportions, per-step Dirichlet jitter, multinomial counts of
// tokens*K assignments); only the step numbers change between calls.
//
// Each repetition: a warm-up (not counted) then the measured window, once
// through gRPC and once in-process (order alternating between repetitions).
// Reported: medians over repetitions of steps/s and of per-call p50/p99/p999
// latencies (nearest rank over every sample of the window), and the median
// of the per-repetition ratios gRPC / in-process.
//
// Output: a human table on stdout; --json_out=FILE appends the report as
// one JSON line.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/grpc_load/load_util.h"
#include "engine/engine.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "integrations/grpc/server.h"
#include "integrations/grpc/service.h"
#include "moecast/v1/moecast.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace moecast::grpc_load {
namespace {

namespace pb = ::moecast::v1;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr double kGoalStepsPerSecond = 5000;
constexpr double kGoalP99Us = 2000;

struct Config {
  std::string server;  // empty: in-process MoecastServer
  std::string shape_text = "58x256";
  Shape shape;
  int top_k = 0;
  std::string job = "history";  // history | default
  std::string mode = "unary";   // unary | stream | mixed
  int batch = 1;
  int clients = 1;
  int jobs = 1;
  int forecast_every = 50;
  int forecast_clients = 1;
  std::vector<int> forecast_horizons = {100};
  double seconds = 2.0;
  double warmup = 0.5;
  int repetitions = 3;
  int pool_steps = 64;
  double tokens = 8192;
  uint64_t seed = 1;
  bool skip_inproc = false;
  std::string json_out;
  std::string label;

  bool forecasting() const { return job == "default"; }
  bool forecasts() const { return mode == "mixed"; }
  int sources_of(int job_index) const {
    int n = 0;
    for (int c = 0; c < clients; ++c) n += (c % jobs == job_index);
    return n;
  }
};

void Usage() {
  std::fprintf(
      stderr,
      "usage: grpc_load [flags]\n"
      "  --server=HOST:PORT      target an external moecastd (default: in-process)\n"
      "  --shape=LxM             58x256 (K=8, default) or 16x64 (K=2) or any\n"
      "  --top_k=K               override K\n"
      "  --job=history|default   forecasting+health off (default) or on\n"
      "  --mode=unary|stream|mixed\n"
      "  --batch=B               steps per IngestBatch call / stream message (1)\n"
      "  --clients=N             client threads, one channel each (1)\n"
      "  --jobs=J                jobs; client c on job c %% J (1)\n"
      "  --forecast_every=F      mixed: steps between Forecast calls (50)\n"
      "  --forecast_clients=C    mixed: clients that call Forecast (1)\n"
      "  --forecast_horizons=LIST mixed: horizons asked (100)\n"
      "  --seconds=S             measured window per phase (2)\n"
      "  --warmup=S              warm-up per phase, not counted (0.5)\n"
      "  --repetitions=R         (3)\n"
      "  --pool_steps=P          generated steps per client (64)\n"
      "  --tokens=T              tokens per step (8192)\n"
      "  --seed=N                generator seed (1)\n"
      "  --skip_inproc           no in-process baseline\n"
      "  --label=TEXT            case name in the report\n"
      "  --json_out=FILE         append the JSON report as one line\n");
}

bool ParseFlags(int argc, char** argv, Config* cfg) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return false;
    if (arg == "--skip_inproc") {
      cfg->skip_inproc = true;
      continue;
    }
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      std::fprintf(stderr, "bad argument '%s' (flags are --name=value)\n", arg.c_str());
      return false;
    }
    const std::string name = arg.substr(2, eq - 2);
    const std::string value = arg.substr(eq + 1);
    bool ok = true;
    auto as_int = [&](int* out, int min) {
      ok = absl::SimpleAtoi(value, out) && *out >= min;
    };
    auto as_double = [&](double* out, double min) {
      ok = absl::SimpleAtod(value, out) && *out >= min;
    };
    if (name == "server") {
      cfg->server = value;
    } else if (name == "shape") {
      cfg->shape_text = value;
    } else if (name == "top_k") {
      as_int(&cfg->top_k, 1);
    } else if (name == "job") {
      cfg->job = value;
      ok = value == "history" || value == "default";
    } else if (name == "mode") {
      cfg->mode = value;
      ok = value == "unary" || value == "stream" || value == "mixed";
    } else if (name == "batch") {
      as_int(&cfg->batch, 1);
    } else if (name == "clients") {
      as_int(&cfg->clients, 1);
    } else if (name == "jobs") {
      as_int(&cfg->jobs, 1);
    } else if (name == "forecast_every") {
      as_int(&cfg->forecast_every, 1);
    } else if (name == "forecast_clients") {
      as_int(&cfg->forecast_clients, 0);
    } else if (name == "forecast_horizons") {
      absl::StatusOr<std::vector<int>> h = ParseIntList(value);
      ok = h.ok() && !h->empty();
      if (ok) cfg->forecast_horizons = *h;
    } else if (name == "seconds") {
      as_double(&cfg->seconds, 0.01);
    } else if (name == "warmup") {
      as_double(&cfg->warmup, 0);
    } else if (name == "repetitions") {
      as_int(&cfg->repetitions, 1);
    } else if (name == "pool_steps") {
      as_int(&cfg->pool_steps, 1);
    } else if (name == "tokens") {
      as_double(&cfg->tokens, 1);
    } else if (name == "seed") {
      int s = 0;
      as_int(&s, 0);
      cfg->seed = static_cast<uint64_t>(s);
    } else if (name == "label") {
      cfg->label = value;
    } else if (name == "json_out") {
      cfg->json_out = value;
    } else {
      std::fprintf(stderr, "unknown flag '--%s'\n", name.c_str());
      return false;
    }
    if (!ok) {
      std::fprintf(stderr, "bad value for --%s: '%s'\n", name.c_str(), value.c_str());
      return false;
    }
  }
  absl::StatusOr<Shape> shape = ParseShape(cfg->shape_text, cfg->top_k);
  if (!shape.ok()) {
    std::fprintf(stderr, "%s\n", std::string(shape.status().message()).c_str());
    return false;
  }
  cfg->shape = *shape;
  if (cfg->clients % cfg->jobs != 0) {
    std::fprintf(stderr, "--clients must be a multiple of --jobs\n");
    return false;
  }
  if (cfg->mode == "mixed" && !cfg->forecasting()) {
    std::fprintf(stderr, "--mode=mixed needs --job=default (Forecast needs forecasting on)\n");
    return false;
  }
  cfg->forecast_clients = std::min(cfg->forecast_clients, cfg->clients);
  if (cfg->label.empty()) {
    cfg->label = absl::StrCat(cfg->shape_text, " ", cfg->job, " ", cfg->mode, " B=",
                              cfg->batch, " c=", cfg->clients, " j=", cfg->jobs);
  }
  return true;
}

// One client's pre-generated requests (B steps each) and its job.
struct ClientData {
  int job = 0;
  int source = 0;
  std::vector<pb::IngestBatchRequest> requests;
};

std::vector<ClientData> MakeClients(const Config& cfg) {
  std::vector<ClientData> out(cfg.clients);
  const int per_request = cfg.batch;
  const int num_requests = std::max(1, (cfg.pool_steps + per_request - 1) / per_request);
  std::vector<double> counts;
  for (int c = 0; c < cfg.clients; ++c) {
    ClientData& d = out[c];
    d.job = c % cfg.jobs;
    d.source = c / cfg.jobs;
    GeneratorOptions gopt;
    gopt.tokens_per_step = cfg.tokens / cfg.sources_of(d.job);
    StepGenerator gen(cfg.shape, gopt, cfg.seed * 1000003 + c);
    d.requests.resize(num_requests);
    for (pb::IngestBatchRequest& r : d.requests) {
      for (int s = 0; s < per_request; ++s) {
        const double tokens = gen.Next(&counts);
        pb::Step* step = r.add_steps();
        step->set_source(d.source);
        step->mutable_counts()->Add(counts.begin(), counts.end());
        step->set_tokens(tokens);
      }
    }
  }
  return out;
}

std::vector<pb::JobSpec> MakeJobSpecs(const Config& cfg, const std::string& prefix) {
  std::vector<pb::JobSpec> specs(cfg.jobs);
  for (int j = 0; j < cfg.jobs; ++j) {
    pb::JobSpec& s = specs[j];
    s.set_job_id(absl::StrCat(prefix, "-", j));
    s.set_num_layers(cfg.shape.layers);
    s.set_num_experts(cfg.shape.experts);
    s.set_top_k(cfg.shape.top_k);
    s.set_num_sources(cfg.sources_of(j));
    s.set_disable_forecasting(!cfg.forecasting());
    s.set_disable_health(!cfg.forecasting());
  }
  return specs;
}

struct ClientResult {
  std::vector<int64_t> ingest_ns;
  std::vector<int64_t> forecast_ns;
  int64_t calls = 0;
  int64_t steps = 0;
  int64_t committed = 0;
  int64_t rejected = 0;
  int64_t errors = 0;
  std::string first_error;
  Clock::time_point window_start{};
  Clock::time_point window_end{};
  void Error(const std::string& e) {
    ++errors;
    if (first_error.empty()) first_error = e;
  }
};

struct PhaseResult {
  double steps_per_s = 0;
  double committed_per_s = 0;
  double wall_s = 0;
  int64_t calls = 0, steps = 0, committed = 0, rejected = 0, errors = 0;
  std::string first_error;
  LatencySummary ingest;
  LatencySummary forecast;
};

PhaseResult Combine(std::vector<ClientResult>& results) {
  PhaseResult p;
  std::vector<int64_t> ingest, forecast;
  Clock::time_point start = Clock::time_point::max(), end = Clock::time_point::min();
  for (ClientResult& r : results) {
    ingest.insert(ingest.end(), r.ingest_ns.begin(), r.ingest_ns.end());
    forecast.insert(forecast.end(), r.forecast_ns.begin(), r.forecast_ns.end());
    p.calls += r.calls;
    p.steps += r.steps;
    p.committed += r.committed;
    p.rejected += r.rejected;
    p.errors += r.errors;
    if (p.first_error.empty()) p.first_error = r.first_error;
    if (r.window_end > r.window_start) {
      start = std::min(start, r.window_start);
      end = std::max(end, r.window_end);
    }
  }
  if (end > start) {
    p.wall_s = std::chrono::duration<double>(end - start).count();
    p.steps_per_s = p.steps / p.wall_s;
    p.committed_per_s = p.committed / p.wall_s;
  }
  p.ingest = Summarize(std::move(ingest));
  p.forecast = Summarize(std::move(forecast));
  return p;
}

int64_t Nanos(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
}

// What a client does per call; gRPC and in-process implement it.
class Backend {
 public:
  virtual ~Backend() = default;
  // Ingests one batch; adds committed/rejected to `r` (or an error).
  virtual void IngestBatch(const pb::IngestBatchRequest& req, ClientResult* r) = 0;
  virtual void Forecast(const std::string& job_id, ClientResult* r) = 0;
};

class GrpcBackend : public Backend {
 public:
  GrpcBackend(const std::string& target, int client, const Config& cfg) : cfg_(cfg) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // own TCP connection
    args.SetInt("moecast.grpc_load.client", client);
    args.SetMaxReceiveMessageSize(256 << 20);
    args.SetMaxSendMessageSize(256 << 20);
    channel_ = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    stub_ = pb::Moecast::NewStub(channel_);
  }
  bool Connect() {
    return channel_->WaitForConnected(std::chrono::system_clock::now() +
                                      std::chrono::seconds(10));
  }
  pb::Moecast::Stub* stub() { return stub_.get(); }

  void IngestBatch(const pb::IngestBatchRequest& req, ClientResult* r) override {
    grpc::ClientContext ctx;
    pb::IngestBatchResponse resp;
    grpc::Status s = stub_->IngestBatch(&ctx, req, &resp);
    if (!s.ok()) {
      r->Error(absl::StrCat("IngestBatch: ", s.error_code(), " ", s.error_message()));
      return;
    }
    r->committed += resp.committed_size();
    r->rejected += resp.rejected();
    if (resp.rejected() > 0 && r->first_error.empty()) {
      for (const pb::StepResult& sr : resp.results()) {
        if (sr.outcome() == pb::STEP_OUTCOME_REJECTED) {
          r->first_error = absl::StrCat("rejected step: ", sr.error_message());
          break;
        }
      }
    }
  }

  void Forecast(const std::string& job_id, ClientResult* r) override {
    grpc::ClientContext ctx;
    pb::ForecastRequest req;
    req.set_job_id(job_id);
    for (int h : cfg_.forecast_horizons) req.add_horizons(h);
    pb::ForecastResponse resp;
    grpc::Status s = stub_->Forecast(&ctx, req, &resp);
    if (!s.ok()) r->Error(absl::StrCat("Forecast: ", s.error_code(), " ", s.error_message()));
  }

 private:
  const Config& cfg_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Moecast::Stub> stub_;
};

class InProcessBackend : public Backend {
 public:
  InProcessBackend(Engine* engine, const Config& cfg) : engine_(engine), cfg_(cfg) {}

  void IngestBatch(const pb::IngestBatchRequest& req, ClientResult* r) override {
    for (const pb::Step& step : req.steps()) {
      StepInput in;
      in.step = step.step();
      in.source = step.source();
      in.counts = absl::MakeConstSpan(step.counts().data(), step.counts().size());
      if (step.has_tokens()) in.tokens = step.tokens();
      absl::StatusOr<IngestResult> res = engine_->Ingest(req.job_id(), in);
      if (!res.ok()) {
        ++r->rejected;
        if (r->first_error.empty()) {
          r->first_error = absl::StrCat("rejected step: ", res.status().ToString());
        }
        continue;
      }
      r->committed += static_cast<int64_t>(res->committed.size());
    }
  }

  void Forecast(const std::string& job_id, ClientResult* r) override {
    ForecastRequest req;
    req.horizons = cfg_.forecast_horizons;
    absl::StatusOr<ForecastResult> res = engine_->Forecast(job_id, req);
    if (!res.ok()) r->Error(absl::StrCat("Forecast: ", res.status().ToString()));
  }

 private:
  Engine* engine_;
  const Config& cfg_;
};

struct Window {
  Clock::time_point start;      // clients begin (warm-up)
  Clock::time_point warm_end;   // measurement begins
  Clock::time_point end;        // no call starts after this
};

Window MakeWindow(const Config& cfg) {
  Window w;
  w.start = Clock::now() + std::chrono::milliseconds(20);
  w.warm_end = w.start + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(cfg.warmup));
  w.end = w.warm_end + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(cfg.seconds));
  return w;
}

void SleepUntil(Clock::time_point t) {
  std::this_thread::sleep_until(t);
}

// Unary (and mixed) client loop, for either backend.
void RunUnaryClient(const Config& cfg, const Window& w, ClientData& data,
                    const std::vector<std::string>& job_ids, Backend& backend,
                    bool forecaster, ClientResult* r) {
  const std::string& job_id = job_ids[data.job];
  for (pb::IngestBatchRequest& req : data.requests) req.set_job_id(job_id);
  int64_t next_step = 0;
  int64_t since_forecast = 0;
  size_t k = 0;
  SleepUntil(w.start);
  while (true) {
    const Clock::time_point t0 = Clock::now();
    if (t0 >= w.end) break;
    const bool measured = t0 >= w.warm_end;
    pb::IngestBatchRequest& req = data.requests[k++ % data.requests.size()];
    for (pb::Step& s : *req.mutable_steps()) s.set_step(next_step++);
    ClientResult scratch;
    ClientResult* target = measured ? r : &scratch;
    const int64_t rejected_before = target->rejected;
    backend.IngestBatch(req, target);
    const Clock::time_point t1 = Clock::now();
    if (measured) {
      if (r->calls == 0) r->window_start = t0;
      r->window_end = t1;
      ++r->calls;
      r->steps += req.steps_size() - (r->rejected - rejected_before);  // accepted
      r->ingest_ns.push_back(Nanos(t0, t1));
    } else if (scratch.errors > 0 && r->first_error.empty()) {
      r->Error("(warm-up) " + scratch.first_error);
    }
    if (forecaster) {
      since_forecast += req.steps_size();
      if (since_forecast >= cfg.forecast_every) {
        since_forecast = 0;
        const Clock::time_point f0 = Clock::now();
        backend.Forecast(job_id, target);
        const Clock::time_point f1 = Clock::now();
        if (measured) {
          r->forecast_ns.push_back(Nanos(f0, f1));
          r->window_end = f1;
        }
      }
    }
  }
}

// Client-streaming Ingest: a warm-up stream, then one measured stream.
void RunStreamClient(const Config& cfg, const Window& w, ClientData& data,
                     const std::vector<std::string>& job_ids, GrpcBackend& backend,
                     ClientResult* r) {
  const std::string& job_id = job_ids[data.job];
  for (pb::IngestBatchRequest& req : data.requests) req.set_job_id(job_id);
  int64_t next_step = 0;
  size_t k = 0;
  SleepUntil(w.start);
  for (int pass = 0; pass < 2; ++pass) {
    const bool measured = pass == 1;
    const Clock::time_point stop = measured ? w.end : w.warm_end;
    if (!measured && cfg.warmup <= 0) continue;
    grpc::ClientContext ctx;
    pb::IngestSummary summary;
    const Clock::time_point open = Clock::now();
    std::unique_ptr<grpc::ClientWriter<pb::IngestBatchRequest>> writer =
        backend.stub()->Ingest(&ctx, &summary);
    int64_t writes = 0;
    std::vector<int64_t> write_ns;
    while (true) {
      const Clock::time_point t0 = Clock::now();
      if (t0 >= stop) break;
      pb::IngestBatchRequest& req = data.requests[k++ % data.requests.size()];
      for (pb::Step& s : *req.mutable_steps()) s.set_step(next_step++);
      if (!writer->Write(req)) break;  // the server ended the call
      ++writes;
      if (measured) write_ns.push_back(Nanos(t0, Clock::now()));
    }
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    const Clock::time_point done = Clock::now();
    if (!s.ok()) {
      r->Error(absl::StrCat(measured ? "" : "(warm-up) ", "Ingest stream: ",
                            s.error_code(), " ", s.error_message()));
      continue;
    }
    if (measured) {
      r->window_start = open;
      r->window_end = done;
      r->calls = writes;
      r->steps = summary.steps() - summary.rejected();  // accepted
      r->committed = summary.committed();
      r->rejected = summary.rejected();
      if (summary.first_rejections_size() > 0 && r->first_error.empty()) {
        r->first_error = "rejected step: " + summary.first_rejections(0).error_message();
      }
      r->ingest_ns = std::move(write_ns);
    }
  }
}

// One phase through the gRPC server at `target`.
absl::StatusOr<PhaseResult> RunGrpcPhase(const Config& cfg, const std::string& target,
                                         std::vector<ClientData>& clients,
                                         const std::string& prefix) {
  std::vector<std::unique_ptr<GrpcBackend>> backends;
  for (int c = 0; c < cfg.clients; ++c) {
    backends.push_back(std::make_unique<GrpcBackend>(target, c, cfg));
    if (!backends.back()->Connect()) {
      return absl::UnavailableError(absl::StrCat("cannot connect to ", target));
    }
  }
  std::vector<pb::JobSpec> specs = MakeJobSpecs(cfg, prefix);
  std::vector<std::string> job_ids;
  for (const pb::JobSpec& spec : specs) {
    grpc::ClientContext ctx;
    pb::RegisterJobRequest req;
    *req.mutable_spec() = spec;
    pb::RegisterJobResponse resp;
    grpc::Status s = backends[0]->stub()->RegisterJob(&ctx, req, &resp);
    if (!s.ok()) {
      return absl::InternalError(
          absl::StrCat("RegisterJob ", spec.job_id(), ": ", s.error_message()));
    }
    job_ids.push_back(spec.job_id());
  }
  std::vector<ClientResult> results(cfg.clients);
  const Window w = MakeWindow(cfg);
  std::vector<std::thread> threads;
  for (int c = 0; c < cfg.clients; ++c) {
    threads.emplace_back([&, c] {
      if (cfg.mode == "stream") {
        RunStreamClient(cfg, w, clients[c], job_ids, *backends[c], &results[c]);
      } else {
        RunUnaryClient(cfg, w, clients[c], job_ids, *backends[c],
                       cfg.forecasts() && c < cfg.forecast_clients, &results[c]);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& id : job_ids) {
    grpc::ClientContext ctx;
    pb::DeleteJobRequest req;
    req.set_job_id(id);
    pb::DeleteJobResponse resp;
    (void)backends[0]->stub()->DeleteJob(&ctx, req, &resp);
  }
  return Combine(results);
}

// The same phase with Engine::Ingest called directly.
absl::StatusOr<PhaseResult> RunInProcessPhase(const Config& cfg,
                                              std::vector<ClientData>& clients,
                                              const std::string& prefix) {
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(EngineOptions());
  if (!engine.ok()) return engine.status();
  std::vector<std::string> job_ids;
  for (const pb::JobSpec& spec : MakeJobSpecs(cfg, prefix)) {
    absl::Status s = (*engine)->RegisterJob(grpc_api::JobSpecFromProto(spec));
    if (!s.ok()) return s;
    job_ids.push_back(spec.job_id());
  }
  std::vector<ClientResult> results(cfg.clients);
  const Window w = MakeWindow(cfg);
  std::vector<std::thread> threads;
  for (int c = 0; c < cfg.clients; ++c) {
    threads.emplace_back([&, c] {
      InProcessBackend backend(engine->get(), cfg);
      RunUnaryClient(cfg, w, clients[c], job_ids, backend,
                     cfg.forecasts() && c < cfg.forecast_clients, &results[c]);
    });
  }
  for (std::thread& t : threads) t.join();
  return Combine(results);
}

json ToJson(const LatencySummary& s) {
  return json{{"count", s.count},   {"mean_us", s.mean_us}, {"p50_us", s.p50_us},
              {"p99_us", s.p99_us}, {"p999_us", s.p999_us}, {"max_us", s.max_us}};
}

json ToJson(const PhaseResult& p) {
  json j{{"steps_per_s", p.steps_per_s},
         {"committed_per_s", p.committed_per_s},
         {"wall_s", p.wall_s},
         {"calls", p.calls},
         {"steps", p.steps},
         {"committed", p.committed},
         {"rejected", p.rejected},
         {"errors", p.errors},
         {"ingest_latency", ToJson(p.ingest)},
         {"forecast_latency", ToJson(p.forecast)}};
  if (!p.first_error.empty()) j["first_error"] = p.first_error;
  return j;
}

std::string Now() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

// Medians over repetitions of a number picked from each PhaseResult.
template <typename F>
double MedianOf(const std::vector<PhaseResult>& v, F f) {
  std::vector<double> x;
  for (const PhaseResult& p : v) x.push_back(f(p));
  return Median(x);
}

json MedianJson(const std::vector<PhaseResult>& v) {
  return json{
      {"steps_per_s", MedianOf(v, [](const PhaseResult& p) { return p.steps_per_s; })},
      {"committed_per_s", MedianOf(v, [](const PhaseResult& p) { return p.committed_per_s; })},
      {"ingest_p50_us", MedianOf(v, [](const PhaseResult& p) { return p.ingest.p50_us; })},
      {"ingest_p99_us", MedianOf(v, [](const PhaseResult& p) { return p.ingest.p99_us; })},
      {"ingest_p999_us", MedianOf(v, [](const PhaseResult& p) { return p.ingest.p999_us; })},
      {"forecast_p50_us", MedianOf(v, [](const PhaseResult& p) { return p.forecast.p50_us; })},
      {"forecast_p99_us", MedianOf(v, [](const PhaseResult& p) { return p.forecast.p99_us; })},
      {"forecast_p999_us",
       MedianOf(v, [](const PhaseResult& p) { return p.forecast.p999_us; })},
      {"ingest_samples", MedianOf(v, [](const PhaseResult& p) {
         return static_cast<double>(p.ingest.count);
       })},
      {"forecast_samples", MedianOf(v, [](const PhaseResult& p) {
         return static_cast<double>(p.forecast.count);
       })},
  };
}

int Main(int argc, char** argv) {
  Config cfg;
  if (!ParseFlags(argc, argv, &cfg)) {
    Usage();
    return 2;
  }
  const std::string load_before = LoadAverage();
  std::vector<ClientData> clients = MakeClients(cfg);

  std::vector<PhaseResult> grpc_runs, inproc_runs;
  std::vector<double> tput_ratio, p50_ratio, p99_ratio;
  const std::string pid = std::to_string(getpid());
  for (int rep = 0; rep < cfg.repetitions; ++rep) {
    const std::string prefix = absl::StrCat("grpcload-", pid, "-", rep);
    auto run_grpc = [&]() -> absl::Status {
      std::unique_ptr<Engine> engine;
      std::unique_ptr<grpc_api::MoecastServer> server;
      std::string target = cfg.server;
      if (target.empty()) {
        absl::StatusOr<std::unique_ptr<Engine>> e = Engine::Create(EngineOptions());
        if (!e.ok()) return e.status();
        engine = std::move(*e);
        grpc_api::ServerOptions options;
        options.listen = "127.0.0.1:0";
        absl::StatusOr<std::unique_ptr<grpc_api::MoecastServer>> s =
            grpc_api::MoecastServer::Start(engine.get(), options);
        if (!s.ok()) return s.status();
        server = std::move(*s);
        target = absl::StrCat("127.0.0.1:", server->port());
      }
      absl::StatusOr<PhaseResult> r = RunGrpcPhase(cfg, target, clients, prefix + "-g");
      if (server) server->Shutdown();
      if (!r.ok()) return r.status();
      grpc_runs.push_back(*r);
      return absl::OkStatus();
    };
    auto run_inproc = [&]() -> absl::Status {
      if (cfg.skip_inproc) return absl::OkStatus();
      absl::StatusOr<PhaseResult> r = RunInProcessPhase(cfg, clients, prefix + "-i");
      if (!r.ok()) return r.status();
      inproc_runs.push_back(*r);
      return absl::OkStatus();
    };
    absl::Status s1 = rep % 2 == 0 ? run_grpc() : run_inproc();
    absl::Status s2 = s1.ok() ? (rep % 2 == 0 ? run_inproc() : run_grpc()) : s1;
    if (!s2.ok()) {
      std::fprintf(stderr, "grpc_load: %s\n", s2.ToString().c_str());
      return 1;
    }
    if (!cfg.skip_inproc) {
      const PhaseResult& g = grpc_runs.back();
      const PhaseResult& i = inproc_runs.back();
      if (i.steps_per_s > 0) tput_ratio.push_back(g.steps_per_s / i.steps_per_s);
      if (i.ingest.p50_us > 0) p50_ratio.push_back(g.ingest.p50_us / i.ingest.p50_us);
      if (i.ingest.p99_us > 0) p99_ratio.push_back(g.ingest.p99_us / i.ingest.p99_us);
    }
  }

  const json g = MedianJson(grpc_runs);
  const json ip = cfg.skip_inproc ? json() : MedianJson(inproc_runs);
  const bool latency_is_rpc = cfg.mode != "stream";
  const bool goal_shape = cfg.shape.layers == 58 && cfg.shape.experts == 256;
  const bool tput_ok = g["steps_per_s"].get<double>() >= kGoalStepsPerSecond;
  const bool p99_ok = latency_is_rpc && g["ingest_p99_us"].get<double>() < kGoalP99Us;
  int64_t errors = 0, rejected = 0;
  for (const auto* runs : {&grpc_runs, &inproc_runs}) {
    for (const PhaseResult& p : *runs) {
      errors += p.errors;
      rejected += p.rejected;
    }
  }

  json report;
  report["label"] = cfg.label;
  report["date"] = Now();
  report["machine"] = {{"host", Hostname()},
                       {"nproc", static_cast<int>(std::thread::hardware_concurrency())},
                       {"cpu_model", CpuModel()},
                       {"loadavg_before", load_before},
                       {"loadavg_after", LoadAverage()}};
  report["config"] = {{"server", cfg.server.empty() ? "in-process 127.0.0.1:0" : cfg.server},
                      {"shape", cfg.shape_text},
                      {"layers", cfg.shape.layers},
                      {"experts", cfg.shape.experts},
                      {"top_k", cfg.shape.top_k},
                      {"job", cfg.job},
                      {"forecasting", cfg.forecasting()},
                      {"health", cfg.forecasting()},
                      {"mode", cfg.mode},
                      {"batch", cfg.batch},
                      {"clients", cfg.clients},
                      {"jobs", cfg.jobs},
                      {"sources_per_job", cfg.sources_of(0)},
                      {"forecast_every", cfg.forecasts() ? cfg.forecast_every : 0},
                      {"forecast_clients", cfg.forecasts() ? cfg.forecast_clients : 0},
                      {"forecast_horizons", cfg.forecast_horizons},
                      {"seconds", cfg.seconds},
                      {"warmup_s", cfg.warmup},
                      {"repetitions", cfg.repetitions},
                      {"pool_steps_per_client", cfg.pool_steps},
                      {"tokens_per_step", cfg.tokens},
                      {"payload_bytes_per_step", cfg.shape.values() * 8}};
  report["latency_kind"] = latency_is_rpc ? "IngestBatch call" : "stream Write (blocking time)";
  report["median"] = {{"grpc", g}, {"inproc", ip}};
  report["ratio_grpc_over_inproc"] = {{"steps_per_s", Median(tput_ratio)},
                                      {"ingest_p50", Median(p50_ratio)},
                                      {"ingest_p99", Median(p99_ratio)}};
  report["goal"] = {{"applies", goal_shape},
                    {"steps_per_s_min", kGoalStepsPerSecond},
                    {"ingest_p99_us_max", kGoalP99Us},
                    {"throughput_met", tput_ok},
                    {"p99_met", p99_ok},
                    {"met", goal_shape && tput_ok && p99_ok}};
  report["errors"] = errors;
  report["rejected"] = rejected;
  json reps = json::array();
  for (size_t i = 0; i < grpc_runs.size(); ++i) {
    json r{{"grpc", ToJson(grpc_runs[i])}};
    if (i < inproc_runs.size()) r["inproc"] = ToJson(inproc_runs[i]);
    reps.push_back(r);
  }
  report["repetitions"] = reps;

  // Human table.
  std::printf("%s  (%s, K=%d, %s jobs: forecasting %s, health %s; %d client(s), %d job(s), "
              "%d source(s)/job; %d x %.1f s after %.1f s warm-up; median of reps)\n",
              cfg.label.c_str(), cfg.shape_text.c_str(), cfg.shape.top_k, cfg.job.c_str(),
              cfg.forecasting() ? "on" : "off", cfg.forecasting() ? "on" : "off",
              cfg.clients, cfg.jobs, cfg.sources_of(0), cfg.repetitions, cfg.seconds,
              cfg.warmup);
  std::printf("  %-22s %10s %10s %10s %10s %10s | %9s %9s %9s\n", "", "steps/s",
              "commit/s", "p50 us", "p99 us", "p999 us", "fc p50", "fc p99", "fc p999");
  auto row = [](const char* name, const json& m) {
    std::printf("  %-22s %10.0f %10.0f %10.1f %10.1f %10.1f | %9.0f %9.0f %9.0f\n", name,
                m["steps_per_s"].get<double>(), m["committed_per_s"].get<double>(),
                m["ingest_p50_us"].get<double>(), m["ingest_p99_us"].get<double>(),
                m["ingest_p999_us"].get<double>(), m["forecast_p50_us"].get<double>(),
                m["forecast_p99_us"].get<double>(), m["forecast_p999_us"].get<double>());
  };
  row(latency_is_rpc ? "gRPC IngestBatch" : "gRPC Ingest stream", g);
  if (!cfg.skip_inproc) {
    row("in-process Ingest", ip);
    std::printf("  ratio gRPC/in-process: steps/s %.2f, p50 %.1fx, p99 %.1fx\n",
                Median(tput_ratio), Median(p50_ratio), Median(p99_ratio));
  }
  if (goal_shape) {
    std::printf("  goal (>= %.0f steps/s, p99 IngestBatch < %.0f ms): %s (throughput %s, "
                "p99 %s)\n",
                kGoalStepsPerSecond, kGoalP99Us / 1000,
                goal_shape && tput_ok && p99_ok ? "MET" : "NOT MET", tput_ok ? "yes" : "no",
                latency_is_rpc ? (p99_ok ? "yes" : "no") : "n/a (stream)");
  }
  if (errors > 0 || rejected > 0) {
    std::string first;
    for (const auto* runs : {&grpc_runs, &inproc_runs}) {
      for (const PhaseResult& p : *runs) {
        if (first.empty()) first = p.first_error;
      }
    }
    std::printf("  WARNING: %lld errors, %lld rejected steps; first: %s\n",
                static_cast<long long>(errors), static_cast<long long>(rejected),
                first.c_str());
  }
  std::fflush(stdout);
  if (!cfg.json_out.empty()) {
    std::ofstream out(cfg.json_out, std::ios::app);
    out << report.dump() << "\n";
    if (!out) {
      std::fprintf(stderr, "grpc_load: cannot write %s\n", cfg.json_out.c_str());
      return 1;
    }
  }
  return errors > 0 ? 1 : 0;
}

}  // namespace
}  // namespace moecast::grpc_load

int main(int argc, char** argv) { return moecast::grpc_load::Main(argc, argv); }
