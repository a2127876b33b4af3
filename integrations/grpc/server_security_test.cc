// The server's edges: TLS and mutual TLS with certificates made by openssl in
// the test, the bearer token on every RPC, the limits (jobs, layers x
// experts, concurrent streams) as RESOURCE_EXHAUSTED, concurrent clients on
// one job and on many, and moecastd's flag parsing.
#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "engine/testing/status_matchers.h"
#include "engine/testing/temp_files.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "integrations/grpc/daemon_config.h"
#include "integrations/grpc/server.h"
#include "integrations/grpc/testing/certs.h"
#include "moecast/v1/moecast.grpc.pb.h"

namespace moecast::grpc_api {
namespace {

namespace pb = ::moecast::v1;
using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int kLayers = 2;
constexpr int kExperts = 4;

pb::RegisterJobRequest RegisterRequest(const std::string& id, int layers = kLayers,
                                       int experts = kExperts, int sources = 1) {
  pb::RegisterJobRequest req;
  pb::JobSpec* spec = req.mutable_spec();
  spec->set_job_id(id);
  spec->set_num_layers(layers);
  spec->set_num_experts(experts);
  spec->set_top_k(2);
  spec->set_num_sources(sources);
  return req;
}

// A ListJobs call with a short deadline; the status says whether the channel
// (credentials, token) is accepted.
grpc::Status Ping(pb::Moecast::Stub& stub, const std::string& token = "") {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (!token.empty()) ctx.AddMetadata("authorization", token);
  pb::ListJobsResponse resp;
  return stub.ListJobs(&ctx, pb::ListJobsRequest(), &resp);
}

class ServerFixture {
 public:
  explicit ServerFixture(ServerOptions options, EngineOptions engine_options = {}) {
    engine_ = Engine::Create(engine_options).value();
    options.listen = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<MoecastServer>> server =
        MoecastServer::Start(engine_.get(), options);
    EXPECT_OK(server.status());
    if (server.ok()) server_ = *std::move(server);
  }
  std::string target() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  std::unique_ptr<pb::Moecast::Stub> Stub(
      std::shared_ptr<grpc::ChannelCredentials> creds =
          grpc::InsecureChannelCredentials()) const {
    return pb::Moecast::NewStub(grpc::CreateChannel(target(), creds));
  }
  Engine& engine() { return *engine_; }

 private:
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<MoecastServer> server_;
};

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<testing::TestCerts> certs =
        testing::MakeTestCerts(::testing::TempDir());
    ASSERT_OK(certs.status());
    certs_ = new testing::TestCerts(*std::move(certs));
  }
  static void TearDownTestSuite() { delete certs_; }

  static std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& ca,
                                                       const std::string& cert = "",
                                                       const std::string& key = "") {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ca;
    o.pem_cert_chain = cert;
    o.pem_private_key = key;
    return grpc::SslCredentials(o);
  }

  static testing::TestCerts* certs_;
};
testing::TestCerts* TlsTest::certs_ = nullptr;

