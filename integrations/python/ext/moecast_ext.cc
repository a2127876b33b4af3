// moecast._moecast_ext: the in-process engine for Python, a pybind11 module
// over the C API (integrations/c_api/moecast_c.h).
//
// Why the C API and not moecast::Engine directly: moecast_c.h is the engine's
// stable, versioned boundary. It checks every pointer and size, never lets a
// C++ exception out, and reports absl status codes with a message naming the
// argument at fault; binding to it gives Python exactly the contract C users
// have, with one validation layer. pybind11 compiles against the header, so
// struct layouts come from the compiler (nothing is mirrored by hand).
//
// Conventions:
//  * Arrays in: any object exposing the buffer protocol (numpy arrays).
//    float64, C-contiguous arrays of the expected shape are passed to the
//    engine without a copy; other real numeric dtypes are converted (one
//    copy); anything else (wrong shape, bool, complex, object, strings) is
//    rejected with INVALID_ARGUMENT naming the argument, the shape or dtype
//    seen and what was expected.
//  * Arrays out: new numpy arrays that the C API fills in place.
//  * Errors: a failed call raises the Python exception built by
//    moecast.errors.engine_error(code, message, method) (a MoecastError
//    carrying the absl::StatusCode number and name and the engine's message).
//  * The GIL is released while the engine works; an Engine may be used from
//    several Python threads. close() waits for calls in flight.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "integrations/c_api/moecast_c.h"

namespace py = pybind11;

namespace {

// A failed call: raised in Python as moecast.errors.engine_error(...).
struct EngineCallError {
  int code;
  std::string message;
  std::string method;
};

[[noreturn]] void Fail(int code, std::string message, const char* method) {
  throw EngineCallError{code, std::move(message), method};
}

[[noreturn]] void FailInvalid(std::string message, const char* method) {
  Fail(MOECAST_INVALID_ARGUMENT, std::move(message), method);
}

// Turns a C API status into an exception (the thread's last error is read on
// the thread that made the call, with or without the GIL).
void Check(moecast_status status, const char* method) {
  if (status != MOECAST_OK) {
    Fail(static_cast<int>(status), moecast_last_error(), method);
  }
}

std::string ShapeString(const py::buffer_info& info) {
  std::string s = "(";
  for (size_t i = 0; i < info.shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(info.shape[i]);
  }
  if (info.shape.size() == 1) s += ",";
  return s + ")";
}

std::string DtypeString(const py::handle& obj) {
  if (py::hasattr(obj, "dtype")) return py::str(obj.attr("dtype"));
  return std::string(py::str(py::type::of(obj).attr("__name__")));
}

// A float64 array of a required shape, borrowed without a copy when the
// input allows it, else converted once.
struct DoubleArray {
  py::array_t<double, py::array::c_style> array;  // keeps the data alive
  const double* data = nullptr;
  size_t size = 0;
};

DoubleArray AsDoubles(const py::object& obj, const std::vector<py::ssize_t>& shape,
                      const char* what, const char* method) {
  if (!py::isinstance<py::array>(obj)) {
    FailInvalid(std::string(what) + " must be a numpy array, got " +
                    std::string(py::str(py::type::of(obj).attr("__name__"))),
                method);
  }
  py::array in = py::reinterpret_borrow<py::array>(obj);
  const char kind = in.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u') {
    FailInvalid(std::string(what) + " must hold real numbers (float64 is used as is), got dtype " +
                    DtypeString(obj),
                method);
  }
  py::buffer_info info = in.request();
  bool shape_ok = info.shape.size() == shape.size();
  for (size_t i = 0; shape_ok && i < shape.size(); ++i) shape_ok = info.shape[i] == shape[i];
  if (!shape_ok) {
    std::string want = "(";
    for (size_t i = 0; i < shape.size(); ++i) {
      if (i) want += ", ";
      want += std::to_string(shape[i]);
    }
    want += shape.size() == 1 ? ",)" : ")";
    FailInvalid(std::string(what) + " has shape " + ShapeString(info) + ", the job needs " + want,
                method);
  }
  DoubleArray out;
  // forcecast converts other dtypes; a float64 C-contiguous array is
  // returned as is (no copy).
  out.array = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(obj);
  if (!out.array) {
    PyErr_Clear();
    FailInvalid(std::string(what) + ": cannot convert dtype " + DtypeString(obj) + " to float64",
                method);
  }
  out.data = out.array.data();
  out.size = static_cast<size_t>(out.array.size());
  return out;
}

