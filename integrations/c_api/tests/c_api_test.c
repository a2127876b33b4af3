/* Tests of the moecast C API from C (compiled as C99 against moecast_c.h and
 * linked with libmoecast.so): the happy path (register, ingest, forecast,
 * state, placement, health) and bad input of every kind (NULL handles and
 * buffers, wrong sizes, uninitialized structs, unknown jobs), checking the
 * code, that the message names the problem and that a rejected call changed
 * nothing. Prints "N checks, M failed" and exits 1 on any failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "integrations/c_api/moecast_c.h"

static int g_checks = 0;
static int g_failed = 0;

#define CHECK(cond)                                                     \
  do {                                                                  \
    ++g_checks;                                                         \
    if (!(cond)) {                                                      \
      ++g_failed;                                                       \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n",     \
              __FILE__, __LINE__, #cond, moecast_last_error());         \
    }                                                                   \
  } while (0)

/* The call returns `code` and the thread's last error contains `needle`. */
#define EXPECT_ERROR(call, code, needle)                                     \
  do {                                                                       \
    moecast_status st_ = (call);                                             \
    ++g_checks;                                                              \
    if (st_ != (code) || moecast_last_status() != (code) ||                  \
        strstr(moecast_last_error(), (needle)) == NULL) {                    \
      ++g_failed;                                                            \
      fprintf(stderr,                                                        \
              "%s:%d: %s returned %s (\"%s\"), expected %s containing "      \
              "\"%s\"\n",                                                    \
              __FILE__, __LINE__, #call, moecast_status_name(st_),           \
              moecast_last_error(), moecast_status_name(code), (needle));    \
    }                                                                        \
  } while (0)

#define EXPECT_OK(call)                                                  \
  do {                                                                   \
    moecast_status st_ = (call);                                         \
    ++g_checks;                                                          \
    if (st_ != MOECAST_OK || moecast_last_error()[0] != '\0') {          \
      ++g_failed;                                                        \
      fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, \
              #call, moecast_status_name(st_), moecast_last_error());    \
    }                                                                    \
  } while (0)

enum { L = 2, M = 8, K = 2, STEPS = 60 };
static const char* const kJob = "c-test";

static unsigned g_rng = 12345u;
static double Uniform(void) {
  g_rng = g_rng * 1103515245u + 12345u;
  return (double)((g_rng >> 8) & 0xFFFF) / 65536.0;
}

/* Counts of step t: expert e gets a load that favours low e; layer 1's
 * expert M-1 never gets any (so it dies). Sum per layer about 400. */
static void MakeStep(double* counts, double* logits) {
  for (int l = 0; l < L; ++l) {
    for (int e = 0; e < M; ++e) {
      double c = (l == 1 && e == M - 1) ? 0 : floor(10.0 * (M - e) + 20.0 * Uniform());
      counts[l * M + e] = c;
      logits[l * M + e] = 0.1 * (M - e) + 0.01 * Uniform();
    }
  }
}

static void TestVersionAndStatus(void) {
  CHECK(moecast_abi_version() == MOECAST_ABI_VERSION);
  CHECK(strcmp(moecast_version(), MOECAST_VERSION_STRING) == 0);
  CHECK(strcmp(moecast_status_name(MOECAST_OK), "OK") == 0);
  CHECK(strcmp(moecast_status_name(MOECAST_NOT_FOUND), "NOT_FOUND") == 0);
  CHECK(strcmp(moecast_status_name(MOECAST_RESOURCE_EXHAUSTED),
               "RESOURCE_EXHAUSTED") == 0);
  CHECK(strcmp(moecast_status_name(99), "UNKNOWN_CODE") == 0);
  CHECK(MOECAST_INVALID_ARGUMENT == 3 && MOECAST_FAILED_PRECONDITION == 9);
}

static void TestCreateErrors(void) {
  moecast_engine* engine = (moecast_engine*)0x1; /* must be reset to NULL */
  moecast_engine_options options;

  EXPECT_ERROR(moecast_engine_create(NULL, NULL), MOECAST_INVALID_ARGUMENT,
               "out (moecast_engine**) is NULL");

  memset(&options, 0, sizeof(options)); /* struct_size 0: not initialized */
  EXPECT_ERROR(moecast_engine_create(&options, &engine),
               MOECAST_INVALID_ARGUMENT,
               "moecast_engine_options.struct_size is 0");
  CHECK(engine == NULL);

  moecast_engine_options_init(&options);
  CHECK(options.struct_size == sizeof(options));
  CHECK(options.max_jobs == 1024 && options.history_capacity_steps == 1024);
  CHECK(options.health_window_steps == 100 && options.dead_window_steps == 100);
  options.history_capacity_steps = 1;
  EXPECT_ERROR(moecast_engine_create(&options, &engine),
               MOECAST_INVALID_ARGUMENT, "history_capacity_steps = 1");
  CHECK(engine == NULL);

  moecast_engine_options_init(&options);
  options.source_timeout_s = NAN;
  EXPECT_ERROR(moecast_engine_create(&options, &engine),
               MOECAST_INVALID_ARGUMENT, "source_timeout_s");

  moecast_engine_options_init(&options);
  options.health_window_steps = 1;
  EXPECT_ERROR(moecast_engine_create(&options, &engine),
               MOECAST_INVALID_ARGUMENT, "window_steps = 1");

  /* Defaults; NULL destroys are no-ops. */
  EXPECT_OK(moecast_engine_create(NULL, &engine));
  CHECK(engine != NULL);
  CHECK(moecast_num_jobs(engine) == 0);
  moecast_engine_destroy(engine);
  moecast_engine_destroy(NULL);
  moecast_forecast_destroy(NULL);
  moecast_placement_destroy(NULL);
}

