// End to end: a MoecastServer on 127.0.0.1:0 in-process, a real channel, and
// every RPC of the moecast.v1 slice.
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "integrations/grpc/server.h"
#include "moecast/v1/moecast.grpc.pb.h"

namespace moecast::grpc_api {
namespace {

namespace pb = ::moecast::v1;
using ::testing::HasSubstr;

constexpr int kLayers = 2;
constexpr int kExperts = 4;

class ServiceE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_ = Engine::Create(EngineOptions()).value();
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.max_message_bytes = 4 << 20;
    server_ = MoecastServer::Start(engine_.get(), options).value();
    ASSERT_GT(server_->port(), 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = pb::Moecast::NewStub(channel_);
  }

  void TearDown() override {
    stub_.reset();
    channel_.reset();
    server_.reset();
    engine_.reset();
  }

  grpc::Status Register(const std::string& id, int layers = kLayers) {
    pb::RegisterJobRequest req;
    pb::JobSpec* spec = req.mutable_spec();
    spec->set_job_id(id);
    spec->set_num_layers(layers);
    spec->set_num_experts(kExperts);
    spec->set_top_k(2);
    pb::RegisterJobResponse resp;
    grpc::ClientContext ctx;
    return stub_->RegisterJob(&ctx, req, &resp);
  }

  static void AddStep(pb::IngestBatchRequest* req, int64_t step, std::vector<double> counts) {
    pb::Step* s = req->add_steps();
    s->set_step(step);
    for (double c : counts) s->add_counts(c);
  }

  static std::vector<double> Uniform(double v = 10) {
    return std::vector<double>(kLayers * kExperts, v);
  }

  // Slows every analysed step by the given microseconds (0: not at all).
  void SlowAnalysis(std::atomic<int>* step_us) {
    TearDown();
    EngineOptions o;
    o.analysis.probe = [step_us](const AnalysisProbe& p) {
      if (p.kind == AnalysisProbe::Kind::kStep && step_us->load() > 0) {
        std::this_thread::sleep_for(std::chrono::microseconds(step_us->load()));
      }
    };
    engine_ = Engine::Create(o).value();
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    server_ = MoecastServer::Start(engine_.get(), options).value();
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = pb::Moecast::NewStub(channel_);
  }