std::vector<int32_t> AsInt32Vector(const py::object& obj, const char* what, const char* method) {
  std::vector<int32_t> out;
  if (obj.is_none()) return out;
  py::array in = py::array::ensure(obj);
  if (!in || (in.dtype().kind() != 'i' && in.dtype().kind() != 'u')) {
    if (in && in.size() == 0) return out;
    FailInvalid(std::string(what) + " must hold integers, got " + DtypeString(obj), method);
  }
  auto arr = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(in);
  const int64_t* p = arr.data();
  for (py::ssize_t i = 0; i < arr.size(); ++i) {
    if (p[i] < std::numeric_limits<int32_t>::min() || p[i] > std::numeric_limits<int32_t>::max()) {
      FailInvalid(std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(p[i]) +
                      " is out of the int32 range",
                  method);
    }
    out.push_back(static_cast<int32_t>(p[i]));
  }
  return out;
}

template <typename T>
py::array_t<T> NewArray(std::vector<py::ssize_t> shape) {
  return py::array_t<T>(shape);
}

struct JobShape {
  int32_t layers;
  int32_t experts;
};

class PyEngine {
 public:
  PyEngine(const py::dict& options, bool analysis_inline, int analysis_threads) {
    moecast_engine_options opts;
    moecast_engine_options_init(&opts);
    for (auto item : options) {
      const std::string key = py::str(item.first);
      py::handle v = item.second;
      if (key == "max_jobs") opts.max_jobs = v.cast<int32_t>();
      else if (key == "history_capacity_steps") opts.history_capacity_steps = v.cast<int32_t>();
      else if (key == "max_pending_steps") opts.max_pending_steps = v.cast<int32_t>();
      else if (key == "health_window_steps") opts.health_window_steps = v.cast<int32_t>();
      else if (key == "health_bootstrap_replicates") opts.health_bootstrap_replicates = v.cast<int32_t>();
      else if (key == "dead_window_steps") opts.dead_window_steps = v.cast<int32_t>();
      else if (key == "max_job_history_bytes") opts.max_job_history_bytes = v.cast<int64_t>();
      else if (key == "max_total_history_bytes") opts.max_total_history_bytes = v.cast<int64_t>();
      else if (key == "source_timeout_s") opts.source_timeout_s = v.cast<double>();
      else if (key == "idle_job_expiry_s") opts.idle_job_expiry_s = v.cast<double>();
      else FailInvalid("unknown engine option '" + key + "'", "Engine");
    }
    moecast_engine* engine = nullptr;
    moecast_status st;
    {
      py::gil_scoped_release release;
      st = moecast_engine_create_with_analysis(&opts, analysis_inline ? 1 : 0, analysis_threads,
                                               &engine);
    }
    Check(st, "Engine");
    engine_ = engine;
  }

  ~PyEngine() {
    py::gil_scoped_release release;
    CloseLocked();
  }

  void Close() {
    py::gil_scoped_release release;
    CloseLocked();
  }

  bool closed() const { return engine_ == nullptr; }

