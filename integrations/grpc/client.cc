#include "integrations/grpc/client.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "integrations/grpc/status_conversion.h"

namespace moecast::grpc_api {
namespace {

namespace pb = ::moecast::v1;

// grpc::Status -> absl::Status, code and server message kept. Errors the
// transport makes up (not the server) get the RPC and the target, since
// "failed to connect to all addresses" alone does not say which server.
absl::Status ConvertStatus(const grpc::Status& status, const char* rpc,
                           const std::string& target) {
  absl::Status s = FromGrpcStatus(status);
  if (s.code() == absl::StatusCode::kUnavailable ||
      s.code() == absl::StatusCode::kDeadlineExceeded) {
    return absl::Status(s.code(), absl::StrCat("moecast.v1.Moecast/", rpc, " to '",
                                               target, "': ", s.message()));
  }
  return s;
}

absl::Status CheckPem(const std::string& field, const std::string& pem) {
  if (!pem.empty() && !absl::StrContains(pem, "-----BEGIN")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ClientOptions.", field,
        " does not hold PEM (no '-----BEGIN' line); pass the file's contents, not "
        "its name"));
  }
  return absl::OkStatus();
}

absl::Status Validate(const ClientOptions& o) {
  if (o.target.empty()) return absl::InvalidArgumentError("ClientOptions.target is empty");
  if (o.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ClientOptions.timeout must be > 0, got ", absl::FormatDuration(o.timeout)));
  }
  if (o.stream_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClientOptions.stream_timeout must be > 0, got ",
                     absl::FormatDuration(o.stream_timeout)));
  }
  if (o.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ClientOptions.max_message_bytes must be > 0, got ", o.max_message_bytes));
  }
  for (size_t i = 0; i < o.auth_token.size(); ++i) {
    const unsigned char c = o.auth_token[i];
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ClientOptions.auth_token has a space or non-printable character at "
          "offset ",
          i, " (byte ", static_cast<int>(c), ")"));
    }
  }
  if (!o.tls) {
    const std::pair<const char*, const std::string*> tls_only[] = {
        {"root_ca_pem", &o.root_ca_pem},
        {"client_cert_pem", &o.client_cert_pem},
        {"client_key_pem", &o.client_key_pem},
        {"tls_server_name_override", &o.tls_server_name_override},
    };
    for (const auto& [name, value] : tls_only) {
      if (!value->empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("ClientOptions.", name, " is set but tls is false"));
      }
    }
  }
  if (!o.client_cert_pem.empty() && o.client_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "ClientOptions.client_cert_pem is set but client_key_pem is empty (mutual TLS "
        "needs both)");
  }
  if (o.client_cert_pem.empty() && !o.client_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "ClientOptions.client_key_pem is set but client_cert_pem is empty (mutual TLS "
        "needs both)");
  }
  if (absl::Status s = CheckPem("root_ca_pem", o.root_ca_pem); !s.ok()) return s;
  if (absl::Status s = CheckPem("client_cert_pem", o.client_cert_pem); !s.ok()) return s;
  if (absl::Status s = CheckPem("client_key_pem", o.client_key_pem); !s.ok()) return s;
  return absl::OkStatus();
}

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return;
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            absl::ToChronoNanoseconds(timeout)));
}

void ToProto(const StepInput& in, pb::Step* out) {
  out->set_step(in.step);
  out->set_source(in.source);
  out->mutable_counts()->Add(in.counts.begin(), in.counts.end());
  out->mutable_router_logits()->Add(in.router_logits.begin(), in.router_logits.end());
  if (in.tokens.has_value()) out->set_tokens(*in.tokens);
}

}  // namespace

// ---------------------------------------------------------------------------
// IngestStream

IngestStream::~IngestStream() {
  if (!finished_ && writer_ != nullptr) {
    context_.TryCancel();
    writer_->Finish();  // reaps the cancelled call
  }
}

absl::Status IngestStream::FinishCall() {
  finished_ = true;
  return ConvertStatus(writer_->Finish(), "Ingest", target_);
}

absl::Status IngestStream::Write(const pb::IngestBatchRequest& batch) {
  if (finished_) {
    return absl::FailedPreconditionError("IngestStream::Write after the stream finished");
  }
  if (writer_->Write(batch)) {
    ++batches_written_;
    return absl::OkStatus();
  }
  // The stream is broken; its status says why.
  absl::Status s = FinishCall();
  if (s.ok()) {
    // The server ended the call with OK before reading everything.
    return absl::AbortedError(absl::StrCat("Ingest stream to '", target_,
                                           "' was closed by the server after ",
                                           batches_written_, " batches"));
  }
  return s;
}

