/* moecast C API: the in-process forecasting engine (moecast::Engine) behind a
 * plain C ABI, for C programs and for foreign-function interfaces (Python
 * ctypes/cffi, Rust, Go cgo, Julia ccall). The shared library libmoecast.so
 * exports only the moecast_* symbols declared here.
 *
 *   moecast_engine* engine = NULL;
 *   if (moecast_engine_create(NULL, &engine) != MOECAST_OK) {
 *     fprintf(stderr, "%s\n", moecast_last_error());
 *     return 1;
 *   }
 *   moecast_job_spec spec;
 *   moecast_job_spec_init(&spec);
 *   spec.job_id = "pretrain-a";
 *   spec.num_layers = 2; spec.num_experts = 8; spec.top_k = 2;
 *   moecast_register_job(engine, &spec);
 *   double counts[2 * 8] = {...};               // layer-major: [l * M + e]
 *   moecast_ingest(engine, "pretrain-a", 0, 0, counts, 16, NULL, 0, NULL,
 *                  NULL);
 *   double mean[16], lower[16], upper[16];
 *   moecast_forecast_into(engine, "pretrain-a", 10, NULL, 0.9,
 *                         mean, lower, upper, 16);
 *   moecast_engine_destroy(engine);
 *
 * Compiles as C99 (and later) and as C++.
 *
 * ERRORS. Every fallible function returns a moecast_status. The codes have
 * the same names and numbers as absl::StatusCode (and gRPC's codes), e.g.
 * MOECAST_INVALID_ARGUMENT for malformed input, MOECAST_NOT_FOUND for an
 * unknown job or predictor, MOECAST_ALREADY_EXISTS for a duplicate job id,
 * MOECAST_FAILED_PRECONDITION for a call out of order (forecast before the
 * first step), MOECAST_RESOURCE_EXHAUSTED for a configured limit (or out of
 * memory). Each such call also records, per thread, the code and a message
 * that names what is wrong and the value seen; read them with
 * moecast_last_error() / moecast_last_status() right after the call on the
 * same thread. A successful call clears them (message "", MOECAST_OK).
 * Every pointer and size argument is validated (NULL where a buffer is
 * needed, a size that does not match the job's shape, a struct_size that
 * does not match this header) and reported as MOECAST_INVALID_ARGUMENT
 * naming the argument; no C++ exception ever crosses this API (an internal
 * one becomes MOECAST_INTERNAL, out-of-memory MOECAST_RESOURCE_EXHAUSTED).
 * A rejected call changes nothing that was accepted before it; on failure
 * output arguments are left untouched unless documented otherwise, and an
 * output handle is set to NULL. What cannot be checked is a buffer shorter
 * than the size the caller passes with it: sizes are trusted.
 *
 * OWNERSHIP. Handles (moecast_engine, moecast_forecast, moecast_placement)
 * are created by the library and released only with their *_destroy
 * function (which accepts NULL). Input pointers are borrowed for the
 * duration of the call only; nothing the caller passes is retained. Output
 * buffers are owned by the caller. Strings returned as `const char*` are
 * owned by the library, NUL-terminated, and live as documented per function.
 *
 * THREAD-SAFETY. An engine may be used from any number of threads at once:
 * calls on different jobs run in parallel, calls on one job are serialized.
 * moecast_engine_destroy must not run concurrently with (or before the end
 * of) any other call on that engine. Forecast and placement result handles
 * are immutable snapshots: their accessors may be called from several
 * threads at once, but *_destroy must not race with them. Result handles do
 * not reference the engine and may outlive it. The last-error record is
 * thread-local.
 *
 * ABI. MOECAST_ABI_VERSION changes whenever a struct layout or function
 * signature changes; check moecast_abi_version() == MOECAST_ABI_VERSION after
 * loading the library dynamically. Input structs carry a struct_size field,
 * set by their *_init function, that the library checks against its own
 * sizeof, so a caller compiled against a different header (or a ctypes
 * Structure with a wrong field list) gets MOECAST_INVALID_ARGUMENT instead
 * of reading garbage. Always call the *_init function before filling an
 * input struct: it sets struct_size and every default.
 */
