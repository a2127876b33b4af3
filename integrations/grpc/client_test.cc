// MoecastClient against a real MoecastServer on 127.0.0.1:0 in-process: every
// RPC round trip, error codes passed through, option validation, transport
// errors, Watch cancellation, bearer tokens, and TLS / mutual TLS with
// certificates made by openssl in the test's temporary directory.
#include "integrations/grpc/client.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <deque>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "integrations/grpc/testing/certs.h"
#include "integrations/grpc/server.h"
#include "moecast/v1/moecast.pb.h"

namespace moecast::grpc_api {
namespace {

namespace pb = ::moecast::v1;
using ::moecast::testing::StatusIs;
using ::testing::_;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int kLayers = 2;
constexpr int kExperts = 4;

pb::JobSpec Spec(const std::string& id, int layers = kLayers, int sources = 1) {
  pb::JobSpec spec;
  spec.set_job_id(id);
  spec.set_num_layers(layers);
  spec.set_num_experts(kExperts);
  spec.set_top_k(2);
  spec.set_num_sources(sources);
  return spec;
}

// Steps for IngestSteps. StepInput holds spans: the counts live in a deque,
// whose elements keep their addresses as it grows.
struct Steps {
  std::deque<std::vector<double>> counts;
  std::vector<StepInput> inputs;

  void Add(int64_t step, std::vector<double> values) {
    counts.push_back(std::move(values));
    StepInput in;
    in.step = step;
    in.counts = counts.back();
    inputs.push_back(in);
  }
};

void AddStep(pb::IngestBatchRequest* req, int64_t step, const std::vector<double>& counts,
             int source = 0) {
  pb::Step* s = req->add_steps();
  s->set_step(step);
  s->set_source(source);
  for (double c : counts) s->add_counts(c);
}

std::vector<double> Uniform(double v = 10) {
  return std::vector<double>(kLayers * kExperts, v);
}

// A port on 127.0.0.1 that is bound but not listening: connections to it are
// refused for as long as the socket lives.
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return;
    socklen_t len = sizeof(addr);
    if (getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
  }
  ~RefusingPort() {
    if (fd_ >= 0) close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(ServerOptions()); }

  void StartServer(ServerOptions options) {
    client_.reset();
    server_.reset();
    engine_ = Engine::Create(EngineOptions()).value();
    options.listen = "127.0.0.1:0";
    options.max_message_bytes = 4 << 20;
    options.service.watch_poll_interval = absl::Milliseconds(5);
    options.shutdown_grace = absl::Milliseconds(200);
    server_ = MoecastServer::Start(engine_.get(), options).value();
    ASSERT_GT(server_->port(), 0);
    client_ = MoecastClient::Connect(Options()).value();
  }

  ClientOptions Options() const {
    ClientOptions o;
    o.target = absl::StrCat("127.0.0.1:", server_->port());
    o.timeout = absl::Seconds(10);
    return o;
  }

  // 300 steady steps, then layer 1's expert 0 trends: the layers and the job
  // turn stable, then layer 1 turns transient (events 1..4).
  void IngestStableThenTrend(const std::string& job, int steps = 600) {
    std::mt19937 rng(9);
    std::poisson_distribution<int> noise(200);
    for (int b = 0; b * 100 < steps; ++b) {
      pb::IngestBatchRequest req;
      req.set_job_id(job);
      for (int t = b * 100; t < (b + 1) * 100 && t < steps; ++t) {
        std::vector<double> c(kLayers * kExperts);
        for (double& x : c) x = noise(rng);
        if (t >= 400) c[kExperts] += 20.0 * (t - 400);
        AddStep(&req, t, c);
      }
      absl::StatusOr<pb::IngestBatchResponse> r = client_->IngestBatch(req);
      ASSERT_OK(r);
      ASSERT_EQ(r->rejected(), 0);
    }
  }