  std::unique_ptr<Engine> engine_;
  std::unique_ptr<MoecastServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::Moecast::Stub> stub_;
};

TEST_F(ServiceE2ETest, JobsRegisterListDeleteWithCodes) {
  ASSERT_TRUE(Register("a").ok());
  ASSERT_TRUE(Register("b").ok());
  grpc::Status dup = Register("a");
  EXPECT_EQ(dup.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(dup.error_message(), HasSubstr("a"));
  grpc::Status bad = Register("c", /*layers=*/0);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_FALSE(bad.error_message().empty());

  {
    grpc::ClientContext ctx;
    pb::ListJobsResponse resp;
    ASSERT_TRUE(stub_->ListJobs(&ctx, pb::ListJobsRequest(), &resp).ok());
    EXPECT_THAT(resp.job_ids(), ::testing::ElementsAre("a", "b"));
  }
  pb::DeleteJobRequest del;
  del.set_job_id("a");
  pb::DeleteJobResponse del_resp;
  {
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub_->DeleteJob(&ctx, del, &del_resp).ok());
  }
  {
    grpc::ClientContext ctx;
    grpc::Status again = stub_->DeleteJob(&ctx, del, &del_resp);
    EXPECT_EQ(again.error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

TEST_F(ServiceE2ETest, BatchRejectsTheBadStepAndCommitsTheOthers) {
  ASSERT_TRUE(Register("a").ok());
  pb::IngestBatchRequest req;
  req.set_job_id("a");
  AddStep(&req, 0, Uniform());
  AddStep(&req, 1, std::vector<double>(3, 1.0));  // wrong size: L*M = 8
  AddStep(&req, 2, Uniform());
  AddStep(&req, 2, Uniform());  // re-sent: duplicate
  AddStep(&req, 3, Uniform());
  pb::IngestBatchResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->IngestBatch(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 5);
  EXPECT_EQ(resp.results(0).outcome(), pb::STEP_OUTCOME_COMMITTED);
  EXPECT_EQ(resp.results(1).outcome(), pb::STEP_OUTCOME_REJECTED);
  EXPECT_EQ(resp.results(1).step(), 1);
  EXPECT_EQ(resp.results(1).error_code(),
            static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(resp.results(1).error_message(), HasSubstr("3"));
  EXPECT_EQ(resp.results(2).outcome(), pb::STEP_OUTCOME_COMMITTED);
  EXPECT_EQ(resp.results(3).outcome(), pb::STEP_OUTCOME_DUPLICATE);
  EXPECT_EQ(resp.results(4).outcome(), pb::STEP_OUTCOME_COMMITTED);
  EXPECT_EQ(resp.rejected(), 1);
  ASSERT_EQ(resp.committed_size(), 3);
  EXPECT_EQ(resp.committed(0).step(), 0);
  EXPECT_EQ(resp.committed(1).step(), 2);
  EXPECT_EQ(resp.committed(1).gap_before(), 1);
  EXPECT_EQ(resp.committed(2).step(), 3);
  EXPECT_EQ(engine_->GetJobInfo("a").value().committed_steps, 3);

  pb::IngestBatchRequest unknown;
  unknown.set_job_id("nope");
  AddStep(&unknown, 0, Uniform());
  grpc::ClientContext ctx2;
  pb::IngestBatchResponse resp2;
  grpc::Status s = stub_->IngestBatch(&ctx2, unknown, &resp2);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("nope"));
}

TEST_F(ServiceE2ETest, StreamedIngestForecastAndHealth) {
  ASSERT_TRUE(Register("a").ok());
  {
    grpc::ClientContext ctx;
    pb::IngestSummary summary;
    std::unique_ptr<grpc::ClientWriter<pb::IngestBatchRequest>> writer =
        stub_->Ingest(&ctx, &summary);
    std::mt19937 rng(1);
    std::poisson_distribution<int> noise(50);
    int64_t step = 0;
    for (int b = 0; b < 5; ++b) {
      pb::IngestBatchRequest req;
      req.set_job_id("a");
      for (int i = 0; i < 10; ++i) {
        std::vector<double> c(kLayers * kExperts);
        for (double& x : c) x = noise(rng);
        AddStep(&req, step++, c);
      }
      if (b == 2) AddStep(&req, step++, {-1, 0, 0, 0, 0, 0, 0, 0});  // negative
      ASSERT_TRUE(writer->Write(req));
    }
    ASSERT_TRUE(writer->WritesDone());
    ASSERT_TRUE(writer->Finish().ok());
    EXPECT_EQ(summary.batches(), 5);
    EXPECT_EQ(summary.steps(), 51);
    EXPECT_EQ(summary.committed(), 50);
    EXPECT_EQ(summary.rejected(), 1);
    ASSERT_EQ(summary.first_rejections_size(), 1);
    EXPECT_EQ(summary.first_rejections(0).step(), 30);
    EXPECT_FALSE(summary.first_rejections(0).error_message().empty());
  }
  {
    pb::ForecastRequest req;
    req.set_job_id("a");
    req.add_horizons(1);
    req.add_horizons(10);
    req.set_path_steps(3);
    pb::ForecastResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->Forecast(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.as_of_step(), 50);
    ASSERT_EQ(resp.layers_size(), kLayers);
    for (const pb::LayerForecast& lf : resp.layers()) {
      ASSERT_EQ(lf.horizons_size(), 2);
      EXPECT_EQ(lf.horizons(1).horizon(), 10);
      EXPECT_FALSE(lf.horizons(0).predictor().empty());
      ASSERT_EQ(lf.horizons(0).means_size(), kExperts);
      double sum = 0;
      for (double m : lf.horizons(0).means()) sum += m;
      EXPECT_NEAR(sum, 1.0, 1e-9);
      EXPECT_EQ(lf.path_size(), 3 * kExperts);
    }
  }
  auto forecast_code = [&](auto mutate) {
    pb::ForecastRequest req;
    req.set_job_id("a");
    mutate(req);
    pb::ForecastResponse resp;
    grpc::ClientContext ctx;
    return stub_->Forecast(&ctx, req, &resp).error_code();
  };
  EXPECT_EQ(forecast_code([](pb::ForecastRequest& r) { r.add_horizons(0); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(forecast_code([](pb::ForecastRequest& r) { r.set_path_steps(1 << 20); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(forecast_code([](pb::ForecastRequest& r) { r.add_layers(kLayers); }),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(forecast_code([](pb::ForecastRequest& r) { r.set_predictor("no_such"); }),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(forecast_code([](pb::ForecastRequest& r) { r.set_job_id("nope"); }),
            grpc::StatusCode::NOT_FOUND);

  // 50 steps: no health window (100 steps) has completed.
  pb::GetHealthRequest hreq;
  hreq.set_job_id("a");
  pb::GetHealthResponse hresp;
  grpc::ClientContext hctx;
  grpc::Status hs = stub_->GetHealth(&hctx, hreq, &hresp);
  EXPECT_EQ(hs.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(hs.error_message(), HasSubstr("no health window"));
}

TEST_F(ServiceE2ETest, WatchStreamsStateChangesAndHealthAppears) {
  ASSERT_TRUE(Register("s").ok());
  // The watcher starts before any event exists and sees them as they come.
  grpc::ClientContext watch_ctx;
  pb::WatchRequest wreq;
  wreq.set_job_id("s");
  std::unique_ptr<grpc::ClientReader<pb::Event>> reader = stub_->Watch(&watch_ctx, wreq);
  std::vector<pb::Event> events;
  std::thread watcher([&] {
    pb::Event e;
    while (events.size() < 4 && reader->Read(&e)) events.push_back(e);
    watch_ctx.TryCancel();
  });

  // Steady loads (both layers and the job turn stable), then layer 1's
  // expert 0 trends (layer 1 turns transient).
  std::mt19937 rng(9);
  std::poisson_distribution<int> noise(200);
  for (int b = 0; b < 6; ++b) {
    pb::IngestBatchRequest req;
    req.set_job_id("s");
    for (int t = b * 100; t < (b + 1) * 100; ++t) {
      std::vector<double> c(kLayers * kExperts);
      for (double& x : c) x = noise(rng);
      if (t >= 400) c[kExperts] += 20.0 * (t - 400);
      AddStep(&req, t, c);
    }
    pb::IngestBatchResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->IngestBatch(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.rejected(), 0);
  }
  watcher.join();
  grpc::Status ws = reader->Finish();
  EXPECT_EQ(ws.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_EQ(events.size(), 4u);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(events[i].kind(), pb::Event::KIND_STATE_CHANGE);
  }
  EXPECT_EQ(events[2].layer(), -1);
  EXPECT_EQ(events[2].to(), "stable");
  EXPECT_EQ(events[3].layer(), 1);
  EXPECT_EQ(events[3].from(), "stable");
  EXPECT_EQ(events[3].to(), "transient");
  EXPECT_GT(events[3].step(), 400);

  // Resuming after seq 2 gives events 3 and 4 (then the client cancels).
  {
    grpc::ClientContext ctx;
    pb::WatchRequest req;
    req.set_job_id("s");
    req.set_after_seq(2);
    auto r = stub_->Watch(&ctx, req);
    pb::Event e;
    ASSERT_TRUE(r->Read(&e));
    EXPECT_EQ(e.seq(), 3);
    ASSERT_TRUE(r->Read(&e));
    EXPECT_EQ(e.seq(), 4);
    ctx.TryCancel();
    EXPECT_EQ(r->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }

  // 600 steps: health windows have completed (no router logits: no gamma).
  pb::GetHealthRequest hreq;
  hreq.set_job_id("s");
  pb::GetHealthResponse hresp;
  grpc::ClientContext hctx;
  grpc::Status hs = stub_->GetHealth(&hctx, hreq, &hresp);
  ASSERT_TRUE(hs.ok()) << hs.error_message();
  EXPECT_EQ(hresp.as_of_step(), 599);
  ASSERT_EQ(hresp.layers_size(), kLayers);
  EXPECT_EQ(hresp.layers(0).window_end_step(), 599);
  EXPECT_FALSE(hresp.layers(0).has_gamma());
  EXPECT_FALSE(hresp.layers(0).gamma_status().empty());
  EXPECT_GE(hresp.layers(1).max_over_mean(), 1.0);
  EXPECT_EQ(hresp.e().kind(), pb::EParameter::KIND_MISSING);

  // Watch on an unknown job.
  grpc::ClientContext nctx;
  pb::WatchRequest nreq;
  nreq.set_job_id("nope");
  auto nr = stub_->Watch(&nctx, nreq);
  pb::Event e;
  EXPECT_FALSE(nr->Read(&e));
  EXPECT_EQ(nr->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServiceE2ETest, HealthWithRouterLogitsHasGamma) {
  pb::RegisterJobRequest req;
  pb::JobSpec* spec = req.mutable_spec();
  spec->set_job_id("h");
  spec->set_num_layers(kLayers);
  spec->set_num_experts(kExperts);
  spec->set_top_k(2);
  spec->mutable_hyperparameters()->set_router_temperature(1.0);
  spec->mutable_hyperparameters()->set_entropy_weight(0.1);
  spec->mutable_hyperparameters()->set_oracle_weight(0.2);
  spec->mutable_hyperparameters()->set_balance_weight(0.2);
  {
    pb::RegisterJobResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->RegisterJob(&ctx, req, &resp).ok());
  }
  pb::IngestBatchRequest batch;
  batch.set_job_id("h");
  for (int t = 0; t < 100; ++t) {
    pb::Step* s = batch.add_steps();
    s->set_step(t);
    for (int l = 0; l < kLayers; ++l) {
      for (int e = 0; e < kExperts; ++e) {
        s->add_counts(e == 3 ? 0 : 50);
        s->add_router_logits(0.3 * e);
      }
    }
  }
  {
    pb::IngestBatchResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->IngestBatch(&ctx, batch, &resp).ok());
    ASSERT_EQ(resp.committed_size(), 100);
  }
  pb::GetHealthRequest hreq;
  hreq.set_job_id("h");
  pb::GetHealthResponse hresp;
  grpc::ClientContext hctx;
  ASSERT_TRUE(stub_->GetHealth(&hctx, hreq, &hresp).ok());
  ASSERT_EQ(hresp.layers_size(), kLayers);
  EXPECT_TRUE(hresp.layers(0).has_gamma()) << hresp.layers(0).gamma_status();
  EXPECT_FALSE(hresp.layers(0).phase().empty());
  // The fit's quality flags are the engine's.
  const HealthReport direct = engine_->Health("h").value();
  ASSERT_TRUE(direct.layers[0].gamma.has_value());
  const GammaFit& fit = *direct.layers[0].gamma;
  EXPECT_EQ(hresp.layers(0).gamma_f(), fit.gamma_f);
  EXPECT_EQ(hresp.layers(0).gamma_at_bound(), fit.at_lower_bound || fit.at_upper_bound);
  EXPECT_EQ(hresp.layers(0).gamma_weakly_identified(), fit.weakly_identified);
  EXPECT_EQ(hresp.layers(0).gamma_converged(), fit.converged);
  EXPECT_EQ(hresp.e().kind(), pb::EParameter::KIND_FINITE);
  ASSERT_TRUE(hresp.e().has_value());
  EXPECT_NEAR(hresp.e().value(), 1.0 * 0.1 / 0.4, 1e-12);
  EXPECT_TRUE(hresp.e().below_threshold());
}

// grpc.health.v1.Health/Check answers SERVING for the whole server. The
// health protos ship without C++ stubs, so the call goes through the generic
// stub: an empty HealthCheckRequest is zero bytes, and the reply
// {status: SERVING (1)} is the bytes 08 01.
TEST_F(ServiceE2ETest, HealthCheckServiceServes) {
  grpc::GenericStub generic(channel_);
  grpc::ClientContext ctx;
  grpc::ByteBuffer request, response;
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  std::promise<grpc::Status> done;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                    &request, &response,
                    [&](grpc::Status s) { done.set_value(std::move(s)); });
  grpc::Status s = done.get_future().get();
  ASSERT_TRUE(s.ok()) << s.error_message();
  grpc::Slice slice;
  ASSERT_TRUE(response.DumpToSingleSlice(&slice).ok());
  std::string bytes(reinterpret_cast<const char*>(slice.begin()), slice.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
}

// The placement used by the placement and rebalance tests: GPU 0 holds experts 0, 1, 2 and
// GPU 1 holds 3, 0, 1, in every layer, with a migration model under which
// moving pays when expert 0 is hot.
pb::RecommendPlacementRequest RebalanceRequest() {
  pb::RecommendPlacementRequest req;
  req.set_num_slots(6);
  req.set_num_gpus(2);
  req.set_horizon(10);
  req.set_bytes_per_expert(1000);
  for (int l = 0; l < kLayers; ++l) {
    for (int e : {0, 1, 2, 3, 0, 1}) req.add_current_phy2log(e);
  }
  pb::MigrationModel* m = req.mutable_migration();
  m->set_intra_node_bandwidth(1e9);
  m->set_inter_node_bandwidth(1e8);
  m->set_tokens_per_step(1e6);
  m->set_time_per_token_s(1e-9);
  m->set_horizon_steps(1000);
  return req;
}

TEST_F(ServiceE2ETest, RecommendPlacementPlansAndDecides) {
  ASSERT_TRUE(Register("p").ok());
  pb::IngestBatchRequest batch;
  batch.set_job_id("p");
  for (int t = 0; t < 30; ++t) {
    // Expert 0 is hot in every layer.
    AddStep(&batch, t, {100, 10, 10, 10, 100, 10, 10, 10});
  }
  {
    pb::IngestBatchResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->IngestBatch(&ctx, batch, &resp).ok());
    ASSERT_EQ(resp.rejected(), 0);
  }
  pb::RecommendPlacementRequest req = RebalanceRequest();
  req.set_job_id("p");
  pb::RecommendPlacementResponse resp;
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub_->RecommendPlacement(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(resp.as_of_step(), 29);
  EXPECT_EQ(resp.horizon(), 10);
  EXPECT_EQ(resp.loads_size(), kLayers * kExperts);
  EXPECT_EQ(resp.plan().mode(), "default");
  EXPECT_EQ(resp.plan().phy2log_size(), kLayers * 6);
  EXPECT_EQ(resp.plan().gpu_loads_size(), kLayers * 2);
  EXPECT_GT(resp.plan().balancedness(), 0);
  EXPECT_TRUE(resp.has_current());
  EXPECT_GE(resp.plan().balancedness(), resp.current().balancedness() - 1e-12);
  EXPECT_TRUE(resp.has_decision());
  EXPECT_FALSE(resp.decision().reason().empty());

  // An inconsistent cluster (slots not a multiple of GPUs) and a bad mode.
  pb::RecommendPlacementRequest bad = req;
  bad.set_num_slots(7);
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(stub_->RecommendPlacement(&ctx, bad, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  bad = req;
  bad.set_mode("nope");
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(stub_->RecommendPlacement(&ctx, bad, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  bad = req;
  bad.set_job_id("nope");
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(stub_->RecommendPlacement(&ctx, bad, &resp).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
}

// Server reflection lists the moecast service. The reflection protos ship
// without C++ stubs: the request {list_services: ""} is the bytes 3a 00, and
// the reply carries the service names as strings.
TEST_F(ServiceE2ETest, ReflectionListsTheService) {
  grpc::GenericStub generic(channel_);
  grpc::ClientContext ctx;
  grpc::CompletionQueue cq;
  auto next = [&cq](intptr_t want) {
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), want);
    return ok;
  };
  auto call = generic.PrepareCall(
      &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(next(1));
  grpc::Slice req_slice(std::string("\x3a\x00", 2));
  grpc::ByteBuffer request(&req_slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(next(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(next(3));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(next(4));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  next(5);
  EXPECT_TRUE(status.ok()) << status.error_message();
  grpc::Slice slice;
  ASSERT_TRUE(response.DumpToSingleSlice(&slice).ok());
  std::string bytes(reinterpret_cast<const char*>(slice.begin()), slice.size());
  EXPECT_THAT(bytes, HasSubstr("moecast.v1.Moecast"));
  EXPECT_THAT(bytes, HasSubstr("grpc.health.v1.Health"));
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(ServiceE2ETest, MessagesOverTheLimitAreRefused) {
  ASSERT_TRUE(Register("a").ok());
  pb::IngestBatchRequest req;
  req.set_job_id("a");
  AddStep(&req, 0, std::vector<double>(600000, 1.0));  // ~4.8 MB > 4 MiB
  pb::IngestBatchResponse resp;
  grpc::ClientContext ctx;
  EXPECT_EQ(stub_->IngestBatch(&ctx, req, &resp).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(engine_->GetJobInfo("a").value().committed_steps, 0);
}

TEST_F(ServiceE2ETest, JobInfoStateAndFlush) {
  // A two-source job: source 0 reports steps 0 and 1, source 1 only step 0.
  pb::RegisterJobRequest reg;
  pb::JobSpec* spec = reg.mutable_spec();
  spec->set_job_id("m");
  spec->set_num_layers(kLayers);
  spec->set_num_experts(kExperts);
  spec->set_top_k(2);
  spec->set_num_sources(2);
  spec->add_horizons(1);
  spec->add_horizons(10);
  spec->mutable_hyperparameters()->set_router_temperature(1.5);
  {
    pb::RegisterJobResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->RegisterJob(&ctx, reg, &resp).ok());
  }
  pb::IngestBatchRequest batch;
  batch.set_job_id("m");
  for (auto [step, source] : {std::pair{0, 0}, {0, 1}, {1, 0}}) {
    pb::Step* s = batch.add_steps();
    s->set_step(step);
    s->set_source(source);
    for (double c : Uniform(5)) s->add_counts(c);
  }
  {
    pb::IngestBatchResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->IngestBatch(&ctx, batch, &resp).ok());
    ASSERT_EQ(resp.results_size(), 3);
    EXPECT_EQ(resp.results(0).outcome(), pb::STEP_OUTCOME_PENDING);
    EXPECT_EQ(resp.results(1).outcome(), pb::STEP_OUTCOME_COMMITTED);
    EXPECT_EQ(resp.results(2).outcome(), pb::STEP_OUTCOME_PENDING);
  }
  pb::GetJobInfoRequest ireq;
  ireq.set_job_id("m");
  pb::JobInfo info;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->GetJobInfo(&ctx, ireq, &info).ok());
  }
  EXPECT_EQ(info.spec().job_id(), "m");
  EXPECT_EQ(info.spec().num_sources(), 2);
  EXPECT_THAT(info.spec().horizons(), ::testing::ElementsAre(1, 10));
  EXPECT_DOUBLE_EQ(info.spec().hyperparameters().router_temperature(), 1.5);
  EXPECT_FALSE(info.spec().hyperparameters().has_entropy_weight());
  EXPECT_EQ(info.committed_steps(), 1);
  EXPECT_EQ(info.first_step(), 0);
  EXPECT_EQ(info.last_step(), 0);
  EXPECT_EQ(info.pending_steps(), 1);
  EXPECT_GT(info.history_bytes(), 0);
  EXPECT_GE(info.idle_seconds(), 0);
  EXPECT_FALSE(info.has_expires_after_idle_seconds());  // no expiry configured

  // Flush commits step 1 without source 1.
  pb::FlushPendingRequest freq;
  freq.set_job_id("m");
  pb::FlushPendingResponse fresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->FlushPending(&ctx, freq, &fresp).ok());
  }
  ASSERT_EQ(fresp.committed_size(), 1);
  EXPECT_EQ(fresp.committed(0).step(), 1);
  EXPECT_TRUE(fresp.committed(0).incomplete());
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->GetJobInfo(&ctx, ireq, &info).ok());
    EXPECT_EQ(info.committed_steps(), 2);
    EXPECT_EQ(info.incomplete_steps(), 1);
    EXPECT_EQ(info.pending_steps(), 0);
  }

  // State, with and without the per-expert series.
  pb::GetStateRequest sreq;
  sreq.set_job_id("m");
  pb::GetStateResponse state;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->GetState(&ctx, sreq, &state).ok());
  }
  EXPECT_EQ(state.as_of_step(), 1);
  EXPECT_EQ(state.job_state(), pb::LOAD_STATE_TRANSIENT);
  ASSERT_EQ(state.layers_size(), kLayers);
  EXPECT_EQ(state.layers(1).layer(), 1);
  EXPECT_EQ(state.layers(0).window_steps(), 2);
  EXPECT_EQ(state.layers(0).variance_w_size(), 0);
  sreq.set_per_expert(true);
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->GetState(&ctx, sreq, &state).ok());
  }
  EXPECT_EQ(state.layers(0).variance_w_size(), kExperts);
  EXPECT_EQ(state.layers(0).range_10_size(), kExperts);

  // Unknown jobs.
  for (const char* rpc : {"info", "flush", "state"}) {
    grpc::ClientContext ctx;
    grpc::Status st;
    if (std::string(rpc) == "info") {
      ireq.set_job_id("nope");
      st = stub_->GetJobInfo(&ctx, ireq, &info);
    } else if (std::string(rpc) == "flush") {
      freq.set_job_id("nope");
      st = stub_->FlushPending(&ctx, freq, &fresp);
    } else {
      sreq.set_job_id("nope");
      st = stub_->GetState(&ctx, sreq, &state);
    }
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << rpc;
    EXPECT_THAT(st.error_message(), HasSubstr("'nope'")) << rpc;
  }
}

// Analysis runs behind ingestion: answers wait for it up to the call's
// deadline, or answer stale with allow_stale; each says how current it is.
TEST_F(ServiceE2ETest, AnswersWaitForAnalysisOrAnswerStale) {
  std::atomic<int> step_us{10000};  // 10 ms a step: 60 steps take 0.6 s
  SlowAnalysis(&step_us);
  ASSERT_TRUE(Register("a").ok());
  {
    pb::IngestBatchRequest batch;
    batch.set_job_id("a");
    for (int t = 0; t < 60; ++t) AddStep(&batch, t, Uniform(10 + t % 3));
    pb::IngestBatchResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->IngestBatch(&ctx, batch, &resp).ok());
    ASSERT_EQ(resp.rejected(), 0);
  }
  pb::JobInfo info;
  pb::GetJobInfoRequest ireq;
  ireq.set_job_id("a");
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->GetJobInfo(&ctx, ireq, &info).ok());
  }
  EXPECT_EQ(info.committed_steps(), 60);
  EXPECT_GT(info.analysis_lag_steps(), 0);
  EXPECT_EQ(info.analysis_lag_steps(), 60 - info.analysed_steps());

  // A short deadline: DEADLINE_EXCEEDED.
  pb::GetStateRequest sreq;
  sreq.set_job_id("a");
  pb::GetStateResponse state;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(20));
    EXPECT_EQ(stub_->GetState(&ctx, sreq, &state).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  // allow_stale: at once, behind, and saying so (or nothing analysed yet).
  pb::ForecastRequest freq;
  freq.set_job_id("a");
  freq.set_allow_stale(true);
  pb::ForecastResponse f;
  {
    grpc::ClientContext ctx;
    grpc::Status st = stub_->Forecast(&ctx, freq, &f);
    if (st.ok()) {
      EXPECT_LT(f.as_of_step(), 59);
      EXPECT_EQ(f.analysis().as_of_step(), f.as_of_step());
      EXPECT_EQ(f.analysis().committed_step(), 59);
      EXPECT_EQ(f.analysis().lag_steps(), 59 - f.as_of_step());
    } else {
      EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
      EXPECT_THAT(st.error_message(), HasSubstr("none analysed yet"));
    }
  }
  // The default: every step committed before the call.
  step_us = 0;
  freq.set_allow_stale(false);
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Forecast(&ctx, freq, &f).ok());
  }
  EXPECT_EQ(f.as_of_step(), 59);
  EXPECT_EQ(f.analysis().as_of_step(), 59);
  EXPECT_EQ(f.analysis().committed_step(), 59);
  EXPECT_EQ(f.analysis().lag_steps(), 0);
  EXPECT_EQ(f.analysis().degraded_steps(), 0);
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->GetState(&ctx, sreq, &state).ok());
  }
  EXPECT_EQ(state.analysis().as_of_step(), 59);
  pb::RecommendPlacementRequest preq;
  preq.set_job_id("a");
  preq.set_num_slots(8);
  preq.set_num_gpus(2);
  pb::RecommendPlacementResponse placement;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->RecommendPlacement(&ctx, preq, &placement).ok());
  }
  EXPECT_EQ(placement.analysis().as_of_step(), 59);
  EXPECT_EQ(placement.analysis().lag_steps(), 0);
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->GetJobInfo(&ctx, ireq, &info).ok());
  }
  EXPECT_EQ(info.analysed_steps(), 60);
  EXPECT_EQ(info.last_analysed_step(), 59);
  EXPECT_EQ(info.analysis_lag_steps(), 0);
  EXPECT_EQ(info.scoring_shed_steps() + info.coalesced_steps(), 0);
}