#ifndef MOECAST_INTEGRATIONS_C_API_MOECAST_C_H_
#define MOECAST_INTEGRATIONS_C_API_MOECAST_C_H_

#include <stddef.h>
#include <stdint.h>

/* Bumped on any incompatible change of a struct or a signature. */
#define MOECAST_ABI_VERSION 1
/* The moecast release this header belongs to. */
#define MOECAST_VERSION_STRING "0.1.0"

#if defined(__GNUC__) || defined(__clang__)
#define MOECAST_API __attribute__((visibility("default")))
#else
#define MOECAST_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Status codes, version, last error                                          */
/* ------------------------------------------------------------------------ */

/* Same values as absl::StatusCode. */
typedef enum moecast_status {
  MOECAST_OK = 0,
  MOECAST_CANCELLED = 1,
  MOECAST_UNKNOWN = 2,
  MOECAST_INVALID_ARGUMENT = 3,
  MOECAST_DEADLINE_EXCEEDED = 4,
  MOECAST_NOT_FOUND = 5,
  MOECAST_ALREADY_EXISTS = 6,
  MOECAST_PERMISSION_DENIED = 7,
  MOECAST_RESOURCE_EXHAUSTED = 8,
  MOECAST_FAILED_PRECONDITION = 9,
  MOECAST_ABORTED = 10,
  MOECAST_OUT_OF_RANGE = 11,
  MOECAST_UNIMPLEMENTED = 12,
  MOECAST_INTERNAL = 13,
  MOECAST_UNAVAILABLE = 14,
  MOECAST_DATA_LOSS = 15,
  MOECAST_UNAUTHENTICATED = 16
} moecast_status;

/* The library's release, e.g. "0.1.0". Static storage; never NULL. */
MOECAST_API const char* moecast_version(void);

/* The ABI version the library was built with (MOECAST_ABI_VERSION of its
 * header). Thread-safe. */
MOECAST_API int32_t moecast_abi_version(void);

/* The code's name, e.g. "INVALID_ARGUMENT"; "UNKNOWN_CODE" for a value
 * outside the enum. Static storage; never NULL. Does not touch the last
 * error. */
MOECAST_API const char* moecast_status_name(int32_t code);

/* The message of this thread's last failed moecast_* call, "" if the last
 * call succeeded (or none was made). Owned by the library; valid until the
 * next moecast_* call on this thread (copy it to keep it). Never NULL. The
 * accessors documented as "does not touch the last error" leave it alone. */
MOECAST_API const char* moecast_last_error(void);

/* The code of this thread's last moecast_* call (MOECAST_OK after a
 * success). */
MOECAST_API moecast_status moecast_last_status(void);

/* ------------------------------------------------------------------------ */
/* Enumerations                                                               */
/* ------------------------------------------------------------------------ */

/* What one ingested step stands for (moecast::StepUnit). */
typedef enum moecast_step_unit {
  MOECAST_STEP_OPTIMIZER_STEP = 0,
  MOECAST_STEP_FORWARD_PASS = 1,
  MOECAST_STEP_INTERVAL = 2
} moecast_step_unit;

/* How the router scores experts (moecast::RouterKind). */
typedef enum moecast_router_kind {
  MOECAST_ROUTER_SOFTMAX = 0,
  MOECAST_ROUTER_SIGMOID_WITH_BIAS = 1
} moecast_router_kind;

/* What happened to an ingested step (moecast::IngestOutcome). */
typedef enum moecast_ingest_outcome {
  MOECAST_INGEST_COMMITTED = 0,
  MOECAST_INGEST_PENDING = 1,
  MOECAST_INGEST_DUPLICATE = 2
} moecast_ingest_outcome;

/* A layer's or the job's load state (moecast::LoadState). */
typedef enum moecast_load_state {
  MOECAST_STATE_TRANSIENT = 0,
  MOECAST_STATE_STABLE = 1
} moecast_load_state;