  std::unique_ptr<Engine> engine_;
  std::unique_ptr<MoecastServer> server_;
  std::unique_ptr<MoecastClient> client_;
};

// ---------------------------------------------------------------------------
// Options

TEST(ClientOptionsTest, ConnectRejectsBadOptionsNamingTheField) {
  const std::string pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
  struct Case {
    std::function<void(ClientOptions&)> mutate;
    const char* phrase;
  };
  const Case cases[] = {
      {[](ClientOptions& o) { o.target = ""; }, "ClientOptions.target is empty"},
      {[](ClientOptions& o) { o.timeout = absl::ZeroDuration(); },
       "ClientOptions.timeout must be > 0, got 0"},
      {[](ClientOptions& o) { o.timeout = absl::Seconds(-1); },
       "ClientOptions.timeout must be > 0, got -1s"},
      {[](ClientOptions& o) { o.stream_timeout = absl::ZeroDuration(); },
       "ClientOptions.stream_timeout must be > 0"},
      {[](ClientOptions& o) { o.max_message_bytes = 0; },
       "ClientOptions.max_message_bytes must be > 0, got 0"},
      {[](ClientOptions& o) { o.auth_token = "two words"; },
       "ClientOptions.auth_token has a space or non-printable character at offset 3"},
      {[](ClientOptions& o) { o.auth_token = "tok\n"; },
       "ClientOptions.auth_token has a space or non-printable character at offset 3 "
       "(byte 10)"},
      {[&](ClientOptions& o) { o.root_ca_pem = pem; },
       "ClientOptions.root_ca_pem is set but tls is false"},
      {[&](ClientOptions& o) { o.client_cert_pem = pem; },
       "ClientOptions.client_cert_pem is set but tls is false"},
      {[](ClientOptions& o) { o.tls_server_name_override = "x"; },
       "ClientOptions.tls_server_name_override is set but tls is false"},
      {[&](ClientOptions& o) {
         o.tls = true;
         o.client_cert_pem = pem;
       },
       "ClientOptions.client_cert_pem is set but client_key_pem is empty"},
      {[&](ClientOptions& o) {
         o.tls = true;
         o.client_key_pem = pem;
       },
       "ClientOptions.client_key_pem is set but client_cert_pem is empty"},
      {[](ClientOptions& o) {
         o.tls = true;
         o.root_ca_pem = "/etc/ssl/ca.pem";
       },
       "ClientOptions.root_ca_pem does not hold PEM"},
  };
  for (const Case& c : cases) {
    ClientOptions o;
    o.target = "127.0.0.1:1";
    c.mutate(o);
    EXPECT_THAT(MoecastClient::Connect(o),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.phrase)))
        << c.phrase;
  }
  ClientOptions good;
  good.target = "127.0.0.1:1";
  EXPECT_OK(MoecastClient::Connect(good));  // lazy: nothing listens there
  good.tls = true;  // system roots
  EXPECT_OK(MoecastClient::Connect(good));
}

// ---------------------------------------------------------------------------
// Unary RPCs