static void TestRegisterErrors(moecast_engine* engine) {
  moecast_job_spec spec;
  const char* bad_predictors[2] = {"last_value", NULL};
  const char* predictors[2] = {"last_value", "ema(0.9)"};

  moecast_job_spec_init(&spec);
  spec.job_id = kJob;
  spec.num_layers = L;
  spec.num_experts = M;
  spec.top_k = K;

  EXPECT_ERROR(moecast_register_job(NULL, &spec), MOECAST_INVALID_ARGUMENT,
               "engine is NULL");
  EXPECT_ERROR(moecast_register_job(engine, NULL), MOECAST_INVALID_ARGUMENT,
               "spec (moecast_job_spec*) is NULL");
  {
    moecast_job_spec raw;
    memset(&raw, 0, sizeof(raw));
    raw.job_id = kJob;
    EXPECT_ERROR(moecast_register_job(engine, &raw), MOECAST_INVALID_ARGUMENT,
                 "moecast_job_spec.struct_size is 0");
  }
  spec.job_id = NULL;
  EXPECT_ERROR(moecast_register_job(engine, &spec), MOECAST_INVALID_ARGUMENT,
               "spec->job_id is NULL");
  spec.job_id = "bad id!";
  EXPECT_ERROR(moecast_register_job(engine, &spec), MOECAST_INVALID_ARGUMENT,
               "");
  spec.job_id = kJob;
  spec.num_predictors = 2;
  EXPECT_ERROR(moecast_register_job(engine, &spec), MOECAST_INVALID_ARGUMENT,
               "spec->predictors is NULL but spec->num_predictors is 2");
  spec.predictors = bad_predictors;
  EXPECT_ERROR(moecast_register_job(engine, &spec), MOECAST_INVALID_ARGUMENT,
               "spec->predictors[1] is NULL");
  spec.predictors = predictors;
  spec.num_horizons = 1;
  EXPECT_ERROR(moecast_register_job(engine, &spec), MOECAST_INVALID_ARGUMENT,
               "spec->horizons is NULL but spec->num_horizons is 1");
  spec.num_horizons = 0;
  spec.step_unit = 7;
  EXPECT_ERROR(moecast_register_job(engine, &spec), MOECAST_INVALID_ARGUMENT,
               "spec->step_unit = 7");
  spec.step_unit = MOECAST_STEP_OPTIMIZER_STEP;
  spec.router = -1;
  EXPECT_ERROR(moecast_register_job(engine, &spec), MOECAST_INVALID_ARGUMENT,
               "spec->router = -1");
  spec.router = MOECAST_ROUTER_SOFTMAX;
  spec.top_k = M + 1;
  EXPECT_ERROR(moecast_register_job(engine, &spec), MOECAST_INVALID_ARGUMENT,
               "top_k");
  spec.top_k = K;
  {
    const char* unknown[1] = {"no_such_predictor"};
    spec.predictors = unknown;
    spec.num_predictors = 1;
    CHECK(moecast_register_job(engine, &spec) != MOECAST_OK);
    CHECK(strstr(moecast_last_error(), "no_such_predictor") != NULL);
  }
  CHECK(moecast_num_jobs(engine) == 0); /* nothing was registered */
  CHECK(moecast_num_jobs(NULL) == -1);
  CHECK(moecast_last_status() == MOECAST_INVALID_ARGUMENT);
}

