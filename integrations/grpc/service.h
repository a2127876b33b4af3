// MoecastService: the moecast.v1.Moecast gRPC service over an Engine.
//
// Each RPC converts the proto request to engine types, calls the engine and
// converts back; engine errors keep their code and message
// (status_conversion.h). Validation is the engine's: e.g. a step whose
// counts size does not match the job is INVALID_ARGUMENT with the engine's
// message. IngestBatch handles each step on its own and reports per step.
//
//   MoecastService service(engine.get());
//   builder.RegisterService(&service);
//   ...
//   service.BeginShutdown();   // ends Watch streams
//   server->Shutdown();
//
// Thread-safety: thread-safe (the engine is); RPCs run concurrently.
#ifndef MOECAST_INTEGRATIONS_GRPC_SERVICE_H_
#define MOECAST_INTEGRATIONS_GRPC_SERVICE_H_

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "moecast/v1/moecast.grpc.pb.h"

namespace moecast::grpc_api {

struct ServiceOptions {
  // How often Watch polls the engine for new events.
  absl::Duration watch_poll_interval = absl::Milliseconds(20);
  // Most events Watch reads per poll.
  int watch_batch = 256;
  // Rejections kept in Ingest's summary.
  int max_summary_rejections = 10;
  // Non-empty: calls must carry "authorization: Bearer <auth_token>".
  std::string auth_token;
  // Most Ingest and Watch streams open at once (server-wide); one more is
  // RESOURCE_EXHAUSTED.
  int max_concurrent_streams = 256;
  // Optional: called after the engine calls of each RPC that may write
  // (RegisterJob, DeleteJob, IngestBatch, each batch of an Ingest stream,
  // FlushPending) and before the RPC answers; an error replaces the answer.
  // moecastd sets it to the write-ahead log's commit (fdatasync under
  // --wal_sync=batch), so that one fdatasync covers a whole batch.
  std::function<absl::Status()> commit_writes;
};

// Counters of the service since it started, for metrics.
struct ServiceStats {
  int64_t steps_received = 0;   // steps in IngestBatch and Ingest calls
  int64_t steps_committed = 0;  // steps those calls committed
  // Rejected steps by gRPC status code name ("INVALID_ARGUMENT", ...).
  std::map<std::string, int64_t> rejected_steps_by_code;
  int64_t unauthenticated_calls = 0;
  int64_t refused_streams = 0;  // over max_concurrent_streams
  // The balancedness of the last plan recommended per job.
  std::map<std::string, double> last_plan_balancedness;
};

class MoecastService final : public moecast::v1::Moecast::Service {
 public:
  // `engine` is not owned and must outlive the service.
  explicit MoecastService(Engine* engine, ServiceOptions options = {});

  // Makes running and future Watch calls end (OK) so that a server shutdown
  // does not wait for them.
  void BeginShutdown() { shutting_down_.store(true); }

  // A snapshot of the counters.
  ServiceStats Stats() const;

  grpc::Status RegisterJob(grpc::ServerContext* context,
                           const moecast::v1::RegisterJobRequest* request,
                           moecast::v1::RegisterJobResponse* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context,
                        const moecast::v1::ListJobsRequest* request,
                        moecast::v1::ListJobsResponse* response) override;
  grpc::Status DeleteJob(grpc::ServerContext* context,
                         const moecast::v1::DeleteJobRequest* request,
                         moecast::v1::DeleteJobResponse* response) override;
  grpc::Status GetJobInfo(grpc::ServerContext* context,
                          const moecast::v1::GetJobInfoRequest* request,
                          moecast::v1::JobInfo* response) override;
  grpc::Status FlushPending(grpc::ServerContext* context,
                            const moecast::v1::FlushPendingRequest* request,
                            moecast::v1::FlushPendingResponse* response) override;
  grpc::Status GetState(grpc::ServerContext* context,
                        const moecast::v1::GetStateRequest* request,
                        moecast::v1::GetStateResponse* response) override;
  grpc::Status IngestBatch(grpc::ServerContext* context,
                           const moecast::v1::IngestBatchRequest* request,
                           moecast::v1::IngestBatchResponse* response) override;
  grpc::Status Ingest(grpc::ServerContext* context,
                      grpc::ServerReader<moecast::v1::IngestBatchRequest>* reader,
                      moecast::v1::IngestSummary* response) override;
  grpc::Status Forecast(grpc::ServerContext* context,
                        const moecast::v1::ForecastRequest* request,
                        moecast::v1::ForecastResponse* response) override;
  grpc::Status GetHealth(grpc::ServerContext* context,
                         const moecast::v1::GetHealthRequest* request,
                         moecast::v1::GetHealthResponse* response) override;
  grpc::Status RecommendPlacement(
      grpc::ServerContext* context,
      const moecast::v1::RecommendPlacementRequest* request,
      moecast::v1::RecommendPlacementResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context,
                     const moecast::v1::WatchRequest* request,
                     grpc::ServerWriter<moecast::v1::Event>* writer) override;

 private:
  // Holds one of the max_concurrent_streams slots for a streaming call.
  class StreamSlot {
   public:
    StreamSlot(MoecastService* service, const char* rpc);
    ~StreamSlot();
    StreamSlot(const StreamSlot&) = delete;
    StreamSlot& operator=(const StreamSlot&) = delete;
    // RESOURCE_EXHAUSTED when no slot was free.
    const absl::Status& status() const { return status_; }
    bool ok() const { return status_.ok(); }

   private:
    MoecastService* const service_;
    absl::Status status_;
  };

  // `s`, or (when `s` is OK) the error of options_.commit_writes.
  absl::Status Committed(absl::Status s) const;

  // UNAUTHENTICATED unless the call carries the configured bearer token.
  grpc::Status Authenticate(const grpc::ServerContext* context) const;

  Engine* const engine_;
  const ServiceOptions options_;
  std::atomic<bool> shutting_down_{false};
  std::atomic<int> open_streams_{0};

  // Counters (see ServiceStats). Codes index rejected_by_code_.
  static constexpr int kNumCodes = 17;
  std::atomic<int64_t> steps_received_{0};
  std::atomic<int64_t> steps_committed_{0};
  std::atomic<int64_t> rejected_by_code_[kNumCodes] = {};
  mutable std::atomic<int64_t> unauthenticated_{0};
  std::atomic<int64_t> refused_streams_{0};
  mutable std::mutex plans_mu_;
  // Guarded by plans_mu_; entries of deleted jobs are dropped by Stats().
  mutable std::map<std::string, double> last_plan_balancedness_;

  void CountBatch(const moecast::v1::IngestBatchRequest& request,
                  const moecast::v1::IngestBatchResponse& response);
};

// Conversions (exposed for tests and other front ends).
JobSpec JobSpecFromProto(const moecast::v1::JobSpec& proto);
// The engine's placement request from the proto (INVALID_ARGUMENT for an
// unknown mode).
absl::StatusOr<PlacementRequest> PlacementRequestFromProto(
    const moecast::v1::RecommendPlacementRequest& request);
// Applies one batch to the engine. NOT_FOUND if the job is unknown (nothing
// ingested); otherwise OK with one result per step.
absl::Status ApplyBatch(Engine& engine, const moecast::v1::IngestBatchRequest& request,
                        moecast::v1::IngestBatchResponse* response);

}  // namespace moecast::grpc_api

#endif  // MOECAST_INTEGRATIONS_GRPC_SERVICE_H_
