// MoecastClient: a C++ client of the moecast.v1 gRPC API, for schedulers and
// tools that talk to a moecastd server.
//
//   ClientOptions options;
//   options.target = "moecast.internal:50051";
//   options.auth_token = token;                  // optional bearer token
//   options.tls = true;                          // optional TLS / mTLS
//   options.root_ca_pem = ReadFile("ca.pem");
//   MOECAST_ASSIGN_OR_RETURN(auto client, MoecastClient::Connect(options));
//
//   moecast::v1::JobSpec spec;  spec.set_job_id("pretrain-a"); ...
//   MOECAST_RETURN_IF_ERROR(client->RegisterJob(spec).status());
//   MOECAST_ASSIGN_OR_RETURN(moecast::v1::IngestSummary summary,
//                            client->IngestSteps("pretrain-a", steps));
//   moecast::v1::ForecastRequest req;  req.set_job_id("pretrain-a");
//   MOECAST_ASSIGN_OR_RETURN(moecast::v1::ForecastResponse f, client->Forecast(req));
//
// Requests and responses are the moecast.v1 protos (this is the API's wire
// format; the engine's own types stay free of them). Every call maps the
// grpc::Status to an absl::Status with the same code and the server's
// message (status_conversion.h), so NOT_FOUND, INVALID_ARGUMENT,
// ALREADY_EXISTS, FAILED_PRECONDITION, RESOURCE_EXHAUSTED and
// UNAUTHENTICATED reach the caller as the server sent them. Transport errors
// (UNAVAILABLE, DEADLINE_EXCEEDED) name the RPC and the target.
//
// Thread-safety: MoecastClient is thread-safe (one channel, calls run
// concurrently). IngestStream is not thread-safe (one writer). WatchCall::Run
// runs on one thread; WatchCall::Cancel may be called from any thread.
#ifndef MOECAST_INTEGRATIONS_GRPC_CLIENT_H_
#define MOECAST_INTEGRATIONS_GRPC_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/ingest.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/sync_stream.h"
#include "moecast/v1/moecast.grpc.pb.h"

namespace moecast::grpc_api {

struct ClientOptions {
  // The server: "host:port" or any gRPC target URI ("dns:///host:port",
  // "unix:/path"). Required.
  std::string target;

  // Non-empty: every call carries "authorization: Bearer <auth_token>".
  // Printable ASCII without spaces. Sent as is over plaintext channels too;
  // use TLS for anything beyond a trusted network.
  std::string auth_token;

  // TLS for the channel. Off (default): plaintext.
  bool tls = false;
  // PEM contents (not file names) of the CA that signed the server's
  // certificate; empty: the system's root CAs. Needs tls.
  std::string root_ca_pem;
  // Mutual TLS: the client's certificate chain and private key, PEM, both or
  // neither. Needs tls.
  std::string client_cert_pem;
  std::string client_key_pem;
  // Non-empty: the name checked against the server's certificate instead of
  // the target's host (for a server reached by address whose certificate
  // names a host). Needs tls.
  std::string tls_server_name_override;

  // Deadline of each unary call (> 0). Short deadlines make an unreachable
  // server fail fast; long ones suit large Forecast/RecommendPlacement
  // answers on a busy server.
  absl::Duration timeout = absl::Seconds(30);
  // Deadline of a whole Ingest or Watch stream (> 0); infinite (default):
  // streams live until finished or cancelled.
  absl::Duration stream_timeout = absl::InfiniteDuration();
  // False (default): a call fails at once with UNAVAILABLE when the server
  // cannot be reached. True: it waits for a connection up to its deadline
  // (then DEADLINE_EXCEEDED), riding out server restarts.
  bool wait_for_ready = false;
  // Largest message sent or received, bytes (> 0). Match the server's
  // max_message_bytes; raise it for forecasts with long paths.
  int max_message_bytes = 64 << 20;
};

class MoecastClient;

// A client-streaming Ingest call: batches go out as Write is called, one
// IngestSummary comes back from Finish. Batches may name different jobs.
//
//   MOECAST_ASSIGN_OR_RETURN(auto stream, client->OpenIngestStream());
//   for (...) MOECAST_RETURN_IF_ERROR(stream->Write(batch));
//   MOECAST_ASSIGN_OR_RETURN(moecast::v1::IngestSummary s, stream->Finish());
//
// Destroying an unfinished stream cancels it (the server keeps what it had
// already applied).
class IngestStream {
 public:
  ~IngestStream();
  IngestStream(const IngestStream&) = delete;
  IngestStream& operator=(const IngestStream&) = delete;

