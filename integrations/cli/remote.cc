// moecast client <verb>: the moecast.v1 API of a running server (moecastd)
// from the command line, through MoecastClient.
//
//   moecast client register  --server H:P --job ID (--layers L --experts M | --counts F) --top_k K
//   moecast client ingest    --server H:P --job ID --counts F [--router F] [--batch_size N]
//   moecast client forecast  --server H:P --job ID [--horizons 1,10] ...      (JSON)
//   moecast client placement --server H:P --job ID --slots S --gpus P ...     (JSON)
//   moecast client health|state|info|flush --server H:P --job ID              (JSON)
//   moecast client jobs      --server H:P                                     (one id per line)
//   moecast client delete    --server H:P --job ID
//   moecast client watch     --server H:P --job ID [--max_events N] [--duration S]  (JSON lines)
//
// Every verb takes the connection flags --server, --token_file, --tls,
// --tls_ca, --tls_cert, --tls_key, --tls_server_name, --timeout and
// --wait_for_ready. Exit status: 0 success, 1 a failed call or unreadable
// input, 2 a usage error. Errors from the server print as
// "moecast client VERB: CODE: message".
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "engine/trace/trace_reader.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/reflection.h"
#include "integrations/cli/commands.h"
#include "integrations/cli/flags.h"
#include "integrations/cli/json_io.h"
#include "integrations/cli/progress.h"
#include "integrations/grpc/client.h"
#include "moecast/v1/moecast.pb.h"
#include "nlohmann/json.hpp"