static void RegisterJob(moecast_engine* engine) {
  moecast_job_spec spec;
  const char* predictors[2] = {"last_value", "ema(0.9)"};
  const int32_t horizons[2] = {1, 5};
  moecast_job_info info;

  moecast_job_spec_init(&spec);
  spec.job_id = kJob;
  spec.num_layers = L;
  spec.num_experts = M;
  spec.top_k = K;
  spec.predictors = predictors;
  spec.num_predictors = 2;
  spec.horizons = horizons;
  spec.num_horizons = 2;
  spec.aux_loss_coef = 0.01;
  EXPECT_OK(moecast_register_job(engine, &spec));
  EXPECT_ERROR(moecast_register_job(engine, &spec), MOECAST_ALREADY_EXISTS,
               "c-test");
  CHECK(moecast_num_jobs(engine) == 1);

  EXPECT_ERROR(moecast_get_job_info(engine, kJob, NULL),
               MOECAST_INVALID_ARGUMENT, "out (moecast_job_info*) is NULL");
  EXPECT_ERROR(moecast_get_job_info(engine, "nope", &info), MOECAST_NOT_FOUND,
               "nope");
  EXPECT_OK(moecast_get_job_info(engine, kJob, &info));
  CHECK(info.num_layers == L && info.num_experts == M && info.top_k == K);
  CHECK(info.num_sources == 1 && info.committed_steps == 0);
  CHECK(info.first_step == -1 && info.last_step == -1);
}

static void TestIngestErrors(moecast_engine* engine) {
  double counts[L * M], logits[L * M];
  double tokens = 1.0; /* far too few for the counts */
  moecast_job_info info;
  moecast_ingest_result result;
  MakeStep(counts, logits);

  EXPECT_ERROR(moecast_ingest(NULL, kJob, 0, 0, counts, L * M, NULL, 0, NULL,
                              NULL),
               MOECAST_INVALID_ARGUMENT, "engine is NULL");
  EXPECT_ERROR(moecast_ingest(engine, NULL, 0, 0, counts, L * M, NULL, 0, NULL,
                              NULL),
               MOECAST_INVALID_ARGUMENT, "job_id is NULL");
  EXPECT_ERROR(moecast_ingest(engine, kJob, 0, 0, NULL, L * M, NULL, 0, NULL,
                              NULL),
               MOECAST_INVALID_ARGUMENT, "counts is NULL");
  EXPECT_ERROR(moecast_ingest(engine, kJob, 0, 0, counts, L * M - 1, NULL, 0,
                              NULL, NULL),
               MOECAST_INVALID_ARGUMENT, "15");
  EXPECT_ERROR(moecast_ingest(engine, kJob, 0, 0, counts, L * M, NULL, 3, NULL,
                              NULL),
               MOECAST_INVALID_ARGUMENT,
               "router_logits is NULL but num_router_logits is 3");
  EXPECT_ERROR(moecast_ingest(engine, kJob, 0, 0, counts, L * M, logits, 5,
                              NULL, NULL),
               MOECAST_INVALID_ARGUMENT, "5");
  EXPECT_ERROR(moecast_ingest(engine, kJob, 0, 0, counts, L * M, NULL, 0,
                              &tokens, NULL),
               MOECAST_INVALID_ARGUMENT, "token");
  EXPECT_ERROR(moecast_ingest(engine, kJob, -1, 0, counts, L * M, NULL, 0,
                              NULL, NULL),
               MOECAST_INVALID_ARGUMENT, "-1");
  EXPECT_ERROR(moecast_ingest(engine, kJob, 0, 3, counts, L * M, NULL, 0, NULL,
                              NULL),
               MOECAST_INVALID_ARGUMENT, "source");
  EXPECT_ERROR(moecast_ingest(engine, "unknown-job", 0, 0, counts, L * M, NULL,
                              0, NULL, NULL),
               MOECAST_NOT_FOUND, "unknown-job");
  counts[5] = -2;
  EXPECT_ERROR(moecast_ingest(engine, kJob, 0, 0, counts, L * M, NULL, 0, NULL,
                              NULL),
               MOECAST_INVALID_ARGUMENT, "-2");
  counts[5] = NAN;
  CHECK(moecast_ingest(engine, kJob, 0, 0, counts, L * M, NULL, 0, NULL,
                       NULL) == MOECAST_INVALID_ARGUMENT);

  /* Nothing of that was accepted; the result struct was not written. */
  memset(&result, 0x5a, sizeof(result));
  CHECK(moecast_ingest(engine, kJob, 0, 0, NULL, 0, NULL, 0, NULL, &result) ==
        MOECAST_INVALID_ARGUMENT);
  CHECK(result.outcome == 0x5a5a5a5a);
  EXPECT_OK(moecast_get_job_info(engine, kJob, &info));
  CHECK(info.committed_steps == 0 && info.last_step == -1);
  CHECK(info.rejected_calls >= 6);
}

static void TestBeforeFirstStep(moecast_engine* engine) {
  double mean[L * M];
  moecast_forecast* f = (moecast_forecast*)0x1;
  EXPECT_ERROR(moecast_forecast_into(engine, kJob, 1, NULL, 0, mean, NULL,
                                     NULL, L * M),
               MOECAST_FAILED_PRECONDITION, "");
  EXPECT_ERROR(moecast_forecast_create(engine, kJob, NULL, 0, NULL, 0, &f),
               MOECAST_FAILED_PRECONDITION, "");
  CHECK(f == NULL);
  EXPECT_ERROR(moecast_health(engine, kJob, NULL, NULL, 0),
               MOECAST_FAILED_PRECONDITION, "");
}

