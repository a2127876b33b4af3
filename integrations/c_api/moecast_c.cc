// The moecast C API over moecast::Engine (see moecast_c.h for the contract).
//
// Every exported function runs its body inside Guard(), which turns the
// body's absl::Status into a moecast_status, records the thread's last error
// and catches every C++ exception, so none crosses the C boundary. Argument
// checks happen before anything is written to an output.
#include "integrations/c_api/moecast_c.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/health/monitor.h"

struct moecast_engine {
  std::unique_ptr<moecast::Engine> engine;
};

struct moecast_forecast {
  moecast::ForecastResult result;
  int num_experts = 0;
  int num_horizons = 0;
};

struct moecast_placement {
  moecast::PlacementRecommendation rec;
};

namespace {

using moecast::Engine;

// The numeric values of the C enums are the C++ enums' (checked here so
// that a reordering there breaks the build instead of the ABI).
static_assert(static_cast<int>(absl::StatusCode::kUnauthenticated) ==
              MOECAST_UNAUTHENTICATED);
static_assert(static_cast<int>(absl::StatusCode::kFailedPrecondition) ==
              MOECAST_FAILED_PRECONDITION);
static_assert(static_cast<int>(moecast::IngestOutcome::kDuplicate) ==
              MOECAST_INGEST_DUPLICATE);
static_assert(static_cast<int>(moecast::LoadState::kStable) ==
              MOECAST_STATE_STABLE);
static_assert(static_cast<int>(moecast::Phase::kRelaxation) ==
              MOECAST_PHASE_RELAXATION);
static_assert(static_cast<int>(moecast::EKind::kMissing) == MOECAST_E_MISSING);
static_assert(static_cast<int>(moecast::StepUnit::kInterval) ==
              MOECAST_STEP_INTERVAL);
static_assert(static_cast<int>(moecast::RouterKind::kSigmoidWithBias) ==
              MOECAST_ROUTER_SIGMOID_WITH_BIAS);

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

thread_local std::string t_last_error;
thread_local moecast_status t_last_status = MOECAST_OK;

moecast_status Record(const absl::Status& status) {
  t_last_status = static_cast<moecast_status>(status.code());
  try {
    t_last_error.assign(status.message().data(), status.message().size());
  } catch (...) {
    t_last_error.clear();  // out of memory for the message itself
  }
  return t_last_status;
}

// Runs `body` (returning absl::Status), records the outcome and maps every
// exception to a status.
template <typename F>
moecast_status Guard(F&& body) noexcept {
  try {
    return Record(body());
  } catch (const std::bad_alloc&) {
    return Record(absl::ResourceExhaustedError("out of memory"));
  } catch (const std::exception& e) {
    return Record(absl::InternalError(
        absl::StrCat("internal error (C++ exception): ", e.what())));
  } catch (...) {
    return Record(absl::InternalError("internal error (unknown exception)"));
  }
}

absl::Status Invalid(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

absl::Status CheckEngine(const moecast_engine* engine) {
  if (engine == nullptr || engine->engine == nullptr) {
    return Invalid("engine is NULL");
  }
  return absl::OkStatus();
}

absl::Status CheckJobId(const char* job_id) {
  if (job_id == nullptr) return Invalid("job_id is NULL");
  return absl::OkStatus();
}

absl::Status CheckEngineAndJob(const moecast_engine* engine,
                               const char* job_id) {
  if (absl::Status s = CheckEngine(engine); !s.ok()) return s;
  return CheckJobId(job_id);
}

// A pointer that must be set whenever its count is nonzero.
absl::Status CheckArray(const void* ptr, size_t count, absl::string_view name,
                        absl::string_view count_name) {
  if (ptr == nullptr && count != 0) {
    return Invalid(absl::StrCat(name, " is NULL but ", count_name, " is ",
                                count));
  }
  return absl::OkStatus();
}

absl::Status CheckStructSize(uint32_t seen, size_t expected,
                             absl::string_view type,
                             absl::string_view init_function) {
  if (seen != expected) {
    return Invalid(absl::StrCat(
        type, ".struct_size is ", seen, ", expected ", expected,
        " (initialize it with ", init_function,
        "; the caller's header must match the library, ABI version ",
        MOECAST_ABI_VERSION, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckSize(size_t seen, int64_t expected, absl::string_view name,
                       absl::string_view what) {
  if (static_cast<int64_t>(seen) != expected || expected < 0) {
    return Invalid(absl::StrCat(name, " is ", seen, ", expected ", expected,
                                " (", what, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckIndex(int64_t index, int64_t size, absl::string_view name) {
  if (index < 0 || index >= size) {
    return Invalid(absl::StrCat(name, " ", index, " is out of range [0, ",
                                size, ")"));
  }
  return absl::OkStatus();
}

void CopyTruncated(absl::string_view from, char* to, size_t capacity) {
  const size_t n = std::min(from.size(), capacity - 1);
  std::memcpy(to, from.data(), n);
  to[n] = '\0';
}

int64_t SizeOrZero(int64_t a, int64_t b) { return a * b; }

// The job's L, M (shape needed to validate buffer sizes).
absl::StatusOr<moecast::JobSpec> JobShape(Engine& engine, const char* job_id) {
  absl::StatusOr<moecast::JobInfo> info = engine.GetJobInfo(job_id);
  if (!info.ok()) return info.status();
  return std::move(info->spec);
}

}  // namespace

// Definitions below keep the C linkage of their declarations in
// moecast_c.h (no extern "C" block needed, so helpers can be templates).

// --- Status, version, last error ------------------------------------------

const char* moecast_version(void) { return MOECAST_VERSION_STRING; }

int32_t moecast_abi_version(void) { return MOECAST_ABI_VERSION; }

const char* moecast_status_name(int32_t code) {
  switch (code) {
    case MOECAST_OK: return "OK";
    case MOECAST_CANCELLED: return "CANCELLED";
    case MOECAST_UNKNOWN: return "UNKNOWN";
    case MOECAST_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case MOECAST_DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case MOECAST_NOT_FOUND: return "NOT_FOUND";
    case MOECAST_ALREADY_EXISTS: return "ALREADY_EXISTS";
    case MOECAST_PERMISSION_DENIED: return "PERMISSION_DENIED";
    case MOECAST_RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case MOECAST_FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case MOECAST_ABORTED: return "ABORTED";
    case MOECAST_OUT_OF_RANGE: return "OUT_OF_RANGE";
    case MOECAST_UNIMPLEMENTED: return "UNIMPLEMENTED";
    case MOECAST_INTERNAL: return "INTERNAL";
    case MOECAST_UNAVAILABLE: return "UNAVAILABLE";
    case MOECAST_DATA_LOSS: return "DATA_LOSS";
    case MOECAST_UNAUTHENTICATED: return "UNAUTHENTICATED";
  }
  return "UNKNOWN_CODE";
}

const char* moecast_last_error(void) { return t_last_error.c_str(); }

moecast_status moecast_last_status(void) { return t_last_status; }

// --- Engine ----------------------------------------------------------------

void moecast_engine_options_init(moecast_engine_options* options) {
  if (options == nullptr) return;
  try {
    const moecast::EngineOptions d;
    std::memset(options, 0, sizeof(*options));
    options->struct_size = sizeof(*options);
    options->max_jobs = d.max_jobs;
    options->history_capacity_steps = d.history_capacity_steps;
    options->max_pending_steps = d.max_pending_steps;
    options->health_window_steps = d.health.window_steps;
    options->health_bootstrap_replicates = d.health.gamma.bootstrap_replicates;
    options->dead_window_steps = d.health.dead.window_steps;
    options->max_job_history_bytes = d.max_job_history_bytes;
    options->max_total_history_bytes = d.max_total_history_bytes;
    options->source_timeout_s = absl::ToDoubleSeconds(d.source_timeout);
    options->idle_job_expiry_s = 0;
  } catch (...) {
    // Only out-of-memory could get here; a void init cannot report it.
  }
}

namespace {

moecast_status CreateEngine(const moecast_engine_options* options,
                            int32_t analysis_inline, int32_t analysis_threads,
                            moecast_engine** out) {
  if (out != nullptr) *out = nullptr;
  return Guard([&]() -> absl::Status {
    if (out == nullptr) return Invalid("out (moecast_engine**) is NULL");
    if (analysis_inline != 0 && analysis_inline != 1) {
      return Invalid(absl::StrCat("analysis_inline = ", analysis_inline,
                                  " must be 0 (background threads) or 1"));
    }
    moecast::EngineOptions o;
    if (options != nullptr) {
      if (absl::Status s =
              CheckStructSize(options->struct_size, sizeof(*options),
                              "moecast_engine_options",
                              "moecast_engine_options_init()");
          !s.ok()) {
        return s;
      }
      o.max_jobs = options->max_jobs;
      o.history_capacity_steps = options->history_capacity_steps;
      o.max_pending_steps = options->max_pending_steps;
      o.health.window_steps = options->health_window_steps;
      if (options->health_bootstrap_replicates < 0) {
        return Invalid(absl::StrCat(
            "moecast_engine_options.health_bootstrap_replicates = ",
            options->health_bootstrap_replicates, " must be >= 0"));
      }
      o.health.gamma.bootstrap_replicates =
          options->health_bootstrap_replicates;
      o.health.dead.window_steps = options->dead_window_steps;
      o.max_job_history_bytes = options->max_job_history_bytes;
      o.max_total_history_bytes = options->max_total_history_bytes;
      const double timeout = options->source_timeout_s;
      if (!(timeout > 0)) {  // also NaN
        return Invalid(
            absl::StrCat("moecast_engine_options.source_timeout_s = ", timeout,
                         " must be > 0"));
      }
      o.source_timeout = std::isinf(timeout) ? absl::InfiniteDuration()
                                             : absl::Seconds(timeout);
      const double expiry = options->idle_job_expiry_s;
      if (!(expiry >= 0)) {
        return Invalid(
            absl::StrCat("moecast_engine_options.idle_job_expiry_s = ", expiry,
                         " must be >= 0 (0: never)"));
      }
      o.idle_job_expiry = (expiry == 0 || std::isinf(expiry))
                              ? absl::InfiniteDuration()
                              : absl::Seconds(expiry);
      if (absl::Status s = moecast::ValidateHealthOptions(o.health); !s.ok()) {
        return Invalid(absl::StrCat("moecast_engine_options: ", s.message()));
      }
    }
    o.analysis.mode = analysis_inline == 1 ? moecast::AnalysisOptions::Mode::kInline
                                           : moecast::AnalysisOptions::Mode::kBackground;
    o.analysis.step_threads = analysis_threads;
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(o);
    if (!engine.ok()) return engine.status();
    auto handle = std::make_unique<moecast_engine>();
    handle->engine = std::move(*engine);
    *out = handle.release();
    return absl::OkStatus();
  });
}

}  // namespace

moecast_status moecast_engine_create(const moecast_engine_options* options,
                                     moecast_engine** out) {
  return CreateEngine(options, 0, 0, out);
}

moecast_status moecast_engine_create_with_analysis(
    const moecast_engine_options* options, int32_t analysis_inline,
    int32_t analysis_threads, moecast_engine** out) {
  return CreateEngine(options, analysis_inline, analysis_threads, out);
}

void moecast_engine_destroy(moecast_engine* engine) {
  try {
    delete engine;
  } catch (...) {
    // Destructors do not throw; nothing can be reported from here anyway.
  }
}

// --- Jobs ------------------------------------------------------------------

void moecast_job_spec_init(moecast_job_spec* spec) {
  if (spec == nullptr) return;
  try {
    std::memset(spec, 0, sizeof(*spec));
    spec->struct_size = sizeof(*spec);
    spec->num_sources = 1;
    spec->step_unit = MOECAST_STEP_OPTIMIZER_STEP;
    spec->router = MOECAST_ROUTER_SOFTMAX;
    spec->forecasting = 1;
    spec->health = 1;
    spec->aux_loss_coef = kNaN;
    spec->router_temperature = kNaN;
    spec->entropy_weight = kNaN;
    spec->oracle_weight = kNaN;
    spec->balance_weight = kNaN;
  } catch (...) {
    // Only out-of-memory could get here; a void init cannot report it.
  }
}

moecast_status moecast_register_job(moecast_engine* engine,
                                    const moecast_job_spec* spec) {
  return Guard([&]() -> absl::Status {
    if (absl::Status s = CheckEngine(engine); !s.ok()) return s;
    if (spec == nullptr) return Invalid("spec (moecast_job_spec*) is NULL");
    if (absl::Status s = CheckStructSize(spec->struct_size, sizeof(*spec),
                                         "moecast_job_spec",
                                         "moecast_job_spec_init()");
        !s.ok()) {
      return s;
    }
    if (spec->job_id == nullptr) return Invalid("spec->job_id is NULL");
    if (absl::Status s = CheckArray(spec->predictors, spec->num_predictors,
                                    "spec->predictors",
                                    "spec->num_predictors");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckArray(spec->horizons, spec->num_horizons,
                                    "spec->horizons", "spec->num_horizons");
        !s.ok()) {
      return s;
    }
    if (spec->step_unit < MOECAST_STEP_OPTIMIZER_STEP ||
        spec->step_unit > MOECAST_STEP_INTERVAL) {
      return Invalid(absl::StrCat("spec->step_unit = ", spec->step_unit,
                                  " is not a moecast_step_unit (0..2)"));
    }
    if (spec->router < MOECAST_ROUTER_SOFTMAX ||
        spec->router > MOECAST_ROUTER_SIGMOID_WITH_BIAS) {
      return Invalid(absl::StrCat("spec->router = ", spec->router,
                                  " is not a moecast_router_kind (0..1)"));
    }
    moecast::JobSpec js;
    js.job_id = spec->job_id;
    js.num_layers = spec->num_layers;
    js.num_experts = spec->num_experts;
    js.top_k = spec->top_k;
    js.num_sources = spec->num_sources;
    js.step_unit = static_cast<moecast::StepUnit>(spec->step_unit);
    js.router = static_cast<moecast::RouterKind>(spec->router);
    js.forecasting = spec->forecasting != 0;
    js.health = spec->health != 0;
    for (size_t i = 0; i < spec->num_predictors; ++i) {
      if (spec->predictors[i] == nullptr) {
        return Invalid(absl::StrCat("spec->predictors[", i, "] is NULL"));
      }
      js.predictors.emplace_back(spec->predictors[i]);
    }
    js.horizons.assign(spec->horizons, spec->horizons + spec->num_horizons);
    auto opt = [](double v) -> std::optional<double> {
      if (std::isnan(v)) return std::nullopt;
      return v;
    };
    js.hyper.aux_loss_coef = opt(spec->aux_loss_coef);
    js.hyper.router_temperature = opt(spec->router_temperature);
    js.hyper.entropy_weight = opt(spec->entropy_weight);
    js.hyper.oracle_weight = opt(spec->oracle_weight);
    js.hyper.balance_weight = opt(spec->balance_weight);
    return engine->engine->RegisterJob(js);
  });
}

moecast_status moecast_delete_job(moecast_engine* engine, const char* job_id) {
  return Guard([&]() -> absl::Status {
    if (absl::Status s = CheckEngineAndJob(engine, job_id); !s.ok()) return s;
    return engine->engine->DeleteJob(job_id);
  });
}

void moecast_analysis_progress_init(moecast_analysis_progress* out) {
  if (out == nullptr) return;
  std::memset(out, 0, sizeof(*out));
  out->struct_size = sizeof(*out);
  out->as_of_step = -1;
  out->committed_step = -1;
}

moecast_status moecast_await_analysis(moecast_engine* engine, const char* job_id,
                                      double timeout_s,
                                      moecast_analysis_progress* out) {
  return Guard([&]() -> absl::Status {
    if (engine == nullptr) return Invalid("engine is NULL");
    if (job_id == nullptr) return Invalid("job_id is NULL");
    if (out == nullptr) return Invalid("out (moecast_analysis_progress*) is NULL");
    if (absl::Status s = CheckStructSize(out->struct_size, sizeof(*out),
                                         "moecast_analysis_progress",
                                         "moecast_analysis_progress_init()");
        !s.ok()) {
      return s;
    }
    if (std::isnan(timeout_s)) return Invalid("timeout_s is NaN");
    moecast::Freshness f;
    if (timeout_s == 0) {
      f.allow_stale = true;
    } else if (timeout_s > 0 && std::isfinite(timeout_s)) {
      f.deadline = absl::Now() + absl::Seconds(timeout_s);
    }
    absl::StatusOr<moecast::AnalysisProgress> p =
        engine->engine->AwaitAnalysis(job_id, f);
    if (!p.ok()) return p.status();
    out->as_of_step = p->as_of_step;
    out->committed_step = p->committed_step;
    out->lag_steps = p->lag_steps;
    out->scoring_shed_steps = p->scoring_shed_steps;
    out->coalesced_steps = p->coalesced_steps;
    return absl::OkStatus();
  });
}

moecast_status moecast_get_job_info(moecast_engine* engine, const char* job_id,
                                    moecast_job_info* out) {
  return Guard([&]() -> absl::Status {
    if (absl::Status s = CheckEngineAndJob(engine, job_id); !s.ok()) return s;
    if (out == nullptr) return Invalid("out (moecast_job_info*) is NULL");
    absl::StatusOr<moecast::JobInfo> info = engine->engine->GetJobInfo(job_id);
    if (!info.ok()) return info.status();
    moecast_job_info r;
    std::memset(&r, 0, sizeof(r));
    r.num_layers = info->spec.num_layers;
    r.num_experts = info->spec.num_experts;
    r.top_k = info->spec.top_k;
    r.num_sources = info->spec.num_sources;
    r.committed_steps = info->committed_steps;
    r.first_step = info->first_step.value_or(-1);
    r.last_step = info->last_step.value_or(-1);
    r.gaps = info->gaps;
    r.missing_steps = info->missing_steps;
    r.incomplete_steps = info->incomplete_steps;
    r.duplicate_calls = info->duplicate_calls;
    r.rejected_calls = info->rejected_calls;
    r.pending_steps = info->pending_steps;
    r.tokens = info->tokens;
    r.history_bytes = info->history_bytes;
    r.forecast_bytes = info->forecast_bytes;
    *out = r;
    return absl::OkStatus();
  });
}

int64_t moecast_num_jobs(moecast_engine* engine) {
  int64_t n = -1;
  Guard([&]() -> absl::Status {
    if (absl::Status s = CheckEngine(engine); !s.ok()) return s;
    n = static_cast<int64_t>(engine->engine->ListJobs().size());
    return absl::OkStatus();
  });
  return n;
}

// --- Ingestion ---------------------------------------------------------------

moecast_status moecast_ingest(moecast_engine* engine, const char* job_id,
                              int64_t step, int32_t source,
                              const double* counts, size_t num_counts,
                              const double* router_logits,
                              size_t num_router_logits, const double* tokens,
                              moecast_ingest_result* result) {
  return Guard([&]() -> absl::Status {
    if (absl::Status s = CheckEngineAndJob(engine, job_id); !s.ok()) return s;
    if (counts == nullptr) {
      return Invalid(absl::StrCat("counts is NULL (num_counts ", num_counts,
                                  "); a step needs L*M counts"));
    }
    if (absl::Status s = CheckArray(router_logits, num_router_logits,
                                    "router_logits", "num_router_logits");
        !s.ok()) {
      return s;
    }
    // The engine checks num_counts (and the logits) against L*M and names
    // both; a pointer with a nonzero size is all that is needed here.
    moecast::StepInput in;
    in.step = step;
    in.source = source;
    in.counts = absl::Span<const double>(counts, num_counts);
    if (router_logits != nullptr) {
      in.router_logits =
          absl::Span<const double>(router_logits, num_router_logits);
    }
    if (tokens != nullptr) in.tokens = *tokens;
    absl::StatusOr<moecast::IngestResult> r =
        engine->engine->Ingest(job_id, in);
    if (!r.ok()) return r.status();
    if (result != nullptr) {
      moecast_ingest_result out;
      std::memset(&out, 0, sizeof(out));
      out.outcome = static_cast<int32_t>(r->outcome);
      out.num_committed = static_cast<int32_t>(r->committed.size());
      out.first_committed_step =
          r->committed.empty() ? -1 : r->committed.front().step;
      out.last_committed_step =
          r->committed.empty() ? -1 : r->committed.back().step;
      for (const moecast::CommittedStep& c : r->committed) {
        out.num_incomplete += c.incomplete ? 1 : 0;
        out.gap_steps += c.gap_before;
      }
      CopyTruncated(r->note, out.note, sizeof(out.note));
      *result = out;
    }
    return absl::OkStatus();
  });
}

moecast_status moecast_flush_pending(moecast_engine* engine,
                                     const char* job_id,
                                     int64_t* num_committed) {
  return Guard([&]() -> absl::Status {
    if (absl::Status s = CheckEngineAndJob(engine, job_id); !s.ok()) return s;
    absl::StatusOr<std::vector<moecast::CommittedStep>> r =
        engine->engine->FlushPending(job_id);
    if (!r.ok()) return r.status();
    if (num_committed != nullptr) {
      *num_committed = static_cast<int64_t>(r->size());
    }
    return absl::OkStatus();
  });
}

// --- Forecasts ---------------------------------------------------------------

namespace {

absl::StatusOr<moecast::ForecastResult> RunForecast(
    moecast_engine* engine, const char* job_id, std::vector<int> horizons,
    const char* predictor, double interval_level) {
  moecast::ForecastRequest request;
  request.horizons = std::move(horizons);
  if (predictor != nullptr) request.predictor = predictor;
  // 0 selects the default level; anything else goes to the engine, which
  // rejects values outside (0, 1) (NaN included) naming them.
  if (interval_level != 0) request.interval_level = interval_level;
  return engine->engine->Forecast(job_id, request);
}

void CopyOrNaN(const std::vector<double>& from, double* to, size_t n) {
  if (to == nullptr) return;
  if (from.size() == n) {
    std::copy(from.begin(), from.end(), to);
  } else {
    std::fill(to, to + n, kNaN);
  }
}

}  // namespace

moecast_status moecast_forecast_create(moecast_engine* engine,
                                       const char* job_id,
                                       const int32_t* horizons,
                                       size_t num_horizons,
                                       const char* predictor,
                                       double interval_level,
                                       moecast_forecast** out) {
  if (out != nullptr) *out = nullptr;
  return Guard([&]() -> absl::Status {
    if (absl::Status s = CheckEngineAndJob(engine, job_id); !s.ok()) return s;
    if (out == nullptr) return Invalid("out (moecast_forecast**) is NULL");
    if (absl::Status s =
            CheckArray(horizons, num_horizons, "horizons", "num_horizons");
        !s.ok()) {
      return s;
    }
    std::vector<int> h;
    if (horizons != nullptr) h.assign(horizons, horizons + num_horizons);
    absl::StatusOr<moecast::ForecastResult> r =
        RunForecast(engine, job_id, std::move(h), predictor, interval_level);
    if (!r.ok()) return r.status();
    auto handle = std::make_unique<moecast_forecast>();
    handle->result = std::move(*r);
    if (!handle->result.layers.empty()) {
      const moecast::LayerForecast& l0 = handle->result.layers.front();
      handle->num_horizons = static_cast<int>(l0.horizons.size());
      if (!l0.horizons.empty()) {
        handle->num_experts = static_cast<int>(l0.horizons.front().mean.size());
      }
    }
    *out = handle.release();
    return absl::OkStatus();
  });
}

void moecast_forecast_destroy(moecast_forecast* forecast) { delete forecast; }

moecast_status moecast_forecast_shape(const moecast_forecast* forecast,
                                      int32_t* num_layers,
                                      int32_t* num_experts,
                                      int32_t* num_horizons,
                                      int64_t* as_of_step,
                                      int32_t* job_state) {
  return Guard([&]() -> absl::Status {
    if (forecast == nullptr) return Invalid("forecast is NULL");
    if (num_layers != nullptr) {
      *num_layers = static_cast<int32_t>(forecast->result.layers.size());
    }
    if (num_experts != nullptr) *num_experts = forecast->num_experts;
    if (num_horizons != nullptr) *num_horizons = forecast->num_horizons;
    if (as_of_step != nullptr) *as_of_step = forecast->result.as_of_step;
    if (job_state != nullptr) {
      *job_state = static_cast<int32_t>(forecast->result.job_state);
    }
    return absl::OkStatus();
  });
}

moecast_status moecast_forecast_horizon(const moecast_forecast* forecast,
                                        int32_t horizon_index,
                                        int32_t* horizon) {
  return Guard([&]() -> absl::Status {
    if (forecast == nullptr) return Invalid("forecast is NULL");
    if (horizon == nullptr) return Invalid("horizon (int32_t*) is NULL");
    if (absl::Status s = CheckIndex(horizon_index, forecast->num_horizons,
                                    "horizon_index");
        !s.ok()) {
      return s;
    }
    *horizon = forecast->result.layers.front().horizons[horizon_index].horizon;
    return absl::OkStatus();
  });
}

moecast_status moecast_forecast_layer_state(const moecast_forecast* forecast,
                                            int32_t layer, int32_t* state,
                                            double* drift_ratio) {
  return Guard([&]() -> absl::Status {
    if (forecast == nullptr) return Invalid("forecast is NULL");
    if (absl::Status s =
            CheckIndex(layer, forecast->result.layers.size(), "layer");
        !s.ok()) {
      return s;
    }
    const moecast::LayerForecast& l = forecast->result.layers[layer];
    if (state != nullptr) *state = static_cast<int32_t>(l.state);
    if (drift_ratio != nullptr) *drift_ratio = l.drift_ratio.value_or(kNaN);
    return absl::OkStatus();
  });
}

moecast_status moecast_forecast_values(const moecast_forecast* forecast,
                                       int32_t layer, int32_t horizon_index,
                                       double* mean, double* lower,
                                       double* upper, size_t num_experts,
                                       int32_t* has_interval) {
  return Guard([&]() -> absl::Status {
    if (forecast == nullptr) return Invalid("forecast is NULL");
    if (absl::Status s =
            CheckIndex(layer, forecast->result.layers.size(), "layer");
        !s.ok()) {
      return s;
    }
    const moecast::LayerForecast& l = forecast->result.layers[layer];
    if (absl::Status s =
            CheckIndex(horizon_index, l.horizons.size(), "horizon_index");
        !s.ok()) {
      return s;
    }
    const moecast::HorizonForecast& h = l.horizons[horizon_index];
    if (absl::Status s = CheckSize(num_experts, h.mean.size(), "num_experts",
                                   "experts per layer M");
        !s.ok()) {
      return s;
    }
    CopyOrNaN(h.mean, mean, num_experts);
    CopyOrNaN(h.lower, lower, num_experts);
    CopyOrNaN(h.upper, upper, num_experts);
    if (has_interval != nullptr) {
      *has_interval = h.lower.size() == num_experts &&
                      h.upper.size() == num_experts;
    }
    return absl::OkStatus();
  });
}

const char* moecast_forecast_predictor(const moecast_forecast* forecast,
                                       int32_t layer, int32_t horizon_index) {
  const char* name = nullptr;
  Guard([&]() -> absl::Status {
    if (forecast == nullptr) return Invalid("forecast is NULL");
    if (absl::Status s =
            CheckIndex(layer, forecast->result.layers.size(), "layer");
        !s.ok()) {
      return s;
    }
    const moecast::LayerForecast& l = forecast->result.layers[layer];
    if (absl::Status s =
            CheckIndex(horizon_index, l.horizons.size(), "horizon_index");
        !s.ok()) {
      return s;
    }
    name = l.horizons[horizon_index].predictor.c_str();
    return absl::OkStatus();
  });
  return name;
}

moecast_status moecast_forecast_into(moecast_engine* engine,
                                     const char* job_id, int32_t horizon,
                                     const char* predictor,
                                     double interval_level, double* mean,
                                     double* lower, double* upper,
                                     size_t size) {
  return Guard([&]() -> absl::Status {
    if (absl::Status s = CheckEngineAndJob(engine, job_id); !s.ok()) return s;
    if (mean == nullptr) return Invalid("mean is NULL");
    if (horizon < 1) {
      return Invalid(absl::StrCat("horizon = ", horizon, " must be >= 1"));
    }
    absl::StatusOr<moecast::ForecastResult> r =
        RunForecast(engine, job_id, {horizon}, predictor, interval_level);
    if (!r.ok()) return r.status();
    const int64_t layers = static_cast<int64_t>(r->layers.size());
    const int64_t experts =
        layers == 0 || r->layers[0].horizons.empty()
            ? 0
            : static_cast<int64_t>(r->layers[0].horizons[0].mean.size());
    if (absl::Status s = CheckSize(size, SizeOrZero(layers, experts), "size",
                                   absl::StrCat("L*M = ", layers, "*",
                                                experts));
        !s.ok()) {
      return s;
    }
    for (int64_t l = 0; l < layers; ++l) {
      const moecast::HorizonForecast& h = r->layers[l].horizons.front();
      const size_t off = static_cast<size_t>(l * experts);
      CopyOrNaN(h.mean, mean + off, experts);
      CopyOrNaN(h.lower, lower == nullptr ? nullptr : lower + off, experts);
      CopyOrNaN(h.upper, upper == nullptr ? nullptr : upper + off, experts);
    }
    return absl::OkStatus();
  });
}

moecast_status moecast_get_state(moecast_engine* engine, const char* job_id,
                                 int64_t* as_of_step, int32_t* job_state,
                                 int32_t* layer_states, double* drift_ratios,
                                 size_t num_layers) {
  return Guard([&]() -> absl::Status {
    if (absl::Status s = CheckEngineAndJob(engine, job_id); !s.ok()) return s;
    absl::StatusOr<moecast::StateReport> r = engine->engine->GetState(job_id);
    if (!r.ok()) return r.status();
    if (layer_states != nullptr || drift_ratios != nullptr) {
      if (absl::Status s = CheckSize(num_layers, r->layers.size(),
                                     "num_layers", "layers L of the job");
          !s.ok()) {
        return s;
      }
    }
    if (as_of_step != nullptr) *as_of_step = r->as_of_step;
    if (job_state != nullptr) *job_state = static_cast<int32_t>(r->job_state);
    for (size_t l = 0; l < r->layers.size(); ++l) {
      if (layer_states != nullptr) {
        layer_states[l] = static_cast<int32_t>(r->layers[l].state);
      }
      if (drift_ratios != nullptr) {
        drift_ratios[l] = r->layers[l].drift_ratio.value_or(kNaN);
      }
    }
    return absl::OkStatus();
  });
}

// --- Placement ---------------------------------------------------------------

void moecast_migration_model_init(moecast_migration_model* model) {
  if (model == nullptr) return;
  try {
    const moecast::MigrationModel d;
    std::memset(model, 0, sizeof(*model));
    model->struct_size = sizeof(*model);
    model->bytes_per_expert = d.bytes_per_expert;
    model->intra_node_bandwidth = d.intra_node_bandwidth;
    model->inter_node_bandwidth = d.inter_node_bandwidth;
    model->tokens_per_step = d.tokens_per_step;
    model->time_per_token_s = d.time_per_token_s;
    model->horizon_steps = d.horizon_steps;
    model->overlap = d.overlap ? 1 : 0;
    model->overlap_cost_fraction = d.overlap_cost_fraction;
    model->transient_margin = d.transient_margin;
  } catch (...) {
    // Only out-of-memory could get here; a void init cannot report it.
  }
}

void moecast_placement_request_init(moecast_placement_request* request) {
  if (request == nullptr) return;
  try {
    const moecast::PlacementRequest d;
    std::memset(request, 0, sizeof(*request));
    request->struct_size = sizeof(*request);
    request->num_slots = d.num_slots;
    request->num_gpus = d.num_gpus;
    request->num_nodes = d.num_nodes;
    request->num_groups = d.num_groups;
    request->mode = MOECAST_PLACEMENT_DEFAULT;
    request->move_budget = d.options.move_budget;
    request->bytes_per_expert = d.options.bytes_per_expert;
    request->max_extra_experts_per_gpu = d.options.max_extra_experts_per_gpu;
    request->horizon = d.horizon;
    request->predictor = nullptr;
    request->upper_bounds_when_transient = d.upper_bounds_when_transient ? 1 : 0;
    request->interval_level = d.interval_level;
    request->migration = nullptr;
  } catch (...) {
    // Only out-of-memory could get here; a void init cannot report it.
  }
}

moecast_status moecast_recommend_placement(
    moecast_engine* engine, const char* job_id,
    const moecast_placement_request* request, moecast_placement** out) {
  if (out != nullptr) *out = nullptr;
  return Guard([&]() -> absl::Status {
    if (absl::Status s = CheckEngineAndJob(engine, job_id); !s.ok()) return s;
    if (request == nullptr) {
      return Invalid("request (moecast_placement_request*) is NULL");
    }
    if (out == nullptr) return Invalid("out (moecast_placement**) is NULL");
    if (absl::Status s = CheckStructSize(request->struct_size,
                                         sizeof(*request),
                                         "moecast_placement_request",
                                         "moecast_placement_request_init()");
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            CheckArray(request->excluded_gpus, request->num_excluded_gpus,
                       "request->excluded_gpus", "request->num_excluded_gpus");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckArray(request->current_phy2log,
                                    request->num_current_phy2log,
                                    "request->current_phy2log",
                                    "request->num_current_phy2log");
        !s.ok()) {
      return s;
    }
    if (request->mode != MOECAST_PLACEMENT_DEFAULT &&
        request->mode != MOECAST_PLACEMENT_EPLB) {
      return Invalid(absl::StrCat("request->mode = ", request->mode,
                                  " is not a moecast_placement_mode (0..1)"));
    }
    moecast::PlacementRequest pr;
    pr.num_slots = request->num_slots;
    pr.num_gpus = request->num_gpus;
    pr.num_nodes = request->num_nodes;
    pr.num_groups = request->num_groups;
    if (request->excluded_gpus != nullptr) {
      pr.excluded_gpus.assign(
          request->excluded_gpus,
          request->excluded_gpus + request->num_excluded_gpus);
    }
    if (request->num_current_phy2log != 0) {
      absl::StatusOr<moecast::JobSpec> shape =
          JobShape(*engine->engine, job_id);
      if (!shape.ok()) return shape.status();
      if (absl::Status s = CheckSize(
              request->num_current_phy2log,
              SizeOrZero(shape->num_layers, request->num_slots),
              "request->num_current_phy2log",
              absl::StrCat("0 or L*S = ", shape->num_layers, "*",
                           request->num_slots));
          !s.ok()) {
        return s;
      }
      pr.current_phy2log.assign(
          request->current_phy2log,
          request->current_phy2log + request->num_current_phy2log);
    }
    pr.options.mode = request->mode == MOECAST_PLACEMENT_EPLB
                          ? moecast::PlacementMode::kEplb
                          : moecast::PlacementMode::kDefault;
    pr.options.move_budget = request->move_budget;
    pr.options.bytes_per_expert = request->bytes_per_expert;
    pr.options.max_extra_experts_per_gpu = request->max_extra_experts_per_gpu;
    pr.horizon = request->horizon;
    if (request->predictor != nullptr) pr.predictor = request->predictor;
    pr.upper_bounds_when_transient = request->upper_bounds_when_transient != 0;
    pr.interval_level = request->interval_level;
    if (request->migration != nullptr) {
      const moecast_migration_model& m = *request->migration;
      if (absl::Status s = CheckStructSize(m.struct_size, sizeof(m),
                                           "moecast_migration_model",
                                           "moecast_migration_model_init()");
          !s.ok()) {
        return s;
      }
      moecast::MigrationModel mm;
      mm.bytes_per_expert = m.bytes_per_expert;
      mm.intra_node_bandwidth = m.intra_node_bandwidth;
      mm.inter_node_bandwidth = m.inter_node_bandwidth;
      mm.tokens_per_step = m.tokens_per_step;
      mm.time_per_token_s = m.time_per_token_s;
      mm.horizon_steps = m.horizon_steps;
      mm.overlap = m.overlap != 0;
      mm.overlap_cost_fraction = m.overlap_cost_fraction;
      mm.transient_margin = m.transient_margin;
      pr.migration = mm;
    }
    absl::StatusOr<moecast::PlacementRecommendation> r =
        engine->engine->RecommendPlacement(job_id, pr);
    if (!r.ok()) return r.status();
    auto handle = std::make_unique<moecast_placement>();
    handle->rec = std::move(*r);
    *out = handle.release();
    return absl::OkStatus();
  });
}

void moecast_placement_destroy(moecast_placement* placement) {
  delete placement;
}

moecast_status moecast_placement_get_summary(const moecast_placement* placement,
                                             moecast_placement_summary* out) {
  return Guard([&]() -> absl::Status {
    if (placement == nullptr) return Invalid("placement is NULL");
    if (out == nullptr) {
      return Invalid("out (moecast_placement_summary*) is NULL");
    }
    const moecast::PlacementRecommendation& rec = placement->rec;
    const moecast::Plan& p = rec.plan;
    moecast_placement_summary s;
    std::memset(&s, 0, sizeof(s));
    s.as_of_step = rec.as_of_step;
    s.job_state = static_cast<int32_t>(rec.job_state);
    s.horizon = rec.horizon;
    s.num_layers = p.num_layers;
    s.num_experts = p.num_experts;
    s.num_slots = p.num_slots;
    s.num_gpus = p.num_gpus;
    s.num_nodes = p.num_nodes;
    s.max_replicas = p.max_replicas;
    s.num_upper_bound_layers =
        static_cast<int32_t>(rec.upper_bound_layers.size());
    s.num_transfers = static_cast<int32_t>(p.transfers.size());
    s.num_stages = p.num_stages;
    s.balancedness = p.balancedness;
    s.balancedness_summed = p.balancedness_summed;
    s.max_over_mean = p.max_over_mean;
    s.moved_experts = p.moved_experts;
    s.moved_bytes = p.moved_bytes;
    s.forced_moves = p.forced_moves;
    s.has_current = rec.current.has_value();
    s.current_balancedness = rec.current ? rec.current->balancedness : kNaN;
    s.current_max_over_mean = rec.current ? rec.current->max_over_mean : kNaN;
    s.has_decision = rec.decision.has_value();
    if (rec.decision) {
      const moecast::RebalanceDecision& d = *rec.decision;
      s.rebalance = d.rebalance;
      s.step_time_current_s = d.step_time_current_s;
      s.step_time_proposed_s = d.step_time_proposed_s;
      s.saved_s = d.saved_s;
      s.migration_s = d.migration_s;
      s.cost_s = d.cost_s;
      s.required_s = d.required_s;
    } else {
      s.step_time_current_s = s.step_time_proposed_s = s.saved_s =
          s.migration_s = s.cost_s = s.required_s = kNaN;
    }
    *out = s;
    return absl::OkStatus();
  });
}

namespace {

template <typename T>
moecast_status CopyPlanArray(const moecast_placement* placement, T* out,
                             size_t size, absl::string_view function,
                             const std::vector<T>& (*pick)(
                                 const moecast_placement&),
                             absl::string_view what) {
  return Guard([&]() -> absl::Status {
    if (placement == nullptr) {
      return Invalid(absl::StrCat(function, ": placement is NULL"));
    }
    if (out == nullptr) return Invalid(absl::StrCat(function, ": out is NULL"));
    const std::vector<T>& v = pick(*placement);
    if (absl::Status s = CheckSize(size, v.size(),
                                   absl::StrCat(function, ": size"), what);
        !s.ok()) {
      return s;
    }
    std::copy(v.begin(), v.end(), out);
    return absl::OkStatus();
  });
}

}  // namespace

moecast_status moecast_placement_phy2log(const moecast_placement* placement,
                                         int32_t* out, size_t size) {
  return CopyPlanArray<int32_t>(
      placement, out, size, "moecast_placement_phy2log",
      [](const moecast_placement& p) -> const std::vector<int32_t>& {
        return p.rec.plan.phy2log;
      },
      "L*S slots");
}

moecast_status moecast_placement_logcnt(const moecast_placement* placement,
                                        int32_t* out, size_t size) {
  return CopyPlanArray<int32_t>(
      placement, out, size, "moecast_placement_logcnt",
      [](const moecast_placement& p) -> const std::vector<int32_t>& {
        return p.rec.plan.logcnt;
      },
      "L*M experts");
}

moecast_status moecast_placement_gpu_loads(const moecast_placement* placement,
                                           double* out, size_t size) {
  return CopyPlanArray<double>(
      placement, out, size, "moecast_placement_gpu_loads",
      [](const moecast_placement& p) -> const std::vector<double>& {
        return p.rec.plan.gpu_loads;
      },
      "L*P GPUs");
}

moecast_status moecast_placement_loads(const moecast_placement* placement,
                                       double* out, size_t size) {
  return CopyPlanArray<double>(
      placement, out, size, "moecast_placement_loads",
      [](const moecast_placement& p) -> const std::vector<double>& {
        return p.rec.loads;
      },
      "L*M experts");
}

moecast_status moecast_placement_transfers(const moecast_placement* placement,
                                           moecast_transfer* out,
                                           size_t count) {
  return Guard([&]() -> absl::Status {
    if (placement == nullptr) return Invalid("placement is NULL");
    const std::vector<moecast::Transfer>& t = placement->rec.plan.transfers;
    if (absl::Status s = CheckSize(count, t.size(), "count",
                                   "the summary's num_transfers");
        !s.ok()) {
      return s;
    }
    if (out == nullptr && count != 0) {
      return Invalid(absl::StrCat("out is NULL but count is ", count));
    }
    for (size_t i = 0; i < t.size(); ++i) {
      moecast_transfer x;
      std::memset(&x, 0, sizeof(x));
      x.layer = t[i].layer;
      x.expert = t[i].expert;
      x.from_gpu = t[i].from_gpu;
      x.to_gpu = t[i].to_gpu;
      x.bytes = t[i].bytes;
      x.stage = t[i].stage;
      out[i] = x;
    }
    return absl::OkStatus();
  });
}

const char* moecast_placement_decision_reason(
    const moecast_placement* placement) {
  const char* reason = nullptr;
  Guard([&]() -> absl::Status {
    if (placement == nullptr) return Invalid("placement is NULL");
    reason = placement->rec.decision ? placement->rec.decision->reason.c_str()
                                     : "";
    return absl::OkStatus();
  });
  return reason;
}

// --- Health ------------------------------------------------------------------

moecast_status moecast_health(moecast_engine* engine, const char* job_id,
                              moecast_health_summary* summary,
                              moecast_layer_health* layers,
                              size_t num_layers) {
  return Guard([&]() -> absl::Status {
    if (absl::Status s = CheckEngineAndJob(engine, job_id); !s.ok()) return s;
    absl::StatusOr<moecast::HealthReport> r = engine->engine->Health(job_id);
    if (!r.ok()) return r.status();
    if (layers != nullptr) {
      if (absl::Status s = CheckSize(num_layers, r->layers.size(),
                                     "num_layers", "layers L of the job");
          !s.ok()) {
        return s;
      }
    }
    int32_t total_dead = 0;
    for (size_t l = 0; l < r->layers.size(); ++l) {
      const moecast::HealthWindow& w = r->layers[l];
      total_dead += static_cast<int32_t>(w.dead_experts.size());
      if (layers == nullptr) continue;
      moecast_layer_health h;
      std::memset(&h, 0, sizeof(h));
      h.window_step = w.step;
      h.window_steps = w.steps;
      h.phase = static_cast<int32_t>(w.phase);
      h.has_gamma = w.gamma.has_value();
      h.gamma_f = w.gamma ? w.gamma->gamma_f : kNaN;
      h.gamma_ci_low_f = w.gamma ? w.gamma->ci_low_f : kNaN;
      h.gamma_ci_high_f = w.gamma ? w.gamma->ci_high_f : kNaN;
      h.max_over_mean = w.imbalance.max_over_mean;
      h.max_vio = w.imbalance.max_vio;
      h.coefficient_of_variation = w.imbalance.coefficient_of_variation;
      h.normalized_entropy = w.imbalance.normalized_entropy;
      h.num_dead_experts = static_cast<int32_t>(w.dead_experts.size());
      CopyTruncated(w.gamma_status, h.gamma_status, sizeof(h.gamma_status));
      layers[l] = h;
    }
    if (summary != nullptr) {
      moecast_health_summary s;
      std::memset(&s, 0, sizeof(s));
      s.as_of_step = r->as_of_step;
      s.num_layers = static_cast<int32_t>(r->layers.size());
      s.total_dead_experts = total_dead;
      s.e_kind = static_cast<int32_t>(r->e.kind);
      s.e_value = r->e.kind == moecast::EKind::kUnbounded
                      ? std::numeric_limits<double>::infinity()
                      : r->e.value.value_or(kNaN);
      s.e_below_threshold = r->e.below_threshold;
      *summary = s;
    }
    return absl::OkStatus();
  });
}