namespace moecast::cli {
namespace {

namespace pb = ::moecast::v1;
namespace gpb = ::google::protobuf;
using grpc_api::ClientOptions;
using grpc_api::MoecastClient;
// ordered_json: fields print in the proto's order (as_of_step first), not sorted.
using json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------
// JSON output

json FieldValue(const gpb::Message& m, const gpb::Reflection& r,
                const gpb::FieldDescriptor& f, int index);

// A message as JSON: field names as in the proto, every field without
// presence (defaults included, so consumers need not know proto3 defaults),
// fields with presence (optional scalars, sub-messages) only when set, enums
// by name, 64-bit integers as numbers.
json MessageToJson(const gpb::Message& m) {
  const gpb::Descriptor& d = *m.GetDescriptor();
  const gpb::Reflection& r = *m.GetReflection();
  json out = json::object();
  for (int i = 0; i < d.field_count(); ++i) {
    const gpb::FieldDescriptor& f = *d.field(i);
    if (f.is_repeated()) {
      json values = json::array();
      for (int j = 0; j < r.FieldSize(m, &f); ++j) values.push_back(FieldValue(m, r, f, j));
      out[f.name()] = std::move(values);
    } else if (!f.has_presence() || r.HasField(m, &f)) {
      out[f.name()] = FieldValue(m, r, f, -1);
    }
  }
  return out;
}

// Field `f` of `m` (element `index` of a repeated field, or -1).
json FieldValue(const gpb::Message& m, const gpb::Reflection& r,
                const gpb::FieldDescriptor& f, int index) {
  const bool rep = index >= 0;
  switch (f.cpp_type()) {
    case gpb::FieldDescriptor::CPPTYPE_INT32:
      return rep ? r.GetRepeatedInt32(m, &f, index) : r.GetInt32(m, &f);
    case gpb::FieldDescriptor::CPPTYPE_INT64:
      return rep ? r.GetRepeatedInt64(m, &f, index) : r.GetInt64(m, &f);
    case gpb::FieldDescriptor::CPPTYPE_UINT32:
      return rep ? r.GetRepeatedUInt32(m, &f, index) : r.GetUInt32(m, &f);
    case gpb::FieldDescriptor::CPPTYPE_UINT64:
      return rep ? r.GetRepeatedUInt64(m, &f, index) : r.GetUInt64(m, &f);
    case gpb::FieldDescriptor::CPPTYPE_DOUBLE:
      return rep ? r.GetRepeatedDouble(m, &f, index) : r.GetDouble(m, &f);
    case gpb::FieldDescriptor::CPPTYPE_FLOAT:
      return rep ? r.GetRepeatedFloat(m, &f, index) : r.GetFloat(m, &f);
    case gpb::FieldDescriptor::CPPTYPE_BOOL:
      return rep ? r.GetRepeatedBool(m, &f, index) : r.GetBool(m, &f);
    case gpb::FieldDescriptor::CPPTYPE_STRING:
      return rep ? r.GetRepeatedString(m, &f, index) : r.GetString(m, &f);
    case gpb::FieldDescriptor::CPPTYPE_ENUM:
      return (rep ? r.GetRepeatedEnum(m, &f, index) : r.GetEnum(m, &f))->name();
    case gpb::FieldDescriptor::CPPTYPE_MESSAGE:
      return MessageToJson(rep ? r.GetRepeatedMessage(m, &f, index) : r.GetMessage(m, &f));
  }
  return nullptr;
}

// ---------------------------------------------------------------------------
// Flags shared by every verb

// Reads a whole file. NOT_FOUND naming the flag and the file.
absl::StatusOr<std::string> ReadFlagFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("--", flag, ": cannot read '", path, "' (no such file or not readable)"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Connection {
  std::string server;
  std::string token_file;
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;
  double timeout_s = 30;
  bool wait_for_ready = false;

  void Add(FlagSet& flags) {
    flags.AddString("server", &server, "the moecastd server, HOST:PORT", /*required=*/true);
    flags.AddString("token_file", &token_file,
                    "file holding the bearer token the server expects (not the token "
                    "itself: command lines are visible to other users)");
    flags.AddBool("tls", &tls, "TLS with the system's root CAs (implied by --tls_ca etc.)");
    flags.AddString("tls_ca", &tls_ca, "PEM file of the CA that signed the server's certificate");
    flags.AddString("tls_cert", &tls_cert, "mutual TLS: PEM file of this client's certificate");
    flags.AddString("tls_key", &tls_key, "mutual TLS: PEM file of this client's private key");
    flags.AddString("tls_server_name", &tls_server_name,
                    "check the server's certificate against this name instead of HOST");
    flags.AddDouble("timeout", &timeout_s, "deadline of each call, seconds (> 0)");
    flags.AddBool("wait_for_ready", &wait_for_ready,
                  "wait up to --timeout for an unreachable server instead of failing at once");
  }

  // Checks the flags (INVALID_ARGUMENT: a usage error) and reads the files
  // they name (NOT_FOUND / FAILED_PRECONDITION: bad input).
  absl::StatusOr<ClientOptions> ToOptions() const {
    ClientOptions o;
    o.target = server;
    if (server.find(':') == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--server='", server, "' must be HOST:PORT"));
    }
    if (!(timeout_s > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--timeout=", timeout_s, " must be > 0 seconds"));
    }
    if (!tls_cert.empty() && tls_key.empty()) {
      return absl::InvalidArgumentError("--tls_cert needs --tls_key (mutual TLS needs both)");
    }
    if (tls_cert.empty() && !tls_key.empty()) {
      return absl::InvalidArgumentError("--tls_key needs --tls_cert (mutual TLS needs both)");
    }
    o.timeout = absl::Seconds(timeout_s);
    o.wait_for_ready = wait_for_ready;
    o.tls = tls || !tls_ca.empty() || !tls_cert.empty() || !tls_server_name.empty();
    o.tls_server_name_override = tls_server_name;
    const std::pair<const char*, const std::string*> pem_flags[] = {
        {"tls_ca", &tls_ca}, {"tls_cert", &tls_cert}, {"tls_key", &tls_key}};
    for (const auto& [flag, path] : pem_flags) {
      if (path->empty()) continue;
      absl::StatusOr<std::string> pem = ReadFlagFile(flag, *path);
      if (!pem.ok()) return pem.status();
      if (!absl::StrContains(*pem, "-----BEGIN")) {
        return absl::FailedPreconditionError(
            absl::StrCat("--", flag, ": '", *path, "' is not a PEM file (no '-----BEGIN')"));
      }
      if (std::string(flag) == "tls_ca") o.root_ca_pem = *pem;
      if (std::string(flag) == "tls_cert") o.client_cert_pem = *pem;
      if (std::string(flag) == "tls_key") o.client_key_pem = *pem;
    }
    if (!token_file.empty()) {
      absl::StatusOr<std::string> token = ReadFlagFile("token_file", token_file);
      if (!token.ok()) return token.status();
      const std::string t(absl::StripAsciiWhitespace(*token));
      if (t.empty()) {
        return absl::FailedPreconditionError(
            absl::StrCat("--token_file: '", token_file, "' is empty"));
      }
      for (char c : t) {
        if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
          return absl::FailedPreconditionError(absl::StrCat(
              "--token_file: '", token_file,
              "' holds spaces or non-printable characters inside the token"));
        }
      }
      o.auth_token = t;
    }
    return o;
  }
};

// Parses "1,10,100" (or "") into integers >= `min`.
absl::StatusOr<std::vector<int>> ParseIntList(const std::string& flag, const std::string& text,
                                              int min) {
  std::vector<int> out;
  if (text.empty()) return out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", part, "' is not an integer"));
    }
    if (v < min) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": ", v, " must be >= ", min));
    }
    out.push_back(v);
  }
  return out;
}

// One verb: its flags, and what it does once they are parsed and a client
// is connected.
class Verb {
 public:
  Verb(std::string name, std::ostream& out, std::ostream& err)
      : name_(std::move(name)), flags_("client " + name_), out_(out), err_(err) {}
  virtual ~Verb() = default;