TEST_F(ClientTest, JobsRoundTripWithErrorCodesPassedThrough) {
  ASSERT_OK(client_->RegisterJob(Spec("a")));
  ASSERT_OK(client_->RegisterJob(Spec("b")));
  EXPECT_THAT(client_->RegisterJob(Spec("a")),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("'a'")));
  EXPECT_THAT(client_->RegisterJob(Spec("c", /*layers=*/0)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_layers")));

  absl::StatusOr<pb::ListJobsResponse> jobs = client_->ListJobs();
  ASSERT_OK(jobs);
  EXPECT_THAT(jobs->job_ids(), ElementsAre("a", "b"));

  EXPECT_OK(client_->DeleteJob("a"));
  EXPECT_THAT(client_->DeleteJob("a"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'a'")));
  jobs = client_->ListJobs();
  ASSERT_OK(jobs);
  EXPECT_THAT(jobs->job_ids(), ElementsAre("b"));
  EXPECT_EQ(engine_->ListJobs(), std::vector<std::string>{"b"});
}

TEST_F(ClientTest, GetJobInfoAndFlushPendingOfAMultiSourceJob) {
  ASSERT_OK(client_->RegisterJob(Spec("m", kLayers, /*sources=*/2)));
  pb::IngestBatchRequest req;
  req.set_job_id("m");
  AddStep(&req, 0, Uniform(), /*source=*/0);
  absl::StatusOr<pb::IngestBatchResponse> r = client_->IngestBatch(req);
  ASSERT_OK(r);
  ASSERT_EQ(r->results_size(), 1);
  EXPECT_EQ(r->results(0).outcome(), pb::STEP_OUTCOME_PENDING);

  absl::StatusOr<pb::JobInfo> info = client_->GetJobInfo("m");
  ASSERT_OK(info);
  EXPECT_EQ(info->spec().job_id(), "m");
  EXPECT_EQ(info->spec().num_layers(), kLayers);
  EXPECT_EQ(info->spec().num_sources(), 2);
  EXPECT_EQ(info->committed_steps(), 0);
  EXPECT_EQ(info->pending_steps(), 1);
  EXPECT_FALSE(info->has_last_step());

  absl::StatusOr<pb::FlushPendingResponse> flushed = client_->FlushPending("m");
  ASSERT_OK(flushed);
  ASSERT_EQ(flushed->committed_size(), 1);
  EXPECT_EQ(flushed->committed(0).step(), 0);
  EXPECT_TRUE(flushed->committed(0).incomplete());

  info = client_->GetJobInfo("m");
  ASSERT_OK(info);
  EXPECT_EQ(info->committed_steps(), 1);
  EXPECT_EQ(info->incomplete_steps(), 1);
  EXPECT_EQ(info->pending_steps(), 0);
  ASSERT_TRUE(info->has_last_step());
  EXPECT_EQ(info->last_step(), 0);

  EXPECT_THAT(client_->GetJobInfo("nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(client_->FlushPending("nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

TEST_F(ClientTest, IngestBatchReportsEachStep) {
  ASSERT_OK(client_->RegisterJob(Spec("a")));
  pb::IngestBatchRequest req;
  req.set_job_id("a");
  AddStep(&req, 0, Uniform());
  AddStep(&req, 1, std::vector<double>(3, 1.0));  // wrong size: L*M = 8
  AddStep(&req, 2, Uniform());
  AddStep(&req, 2, Uniform());  // re-sent: duplicate
  absl::StatusOr<pb::IngestBatchResponse> r = client_->IngestBatch(req);
  ASSERT_OK(r);
  ASSERT_EQ(r->results_size(), 4);
  EXPECT_EQ(r->results(0).outcome(), pb::STEP_OUTCOME_COMMITTED);
  EXPECT_EQ(r->results(1).outcome(), pb::STEP_OUTCOME_REJECTED);
  EXPECT_EQ(r->results(1).error_code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(r->results(3).outcome(), pb::STEP_OUTCOME_DUPLICATE);
  EXPECT_EQ(r->rejected(), 1);
  EXPECT_EQ(r->committed_size(), 2);

  req.set_job_id("nope");
  EXPECT_THAT(client_->IngestBatch(req),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

TEST_F(ClientTest, ForecastHealthAndPlacement) {
  ASSERT_OK(client_->RegisterJob(Spec("p")));
  // Before the first step: no forecast yet.
  pb::ForecastRequest freq;
  freq.set_job_id("p");
  EXPECT_THAT(client_->Forecast(freq), StatusIs(absl::StatusCode::kFailedPrecondition,
                                                 ::testing::Not(IsEmpty())));

  Steps steps;
  for (int t = 0; t < 30; ++t) steps.Add(t, {100, 10, 10, 10, 100, 10, 10, 10});
  absl::StatusOr<pb::IngestSummary> summary = client_->IngestSteps("p", steps.inputs, 8);
  ASSERT_OK(summary);
  EXPECT_EQ(summary->committed(), 30);

  freq.add_horizons(1);
  freq.add_horizons(5);
  freq.set_path_steps(2);
  absl::StatusOr<pb::ForecastResponse> f = client_->Forecast(freq);
  ASSERT_OK(f);
  EXPECT_EQ(f->as_of_step(), 29);
  ASSERT_EQ(f->layers_size(), kLayers);
  for (const pb::LayerForecast& lf : f->layers()) {
    ASSERT_EQ(lf.horizons_size(), 2);
    EXPECT_EQ(lf.horizons(1).horizon(), 5);
    ASSERT_EQ(lf.horizons(0).means_size(), kExperts);
    // Expert 0 gets 100 of 130 assignments.
    EXPECT_NEAR(lf.horizons(0).means(0), 100.0 / 130.0, 0.05);
    EXPECT_EQ(lf.path_size(), 2 * kExperts);
  }
  freq.set_predictor("no_such_predictor");
  EXPECT_THAT(client_->Forecast(freq),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no_such_predictor")));
  freq.set_predictor("");
  freq.add_horizons(0);
  EXPECT_THAT(client_->Forecast(freq), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 ::testing::Not(IsEmpty())));

  // 30 steps: no health window has completed.
  EXPECT_THAT(client_->GetHealth("p"), StatusIs(absl::StatusCode::kFailedPrecondition,
                                                 HasSubstr("no health window")));
  EXPECT_THAT(client_->GetHealth("nope"), StatusIs(absl::StatusCode::kNotFound, _));

  pb::RecommendPlacementRequest preq;
  preq.set_job_id("p");
  preq.set_num_slots(6);
  preq.set_num_gpus(2);
  preq.set_horizon(10);
  absl::StatusOr<pb::RecommendPlacementResponse> plan = client_->RecommendPlacement(preq);
  ASSERT_OK(plan);
  EXPECT_EQ(plan->as_of_step(), 29);
  EXPECT_EQ(plan->horizon(), 10);
  EXPECT_EQ(plan->plan().phy2log_size(), kLayers * 6);
  EXPECT_EQ(plan->plan().gpu_loads_size(), kLayers * 2);
  // Six slots for four experts: the hot expert 0 gets a replica per GPU.
  EXPECT_EQ(plan->plan().logcnt(0), 2);
  EXPECT_FALSE(plan->has_decision());
  preq.set_num_slots(7);  // not a multiple of the GPUs
  EXPECT_THAT(client_->RecommendPlacement(preq),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::Not(IsEmpty())));

  // A full health window (100 steps).
  Steps more;
  for (int t = 30; t < 100; ++t) more.Add(t, Uniform(25));
  ASSERT_OK(client_->IngestSteps("p", more.inputs, 50));
  absl::StatusOr<pb::GetHealthResponse> health = client_->GetHealth("p");
  ASSERT_OK(health);
  EXPECT_EQ(health->as_of_step(), 99);
  ASSERT_EQ(health->layers_size(), kLayers);
  EXPECT_EQ(health->layers(0).window_end_step(), 99);
  EXPECT_EQ(health->e().kind(), pb::EParameter::KIND_MISSING);
}

TEST_F(ClientTest, GetStateReportsEachLayer) {
  ASSERT_OK(client_->RegisterJob(Spec("s")));
  pb::GetStateRequest sreq;
  sreq.set_job_id("s");
  sreq.set_per_expert(true);
  EXPECT_THAT(client_->GetState(sreq), StatusIs(absl::StatusCode::kFailedPrecondition,
                                                 ::testing::Not(IsEmpty())));
  IngestStableThenTrend("s", 300);
  absl::StatusOr<pb::GetStateResponse> state = client_->GetState(sreq);
  ASSERT_OK(state);
  EXPECT_EQ(state->as_of_step(), 299);
  EXPECT_EQ(state->job_state(), pb::LOAD_STATE_STABLE);
  ASSERT_EQ(state->layers_size(), kLayers);
  EXPECT_EQ(state->layers(1).layer(), 1);
  EXPECT_EQ(state->layers(0).variance_10_size(), kExperts);
  EXPECT_TRUE(state->layers(0).has_drift_ratio());
  sreq.set_job_id("nope");
  EXPECT_THAT(client_->GetState(sreq), StatusIs(absl::StatusCode::kNotFound, _));
}

// ---------------------------------------------------------------------------
// Ingest streams

TEST_F(ClientTest, IngestStepsStreamsBatchesAndCountsRejections) {
  ASSERT_OK(client_->RegisterJob(Spec("a")));
  Steps steps;
  for (int t = 0; t < 25; ++t) {
    steps.Add(t, t == 12 ? std::vector<double>{-1, 0, 0, 0, 0, 0, 0, 0} : Uniform());
  }
  absl::StatusOr<pb::IngestSummary> s = client_->IngestSteps("a", steps.inputs, 10);
  ASSERT_OK(s);
  EXPECT_EQ(s->batches(), 3);
  EXPECT_EQ(s->steps(), 25);
  EXPECT_EQ(s->committed(), 24);
  EXPECT_EQ(s->rejected(), 1);
  ASSERT_EQ(s->first_rejections_size(), 1);
  EXPECT_EQ(s->first_rejections(0).step(), 12);
  EXPECT_FALSE(s->first_rejections(0).error_message().empty());
  EXPECT_EQ(engine_->GetJobInfo("a").value().committed_steps, 24);

  // Router logits and tokens travel too.
  StepInput with_extras;
  std::vector<double> counts = Uniform(1), logits(kLayers * kExperts, 0.5);
  with_extras.step = 30;
  with_extras.counts = counts;
  with_extras.router_logits = logits;
  with_extras.tokens = 3;  // 4 assignments per layer <= 3 tokens x top_k 2
  s = client_->IngestSteps("a", absl::MakeConstSpan(&with_extras, 1));
  ASSERT_OK(s);
  EXPECT_EQ(s->committed(), 1);
  with_extras.step = 31;
  with_extras.tokens = 1;  // 4 assignments > 1 x 2
  s = client_->IngestSteps("a", absl::MakeConstSpan(&with_extras, 1));
  ASSERT_OK(s);
  EXPECT_EQ(s->rejected(), 1);
  ASSERT_EQ(s->first_rejections_size(), 1);
  EXPECT_THAT(s->first_rejections(0).error_message(), HasSubstr("tokens"));

  EXPECT_THAT(client_->IngestSteps("nope", steps.inputs, 10),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  EXPECT_THAT(client_->IngestSteps("a", steps.inputs, 0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("batch_size must be >= 1, got 0")));
  // An empty span is one empty stream.
  s = client_->IngestSteps("a", {});
  ASSERT_OK(s);
  EXPECT_EQ(s->batches(), 0);
}

TEST_F(ClientTest, IngestStreamWritesBatchesOfSeveralJobs) {
  ASSERT_OK(client_->RegisterJob(Spec("a")));
  ASSERT_OK(client_->RegisterJob(Spec("b")));
  absl::StatusOr<std::unique_ptr<IngestStream>> stream = client_->OpenIngestStream();
  ASSERT_OK(stream);
  const std::pair<const char*, int64_t> batches[] = {{"a", 0}, {"b", 0}, {"a", 1}};
  for (const auto& [job, step] : batches) {
    pb::IngestBatchRequest batch;
    batch.set_job_id(job);
    AddStep(&batch, step, Uniform());
    ASSERT_OK((*stream)->Write(batch));
  }
  EXPECT_EQ((*stream)->batches_written(), 3);
  absl::StatusOr<pb::IngestSummary> s = (*stream)->Finish();
  ASSERT_OK(s);
  EXPECT_EQ(s->batches(), 3);
  EXPECT_EQ(s->committed(), 3);
  EXPECT_EQ(engine_->GetJobInfo("a").value().committed_steps, 2);
  EXPECT_EQ(engine_->GetJobInfo("b").value().committed_steps, 1);

  EXPECT_THAT((*stream)->Finish(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                            HasSubstr("already finished")));
  EXPECT_THAT((*stream)->Write(pb::IngestBatchRequest()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("after the stream")));
}

TEST_F(ClientTest, IngestStreamEndsWithNotFoundForAnUnknownJob) {
  absl::StatusOr<std::unique_ptr<IngestStream>> stream = client_->OpenIngestStream();
  ASSERT_OK(stream);
  pb::IngestBatchRequest batch;
  batch.set_job_id("ghost");
  AddStep(&batch, 0, Uniform());
  // The first Write may be buffered before the server answers; the error
  // comes from a later Write or from Finish.
  absl::Status write = (*stream)->Write(batch);
  absl::Status end = write;
  if (write.ok()) {
    for (int i = 0; i < 100 && end.ok(); ++i) {
      end = (*stream)->Write(batch);
      if (end.code() == absl::StatusCode::kFailedPrecondition) break;
    }
    if (end.ok()) end = (*stream)->Finish().status();
  }
  EXPECT_THAT(end, StatusIs(absl::StatusCode::kNotFound, HasSubstr("ghost")));
}

TEST_F(ClientTest, DroppingAnUnfinishedStreamCancelsIt) {
  ASSERT_OK(client_->RegisterJob(Spec("a")));
  {
    absl::StatusOr<std::unique_ptr<IngestStream>> stream = client_->OpenIngestStream();
    ASSERT_OK(stream);
    pb::IngestBatchRequest batch;
    batch.set_job_id("a");
    AddStep(&batch, 0, Uniform());
    ASSERT_OK((*stream)->Write(batch));
  }  // destroyed without Finish: must not hang
  // The server is still fine.
  EXPECT_OK(client_->ListJobs());
}

// ---------------------------------------------------------------------------
// Watch

TEST_F(ClientTest, WatchDeliversEventsAndCancelsFromAnotherThread) {
  ASSERT_OK(client_->RegisterJob(Spec("w")));
  pb::WatchRequest wreq;
  wreq.set_job_id("w");
  absl::StatusOr<std::unique_ptr<WatchCall>> watch = client_->Watch(wreq);
  ASSERT_OK(watch);
  std::mutex mu;
  std::vector<pb::Event> events;
  absl::Status run_status = absl::UnknownError("not run");
  std::thread reader([&] {
    run_status = (*watch)->Run([&](const pb::Event& e) {
      std::lock_guard<std::mutex> lock(mu);
      events.push_back(e);
      return true;
    });
  });
  IngestStableThenTrend("w");
  // Wait for the four state changes (stable x3, then layer 1 transient;
  // the trend's load shift events come too).
  auto state_changes = [&] {
    std::vector<pb::Event> out;
    std::lock_guard<std::mutex> lock(mu);
    for (const pb::Event& e : events) {
      if (e.kind() == pb::Event::KIND_STATE_CHANGE) out.push_back(e);
    }
    return out;
  };
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (state_changes().size() < 4 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  (*watch)->Cancel();
  reader.join();
  EXPECT_OK(run_status);  // cancelled by us: OK
  const std::vector<pb::Event> changes = state_changes();
  ASSERT_EQ(changes.size(), 4u);
  std::lock_guard<std::mutex> lock(mu);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1));
    EXPECT_TRUE(events[i].kind() == pb::Event::KIND_STATE_CHANGE ||
                events[i].kind() == pb::Event::KIND_SHIFT);
  }
  EXPECT_EQ(changes[3].layer(), 1);
  EXPECT_EQ(changes[3].to(), "transient");
  EXPECT_EQ((*watch)->last_seq(), static_cast<int64_t>(events.size()));
  // Run is once per call.
  EXPECT_THAT((*watch)->Run([](const pb::Event&) { return true; }),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("already")));

  // Resume after seq 2, stop from the callback after one event.
  wreq.set_after_seq(2);
  watch = client_->Watch(wreq);
  ASSERT_OK(watch);
  std::vector<int64_t> seqs;
  EXPECT_OK((*watch)->Run([&](const pb::Event& e) {
    seqs.push_back(e.seq());
    return false;
  }));
  EXPECT_THAT(seqs, ElementsAre(3));
}

TEST_F(ClientTest, WatchWithoutEventsEndsOnCancel) {
  ASSERT_OK(client_->RegisterJob(Spec("quiet")));
  pb::WatchRequest wreq;
  wreq.set_job_id("quiet");
  absl::StatusOr<std::unique_ptr<WatchCall>> watch = client_->Watch(wreq);
  ASSERT_OK(watch);
  std::atomic<bool> done{false};
  absl::Status status = absl::UnknownError("not run");
  std::thread reader([&] {
    status = (*watch)->Run([](const pb::Event&) { return true; });
    done.store(true);
  });
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(done.load());  // blocked waiting for events
  const absl::Time cancel_at = absl::Now();
  (*watch)->Cancel();
  reader.join();
  EXPECT_LT(absl::Now() - cancel_at, absl::Seconds(5));
  EXPECT_OK(status);
  EXPECT_EQ((*watch)->events(), 0);

  // Cancel before Run: Run returns OK at once.
  watch = client_->Watch(wreq);
  ASSERT_OK(watch);
  (*watch)->Cancel();
  EXPECT_OK((*watch)->Run([](const pb::Event&) { return true; }));
}

TEST_F(ClientTest, BackgroundWatchCallsBackAndCancels) {
  ASSERT_OK(client_->RegisterJob(Spec("bg")));
  pb::WatchRequest wreq;
  wreq.set_job_id("bg");
  std::mutex mu;
  std::vector<int64_t> seqs;
  absl::StatusOr<std::unique_ptr<BackgroundWatch>> watch =
      client_->StartWatch(wreq, [&](const pb::Event& e) {
        std::lock_guard<std::mutex> lock(mu);
        seqs.push_back(e.seq());
        return true;
      });
  ASSERT_OK(watch);
  IngestStableThenTrend("bg", 300);
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while ((*watch)->call().events() < 3 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  (*watch)->Cancel();
  EXPECT_OK((*watch)->Wait());
  EXPECT_OK((*watch)->Wait());  // again: same answer
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_THAT(seqs, ElementsAre(1, 2, 3));

  EXPECT_THAT(client_->StartWatch(wreq, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("on_event")));
}

TEST_F(ClientTest, WatchOfAnUnknownJobIsNotFound) {
  pb::WatchRequest wreq;
  wreq.set_job_id("nope");
  absl::StatusOr<std::unique_ptr<WatchCall>> watch = client_->Watch(wreq);
  ASSERT_OK(watch);
  int calls = 0;
  EXPECT_THAT((*watch)->Run([&](const pb::Event&) { return ++calls > 0; }),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  EXPECT_EQ(calls, 0);
}

TEST_F(ClientTest, ServerShutdownEndsAWatchWithOk) {
  ASSERT_OK(client_->RegisterJob(Spec("w")));
  pb::WatchRequest wreq;
  wreq.set_job_id("w");
  absl::StatusOr<std::unique_ptr<BackgroundWatch>> watch =
      client_->StartWatch(wreq, [](const pb::Event&) { return true; });
  ASSERT_OK(watch);
  absl::SleepFor(absl::Milliseconds(50));
  server_->Shutdown();
  EXPECT_OK((*watch)->Wait());
}

// ---------------------------------------------------------------------------
// Transport errors

TEST_F(ClientTest, UnreachableServerFailsFastOrAtTheDeadline) {
  RefusingPort refusing;
  ASSERT_GT(refusing.port(), 0);
  ClientOptions o;
  o.target = absl::StrCat("127.0.0.1:", refusing.port());
  o.timeout = absl::Milliseconds(300);

  // Default: fail fast.
  std::unique_ptr<MoecastClient> fast = MoecastClient::Connect(o).value();
  absl::Time start = absl::Now();
  EXPECT_THAT(fast->ListJobs(),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("moecast.v1.Moecast/ListJobs"), HasSubstr(o.target))));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));

  // wait_for_ready: waits for a connection until the deadline.
  o.wait_for_ready = true;
  std::unique_ptr<MoecastClient> patient = MoecastClient::Connect(o).value();
  start = absl::Now();
  pb::ForecastRequest freq;
  freq.set_job_id("a");
  EXPECT_THAT(patient->Forecast(freq),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       AllOf(HasSubstr("moecast.v1.Moecast/Forecast"), HasSubstr(o.target))));
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(250));
  EXPECT_LT(took, absl::Seconds(5));

  // Streams: the error surfaces from Finish / Run.
  EXPECT_THAT(fast->IngestSteps("a", {}), StatusIs(absl::StatusCode::kUnavailable,
                                                   HasSubstr("moecast.v1.Moecast/Ingest")));
  pb::WatchRequest wreq;
  wreq.set_job_id("a");
  absl::StatusOr<std::unique_ptr<WatchCall>> watch = fast->Watch(wreq);
  ASSERT_OK(watch);
  EXPECT_THAT((*watch)->Run([](const pb::Event&) { return true; }),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("moecast.v1.Moecast/Watch")));
}

TEST_F(ClientTest, MessagesOverTheClientLimitAreRefused) {
  ASSERT_OK(client_->RegisterJob(Spec("big")));
  ClientOptions o = Options();
  o.max_message_bytes = 1024;
  std::unique_ptr<MoecastClient> small = MoecastClient::Connect(o).value();
  pb::IngestBatchRequest req;
  req.set_job_id("big");
  AddStep(&req, 0, std::vector<double>(1000, 1.0));  // ~8 kB
  EXPECT_THAT(small->IngestBatch(req), StatusIs(absl::StatusCode::kResourceExhausted, _));
  EXPECT_EQ(engine_->GetJobInfo("big").value().committed_steps, 0);
}

// ---------------------------------------------------------------------------
// Bearer token (needs the server's auth_token support in server.cc)

TEST_F(ClientTest, BearerTokenIsSentOnEveryCall) {
  ServerOptions options;
  options.auth_token = "s3cret-token";
  StartServer(options);

  // Without a token, with a wrong one: UNAUTHENTICATED, for unary and
  // streaming calls.
  EXPECT_THAT(client_->ListJobs(), StatusIs(absl::StatusCode::kUnauthenticated, _));
  ClientOptions wrong = Options();
  wrong.auth_token = "s3cret-tokem";
  std::unique_ptr<MoecastClient> bad = MoecastClient::Connect(wrong).value();
  EXPECT_THAT(bad->RegisterJob(Spec("x")), StatusIs(absl::StatusCode::kUnauthenticated, _));
  EXPECT_THAT(engine_->ListJobs(), IsEmpty());

  ClientOptions right = Options();
  right.auth_token = "s3cret-token";
  std::unique_ptr<MoecastClient> good = MoecastClient::Connect(right).value();
  ASSERT_OK(good->RegisterJob(Spec("x")));
  Steps steps;
  steps.Add(0, Uniform());
  absl::StatusOr<pb::IngestSummary> s = good->IngestSteps("x", steps.inputs);
  ASSERT_OK(s);
  EXPECT_EQ(s->committed(), 1);
  EXPECT_THAT(bad->IngestSteps("x", steps.inputs),
              StatusIs(absl::StatusCode::kUnauthenticated, _));
  pb::WatchRequest wreq;
  wreq.set_job_id("x");
  absl::StatusOr<std::unique_ptr<WatchCall>> watch = bad->Watch(wreq);
  ASSERT_OK(watch);
  EXPECT_THAT((*watch)->Run([](const pb::Event&) { return true; }),
              StatusIs(absl::StatusCode::kUnauthenticated, _));
  absl::StatusOr<pb::ListJobsResponse> jobs = good->ListJobs();
  ASSERT_OK(jobs);
  EXPECT_THAT(jobs->job_ids(), ElementsAre("x"));
}

// ---------------------------------------------------------------------------
// TLS and mutual TLS (need the server's TLS support in server.cc)

class ClientTlsTest : public ClientTest {
 protected:
  void SetUp() override {
    const std::string dir = absl::StrCat(::testing::TempDir(), "/client_test_certs");
    ASSERT_TRUE(mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) << dir;
    absl::StatusOr<testing::TestCerts> certs = testing::MakeTestCerts(dir);
    ASSERT_OK(certs);
    pki_ = *std::move(certs);
  }

  void StartTlsServer(bool mutual) {
    ServerOptions options;
    options.tls.cert_chain_pem = pki_.server_cert;
    options.tls.private_key_pem = pki_.server_key;
    if (mutual) options.tls.client_ca_pem = pki_.ca_cert;
    StartServer(options);
  }

  ClientOptions TlsOptions() const {
    ClientOptions o = Options();
    o.tls = true;
    o.root_ca_pem = pki_.ca_cert;
    o.timeout = absl::Seconds(5);
    return o;
  }

  testing::TestCerts pki_;
};

TEST_F(ClientTlsTest, TlsServerTalksToTlsClientsOnly) {
  StartTlsServer(/*mutual=*/false);
  std::unique_ptr<MoecastClient> tls = MoecastClient::Connect(TlsOptions()).value();
  ASSERT_OK(tls->RegisterJob(Spec("t")));
  absl::StatusOr<pb::ListJobsResponse> jobs = tls->ListJobs();
  ASSERT_OK(jobs);
  EXPECT_THAT(jobs->job_ids(), ElementsAre("t"));

  // The certificate names localhost too.
  ClientOptions by_name = TlsOptions();
  by_name.target = absl::StrCat("localhost:", server_->port());
  EXPECT_OK(MoecastClient::Connect(by_name).value()->ListJobs());

  // A plaintext client, and a client trusting another CA, cannot talk to it.
  EXPECT_THAT(client_->ListJobs(), StatusIs(absl::StatusCode::kUnavailable, _));
  ClientOptions other = TlsOptions();
  other.root_ca_pem = pki_.rogue_ca_cert;
  EXPECT_THAT(MoecastClient::Connect(other).value()->ListJobs(),
              StatusIs(absl::StatusCode::kUnavailable, _));
  // A name the certificate does not hold.
  ClientOptions wrong_name = TlsOptions();
  wrong_name.tls_server_name_override = "not-the-server.example";
  EXPECT_THAT(MoecastClient::Connect(wrong_name).value()->ListJobs(),
              StatusIs(absl::StatusCode::kUnavailable, _));
}

TEST_F(ClientTlsTest, MutualTlsNeedsAClientCertificate) {
  StartTlsServer(/*mutual=*/true);
  ClientOptions with_cert = TlsOptions();
  with_cert.client_cert_pem = pki_.client_cert;
  with_cert.client_key_pem = pki_.client_key;
  std::unique_ptr<MoecastClient> mtls = MoecastClient::Connect(with_cert).value();
  ASSERT_OK(mtls->RegisterJob(Spec("m")));
  Steps steps;
  steps.Add(0, Uniform());
  absl::StatusOr<pb::IngestSummary> s = mtls->IngestSteps("m", steps.inputs);
  ASSERT_OK(s);
  EXPECT_EQ(s->committed(), 1);

  // TLS without a client certificate, or with one another CA signed, is
  // refused in the handshake.
  std::unique_ptr<MoecastClient> no_cert = MoecastClient::Connect(TlsOptions()).value();
  EXPECT_THAT(no_cert->ListJobs(), StatusIs(absl::StatusCode::kUnavailable, _));
  ClientOptions rogue = TlsOptions();
  rogue.client_cert_pem = pki_.rogue_client_cert;
  rogue.client_key_pem = pki_.rogue_client_key;
  EXPECT_THAT(MoecastClient::Connect(rogue).value()->ListJobs(),
              StatusIs(absl::StatusCode::kUnavailable, _));
  EXPECT_THAT(engine_->ListJobs(), ElementsAre("m"));
}

TEST_F(ClientTlsTest, MutualTlsAndTokenTogether) {
  ServerOptions options;
  options.tls.cert_chain_pem = pki_.server_cert;
  options.tls.private_key_pem = pki_.server_key;
  options.tls.client_ca_pem = pki_.ca_cert;
  options.auth_token = "tok";
  StartServer(options);
  ClientOptions o = TlsOptions();
  o.client_cert_pem = pki_.client_cert;
  o.client_key_pem = pki_.client_key;
  EXPECT_THAT(MoecastClient::Connect(o).value()->ListJobs(),
              StatusIs(absl::StatusCode::kUnauthenticated, _));
  o.auth_token = "tok";
  EXPECT_OK(MoecastClient::Connect(o).value()->ListJobs());
}

}  // namespace
}  // namespace moecast::grpc_api
