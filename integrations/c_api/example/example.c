/* moecast from C: register a job, stream 300 steps of synthetic expert
 * counts, forecast the next 10 steps' load per layer, and ask for a
 * placement on 4 GPUs. Build it against an installed moecast (Makefile).
 *
 * Prints the most loaded expert of each layer, the plan's balancedness and
 * "example: OK"; exits 1 (with moecast's message) if any call fails. */
#include <moecast_c.h>

#include <stdio.h>
#include <stdlib.h>

enum { L = 4, M = 16, K = 2, STEPS = 300, S = 20, P = 4 };

/* Prints the failed call and moecast's message, and exits. */
static void Check(moecast_status status, const char* what) {
  if (status == MOECAST_OK) return;
  fprintf(stderr, "%s failed: %s: %s\n", what, moecast_status_name(status),
          moecast_last_error());
  exit(1);
}

int main(void) {
  moecast_engine* engine = NULL;
  moecast_job_spec spec;
  moecast_placement_request request;
  moecast_placement* plan = NULL;
  moecast_placement_summary summary;
  static double counts[L * M], mean[L * M], upper[L * M];
  unsigned rng = 1;

  if (moecast_abi_version() != MOECAST_ABI_VERSION) {
    fprintf(stderr, "libmoecast.so has ABI %d, moecast_c.h %d\n",
            (int)moecast_abi_version(), MOECAST_ABI_VERSION);
    return 1;
  }
  printf("moecast %s\n", moecast_version());
  Check(moecast_engine_create(NULL, &engine), "moecast_engine_create");

  moecast_job_spec_init(&spec);
  spec.job_id = "example";
  spec.num_layers = L;
  spec.num_experts = M;
  spec.top_k = K;
  Check(moecast_register_job(engine, &spec), "moecast_register_job");

  for (int t = 0; t < STEPS; ++t) {
    for (int l = 0; l < L; ++l) {
      for (int e = 0; e < M; ++e) {
        rng = rng * 1103515245u + 12345u;
        /* Layer l favours expert (l * 3) % M, plus noise. */
        counts[l * M + e] = 50.0 + (e == (l * 3) % M ? 400.0 : 0.0) +
                            (double)((rng >> 16) % 50);
      }
    }
    Check(moecast_ingest(engine, "example", t, 0, counts, L * M, NULL, 0, NULL,
                         NULL),
          "moecast_ingest");
  }

  Check(moecast_forecast_into(engine, "example", 10, NULL, 0.9, mean, NULL,
                              upper, L * M),
        "moecast_forecast_into");
  for (int l = 0; l < L; ++l) {
    int top = 0;
    for (int e = 1; e < M; ++e) {
      if (mean[l * M + e] > mean[l * M + top]) top = e;
    }
    printf("layer %d: expert %d expected to take %.1f%% of the load "
           "(upper %.1f%%)\n",
           l, top, 100 * mean[l * M + top], 100 * upper[l * M + top]);
    if (top != (l * 3) % M) {
      fprintf(stderr, "layer %d: expected expert %d on top\n", l, (l * 3) % M);
      return 1;
    }
  }

  moecast_placement_request_init(&request);
  request.num_slots = S;
  request.num_gpus = P;
  request.horizon = 10;
  Check(moecast_recommend_placement(engine, "example", &request, &plan),
        "moecast_recommend_placement");
  Check(moecast_placement_get_summary(plan, &summary),
        "moecast_placement_get_summary");
  printf("placement: %d slots on %d GPUs, up to %d replicas, balancedness "
         "%.3f\n",
         summary.num_slots, summary.num_gpus, summary.max_replicas,
         summary.balancedness);
  moecast_placement_destroy(plan);
  moecast_engine_destroy(engine);
  printf("example: OK\n");
  return 0;
}