/* Placement planner (moecast::PlacementMode). */
typedef enum moecast_placement_mode {
  MOECAST_PLACEMENT_DEFAULT = 0,
  MOECAST_PLACEMENT_EPLB = 1
} moecast_placement_mode;

/* gamma_eff training phase (moecast::Phase). */
typedef enum moecast_phase {
  MOECAST_PHASE_UNKNOWN = 0,
  MOECAST_PHASE_SURGE = 1,
  MOECAST_PHASE_STABILIZATION = 2,
  MOECAST_PHASE_RELAXATION = 3
} moecast_phase;

/* How E = T*H/(O+B) came out (moecast::EKind). */
typedef enum moecast_e_kind {
  MOECAST_E_FINITE = 0,
  MOECAST_E_UNBOUNDED = 1,
  MOECAST_E_INDETERMINATE = 2,
  MOECAST_E_MISSING = 3
} moecast_e_kind;

/* ------------------------------------------------------------------------ */
/* Engine                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct moecast_engine moecast_engine;

/* A subset of moecast::EngineOptions (engine/options.h documents each). */
typedef struct moecast_engine_options {
  uint32_t struct_size;               /* sizeof(moecast_engine_options) */
  int32_t max_jobs;                   /* default 1024 */
  int32_t history_capacity_steps;     /* steps kept per layer, default 1024 */
  int32_t max_pending_steps;          /* multi-source jobs, default 64 */
  int32_t health_window_steps;        /* health window, default 100 */
  int32_t health_bootstrap_replicates;/* gamma_eff CI replicates, def. 50 */
  int32_t dead_window_steps;          /* dead-expert window, default 100; an
                                         expert is dead after 3 such windows
                                         below 0.16/M of the load */
  int64_t max_job_history_bytes;      /* default 2 GiB */
  int64_t max_total_history_bytes;    /* default 16 GiB */
  double source_timeout_s;            /* multi-source commit timeout, 30 */
  double idle_job_expiry_s;           /* 0 (default): never expire */
} moecast_engine_options;

/* Fills `options` with the engine's defaults and sets struct_size. NULL is
 * ignored. Does not touch the last error. */
MOECAST_API void moecast_engine_options_init(moecast_engine_options* options);

/* Creates an engine. `options` may be NULL (all defaults); otherwise it must
 * have been set up with moecast_engine_options_init. On success *out is a new
 * engine the caller releases with moecast_engine_destroy. Errors:
 * INVALID_ARGUMENT for out == NULL, a wrong struct_size or an option out of
 * range (named); *out is then NULL (when out is not NULL). */
MOECAST_API moecast_status moecast_engine_create(
    const moecast_engine_options* options, moecast_engine** out);

/* As moecast_engine_create, choosing where the analysis (state, forecasts,
 * health) runs: analysis_inline 0 (what moecast_engine_create does) on the
 * engine's own threads, `analysis_threads` of them (0: one fewer than the
 * cores), so that ingest calls only validate and append; 1: inside each
 * ingest call, with no threads. INVALID_ARGUMENT as moecast_engine_create,
 * and for analysis_inline not 0 or 1 or analysis_threads outside [0, 256]. */
MOECAST_API moecast_status moecast_engine_create_with_analysis(
    const moecast_engine_options* options, int32_t analysis_inline,
    int32_t analysis_threads, moecast_engine** out);

/* Destroys the engine and every job in it. NULL is ignored. No other call
 * on this engine may be running or follow. Result handles stay valid. */
MOECAST_API void moecast_engine_destroy(moecast_engine* engine);

/* ------------------------------------------------------------------------ */
/* Jobs                                                                       */
/* ------------------------------------------------------------------------ */