  void RegisterJob(const std::string& job_id, int32_t layers, int32_t experts, int32_t top_k,
                   int32_t sources, int32_t step_unit, int32_t router, bool forecasting,
                   bool health, const std::optional<std::vector<std::string>>& predictors,
                   const py::object& horizons, double aux_loss_coef, double router_temperature,
                   double entropy_weight, double oracle_weight, double balance_weight) {
    const char* method = "register_job";
    std::vector<int32_t> hz = AsInt32Vector(horizons, "horizons", method);
    std::vector<const char*> names;
    if (predictors) {
      for (const auto& p : *predictors) names.push_back(p.c_str());
    }
    moecast_job_spec spec;
    moecast_job_spec_init(&spec);
    spec.job_id = job_id.c_str();
    spec.num_layers = layers;
    spec.num_experts = experts;
    spec.top_k = top_k;
    spec.num_sources = sources;
    spec.step_unit = step_unit;
    spec.router = router;
    spec.forecasting = forecasting ? 1 : 0;
    spec.health = health ? 1 : 0;
    spec.predictors = names.empty() ? nullptr : names.data();
    spec.num_predictors = names.size();
    spec.horizons = hz.empty() ? nullptr : hz.data();
    spec.num_horizons = hz.size();
    spec.aux_loss_coef = aux_loss_coef;
    spec.router_temperature = router_temperature;
    spec.entropy_weight = entropy_weight;
    spec.oracle_weight = oracle_weight;
    spec.balance_weight = balance_weight;
    Call(method, [&](moecast_engine* e) { return moecast_register_job(e, &spec); });
    std::lock_guard<std::mutex> lock(shapes_mu_);
    shapes_[job_id] = {layers, experts};
  }

  void DeleteJob(const std::string& job_id) {
    {
      std::lock_guard<std::mutex> lock(shapes_mu_);
      shapes_.erase(job_id);
    }
    Call("delete_job", [&](moecast_engine* e) { return moecast_delete_job(e, job_id.c_str()); });
  }

  int64_t NumJobs() {
    int64_t n = 0;
    Call("num_jobs", [&](moecast_engine* e) {
      n = moecast_num_jobs(e);
      return n < 0 ? moecast_last_status() : MOECAST_OK;
    });
    return n;
  }

  py::dict JobInfo(const std::string& job_id) {
    moecast_job_info info = Info(job_id, "job_info");
    py::dict d;
    d["num_layers"] = info.num_layers;
    d["num_experts"] = info.num_experts;
    d["top_k"] = info.top_k;
    d["num_sources"] = info.num_sources;
    d["committed_steps"] = info.committed_steps;
    d["first_step"] = info.first_step;
    d["last_step"] = info.last_step;
    d["gaps"] = info.gaps;
    d["missing_steps"] = info.missing_steps;
    d["incomplete_steps"] = info.incomplete_steps;
    d["duplicate_calls"] = info.duplicate_calls;
    d["rejected_calls"] = info.rejected_calls;
    d["pending_steps"] = info.pending_steps;
    d["tokens"] = info.tokens;
    d["history_bytes"] = info.history_bytes;
    d["forecast_bytes"] = info.forecast_bytes;
    return d;
  }

  // One step: counts [L, M] (and router_logits [L, M]) checked against the
  // job's shape, passed without a copy when float64 and C-contiguous.
  py::tuple Ingest(const std::string& job_id, int64_t step, int32_t source,
                   const py::object& counts, const py::object& router_logits,
                   const py::object& tokens) {
    const char* method = "ingest";
    const JobShape shape = Shape(job_id, method);
    DoubleArray c = AsDoubles(counts, {shape.layers, shape.experts}, "counts", method);
    DoubleArray z;
    if (!router_logits.is_none()) {
      z = AsDoubles(router_logits, {shape.layers, shape.experts}, "router_logits", method);
    }
    double n = 0;
    bool has_tokens = !tokens.is_none();
    if (has_tokens) {
      if (!py::isinstance<py::int_>(tokens) && !py::isinstance<py::float_>(tokens) &&
          !(py::isinstance<py::array>(tokens) && py::array(tokens).ndim() == 0)) {
        FailInvalid("tokens must be a number or None, got " +
                        std::string(py::str(py::type::of(tokens).attr("__name__"))),
                    method);
      }
      n = tokens.cast<double>();
    }
    moecast_ingest_result r;
    Call(method, [&](moecast_engine* e) {
      return moecast_ingest(e, job_id.c_str(), step, source, c.data, c.size, z.data, z.size,
                            has_tokens ? &n : nullptr, &r);
    });
    return py::make_tuple(r.outcome, r.num_committed, r.first_committed_step,
                          r.last_committed_step, r.num_incomplete, r.gap_steps,
                          std::string(r.note));
  }