  // Sends one batch. OK when it was handed to the transport (the server
  // reports per-step rejections in the summary). When the stream has broken
  // (the server ended it, e.g. NOT_FOUND for an unknown job, or the
  // connection failed) returns that error, and the stream is finished.
  // FAILED_PRECONDITION after Finish or a failed Write.
  absl::Status Write(const moecast::v1::IngestBatchRequest& batch);

  // Converts `steps` into batches of `batch_size` steps (>= 1) of job
  // `job_id` and writes them. Errors as Write; INVALID_ARGUMENT for
  // batch_size < 1.
  absl::Status WriteSteps(const std::string& job_id,
                          absl::Span<const StepInput> steps, int batch_size);

  // Closes the stream and returns the server's summary, or the stream's
  // error. FAILED_PRECONDITION if called twice or after a failed Write.
  absl::StatusOr<moecast::v1::IngestSummary> Finish();

  // Batches written so far.
  int64_t batches_written() const { return batches_written_; }

 private:
  friend class MoecastClient;
  IngestStream() = default;
  // Finishes the call and records its status.
  absl::Status FinishCall();

  std::string target_;
  grpc::ClientContext context_;
  moecast::v1::IngestSummary summary_;
  std::unique_ptr<grpc::ClientWriter<moecast::v1::IngestBatchRequest>> writer_;
  bool finished_ = false;
  int64_t batches_written_ = 0;
};

// A server-streaming Watch call, read on the caller's thread by Run and
// cancellable from any other thread.
//
//   MOECAST_ASSIGN_OR_RETURN(auto watch, client->Watch(request));
//   std::thread stopper([&] { ...; watch->Cancel(); });
//   absl::Status s = watch->Run([](const moecast::v1::Event& e) {
//     Handle(e);
//     return true;  // false: stop watching
//   });
class WatchCall {
 public:
  // Returns false to end the watch.
  using EventFn = std::function<bool(const moecast::v1::Event&)>;

  ~WatchCall();
  WatchCall(const WatchCall&) = delete;
  WatchCall& operator=(const WatchCall&) = delete;

  // Reads events and calls `on_event` for each, in order, until the stream
  // ends. Returns OK when the server ended it (server shutdown), when
  // `on_event` returned false, or when Cancel was called (before or during
  // Run); otherwise the stream's error: NOT_FOUND for an unknown or deleted
  // job, INVALID_ARGUMENT for a bad rebalance request, UNAVAILABLE, ...
  // FAILED_PRECONDITION if Run was already called.
  absl::Status Run(const EventFn& on_event);

  // Ends the watch: a blocked Run returns OK soon after. Thread-safe,
  // idempotent, may be called before Run.
  void Cancel();

  // Events delivered so far, and the sequence number of the last one (0
  // before any): resume with WatchRequest.after_seq = last_seq().
  int64_t events() const { return events_.load(); }
  int64_t last_seq() const { return last_seq_.load(); }

 private:
  friend class MoecastClient;
  WatchCall() = default;

  std::string target_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<moecast::v1::Event>> reader_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> ran_{false};
  std::atomic<int64_t> events_{0};
  std::atomic<int64_t> last_seq_{0};
};

// A Watch read on a background thread: `on_event` runs on that thread.
// Destroying it cancels the watch and joins the thread.
//
//   MOECAST_ASSIGN_OR_RETURN(auto watch, client->StartWatch(request, on_event));
//   ...
//   watch->Cancel();
//   absl::Status end = watch->Wait();   // OK after Cancel
class BackgroundWatch {
 public:
  ~BackgroundWatch();
  BackgroundWatch(const BackgroundWatch&) = delete;
  BackgroundWatch& operator=(const BackgroundWatch&) = delete;

  // Thread-safe, idempotent.
  void Cancel() { call_->Cancel(); }
  // Blocks until the watch has ended; returns what WatchCall::Run returned.
  // Thread-safe; every caller gets the same status.
  absl::Status Wait();

  const WatchCall& call() const { return *call_; }