static void IngestSteps(moecast_engine* engine) {
  double counts[L * M], logits[L * M];
  moecast_ingest_result result;
  moecast_job_info info;
  for (int t = 0; t < STEPS; ++t) {
    double tokens = 0;
    MakeStep(counts, logits);
    for (int e = 0; e < M; ++e) tokens += counts[e];
    tokens = tokens / K + 1; /* N with sum(c) <= N*K in every layer */
    {
      double tokens1 = 0;
      for (int e = 0; e < M; ++e) tokens1 += counts[M + e];
      if (tokens1 / K + 1 > tokens) tokens = tokens1 / K + 1;
    }
    memset(&result, 0, sizeof(result));
    EXPECT_OK(moecast_ingest(engine, kJob, 100 + t, 0, counts, L * M, logits,
                             L * M, &tokens, &result));
    CHECK(result.outcome == MOECAST_INGEST_COMMITTED);
    CHECK(result.num_committed == 1);
    CHECK(result.first_committed_step == 100 + t);
    CHECK(result.last_committed_step == 100 + t);
    CHECK(result.num_incomplete == 0);
  }
  /* Re-sending the last step is a no-op; an older one is rejected. */
  EXPECT_OK(moecast_ingest(engine, kJob, 100 + STEPS - 1, 0, counts, L * M,
                           NULL, 0, NULL, &result));
  CHECK(result.outcome == MOECAST_INGEST_DUPLICATE);
  CHECK(result.num_committed == 0 && result.last_committed_step == -1);
  CHECK(strlen(result.note) > 0);
  EXPECT_ERROR(moecast_ingest(engine, kJob, 100, 0, counts, L * M, NULL, 0,
                              NULL, NULL),
               MOECAST_INVALID_ARGUMENT, "100");
  EXPECT_OK(moecast_get_job_info(engine, kJob, &info));
  CHECK(info.committed_steps == STEPS);
  CHECK(info.first_step == 100 && info.last_step == 100 + STEPS - 1);
  CHECK(info.duplicate_calls == 1);
}

