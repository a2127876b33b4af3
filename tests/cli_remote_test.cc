// End-to-end tests of `moecast client <verb>`: each verb runs in-process, as a
// user would run it, against a MoecastServer on 127.0.0.1:0 in the same
// process, with trace and certificate files in a temporary directory.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/trace/trace_writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "engine/testing/temp_files.h"
#include "integrations/cli/commands.h"
#include "tests/cli_runner.h"
#include "integrations/grpc/server.h"
#include "integrations/grpc/testing/certs.h"
#include "nlohmann/json.hpp"

namespace moecast {
namespace {

using ::nlohmann::json;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

using ::moecast::testing::CommandRun;
using ::moecast::testing::Moecast;
using ::moecast::testing::TempPath;
using ::moecast::testing::WriteFile;

// A 2-layer, 4-expert, top-2 trace of `steps` steps with tokens and
// (optionally) router logits.
void WriteTrace(const std::string& counts, const std::string& router, int steps) {
  TraceLayout layout;
  layout.num_experts = 4;
  layout.layer_ids = {1, 3};
  layout.has_tokens = true;
  layout.has_router = !router.empty();
  auto writer = TraceWriter::Open(counts, router, layout);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (int t = 0; t < steps; ++t) {
    TraceStep s;
    s.step = t;
    s.tokens = 8;
    s.counts = {4, 4, 4, 4, double(t % 5), 6, 5, double(5 - t % 5)};
    if (layout.has_router) s.router_z.assign(8, 0.1 * (t % 7));
    ASSERT_TRUE((*writer)->Write(s).ok());
  }
  ASSERT_TRUE((*writer)->Close().ok());
}

// Parses `text` as JSON, failing the test (and returning null) if it is not.
json ParseJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON:\n" << text;
  return j;
}

// A port on 127.0.0.1 that is bound but not listening: connections to it are
// refused for as long as the object lives.
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
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

class CliRemoteTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(grpc_api::ServerOptions()); }

  void Start(grpc_api::ServerOptions options) {
    server_.reset();
    engine_ = Engine::Create(EngineOptions()).value();
    options.listen = "127.0.0.1:0";
    options.service.watch_poll_interval = absl::Milliseconds(5);
    options.shutdown_grace = absl::Milliseconds(200);
    server_ = grpc_api::MoecastServer::Start(engine_.get(), options).value();
    addr_ = absl::StrCat("127.0.0.1:", server_->port());
  }

  // `moecast client VERB --server ADDR ARGS...`
  CommandRun Client(const std::string& verb, std::vector<std::string> args) {
    std::vector<std::string> all = {"client", verb, "--server", addr_};
    all.insert(all.end(), args.begin(), args.end());
    return Moecast(all);
  }

  std::unique_ptr<Engine> engine_;
  std::unique_ptr<grpc_api::MoecastServer> server_;
  std::string addr_;
};