  int Run(const std::vector<std::string>& args) {
    AddFlags(flags_);
    connection_.Add(flags_);
    if (absl::Status s = flags_.Parse(args); !s.ok()) {
      err_ << s.message() << "\n";  // FlagSet's messages name the command
      return 2;
    }
    if (flags_.help_requested()) {
      out_ << "usage: moecast client " << name_ << " [flags]\n" << flags_.Usage();
      return 0;
    }
    if (absl::Status s = Check(); !s.ok()) return Usage(s.message());
    absl::StatusOr<ClientOptions> options = connection_.ToOptions();
    if (!options.ok()) {
      if (options.status().code() == absl::StatusCode::kInvalidArgument) {
        return Usage(options.status().message());
      }
      return Fail(options.status().message());
    }
    absl::StatusOr<std::unique_ptr<MoecastClient>> client = MoecastClient::Connect(*options);
    if (!client.ok()) return Usage(client.status().message());
    client_ = std::move(*client);
    return Execute();
  }

 protected:
  virtual void AddFlags(FlagSet& flags) = 0;
  // Checks flag values beyond what FlagSet checks (INVALID_ARGUMENT).
  virtual absl::Status Check() { return absl::OkStatus(); }
  virtual int Execute() = 0;

  int Usage(absl::string_view message) {
    err_ << "moecast client " << name_ << ": " << message << "\n";
    return 2;
  }
  int Fail(absl::string_view message) {
    err_ << "moecast client " << name_ << ": " << message << "\n";
    return 1;
  }
  // A failed call: its code and the server's message.
  int Fail(const absl::Status& s) {
    err_ << "moecast client " << name_ << ": " << absl::StatusCodeToString(s.code()) << ": "
         << s.message() << "\n";
    return 1;
  }
  // Prints a response as indented JSON.
  int PrintJson(const gpb::Message& m) {
    out_ << MessageToJson(m).dump(2) << "\n";
    return 0;
  }
  void AddJobFlag(FlagSet& flags) {
    flags.AddString("job", &job_, "job id", /*required=*/true);
  }

  const std::string name_;
  FlagSet flags_;
  std::ostream& out_;
  std::ostream& err_;
  Connection connection_;
  std::unique_ptr<MoecastClient> client_;
  std::string job_;
};

// ---------------------------------------------------------------------------
// Verbs

class RegisterVerb : public Verb {
 public:
  using Verb::Verb;

 protected:
  void AddFlags(FlagSet& flags) override {
    constexpr int64_t kMax = 1 << 24;
    AddJobFlag(flags);
    flags.AddInt("layers", &layers_, "MoE layers L (or --counts)", false, 1, kMax);
    flags.AddInt("experts", &experts_, "experts per layer M (or --counts)", false, 1, kMax);
    flags.AddString("counts", &counts_,
                    "take L and M from this counts trace's header instead of --layers/--experts");
    flags.AddInt("top_k", &top_k_, "experts chosen per token K", /*required=*/true, 1, kMax);
    flags.AddInt("sources", &sources_, "producers reporting partial counts per step", false, 1,
                 kMax);
    flags.AddString("step_unit", &step_unit_,
                    "what a step is: optimizer_step, forward_pass or interval");
    flags.AddString("router_kind", &router_kind_, "softmax or sigmoid_with_bias");
    flags.AddString("predictors", &predictors_,
                    "predictor bank, comma-separated (default: the server's)");
    flags.AddString("horizons", &horizons_,
                    "horizons the predictors are scored at, e.g. 1,10,100");
    flags.AddBool("disable_forecasting", &disable_forecasting_, "keep history only");
    flags.AddBool("disable_health", &disable_health_, "no router health monitoring");
    flags.AddDouble("aux_loss_coef", &aux_loss_coef_, "load-balancing loss coefficient alpha");
    flags.AddDouble("router_temperature", &router_temperature_, "router softmax temperature T");
    flags.AddDouble("entropy_weight", &entropy_weight_, "routing-entropy weight H");
    flags.AddDouble("oracle_weight", &oracle_weight_, "oracle weight O");
    flags.AddDouble("balance_weight", &balance_weight_, "balance weight B");
  }