TEST_F(TlsTest, ServerTlsAcceptsTrustingClientsOnly) {
  ServerOptions options;
  options.tls.cert_chain_pem = certs_->server_cert;
  options.tls.private_key_pem = certs_->server_key;
  ServerFixture server(options);
  EXPECT_TRUE(Ping(*server.Stub(Tls(certs_->ca_cert))).ok());
  // A client that trusts another CA, and a plaintext client, get nowhere.
  EXPECT_EQ(Ping(*server.Stub(Tls(certs_->rogue_ca_cert))).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Ping(*server.Stub()).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, MutualTlsNeedsAClientCertificateFromTheCa) {
  ServerOptions options;
  options.tls.cert_chain_pem = certs_->server_cert;
  options.tls.private_key_pem = certs_->server_key;
  options.tls.client_ca_pem = certs_->ca_cert;
  ServerFixture server(options);
  EXPECT_TRUE(
      Ping(*server.Stub(Tls(certs_->ca_cert, certs_->client_cert, certs_->client_key)))
          .ok());
  EXPECT_EQ(Ping(*server.Stub(Tls(certs_->ca_cert))).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Ping(*server.Stub(Tls(certs_->ca_cert, certs_->rogue_client_cert,
                                  certs_->rogue_client_key)))
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, TlsAndTokenTogether) {
  ServerOptions options;
  options.tls.cert_chain_pem = certs_->server_cert;
  options.tls.private_key_pem = certs_->server_key;
  options.auth_token = "s3cret";
  ServerFixture server(options);
  auto stub = server.Stub(Tls(certs_->ca_cert));
  EXPECT_EQ(Ping(*stub).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Ping(*stub, "Bearer s3cret").ok());
}

TEST(ServerStartTest, RejectsInconsistentSecurityOptions) {
  std::unique_ptr<Engine> engine = Engine::Create(EngineOptions()).value();
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.tls.cert_chain_pem = "-----BEGIN CERTIFICATE-----";
  EXPECT_THAT(MoecastServer::Start(engine.get(), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("private key")));
  o.tls = TlsOptions();
  o.tls.client_ca_pem = "ca";
  EXPECT_THAT(MoecastServer::Start(engine.get(), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("client CA")));
  o.tls = TlsOptions();
  o.auth_token = "two words";
  EXPECT_THAT(MoecastServer::Start(engine.get(), o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("whitespace")));
  o.auth_token.clear();
  o.service.max_concurrent_streams = 0;
  EXPECT_THAT(MoecastServer::Start(engine.get(), o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max_concurrent_streams")));
  // Garbage PEM: the port cannot be set up.
  o.service.max_concurrent_streams = 4;
  o.tls.cert_chain_pem = "not a certificate";
  o.tls.private_key_pem = "not a key";
  EXPECT_THAT(MoecastServer::Start(engine.get(), o),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("TLS")));
}

TEST(TokenTest, EveryRpcNeedsTheToken) {
  ServerOptions options;
  options.auth_token = "tok-123";
  ServerFixture server(options);
  auto stub = server.Stub();
  // Each RPC without metadata, with a wrong token, and with a non-Bearer
  // scheme: UNAUTHENTICATED, and the engine sees nothing.
  for (const std::string& header : {std::string(), std::string("Bearer tok-124"),
                                    std::string("Bearer tok-12"), std::string("tok-123"),
                                    std::string("Basic tok-123")}) {
    SCOPED_TRACE(header);
    auto ctx = [&] {
      auto c = std::make_unique<grpc::ClientContext>();
      if (!header.empty()) c->AddMetadata("authorization", header);
      return c;
    };
    std::vector<grpc::Status> st;
    {
      pb::RegisterJobResponse r;
      st.push_back(stub->RegisterJob(ctx().get(), RegisterRequest("a"), &r));
    }
    {
      pb::ListJobsResponse r;
      st.push_back(stub->ListJobs(ctx().get(), pb::ListJobsRequest(), &r));
    }
    {
      pb::DeleteJobResponse r;
      st.push_back(stub->DeleteJob(ctx().get(), pb::DeleteJobRequest(), &r));
    }
    {
      pb::JobInfo r;
      st.push_back(stub->GetJobInfo(ctx().get(), pb::GetJobInfoRequest(), &r));
    }
    {
      pb::FlushPendingResponse r;
      st.push_back(stub->FlushPending(ctx().get(), pb::FlushPendingRequest(), &r));
    }
    {
      pb::IngestBatchResponse r;
      st.push_back(stub->IngestBatch(ctx().get(), pb::IngestBatchRequest(), &r));
    }
    {
      pb::IngestSummary r;
      auto c = ctx();
      auto w = stub->Ingest(c.get(), &r);
      w->WritesDone();
      st.push_back(w->Finish());
    }
    {
      pb::ForecastResponse r;
      st.push_back(stub->Forecast(ctx().get(), pb::ForecastRequest(), &r));
    }
    {
      pb::GetStateResponse r;
      st.push_back(stub->GetState(ctx().get(), pb::GetStateRequest(), &r));
    }
    {
      pb::GetHealthResponse r;
      st.push_back(stub->GetHealth(ctx().get(), pb::GetHealthRequest(), &r));
    }
    {
      pb::RecommendPlacementResponse r;
      st.push_back(stub->RecommendPlacement(ctx().get(), pb::RecommendPlacementRequest(), &r));
    }
    {
      auto c = ctx();
      auto reader = stub->Watch(c.get(), pb::WatchRequest());
      pb::Event e;
      EXPECT_FALSE(reader->Read(&e));
      st.push_back(reader->Finish());
    }
    ASSERT_EQ(st.size(), 12u);
    for (size_t i = 0; i < st.size(); ++i) {
      EXPECT_EQ(st[i].error_code(), grpc::StatusCode::UNAUTHENTICATED) << "rpc " << i;
    }
    EXPECT_THAT(st[0].error_message(),
                HasSubstr(header.empty() ? "missing" : "does not match"));
  }
  EXPECT_TRUE(server.engine().ListJobs().empty());

  // With the token: works.
  grpc::ClientContext ok_ctx;
  ok_ctx.AddMetadata("authorization", "Bearer tok-123");
  pb::RegisterJobResponse r;
  EXPECT_TRUE(stub->RegisterJob(&ok_ctx, RegisterRequest("a"), &r).ok());
  EXPECT_EQ(server.engine().ListJobs().size(), 1u);

  // The standard health service stays open (load balancers probe it).
  grpc::ClientContext hctx;
  grpc::Slice empty("");
  grpc::ByteBuffer empty_req(&empty, 1), resp;
  auto channel = grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  // grpc.health.v1.HealthCheckRequest{} serialises to zero bytes.
  std::promise<grpc::Status> done;
  generic.UnaryCall(&hctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                    &empty_req, &resp,
                    [&](grpc::Status s) { done.set_value(std::move(s)); });
  EXPECT_TRUE(done.get_future().get().ok());
}

TEST(LimitsTest, JobsAndLayerExpertsAreResourceExhausted) {
  EngineOptions engine_options;
  engine_options.max_jobs = 2;
  engine_options.max_layer_experts = 64;
  ServerFixture server(ServerOptions(), engine_options);
  auto stub = server.Stub();
  auto reg = [&](const pb::RegisterJobRequest& req) {
    grpc::ClientContext ctx;
    pb::RegisterJobResponse r;
    return stub->RegisterJob(&ctx, req, &r);
  };
  grpc::Status big = reg(RegisterRequest("big", 4, 32));  // 128 > 64
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(big.error_message(), HasSubstr("max_layer_experts"));
  EXPECT_TRUE(reg(RegisterRequest("a")).ok());
  EXPECT_TRUE(reg(RegisterRequest("b")).ok());
  grpc::Status third = reg(RegisterRequest("c"));
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(third.error_message(), HasSubstr("max_jobs"));
  EXPECT_EQ(server.engine().ListJobs().size(), 2u);
}

TEST(LimitsTest, ConcurrentStreamsAreCapped) {
  ServerOptions options;
  options.service.max_concurrent_streams = 1;
  ServerFixture server(options);
  auto stub = server.Stub();
  {
    grpc::ClientContext ctx;
    pb::RegisterJobResponse r;
    ASSERT_TRUE(stub->RegisterJob(&ctx, RegisterRequest("w"), &r).ok());
  }
  // One Watch holds the only slot...
  auto first_ctx = std::make_unique<grpc::ClientContext>();
  pb::WatchRequest wreq;
  wreq.set_job_id("w");
  auto first = stub->Watch(first_ctx.get(), wreq);
  // ...wait until the server has it open (an event would arrive; instead
  // poll: a second stream is refused once the first is in).
  grpc::Status second_status;
  for (int attempt = 0; attempt < 100; ++attempt) {
    pb::IngestSummary summary;
    grpc::ClientContext ctx;
    auto writer = stub->Ingest(&ctx, &summary);
    writer->WritesDone();
    second_status = writer->Finish();
    if (!second_status.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(second_status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(second_status.error_message(), HasSubstr("max_concurrent_streams = 1"));
  // Unary calls are not streams.
  EXPECT_TRUE(Ping(*stub).ok());
  first_ctx->TryCancel();
  pb::Event e;
  while (first->Read(&e)) {
  }
  first->Finish();
  // The slot is free again.
  grpc::Status again;
  for (int attempt = 0; attempt < 100; ++attempt) {
    pb::IngestSummary summary;
    grpc::ClientContext ctx;
    auto writer = stub->Ingest(&ctx, &summary);
    writer->WritesDone();
    again = writer->Finish();
    if (again.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(again.ok()) << again.error_message();
}

// Clients in parallel: four on four jobs of their own, and four sources of
// one multi-source job; every step lands exactly once.
TEST(ConcurrencyTest, ManyClientsOnManyJobsAndOnOneJob) {
  // Ingest does no analysis, so the four sources of "shared" run freely:
  // room for the fastest to be all 200 steps ahead of the slowest.
  EngineOptions engine_options;
  engine_options.max_pending_steps = 256;
  ServerFixture server{ServerOptions(), engine_options};
  constexpr int kClients = 4, kSteps = 200;
  {
    auto stub = server.Stub();
    for (int c = 0; c < kClients; ++c) {
      grpc::ClientContext ctx;
      pb::RegisterJobResponse r;
      ASSERT_TRUE(stub->RegisterJob(&ctx, RegisterRequest("own" + std::to_string(c)), &r).ok());
    }
    grpc::ClientContext ctx;
    pb::RegisterJobResponse r;
    ASSERT_TRUE(stub->RegisterJob(&ctx, RegisterRequest("shared", kLayers, kExperts, kClients), &r)
                    .ok());
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto stub = server.Stub();  // a channel per client
      for (int t = 0; t < kSteps; t += 10) {
        for (const std::string job : {"own" + std::to_string(c), std::string("shared")}) {
          pb::IngestBatchRequest req;
          req.set_job_id(job);
          for (int s = t; s < t + 10; ++s) {
            pb::Step* step = req.add_steps();
            step->set_step(s);
            step->set_source(job == "shared" ? c : 0);
            for (int i = 0; i < kLayers * kExperts; ++i) step->add_counts(1 + c + i);
          }
          grpc::ClientContext ctx;
          pb::IngestBatchResponse resp;
          if (!stub->IngestBatch(&ctx, req, &resp).ok() || resp.rejected() != 0) ++failures;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  for (int c = 0; c < kClients; ++c) {
    EXPECT_EQ(server.engine().GetJobInfo("own" + std::to_string(c)).value().committed_steps,
              kSteps);
  }
  JobInfo shared = server.engine().GetJobInfo("shared").value();
  EXPECT_EQ(shared.committed_steps, kSteps);
  EXPECT_EQ(shared.incomplete_steps, 0);
  // Layer 0, expert e got sum over clients of (1 + c + e) per step.
  ASSERT_OK(server.engine().VisitHistory("shared", 0, [&](const LayerHistory& h) {
    for (int e = 0; e < kExperts; ++e) {
      EXPECT_DOUBLE_EQ(h.totals().counts[e], kSteps * (kClients * (1 + e) + 6));
    }
  }));
}

TEST(DaemonFlagsTest, ParsesLimitsSecurityAndExpiry) {
  const std::string token = moecast::testing::WriteFile("token", "  abc-def \n");
  const std::string cert = moecast::testing::WriteFile(
      "cert.pem", "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
  const std::string key = moecast::testing::WriteFile(
      "key.pem", "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n");
  ASSERT_OK_AND_ASSIGN(
      DaemonConfig c,
      ParseDaemonFlags({"--listen=0.0.0.0:7000", "--max_jobs", "3", "--max_layer_experts=99",
                        "--max_concurrent_streams=5", "--idle_job_expiry_s=1.5",
                        "--auth_token_file", token, "--tls_cert", cert, "--tls_key", key,
                        "--tls_client_ca", cert, "--max_message_bytes=2048",
                        "--analysis_threads=3", "--analysis_niceness=0"}));
  EXPECT_EQ(c.server.listen, "0.0.0.0:7000");
  EXPECT_EQ(c.engine.max_jobs, 3);
  EXPECT_EQ(c.engine.max_layer_experts, 99);
  EXPECT_EQ(c.server.service.max_concurrent_streams, 5);
  EXPECT_EQ(c.engine.idle_job_expiry, absl::Milliseconds(1500));
  EXPECT_EQ(c.server.auth_token, "abc-def");
  EXPECT_TRUE(c.server.tls.enabled());
  EXPECT_FALSE(c.server.tls.client_ca_pem.empty());
  EXPECT_EQ(c.server.max_message_bytes, 2048);
  EXPECT_EQ(c.engine.analysis.step_threads, 3);
  EXPECT_EQ(c.engine.analysis.thread_niceness, 0);
  ASSERT_OK_AND_ASSIGN(DaemonConfig defaults, ParseDaemonFlags({}));
  EXPECT_EQ(defaults.engine.analysis.step_threads, 0);
  EXPECT_EQ(defaults.engine.analysis.thread_niceness, 10);
  EXPECT_EQ(defaults.server.listen, "127.0.0.1:50051");
  EXPECT_EQ(defaults.engine.idle_job_expiry, absl::InfiniteDuration());
  EXPECT_FALSE(defaults.server.tls.enabled());
}

TEST(DaemonFlagsTest, RejectsBadFlagsWithTheirNames) {
  const std::string empty = moecast::testing::WriteFile("empty", " \n");
  const std::string spaced = moecast::testing::WriteFile("spaced", "two words\n");
  const std::string not_pem = moecast::testing::WriteFile("not.pem", "hello\n");
  const std::string key = moecast::testing::WriteFile(
      "k.pem", "-----BEGIN EC PRIVATE KEY-----\nx\n");
  struct Case {
    std::vector<std::string> args;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--bogus"}, absl::StatusCode::kInvalidArgument, "bogus"},
      {{"--max_jobs=0"}, absl::StatusCode::kInvalidArgument, "max_jobs"},
      {{"--max_jobs=x"}, absl::StatusCode::kInvalidArgument, "max_jobs"},
      {{"--max_concurrent_streams=0"}, absl::StatusCode::kInvalidArgument,
       "max_concurrent_streams"},
      {{"--max_message_bytes=10"}, absl::StatusCode::kInvalidArgument, "max_message_bytes"},
      {{"--history_steps=1"}, absl::StatusCode::kInvalidArgument, "history_steps"},
      {{"--analysis_threads=-1"}, absl::StatusCode::kInvalidArgument, "analysis_threads"},
      {{"--analysis_threads=257"}, absl::StatusCode::kInvalidArgument, "analysis_threads"},
      {{"--analysis_niceness=20"}, absl::StatusCode::kInvalidArgument, "analysis_niceness"},
      {{"--idle_job_expiry_s=-1"}, absl::StatusCode::kInvalidArgument, "idle_job_expiry_s"},
      {{"--idle_job_expiry_s=nan"}, absl::StatusCode::kInvalidArgument, "idle_job_expiry_s"},
      {{"--listen="}, absl::StatusCode::kInvalidArgument, "--listen"},
      {{"--auth_token_file=/nonexistent/t"}, absl::StatusCode::kNotFound, "/nonexistent/t"},
      {{"--auth_token_file", empty}, absl::StatusCode::kInvalidArgument, "empty"},
      {{"--auth_token_file", spaced}, absl::StatusCode::kInvalidArgument, "one word"},
      {{"--tls_key", key}, absl::StatusCode::kInvalidArgument, "--tls_key needs --tls_cert"},
      {{"--tls_cert", not_pem}, absl::StatusCode::kInvalidArgument, "--tls_cert needs --tls_key"},
      {{"--tls_client_ca", not_pem}, absl::StatusCode::kInvalidArgument, "--tls_client_ca needs"},
      {{"--tls_cert", not_pem, "--tls_key", key}, absl::StatusCode::kInvalidArgument,
       "no PEM certificate"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(ParseDaemonFlags(c.args), StatusIs(c.code, HasSubstr(c.message)))
        << c.args[0];
  }
}

}  // namespace
}  // namespace moecast::grpc_api