TEST_F(CliRemoteTest, RegisterIngestAndQueryAJob) {
  const std::string counts = TempPath("run.counts.csv.gz");
  const std::string router = TempPath("run.router.csv.gz");
  WriteTrace(counts, router, 120);

  // L and M from the trace's header.
  CommandRun r = Client("register", {"--job", "run", "--counts", counts, "--top_k=2",
                                     "--router_temperature=1", "--entropy_weight=0.1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "registered job 'run' on " + addr_ + ": 2 layers x 4 experts, top_k 2\n");
  EXPECT_THAT(r.err, IsEmpty());

  r = Client("ingest", {"--job=run", "--counts", counts, "--router", router,
                        "--batch_size=50", "--progress=off"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("-> job 'run' on " + addr_));
  EXPECT_THAT(r.out, HasSubstr("steps       120 sent in 3 batch(es)\n"));
  EXPECT_THAT(r.out, HasSubstr("committed   120\n"));
  EXPECT_THAT(r.out, HasSubstr("rejected    0\n"));
  EXPECT_EQ(engine_->GetJobInfo("run").value().committed_steps, 120);

  // Explicit L, M, K; and the job list.
  r = Client("register", {"--job", "other", "--layers=3", "--experts=8", "--top_k=2",
                          "--sources=2", "--step_unit=forward_pass", "--horizons=1,5"});
  ASSERT_EQ(r.code, 0) << r.err;
  const JobSpec other = engine_->GetJobInfo("other").value().spec;
  EXPECT_EQ(other.num_layers, 3);
  EXPECT_EQ(other.num_sources, 2);
  EXPECT_EQ(other.step_unit, StepUnit::kForwardPass);
  EXPECT_EQ(other.horizons, (std::vector<int>{1, 5}));
  r = Client("jobs", {});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "other\nrun\n");

  r = Client("info", {"--job=run"});
  ASSERT_EQ(r.code, 0) << r.err;
  json info = ParseJson(r.out);
  EXPECT_EQ(info["committed_steps"], 120);
  EXPECT_EQ(info["last_step"], 119);
  EXPECT_EQ(info["spec"]["num_experts"], 4);
  EXPECT_EQ(info["spec"]["hyperparameters"]["router_temperature"], 1.0);
  EXPECT_FALSE(info["spec"]["hyperparameters"].contains("aux_loss_coef"));  // not declared

  r = Client("forecast", {"--job=run", "--horizons=1,10", "--path_steps=2", "--layers=1"});
  ASSERT_EQ(r.code, 0) << r.err;
  json f = ParseJson(r.out);
  EXPECT_EQ(f["as_of_step"], 119);
  ASSERT_EQ(f["layers"].size(), 1u);
  EXPECT_EQ(f["layers"][0]["layer"], 1);
  ASSERT_EQ(f["layers"][0]["horizons"].size(), 2u);
  EXPECT_EQ(f["layers"][0]["horizons"][1]["horizon"], 10);
  EXPECT_EQ(f["layers"][0]["horizons"][0]["means"].size(), 4u);
  EXPECT_EQ(f["layers"][0]["path"].size(), 8u);
  EXPECT_THAT(f["job_state"].get<std::string>(), StartsWith("LOAD_STATE_"));

  r = Client("state", {"--job=run", "--per_expert"});
  ASSERT_EQ(r.code, 0) << r.err;
  json st = ParseJson(r.out);
  EXPECT_EQ(st["as_of_step"], 119);
  ASSERT_EQ(st["layers"].size(), 2u);
  EXPECT_EQ(st["layers"][0]["variance_10"].size(), 4u);

  r = Client("health", {"--job=run"});
  ASSERT_EQ(r.code, 0) << r.err;
  json h = ParseJson(r.out);
  EXPECT_EQ(h["as_of_step"], 119);
  ASSERT_EQ(h["layers"].size(), 2u);
  EXPECT_EQ(h["layers"][0]["window_end_step"], 99);
  EXPECT_EQ(h["e"]["kind"], "KIND_MISSING");  // O and B not declared
  EXPECT_EQ(h["e"]["missing"], json({"O", "B"}));

  r = Client("placement", {"--job=run", "--slots=6", "--gpus=2", "--horizon=10"});
  ASSERT_EQ(r.code, 0) << r.err;
  json p = ParseJson(r.out);
  EXPECT_EQ(p["horizon"], 10);
  EXPECT_EQ(p["plan"]["phy2log"].size(), 12u);
  EXPECT_EQ(p["plan"]["mode"], "default");
  EXPECT_FALSE(p.contains("decision"));

  // With the placement in service and a migration model: a decision.
  const std::string current =
      WriteFile("current.json", R"({"phy2log": [[0,1,2,3,0,1],[0,1,2,3,0,1]]})");
  r = Client("placement", {"--job=run", "--slots=6", "--gpus=2", "--current", current,
                           "--intra_bw=1e9", "--inter_bw=1e8", "--tokens_per_step=1e6",
                           "--time_per_token=1e-9", "--horizon_steps=1000",
                           "--bytes_per_expert=1000"});
  ASSERT_EQ(r.code, 0) << r.err;
  p = ParseJson(r.out);
  ASSERT_TRUE(p.contains("decision"));
  EXPECT_FALSE(p["decision"]["reason"].get<std::string>().empty());
  EXPECT_EQ(p["current"]["phy2log"], json({0, 1, 2, 3, 0, 1, 0, 1, 2, 3, 0, 1}));

  r = Client("flush", {"--job=run"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(ParseJson(r.out)["committed"], json::array());

  r = Client("delete", {"--job=other"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "deleted job 'other' on " + addr_ + "\n");
  EXPECT_EQ(engine_->ListJobs(), std::vector<std::string>{"run"});
}

TEST_F(CliRemoteTest, ServerErrorsPrintTheirCodeAndMessage) {
  ASSERT_EQ(Client("register", {"--job=a", "--layers=2", "--experts=4", "--top_k=2"}).code, 0);
  struct Case {
    std::string verb;
    std::vector<std::string> args;
    const char* phrase;
  };
  const Case cases[] = {
      {"register", {"--job=a", "--layers=2", "--experts=4", "--top_k=2"},
       "moecast client register: ALREADY_EXISTS: job 'a' is already registered"},
      {"register", {"--job=b", "--layers=2", "--experts=4", "--top_k=9"},
       "moecast client register: INVALID_ARGUMENT: "},
      {"forecast", {"--job=nope"}, "moecast client forecast: NOT_FOUND: "},
      {"forecast", {"--job=a"}, "moecast client forecast: FAILED_PRECONDITION: "},
      {"health", {"--job=a"}, "moecast client health: FAILED_PRECONDITION: "},
      {"state", {"--job=nope"}, "moecast client state: NOT_FOUND: "},
      {"info", {"--job=nope"}, "moecast client info: NOT_FOUND: "},
      {"flush", {"--job=nope"}, "moecast client flush: NOT_FOUND: "},
      {"delete", {"--job=nope"}, "moecast client delete: NOT_FOUND: "},
      {"placement", {"--job=nope", "--slots=6", "--gpus=2"},
       "moecast client placement: NOT_FOUND: "},
      {"watch", {"--job=nope"}, "moecast client watch: NOT_FOUND: "},
  };
  for (const Case& c : cases) {
    CommandRun r = Client(c.verb, c.args);
    EXPECT_EQ(r.code, 1) << c.verb << " " << c.phrase;
    EXPECT_THAT(r.err, HasSubstr(c.phrase)) << c.verb;
    EXPECT_THAT(r.out, IsEmpty()) << c.verb;
  }
  EXPECT_THAT(Client("forecast", {"--job=nope"}).err, HasSubstr("nope"));
}

TEST_F(CliRemoteTest, IngestChecksTheJobAndReportsRejectedLines) {
  const std::string counts = TempPath("ing.counts.csv");
  WriteTrace(counts, "", 10);
  CommandRun r = Client("ingest", {"--job=ghost", "--counts", counts, "--progress=off"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("moecast client ingest: NOT_FOUND: "));
  EXPECT_THAT(r.err, HasSubstr("ghost"));
  EXPECT_THAT(r.err, HasSubstr("register it first"));

  ASSERT_EQ(Client("register", {"--job=wide", "--layers=3", "--experts=4", "--top_k=2"}).code,
            0);
  r = Client("ingest", {"--job=wide", "--counts", counts, "--progress=off"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr(counts + ": the trace has 2 layers x 4 experts but job 'wide' "
                                        "was registered with 3 x 4"));
  EXPECT_EQ(engine_->GetJobInfo("wide").value().committed_steps, 0);

  // Step 1 has 3 assignments for 1 token x top_k 2: rejected, the rest go in.
  const std::string tok = WriteFile(
      "tok.counts.csv", "step,layer,tokens,c0,c1\n0,0,1,1,1\n1,0,1,2,1\n2,0,1,1,0\n");
  ASSERT_EQ(Client("register", {"--job=tok", "--layers=1", "--experts=2", "--top_k=2"}).code,
            0);
  r = Client("ingest", {"--job=tok", "--counts", tok, "--progress=off", "--batch_size=1"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr("committed   2\n"));
  EXPECT_THAT(r.out, HasSubstr("rejected    1\n"));
  EXPECT_THAT(r.err, HasSubstr(tok + ":3:1: step 1 rejected: INVALID_ARGUMENT: "));
  EXPECT_THAT(r.err, HasSubstr("more than tokens x top_k = 1 x 2"));
  EXPECT_EQ(engine_->GetJobInfo("tok").value().committed_steps, 2);

  // --max_steps, and a malformed trace (file:line:column from the reader).
  ASSERT_EQ(Client("register", {"--job=ms", "--counts", counts, "--top_k=2"}).code, 0);
  r = Client("ingest", {"--job=ms", "--counts", counts, "--progress=off", "--max_steps=4"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(engine_->GetJobInfo("ms").value().committed_steps, 4);
  const std::string bad = WriteFile(
      "bad.counts.csv", "step,layer,c0,c1,c2,c3\n0,0,1,2,3,4\n0,1,3,4,1,1\n1,0,5,x,1,1\n");
  r = Client("ingest", {"--job=ms", "--counts", bad, "--progress=off"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr(bad + ":4:"));
}

TEST_F(CliRemoteTest, WatchPrintsEventsAsJsonLines) {
  ASSERT_EQ(Client("register", {"--job=w", "--layers=2", "--experts=4", "--top_k=2"}).code, 0);
  // Steady loads: both layers and the job turn stable (events 1..3).
  std::mt19937 rng(9);
  std::poisson_distribution<int> noise(200);
  std::vector<double> c(8);
  for (int t = 0; t < 300; ++t) {
    for (double& x : c) x = noise(rng);
    StepInput in;
    in.step = t;
    in.counts = c;
    ASSERT_TRUE(engine_->Ingest("w", in).ok());
  }
  CommandRun r = Client("watch", {"--job=w", "--max_events=3"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << r.out;
  for (int i = 0; i < 3; ++i) {
    json e = ParseJson(lines[i]);
    EXPECT_EQ(e["seq"], i + 1);
    EXPECT_EQ(e["kind"], "KIND_STATE_CHANGE");
    EXPECT_EQ(e["to"], "stable");
  }
  EXPECT_EQ(ParseJson(lines[2])["layer"], -1);  // the job

  // After the last event, --duration ends the wait.
  const absl::Time start = absl::Now();
  r = Client("watch", {"--job=w", "--after_seq=3", "--duration=0.3"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, IsEmpty());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(250));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST_F(CliRemoteTest, UsageErrorsNameTheFlag) {
  const std::string counts = TempPath("usage.counts.csv");
  WriteTrace(counts, "", 3);
  struct Case {
    std::vector<std::string> args;
    const char* phrase;
  };
  const std::string s = addr_;
  const Case cases[] = {
      {{"client", "jobs"}, "--server is required"},
      {{"client", "forecast", "--server", s}, "--job is required"},
      {{"client", "jobs", "--server", "localhost"}, "--server='localhost' must be HOST:PORT"},
      {{"client", "jobs", "--server", s, "--timeout=0"}, "--timeout=0 must be > 0 seconds"},
      {{"client", "jobs", "--server", s, "--tls_cert", counts},
       "--tls_cert needs --tls_key"},
      {{"client", "jobs", "--server", s, "--tls_key", counts}, "--tls_key needs --tls_cert"},
      {{"client", "jobs", "--server", s, "--bogus"}, "--bogus is not a flag of this command"},
      {{"client", "jobs", "--server", s, "--job=a"}, "--job is not a flag of this command"},
      {{"client", "register", "--server", s, "--job=a", "--top_k=2"},
       "give --layers and --experts, or --counts"},
      {{"client", "register", "--server", s, "--job=a", "--top_k=2", "--layers=2"},
       "--layers needs --experts"},
      {{"client", "register", "--server", s, "--job=a", "--top_k=2", "--layers=2",
        "--experts=4", "--counts", counts},
       "--counts and --layers/--experts exclude each other"},
      {{"client", "register", "--server", s, "--job=a", "--layers=2", "--experts=4"},
       "--top_k is required"},
      {{"client", "register", "--server", s, "--job=a", "--top_k=2", "--layers=0",
        "--experts=4"},
       "--layers"},
      {{"client", "register", "--server", s, "--job=a", "--top_k=2", "--layers=2",
        "--experts=4", "--step_unit=epoch"},
       "--step_unit='epoch' must be optimizer_step, forward_pass or interval"},
      {{"client", "register", "--server", s, "--job=a", "--top_k=2", "--layers=2",
        "--experts=4", "--router_kind=relu"},
       "--router_kind='relu' must be softmax or sigmoid_with_bias"},
      {{"client", "register", "--server", s, "--job=a", "--top_k=2", "--layers=2",
        "--experts=4", "--predictors=ema,,last"},
       "--predictors='ema,,last' has an empty name"},
      {{"client", "forecast", "--server", s, "--job=a", "--horizons=1,x"},
       "--horizons: 'x' is not an integer"},
      {{"client", "forecast", "--server", s, "--job=a", "--horizons=0"},
       "--horizons: 0 must be >= 1"},
      {{"client", "forecast", "--server", s, "--job=a", "--interval_level=1.5"},
       "--interval_level=1.5 must be in (0, 1)"},
      {{"client", "forecast", "--server", s, "--job=a", "--path_steps=-1"}, "--path_steps"},
      {{"client", "placement", "--server", s, "--job=a", "--gpus=2"}, "--slots is required"},
      {{"client", "placement", "--server", s, "--job=a", "--slots=6", "--gpus=2",
        "--mode=greedy"},
       "--mode='greedy' must be default or eplb"},
      {{"client", "placement", "--server", s, "--job=a", "--slots=6", "--gpus=2",
        "--intra_bw=1e9"},
       "need --current"},
      {{"client", "placement", "--server", s, "--job=a", "--slots=6", "--gpus=2",
        "--exclude=1,a"},
       "--exclude: 'a' is not an integer"},
      {{"client", "ingest", "--server", s, "--job=a"}, "--counts is required"},
      {{"client", "ingest", "--server", s, "--job=a", "--counts", counts, "--batch_size=0"},
       "--batch_size"},
      {{"client", "ingest", "--server", s, "--job=a", "--counts", counts,
        "--progress=sometimes"},
       "--progress='sometimes' must be auto, on or off"},
      {{"client", "watch", "--server", s, "--job=a", "--duration=-1"},
       "--duration=-1 must be >= 0 seconds"},
      {{"client", "frobnicate"}, "moecast client: unknown verb 'frobnicate'"},
      {{"client"}, "usage: moecast client <verb>"},
  };
  for (const Case& c : cases) {
    CommandRun r = Moecast(c.args);
    EXPECT_EQ(r.code, 2) << c.phrase << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.phrase));
    EXPECT_THAT(r.out, IsEmpty()) << c.phrase;
  }
  EXPECT_THAT(engine_->ListJobs(), IsEmpty());  // nothing reached the server
}

TEST_F(CliRemoteTest, UnreadableInputFilesFailWithTheFileName) {
  const std::string missing = TempPath("missing.pem");
  const std::string not_pem = WriteFile("not.pem", "hello\n");
  const std::string empty_token = WriteFile("empty.token", " \n");
  const std::string spaced_token = WriteFile("spaced.token", "ab cd\n");
  struct Case {
    std::vector<std::string> args;
    std::string phrase;
  };
  const Case cases[] = {
      {{"--tls_ca", missing}, "--tls_ca: cannot read '" + missing + "'"},
      {{"--tls_ca", not_pem}, "--tls_ca: '" + not_pem + "' is not a PEM file"},
      {{"--token_file", missing}, "--token_file: cannot read '" + missing + "'"},
      {{"--token_file", empty_token}, "--token_file: '" + empty_token + "' is empty"},
      {{"--token_file", spaced_token}, "holds spaces or non-printable characters"},
  };
  for (const Case& c : cases) {
    CommandRun r = Client("jobs", c.args);
    EXPECT_EQ(r.code, 1) << c.phrase;
    EXPECT_THAT(r.err, HasSubstr(c.phrase));
  }
  CommandRun r = Client("ingest", {"--job=a", "--counts", TempPath("none.counts.csv"),
                                   "--progress=off"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("none.counts.csv"));
  r = Client("register",
             {"--job=a", "--counts", TempPath("none.counts.csv"), "--top_k=2"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("none.counts.csv"));
  EXPECT_THAT(engine_->ListJobs(), IsEmpty());
}

TEST_F(CliRemoteTest, UnreachableServer) {
  RefusingPort refusing;
  ASSERT_GT(refusing.port(), 0);
  const std::string target = absl::StrCat("127.0.0.1:", refusing.port());
  CommandRun r = Moecast({"client", "jobs", "--server", target, "--timeout=2"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("moecast client jobs: UNAVAILABLE: "));
  EXPECT_THAT(r.err, HasSubstr(target));

  const absl::Time start = absl::Now();
  r = Moecast({"client", "forecast", "--server", target, "--job=a", "--timeout=0.3",
               "--wait_for_ready"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("moecast client forecast: DEADLINE_EXCEEDED: "));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));

  const std::string counts = TempPath("unreach.counts.csv");
  WriteTrace(counts, "", 3);
  r = Moecast({"client", "ingest", "--server", target, "--job=a", "--counts", counts,
               "--progress=off"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
}

TEST_F(CliRemoteTest, TokenFile) {
  grpc_api::ServerOptions options;
  options.auth_token = "t0ken";
  Start(options);
  CommandRun r = Client("jobs", {});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("moecast client jobs: UNAUTHENTICATED"));
  const std::string wrong = WriteFile("wrong.token", "t0kem\n");
  r = Client("jobs", {"--token_file", wrong});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
  const std::string right = WriteFile("right.token", "t0ken\n");  // newline stripped
  r = Client("register",
             {"--token_file", right, "--job=a", "--layers=1", "--experts=2", "--top_k=1"});
  EXPECT_EQ(r.code, 0) << r.err;
  r = Client("jobs", {"--token_file", right});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "a\n");
}

TEST_F(CliRemoteTest, TlsAndMutualTls) {
  const std::string dir = TempPath("cli_certs");
  ASSERT_TRUE(mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) << dir;
  absl::StatusOr<grpc_api::testing::TestCerts> certs = grpc_api::testing::MakeTestCerts(dir);
  ASSERT_TRUE(certs.ok()) << certs.status();
  const std::string ca = dir + "/ca.pem";
  grpc_api::ServerOptions options;
  options.tls.cert_chain_pem = certs->server_cert;
  options.tls.private_key_pem = certs->server_key;
  options.tls.client_ca_pem = certs->ca_cert;
  Start(options);

  CommandRun r = Client("jobs", {"--tls_ca", ca, "--tls_cert", dir + "/client.pem",
                                 "--tls_key", dir + "/client.key"});
  EXPECT_EQ(r.code, 0) << r.err;
  // No client certificate, or plaintext: refused.
  r = Client("jobs", {"--tls_ca", ca});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
  r = Client("jobs", {});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
}

TEST(CliRemoteHelpTest, HelpListsTheVerbsAndFlags) {
  CommandRun r = Moecast({"help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("  client    talk to a moecastd server"));
  r = Moecast({"help", "client"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("usage: moecast client <verb> --server HOST:PORT"));
  EXPECT_THAT(r.out, HasSubstr("  placement  "));
  r = Moecast({"client", "ingest", "--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, StartsWith("usage: moecast client ingest [flags]\n"));
  EXPECT_THAT(r.out, HasSubstr("--batch_size"));
  EXPECT_THAT(r.out, HasSubstr("--server"));
  EXPECT_THAT(r.out, HasSubstr("--token_file"));
}

}  // namespace
}  // namespace moecast