  int64_t FlushPending(const std::string& job_id) {
    int64_t n = 0;
    Call("flush_pending",
         [&](moecast_engine* e) { return moecast_flush_pending(e, job_id.c_str(), &n); });
    return n;
  }

  py::dict AwaitAnalysis(const std::string& job_id, double timeout_s) {
    moecast_analysis_progress p;
    moecast_analysis_progress_init(&p);
    Call("await_analysis", [&](moecast_engine* e) {
      return moecast_await_analysis(e, job_id.c_str(), timeout_s, &p);
    });
    py::dict d;
    d["as_of_step"] = p.as_of_step;
    d["committed_step"] = p.committed_step;
    d["lag_steps"] = p.lag_steps;
    d["scoring_shed_steps"] = p.scoring_shed_steps;
    d["coalesced_steps"] = p.coalesced_steps;
    return d;
  }

  // Every layer at one horizon: (mean, lower, upper), each [L, M] float64.
  py::tuple Forecast(const std::string& job_id, int32_t horizon,
                     const std::optional<std::string>& predictor, double level) {
    const char* method = "forecast";
    const JobShape shape = Shape(job_id, method);
    auto mean = NewArray<double>({shape.layers, shape.experts});
    auto lower = NewArray<double>({shape.layers, shape.experts});
    auto upper = NewArray<double>({shape.layers, shape.experts});
    double* pm = mean.mutable_data();
    double* pl = lower.mutable_data();
    double* pu = upper.mutable_data();
    const size_t size = static_cast<size_t>(shape.layers) * shape.experts;
    Call(method, [&](moecast_engine* e) {
      return moecast_forecast_into(e, job_id.c_str(), horizon,
                                   predictor ? predictor->c_str() : nullptr, level, pm, pl, pu,
                                   size);
    });
    return py::make_tuple(mean, lower, upper);
  }

  // (as_of_step, job_state, layer_states [L] int32, drift_ratios [L]).
  py::tuple State(const std::string& job_id) {
    const char* method = "state";
    const JobShape shape = Shape(job_id, method);
    int64_t as_of = -1;
    int32_t job_state = 0;
    auto states = NewArray<int32_t>({shape.layers});
    auto drift = NewArray<double>({shape.layers});
    int32_t* ps = states.mutable_data();
    double* pd = drift.mutable_data();
    Call(method, [&](moecast_engine* e) {
      return moecast_get_state(e, job_id.c_str(), &as_of, &job_state, ps, pd,
                               static_cast<size_t>(shape.layers));
    });
    return py::make_tuple(as_of, job_state, states, drift);
  }