  absl::Status Check() override {
    const bool shape = flags_.IsSet("layers") || flags_.IsSet("experts");
    if (shape && !counts_.empty()) {
      return absl::InvalidArgumentError(
          "--counts and --layers/--experts exclude each other: the trace gives L and M");
    }
    if (!shape && counts_.empty()) {
      return absl::InvalidArgumentError(
          "give --layers and --experts, or --counts to take them from a trace");
    }
    if (shape && !(flags_.IsSet("layers") && flags_.IsSet("experts"))) {
      return absl::InvalidArgumentError(flags_.IsSet("layers") ? "--layers needs --experts"
                                                               : "--experts needs --layers");
    }
    if (step_unit_ == "optimizer_step") {
      spec_.set_step_unit(pb::STEP_UNIT_OPTIMIZER_STEP);
    } else if (step_unit_ == "forward_pass") {
      spec_.set_step_unit(pb::STEP_UNIT_FORWARD_PASS);
    } else if (step_unit_ == "interval") {
      spec_.set_step_unit(pb::STEP_UNIT_INTERVAL);
    } else if (!step_unit_.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--step_unit='", step_unit_, "' must be optimizer_step, forward_pass or interval"));
    }
    if (router_kind_ == "softmax") {
      spec_.set_router(pb::ROUTER_KIND_SOFTMAX);
    } else if (router_kind_ == "sigmoid_with_bias") {
      spec_.set_router(pb::ROUTER_KIND_SIGMOID_WITH_BIAS);
    } else if (!router_kind_.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--router_kind='", router_kind_, "' must be softmax or sigmoid_with_bias"));
    }
    absl::StatusOr<std::vector<int>> horizons = ParseIntList("horizons", horizons_, 1);
    if (!horizons.ok()) return horizons.status();
    for (int h : *horizons) spec_.add_horizons(h);
    if (!predictors_.empty()) {
      for (absl::string_view p : absl::StrSplit(predictors_, ',')) {
        if (p.empty()) {
          return absl::InvalidArgumentError(
              absl::StrCat("--predictors='", predictors_, "' has an empty name"));
        }
        spec_.add_predictors(std::string(p));
      }
    }
    return absl::OkStatus();
  }

  int Execute() override {
    int64_t layers = layers_, experts = experts_;
    if (!counts_.empty()) {
      absl::StatusOr<std::unique_ptr<TraceReader>> reader = TraceReader::Open(counts_);
      if (!reader.ok()) return Fail(reader.status().message());
      layers = (*reader)->layout().num_layers();
      experts = (*reader)->layout().num_experts;
    }
    spec_.set_job_id(job_);
    spec_.set_num_layers(static_cast<int>(layers));
    spec_.set_num_experts(static_cast<int>(experts));
    spec_.set_top_k(static_cast<int>(top_k_));
    spec_.set_num_sources(static_cast<int>(sources_));
    spec_.set_disable_forecasting(disable_forecasting_);
    spec_.set_disable_health(disable_health_);
    pb::TrainingHyperparams* h = spec_.mutable_hyperparameters();
    if (flags_.IsSet("aux_loss_coef")) h->set_aux_loss_coef(aux_loss_coef_);
    if (flags_.IsSet("router_temperature")) h->set_router_temperature(router_temperature_);
    if (flags_.IsSet("entropy_weight")) h->set_entropy_weight(entropy_weight_);
    if (flags_.IsSet("oracle_weight")) h->set_oracle_weight(oracle_weight_);
    if (flags_.IsSet("balance_weight")) h->set_balance_weight(balance_weight_);
    absl::StatusOr<pb::RegisterJobResponse> r = client_->RegisterJob(spec_);
    if (!r.ok()) return Fail(r.status());
    out_ << "registered job '" << job_ << "' on " << connection_.server << ": " << layers
         << " layers x " << experts << " experts, top_k " << top_k_ << "\n";
    return 0;
  }

 private:
  int64_t layers_ = 0, experts_ = 0, top_k_ = 0, sources_ = 1;
  std::string counts_, step_unit_, router_kind_, predictors_, horizons_;
  bool disable_forecasting_ = false, disable_health_ = false;
  double aux_loss_coef_ = 0, router_temperature_ = 0, entropy_weight_ = 0,
         oracle_weight_ = 0, balance_weight_ = 0;
  pb::JobSpec spec_;
};

class IngestVerb : public Verb {
 public:
  using Verb::Verb;

 protected:
  void AddFlags(FlagSet& flags) override {
    AddJobFlag(flags);
    flags.AddString("counts", &counts_, "counts trace NAME.counts.csv[.gz]", /*required=*/true);
    flags.AddString("router", &router_, "optional router trace NAME.router.csv[.gz] (z columns)");
    flags.AddInt("batch_size", &batch_size_, "steps per streamed batch", false, 1, 1 << 20);
    flags.AddInt("max_steps", &max_steps_, "stop after this many steps (0 = all)", false, 0);
    flags.AddInt("source", &source_, "producer index of a multi-source job", false, 0,
                 1 << 24);
    flags.AddString("progress", &progress_, "progress bar on stderr: auto, on, off");
  }

  absl::Status Check() override {
    if (progress_ != "auto" && progress_ != "on" && progress_ != "off") {
      return absl::InvalidArgumentError(
          absl::StrCat("--progress='", progress_, "' must be auto, on or off"));
    }
    return absl::OkStatus();
  }

