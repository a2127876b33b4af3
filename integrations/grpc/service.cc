#include "integrations/grpc/service.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "engine/health/ecology/phase.h"
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
  // An unknown job fails the whole call; everything else is per step.
  absl::StatusOr<JobInfo> info = engine.GetJobInfo(request.job_id());
  if (!info.ok()) return info.status();
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

MoecastService::MoecastService(Engine* engine, ServiceOptions options)
    : engine_(engine), options_(std::move(options)) {}

grpc::Status MoecastService::RegisterJob(grpc::ServerContext*,
                                         const pb::RegisterJobRequest* request,
                                         pb::RegisterJobResponse*) {
  return ToGrpcStatus(engine_->RegisterJob(JobSpecFromProto(request->spec())));
}

grpc::Status MoecastService::ListJobs(grpc::ServerContext*, const pb::ListJobsRequest*,
                                      pb::ListJobsResponse* response) {
  for (const std::string& id : engine_->ListJobs()) response->add_job_ids(id);
  return grpc::Status::OK;
}

grpc::Status MoecastService::DeleteJob(grpc::ServerContext*,
                                       const pb::DeleteJobRequest* request,
                                       pb::DeleteJobResponse*) {
  return ToGrpcStatus(engine_->DeleteJob(request->job_id()));
}

grpc::Status MoecastService::IngestBatch(grpc::ServerContext*,
                                         const pb::IngestBatchRequest* request,
                                         pb::IngestBatchResponse* response) {
  return ToGrpcStatus(ApplyBatch(*engine_, *request, response));
}

grpc::Status MoecastService::Ingest(grpc::ServerContext*,
                                    grpc::ServerReader<pb::IngestBatchRequest>* reader,
                                    pb::IngestSummary* summary) {
  pb::IngestBatchRequest request;
  while (reader->Read(&request)) {
    pb::IngestBatchResponse batch;
    absl::Status s = ApplyBatch(*engine_, request, &batch);
    if (!s.ok()) return ToGrpcStatus(s);
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

grpc::Status MoecastService::Forecast(grpc::ServerContext*,
                                      const pb::ForecastRequest* request,
                                      pb::ForecastResponse* response) {
  ForecastRequest req;
  req.horizons.assign(request->horizons().begin(), request->horizons().end());
  if (!request->predictor().empty()) req.predictor = request->predictor();
  if (request->interval_level() != 0) req.interval_level = request->interval_level();
  req.path_steps = request->path_steps();  // the engine caps it (max_path_steps)
  req.layers.assign(request->layers().begin(), request->layers().end());
  absl::StatusOr<ForecastResult> r = engine_->Forecast(request->job_id(), req);
  if (!r.ok()) return ToGrpcStatus(r.status());
  response->set_as_of_step(r->as_of_step);
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

grpc::Status MoecastService::GetHealth(grpc::ServerContext*,
                                       const pb::GetHealthRequest* request,
                                       pb::GetHealthResponse* response) {
  absl::StatusOr<HealthReport> r = engine_->Health(request->job_id());
  if (!r.ok()) return ToGrpcStatus(r.status());
  response->set_as_of_step(r->as_of_step);
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

grpc::Status MoecastService::RecommendPlacement(
    grpc::ServerContext*, const pb::RecommendPlacementRequest* request,
    pb::RecommendPlacementResponse* response) {
  PlacementRequest req;
  req.num_slots = request->num_slots();
  req.num_groups = request->num_groups() == 0 ? 1 : request->num_groups();
  req.num_nodes = request->num_nodes() == 0 ? 1 : request->num_nodes();
  req.num_gpus = request->num_gpus();
  req.excluded_gpus.assign(request->excluded_gpus().begin(),
                           request->excluded_gpus().end());
  req.current_phy2log.assign(request->current_phy2log().begin(),
                             request->current_phy2log().end());
  if (!request->mode().empty()) {
    absl::StatusOr<PlacementMode> mode = ParsePlacementMode(request->mode());
    if (!mode.ok()) return ToGrpcStatus(mode.status());
    req.options.mode = *mode;
  }
  if (request->has_move_budget()) req.options.move_budget = request->move_budget();
  if (request->max_extra_experts_per_gpu() != 0) {
    req.options.max_extra_experts_per_gpu = request->max_extra_experts_per_gpu();
  }
  req.options.bytes_per_expert = request->bytes_per_expert();
  if (request->horizon() != 0) req.horizon = request->horizon();
  if (!request->predictor().empty()) req.predictor = request->predictor();
  req.upper_bounds_when_transient = !request->means_only();
  if (request->interval_level() != 0) req.interval_level = request->interval_level();
  if (request->has_migration()) {
    const pb::MigrationModel& m = request->migration();
    MigrationModel model;
    model.bytes_per_expert = m.bytes_per_expert();
    model.intra_node_bandwidth = m.intra_node_bandwidth();
    model.inter_node_bandwidth = m.inter_node_bandwidth();
    model.tokens_per_step = m.tokens_per_step();
    model.time_per_token_s = m.time_per_token_s();
    model.horizon_steps = m.horizon_steps();
    model.overlap = m.overlap();
    if (m.has_overlap_cost_fraction()) {
      model.overlap_cost_fraction = m.overlap_cost_fraction();
    }
    if (m.has_transient_margin()) model.transient_margin = m.transient_margin();
    req.migration = model;
  }
  absl::StatusOr<PlacementRecommendation> r =
      engine_->RecommendPlacement(request->job_id(), req);
  if (!r.ok()) return ToGrpcStatus(r.status());
  response->set_as_of_step(r->as_of_step);
  response->set_job_state(ToProto(r->job_state));
  response->set_horizon(r->horizon);
  response->mutable_upper_bound_layers()->Add(r->upper_bound_layers.begin(),
                                              r->upper_bound_layers.end());
  response->mutable_loads()->Add(r->loads.begin(), r->loads.end());
  ToProto(r->plan, response->mutable_plan());
  if (r->current) {
    ToProto(*r->current, response->mutable_current());
  }
  if (r->decision) {
    const RebalanceDecision& d = *r->decision;
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
  return grpc::Status::OK;
}

grpc::Status MoecastService::Watch(grpc::ServerContext* context,
                                   const pb::WatchRequest* request,
                                   grpc::ServerWriter<pb::Event>* writer) {
  int64_t after = request->after_seq();
  while (!context->IsCancelled() && !shutting_down_.load()) {
    absl::StatusOr<std::vector<Event>> events =
        engine_->ReadEvents(request->job_id(), after, options_.watch_batch);
    if (!events.ok()) return ToGrpcStatus(events.status());
    for (const Event& ev : *events) {
      pb::Event out;
      ToProto(ev, &out);
      if (!writer->Write(out)) return grpc::Status::OK;  // the client went away
      after = ev.seq;
    }
    if (events->size() < static_cast<size_t>(options_.watch_batch)) {
      absl::SleepFor(options_.watch_poll_interval);
    }
  }
  if (context->IsCancelled()) return grpc::Status::CANCELLED;
  return grpc::Status::OK;
}

}  // namespace moecast::grpc_api