static void TestForecast(moecast_engine* engine) {
  double mean[L * M], lower[L * M], upper[L * M];
  double m1[M], lo1[M], up1[M];
  const int32_t horizons[2] = {1, 5};
  const int32_t bad_horizon[1] = {0};
  moecast_forecast* f = NULL;
  int32_t layers = -1, experts = -1, nh = -1, state = -1, h = -1,
          has_interval = -1;
  int64_t as_of = -1;
  double drift = 0;

  EXPECT_ERROR(moecast_forecast_into(engine, kJob, 5, NULL, 0, NULL, NULL,
                                     NULL, L * M),
               MOECAST_INVALID_ARGUMENT, "mean is NULL");
  EXPECT_ERROR(moecast_forecast_into(engine, kJob, 5, NULL, 0, mean, NULL,
                                     NULL, L * M + 1),
               MOECAST_INVALID_ARGUMENT, "size is 17, expected 16");
  EXPECT_ERROR(moecast_forecast_into(engine, kJob, 0, NULL, 0, mean, NULL,
                                     NULL, L * M),
               MOECAST_INVALID_ARGUMENT, "horizon = 0");
  EXPECT_ERROR(moecast_forecast_into(engine, kJob, 5, "holt", 0, mean, NULL,
                                     NULL, L * M),
               MOECAST_NOT_FOUND, "holt");
  EXPECT_ERROR(moecast_forecast_into(engine, kJob, 5, NULL, 1.5, mean, NULL,
                                     NULL, L * M),
               MOECAST_INVALID_ARGUMENT, "1.5");
  EXPECT_ERROR(moecast_forecast_into(engine, "gone", 5, NULL, 0, mean, NULL,
                                     NULL, L * M),
               MOECAST_NOT_FOUND, "gone");

  EXPECT_OK(moecast_forecast_into(engine, kJob, 5, "ema(0.9)", 0.8, mean,
                                  lower, upper, L * M));
  for (int l = 0; l < L; ++l) {
    double sum = 0;
    for (int e = 0; e < M; ++e) {
      const double v = mean[l * M + e];
      CHECK(v >= 0 && v <= 1);
      sum += v;
      /* After 60 steps the errors at horizon 5 are known. */
      CHECK(!isnan(lower[l * M + e]) && !isnan(upper[l * M + e]));
      CHECK(lower[l * M + e] <= v + 1e-12 && v <= upper[l * M + e] + 1e-12);
    }
    CHECK(fabs(sum - 1) < 1e-9);
  }
  /* Expert 0 gets the most load, layer 1's last expert none. */
  CHECK(mean[0] > mean[M - 1]);
  CHECK(mean[M + M - 1] < 1e-9);

  EXPECT_ERROR(moecast_forecast_create(engine, kJob, NULL, 2, NULL, 0, &f),
               MOECAST_INVALID_ARGUMENT,
               "horizons is NULL but num_horizons is 2");
  EXPECT_ERROR(moecast_forecast_create(engine, kJob, bad_horizon, 1, NULL, 0,
                                       &f),
               MOECAST_INVALID_ARGUMENT, "");
  CHECK(f == NULL);
  EXPECT_ERROR(moecast_forecast_create(engine, kJob, horizons, 2, NULL, 0,
                                       NULL),
               MOECAST_INVALID_ARGUMENT, "out (moecast_forecast**) is NULL");
  EXPECT_OK(moecast_forecast_create(engine, kJob, horizons, 2, NULL, 0.9, &f));
  CHECK(f != NULL);
  EXPECT_OK(moecast_forecast_shape(f, &layers, &experts, &nh, &as_of, &state));
  CHECK(layers == L && experts == M && nh == 2);
  CHECK(as_of == 100 + STEPS - 1);
  CHECK(state == MOECAST_STATE_TRANSIENT || state == MOECAST_STATE_STABLE);
  EXPECT_OK(moecast_forecast_shape(f, NULL, NULL, NULL, NULL, NULL));
  EXPECT_ERROR(moecast_forecast_shape(NULL, &layers, NULL, NULL, NULL, NULL),
               MOECAST_INVALID_ARGUMENT, "forecast is NULL");
  EXPECT_OK(moecast_forecast_horizon(f, 1, &h));
  CHECK(h == 5);
  EXPECT_ERROR(moecast_forecast_horizon(f, 2, &h), MOECAST_INVALID_ARGUMENT,
               "horizon_index 2 is out of range [0, 2)");
  EXPECT_ERROR(moecast_forecast_horizon(f, 0, NULL), MOECAST_INVALID_ARGUMENT,
               "horizon (int32_t*) is NULL");
  EXPECT_OK(moecast_forecast_layer_state(f, 1, &state, &drift));
  EXPECT_ERROR(moecast_forecast_layer_state(f, L, &state, &drift),
               MOECAST_INVALID_ARGUMENT, "layer 2 is out of range");
  EXPECT_ERROR(moecast_forecast_values(f, 0, 0, m1, lo1, up1, M - 1, NULL),
               MOECAST_INVALID_ARGUMENT, "num_experts is 7, expected 8");
  EXPECT_ERROR(moecast_forecast_values(f, -1, 0, m1, lo1, up1, M, NULL),
               MOECAST_INVALID_ARGUMENT, "layer -1");
  EXPECT_OK(moecast_forecast_values(f, 1, 1, m1, lo1, up1, M, &has_interval));
  CHECK(has_interval == 1);
  {
    double sum = 0;
    for (int e = 0; e < M; ++e) sum += m1[e];
    CHECK(fabs(sum - 1) < 1e-9);
  }
  EXPECT_OK(moecast_forecast_values(f, 0, 0, NULL, NULL, up1, M, NULL));
  {
    const char* p = moecast_forecast_predictor(f, 0, 1);
    CHECK(p != NULL && (strcmp(p, "last_value") == 0 ||
                        strcmp(p, "ema(0.9)") == 0));
    CHECK(moecast_last_status() == MOECAST_OK);
    CHECK(moecast_forecast_predictor(f, 0, 9) == NULL);
    CHECK(moecast_last_status() == MOECAST_INVALID_ARGUMENT);
    CHECK(moecast_forecast_predictor(NULL, 0, 0) == NULL);
  }
  moecast_forecast_destroy(f);
}

static void TestCreateWithAnalysis(void) {
  moecast_engine* e = NULL;
  EXPECT_ERROR(moecast_engine_create_with_analysis(NULL, 2, 0, &e),
               MOECAST_INVALID_ARGUMENT, "analysis_inline = 2");
  CHECK(e == NULL);
  EXPECT_ERROR(moecast_engine_create_with_analysis(NULL, 0, -1, &e),
               MOECAST_INVALID_ARGUMENT, "step_threads = -1");
  EXPECT_OK(moecast_engine_create_with_analysis(NULL, 1, 0, &e));
  CHECK(e != NULL);
  moecast_engine_destroy(e);
  e = NULL;
  EXPECT_OK(moecast_engine_create_with_analysis(NULL, 0, 2, &e));
  CHECK(e != NULL);
  moecast_engine_destroy(e);
}

