#include "integrations/grpc/service.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/health/ecology/phase.h"
#include "engine/status_macros.h"
#include "integrations/grpc/status_conversion.h"

namespace moecast::grpc_api {
namespace {

namespace pb = ::moecast::v1;

pb::LoadState ToProto(LoadState s) {
  return s == LoadState::kStable ? pb::LOAD_STATE_STABLE : pb::LOAD_STATE_TRANSIENT;
}

pb::Event::Kind ToProto(EventKind k) {
  switch (k) {
    case EventKind::kStateChange: return pb::Event::KIND_STATE_CHANGE;
    case EventKind::kPhaseChange: return pb::Event::KIND_PHASE_CHANGE;
    case EventKind::kExpertDead: return pb::Event::KIND_EXPERT_DEAD;
    case EventKind::kExpertRevived: return pb::Event::KIND_EXPERT_REVIVED;
    case EventKind::kShift: return pb::Event::KIND_SHIFT;
  }
  return pb::Event::KIND_UNSPECIFIED;
}

pb::EParameter::Kind ToProto(EKind k) {
  switch (k) {
    case EKind::kFinite: return pb::EParameter::KIND_FINITE;
    case EKind::kUnbounded: return pb::EParameter::KIND_UNBOUNDED;
    case EKind::kIndeterminate: return pb::EParameter::KIND_INDETERMINATE;
    case EKind::kMissing: return pb::EParameter::KIND_MISSING;
  }
  return pb::EParameter::KIND_UNSPECIFIED;
}

void ToProto(const CommittedStep& c, pb::CommittedStep* out) {
  out->set_step(c.step);
  out->set_incomplete(c.incomplete);
  out->set_gap_before(c.gap_before);
}

void ToProto(const Event& e, pb::Event* out) {
  out->set_seq(e.seq);
  out->set_step(e.step);
  out->set_kind(ToProto(e.kind));
  out->set_layer(e.layer);
  out->set_from(e.from);
  out->set_to(e.to);
  out->set_value(e.value);
  out->set_detail(e.detail);
}

void ToProto(const Plan& plan, pb::Plan* out) {
  out->set_mode(std::string(PlacementModeName(plan.mode)));
  out->set_num_layers(plan.num_layers);
  out->set_num_experts(plan.num_experts);
  out->set_num_slots(plan.num_slots);
  out->set_num_gpus(plan.num_gpus);
  out->mutable_phy2log()->Add(plan.phy2log.begin(), plan.phy2log.end());
  out->mutable_log2phy()->Add(plan.log2phy.begin(), plan.log2phy.end());
  out->set_max_replicas(plan.max_replicas);
  out->mutable_logcnt()->Add(plan.logcnt.begin(), plan.logcnt.end());
  out->mutable_gpu_loads()->Add(plan.gpu_loads.begin(), plan.gpu_loads.end());
  out->set_balancedness(plan.balancedness);
  out->set_max_over_mean(plan.max_over_mean);
  out->set_moved_experts(plan.moved_experts);
  out->set_moved_bytes(plan.moved_bytes);
  out->set_forced_moves(plan.forced_moves);
  for (const Transfer& t : plan.transfers) {
    pb::Transfer* o = out->add_transfers();
    o->set_layer(t.layer);
    o->set_expert(t.expert);
    o->set_from_gpu(t.from_gpu);
    o->set_to_gpu(t.to_gpu);
    o->set_bytes(t.bytes);
    o->set_stage(t.stage);
  }
  out->set_num_stages(plan.num_stages);
}

void ToProto(const JobSpec& spec, pb::JobSpec* out) {
  out->set_job_id(spec.job_id);
  out->set_num_layers(spec.num_layers);
  out->set_num_experts(spec.num_experts);
  out->set_top_k(spec.top_k);
  out->set_num_sources(spec.num_sources);
  switch (spec.step_unit) {
    case StepUnit::kOptimizerStep: out->set_step_unit(pb::STEP_UNIT_OPTIMIZER_STEP); break;
    case StepUnit::kForwardPass: out->set_step_unit(pb::STEP_UNIT_FORWARD_PASS); break;
    case StepUnit::kInterval: out->set_step_unit(pb::STEP_UNIT_INTERVAL); break;
  }
  out->set_router(spec.router == RouterKind::kSigmoidWithBias
                      ? pb::ROUTER_KIND_SIGMOID_WITH_BIAS
                      : pb::ROUTER_KIND_SOFTMAX);
  pb::TrainingHyperparams* h = out->mutable_hyperparameters();
  if (spec.hyper.aux_loss_coef) h->set_aux_loss_coef(*spec.hyper.aux_loss_coef);
  if (spec.hyper.router_temperature) h->set_router_temperature(*spec.hyper.router_temperature);
  if (spec.hyper.entropy_weight) h->set_entropy_weight(*spec.hyper.entropy_weight);
  if (spec.hyper.oracle_weight) h->set_oracle_weight(*spec.hyper.oracle_weight);
  if (spec.hyper.balance_weight) h->set_balance_weight(*spec.hyper.balance_weight);
  for (const std::string& name : spec.predictors) out->add_predictors(name);
  out->mutable_horizons()->Add(spec.horizons.begin(), spec.horizons.end());
  out->set_disable_forecasting(!spec.forecasting);
  out->set_disable_health(!spec.health);
}

void ToProto(const ShiftSummary& s, pb::ShiftSummary* out) {
  out->set_shifts(s.shifts);
  if (s.last_step) out->set_last_step(*s.last_step);
  if (s.last_change_step) out->set_last_change_step(*s.last_change_step);
  out->set_last_size(s.last_size);
}

void ToProto(const AnalysisProgress& p, pb::AnalysisProgress* out) {
  out->set_as_of_step(p.as_of_step);
  out->set_committed_step(p.committed_step);
  out->set_lag_steps(p.lag_steps);
  out->set_scoring_shed_steps(p.scoring_shed_steps);
  out->set_coalesced_steps(p.coalesced_steps);
  out->set_degraded_steps(p.degraded_steps());
}

// How long an answer may wait for analysis: until the call's deadline (none:
// until analysis has caught up), or not at all with allow_stale.
Freshness FreshnessOf(const grpc::ServerContext* context, bool allow_stale) {
  Freshness f;
  f.allow_stale = allow_stale;
  const std::chrono::system_clock::time_point d = context->deadline();
  if (d != std::chrono::system_clock::time_point::max()) f.deadline = absl::FromChrono(d);
  return f;
}

void ToProto(const PlacementRecommendation& r, pb::RecommendPlacementResponse* response) {
  response->set_as_of_step(r.as_of_step);
  ToProto(r.analysis, response->mutable_analysis());
  response->set_job_state(ToProto(r.job_state));
  response->set_horizon(r.horizon);
  response->mutable_upper_bound_layers()->Add(r.upper_bound_layers.begin(),
                                              r.upper_bound_layers.end());
  response->mutable_loads()->Add(r.loads.begin(), r.loads.end());
  ToProto(r.plan, response->mutable_plan());
  if (r.current) ToProto(*r.current, response->mutable_current());
  if (r.decision) {
    const RebalanceDecision& d = *r.decision;
    pb::RebalanceDecision* o = response->mutable_decision();
    o->set_rebalance(d.rebalance);
    o->set_step_time_current_s(d.step_time_current_s);
    o->set_step_time_proposed_s(d.step_time_proposed_s);
    o->set_saved_s(d.saved_s);
    o->set_migration_s(d.migration_s);
    o->set_cost_s(d.cost_s);
    o->set_required_s(d.required_s);
    o->set_moved_experts(d.moved_experts);
    o->set_num_stages(d.num_stages);
    o->set_reason(d.reason);
  }
}

// Compares in time independent of where the strings differ, so that
// response timing does not reveal how much of a guessed token was right (the
// length is not secret).
bool SameSecret(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

}  // namespace

JobSpec JobSpecFromProto(const pb::JobSpec& p) {
  JobSpec spec;
  spec.job_id = p.job_id();
  spec.num_layers = p.num_layers();
  spec.num_experts = p.num_experts();
  spec.top_k = p.top_k();
  spec.num_sources = p.num_sources() == 0 ? 1 : p.num_sources();
  switch (p.step_unit()) {
    case pb::STEP_UNIT_FORWARD_PASS: spec.step_unit = StepUnit::kForwardPass; break;
    case pb::STEP_UNIT_INTERVAL: spec.step_unit = StepUnit::kInterval; break;
    default: spec.step_unit = StepUnit::kOptimizerStep; break;
  }
  spec.router = p.router() == pb::ROUTER_KIND_SIGMOID_WITH_BIAS
                    ? RouterKind::kSigmoidWithBias
                    : RouterKind::kSoftmax;
  const pb::TrainingHyperparams& h = p.hyperparameters();
  if (h.has_aux_loss_coef()) spec.hyper.aux_loss_coef = h.aux_loss_coef();
  if (h.has_router_temperature()) spec.hyper.router_temperature = h.router_temperature();
  if (h.has_entropy_weight()) spec.hyper.entropy_weight = h.entropy_weight();
  if (h.has_oracle_weight()) spec.hyper.oracle_weight = h.oracle_weight();
  if (h.has_balance_weight()) spec.hyper.balance_weight = h.balance_weight();
  spec.predictors.assign(p.predictors().begin(), p.predictors().end());
  spec.horizons.assign(p.horizons().begin(), p.horizons().end());
  spec.forecasting = !p.disable_forecasting();
  spec.health = !p.disable_health();
  return spec;
}

absl::Status ApplyBatch(Engine& engine, const pb::IngestBatchRequest& request,
                        pb::IngestBatchResponse* response) {
  // An unknown job fails the whole call; everything else is per step. (A
  // stale progress read is the cheapest lookup: it takes no job lock.)
  Freshness stale;
  stale.allow_stale = true;
  if (absl::Status s = engine.AwaitAnalysis(request.job_id(), stale).status(); !s.ok()) {
    return s;
  }
  int rejected = 0;
  for (const pb::Step& step : request.steps()) {
    pb::StepResult* result = response->add_results();
    result->set_step(step.step());
    result->set_source(step.source());
    StepInput in;
    in.step = step.step();
    in.source = step.source();
    in.counts = absl::MakeConstSpan(step.counts().data(), step.counts().size());
    in.router_logits =
        absl::MakeConstSpan(step.router_logits().data(), step.router_logits().size());
    if (step.has_tokens()) in.tokens = step.tokens();
    absl::StatusOr<IngestResult> r = engine.Ingest(request.job_id(), in);
    if (!r.ok()) {
      ++rejected;
      result->set_outcome(pb::STEP_OUTCOME_REJECTED);
      result->set_error_code(static_cast<int>(ToGrpcCode(r.status().code())));
      result->set_error_message(std::string(r.status().message()));
      continue;
    }
    switch (r->outcome) {
      case IngestOutcome::kCommitted: result->set_outcome(pb::STEP_OUTCOME_COMMITTED); break;
      case IngestOutcome::kPending: result->set_outcome(pb::STEP_OUTCOME_PENDING); break;
      case IngestOutcome::kDuplicate: result->set_outcome(pb::STEP_OUTCOME_DUPLICATE); break;
    }
    result->set_note(r->note);
    for (const CommittedStep& c : r->committed) {
      ToProto(c, result->add_committed());
      ToProto(c, response->add_committed());
    }
  }
  response->set_rejected(rejected);
  return absl::OkStatus();
}

// Every moecast.v1 handler starts with this.
#define MOECAST_RETURN_IF_UNAUTHENTICATED(context)                 \
  do {                                                            \
    if (grpc::Status auth_ = Authenticate(context); !auth_.ok()) { \
      return auth_;                                               \
    }                                                             \
  } while (0)

MoecastService::MoecastService(Engine* engine, ServiceOptions options)
    : engine_(engine), options_(std::move(options)) {}

absl::Status MoecastService::Committed(absl::Status s) const {
  if (!options_.commit_writes) return s;
  absl::Status c = options_.commit_writes();
  return s.ok() ? c : s;
}

grpc::Status MoecastService::Authenticate(const grpc::ServerContext* context) const {
  if (options_.auth_token.empty()) return grpc::Status::OK;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    unauthenticated_.fetch_add(1, std::memory_order_relaxed);
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing 'authorization: Bearer <token>' metadata");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kBearer = "Bearer ";
  if (value.substr(0, kBearer.size()) != kBearer ||
      !SameSecret(value.substr(kBearer.size()), options_.auth_token)) {
    unauthenticated_.fetch_add(1, std::memory_order_relaxed);
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the bearer token does not match");
  }
  return grpc::Status::OK;
}

MoecastService::StreamSlot::StreamSlot(MoecastService* service, const char* rpc)
    : service_(service) {
  const int open = service_->open_streams_.fetch_add(1) + 1;
  if (open > service_->options_.max_concurrent_streams) {
    service_->refused_streams_.fetch_add(1, std::memory_order_relaxed);
    status_ = absl::ResourceExhaustedError(absl::StrCat(
        rpc, ": ", open - 1, " streams are open, the limit max_concurrent_streams = ",
        service_->options_.max_concurrent_streams));
  }
}

void MoecastService::CountBatch(const pb::IngestBatchRequest& request,
                                const pb::IngestBatchResponse& response) {
  steps_received_.fetch_add(request.steps_size(), std::memory_order_relaxed);
  steps_committed_.fetch_add(response.committed_size(), std::memory_order_relaxed);
  if (response.rejected() == 0) return;
  for (const pb::StepResult& r : response.results()) {
    if (r.outcome() == pb::STEP_OUTCOME_REJECTED && r.error_code() >= 0 &&
        r.error_code() < kNumCodes) {
      rejected_by_code_[r.error_code()].fetch_add(1, std::memory_order_relaxed);
    }
  }
}

ServiceStats MoecastService::Stats() const {
  ServiceStats s;
  s.steps_received = steps_received_.load();
  s.steps_committed = steps_committed_.load();
  for (int code = 0; code < kNumCodes; ++code) {
    const int64_t n = rejected_by_code_[code].load();
    if (n == 0) continue;
    s.rejected_steps_by_code[absl::StatusCodeToString(static_cast<absl::StatusCode>(code))] = n;
  }
  s.unauthenticated_calls = unauthenticated_.load();
  s.refused_streams = refused_streams_.load();
  const std::vector<std::string> jobs = engine_->ListJobs();  // sorted
  std::lock_guard<std::mutex> lock(plans_mu_);
  for (auto it = last_plan_balancedness_.begin(); it != last_plan_balancedness_.end();) {
    if (std::binary_search(jobs.begin(), jobs.end(), it->first)) {
      ++it;
    } else {
      it = last_plan_balancedness_.erase(it);
    }
  }
  s.last_plan_balancedness = last_plan_balancedness_;
  return s;
}

MoecastService::StreamSlot::~StreamSlot() { service_->open_streams_.fetch_sub(1); }

grpc::Status MoecastService::RegisterJob(grpc::ServerContext* context,
                                         const pb::RegisterJobRequest* request,
                                         pb::RegisterJobResponse*) {
  MOECAST_RETURN_IF_UNAUTHENTICATED(context);
  return ToGrpcStatus(Committed(engine_->RegisterJob(JobSpecFromProto(request->spec()))));
}

grpc::Status MoecastService::ListJobs(grpc::ServerContext* context, const pb::ListJobsRequest*,
                                      pb::ListJobsResponse* response) {
  MOECAST_RETURN_IF_UNAUTHENTICATED(context);
  for (const std::string& id : engine_->ListJobs()) response->add_job_ids(id);
  return grpc::Status::OK;
}

grpc::Status MoecastService::DeleteJob(grpc::ServerContext* context,
                                       const pb::DeleteJobRequest* request,
                                       pb::DeleteJobResponse*) {
  MOECAST_RETURN_IF_UNAUTHENTICATED(context);
  return ToGrpcStatus(Committed(engine_->DeleteJob(request->job_id())));
}

grpc::Status MoecastService::IngestBatch(grpc::ServerContext* context,
                                         const pb::IngestBatchRequest* request,
                                         pb::IngestBatchResponse* response) {
  MOECAST_RETURN_IF_UNAUTHENTICATED(context);
  absl::Status s = ApplyBatch(*engine_, *request, response);
  if (s.ok()) CountBatch(*request, *response);
  if (s.ok()) s = Committed(s);
  return ToGrpcStatus(s);
}

grpc::Status MoecastService::Ingest(grpc::ServerContext* context,
                                    grpc::ServerReader<pb::IngestBatchRequest>* reader,
                                    pb::IngestSummary* summary) {
  MOECAST_RETURN_IF_UNAUTHENTICATED(context);
  StreamSlot slot(this, "Ingest");
  if (!slot.ok()) return ToGrpcStatus(slot.status());
  pb::IngestBatchRequest request;
  while (reader->Read(&request)) {
    pb::IngestBatchResponse batch;
    absl::Status s = ApplyBatch(*engine_, request, &batch);
    if (s.ok()) s = Committed(s);
    if (!s.ok()) return ToGrpcStatus(s);
    CountBatch(request, batch);
    summary->set_batches(summary->batches() + 1);
    summary->set_steps(summary->steps() + request.steps_size());
    summary->set_committed(summary->committed() + batch.committed_size());
    for (const pb::StepResult& r : batch.results()) {
      switch (r.outcome()) {
        case pb::STEP_OUTCOME_DUPLICATE:
          summary->set_duplicates(summary->duplicates() + 1);
          break;
        case pb::STEP_OUTCOME_PENDING:
          summary->set_pending(summary->pending() + 1);
          break;
        case pb::STEP_OUTCOME_REJECTED:
          summary->set_rejected(summary->rejected() + 1);
          if (summary->first_rejections_size() < options_.max_summary_rejections) {
            *summary->add_first_rejections() = r;
          }
          break;
        default:
          break;
      }
    }
  }
  return grpc::Status::OK;
}

grpc::Status MoecastService::GetJobInfo(grpc::ServerContext* context,
                                        const pb::GetJobInfoRequest* request,
                                        pb::JobInfo* response) {
  MOECAST_RETURN_IF_UNAUTHENTICATED(context);
  absl::StatusOr<JobInfo> info = engine_->GetJobInfo(request->job_id());
  if (!info.ok()) return ToGrpcStatus(info.status());
  ToProto(info->spec, response->mutable_spec());
  response->set_committed_steps(info->committed_steps);
  if (info->first_step) response->set_first_step(*info->first_step);
  if (info->last_step) response->set_last_step(*info->last_step);
  response->set_gaps(info->gaps);
  response->set_missing_steps(info->missing_steps);
  response->set_incomplete_steps(info->incomplete_steps);
  response->set_duplicate_calls(info->duplicate_calls);
  response->set_rejected_calls(info->rejected_calls);
  response->set_pending_steps(info->pending_steps);
  response->set_tokens(info->tokens);
  response->set_history_bytes(info->history_bytes);
  response->set_forecast_bytes(info->forecast_bytes);
  response->set_idle_seconds(absl::ToDoubleSeconds(info->idle));
  response->set_analysed_steps(info->analysed_steps);
  if (info->last_analysed_step) response->set_last_analysed_step(*info->last_analysed_step);
  response->set_analysis_lag_steps(info->analysis_lag_steps);
  response->set_scoring_shed_steps(info->scoring_shed_steps);
  response->set_coalesced_steps(info->coalesced_steps);
  const absl::Duration expiry = engine_->options().idle_job_expiry;
  if (expiry != absl::InfiniteDuration()) {
    response->set_expires_after_idle_seconds(absl::ToDoubleSeconds(expiry));
  }
  return grpc::Status::OK;
}

grpc::Status MoecastService::FlushPending(grpc::ServerContext* context,
                                          const pb::FlushPendingRequest* request,
                                          pb::FlushPendingResponse* response) {
  MOECAST_RETURN_IF_UNAUTHENTICATED(context);
  absl::StatusOr<std::vector<CommittedStep>> r = engine_->FlushPending(request->job_id());
  if (!r.ok()) return ToGrpcStatus(r.status());
  if (absl::Status s = Committed(absl::OkStatus()); !s.ok()) return ToGrpcStatus(s);
  for (const CommittedStep& c : *r) ToProto(c, response->add_committed());
  return grpc::Status::OK;
}

grpc::Status MoecastService::GetState(grpc::ServerContext* context,
                                      const pb::GetStateRequest* request,
                                      pb::GetStateResponse* response) {
  MOECAST_RETURN_IF_UNAUTHENTICATED(context);
  absl::StatusOr<StateReport> r =
      engine_->GetState(request->job_id(), FreshnessOf(context, request->allow_stale()));
  if (!r.ok()) return ToGrpcStatus(r.status());
  response->set_as_of_step(r->as_of_step);
  ToProto(r->analysis, response->mutable_analysis());
  response->set_job_state(ToProto(r->job_state));
  ToProto(r->job_shifts, response->mutable_job_shifts());
  for (size_t l = 0; l < r->layers.size(); ++l) {
    const StateSignals& sig = r->layers[l];
    pb::LayerState* out = response->add_layers();
    if (l < r->layer_shifts.size()) ToProto(r->layer_shifts[l], out->mutable_shifts());
    out->set_layer(static_cast<int>(l));
    out->set_state(ToProto(sig.state));
    out->set_state_since_step(sig.state_since_step);
    out->set_window_steps(sig.window_steps);
    if (sig.drift_ratio) out->set_drift_ratio(*sig.drift_ratio);
    if (sig.dispersion) out->set_dispersion(*sig.dispersion);
    if (sig.half_drift) out->set_half_drift(*sig.half_drift);
    if (request->per_expert()) {
      out->mutable_variance_10()->Add(sig.variance_10.begin(), sig.variance_10.end());
      out->mutable_range_10()->Add(sig.range_10.begin(), sig.range_10.end());
      out->mutable_variance_w()->Add(sig.variance_w.begin(), sig.variance_w.end());
      out->mutable_range_w()->Add(sig.range_w.begin(), sig.range_w.end());
    }
  }
  return grpc::Status::OK;
}

grpc::Status MoecastService::Forecast(grpc::ServerContext* context,
                                      const pb::ForecastRequest* request,
                                      pb::ForecastResponse* response) {
  MOECAST_RETURN_IF_UNAUTHENTICATED(context);
  ForecastRequest req;
  req.horizons.assign(request->horizons().begin(), request->horizons().end());
  if (!request->predictor().empty()) req.predictor = request->predictor();
  if (request->interval_level() != 0) req.interval_level = request->interval_level();
  req.path_steps = request->path_steps();  // the engine caps it (max_path_steps)
  req.layers.assign(request->layers().begin(), request->layers().end());
  req.freshness = FreshnessOf(context, request->allow_stale());
  absl::StatusOr<ForecastResult> r = engine_->Forecast(request->job_id(), req);
  if (!r.ok()) return ToGrpcStatus(r.status());
  response->set_as_of_step(r->as_of_step);
  ToProto(r->analysis, response->mutable_analysis());
  response->set_job_state(ToProto(r->job_state));
  for (const LayerForecast& lf : r->layers) {
    pb::LayerForecast* out = response->add_layers();
    out->set_layer(lf.layer);
    out->set_state(ToProto(lf.state));
    if (lf.drift_ratio) out->set_drift_ratio(*lf.drift_ratio);
    for (const HorizonForecast& hf : lf.horizons) {
      pb::HorizonForecast* h = out->add_horizons();
      h->set_horizon(hf.horizon);
      h->set_predictor(hf.predictor);
      h->mutable_means()->Add(hf.mean.begin(), hf.mean.end());
      h->mutable_lower()->Add(hf.lower.begin(), hf.lower.end());
      h->mutable_upper()->Add(hf.upper.begin(), hf.upper.end());
    }
    out->set_path_predictor(lf.path_predictor);
    out->mutable_path()->Add(lf.path.begin(), lf.path.end());
  }
  return grpc::Status::OK;
}

grpc::Status MoecastService::GetHealth(grpc::ServerContext* context,
                                       const pb::GetHealthRequest* request,
                                       pb::GetHealthResponse* response) {
  MOECAST_RETURN_IF_UNAUTHENTICATED(context);
  absl::StatusOr<HealthReport> r =
      engine_->Health(request->job_id(), FreshnessOf(context, request->allow_stale()));
  if (!r.ok()) return ToGrpcStatus(r.status());
  response->set_as_of_step(r->as_of_step);
  ToProto(r->analysis, response->mutable_analysis());
  pb::EParameter* e = response->mutable_e();
  e->set_kind(ToProto(r->e.kind));
  if (r->e.value) e->set_value(*r->e.value);
  for (const std::string& m : r->e.missing) e->add_missing(m);
  e->set_warn_below(r->e.warn_below);
  e->set_below_threshold(r->e.below_threshold);
  e->set_message(r->e.message);
  for (size_t l = 0; l < r->layers.size(); ++l) {
    const HealthWindow& w = r->layers[l];
    pb::LayerHealth* out = response->add_layers();
    out->set_layer(static_cast<int>(l));
    out->set_window_end_step(w.step);
    out->set_window_steps(w.steps);
    out->set_has_gamma(w.gamma.has_value());
    out->set_gamma_status(w.gamma_status);
    if (w.gamma) {
      out->set_gamma_f(w.gamma->gamma_f);
      out->set_gamma_at_bound(w.gamma->at_lower_bound || w.gamma->at_upper_bound);
      out->set_gamma_weakly_identified(w.gamma->weakly_identified);
      out->set_gamma_converged(w.gamma->converged);
      out->set_ci_low_f(w.gamma->ci_low_f);
      out->set_ci_high_f(w.gamma->ci_high_f);
      out->set_ci_level(w.gamma->ci_level);
      out->set_r2(w.gamma->r2);
      out->set_temperature(w.gamma->temperature);
    }
    out->set_phase(std::string(PhaseName(w.phase)));
    out->set_max_over_mean(w.imbalance.max_over_mean);
    out->set_coefficient_of_variation(w.imbalance.coefficient_of_variation);
    out->set_normalized_entropy(w.imbalance.normalized_entropy);
    for (int d : w.dead_experts) out->add_dead_experts(d);
  }
  return grpc::Status::OK;
}

absl::StatusOr<PlacementRequest> PlacementRequestFromProto(
    const pb::RecommendPlacementRequest& request) {
  PlacementRequest req;
  req.num_slots = request.num_slots();
  req.num_groups = request.num_groups() == 0 ? 1 : request.num_groups();
  req.num_nodes = request.num_nodes() == 0 ? 1 : request.num_nodes();
  req.num_gpus = request.num_gpus();
  req.excluded_gpus.assign(request.excluded_gpus().begin(), request.excluded_gpus().end());
  req.current_phy2log.assign(request.current_phy2log().begin(),
                             request.current_phy2log().end());
  if (!request.mode().empty()) {
    MOECAST_ASSIGN_OR_RETURN(req.options.mode, ParsePlacementMode(request.mode()));
  }
  if (request.has_move_budget()) req.options.move_budget = request.move_budget();
  if (request.max_extra_experts_per_gpu() != 0) {
    req.options.max_extra_experts_per_gpu = request.max_extra_experts_per_gpu();
  }
  req.options.bytes_per_expert = request.bytes_per_expert();
  if (request.horizon() != 0) req.horizon = request.horizon();
  if (!request.predictor().empty()) req.predictor = request.predictor();
  req.upper_bounds_when_transient = !request.means_only();
  if (request.interval_level() != 0) req.interval_level = request.interval_level();
  if (request.has_migration()) {
    const pb::MigrationModel& m = request.migration();
    MigrationModel model;
    model.bytes_per_expert = m.bytes_per_expert();
    model.intra_node_bandwidth = m.intra_node_bandwidth();
    model.inter_node_bandwidth = m.inter_node_bandwidth();
    model.tokens_per_step = m.tokens_per_step();
    model.time_per_token_s = m.time_per_token_s();
    model.horizon_steps = m.horizon_steps();
    model.overlap = m.overlap();
    if (m.has_overlap_cost_fraction()) model.overlap_cost_fraction = m.overlap_cost_fraction();
    if (m.has_transient_margin()) model.transient_margin = m.transient_margin();
    req.migration = model;
  }
  return req;
}

grpc::Status MoecastService::RecommendPlacement(
    grpc::ServerContext* context, const pb::RecommendPlacementRequest* request,
    pb::RecommendPlacementResponse* response) {
  MOECAST_RETURN_IF_UNAUTHENTICATED(context);
  absl::StatusOr<PlacementRequest> req = PlacementRequestFromProto(*request);
  if (!req.ok()) return ToGrpcStatus(req.status());
  req->freshness = FreshnessOf(context, request->allow_stale());
  absl::StatusOr<PlacementRecommendation> r =
      engine_->RecommendPlacement(request->job_id(), *req);
  if (!r.ok()) return ToGrpcStatus(r.status());
  ToProto(*r, response);
  {
    std::lock_guard<std::mutex> lock(plans_mu_);
    last_plan_balancedness_[request->job_id()] = r->plan.balancedness;
  }
  return grpc::Status::OK;
}

grpc::Status MoecastService::Watch(grpc::ServerContext* context,
                                   const pb::WatchRequest* request,
                                   grpc::ServerWriter<pb::Event>* writer) {
  MOECAST_RETURN_IF_UNAUTHENTICATED(context);
  StreamSlot slot(this, "Watch");
  if (!slot.ok()) return ToGrpcStatus(slot.status());
  if (request->after_seq() < 0) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("after_seq = ", request->after_seq(), " must be >= 0")));
  }
  // Rebalance checks, when asked for.
  std::optional<PlacementRequest> rebalance;
  int64_t every = 100;
  if (request->has_rebalance()) {
    const pb::RecommendPlacementRequest& r = request->rebalance();
    if (!r.job_id().empty() && r.job_id() != request->job_id()) {
      return ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
          "rebalance.job_id '", r.job_id(), "' differs from job_id '",
          request->job_id(), "' (leave it empty)")));
    }
    if (r.current_phy2log().empty() || !r.has_migration()) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          "rebalance needs current_phy2log and migration: the decision weighs "
          "the current placement against the plan"));
    }
    if (request->rebalance_every_steps() < 0) {
      return ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
          "rebalance_every_steps = ", request->rebalance_every_steps(),
          " must be >= 0 (0 means 100)")));
    }
    if (request->rebalance_every_steps() > 0) every = request->rebalance_every_steps();
    absl::StatusOr<PlacementRequest> req = PlacementRequestFromProto(r);
    if (!req.ok()) return ToGrpcStatus(req.status());
    rebalance = *std::move(req);
  } else if (request->rebalance_every_steps() != 0) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        "rebalance_every_steps is set but rebalance is not"));
  }
  int64_t after = request->after_seq();
  std::optional<int64_t> last_checked;  // step of the last rebalance check
  bool recommending = false;            // the last decision said rebalance
  // Watch streams what analysis has produced so far: it never waits for it.
  Freshness stale;
  stale.allow_stale = true;
  if (rebalance) rebalance->freshness = stale;
  while (!context->IsCancelled() && !shutting_down_.load()) {
    absl::StatusOr<std::vector<Event>> events =
        engine_->ReadEvents(request->job_id(), after, options_.watch_batch, stale);
    if (!events.ok()) return ToGrpcStatus(events.status());
    for (const Event& ev : *events) {
      pb::Event out;
      ToProto(ev, &out);
      if (!writer->Write(out)) return grpc::Status::OK;  // the client went away
      after = ev.seq;
    }
    if (rebalance) {
      absl::StatusOr<JobInfo> info = engine_->GetJobInfo(request->job_id());
      if (!info.ok()) return ToGrpcStatus(info.status());
      if (info->last_analysed_step &&
          (!last_checked || *info->last_analysed_step >= *last_checked + every)) {
        last_checked = info->last_analysed_step;
        absl::StatusOr<PlacementRecommendation> rec =
            engine_->RecommendPlacement(request->job_id(), *rebalance);
        if (!rec.ok()) {
          // Not yet answerable (e.g. forecasts warming up): try again later.
          // Anything else (a cluster that does not fit the job) is the
          // caller's error and ends the stream.
          if (rec.status().code() != absl::StatusCode::kFailedPrecondition) {
            return ToGrpcStatus(rec.status());
          }
        } else if (rec->decision) {
          const bool now = rec->decision->rebalance;
          if (now && !recommending) {
            pb::Event out;
            out.set_seq(after);
            out.set_step(rec->as_of_step);
            out.set_kind(pb::Event::KIND_REBALANCE_RECOMMENDED);
            out.set_layer(-1);
            out.set_from("keep");
            out.set_to("rebalance");
            out.set_value(rec->decision->saved_s - rec->decision->cost_s);
            out.set_detail(rec->decision->reason);
            ToProto(*rec, out.mutable_recommendation());
            if (!writer->Write(out)) return grpc::Status::OK;
          }
          recommending = now;
        }
      }
    }
    if (events->size() < static_cast<size_t>(options_.watch_batch)) {
      absl::SleepFor(options_.watch_poll_interval);
    }
  }
  if (context->IsCancelled()) return grpc::Status::CANCELLED;
  return grpc::Status::OK;
}

}  // namespace moecast::grpc_api