  int Execute() override {
    absl::StatusOr<std::unique_ptr<TraceReader>> reader_or =
        TraceReader::Open(counts_, router_);
    if (!reader_or.ok()) return Fail(reader_or.status().message());
    TraceReader& reader = **reader_or;
    const TraceLayout& layout = reader.layout();

    // The job must exist and match the trace; saying so here beats one
    // rejection per step.
    absl::StatusOr<pb::JobInfo> info = client_->GetJobInfo(job_);
    if (!info.ok()) {
      if (info.status().code() == absl::StatusCode::kNotFound) {
        return Fail(absl::StrCat("NOT_FOUND: ", info.status().message(),
                                 " (register it first: moecast client register)"));
      }
      return Fail(info.status());
    }
    if (info->spec().num_layers() != layout.num_layers() ||
        info->spec().num_experts() != layout.num_experts) {
      return Fail(absl::StrCat(counts_, ": the trace has ", layout.num_layers(), " layers x ",
                               layout.num_experts, " experts but job '", job_,
                               "' was registered with ", info->spec().num_layers(), " x ",
                               info->spec().num_experts()));
    }

    absl::StatusOr<std::unique_ptr<grpc_api::IngestStream>> stream_or =
        client_->OpenIngestStream();
    if (!stream_or.ok()) return Fail(stream_or.status());
    grpc_api::IngestStream& stream = **stream_or;
    ProgressBar progress(progress_, "ingest");
    // (step, line) of every step sent, to point rejections at their line.
    std::vector<std::pair<int64_t, int64_t>> lines;
    pb::IngestBatchRequest batch;
    batch.set_job_id(job_);
    int64_t steps = 0;
    TraceStep step;
    while (max_steps_ == 0 || steps < max_steps_) {
      absl::StatusOr<bool> more = reader.Next(&step);
      if (!more.ok()) {
        progress.Finish();
        return Fail(more.status().message());  // the stream is cancelled on return
      }
      if (!*more) break;
      pb::Step* s = batch.add_steps();
      s->set_step(step.step);
      s->set_source(static_cast<int>(source_));
      s->mutable_counts()->Add(step.counts.begin(), step.counts.end());
      s->mutable_router_logits()->Add(step.router_z.begin(), step.router_z.end());
      if (step.tokens.has_value()) s->set_tokens(static_cast<double>(*step.tokens));
      lines.emplace_back(step.step, step.first_line);
      ++steps;
      if (batch.steps_size() >= batch_size_) {
        if (absl::Status w = stream.Write(batch); !w.ok()) {
          progress.Finish();
          return Fail(w);
        }
        batch.clear_steps();
        progress.Update(reader.progress(), steps);
      }
    }
    if (batch.steps_size() > 0) {
      if (absl::Status w = stream.Write(batch); !w.ok()) {
        progress.Finish();
        return Fail(w);
      }
    }
    progress.Finish();
    absl::StatusOr<pb::IngestSummary> summary = stream.Finish();
    if (!summary.ok()) return Fail(summary.status());

    out_ << "moecast client ingest: " << counts_ << " -> job '" << job_ << "' on "
         << connection_.server << "\n";
    out_ << "  steps       " << summary->steps() << " sent in " << summary->batches()
         << " batch(es)\n";
    out_ << "  committed   " << summary->committed() << "\n";
    out_ << "  duplicates  " << summary->duplicates() << "\n";
    out_ << "  pending     " << summary->pending() << "\n";
    out_ << "  rejected    " << summary->rejected() << "\n";
    for (const pb::StepResult& r : summary->first_rejections()) {
      auto it = std::lower_bound(lines.begin(), lines.end(),
                                 std::make_pair(r.step(), int64_t{0}));
      const int64_t line = it != lines.end() && it->first == r.step() ? it->second : 0;
      err_ << counts_ << ":" << line << ":1: step " << r.step() << " rejected: "
           << absl::StatusCodeToString(static_cast<absl::StatusCode>(r.error_code())) << ": "
           << r.error_message() << "\n";
    }
    if (summary->rejected() > summary->first_rejections_size()) {
      err_ << "  ... and " << summary->rejected() - summary->first_rejections_size()
           << " more rejected step(s)\n";
    }
    return summary->rejected() > 0 ? 1 : 0;
  }

 private:
  std::string counts_, router_, progress_ = "auto";
  int64_t batch_size_ = 256, max_steps_ = 0, source_ = 0;
};

class ForecastVerb : public Verb {
 public:
  using Verb::Verb;