static void TestAnalysisProgress(moecast_engine* engine) {
  moecast_analysis_progress p;
  moecast_analysis_progress bad;
  moecast_analysis_progress_init(&p);
  CHECK(p.struct_size == sizeof(p) && p.as_of_step == -1);
  EXPECT_ERROR(moecast_await_analysis(engine, kJob, -1, NULL),
               MOECAST_INVALID_ARGUMENT, "out (moecast_analysis_progress*) is NULL");
  EXPECT_ERROR(moecast_await_analysis(engine, "nope", -1, &p), MOECAST_NOT_FOUND,
               "nope");
  memset(&bad, 0, sizeof(bad));
  EXPECT_ERROR(moecast_await_analysis(engine, kJob, -1, &bad),
               MOECAST_INVALID_ARGUMENT, "moecast_analysis_progress.struct_size");
  EXPECT_ERROR(moecast_await_analysis(engine, kJob, NAN, &p),
               MOECAST_INVALID_ARGUMENT, "timeout_s is NaN");
  /* Without a limit: every committed step is analysed on return. */
  EXPECT_OK(moecast_await_analysis(engine, kJob, -1, &p));
  CHECK(p.lag_steps == 0 && p.as_of_step == p.committed_step);
  CHECK(p.as_of_step >= 0 && p.scoring_shed_steps == 0 && p.coalesced_steps == 0);
  /* Not waiting at all answers too. */
  EXPECT_OK(moecast_await_analysis(engine, kJob, 0, &p));
  CHECK(p.committed_step >= p.as_of_step);
}

static void TestState(moecast_engine* engine) {
  int32_t states[L] = {-1, -1}, job_state = -1;
  double drift[L];
  int64_t as_of = -1;
  EXPECT_ERROR(moecast_get_state(engine, kJob, &as_of, &job_state, states,
                                 drift, L + 1),
               MOECAST_INVALID_ARGUMENT, "num_layers is 3, expected 2");
  CHECK(as_of == -1); /* untouched on failure */
  EXPECT_OK(moecast_get_state(engine, kJob, &as_of, &job_state, states, drift,
                              L));
  CHECK(as_of == 100 + STEPS - 1);
  for (int l = 0; l < L; ++l) {
    CHECK(states[l] == MOECAST_STATE_TRANSIENT ||
          states[l] == MOECAST_STATE_STABLE);
    CHECK(!isnan(drift[l])); /* defined once the window has 3 steps */
  }
  EXPECT_OK(moecast_get_state(engine, kJob, NULL, NULL, NULL, NULL, 0));
  EXPECT_ERROR(moecast_get_state(engine, "nope", NULL, NULL, NULL, NULL, 0),
               MOECAST_NOT_FOUND, "nope");
}