/* moecast::JobSpec (engine/job_spec.h). Pointers are borrowed for the call. */
typedef struct moecast_job_spec {
  uint32_t struct_size;     /* sizeof(moecast_job_spec), set by _init */
  const char* job_id;       /* [A-Za-z0-9._-]{1,128}, not "." or ".." */
  int32_t num_layers;       /* L >= 1 */
  int32_t num_experts;      /* M >= 2 */
  int32_t top_k;            /* K in [1, M] */
  int32_t num_sources;      /* producers summed per step, default 1 */
  int32_t step_unit;        /* moecast_step_unit, default optimizer step */
  int32_t router;           /* moecast_router_kind, default softmax */
  int32_t forecasting;      /* nonzero (default): keep forecasts */
  int32_t health;           /* nonzero (default): health monitoring */
  /* Predictor bank, e.g. {"last_value", "ema(0.9)"}; NULL/0: the default
   * bank. Every entry non-NULL. */
  const char* const* predictors;
  size_t num_predictors;
  /* Scored horizons in steps; NULL/0: 1, 10, 100, 1000. */
  const int32_t* horizons;
  size_t num_horizons;
  /* Training hyperparameters for health; NaN (the default) = undeclared. */
  double aux_loss_coef;
  double router_temperature;
  double entropy_weight;
  double oracle_weight;
  double balance_weight;
} moecast_job_spec;

/* Zeroes `spec` (job_id NULL, sizes 0), sets the defaults noted above and
 * struct_size. NULL is ignored. Does not touch the last error. */
MOECAST_API void moecast_job_spec_init(moecast_job_spec* spec);

/* Registers a job. Errors: INVALID_ARGUMENT for NULL engine/spec, a wrong
 * struct_size, a NULL job_id, predictors/horizons NULL with a nonzero count
 * or a NULL predictor name, an enum out of range, or a malformed field
 * (named, with its value); ALREADY_EXISTS if the id is taken;
 * RESOURCE_EXHAUSTED if an engine limit would be exceeded. */
MOECAST_API moecast_status moecast_register_job(moecast_engine* engine,
                                                const moecast_job_spec* spec);

/* Removes a job and its history. INVALID_ARGUMENT for NULL arguments,
 * NOT_FOUND for an unknown job. */
MOECAST_API moecast_status moecast_delete_job(moecast_engine* engine,
                                              const char* job_id);

/* A job's shape and counters (moecast::JobInfo). */
typedef struct moecast_job_info {
  int32_t num_layers;
  int32_t num_experts;
  int32_t top_k;
  int32_t num_sources;
  int64_t committed_steps;
  int64_t first_step;        /* -1 until a step commits */
  int64_t last_step;         /* -1 until a step commits */
  int64_t gaps;
  int64_t missing_steps;
  int64_t incomplete_steps;
  int64_t duplicate_calls;
  int64_t rejected_calls;
  int64_t pending_steps;
  double tokens;
  int64_t history_bytes;
  int64_t forecast_bytes;
} moecast_job_info;

/* How far a job's analysis (state, forecasts, health) has got. Ingest only
 * appends; analysis runs behind it on the engine's threads. Every answer
 * (forecast, state, placement, health) first waits until the steps
 * committed before the call are analysed. */
typedef struct moecast_analysis_progress {
  uint32_t struct_size;        /* sizeof(moecast_analysis_progress), by _init */
  int64_t as_of_step;          /* last analysed step, -1: none */
  int64_t committed_step;      /* last committed step, -1: none */
  int64_t lag_steps;           /* committed steps not yet analysed */
  int64_t scoring_shed_steps;  /* analysed without new scoring (overload) */
  int64_t coalesced_steps;     /* analysed coalesced (overload) */
} moecast_analysis_progress;

/* Sets struct_size and zeroes the rest. NULL is ignored. */
MOECAST_API void moecast_analysis_progress_init(moecast_analysis_progress* out);

/* Waits until every step committed to the job before the call is analysed,
 * for at most timeout_s seconds (< 0: no limit; 0: do not wait), and fills
 * *out (set up with moecast_analysis_progress_init) with the progress then.
 * INVALID_ARGUMENT for NULL arguments or a wrong struct_size, NOT_FOUND for
 * an unknown job, DEADLINE_EXCEEDED (naming the step reached) when the
 * timeout passed first (*out is then not filled). */