absl::Status IngestStream::WriteSteps(const std::string& job_id,
                                      absl::Span<const StepInput> steps, int batch_size) {
  if (batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size must be >= 1, got ", batch_size));
  }
  for (size_t begin = 0; begin < steps.size(); begin += batch_size) {
    const size_t end = std::min(steps.size(), begin + static_cast<size_t>(batch_size));
    pb::IngestBatchRequest batch;
    batch.set_job_id(job_id);
    batch.mutable_steps()->Reserve(static_cast<int>(end - begin));
    for (size_t i = begin; i < end; ++i) ToProto(steps[i], batch.add_steps());
    if (absl::Status s = Write(batch); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<pb::IngestSummary> IngestStream::Finish() {
  if (finished_) {
    return absl::FailedPreconditionError(
        "IngestStream::Finish: the stream already finished");
  }
  // WritesDone fails only on a broken stream, whose status Finish returns.
  writer_->WritesDone();
  absl::Status s = FinishCall();
  if (!s.ok()) return s;
  return summary_;
}

// ---------------------------------------------------------------------------
// WatchCall and BackgroundWatch

WatchCall::~WatchCall() {
  if (reader_ != nullptr && !ran_.load()) {
    // Never read: cancel and reap the call.
    context_.TryCancel();
    reader_->Finish();
  }
}

absl::Status WatchCall::Run(const EventFn& on_event) {
  if (ran_.exchange(true)) {
    return absl::FailedPreconditionError("WatchCall::Run was already called");
  }
  pb::Event event;
  bool stopped = false;
  while (reader_->Read(&event)) {
    events_.fetch_add(1);
    last_seq_.store(event.seq());
    if (!on_event(event)) {
      stopped = true;
      context_.TryCancel();
      break;
    }
  }
  grpc::Status status = reader_->Finish();
  if (stopped || cancelled_.load()) return absl::OkStatus();
  return ConvertStatus(status, "Watch", target_);
}

void WatchCall::Cancel() {
  cancelled_.store(true);
  context_.TryCancel();
}

BackgroundWatch::~BackgroundWatch() {
  Cancel();
  Wait().IgnoreError();
}

absl::Status BackgroundWatch::Wait() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!joined_) {
    thread_.join();
    joined_ = true;
  }
  return result_;
}

// ---------------------------------------------------------------------------
// MoecastClient

absl::StatusOr<std::unique_ptr<MoecastClient>> MoecastClient::Connect(
    const ClientOptions& options) {
  if (absl::Status s = Validate(options); !s.ok()) return s;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.root_ca_pem;
    ssl.pem_cert_chain = options.client_cert_pem;
    ssl.pem_private_key = options.client_key_pem;
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  if (credentials == nullptr) {
    return absl::InvalidArgumentError("could not create TLS channel credentials");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  if (!options.tls_server_name_override.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name_override);
  }
  std::unique_ptr<MoecastClient> client(new MoecastClient(options));
  client->channel_ = grpc::CreateCustomChannel(options.target, credentials, args);
  if (client->channel_ == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("could not create a channel to target '", options.target, "'"));
  }
  client->stub_ = pb::Moecast::NewStub(client->channel_);
  return client;
}

void MoecastClient::Prepare(grpc::ClientContext* context, absl::Duration deadline) const {
  SetDeadline(context, deadline);
  context->set_wait_for_ready(options_.wait_for_ready);
  if (!options_.auth_token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.auth_token));
  }
}