 protected:
  void AddFlags(FlagSet& flags) override {
    AddJobFlag(flags);
    flags.AddString("horizons", &horizons_, "horizons in steps, e.g. 1,10 (default: the job's)");
    flags.AddString("predictor", &predictor_, "auto (default) or a predictor of the job's bank");
    flags.AddDouble("interval_level", &level_, "central interval level in (0, 1); default 0.9");
    flags.AddInt("path_steps", &path_steps_, "per-step path length (0: none)", false, 0,
                 1 << 20);
    flags.AddString("layers", &layers_, "layers to answer for, e.g. 0,3 (default: all)");
  }

  absl::Status Check() override {
    absl::StatusOr<std::vector<int>> horizons = ParseIntList("horizons", horizons_, 1);
    if (!horizons.ok()) return horizons.status();
    absl::StatusOr<std::vector<int>> layers = ParseIntList("layers", layers_, 0);
    if (!layers.ok()) return layers.status();
    if (flags_.IsSet("interval_level") && !(level_ > 0 && level_ < 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--interval_level=", level_, " must be in (0, 1)"));
    }
    request_.mutable_horizons()->Add(horizons->begin(), horizons->end());
    request_.mutable_layers()->Add(layers->begin(), layers->end());
    return absl::OkStatus();
  }

  int Execute() override {
    request_.set_job_id(job_);
    request_.set_predictor(predictor_);
    request_.set_interval_level(level_);
    request_.set_path_steps(static_cast<int>(path_steps_));
    absl::StatusOr<pb::ForecastResponse> r = client_->Forecast(request_);
    if (!r.ok()) return Fail(r.status());
    return PrintJson(*r);
  }

 private:
  std::string horizons_, predictor_, layers_;
  double level_ = 0;
  int64_t path_steps_ = 0;
  pb::ForecastRequest request_;
};

class PlacementVerb : public Verb {
 public:
  using Verb::Verb;

 protected:
  void AddFlags(FlagSet& flags) override {
    constexpr int64_t kMax = 1 << 24;
    AddJobFlag(flags);
    flags.AddInt("slots", &slots_, "total physical slots S (a multiple of --gpus, >= M)",
                 /*required=*/true, 1, kMax);
    flags.AddInt("gpus", &gpus_, "GPUs P", /*required=*/true, 1, kMax);
    flags.AddInt("groups", &groups_, "expert groups G (dividing M)", false, 1, kMax);
    flags.AddInt("nodes", &nodes_, "nodes N (dividing --gpus)", false, 1, kMax);
    flags.AddString("exclude", &exclude_, "GPUs to leave out, e.g. 3,17");
    flags.AddString("current", &current_,
                    "JSON {\"phy2log\": [[...S...], ...L rows]}: the placement in service");
    flags.AddString("mode", &mode_, "default (moecast's planner) or eplb");
    flags.AddInt("move_budget", &move_budget_,
                 "most experts to move beyond forced ones (-1: no limit)", false, -1);
    flags.AddInt("max_extra_per_gpu", &max_extra_,
                 "most extra experts a GPU receives per migration stage", false, 1, kMax);
    flags.AddInt("bytes_per_expert", &bytes_per_expert_, "bytes of one expert's weights",
                 false, 0);
    flags.AddInt("horizon", &horizon_, "plan for the mean load over this many steps", false, 1,
                 kMax);
    flags.AddString("predictor", &predictor_, "auto (default) or a predictor name");
    flags.AddBool("means_only", &means_only_,
                  "plan transient layers on means instead of upper bounds");
    flags.AddDouble("interval_level", &level_, "level of the upper bounds; default 0.9");
    flags.AddDouble("intra_bw", &intra_bw_, "intra-node bandwidth, bytes/s (decision)");
    flags.AddDouble("inter_bw", &inter_bw_, "inter-node bandwidth, bytes/s (decision)");
    flags.AddDouble("tokens_per_step", &tokens_per_step_,
                    "token-expert assignments per layer per step (decision)");
    flags.AddDouble("time_per_token", &time_per_token_,
                    "seconds per token-expert assignment on one GPU (decision)");
    flags.AddDouble("horizon_steps", &horizon_steps_,
                    "steps the new placement will serve (decision)");
    flags.AddBool("overlap", &overlap_, "migration overlaps compute (else the job stalls)");
  }

