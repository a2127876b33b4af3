// Fuzz target: the C API (integrations/c_api/moecast_c.h). The input is
// decoded into engine options and then a sequence of calls (one opcode byte
// each, then the call's arguments), with NULL pointers, wrong struct sizes,
// sizes that do not match the job's shape, enum values out of range and
// non-finite numbers among the arguments. Buffers are always as long as the
// size passed with them (the one thing the header says it cannot check).
// Checks: every status is a known code, every failure leaves a message, a
// NULL output handle on failure, and no call crashes.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "integrations/c_api/moecast_c.h"

namespace {

using moecast::fuzz::ByteReader;

// Job ids the calls pick from: three valid ones and two invalid ones.
const char* const kJobIds[] = {"a", "b", "job.c-1", "", "bad id/"};
constexpr int kNumJobIds = 5;

const char* const kPredictors[] = {"last_value", "ema(0.5)", "sw_avg(3)",
                                   "holt",       "arima(1,0,0)", "nope",
                                   "ema(2)",     "sw_avg(0)"};

struct JobShape {
  int layers = 1;
  int experts = 2;
};

double Number(ByteReader& in) {
  switch (in.Byte() % 16) {
    case 0: return std::numeric_limits<double>::quiet_NaN();
    case 1: return std::numeric_limits<double>::infinity();
    case 2: return -1;
    case 3: return 1e308;
    case 4: return -0.0;
    default: return static_cast<double>(in.IntInRange(0, 1000));
  }
}

void CheckStatus(moecast_status s) {
  MOECAST_FUZZ_CHECK(s >= 0 && s <= 16);
  MOECAST_FUZZ_CHECK(moecast_last_status() == s);
  if (s != MOECAST_OK) {
    MOECAST_FUZZ_CHECK(moecast_last_error() != nullptr);
    MOECAST_FUZZ_CHECK(moecast_last_error()[0] != '\0');
  }
}

// A size that usually matches `expected`, sometimes not.
size_t Size(ByteReader& in, size_t expected) {
  switch (in.Byte() % 8) {
    case 0: return 0;
    case 1: return expected + 1;
    case 2: return expected > 0 ? expected - 1 : 0;
    default: return expected;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  moecast_engine_options opts;
  moecast_engine_options_init(&opts);
  const uint8_t oflags = in.Byte();
  if (oflags & 1) opts.struct_size += 8;
  opts.max_jobs = static_cast<int32_t>(in.IntInRange(0, 3));
  opts.history_capacity_steps = static_cast<int32_t>(in.IntInRange(0, 32));
  opts.max_pending_steps = static_cast<int32_t>(in.IntInRange(0, 8));
  opts.health_window_steps = static_cast<int32_t>(in.IntInRange(0, 8));
  opts.health_bootstrap_replicates = static_cast<int32_t>(in.IntInRange(0, 4));
  opts.dead_window_steps = static_cast<int32_t>(in.IntInRange(0, 8));
  opts.max_job_history_bytes = (oflags & 2) ? -1 : int64_t{4} << 20;
  opts.max_total_history_bytes = int64_t{8} << 20;
  opts.source_timeout_s = (oflags & 4) ? Number(in) : 30.0;
  opts.idle_job_expiry_s = (oflags & 8) ? Number(in) : 0.0;
  moecast_engine* engine = nullptr;
  moecast_status s = moecast_engine_create((oflags & 16) ? nullptr : &opts,
                                           &engine);
  CheckStatus(s);
  if (s != MOECAST_OK) {
    MOECAST_FUZZ_CHECK(engine == nullptr);
    return 0;
  }
  MOECAST_FUZZ_CHECK(engine != nullptr);

  JobShape shapes[kNumJobIds];
  for (int call = 0; call < 64 && in.remaining() > 0; ++call) {
    const uint8_t op = in.Byte();
    const int j = static_cast<int>(in.IntInRange(0, kNumJobIds - 1));
    const char* job_id = (op & 0x80) ? nullptr : kJobIds[j];
    // Most calls get the engine; a few get NULL.
    moecast_engine* e = (op & 0x40) ? nullptr : engine;
    switch (op % 12) {
      case 0: {  // register
        moecast_job_spec spec;
        moecast_job_spec_init(&spec);
        const uint8_t f = in.Byte();
        if (f & 1) spec.struct_size -= 4;
        spec.job_id = job_id;
        spec.num_layers = static_cast<int32_t>(in.IntInRange(0, 3));
        spec.num_experts = static_cast<int32_t>(in.IntInRange(0, 9));
        spec.top_k = static_cast<int32_t>(in.IntInRange(0, 10));
        spec.num_sources = static_cast<int32_t>(in.IntInRange(0, 3));
        spec.step_unit = static_cast<int32_t>(in.IntInRange(-1, 3));
        spec.router = static_cast<int32_t>(in.IntInRange(-1, 2));
        spec.forecasting = (f & 2) ? 0 : 1;
        spec.health = (f & 4) ? 0 : 1;
        const char* names[3];
        if (f & 8) {
          spec.num_predictors = static_cast<size_t>(in.IntInRange(0, 3));
          for (size_t i = 0; i < spec.num_predictors; ++i) {
            const int64_t k = in.IntInRange(-1, 7);
            names[i] = k < 0 ? nullptr : kPredictors[k];
          }
          spec.predictors = (f & 16) ? nullptr : names;
        }
        int32_t horizons[3];
        if (f & 32) {
          spec.num_horizons = static_cast<size_t>(in.IntInRange(0, 3));
          for (size_t i = 0; i < spec.num_horizons; ++i) {
            horizons[i] = static_cast<int32_t>(in.IntInRange(-1, 6));
          }
          spec.horizons = (f & 64) ? nullptr : horizons;
        }
        if (f & 128) {
          spec.aux_loss_coef = Number(in);
          spec.router_temperature = Number(in);
          spec.entropy_weight = Number(in);
          spec.oracle_weight = Number(in);
          spec.balance_weight = Number(in);
        }
        s = moecast_register_job(e, (in.Byte() & 15) ? &spec : nullptr);
        CheckStatus(s);
        if (s == MOECAST_OK) {
          shapes[j].layers = spec.num_layers;
          shapes[j].experts = spec.num_experts;
        }
        break;
      }
      case 1:
        CheckStatus(moecast_delete_job(e, job_id));
        break;
      case 2: {
        moecast_job_info info;
        CheckStatus(moecast_get_job_info(e, job_id,
                                         (in.Byte() & 7) ? &info : nullptr));
        CheckStatus(moecast_flush_pending(e, job_id, nullptr));
        int64_t n = moecast_num_jobs(e);
        MOECAST_FUZZ_CHECK(n >= -1);
        break;
      }
      case 3:
      case 4: {  // ingest (twice as likely)
        const size_t lm = static_cast<size_t>(shapes[j].layers) * shapes[j].experts;
        const int64_t step = in.IntInRange(-1, 40);
        const int32_t source = static_cast<int32_t>(in.IntInRange(-1, 3));
        const uint8_t f = in.Byte();
        std::vector<double> counts(Size(in, lm));
        for (double& c : counts) c = (f & 1) ? Number(in) : in.IntInRange(0, 50);
        std::vector<double> logits;
        if (f & 2) {
          logits.resize(Size(in, lm));
          for (double& z : logits) z = (f & 4) ? Number(in) : in.IntInRange(0, 8) - 4.0;
        }
        double tokens = Number(in);
        moecast_ingest_result result;
        s = moecast_ingest(e, job_id, step, source,
                           (f & 8) ? nullptr : counts.data(), counts.size(),
                           (f & 16) ? nullptr : logits.data(), logits.size(),
                           (f & 32) ? &tokens : nullptr,
                           (f & 64) ? nullptr : &result);
        CheckStatus(s);
        if (s == MOECAST_OK && !(f & 64)) {
          MOECAST_FUZZ_CHECK(std::memchr(result.note, '\0', sizeof(result.note)) != nullptr);
        }
        break;
      }
      case 5: {  // forecast handle
        int32_t horizons[3];
        const size_t nh = static_cast<size_t>(in.IntInRange(0, 3));
        for (size_t i = 0; i < nh; ++i) horizons[i] = static_cast<int32_t>(in.IntInRange(-1, 8));
        const uint8_t f = in.Byte();
        const int64_t k = in.IntInRange(-1, 7);
        const char* predictor = (f & 1) ? "auto" : (k < 0 ? nullptr : kPredictors[k]);
        // Not NULL before the call, so that a failure must reset it.
        static char sentinel;
        moecast_forecast* fc = reinterpret_cast<moecast_forecast*>(&sentinel);
        s = moecast_forecast_create(e, job_id, (f & 2) ? nullptr : horizons, nh,
                                    predictor, (f & 4) ? Number(in) : 0.0,
                                    (f & 8) ? nullptr : &fc);
        CheckStatus(s);
        if (f & 8) break;
        if (s != MOECAST_OK) {
          MOECAST_FUZZ_CHECK(fc == nullptr);
          break;
        }
        int32_t L = 0, M = 0, H = 0, state = 0;
        int64_t as_of = 0;
        CheckStatus(moecast_forecast_shape(fc, &L, &M, &H, &as_of, &state));
        MOECAST_FUZZ_CHECK(L >= 0 && M >= 0 && H >= 0);
        const int32_t layer = static_cast<int32_t>(in.IntInRange(-1, L));
        const int32_t hi = static_cast<int32_t>(in.IntInRange(-1, H));
        int32_t horizon = 0;
        CheckStatus(moecast_forecast_horizon(fc, hi, &horizon));
        double drift = 0;
        CheckStatus(moecast_forecast_layer_state(fc, layer, &state, &drift));
        std::vector<double> mean(Size(in, M)), lower(mean.size()), upper(mean.size());
        int32_t has_interval = 0;
        CheckStatus(moecast_forecast_values(fc, layer, hi, mean.data(), lower.data(),
                                            upper.data(), mean.size(), &has_interval));
        const char* name = moecast_forecast_predictor(fc, layer, hi);
        MOECAST_FUZZ_CHECK((name == nullptr) == (moecast_last_status() != MOECAST_OK));
        moecast_forecast_destroy(fc);
        break;
      }
      case 6: {  // forecast_into
        const size_t lm = static_cast<size_t>(shapes[j].layers) * shapes[j].experts;
        std::vector<double> mean(Size(in, lm)), lower(mean.size()), upper(mean.size());
        const uint8_t f = in.Byte();
        CheckStatus(moecast_forecast_into(
            e, job_id, static_cast<int32_t>(in.IntInRange(-1, 8)),
            (f & 1) ? "nope" : nullptr, (f & 2) ? Number(in) : 0.9,
            (f & 4) ? nullptr : mean.data(), (f & 8) ? nullptr : lower.data(),
            upper.data(), mean.size()));
        break;
      }
      case 7: {  // state
        std::vector<int32_t> states(Size(in, shapes[j].layers));
        std::vector<double> drifts(states.size());
        int64_t as_of = 0;
        int32_t js = 0;
        CheckStatus(moecast_get_state(e, job_id, &as_of, &js, states.data(),
                                      drifts.data(), states.size()));
        break;
      }
      case 8: {  // placement
        moecast_placement_request req;
        moecast_placement_request_init(&req);
        const uint8_t f = in.Byte();
        if (f & 1) req.struct_size += 4;
        req.num_gpus = static_cast<int32_t>(in.IntInRange(0, 8));
        req.num_slots = static_cast<int32_t>(in.IntInRange(0, 24));
        req.num_nodes = static_cast<int32_t>(in.IntInRange(0, 3));
        req.num_groups = static_cast<int32_t>(in.IntInRange(0, 4));
        req.mode = static_cast<int32_t>(in.IntInRange(-1, 2));
        req.move_budget = in.IntInRange(-2, 10);
        req.horizon = static_cast<int32_t>(in.IntInRange(-1, 8));
        req.max_extra_experts_per_gpu = static_cast<int32_t>(in.IntInRange(0, 3));
        int32_t excluded[2] = {static_cast<int32_t>(in.IntInRange(-1, 8)),
                               static_cast<int32_t>(in.IntInRange(-1, 8))};
        if (f & 2) {
          req.excluded_gpus = (f & 4) ? nullptr : excluded;
          req.num_excluded_gpus = static_cast<size_t>(in.IntInRange(1, 2));
        }
        std::vector<int32_t> current;
        if (f & 8) {
          current.resize(Size(in, static_cast<size_t>(shapes[j].layers) *
                                      std::max(req.num_slots, 0)));
          for (int32_t& c : current) c = static_cast<int32_t>(in.IntInRange(-2, 9));
          req.current_phy2log = current.data();
          req.num_current_phy2log = current.size();
        }
        moecast_migration_model model;
        moecast_migration_model_init(&model);
        if (f & 16) {
          model.intra_node_bandwidth = Number(in);
          model.inter_node_bandwidth = Number(in);
          model.tokens_per_step = Number(in);
          model.time_per_token_s = Number(in);
          model.horizon_steps = Number(in);
          model.overlap = in.Bool();
          model.overlap_cost_fraction = Number(in);
          model.transient_margin = Number(in);
          req.migration = &model;
        }
        if (f & 32) req.interval_level = Number(in);
        static char sentinel;
        moecast_placement* p = reinterpret_cast<moecast_placement*>(&sentinel);
        s = moecast_recommend_placement(e, job_id, (f & 64) ? nullptr : &req, &p);
        CheckStatus(s);
        if (s != MOECAST_OK) {
          MOECAST_FUZZ_CHECK(p == nullptr);
          break;
        }
        moecast_placement_summary sum;
        CheckStatus(moecast_placement_get_summary(p, &sum));
        const size_t L = static_cast<size_t>(sum.num_layers);
        std::vector<int32_t> phy(Size(in, L * sum.num_slots));
        CheckStatus(moecast_placement_phy2log(p, phy.data(), phy.size()));
        std::vector<int32_t> cnt(Size(in, L * sum.num_experts));
        CheckStatus(moecast_placement_logcnt(p, cnt.data(), cnt.size()));
        std::vector<double> gl(Size(in, L * sum.num_gpus));
        CheckStatus(moecast_placement_gpu_loads(p, gl.data(), gl.size()));
        std::vector<double> loads(Size(in, L * sum.num_experts));
        CheckStatus(moecast_placement_loads(p, loads.data(), loads.size()));
        std::vector<moecast_transfer> tr(Size(in, static_cast<size_t>(sum.num_transfers)));
        CheckStatus(moecast_placement_transfers(p, tr.data(), tr.size()));
        MOECAST_FUZZ_CHECK(moecast_placement_decision_reason(p) != nullptr);
        moecast_placement_destroy(p);
        break;
      }
      case 9: {  // health
        moecast_health_summary hs;
        std::vector<moecast_layer_health> layers(Size(in, shapes[j].layers));
        CheckStatus(moecast_health(e, job_id, (in.Byte() & 1) ? nullptr : &hs,
                                   layers.empty() ? nullptr : layers.data(),
                                   layers.size()));
        for (const moecast_layer_health& l : layers) {
          (void)l;
        }
        break;
      }
      case 10: {
        const char* name = moecast_status_name(static_cast<int32_t>(in.IntInRange(-2, 20)));
        MOECAST_FUZZ_CHECK(name != nullptr);
        MOECAST_FUZZ_CHECK(moecast_abi_version() == MOECAST_ABI_VERSION);
        break;
      }
      default:
        // Null handles to the accessors.
        CheckStatus(moecast_forecast_shape(nullptr, nullptr, nullptr, nullptr,
                                           nullptr, nullptr));
        CheckStatus(moecast_placement_get_summary(nullptr, nullptr));
        moecast_forecast_destroy(nullptr);
        moecast_placement_destroy(nullptr);
        break;
    }
  }
  moecast_engine_destroy(engine);
  return 0;
}