template <typename Request, typename Response>
absl::StatusOr<Response> MoecastClient::Unary(
    grpc::Status (pb::Moecast::Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
    const Request& request, const char* name) {
  grpc::ClientContext context;
  Prepare(&context, options_.timeout);
  Response response;
  grpc::Status status = (stub_.get()->*rpc)(&context, request, &response);
  if (!status.ok()) return ConvertStatus(status, name, options_.target);
  return response;
}

absl::StatusOr<pb::RegisterJobResponse> MoecastClient::RegisterJob(const pb::JobSpec& spec) {
  pb::RegisterJobRequest request;
  *request.mutable_spec() = spec;
  return Unary(&pb::Moecast::Stub::RegisterJob, request, "RegisterJob");
}

absl::StatusOr<pb::ListJobsResponse> MoecastClient::ListJobs() {
  pb::ListJobsRequest request;
  return Unary(&pb::Moecast::Stub::ListJobs, request, "ListJobs");
}

absl::StatusOr<pb::DeleteJobResponse> MoecastClient::DeleteJob(const std::string& job_id) {
  pb::DeleteJobRequest request;
  request.set_job_id(job_id);
  return Unary(&pb::Moecast::Stub::DeleteJob, request, "DeleteJob");
}

absl::StatusOr<pb::JobInfo> MoecastClient::GetJobInfo(const std::string& job_id) {
  pb::GetJobInfoRequest request;
  request.set_job_id(job_id);
  return Unary(&pb::Moecast::Stub::GetJobInfo, request, "GetJobInfo");
}

absl::StatusOr<pb::FlushPendingResponse> MoecastClient::FlushPending(
    const std::string& job_id) {
  pb::FlushPendingRequest request;
  request.set_job_id(job_id);
  return Unary(&pb::Moecast::Stub::FlushPending, request, "FlushPending");
}

absl::StatusOr<pb::IngestBatchResponse> MoecastClient::IngestBatch(
    const pb::IngestBatchRequest& request) {
  return Unary(&pb::Moecast::Stub::IngestBatch, request, "IngestBatch");
}

absl::StatusOr<pb::ForecastResponse> MoecastClient::Forecast(
    const pb::ForecastRequest& request) {
  return Unary(&pb::Moecast::Stub::Forecast, request, "Forecast");
}

absl::StatusOr<pb::GetStateResponse> MoecastClient::GetState(
    const pb::GetStateRequest& request) {
  return Unary(&pb::Moecast::Stub::GetState, request, "GetState");
}

absl::StatusOr<pb::GetHealthResponse> MoecastClient::GetHealth(const std::string& job_id) {
  pb::GetHealthRequest request;
  request.set_job_id(job_id);
  return Unary(&pb::Moecast::Stub::GetHealth, request, "GetHealth");
}

absl::StatusOr<pb::RecommendPlacementResponse> MoecastClient::RecommendPlacement(
    const pb::RecommendPlacementRequest& request) {
  return Unary(&pb::Moecast::Stub::RecommendPlacement, request, "RecommendPlacement");
}

absl::StatusOr<std::unique_ptr<IngestStream>> MoecastClient::OpenIngestStream() {
  std::unique_ptr<IngestStream> stream(new IngestStream());
  stream->target_ = options_.target;
  Prepare(&stream->context_, options_.stream_timeout);
  stream->writer_ = stub_->Ingest(&stream->context_, &stream->summary_);
  if (stream->writer_ == nullptr) {
    return absl::InternalError("Ingest: the stub returned no stream");
  }
  return stream;
}

absl::StatusOr<pb::IngestSummary> MoecastClient::IngestSteps(
    const std::string& job_id, absl::Span<const StepInput> steps, int batch_size) {
  if (batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size must be >= 1, got ", batch_size));
  }
  absl::StatusOr<std::unique_ptr<IngestStream>> stream = OpenIngestStream();
  if (!stream.ok()) return stream.status();
  if (absl::Status s = (*stream)->WriteSteps(job_id, steps, batch_size); !s.ok()) {
    return s;
  }
  return (*stream)->Finish();
}

absl::StatusOr<std::unique_ptr<WatchCall>> MoecastClient::Watch(
    const pb::WatchRequest& request) {
  std::unique_ptr<WatchCall> call(new WatchCall());
  call->target_ = options_.target;
  Prepare(&call->context_, options_.stream_timeout);
  call->reader_ = stub_->Watch(&call->context_, request);
  if (call->reader_ == nullptr) {
    return absl::InternalError("Watch: the stub returned no stream");
  }
  return call;
}

absl::StatusOr<std::unique_ptr<BackgroundWatch>> MoecastClient::StartWatch(
    const pb::WatchRequest& request, WatchCall::EventFn on_event) {
  if (!on_event) return absl::InvalidArgumentError("StartWatch: on_event is empty");
  absl::StatusOr<std::unique_ptr<WatchCall>> call = Watch(request);
  if (!call.ok()) return call.status();
  std::unique_ptr<BackgroundWatch> watch(new BackgroundWatch());
  watch->call_ = std::move(*call);
  BackgroundWatch* w = watch.get();
  watch->thread_ = std::thread(
      [w, fn = std::move(on_event)] { w->result_ = w->call_->Run(fn); });
  return watch;
}

}  // namespace moecast::grpc_api