  absl::Status Check() override {
    if (mode_ != "default" && mode_ != "eplb") {
      return absl::InvalidArgumentError(
          absl::StrCat("--mode='", mode_, "' must be default or eplb"));
    }
    absl::StatusOr<std::vector<int>> excluded = ParseIntList("exclude", exclude_, 0);
    if (!excluded.ok()) return excluded.status();
    request_.mutable_excluded_gpus()->Add(excluded->begin(), excluded->end());
    if (flags_.IsSet("interval_level") && !(level_ > 0 && level_ < 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--interval_level=", level_, " must be in (0, 1)"));
    }
    decide_ = intra_bw_ != 0 || inter_bw_ != 0 || tokens_per_step_ != 0 ||
              time_per_token_ != 0 || horizon_steps_ != 0;
    if (decide_ && current_.empty()) {
      return absl::InvalidArgumentError(
          "the decision flags (--intra_bw, --inter_bw, --tokens_per_step, --time_per_token, "
          "--horizon_steps) need --current");
    }
    if (decide_) {
      const std::pair<const char*, double> needed[] = {
          {"intra_bw", intra_bw_}, {"inter_bw", inter_bw_},
          {"tokens_per_step", tokens_per_step_}, {"time_per_token", time_per_token_},
          {"horizon_steps", horizon_steps_}};
      for (const auto& [flag, value] : needed) {
        if (!(value > 0)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "--", flag, "=", value, " must be > 0 when deciding whether to rebalance"));
        }
      }
    }
    return absl::OkStatus();
  }

  int Execute() override {
    request_.set_job_id(job_);
    request_.set_num_slots(static_cast<int>(slots_));
    request_.set_num_gpus(static_cast<int>(gpus_));
    request_.set_num_groups(static_cast<int>(groups_));
    request_.set_num_nodes(static_cast<int>(nodes_));
    request_.set_mode(mode_);
    if (move_budget_ >= 0) request_.set_move_budget(move_budget_);
    request_.set_max_extra_experts_per_gpu(static_cast<int>(max_extra_));
    request_.set_bytes_per_expert(bytes_per_expert_);
    if (flags_.IsSet("horizon")) request_.set_horizon(static_cast<int>(horizon_));
    request_.set_predictor(predictor_);
    request_.set_means_only(means_only_);
    request_.set_interval_level(level_);
    if (!current_.empty()) {
      absl::StatusOr<Matrix> current = ReadMatrixJson(current_, "phy2log", /*integers=*/true);
      if (!current.ok()) return Fail(current.status().message());
      for (double v : current->values) request_.add_current_phy2log(static_cast<int>(v));
    }
    if (decide_) {
      pb::MigrationModel* m = request_.mutable_migration();
      m->set_bytes_per_expert(static_cast<double>(bytes_per_expert_));
      m->set_intra_node_bandwidth(intra_bw_);
      m->set_inter_node_bandwidth(inter_bw_);
      m->set_tokens_per_step(tokens_per_step_);
      m->set_time_per_token_s(time_per_token_);
      m->set_horizon_steps(horizon_steps_);
      m->set_overlap(overlap_);
    }
    absl::StatusOr<pb::RecommendPlacementResponse> r = client_->RecommendPlacement(request_);
    if (!r.ok()) return Fail(r.status());
    return PrintJson(*r);
  }

 private:
  int64_t slots_ = 0, gpus_ = 0, groups_ = 1, nodes_ = 1, move_budget_ = -1, max_extra_ = 1,
          bytes_per_expert_ = 0, horizon_ = 100;
  std::string exclude_, current_, mode_ = "default", predictor_;
  bool means_only_ = false, overlap_ = false, decide_ = false;
  double level_ = 0, intra_bw_ = 0, inter_bw_ = 0, tokens_per_step_ = 0, time_per_token_ = 0,
         horizon_steps_ = 0;
  pb::RecommendPlacementRequest request_;
};

// Verbs that take only --job (and maybe a flag) and print the answer.
class JobQueryVerb : public Verb {
 public:
  enum class Kind { kHealth, kState, kInfo, kFlush, kDelete };
  JobQueryVerb(Kind kind, std::string name, std::ostream& out, std::ostream& err)
      : Verb(std::move(name), out, err), kind_(kind) {}

 protected:
  void AddFlags(FlagSet& flags) override {
    AddJobFlag(flags);
    if (kind_ == Kind::kState) {
      flags.AddBool("per_expert", &per_expert_, "add per-expert variance and range series");
    }
  }

  int Execute() override {
    switch (kind_) {
      case Kind::kHealth: return Print(client_->GetHealth(job_));
      case Kind::kInfo: return Print(client_->GetJobInfo(job_));
      case Kind::kFlush: return Print(client_->FlushPending(job_));
      case Kind::kState: {
        pb::GetStateRequest request;
        request.set_job_id(job_);
        request.set_per_expert(per_expert_);
        return Print(client_->GetState(request));
      }
      case Kind::kDelete: {
        absl::StatusOr<pb::DeleteJobResponse> r = client_->DeleteJob(job_);
        if (!r.ok()) return Fail(r.status());
        out_ << "deleted job '" << job_ << "' on " << connection_.server << "\n";
        return 0;
      }
    }
    return Fail("unknown verb");
  }

 private:
  template <typename T>
  int Print(const absl::StatusOr<T>& r) {
    if (!r.ok()) return Fail(r.status());
    return PrintJson(*r);
  }

  const Kind kind_;
  bool per_expert_ = false;
};

class JobsVerb : public Verb {
 public:
  using Verb::Verb;