  py::dict RecommendPlacement(const std::string& job_id, int32_t num_slots, int32_t num_gpus,
                              int32_t num_nodes, int32_t num_groups,
                              const py::object& excluded_gpus, const py::object& current_phy2log,
                              int32_t mode, int64_t move_budget, int64_t bytes_per_expert,
                              int32_t max_extra_experts_per_gpu, int32_t horizon,
                              const std::optional<std::string>& predictor,
                              bool upper_bounds_when_transient, double interval_level,
                              const std::optional<py::dict>& migration) {
    const char* method = "recommend_placement";
    const JobShape shape = Shape(job_id, method);
    std::vector<int32_t> excluded = AsInt32Vector(excluded_gpus, "excluded_gpus", method);
    std::vector<int32_t> current;
    if (!current_phy2log.is_none()) {
      py::array cur = py::array::ensure(current_phy2log);
      if (!cur || cur.ndim() != 2 || cur.shape(0) != shape.layers || cur.shape(1) != num_slots) {
        FailInvalid("current_phy2log must be an integer array of shape (" +
                        std::to_string(shape.layers) + ", " + std::to_string(num_slots) +
                        ") (layers, num_slots), got " +
                        (cur ? ShapeString(cur.request()) : DtypeString(current_phy2log)),
                    method);
      }
      current = AsInt32Vector(current_phy2log, "current_phy2log", method);
    }
    moecast_placement_request req;
    moecast_placement_request_init(&req);
    req.num_slots = num_slots;
    req.num_gpus = num_gpus;
    req.num_nodes = num_nodes;
    req.num_groups = num_groups;
    req.excluded_gpus = excluded.empty() ? nullptr : excluded.data();
    req.num_excluded_gpus = excluded.size();
    req.current_phy2log = current.empty() ? nullptr : current.data();
    req.num_current_phy2log = current.size();
    req.mode = mode;
    req.move_budget = move_budget;
    req.bytes_per_expert = bytes_per_expert;
    req.max_extra_experts_per_gpu = max_extra_experts_per_gpu;
    req.horizon = horizon;
    req.predictor = predictor ? predictor->c_str() : nullptr;
    req.upper_bounds_when_transient = upper_bounds_when_transient ? 1 : 0;
    req.interval_level = interval_level;
    moecast_migration_model model;
    moecast_migration_model_init(&model);
    if (migration) {
      for (auto item : *migration) {
        const std::string key = py::str(item.first);
        py::handle v = item.second;
        if (key == "bytes_per_expert") model.bytes_per_expert = v.cast<double>();
        else if (key == "intra_node_bandwidth") model.intra_node_bandwidth = v.cast<double>();
        else if (key == "inter_node_bandwidth") model.inter_node_bandwidth = v.cast<double>();
        else if (key == "tokens_per_step") model.tokens_per_step = v.cast<double>();
        else if (key == "time_per_token_s") model.time_per_token_s = v.cast<double>();
        else if (key == "horizon_steps") model.horizon_steps = v.cast<double>();
        else if (key == "overlap") model.overlap = v.cast<bool>() ? 1 : 0;
        else if (key == "overlap_cost_fraction") model.overlap_cost_fraction = v.cast<double>();
        else if (key == "transient_margin") model.transient_margin = v.cast<double>();
        else FailInvalid("unknown migration model field '" + key + "'", method);
      }
      req.migration = &model;
    }
    moecast_placement* plan = nullptr;
    Call(method, [&](moecast_engine* e) {
      return moecast_recommend_placement(e, job_id.c_str(), &req, &plan);
    });
    std::unique_ptr<moecast_placement, void (*)(moecast_placement*)> owned(
        plan, moecast_placement_destroy);
    moecast_placement_summary s;
    Check(moecast_placement_get_summary(plan, &s), method);
    const py::ssize_t L = s.num_layers, M = s.num_experts, S = s.num_slots, P = s.num_gpus;
    auto phy2log = NewArray<int32_t>({L, S});
    auto logcnt = NewArray<int32_t>({L, M});
    auto gpu_loads = NewArray<double>({L, P});
    auto loads = NewArray<double>({L, M});
    Check(moecast_placement_phy2log(plan, phy2log.mutable_data(), L * S), method);
    Check(moecast_placement_logcnt(plan, logcnt.mutable_data(), L * M), method);
    Check(moecast_placement_gpu_loads(plan, gpu_loads.mutable_data(), L * P), method);
    Check(moecast_placement_loads(plan, loads.mutable_data(), L * M), method);
    std::vector<moecast_transfer> transfers(s.num_transfers);
    Check(moecast_placement_transfers(plan, transfers.empty() ? nullptr : transfers.data(),
                                      transfers.size()),
          method);
    py::list tl;
    for (const auto& t : transfers) {
      tl.append(py::make_tuple(t.layer, t.expert, t.from_gpu, t.to_gpu, t.bytes, t.stage));
    }
    py::dict d;
    d["as_of_step"] = s.as_of_step;
    d["job_state"] = s.job_state;
    d["horizon"] = s.horizon;
    d["num_nodes"] = s.num_nodes;
    d["max_replicas"] = s.max_replicas;
    d["num_upper_bound_layers"] = s.num_upper_bound_layers;
    d["num_stages"] = s.num_stages;
    d["balancedness"] = s.balancedness;
    d["balancedness_summed"] = s.balancedness_summed;
    d["max_over_mean"] = s.max_over_mean;
    d["moved_experts"] = s.moved_experts;
    d["moved_bytes"] = s.moved_bytes;
    d["forced_moves"] = s.forced_moves;
    d["has_current"] = s.has_current != 0;
    d["current_balancedness"] = s.current_balancedness;
    d["current_max_over_mean"] = s.current_max_over_mean;
    d["has_decision"] = s.has_decision != 0;
    d["rebalance"] = s.rebalance != 0;
    d["step_time_current_s"] = s.step_time_current_s;
    d["step_time_proposed_s"] = s.step_time_proposed_s;
    d["saved_s"] = s.saved_s;
    d["migration_s"] = s.migration_s;
    d["cost_s"] = s.cost_s;
    d["required_s"] = s.required_s;
    const char* reason = moecast_placement_decision_reason(plan);
    d["decision_reason"] = std::string(reason ? reason : "");
    d["phy2log"] = phy2log;
    d["logcnt"] = logcnt;
    d["gpu_loads"] = gpu_loads;
    d["loads"] = loads;
    d["transfers"] = tl;
    return d;
  }