MOECAST_API moecast_status moecast_await_analysis(moecast_engine* engine,
                                                  const char* job_id,
                                                  double timeout_s,
                                                  moecast_analysis_progress* out);

/* Fills *out with the job's info. INVALID_ARGUMENT for NULL arguments,
 * NOT_FOUND for an unknown job. */
MOECAST_API moecast_status moecast_get_job_info(moecast_engine* engine,
                                                const char* job_id,
                                                moecast_job_info* out);

/* Number of registered jobs, or -1 (INVALID_ARGUMENT) for a NULL engine. */
MOECAST_API int64_t moecast_num_jobs(moecast_engine* engine);

/* ------------------------------------------------------------------------ */
/* Ingestion                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct moecast_ingest_result {
  int32_t outcome;              /* moecast_ingest_outcome */
  int32_t num_committed;        /* steps this call committed */
  int64_t first_committed_step; /* -1 when none */
  int64_t last_committed_step;  /* -1 when none */
  int32_t num_incomplete;       /* of those, committed without every source */
  int64_t gap_steps;            /* missing step numbers before them, summed */
  char note[256];               /* remark (duplicate, empty layers), NUL-
                                   terminated, truncated; "" when none */
} moecast_ingest_result;

/* Ingests one step (or one source's part of it) of job `job_id`.
 *   step:          >= 0; increasing per source, gaps allowed.
 *   source:        in [0, num_sources); 0 for single-source jobs.
 *   counts:        num_counts = L*M values, layer-major ([l*M + e]), each
 *                  finite and >= 0. Must not be NULL.
 *   router_logits: NULL with num_router_logits = 0 (none), or L*M finite
 *                  mean pre-softmax logits.
 *   tokens:        NULL (N = sum(c)/K per layer) or a pointer to the step's
 *                  token count N (finite, >= 0, sum(c) <= N*K per layer).
 *   result:        NULL, or where to write what happened.
 * Errors: INVALID_ARGUMENT for NULL engine/job_id/counts, a pointer NULL with
 * a nonzero size, a size that is not L*M (message: the size seen and L*M),
 * a bad value (layer/expert named), an old step or a bad source; NOT_FOUND
 * for an unknown job; FAILED_PRECONDITION for a late multi-source part;
 * RESOURCE_EXHAUSTED past max_pending_steps. A duplicate step is MOECAST_OK
 * with outcome MOECAST_INGEST_DUPLICATE. */
MOECAST_API moecast_status moecast_ingest(
    moecast_engine* engine, const char* job_id, int64_t step, int32_t source,
    const double* counts, size_t num_counts, const double* router_logits,
    size_t num_router_logits, const double* tokens,
    moecast_ingest_result* result);

/* Commits every pending step of a multi-source job now (incomplete where
 * sources are missing). *num_committed (may be NULL) receives how many
 * committed. INVALID_ARGUMENT for NULL engine/job_id, NOT_FOUND. */
MOECAST_API moecast_status moecast_flush_pending(moecast_engine* engine,
                                                 const char* job_id,
                                                 int64_t* num_committed);

/* ------------------------------------------------------------------------ */
/* Forecasts                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct moecast_forecast moecast_forecast;

/* Forecasts every layer of a job (Engine::Forecast).
 *   horizons:       num_horizons horizons in steps (each >= 1); NULL/0:
 *                   the job's scored horizons.
 *   predictor:      NULL or "auto" (best recent predictor per layer and
 *                   horizon), or a name from the job's bank.
 *   interval_level: central interval level in (0, 1); 0 means 0.9.
 *   out:            receives a new result handle (moecast_forecast_destroy).
 * Errors: INVALID_ARGUMENT for NULL engine/job_id/out, horizons NULL with a
 * nonzero count, a bad horizon or level; NOT_FOUND for an unknown job or
 * predictor; FAILED_PRECONDITION before the first committed step or when
 * the job has forecasting off. *out is NULL on failure. */
