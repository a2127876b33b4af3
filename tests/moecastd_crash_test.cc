// moecastd --data_dir under SIGKILL: a client streams the bundled trace with
// IngestBatch while the server is killed at random points, five times; after
// each restart on the same data directory every step the server had
// acknowledged is there (GetJobInfo.last_step >= the last acknowledged step)
// and the client resumes from last_step + 1. At the end the job holds every
// step exactly once (no gap, committed_steps == last_step + 1) and answers
// as a plain engine fed the same steps.
#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/engine.h"
#include "engine/testing/status_matchers.h"
#include "engine/testing/bundled_trace.h"
#include "gtest/gtest.h"
#include "integrations/grpc/client.h"

namespace moecast {
namespace {

namespace pb = ::moecast::v1;

struct Server {
  pid_t pid = -1;
  int port = 0;
};

Server Start(const std::string& dir, const std::string& log, const std::string& sync) {
  Server s;
  // Empty the log first: the child truncates it too, but only once it runs,
  // and until then the previous server's "listening on ... (port N)" line
  // would send the test to a dead port.
  std::ofstream(log, std::ios::trunc).close();
  s.pid = fork();
  if (s.pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    const std::string data = "--data_dir=" + dir;
    const std::string wal = "--wal_sync=" + sync;
    execl("integrations/grpc/moecastd", "moecastd", "--listen=127.0.0.1:0", data.c_str(),
          wal.c_str(), "--snapshot_every_s=1", "--wal_segment_bytes=65536",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 300 && s.port == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(20));
    std::ifstream in(log);
    std::string line;
    while (std::getline(in, line)) {
      const auto at = line.find("(port ");
      if (line.find("listening on") != std::string::npos && at != std::string::npos) {
        s.port = std::atoi(line.c_str() + at + 6);
      }
    }
  }
  return s;
}

std::string ReadLog(const std::string& path) {
  std::ifstream in(path);
  std::stringstream b;
  b << in.rdbuf();
  return b.str();
}

TEST(MoecastdCrash, AcknowledgedStepsSurviveSigkill) {
  ASSERT_OK_AND_ASSIGN(::moecast::testing::BundledTrace trace,
                       ::moecast::testing::ReadBundledTrace("tiny_moe_aux", 6000));
  const std::vector<TraceStep>& steps = trace.steps;
  const int layers = trace.layers, experts = trace.experts;
  std::string dir = ::testing::TempDir();
  if (dir.back() != '/') dir += '/';
  const std::string log = dir + "moecastd.log";
  dir += "crash_data";
  std::mt19937 rng(12345);
  int64_t acked = -1;  // last step acknowledged by the server
  Server server = Start(dir, log, "batch");
  ASSERT_GT(server.port, 0) << ReadLog(log);
  {
    grpc_api::ClientOptions o;
    o.target = absl::StrCat("127.0.0.1:", server.port);
    ASSERT_OK_AND_ASSIGN(auto client, grpc_api::MoecastClient::Connect(o));
    pb::JobSpec spec;
    spec.set_job_id("crash-job");
    spec.set_num_layers(layers);
    spec.set_num_experts(experts);
    spec.set_top_k(2);
    ASSERT_OK(client->RegisterJob(spec).status());
  }
  constexpr int kKills = 5;
  for (int round = 0; round <= kKills; ++round) {
    grpc_api::ClientOptions o;
    o.target = absl::StrCat("127.0.0.1:", server.port);
    o.timeout = absl::Seconds(5);
    ASSERT_OK_AND_ASSIGN(auto client, grpc_api::MoecastClient::Connect(o));
    ASSERT_OK_AND_ASSIGN(pb::JobInfo info, client->GetJobInfo("crash-job"));
    const int64_t last = info.has_last_step() ? info.last_step() : -1;
    EXPECT_GE(last, acked) << "round " << round << ": an acknowledged step was lost\n"
                           << ReadLog(log);
    EXPECT_EQ(info.committed_steps(), last + 1);
    int64_t next = last + 1;  // resume from the server's last committed step
    std::atomic<bool> killed{false};
    std::thread killer;
    if (round < kKills) {
      const int delay_ms = 200 + static_cast<int>(rng() % 1500);
      killer = std::thread([&, delay_ms] {
        absl::SleepFor(absl::Milliseconds(delay_ms));
        killed = true;
        kill(server.pid, SIGKILL);
      });
    }
    const size_t end = round < kKills ? steps.size() : std::min<size_t>(steps.size(), next + 300);
    while (static_cast<size_t>(next) < end) {
      pb::IngestBatchRequest batch;
      batch.set_job_id("crash-job");
      const int n = 1 + static_cast<int>(rng() % 8);
      for (int k = 0; k < n && static_cast<size_t>(next + k) < end; ++k) {
        const TraceStep& s = steps[next + k];
        pb::Step* p = batch.add_steps();
        p->set_step(next + k);
        *p->mutable_counts() = {s.counts.begin(), s.counts.end()};
        *p->mutable_router_logits() = {s.router_z.begin(), s.router_z.end()};
      }
      absl::StatusOr<pb::IngestBatchResponse> r = client->IngestBatch(batch);
      if (!r.ok()) {
        ASSERT_TRUE(killed.load()) << r.status().ToString() << "\n" << ReadLog(log);
        break;
      }
      ASSERT_EQ(r->rejected(), 0);
      next += batch.steps_size();
      acked = next - 1;
    }
    if (killer.joinable()) killer.join();
    int status = 0;
    if (round < kKills) {
      waitpid(server.pid, &status, 0);
      ASSERT_TRUE(WIFSIGNALED(status));
      server = Start(dir, log, "batch");
      ASSERT_GT(server.port, 0) << ReadLog(log);
      EXPECT_NE(ReadLog(log).find("recovered"), std::string::npos);
    }
  }
  // Final check: every step once, and the same answers as a plain engine.
  grpc_api::ClientOptions o;
  o.target = absl::StrCat("127.0.0.1:", server.port);
  ASSERT_OK_AND_ASSIGN(auto client, grpc_api::MoecastClient::Connect(o));
  ASSERT_OK_AND_ASSIGN(pb::JobInfo info, client->GetJobInfo("crash-job"));
  EXPECT_EQ(info.last_step(), acked);
  EXPECT_EQ(info.committed_steps(), acked + 1);
  EXPECT_EQ(info.gaps(), 0);
  ASSERT_OK_AND_ASSIGN(auto plain, Engine::Create(EngineOptions()));
  JobSpec spec;
  spec.job_id = "crash-job";
  spec.num_layers = layers;
  spec.num_experts = experts;
  spec.top_k = 2;
  ASSERT_OK(plain->RegisterJob(spec));
  for (int64_t i = 0; i <= acked; ++i) {
    StepInput in;
    in.step = i;
    in.counts = steps[i].counts;
    in.router_logits = steps[i].router_z;
    ASSERT_OK(plain->Ingest("crash-job", in).status());
  }
  pb::ForecastRequest req;
  req.set_job_id("crash-job");
  req.set_predictor("last_value");
  req.add_horizons(1);
  ASSERT_OK_AND_ASSIGN(pb::ForecastResponse remote, client->Forecast(req));
  ForecastRequest local_req;
  local_req.predictor = "last_value";
  local_req.horizons = {1};
  ASSERT_OK_AND_ASSIGN(ForecastResult local, plain->Forecast("crash-job", local_req));
  ASSERT_EQ(remote.layers_size(), static_cast<int>(local.layers.size()));
  for (int l = 0; l < remote.layers_size(); ++l) {
    const auto& means = remote.layers(l).horizons(0).means();
    ASSERT_EQ(std::vector<double>(means.begin(), means.end()), local.layers[l].horizons[0].mean);
  }
  ASSERT_OK_AND_ASSIGN(JobInfo local_info, plain->GetJobInfo("crash-job"));
  EXPECT_EQ(info.tokens(), local_info.tokens);
  kill(server.pid, SIGTERM);
  int status = 0;
  waitpid(server.pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ReadLog(log);
  std::printf("acknowledged %lld steps across %d SIGKILLs\n", static_cast<long long>(acked + 1),
              kKills);
}

}  // namespace
}  // namespace moecast