  py::tuple Health(const std::string& job_id) {
    const char* method = "health";
    const JobShape shape = Shape(job_id, method);
    moecast_health_summary summary;
    std::vector<moecast_layer_health> layers(shape.layers);
    Call(method, [&](moecast_engine* e) {
      return moecast_health(e, job_id.c_str(), &summary, layers.data(), layers.size());
    });
    py::list out;
    for (const auto& h : layers) {
      py::dict d;
      d["window_step"] = h.window_step;
      d["window_steps"] = h.window_steps;
      d["phase"] = h.phase;
      d["has_gamma"] = h.has_gamma != 0;
      d["gamma_f"] = h.gamma_f;
      d["gamma_ci_low_f"] = h.gamma_ci_low_f;
      d["gamma_ci_high_f"] = h.gamma_ci_high_f;
      d["max_over_mean"] = h.max_over_mean;
      d["max_vio"] = h.max_vio;
      d["coefficient_of_variation"] = h.coefficient_of_variation;
      d["normalized_entropy"] = h.normalized_entropy;
      d["num_dead_experts"] = h.num_dead_experts;
      d["gamma_status"] = std::string(h.gamma_status);
      out.append(d);
    }
    py::dict s;
    s["as_of_step"] = summary.as_of_step;
    s["total_dead_experts"] = summary.total_dead_experts;
    s["e_kind"] = summary.e_kind;
    s["e_value"] = summary.e_value;
    s["e_below_threshold"] = summary.e_below_threshold != 0;
    return py::make_tuple(s, out);
  }

 private:
  // Runs fn(engine) without the GIL, under the shared lock that close()
  // takes exclusively; raises on a non-OK status.
  template <typename Fn>
  void Call(const char* method, Fn&& fn) {
    moecast_status st;
    std::string message;
    {
      py::gil_scoped_release release;
      std::shared_lock<std::shared_mutex> lock(mu_);
      if (engine_ == nullptr) {
        st = MOECAST_FAILED_PRECONDITION;
        message = "the engine is closed";
      } else {
        st = fn(engine_);
        if (st != MOECAST_OK) message = moecast_last_error();
      }
    }
    if (st != MOECAST_OK) Fail(static_cast<int>(st), std::move(message), method);
  }

  moecast_job_info Info(const std::string& job_id, const char* method) {
    moecast_job_info info;
    Call(method,
         [&](moecast_engine* e) { return moecast_get_job_info(e, job_id.c_str(), &info); });
    return info;
  }

  // The job's [L, M], cached per job id: every job of this engine is
  // registered through this object, and the C API still checks L*M on each
  // call. Jobs unknown here (e.g. expired) are looked up, which raises
  // NOT_FOUND for a job that does not exist.
  JobShape Shape(const std::string& job_id, const char* method) {
    {
      std::lock_guard<std::mutex> lock(shapes_mu_);
      auto it = shapes_.find(job_id);
      if (it != shapes_.end()) return it->second;
    }
    moecast_job_info info = Info(job_id, method);
    return {info.num_layers, info.num_experts};
  }

  void CloseLocked() {
    std::unique_lock<std::shared_mutex> lock(mu_);
    moecast_engine_destroy(engine_);
    engine_ = nullptr;
  }