static void TestPlacement(moecast_engine* engine) {
  enum { S = 12, P = 4 };
  moecast_placement_request request;
  moecast_migration_model model;
  moecast_placement* p = (moecast_placement*)0x1;
  moecast_placement_summary s;
  int32_t phy2log[L * S], logcnt[L * M], current[L * S];
  double gpu_loads[L * P], loads[L * M];

  moecast_placement_request_init(&request);
  CHECK(request.struct_size == sizeof(request));
  CHECK(request.num_nodes == 1 && request.num_groups == 1);
  CHECK(request.horizon == 100 && request.move_budget == -1);
  request.num_slots = S;
  request.num_gpus = P;
  request.horizon = 5;

  EXPECT_ERROR(moecast_recommend_placement(engine, kJob, NULL, &p),
               MOECAST_INVALID_ARGUMENT, "request");
  CHECK(p == NULL);
  EXPECT_ERROR(moecast_recommend_placement(engine, kJob, &request, NULL),
               MOECAST_INVALID_ARGUMENT, "out (moecast_placement**) is NULL");
  request.struct_size = 8;
  EXPECT_ERROR(moecast_recommend_placement(engine, kJob, &request, &p),
               MOECAST_INVALID_ARGUMENT,
               "moecast_placement_request.struct_size is 8");
  request.struct_size = sizeof(request);
  request.num_excluded_gpus = 1;
  EXPECT_ERROR(moecast_recommend_placement(engine, kJob, &request, &p),
               MOECAST_INVALID_ARGUMENT, "request->excluded_gpus is NULL");
  request.num_excluded_gpus = 0;
  request.mode = 5;
  EXPECT_ERROR(moecast_recommend_placement(engine, kJob, &request, &p),
               MOECAST_INVALID_ARGUMENT, "request->mode = 5");
  request.mode = MOECAST_PLACEMENT_DEFAULT;
  request.num_slots = 10; /* not a multiple of 4 GPUs */
  EXPECT_ERROR(moecast_recommend_placement(engine, kJob, &request, &p),
               MOECAST_INVALID_ARGUMENT, "10");
  request.num_slots = S;
  request.current_phy2log = current;
  request.num_current_phy2log = S; /* L*S expected */
  EXPECT_ERROR(moecast_recommend_placement(engine, kJob, &request, &p),
               MOECAST_INVALID_ARGUMENT,
               "request->num_current_phy2log is 12, expected 24");
  request.current_phy2log = NULL;
  request.num_current_phy2log = 0;
  EXPECT_ERROR(moecast_recommend_placement(engine, "nope", &request, &p),
               MOECAST_NOT_FOUND, "nope");

  /* A plan without a current placement. */
  EXPECT_OK(moecast_recommend_placement(engine, kJob, &request, &p));
  CHECK(p != NULL);
  EXPECT_OK(moecast_placement_get_summary(p, &s));
  CHECK(s.num_layers == L && s.num_experts == M && s.num_slots == S &&
        s.num_gpus == P && s.num_nodes == 1 && s.horizon == 5);
  CHECK(s.balancedness > 0.5 && s.balancedness <= 1 + 1e-12);
  CHECK(s.has_current == 0 && isnan(s.current_balancedness));
  CHECK(s.has_decision == 0 && s.num_transfers == 0);
  CHECK(s.as_of_step == 100 + STEPS - 1);
  EXPECT_ERROR(moecast_placement_phy2log(p, phy2log, L * S - 1),
               MOECAST_INVALID_ARGUMENT, "size is 23, expected 24");
  EXPECT_ERROR(moecast_placement_phy2log(p, NULL, L * S),
               MOECAST_INVALID_ARGUMENT, "out is NULL");
  EXPECT_ERROR(moecast_placement_phy2log(NULL, phy2log, L * S),
               MOECAST_INVALID_ARGUMENT, "placement is NULL");
  EXPECT_OK(moecast_placement_phy2log(p, phy2log, L * S));
  EXPECT_OK(moecast_placement_logcnt(p, logcnt, L * M));
  EXPECT_OK(moecast_placement_gpu_loads(p, gpu_loads, L * P));
  EXPECT_OK(moecast_placement_loads(p, loads, L * M));
  EXPECT_ERROR(moecast_placement_gpu_loads(p, gpu_loads, L * M),
               MOECAST_INVALID_ARGUMENT, "expected 8");
  EXPECT_OK(moecast_placement_transfers(p, NULL, 0));
  EXPECT_ERROR(moecast_placement_transfers(p, NULL, 3),
               MOECAST_INVALID_ARGUMENT, "count is 3, expected 0");
  for (int l = 0; l < L; ++l) {
    int seen[M] = {0};
    int replicas = 0;
    double load_sum = 0;
    for (int slot = 0; slot < S; ++slot) {
      const int32_t e = phy2log[l * S + slot];
      CHECK(e >= 0 && e < M);
      if (e >= 0 && e < M) ++seen[e];
    }
    for (int e = 0; e < M; ++e) {
      CHECK(seen[e] >= 1 && seen[e] == logcnt[l * M + e]);
      replicas += logcnt[l * M + e];
      load_sum += loads[l * M + e];
    }
    CHECK(replicas == S);
    CHECK(load_sum > 0);
  }
  CHECK(strcmp(moecast_placement_decision_reason(p), "") == 0);
  CHECK(moecast_placement_decision_reason(NULL) == NULL);
  moecast_placement_destroy(p);

  /* With a current placement (expert e in slot e, the rest: e mod M) and a
   * migration model: a decision comes back. */
  for (int l = 0; l < L; ++l) {
    for (int slot = 0; slot < S; ++slot) current[l * S + slot] = slot % M;
  }
  moecast_migration_model_init(&model);
  CHECK(model.struct_size == sizeof(model));
  CHECK(model.overlap_cost_fraction == 0.2 && model.transient_margin == 1.0);
  model.intra_node_bandwidth = 1e11;
  model.inter_node_bandwidth = 1e10;
  model.bytes_per_expert = 1e8;
  model.tokens_per_step = 1e6;
  model.time_per_token_s = 1e-9;
  model.horizon_steps = 1000;
  request.current_phy2log = current;
  request.num_current_phy2log = L * S;
  request.bytes_per_expert = 100000000;
  request.migration = &model;
  model.struct_size = 3;
  EXPECT_ERROR(moecast_recommend_placement(engine, kJob, &request, &p),
               MOECAST_INVALID_ARGUMENT,
               "moecast_migration_model.struct_size is 3");
  model.struct_size = sizeof(model);
  model.intra_node_bandwidth = 0;
  EXPECT_ERROR(moecast_recommend_placement(engine, kJob, &request, &p),
               MOECAST_INVALID_ARGUMENT, "bandwidth");
  model.intra_node_bandwidth = 1e11;
  EXPECT_OK(moecast_recommend_placement(engine, kJob, &request, &p));
  EXPECT_OK(moecast_placement_get_summary(p, &s));
  CHECK(s.has_current == 1 && s.current_balancedness > 0);
  CHECK(s.balancedness >= s.current_balancedness - 1e-9);
  CHECK(s.has_decision == 1);
  CHECK(s.rebalance == 0 || s.rebalance == 1);
  CHECK(!isnan(s.saved_s) && !isnan(s.cost_s));
  CHECK(strlen(moecast_placement_decision_reason(p)) > 0);
  CHECK(s.moved_bytes == s.moved_experts * 100000000LL);
  if (s.num_transfers > 0) {
    moecast_transfer* t =
        (moecast_transfer*)malloc(sizeof(moecast_transfer) * s.num_transfers);
    EXPECT_OK(moecast_placement_transfers(p, t, (size_t)s.num_transfers));
    for (int i = 0; i < s.num_transfers; ++i) {
      CHECK(t[i].layer >= 0 && t[i].layer < L);
      CHECK(t[i].to_gpu >= 0 && t[i].to_gpu < P);
      CHECK(t[i].bytes == 100000000LL);
    }
    free(t);
  }
  moecast_placement_destroy(p);
}