 private:
  friend class MoecastClient;
  BackgroundWatch() = default;

  std::unique_ptr<WatchCall> call_;
  std::thread thread_;
  std::mutex mu_;
  absl::Status result_;  // set by the thread before it ends
  bool joined_ = false;  // guarded by mu_
};

class MoecastClient {
 public:
  // Validates `options` and creates the channel. Does not contact the server
  // (the first call connects). INVALID_ARGUMENT naming the field for: an
  // empty target; timeout, stream_timeout or max_message_bytes <= 0; an
  // auth_token with spaces or non-printable characters; root_ca_pem,
  // client_cert_pem, client_key_pem or tls_server_name_override set without
  // tls; client_cert_pem without client_key_pem or the reverse; a PEM field
  // that does not hold PEM ("-----BEGIN").
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MoecastClient>> Connect(
      const ClientOptions& options);

  MoecastClient(const MoecastClient&) = delete;
  MoecastClient& operator=(const MoecastClient&) = delete;

  // One method per unary RPC of moecast.v1.Moecast; errors as the proto
  // documents them, plus transport errors.
  absl::StatusOr<moecast::v1::RegisterJobResponse> RegisterJob(
      const moecast::v1::JobSpec& spec);
  absl::StatusOr<moecast::v1::ListJobsResponse> ListJobs();
  absl::StatusOr<moecast::v1::DeleteJobResponse> DeleteJob(const std::string& job_id);
  absl::StatusOr<moecast::v1::JobInfo> GetJobInfo(const std::string& job_id);
  absl::StatusOr<moecast::v1::FlushPendingResponse> FlushPending(
      const std::string& job_id);
  absl::StatusOr<moecast::v1::IngestBatchResponse> IngestBatch(
      const moecast::v1::IngestBatchRequest& request);
  absl::StatusOr<moecast::v1::ForecastResponse> Forecast(
      const moecast::v1::ForecastRequest& request);
  absl::StatusOr<moecast::v1::GetStateResponse> GetState(
      const moecast::v1::GetStateRequest& request);
  absl::StatusOr<moecast::v1::GetHealthResponse> GetHealth(const std::string& job_id);
  absl::StatusOr<moecast::v1::RecommendPlacementResponse> RecommendPlacement(
      const moecast::v1::RecommendPlacementRequest& request);

  // Opens a client-streaming Ingest call (see IngestStream). The call starts
  // at once; connection errors surface from the first Write or Finish.
  absl::StatusOr<std::unique_ptr<IngestStream>> OpenIngestStream();

  // Streams `steps` (engine StepInputs: counts L*M layer-major, optional
  // router logits and tokens) into job `job_id` in batches of `batch_size`
  // steps (>= 1) over one Ingest call and returns the server's summary
  // (per-step rejections are counted there, not errors). NOT_FOUND for an
  // unknown job, INVALID_ARGUMENT for batch_size < 1, transport errors.
  absl::StatusOr<moecast::v1::IngestSummary> IngestSteps(
      const std::string& job_id, absl::Span<const StepInput> steps,
      int batch_size = 256);

  // Starts a Watch call (see WatchCall); events are read by WatchCall::Run.
  absl::StatusOr<std::unique_ptr<WatchCall>> Watch(
      const moecast::v1::WatchRequest& request);

  // Starts a Watch read on a background thread that calls `on_event` per
  // event (see BackgroundWatch).
  absl::StatusOr<std::unique_ptr<BackgroundWatch>> StartWatch(
      const moecast::v1::WatchRequest& request, WatchCall::EventFn on_event);

  const ClientOptions& options() const { return options_; }

 private:
  explicit MoecastClient(const ClientOptions& options) : options_(options) {}

  // Sets the deadline, wait_for_ready and the authorization metadata.
  void Prepare(grpc::ClientContext* context, absl::Duration deadline) const;
  // One unary call: context, deadline, metadata, call, status conversion.
  template <typename Request, typename Response>
  absl::StatusOr<Response> Unary(
      grpc::Status (moecast::v1::Moecast::Stub::*rpc)(grpc::ClientContext*, const Request&,
                                                      Response*),
      const Request& request, const char* name);

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<moecast::v1::Moecast::Stub> stub_;
};

}  // namespace moecast::grpc_api

#endif  // MOECAST_INTEGRATIONS_GRPC_CLIENT_H_