 protected:
  void AddFlags(FlagSet&) override {}
  int Execute() override {
    absl::StatusOr<pb::ListJobsResponse> r = client_->ListJobs();
    if (!r.ok()) return Fail(r.status());
    for (const std::string& id : r->job_ids()) out_ << id << "\n";
    return 0;
  }
};

class WatchVerb : public Verb {
 public:
  using Verb::Verb;

 protected:
  void AddFlags(FlagSet& flags) override {
    AddJobFlag(flags);
    flags.AddInt("after_seq", &after_seq_, "stream events after this sequence number", false,
                 0);
    flags.AddInt("max_events", &max_events_, "stop after this many events (0: no limit)",
                 false, 0);
    flags.AddDouble("duration", &duration_s_,
                    "stop after this many seconds (0: until the stream ends)");
  }

  absl::Status Check() override {
    if (!(duration_s_ >= 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--duration=", duration_s_, " must be >= 0 seconds"));
    }
    return absl::OkStatus();
  }

  int Execute() override {
    pb::WatchRequest request;
    request.set_job_id(job_);
    request.set_after_seq(after_seq_);
    absl::StatusOr<std::unique_ptr<grpc_api::WatchCall>> call = client_->Watch(request);
    if (!call.ok()) return Fail(call.status());
    absl::Notification done;
    std::thread timer;
    if (duration_s_ > 0) {
      timer = std::thread([&] {
        if (!done.WaitForNotificationWithTimeout(absl::Seconds(duration_s_))) {
          (*call)->Cancel();
        }
      });
    }
    int64_t seen = 0;
    // One event per line (JSON Lines), flushed so that pipes see it at once.
    absl::Status s = (*call)->Run([&](const pb::Event& e) {
      out_ << MessageToJson(e).dump() << std::endl;
      return max_events_ == 0 || ++seen < max_events_;
    });
    done.Notify();
    if (timer.joinable()) timer.join();
    if (!s.ok()) return Fail(s);
    return 0;
  }

 private:
  int64_t after_seq_ = 0, max_events_ = 0;
  double duration_s_ = 0;
};

void PrintClientUsage(std::ostream& os) {
  os << "usage: moecast client <verb> --server HOST:PORT [--token_file F] [--tls_ca F "
        "[--tls_cert F --tls_key F]] [flags]\n\n"
        "verbs (moecast client <verb> --help for the flags):\n"
        "  register   register a job (L, M from --layers/--experts or a trace's header)\n"
        "  ingest     stream a counts trace (and router trace) into a job\n"
        "  jobs       list the server's jobs\n"
        "  info       a job's spec and ingestion counters (JSON)\n"
        "  forecast   per-layer load forecasts with intervals (JSON)\n"
        "  state      transient/stable state per layer with its signals (JSON)\n"
        "  health     router health: gamma_eff, phases, dead experts, E (JSON)\n"
        "  placement  recommended expert placement, migration and decision (JSON)\n"
        "  flush      commit a multi-source job's pending steps (JSON)\n"
        "  delete     delete a job and its history\n"
        "  watch      stream a job's events, one JSON object per line\n";
}

}  // namespace

int RunClient(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty()) {
    PrintClientUsage(err);
    return 2;
  }
  const std::string& verb = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  std::unique_ptr<Verb> v;
  using Kind = JobQueryVerb::Kind;
  if (verb == "register") v = std::make_unique<RegisterVerb>(verb, out, err);
  if (verb == "ingest") v = std::make_unique<IngestVerb>(verb, out, err);
  if (verb == "forecast") v = std::make_unique<ForecastVerb>(verb, out, err);
  if (verb == "placement") v = std::make_unique<PlacementVerb>(verb, out, err);
  if (verb == "jobs") v = std::make_unique<JobsVerb>(verb, out, err);
  if (verb == "watch") v = std::make_unique<WatchVerb>(verb, out, err);
  if (verb == "health") v = std::make_unique<JobQueryVerb>(Kind::kHealth, verb, out, err);
  if (verb == "state") v = std::make_unique<JobQueryVerb>(Kind::kState, verb, out, err);
  if (verb == "info") v = std::make_unique<JobQueryVerb>(Kind::kInfo, verb, out, err);
  if (verb == "flush") v = std::make_unique<JobQueryVerb>(Kind::kFlush, verb, out, err);
  if (verb == "delete") v = std::make_unique<JobQueryVerb>(Kind::kDelete, verb, out, err);
  if (v != nullptr) return v->Run(rest);
  if (verb == "--help" || verb == "-h" || verb == "help") {
    PrintClientUsage(out);
    return 0;
  }
  err << "moecast client: unknown verb '" << verb << "'\n\n";
  PrintClientUsage(err);
  return 2;
}

}  // namespace moecast::cli
