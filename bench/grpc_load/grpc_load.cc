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
//   bazel-bin/bench/grpc_load/grpc_load --shape=58x256 --job=default --logits
//       --rate=1000 --clients=4 --jobs=4 --seconds=2 --repetitions=1
//       (open loop at 1000 steps/s offered, with router logits)
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
// tokens*K assignments); only the step numbers change between calls. With
// --logits every step also carries router-logit means (L*M values: per layer
// the standardised log of the step's smoothed proportions, generated with
// the pool), in both paths; the health monitor of --job=default needs them
// for its gamma_eff window fits.
//
// Load: closed loop by default (a client sends its next call when the last
// returns). --rate=N (steps/s offered, all clients together) makes it open
// loop: client c's k-th call is scheduled at start + (k*clients + c) * B / N,
// sent then (at once if the client is behind), and its latency is measured
// from the scheduled time, so waiting behind a slow call counts (no
// coordinated omission). Warm-up slots not sent by the window's start are
// dropped, so the window starts on schedule; a client still behind --seconds
// after the window's end stops, and the window's calls it never sent are
// reported as unsent.
// Achieved steps/s = accepted steps over the time from the window's start to
// the later of its end and the last call's return; reported next to the
// offered rate, and the send delay (slot -> sent, part of the latency: the
// client thread waking late or busy behind) apart. (stream: Writes are paced
// the same way.)
//
// Analysis: the engine analyses committed steps (state, forecasts, health)
// on its own threads, behind ingestion. Per phase, from JobInfo (Engine::
// GetJobInfo in-process, the GetJobInfo RPC through gRPC): the max analysis
// lag over jobs (committed steps not yet analysed; steps folded into a
// coalesced block count until the block is analysed, so under overload it
// can exceed coalesce_lag_steps), sampled every 100 ms through the measured
// window and at its end; the degraded steps (scoring shed + coalesced by the
// overload policy, summed over jobs, since registration, after catch-up);
// the time from the window's end until every job's analysis has caught up
// (Engine::AwaitAnalysis in-process, GetJobInfo polled until the lag is 0
// through gRPC; capped at 30 s); and analysed steps/s = steps analysed from
// the window's start until caught up, over that time.
//
// Each repetition: a warm-up (not counted) then the measured window, once
// through gRPC and once in-process (order alternating between repetitions).
// Reported: medians over repetitions of steps/s, of per-call p50/p99/p999
// latencies (nearest rank over every sample of the window) and of the
// analysis figures, and the median of the per-repetition ratios gRPC /
// in-process.
//
// Output: a human table on stdout; --json_out=FILE appends the report as
// one JSON line.
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/grpc_load/load_util.h"
#include "engine/analysis_progress.h"
#include "engine/engine.h"
#include "engine/job_info.h"
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
  bool logits = false;  // steps carry router-logit means
  double rate = 0;      // steps/s offered (all clients); 0: closed loop
  std::string json_out;
  std::string label;

  bool forecasting() const { return job == "default"; }
  bool forecasts() const { return mode == "mixed"; }
  bool paced() const { return rate > 0; }
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
      "  --rate=N                open loop: N steps/s offered, all clients together;\n"
      "                          latency from each call's scheduled send (0: closed loop)\n"
      "  --logits                steps also carry router-logit means (L*M)\n"
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
    if (arg == "--logits") {
      cfg->logits = true;
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
    } else if (name == "logits") {
      ok = value == "true" || value == "false" || value == "1" || value == "0";
      cfg->logits = value == "true" || value == "1";
    } else if (name == "rate") {
      as_double(&cfg->rate, 0);
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
    if (cfg->logits) absl::StrAppend(&cfg->label, " logits");
    if (cfg->paced()) absl::StrAppend(&cfg->label, " rate=", cfg->rate);
  }
  return true;
}

// One client's pre-generated requests (B steps each) and its job.
struct ClientData {
  int index = 0;  // client c
  int job = 0;
  int source = 0;
  std::vector<pb::IngestBatchRequest> requests;
};