MOECAST_API moecast_status moecast_forecast_create(
    moecast_engine* engine, const char* job_id, const int32_t* horizons,
    size_t num_horizons, const char* predictor, double interval_level,
    moecast_forecast** out);

/* Releases a forecast. NULL is ignored. */
MOECAST_API void moecast_forecast_destroy(moecast_forecast* forecast);

/* The forecast's shape; each output pointer may be NULL (skipped).
 * job_state: moecast_load_state. INVALID_ARGUMENT for a NULL forecast. */
MOECAST_API moecast_status moecast_forecast_shape(
    const moecast_forecast* forecast, int32_t* num_layers,
    int32_t* num_experts, int32_t* num_horizons, int64_t* as_of_step,
    int32_t* job_state);

/* *horizon = the horizon (in steps) at index horizon_index.
 * INVALID_ARGUMENT for NULL arguments or an index out of range. */
MOECAST_API moecast_status moecast_forecast_horizon(
    const moecast_forecast* forecast, int32_t horizon_index,
    int32_t* horizon);

/* Layer `layer`'s state (moecast_load_state) and drift ratio (NaN while not
 * yet defined); either output may be NULL. INVALID_ARGUMENT for a NULL
 * forecast or a layer out of range. */
MOECAST_API moecast_status moecast_forecast_layer_state(
    const moecast_forecast* forecast, int32_t layer, int32_t* state,
    double* drift_ratio);

/* Copies one layer's forecast at one horizon: mean (M shares summing to 1),
 * lower and upper interval bounds (NaN while the predictor's errors are not
 * known yet). Each buffer may be NULL (skipped); every non-NULL buffer holds
 * num_experts = M doubles. *has_interval (may be NULL) = 1 when the bounds
 * are known. INVALID_ARGUMENT for a NULL forecast, an index out of range or
 * num_experts != M. */
MOECAST_API moecast_status moecast_forecast_values(
    const moecast_forecast* forecast, int32_t layer, int32_t horizon_index,
    double* mean, double* lower, double* upper, size_t num_experts,
    int32_t* has_interval);

/* The predictor that answered layer `layer` at horizon_index, e.g.
 * "ema(0.9)". Owned by the forecast, valid until moecast_forecast_destroy.
 * NULL (and INVALID_ARGUMENT recorded) for bad arguments; on success the
 * last error is cleared. */
MOECAST_API const char* moecast_forecast_predictor(
    const moecast_forecast* forecast, int32_t layer, int32_t horizon_index);

/* One-call forecast of every layer at one horizon into caller buffers of
 * `size` = L*M doubles each (layer-major). predictor / interval_level as in
 * moecast_forecast_create. lower and upper may be NULL; where a layer's
 * bounds are not known yet they are NaN. Errors as moecast_forecast_create,
 * plus INVALID_ARGUMENT for a NULL mean, horizon < 1 or size != L*M. */
MOECAST_API moecast_status moecast_forecast_into(
    moecast_engine* engine, const char* job_id, int32_t horizon,
    const char* predictor, double interval_level, double* mean, double* lower,
    double* upper, size_t size);

/* The job's state (Engine::GetState): *as_of_step, *job_state and, per
 * layer, layer_states[l] (moecast_load_state) and drift_ratios[l] (NaN while
 * undefined). Every output may be NULL; non-NULL per-layer buffers hold
 * num_layers = L values. Errors: INVALID_ARGUMENT for NULL engine/job_id or
 * num_layers != L with a buffer; NOT_FOUND; FAILED_PRECONDITION before the
 * first step or with forecasting off. */
MOECAST_API moecast_status moecast_get_state(moecast_engine* engine,
                                             const char* job_id,
                                             int64_t* as_of_step,
                                             int32_t* job_state,
                                             int32_t* layer_states,
                                             double* drift_ratios,
                                             size_t num_layers);