TEST_F(ServiceE2ETest, StateBeforeAnyStepIsFailedPrecondition) {
  ASSERT_TRUE(Register("e").ok());
  pb::GetStateRequest req;
  req.set_job_id("e");
  pb::GetStateResponse resp;
  grpc::ClientContext ctx;
  EXPECT_EQ(stub_->GetState(&ctx, req, &resp).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(ServiceE2ETest, WatchStreamsARebalanceRecommendationOnce) {
  ASSERT_TRUE(Register("r").ok());
  // Balanced loads first: the current placement is fine.
  auto ingest = [&](int from, int to, std::vector<double> counts) {
    pb::IngestBatchRequest batch;
    batch.set_job_id("r");
    for (int t = from; t < to; ++t) AddStep(&batch, t, counts);
    pb::IngestBatchResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->IngestBatch(&ctx, batch, &resp).ok());
    ASSERT_EQ(resp.rejected(), 0);
  };
  ingest(0, 20, Uniform(10));

  grpc::ClientContext ctx;
  pb::WatchRequest wreq;
  wreq.set_job_id("r");
  *wreq.mutable_rebalance() = RebalanceRequest();
  wreq.set_rebalance_every_steps(10);
  auto reader = stub_->Watch(&ctx, wreq);
  std::vector<pb::Event> events;
  std::thread watcher([&] {
    pb::Event e;
    while (reader->Read(&e)) events.push_back(e);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  // Expert 3 (alone on GPU 1 with replicas of 0 and 1) turns very hot: moving
  // pays. The hot phase lasts long enough for several checks; only the
  // first turn to "rebalance" is streamed.
  ingest(20, 200, {1, 1, 1, 300, 1, 1, 1, 300});
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ctx.TryCancel();
  watcher.join();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);

  std::vector<pb::Event> rebalances;
  for (const pb::Event& e : events) {
    if (e.kind() == pb::Event::KIND_REBALANCE_RECOMMENDED) rebalances.push_back(e);
  }
  ASSERT_EQ(rebalances.size(), 1u);
  const pb::Event& e = rebalances[0];
  EXPECT_GE(e.step(), 20);
  EXPECT_EQ(e.to(), "rebalance");
  EXPECT_GT(e.value(), 0);
  EXPECT_FALSE(e.detail().empty());
  ASSERT_TRUE(e.recommendation().has_decision());
  EXPECT_TRUE(e.recommendation().decision().rebalance());
  EXPECT_GT(e.recommendation().plan().balancedness(),
            e.recommendation().current().balancedness());
}

TEST_F(ServiceE2ETest, WatchRebalanceRejectsBadRequests) {
  ASSERT_TRUE(Register("r").ok());
  auto code_of = [&](const pb::WatchRequest& req) {
    grpc::ClientContext ctx;
    auto reader = stub_->Watch(&ctx, req);
    pb::Event e;
    while (reader->Read(&e)) {
    }
    return reader->Finish();
  };
  pb::WatchRequest req;
  req.set_job_id("r");
  *req.mutable_rebalance() = RebalanceRequest();
  req.mutable_rebalance()->clear_migration();
  grpc::Status st = code_of(req);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("migration"));

  *req.mutable_rebalance() = RebalanceRequest();
  req.mutable_rebalance()->set_job_id("other");
  st = code_of(req);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("'other'"));

  *req.mutable_rebalance() = RebalanceRequest();
  req.set_rebalance_every_steps(-1);
  st = code_of(req);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("rebalance_every_steps"));

  pb::WatchRequest plain;
  plain.set_job_id("r");
  plain.set_rebalance_every_steps(5);
  st = code_of(plain);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  plain.set_rebalance_every_steps(0);
  plain.set_after_seq(-3);
  st = code_of(plain);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("after_seq"));

  // A cluster that cannot hold the job ends the stream once there are steps
  // to plan on.
  pb::IngestBatchRequest batch;
  batch.set_job_id("r");
  AddStep(&batch, 0, Uniform());
  pb::IngestBatchResponse resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->IngestBatch(&ctx, batch, &resp).ok());
  }
  *req.mutable_rebalance() = RebalanceRequest();
  req.set_rebalance_every_steps(1);
  req.mutable_rebalance()->set_num_slots(7);  // not a multiple of 2 GPUs
  st = code_of(req);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServiceE2ETest, ShutdownEndsAnOpenWatch) {
  ASSERT_TRUE(Register("w").ok());
  grpc::ClientContext ctx;
  pb::WatchRequest req;
  req.set_job_id("w");
  auto reader = stub_->Watch(&ctx, req);
  std::atomic<bool> done{false};
  std::thread t([&] {
    pb::Event e;
    while (reader->Read(&e)) {
    }
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  server_->Shutdown();  // must not wait for the grace period
  t.join();
  EXPECT_TRUE(done);
  EXPECT_TRUE(reader->Finish().ok());
}

}  // namespace
}  // namespace moecast::grpc_api