std::vector<ClientData> MakeClients(const Config& cfg) {
  std::vector<ClientData> out(cfg.clients);
  const int per_request = cfg.batch;
  const int num_requests = std::max(1, (cfg.pool_steps + per_request - 1) / per_request);
  std::vector<double> counts, logits;
  for (int c = 0; c < cfg.clients; ++c) {
    ClientData& d = out[c];
    d.index = c;
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
        if (cfg.logits) {
          LogitsFromCounts(cfg.shape, counts, &logits);
          step->mutable_router_logits()->Add(logits.begin(), logits.end());
        }
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
  std::vector<int64_t> send_delay_ns;  // --rate: slot -> actually sent
  int64_t calls = 0;
  int64_t steps = 0;
  int64_t committed = 0;
  int64_t rejected = 0;
  int64_t errors = 0;
  int64_t unsent = 0;  // --rate: calls of the window never sent (too far behind)
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
  int64_t calls = 0, steps = 0, committed = 0, rejected = 0, errors = 0, unsent = 0;
  std::string first_error;
  LatencySummary ingest;
  LatencySummary forecast;
  LatencySummary send_delay;
  // Analysis (JobInfo over the phase's jobs; see the header comment).
  int64_t max_lag_steps = 0;     // max over jobs and samples in the window
  int64_t end_lag_steps = 0;     // max over jobs at the window's end
  int64_t lag_samples = 0;
  int64_t degraded_at_end = 0;   // scoring shed + coalesced at the window's end
  int64_t degraded_steps = 0;    // the same after catch-up
  double catchup_s = 0;          // window end -> every job's lag 0
  bool caught_up = false;        // within the 30 s cap
  int64_t analysed_steps = 0;    // from the window's start until caught up
  double analysed_steps_per_s = 0;
};

PhaseResult Combine(std::vector<ClientResult>& results) {
  PhaseResult p;
  std::vector<int64_t> ingest, forecast, send_delay;
  Clock::time_point start = Clock::time_point::max(), end = Clock::time_point::min();
  for (ClientResult& r : results) {
    ingest.insert(ingest.end(), r.ingest_ns.begin(), r.ingest_ns.end());
    forecast.insert(forecast.end(), r.forecast_ns.begin(), r.forecast_ns.end());
    send_delay.insert(send_delay.end(), r.send_delay_ns.begin(), r.send_delay_ns.end());
    p.calls += r.calls;
    p.steps += r.steps;
    p.committed += r.committed;
    p.rejected += r.rejected;
    p.errors += r.errors;
    p.unsent += r.unsent;
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
  p.send_delay = Summarize(std::move(send_delay));
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
      in.router_logits =
          absl::MakeConstSpan(step.router_logits().data(), step.router_logits().size());
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

Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

struct Window {
  Clock::time_point start;      // clients begin (warm-up)
  Clock::time_point warm_end;   // measurement begins
  Clock::time_point end;        // no call starts (--rate: is scheduled) after this
  Clock::time_point give_up;    // --rate: a client behind sends nothing after this
};

Window MakeWindow(const Config& cfg) {
  Window w;
  w.start = Clock::now() + std::chrono::milliseconds(20);
  w.warm_end = w.start + Seconds(cfg.warmup);
  w.end = w.warm_end + Seconds(cfg.seconds);
  w.give_up = w.end + Seconds(cfg.seconds);
  return w;
}

void SleepUntil(Clock::time_point t) {
  std::this_thread::sleep_until(t);
}

// --rate: the calling thread's timer slack to 1 ns (Linux's default, 50 us,
// would add up to 50 us to every paced call's latency).
void TightTimers(const Config& cfg) {
  if (cfg.paced()) (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
}

// --rate: when client c's k-th call (warm-up included, k from 0) is due:
// start + (k*clients + c) * B / rate, so the clients' calls interleave evenly.
class Schedule {
 public:
  Schedule(const Config& cfg, const Window& w, int client)
      : start_(w.start),
        clients_(cfg.clients),
        client_(client),
        interval_s_(cfg.paced() ? cfg.batch / cfg.rate : 0) {}

  Clock::time_point Slot(int64_t k) const {
    return start_ + Seconds((static_cast<double>(k) * clients_ + client_) * interval_s_);
  }
  // The first k >= from whose slot is at or after t.
  int64_t FirstAtOrAfter(int64_t from, Clock::time_point t) const {
    int64_t k = from;
    while (Slot(k) < t) ++k;
    return k;
  }
  // Slots k >= from in [a, b).
  int64_t CountIn(int64_t from, Clock::time_point a, Clock::time_point b) const {
    int64_t n = 0;
    for (int64_t k = from; Slot(k) < b; ++k) n += Slot(k) >= a;
    return n;
  }

 private:
  Clock::time_point start_;
  int clients_;
  int client_;
  double interval_s_;
};

// Unary (and mixed) client loop, for either backend. Closed loop, or with
// --rate each call at its slot and its latency from the slot (slots of the
// warm-up not sent by its end are dropped).
void RunUnaryClient(const Config& cfg, const Window& w, ClientData& data,
                    const std::vector<std::string>& job_ids, Backend& backend,
                    bool forecaster, ClientResult* r) {
  const std::string& job_id = job_ids[data.job];
  for (pb::IngestBatchRequest& req : data.requests) req.set_job_id(job_id);
  const Schedule schedule(cfg, w, data.index);
  int64_t next_step = 0;
  int64_t since_forecast = 0;
  int64_t k = 0;  // calls so far; with --rate, the next call's slot
  TightTimers(cfg);
  SleepUntil(w.start);
  while (true) {
    Clock::time_point t0;
    if (cfg.paced()) {
      t0 = schedule.Slot(k);
      if (t0 >= w.end) break;
      const Clock::time_point now = Clock::now();
      if (t0 < w.warm_end && now >= w.warm_end) {
        // Warm-up slots still unsent when the window opens are dropped.
        k = schedule.FirstAtOrAfter(k, w.warm_end);  // step numbers stay contiguous
        continue;
      }
      if (now >= w.give_up) {
        r->unsent += schedule.CountIn(k, w.warm_end, w.end);
        break;
      }
      if (now < t0) SleepUntil(t0);
    } else {
      t0 = Clock::now();
      if (t0 >= w.end) break;
    }
    const bool measured = t0 >= w.warm_end;
    if (measured && cfg.paced()) r->send_delay_ns.push_back(Nanos(t0, Clock::now()));
    pb::IngestBatchRequest& req = data.requests[k++ % data.requests.size()];
    for (pb::Step& s : *req.mutable_steps()) s.set_step(next_step++);
    ClientResult scratch;
    ClientResult* target = measured ? r : &scratch;
    const int64_t rejected_before = target->rejected;
    backend.IngestBatch(req, target);
    const Clock::time_point t1 = Clock::now();
    if (measured) {
      if (r->calls == 0) r->window_start = cfg.paced() ? w.warm_end : t0;
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
  if (cfg.paced() && r->calls > 0) r->window_end = std::max(r->window_end, w.end);
}

// Client-streaming Ingest: a warm-up stream, then one measured stream. With
// --rate each Write at its slot (slots of the warm-up not written by its end
// are dropped) and its latency from the slot.
void RunStreamClient(const Config& cfg, const Window& w, ClientData& data,
                     const std::vector<std::string>& job_ids, GrpcBackend& backend,
                     ClientResult* r) {
  const std::string& job_id = job_ids[data.job];
  for (pb::IngestBatchRequest& req : data.requests) req.set_job_id(job_id);
  const Schedule schedule(cfg, w, data.index);
  int64_t next_step = 0;
  int64_t k = 0;
  TightTimers(cfg);
  SleepUntil(w.start);
  for (int pass = 0; pass < 2; ++pass) {
    const bool measured = pass == 1;
    const Clock::time_point stop = measured ? w.end : w.warm_end;
    if (!measured && cfg.warmup <= 0) continue;
    if (measured && cfg.paced()) k = schedule.FirstAtOrAfter(k, w.warm_end);
    grpc::ClientContext ctx;
    pb::IngestSummary summary;
    const Clock::time_point open = Clock::now();
    std::unique_ptr<grpc::ClientWriter<pb::IngestBatchRequest>> writer =
        backend.stub()->Ingest(&ctx, &summary);
    int64_t writes = 0;
    std::vector<int64_t> write_ns;
    while (true) {
      Clock::time_point t0;
      if (cfg.paced()) {
        t0 = schedule.Slot(k);
        if (t0 >= stop) break;
        const Clock::time_point now = Clock::now();
        if (now >= (measured ? w.give_up : w.warm_end)) {
          if (measured) r->unsent += schedule.CountIn(k, w.warm_end, w.end);
          break;
        }
        if (now < t0) SleepUntil(t0);
      } else {
        t0 = Clock::now();
        if (t0 >= stop) break;
      }
      if (measured && cfg.paced()) r->send_delay_ns.push_back(Nanos(t0, Clock::now()));
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
      r->window_start = cfg.paced() ? w.warm_end : open;
      r->window_end = cfg.paced() ? std::max(done, w.end) : done;
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

// The analysis of a phase's jobs at one moment (from their JobInfo).
struct AnalysisSnapshot {
  int64_t max_lag = 0;   // max over jobs of analysis_lag_steps
  int64_t analysed = 0;  // sum of analysed_steps
  int64_t degraded = 0;  // sum of scoring_shed_steps + coalesced_steps
};

// Reads the phase's jobs' JobInfo (Engine::GetJobInfo or the RPC).
using SnapshotFn = std::function<absl::StatusOr<AnalysisSnapshot>()>;
// Returns once every job's analysis has caught up (lag 0), or an error at
// `deadline`.
using CatchUpFn = std::function<absl::Status(Clock::time_point deadline)>;

constexpr auto kLagSampleEvery = std::chrono::milliseconds(100);
constexpr auto kCatchUpCap = std::chrono::seconds(30);

// Samples the analysis of a phase's jobs on its own thread: at the measured
// window's start, then every 100 ms until Finish, which (called once the
// clients are done) adds the window's end and the catch-up after it.
class AnalysisMonitor {
 public:
  AnalysisMonitor(SnapshotFn snapshot, const Window& w)
      : snapshot_(std::move(snapshot)), thread_([this, w] { Sample(w); }) {}
  ~AnalysisMonitor() { StopSampling(); }

  void Finish(const CatchUpFn& catch_up, PhaseResult* p) {
    StopSampling();
    auto error = [p](const std::string& e) {
      ++p->errors;
      if (p->first_error.empty()) p->first_error = e;
    };
    if (!sample_error_.empty()) error(sample_error_);
    const Clock::time_point end = Clock::now();
    absl::StatusOr<AnalysisSnapshot> at_end = snapshot_();
    if (at_end.ok()) {
      p->end_lag_steps = at_end->max_lag;
      max_lag_ = std::max(max_lag_, at_end->max_lag);
      p->degraded_at_end = at_end->degraded;
    } else {
      error("JobInfo at window end: " + at_end.status().ToString());
    }
    p->max_lag_steps = max_lag_;
    p->lag_samples = samples_;
    const absl::Status caught = catch_up(end + kCatchUpCap);
    const Clock::time_point done = Clock::now();
    p->catchup_s = std::chrono::duration<double>(done - end).count();
    absl::StatusOr<AnalysisSnapshot> after = snapshot_();
    if (!after.ok()) {
      error("JobInfo after catch-up: " + after.status().ToString());
      return;
    }
    p->caught_up = caught.ok() && after->max_lag == 0;
    p->degraded_steps = after->degraded;
    if (samples_ > 0) {
      p->analysed_steps = after->analysed - start_.analysed;
      const double s = std::chrono::duration<double>(done - start_time_).count();
      if (s > 0) p->analysed_steps_per_s = p->analysed_steps / s;
    }
  }

 private:
  void Sample(const Window& w) {
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_until(lock, w.warm_end, [this] { return stop_; })) return;
    while (true) {
      lock.unlock();
      const Clock::time_point t = Clock::now();
      absl::StatusOr<AnalysisSnapshot> s = snapshot_();
      lock.lock();
      if (!s.ok()) {
        if (sample_error_.empty()) sample_error_ = "JobInfo sample: " + s.status().ToString();
      } else {
        if (samples_ == 0) {
          start_ = *s;
          start_time_ = t;
        }
        ++samples_;
        max_lag_ = std::max(max_lag_, s->max_lag);
      }
      if (cv_.wait_for(lock, kLagSampleEvery, [this] { return stop_; })) return;
    }
  }

  void StopSampling() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  SnapshotFn snapshot_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  // Written by the sampling thread until it is joined.
  AnalysisSnapshot start_;
  Clock::time_point start_time_{};
  int64_t samples_ = 0;
  int64_t max_lag_ = 0;
  std::string sample_error_;
  std::thread thread_;  // last: starts once the members above exist
};

// Polls `snapshot` until the max lag is 0 (every 2 ms), or `deadline`.
absl::Status PollUntilCaughtUp(const SnapshotFn& snapshot, Clock::time_point deadline) {
  while (true) {
    absl::StatusOr<AnalysisSnapshot> s = snapshot();
    if (!s.ok()) return s.status();
    if (s->max_lag == 0) return absl::OkStatus();
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("analysis lag ", s->max_lag));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

absl::StatusOr<AnalysisSnapshot> GrpcSnapshot(pb::Moecast::Stub* stub,
                                              const std::vector<std::string>& job_ids) {
  AnalysisSnapshot a;
  for (const std::string& id : job_ids) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    pb::GetJobInfoRequest req;
    req.set_job_id(id);
    pb::JobInfo info;
    grpc::Status s = stub->GetJobInfo(&ctx, req, &info);
    if (!s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("GetJobInfo ", id, ": ", s.error_code(), " ", s.error_message()));
    }
    a.max_lag = std::max<int64_t>(a.max_lag, info.analysis_lag_steps());
    a.analysed += info.analysed_steps();
    a.degraded += info.scoring_shed_steps() + info.coalesced_steps();
  }
  return a;
}

absl::StatusOr<AnalysisSnapshot> EngineSnapshot(const Engine& engine,
                                                const std::vector<std::string>& job_ids) {
  AnalysisSnapshot a;
  for (const std::string& id : job_ids) {
    absl::StatusOr<JobInfo> info = engine.GetJobInfo(id);
    if (!info.ok()) return info.status();
    a.max_lag = std::max(a.max_lag, info->analysis_lag_steps);
    a.analysed += info->analysed_steps;
    a.degraded += info->scoring_shed_steps + info->coalesced_steps;
  }
  return a;
}

// Engine::AwaitAnalysis on every job, until `deadline`.
absl::Status AwaitEngineAnalysis(const Engine& engine, const std::vector<std::string>& job_ids,
                                 Clock::time_point deadline) {
  Freshness f;
  f.deadline = absl::Now() + absl::FromChrono(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 deadline - Clock::now()));
  for (const std::string& id : job_ids) {
    absl::StatusOr<AnalysisProgress> p = engine.AwaitAnalysis(id, f);
    if (!p.ok()) return p.status();
  }
  return absl::OkStatus();
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
  // JobInfo through its own channel, off the clients' connections.
  GrpcBackend info_backend(target, cfg.clients, cfg);
  if (!info_backend.Connect()) {
    return absl::UnavailableError(absl::StrCat("cannot connect to ", target));
  }
  const SnapshotFn snapshot = [&] { return GrpcSnapshot(info_backend.stub(), job_ids); };
  std::vector<ClientResult> results(cfg.clients);
  const Window w = MakeWindow(cfg);
  AnalysisMonitor monitor(snapshot, w);
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
  PhaseResult p = Combine(results);
  monitor.Finish(
      [&](Clock::time_point deadline) { return PollUntilCaughtUp(snapshot, deadline); }, &p);
  for (const std::string& id : job_ids) {
    grpc::ClientContext ctx;
    pb::DeleteJobRequest req;
    req.set_job_id(id);
    pb::DeleteJobResponse resp;
    (void)backends[0]->stub()->DeleteJob(&ctx, req, &resp);
  }
  return p;
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
  const Engine& e = **engine;
  std::vector<ClientResult> results(cfg.clients);
  const Window w = MakeWindow(cfg);
  AnalysisMonitor monitor([&] { return EngineSnapshot(e, job_ids); }, w);
  std::vector<std::thread> threads;
  for (int c = 0; c < cfg.clients; ++c) {
    threads.emplace_back([&, c] {
      InProcessBackend backend(engine->get(), cfg);
      RunUnaryClient(cfg, w, clients[c], job_ids, backend,
                     cfg.forecasts() && c < cfg.forecast_clients, &results[c]);
    });
  }
  for (std::thread& t : threads) t.join();
  PhaseResult p = Combine(results);
  monitor.Finish(
      [&](Clock::time_point deadline) { return AwaitEngineAnalysis(e, job_ids, deadline); },
      &p);
  return p;
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
         {"unsent_calls", p.unsent},
         {"ingest_latency", ToJson(p.ingest)},
         {"forecast_latency", ToJson(p.forecast)},
         {"send_delay", ToJson(p.send_delay)},
         {"analysis",
          {{"max_lag_steps", p.max_lag_steps},
           {"end_lag_steps", p.end_lag_steps},
           {"lag_samples", p.lag_samples},
           {"degraded_steps_at_window_end", p.degraded_at_end},
           {"degraded_steps", p.degraded_steps},
           {"catchup_s", p.catchup_s},
           {"caught_up", p.caught_up},
           {"analysed_steps", p.analysed_steps},
           {"analysed_steps_per_s", p.analysed_steps_per_s}}}};
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
  const double steps_per_s = MedianOf(v, [](const PhaseResult& p) { return p.steps_per_s; });
  return json{
      {"steps_per_s", steps_per_s},
      {"steps_per_s_achieved", steps_per_s},
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
      {"unsent_calls",
       MedianOf(v, [](const PhaseResult& p) { return static_cast<double>(p.unsent); })},
      {"send_delay_p50_us", MedianOf(v, [](const PhaseResult& p) { return p.send_delay.p50_us; })},
      {"send_delay_p99_us", MedianOf(v, [](const PhaseResult& p) { return p.send_delay.p99_us; })},
      {"max_lag_steps",
       MedianOf(v, [](const PhaseResult& p) { return static_cast<double>(p.max_lag_steps); })},
      {"end_lag_steps",
       MedianOf(v, [](const PhaseResult& p) { return static_cast<double>(p.end_lag_steps); })},
      {"degraded_steps",
       MedianOf(v, [](const PhaseResult& p) { return static_cast<double>(p.degraded_steps); })},
      {"catchup_s", MedianOf(v, [](const PhaseResult& p) { return p.catchup_s; })},
      {"analysed_steps_per_s",
       MedianOf(v, [](const PhaseResult& p) { return p.analysed_steps_per_s; })},
      {"caught_up_all", std::all_of(v.begin(), v.end(),
                                    [](const PhaseResult& p) { return p.caught_up; })},
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
  int64_t errors = 0, rejected = 0, unsent = 0;
  bool caught_up = true;
  for (const auto* runs : {&grpc_runs, &inproc_runs}) {
    for (const PhaseResult& p : *runs) {
      errors += p.errors;
      rejected += p.rejected;
      unsent += p.unsent;
      caught_up = caught_up && p.caught_up;
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
                      {"logits", cfg.logits},
                      {"rate_offered", cfg.rate},
                      {"load", cfg.paced() ? "open loop" : "closed loop"},
                      {"payload_bytes_per_step", cfg.shape.values() * 8 * (cfg.logits ? 2 : 1)}};
  report["logits"] = cfg.logits;
  report["rate_offered"] = cfg.rate;  // steps/s, all clients; 0: closed loop
  report["latency_kind"] =
      absl::StrCat(latency_is_rpc ? "IngestBatch call" : "stream Write (blocking time)",
                   cfg.paced() ? ", from the scheduled send" : "");
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
  report["unsent_calls"] = unsent;
  report["analysis_caught_up"] = caught_up;
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
  if (cfg.paced()) {
    std::printf("  load: open loop, %.0f steps/s offered (latency from each call's scheduled "
                "send); router logits %s\n",
                cfg.rate, cfg.logits ? "on" : "off");
  } else {
    std::printf("  load: closed loop; router logits %s\n", cfg.logits ? "on" : "off");
  }
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
  if (cfg.paced()) {
    std::printf("  offered %.0f steps/s: achieved gRPC %.0f (%.1f%%)", cfg.rate,
                g["steps_per_s"].get<double>(), 100 * g["steps_per_s"].get<double>() / cfg.rate);
    if (!cfg.skip_inproc) {
      std::printf(", in-process %.0f (%.1f%%)", ip["steps_per_s"].get<double>(),
                  100 * ip["steps_per_s"].get<double>() / cfg.rate);
    }
    std::printf("\n");
    std::printf("  send delay (scheduled -> sent, in the latencies) p50 / p99 us: gRPC %.1f / "
                "%.1f",
                g["send_delay_p50_us"].get<double>(), g["send_delay_p99_us"].get<double>());
    if (!cfg.skip_inproc) {
      std::printf(", in-process %.1f / %.1f", ip["send_delay_p50_us"].get<double>(),
                  ip["send_delay_p99_us"].get<double>());
    }
    std::printf("\n");
  }
  std::printf("  %-22s %10s %10s %10s %10s %10s\n", "analysis", "max lag", "end lag",
              "degraded", "catchup s", "analysed/s");
  auto analysis_row = [](const char* name, const json& m) {
    std::printf("  %-22s %10.0f %10.0f %10.0f %10.3f %10.0f%s\n", name,
                m["max_lag_steps"].get<double>(), m["end_lag_steps"].get<double>(),
                m["degraded_steps"].get<double>(), m["catchup_s"].get<double>(),
                m["analysed_steps_per_s"].get<double>(),
                m["caught_up_all"].get<bool>() ? "" : "  (NOT caught up in 30 s)");
  };
  analysis_row("gRPC", g);
  if (!cfg.skip_inproc) analysis_row("in-process", ip);
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
  if (unsent > 0) {
    std::printf("  WARNING: %lld calls of the windows never sent (clients more than %.1f s "
                "behind schedule)\n",
                static_cast<long long>(unsent), cfg.seconds);
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