/* ------------------------------------------------------------------------ */
/* Placement                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct moecast_placement moecast_placement;

/* moecast::MigrationModel (engine/placement/placement.h). */
typedef struct moecast_migration_model {
  uint32_t struct_size;          /* sizeof(moecast_migration_model) */
  double bytes_per_expert;       /* 0: each transfer's own bytes */
  double intra_node_bandwidth;   /* bytes/s, > 0 */
  double inter_node_bandwidth;   /* bytes/s, > 0 */
  double tokens_per_step;        /* token-expert assignments per layer-step */
  double time_per_token_s;       /* GPU seconds per assignment */
  double horizon_steps;          /* steps the new placement serves */
  int32_t overlap;               /* nonzero: migration overlaps compute */
  double overlap_cost_fraction;  /* default 0.2 */
  double transient_margin;       /* default 1.0 */
} moecast_migration_model;

/* Defaults (zeros, overlap_cost_fraction 0.2, transient_margin 1) and
 * struct_size. NULL is ignored. Does not touch the last error. */
MOECAST_API void moecast_migration_model_init(moecast_migration_model* model);

/* moecast::PlacementRequest (engine/recommend.h). */
typedef struct moecast_placement_request {
  uint32_t struct_size;            /* sizeof(moecast_placement_request) */
  int32_t num_slots;               /* S: multiple of num_gpus, >= M */
  int32_t num_gpus;                /* P: multiple of num_nodes */
  int32_t num_nodes;               /* default 1 */
  int32_t num_groups;              /* expert groups dividing M, default 1 */
  const int32_t* excluded_gpus;    /* NULL/0: none */
  size_t num_excluded_gpus;
  const int32_t* current_phy2log;  /* NULL/0: none; else L*S, -1 = empty */
  size_t num_current_phy2log;
  int32_t mode;                    /* moecast_placement_mode */
  int64_t move_budget;             /* -1 (default): no limit */
  int64_t bytes_per_expert;        /* default 0 */
  int32_t max_extra_experts_per_gpu; /* per migration stage, default 1 */
  int32_t horizon;                 /* plan on the mean over this many steps,
                                      default 100 */
  const char* predictor;           /* NULL: "auto" */
  int32_t upper_bounds_when_transient; /* default 1 */
  double interval_level;           /* default 0.9 */
  const moecast_migration_model* migration; /* NULL: no decision */
} moecast_placement_request;

/* Defaults as noted above and struct_size. NULL is ignored. Does not touch
 * the last error. */
MOECAST_API void moecast_placement_request_init(
    moecast_placement_request* request);

/* Recommends a placement for the job from its forecasts
 * (Engine::RecommendPlacement). On success *out is a new handle
 * (moecast_placement_destroy). Errors: INVALID_ARGUMENT for NULL
 * engine/job_id/request/out, a wrong struct_size (request or migration), a
 * NULL array with a nonzero count, num_current_phy2log not 0 or L*S, an enum
 * out of range, an inconsistent cluster (the planner's message); otherwise
 * as moecast_forecast_create. *out is NULL on failure. */
MOECAST_API moecast_status moecast_recommend_placement(
    moecast_engine* engine, const char* job_id,
    const moecast_placement_request* request, moecast_placement** out);

/* Releases a placement. NULL is ignored. */
MOECAST_API void moecast_placement_destroy(moecast_placement* placement);

typedef struct moecast_placement_summary {
  int64_t as_of_step;
  int32_t job_state;          /* moecast_load_state */
  int32_t horizon;
  int32_t num_layers;         /* L */
  int32_t num_experts;        /* M */
  int32_t num_slots;          /* S */
  int32_t num_gpus;           /* P */
  int32_t num_nodes;
  int32_t max_replicas;
  int32_t num_upper_bound_layers; /* layers planned on upper bounds */
  int32_t num_transfers;
  int32_t num_stages;
  double balancedness;        /* mean/max GPU load, averaged over layers */
  double balancedness_summed;
  double max_over_mean;
  int64_t moved_experts;
  int64_t moved_bytes;
  int64_t forced_moves;
  int32_t has_current;        /* a current placement was given */
  double current_balancedness;  /* its score on the same loads, else NaN */
  double current_max_over_mean;
  int32_t has_decision;       /* current placement and migration given */
  int32_t rebalance;          /* the decision: 1 = move now */
  double step_time_current_s;
  double step_time_proposed_s;
  double saved_s;
  double migration_s;
  double cost_s;
  double required_s;
} moecast_placement_summary;