static void TestHealth(moecast_engine* engine) {
  moecast_health_summary summary;
  moecast_layer_health layers[L];
  int total = 0;
  EXPECT_ERROR(moecast_health(engine, kJob, &summary, layers, L - 1),
               MOECAST_INVALID_ARGUMENT, "num_layers is 1, expected 2");
  EXPECT_ERROR(moecast_health(NULL, kJob, &summary, layers, L),
               MOECAST_INVALID_ARGUMENT, "engine is NULL");
  EXPECT_OK(moecast_health(engine, kJob, &summary, layers, L));
  CHECK(summary.num_layers == L);
  CHECK(summary.as_of_step == 100 + STEPS - 1);
  /* Only alpha was declared: E needs T, H, O and B. */
  CHECK(summary.e_kind == MOECAST_E_MISSING && isnan(summary.e_value));
  for (int l = 0; l < L; ++l) {
    CHECK(layers[l].window_step >= 100);
    CHECK(layers[l].window_steps == 10);
    CHECK(layers[l].max_over_mean >= 1);
    CHECK(layers[l].normalized_entropy > 0 && layers[l].normalized_entropy <= 1);
    CHECK(layers[l].phase >= MOECAST_PHASE_UNKNOWN &&
          layers[l].phase <= MOECAST_PHASE_RELAXATION);
    CHECK(layers[l].has_gamma ? !isnan(layers[l].gamma_f)
                              : strlen(layers[l].gamma_status) > 0);
    total += layers[l].num_dead_experts;
  }
  /* Layer 1's last expert never got a token: dead after 3 windows. */
  CHECK(layers[0].num_dead_experts == 0);
  CHECK(layers[1].num_dead_experts == 1);
  CHECK(summary.total_dead_experts == total);
  EXPECT_OK(moecast_health(engine, kJob, NULL, NULL, 0));
}

static void TestLifetimes(moecast_engine* engine) {
  /* A forecast outlives the engine; a deleted job is gone. */
  moecast_forecast* f = NULL;
  double m[M];
  EXPECT_OK(moecast_forecast_create(engine, kJob, NULL, 0, "last_value", 0,
                                    &f));
  EXPECT_ERROR(moecast_delete_job(engine, NULL), MOECAST_INVALID_ARGUMENT,
               "job_id is NULL");
  EXPECT_OK(moecast_delete_job(engine, kJob));
  EXPECT_ERROR(moecast_delete_job(engine, kJob), MOECAST_NOT_FOUND, kJob);
  CHECK(moecast_num_jobs(engine) == 0);
  moecast_engine_destroy(engine);
  EXPECT_OK(moecast_forecast_values(f, 1, 0, m, NULL, NULL, M, NULL));
  CHECK(m[M - 1] < 1e-9);
  moecast_forecast_destroy(f);
}

int main(void) {
  moecast_engine_options options;
  moecast_engine* engine = NULL;

  TestVersionAndStatus();
  TestCreateErrors();
  TestCreateWithAnalysis();

  moecast_engine_options_init(&options);
  options.health_window_steps = 10;
  options.health_bootstrap_replicates = 20;
  options.dead_window_steps = 10;
  EXPECT_OK(moecast_engine_create(&options, &engine));
  if (engine == NULL) {
    fprintf(stderr, "no engine: %s\n", moecast_last_error());
    return 1;
  }
  TestRegisterErrors(engine);
  RegisterJob(engine);
  TestIngestErrors(engine);
  TestBeforeFirstStep(engine);
  IngestSteps(engine);
  TestForecast(engine);
  TestAnalysisProgress(engine);
  TestState(engine);
  TestPlacement(engine);
  TestHealth(engine);
  TestLifetimes(engine); /* destroys the engine */

  printf("%d checks, %d failed\n", g_checks, g_failed);
  return g_failed == 0 ? 0 : 1;
}