  std::shared_mutex mu_;
  moecast_engine* engine_ = nullptr;
  std::mutex shapes_mu_;
  std::unordered_map<std::string, JobShape> shapes_;
};

// The C++ side of the binding benchmark: `steps` calls of moecast_ingest
// (the engine's ingest behind the C ABI, no Python) of an L x M step into a
// fresh engine (analysis on one engine thread; with analysis false the job
// has forecasting and health off, so a call only validates and appends),
// timed with steady_clock; returns the mean nanoseconds per call. The counts
// are the pattern the Python side sends.
double TimeCIngest(int32_t layers, int32_t experts, int32_t top_k, int64_t steps,
                   bool analysis) {
  const char* method = "_time_c_ingest";
  if (layers < 1 || experts < 2 || steps < 1) {
    FailInvalid("layers >= 1, experts >= 2 and steps >= 1 are required", method);
  }
  py::gil_scoped_release release;
  moecast_engine* engine = nullptr;
  Check(moecast_engine_create_with_analysis(nullptr, 0, 1, &engine), method);
  std::unique_ptr<moecast_engine, void (*)(moecast_engine*)> owned(engine,
                                                                    moecast_engine_destroy);
  moecast_job_spec spec;
  moecast_job_spec_init(&spec);
  spec.job_id = "bench";
  spec.num_layers = layers;
  spec.num_experts = experts;
  spec.top_k = top_k;
  spec.forecasting = analysis ? 1 : 0;
  spec.health = analysis ? 1 : 0;
  Check(moecast_register_job(engine, &spec), method);
  std::vector<double> counts(static_cast<size_t>(layers) * experts);
  for (size_t i = 0; i < counts.size(); ++i) counts[i] = static_cast<double>((i * 7919) % 97 + 1);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) {
    Check(moecast_ingest(engine, "bench", s, 0, counts.data(), counts.size(), nullptr, 0, nullptr,
                         nullptr),
          method);
  }
  const auto end = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::nano>(end - start).count() / steps;
}

}  // namespace

PYBIND11_MODULE(_moecast_ext, m) {
  m.doc() = "moecast's in-process engine (pybind11 over the C API); use moecast.engine.";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const EngineCallError& e) {
      py::object make = py::module_::import("moecast.errors").attr("engine_error");
      py::object exc = make(e.code, moecast_status_name(e.code), e.message, e.method);
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    }
  });

  m.def("version", &moecast_version);
  m.def("abi_version", &moecast_abi_version);
  m.def("status_name", &moecast_status_name);
  m.attr("HEADER_ABI_VERSION") = MOECAST_ABI_VERSION;
  // Whether an input array of this shape would be copied before the engine
  // reads it (the same path as ingest's counts); for tests.
  m.def("_input_is_copied", [](const py::object& obj, const std::vector<py::ssize_t>& shape) {
    DoubleArray d = AsDoubles(obj, shape, "array", "_input_is_copied");
    return d.data != py::reinterpret_borrow<py::array>(obj).data();
  });
  m.def("_time_c_ingest", &TimeCIngest, py::arg("layers"), py::arg("experts"), py::arg("top_k"),
        py::arg("steps"), py::arg("analysis") = false);

  py::class_<PyEngine>(m, "Engine")
      .def(py::init<const py::dict&, bool, int>(), py::arg("options"),
           py::arg("analysis_inline"), py::arg("analysis_threads"))
      .def("close", &PyEngine::Close)
      .def_property_readonly("closed", &PyEngine::closed)
      .def("register_job", &PyEngine::RegisterJob)
      .def("delete_job", &PyEngine::DeleteJob)
      .def("num_jobs", &PyEngine::NumJobs)
      .def("job_info", &PyEngine::JobInfo)
      .def("ingest", &PyEngine::Ingest)
      .def("flush_pending", &PyEngine::FlushPending)
      .def("await_analysis", &PyEngine::AwaitAnalysis)
      .def("forecast", &PyEngine::Forecast)
      .def("state", &PyEngine::State)
      .def("recommend_placement", &PyEngine::RecommendPlacement)
      .def("health", &PyEngine::Health);
}