/* Fills *out. INVALID_ARGUMENT for NULL arguments. */
MOECAST_API moecast_status moecast_placement_get_summary(
    const moecast_placement* placement, moecast_placement_summary* out);

/* Copies the plan's phy2log (L*S int32, -1 = empty slot), logcnt (L*M
 * replica counts), gpu_loads (L*P) or the planned-on loads (L*M shares).
 * `size` must equal that count. INVALID_ARGUMENT for NULL arguments or a
 * size mismatch (both sizes in the message). */
MOECAST_API moecast_status moecast_placement_phy2log(
    const moecast_placement* placement, int32_t* out, size_t size);
MOECAST_API moecast_status moecast_placement_logcnt(
    const moecast_placement* placement, int32_t* out, size_t size);
MOECAST_API moecast_status moecast_placement_gpu_loads(
    const moecast_placement* placement, double* out, size_t size);
MOECAST_API moecast_status moecast_placement_loads(
    const moecast_placement* placement, double* out, size_t size);

/* One expert copied to a GPU that did not hold it (moecast::Transfer). */
typedef struct moecast_transfer {
  int32_t layer;
  int32_t expert;
  int32_t from_gpu;  /* -1: no GPU held it */
  int32_t to_gpu;
  int64_t bytes;
  int32_t stage;
} moecast_transfer;

/* Copies the migration's transfers; `count` must equal num_transfers of the
 * summary (out may be NULL when it is 0). */
MOECAST_API moecast_status moecast_placement_transfers(
    const moecast_placement* placement, moecast_transfer* out, size_t count);

/* The rebalance decision's reason, "" without a decision. Owned by the
 * placement (valid until destroy); NULL for a NULL placement. */
MOECAST_API const char* moecast_placement_decision_reason(
    const moecast_placement* placement);

/* ------------------------------------------------------------------------ */
/* Health                                                                     */
/* ------------------------------------------------------------------------ */

/* One layer's last completed health window (moecast::HealthWindow). */
typedef struct moecast_layer_health {
  int64_t window_step;        /* the window's last step; -1: none yet */
  int32_t window_steps;
  int32_t phase;              /* moecast_phase */
  int32_t has_gamma;          /* gamma_eff fitted (needs router logits) */
  double gamma_f;             /* NaN without a fit */
  double gamma_ci_low_f;      /* bootstrap CI, NaN without */
  double gamma_ci_high_f;
  double max_over_mean;       /* imbalance of the window's counts */
  double max_vio;
  double coefficient_of_variation;
  double normalized_entropy;
  int32_t num_dead_experts;
  char gamma_status[128];     /* why gamma is missing ("" when fitted),
                                 truncated */
} moecast_layer_health;

typedef struct moecast_health_summary {
  int64_t as_of_step;
  int32_t num_layers;
  int32_t total_dead_experts; /* over layers */
  int32_t e_kind;             /* moecast_e_kind */
  double e_value;             /* E when e_kind == MOECAST_E_FINITE, else NaN
                                 (+inf when unbounded) */
  int32_t e_below_threshold;
} moecast_health_summary;

/* The router's health (Engine::Health). summary may be NULL; layers may be
 * NULL (then num_layers is ignored), otherwise it holds num_layers = L
 * entries. Errors: INVALID_ARGUMENT for NULL engine/job_id or num_layers !=
 * L; NOT_FOUND; FAILED_PRECONDITION when the job has health off or no
 * window has completed. */
MOECAST_API moecast_status moecast_health(moecast_engine* engine,
                                          const char* job_id,
                                          moecast_health_summary* summary,
                                          moecast_layer_health* layers,
                                          size_t num_layers);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MOECAST_INTEGRATIONS_C_API_MOECAST_C_H_ */
