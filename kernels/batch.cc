#include "kernels/batch.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/predict/lstm/lstm.h"
#include "kernels/core/batch_ops.h"
#include "kernels/lstm_flat.h"

namespace moecast {
namespace kernels {
namespace {

using core::CoreStatus;

// The one place where core codes become absl::Status.
absl::Status FromCore(CoreStatus s, absl::string_view what) {
  switch (s) {
    case CoreStatus::kOk:
      return absl::OkStatus();
    case CoreStatus::kInvalidArgument:
      return absl::InvalidArgumentError(absl::StrCat(what, ": invalid argument"));
    case CoreStatus::kNotBuilt:
      return absl::UnavailableError("built without CUDA");
    case CoreStatus::kNoDevice:
      return absl::UnavailableError(
          absl::StrCat("no CUDA device: ", core::gpu::LastErrorString()));
    case CoreStatus::kOutOfMemory:
      return absl::ResourceExhaustedError(
          absl::StrCat(what, ": ", core::gpu::LastErrorString()));
    case CoreStatus::kCudaError:
      return absl::InternalError(absl::StrCat(what, ": ", core::gpu::LastErrorString()));
  }
  return absl::UnknownError(absl::StrCat(what, ": unknown core status"));
}

#define MOECAST_KERNELS_RETURN_IF_ERROR(expr) \
  do {                                        \
    absl::Status _st = (expr);                \
    if (!_st.ok()) return _st;                \
  } while (0)

struct GpuProbe {
  CoreStatus status = CoreStatus::kNoDevice;
  std::string message;
};

const GpuProbe& Probe() {
  static const GpuProbe* probe = [] {
    auto* p = new GpuProbe;
    int count = 0;
    p->status = core::gpu::DeviceCount(&count);
    p->message = core::gpu::LastErrorString();
    return p;
  }();
  return *probe;
}

void SayFallbackOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    const absl::Status s = GpuStatus();
    std::fprintf(stderr,
                 "moecast kernels: no usable GPU (%s); the batched predictors "
                 "run on the CPU reference\n",
                 std::string(s.message()).c_str());
  });
}

// A device allocation freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { core::gpu::Free(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  absl::Status Allocate(size_t bytes) {
    if (bytes <= bytes_) return absl::OkStatus();
    core::gpu::Free(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
    MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(core::gpu::Malloc(&ptr_, bytes), "cudaMalloc"));
    bytes_ = bytes;
    return absl::OkStatus();
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A stream for one call (or one object's lifetime).
class Stream {
 public:
  ~Stream() { core::gpu::StreamDestroy(stream_); }
  absl::Status Init() { return FromCore(core::gpu::StreamCreate(&stream_), "stream"); }
  void* get() const { return stream_; }
  absl::Status In(void* dst, const void* src, size_t bytes) const {
    return FromCore(core::gpu::CopyToDevice(dst, src, bytes, stream_), "copy to device");
  }
  absl::Status Out(void* dst, const void* src, size_t bytes) const {
    return FromCore(core::gpu::CopyToHost(dst, src, bytes, stream_), "copy to host");
  }
  absl::Status Sync() const {
    return FromCore(core::gpu::StreamSynchronize(stream_), "stream synchronize");
  }

 private:
  void* stream_ = nullptr;
};

absl::Status CheckSize(size_t got, int64_t want, absl::string_view what) {
  if (static_cast<int64_t>(got) != want) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has ", got, " values, want ", want));
  }
  return absl::OkStatus();
}

absl::StatusOr<Backend> ChooseBackend(const BatchOptions& o, int64_t series) {
  const Backend b = ResolveBackend(o, series);
  if (b == Backend::kGpu) MOECAST_KERNELS_RETURN_IF_ERROR(GpuStatus());
  return b;
}

absl::Status CheckShape(int64_t series, int group_size) {
  if (series < 1) {
    return absl::InvalidArgumentError(absl::StrCat("series = ", series, " must be >= 1"));
  }
  if (group_size < 1 || series % group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group_size = ", group_size, " must be >= 1 and divide series = ", series));
  }
  return absl::OkStatus();
}

}  // namespace

bool GpuAvailable() { return Probe().status == CoreStatus::kOk; }

absl::Status GpuStatus() {
  const GpuProbe& p = Probe();
  if (p.status == CoreStatus::kOk) return absl::OkStatus();
  if (p.status == CoreStatus::kNotBuilt) {
    return absl::UnavailableError("built without CUDA");
  }
  return absl::UnavailableError(absl::StrCat("no CUDA device: ", p.message));
}

Backend ResolveBackend(const BatchOptions& o, int64_t series) {
  if (o.backend != Backend::kAuto) return o.backend;
  if (!GpuAvailable()) {
    SayFallbackOnce();
    return Backend::kCpu;
  }
  return series >= o.gpu_min_series ? Backend::kGpu : Backend::kCpu;
}

const char* BackendName(Backend b) {
  switch (b) {
    case Backend::kCpu:
      return "cpu";
    case Backend::kGpu:
      return "gpu";
    case Backend::kAuto:
      return "auto";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------
// The cheap predictors.

struct CheapBatch::Device {
  Stream stream;
  DeviceBuffer x, out, a, b, c, d, e, f;
};

CheapBatch::CheapBatch(int64_t series, int group_size, Backend backend)
    : series_(series), group_size_(group_size), backend_(backend) {}
CheapBatch::~CheapBatch() = default;

absl::Status CheapBatch::InitDevice() {
  dev_ = std::make_unique<Device>();
  MOECAST_KERNELS_RETURN_IF_ERROR(dev_->stream.Init());
  MOECAST_KERNELS_RETURN_IF_ERROR(dev_->x.Allocate(sizeof(double) * series_));
  return dev_->out.Allocate(sizeof(double) * series_);
}

namespace {

class SwAvgImpl final : public CheapBatch {
 public:
  SwAvgImpl(int64_t s, int g, int window, Backend b, int threads)
      : CheapBatch(s, g, b), threads_(threads) {
    shape_.series = s;
    shape_.window = window;
  }

  absl::Status Init() {
    const size_t ring = static_cast<size_t>(shape_.window) * series_;
    if (backend_ == Backend::kCpu) {
      ring_.assign(ring, 0.0f);
      sum_.assign(series_, 0.0);
      return absl::OkStatus();
    }
    MOECAST_KERNELS_RETURN_IF_ERROR(InitDevice());
    MOECAST_KERNELS_RETURN_IF_ERROR(dev_->a.Allocate(sizeof(float) * ring));
    MOECAST_KERNELS_RETURN_IF_ERROR(dev_->b.Allocate(sizeof(double) * series_));
    MOECAST_KERNELS_RETURN_IF_ERROR(dev_->c.Allocate(sizeof(double) * shape_.window));
    void* st = dev_->stream.get();
    MOECAST_KERNELS_RETURN_IF_ERROR(
        FromCore(core::gpu::Memset(dev_->a.as<void>(), 0, sizeof(float) * ring, st), "memset"));
    MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(
        core::gpu::Memset(dev_->b.as<void>(), 0, sizeof(double) * series_, st), "memset"));
    return dev_->stream.Sync();
  }

  absl::Status Observe(absl::Span<const double> x) override {
    MOECAST_KERNELS_RETURN_IF_ERROR(CheckSize(x.size(), series_, "sw_avg input"));
    const bool resum = since_resum_ + 1 >= shape_.window;
    if (backend_ == Backend::kCpu) {
      MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(
          core::cpu::SwAvgObserve(shape_, resum, x.data(), ring_.data(), sum_.data(), threads_),
          "sw_avg observe"));
    } else {
      MOECAST_KERNELS_RETURN_IF_ERROR(
          dev_->stream.In(dev_->x.as<void>(), x.data(), sizeof(double) * series_));
      MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(
          core::gpu::SwAvgObserve(shape_, resum, dev_->x.as<double>(), dev_->a.as<float>(),
                                  dev_->b.as<double>(), dev_->stream.get()),
          "sw_avg observe"));
      MOECAST_KERNELS_RETURN_IF_ERROR(dev_->stream.Sync());
    }
    since_resum_ = resum ? 0 : since_resum_ + 1;
    shape_.head = shape_.head + 1 == shape_.window ? 0 : shape_.head + 1;
    if (shape_.count < shape_.window) ++shape_.count;
    return absl::OkStatus();
  }

  absl::Status Forecast(int horizon, absl::Span<double> out) override {
    MOECAST_KERNELS_RETURN_IF_ERROR(CheckSize(out.size(), series_, "sw_avg output"));
    if (horizon < 1) {
      return absl::InvalidArgumentError(absl::StrCat("horizon = ", horizon, " must be >= 1"));
    }
    if (shape_.count == 0) {
      std::fill(out.begin(), out.end(), 1.0 / group_size_);
      return absl::OkStatus();
    }
    if (weights_count_ != shape_.count || weights_horizon_ != horizon) {
      weights_.resize(shape_.count);
      core::SwAvgWeights(shape_.count, horizon, weights_.data());
      weights_count_ = shape_.count;
      weights_horizon_ = horizon;
    }
    if (backend_ == Backend::kCpu) {
      return FromCore(core::cpu::SwAvgForecast(shape_, horizon, weights_.data(), ring_.data(),
                                               sum_.data(), out.data(), threads_),
                      "sw_avg forecast");
    }
    const Stream& st = dev_->stream;
    MOECAST_KERNELS_RETURN_IF_ERROR(
        st.In(dev_->c.as<void>(), weights_.data(), sizeof(double) * weights_.size()));
    MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(
        core::gpu::SwAvgForecast(shape_, horizon, dev_->c.as<double>(), dev_->a.as<float>(),
                                 dev_->b.as<double>(), dev_->out.as<double>(), st.get()),
        "sw_avg forecast"));
    MOECAST_KERNELS_RETURN_IF_ERROR(
        st.Out(out.data(), dev_->out.as<void>(), sizeof(double) * series_));
    return st.Sync();
  }

 private:
  const int threads_;
  core::SwAvgShape shape_;
  int since_resum_ = 0;
  std::vector<float> ring_;
  std::vector<double> sum_;
  std::vector<double> weights_;
  int weights_count_ = -1, weights_horizon_ = -1;
};

// ema and holt share the shape: one or two state arrays, updated per step.
class SmoothingImpl final : public CheapBatch {
 public:
  SmoothingImpl(int64_t s, int g, Backend b, int threads, bool holt, double theta,
                std::vector<HoltGroupParams> params)
      : CheapBatch(s, g, b), threads_(threads), holt_(holt), theta_(theta) {
    for (const HoltGroupParams& p : params) {
      alpha_.push_back(p.alpha);
      beta_.push_back(p.beta);
      phi_.push_back(p.phi);
    }
  }

  absl::Status Init() {
    level_.assign(series_, 1.0 / group_size_);
    trend_.assign(series_, 0.0);
    if (backend_ == Backend::kCpu) return absl::OkStatus();
    MOECAST_KERNELS_RETURN_IF_ERROR(InitDevice());
    const size_t bytes = sizeof(double) * series_;
    const size_t gbytes = sizeof(double) * alpha_.size();
    MOECAST_KERNELS_RETURN_IF_ERROR(dev_->a.Allocate(bytes));
    MOECAST_KERNELS_RETURN_IF_ERROR(dev_->b.Allocate(bytes));
    const Stream& st = dev_->stream;
    MOECAST_KERNELS_RETURN_IF_ERROR(st.In(dev_->a.as<void>(), level_.data(), bytes));
    MOECAST_KERNELS_RETURN_IF_ERROR(st.In(dev_->b.as<void>(), trend_.data(), bytes));
    if (holt_) {
      MOECAST_KERNELS_RETURN_IF_ERROR(dev_->c.Allocate(gbytes));
      MOECAST_KERNELS_RETURN_IF_ERROR(dev_->d.Allocate(gbytes));
      MOECAST_KERNELS_RETURN_IF_ERROR(dev_->e.Allocate(gbytes));
      MOECAST_KERNELS_RETURN_IF_ERROR(st.In(dev_->c.as<void>(), alpha_.data(), gbytes));
      MOECAST_KERNELS_RETURN_IF_ERROR(st.In(dev_->d.as<void>(), beta_.data(), gbytes));
      MOECAST_KERNELS_RETURN_IF_ERROR(st.In(dev_->e.as<void>(), phi_.data(), gbytes));
    }
    return st.Sync();
  }

  absl::Status Observe(absl::Span<const double> x) override {
    MOECAST_KERNELS_RETURN_IF_ERROR(CheckSize(x.size(), series_, "input"));
    CoreStatus s;
    if (backend_ == Backend::kCpu) {
      s = holt_ ? core::cpu::HoltObserve(series_, group_size_, started_, alpha_.data(),
                                         beta_.data(), phi_.data(), x.data(), level_.data(),
                                         trend_.data(), threads_)
                : core::cpu::EmaObserve(series_, started_, theta_, x.data(), level_.data(),
                                        threads_);
      MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(s, holt_ ? "holt observe" : "ema observe"));
    } else {
      const Stream& st = dev_->stream;
      MOECAST_KERNELS_RETURN_IF_ERROR(
          st.In(dev_->x.as<void>(), x.data(), sizeof(double) * series_));
      s = holt_ ? core::gpu::HoltObserve(series_, group_size_, started_, dev_->c.as<double>(),
                                         dev_->d.as<double>(), dev_->e.as<double>(),
                                         dev_->x.as<double>(), dev_->a.as<double>(),
                                         dev_->b.as<double>(), st.get())
                : core::gpu::EmaObserve(series_, started_, theta_, dev_->x.as<double>(),
                                        dev_->a.as<double>(), st.get());
      MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(s, holt_ ? "holt observe" : "ema observe"));
      MOECAST_KERNELS_RETURN_IF_ERROR(st.Sync());
    }
    started_ = true;
    return absl::OkStatus();
  }

  absl::Status Forecast(int horizon, absl::Span<double> out) override {
    MOECAST_KERNELS_RETURN_IF_ERROR(CheckSize(out.size(), series_, "output"));
    if (horizon < 1) {
      return absl::InvalidArgumentError(absl::StrCat("horizon = ", horizon, " must be >= 1"));
    }
    if (backend_ == Backend::kCpu) {
      if (!holt_) {
        std::copy(level_.begin(), level_.end(), out.begin());
        return absl::OkStatus();
      }
      return FromCore(core::cpu::HoltForecast(series_, group_size_, horizon, phi_.data(),
                                              level_.data(), trend_.data(), out.data(),
                                              threads_),
                      "holt forecast");
    }
    const Stream& st = dev_->stream;
    if (!holt_) {
      MOECAST_KERNELS_RETURN_IF_ERROR(
          st.Out(out.data(), dev_->a.as<void>(), sizeof(double) * series_));
      return st.Sync();
    }
    MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(
        core::gpu::HoltForecast(series_, group_size_, horizon, dev_->e.as<double>(),
                                dev_->a.as<double>(), dev_->b.as<double>(),
                                dev_->out.as<double>(), st.get()),
        "holt forecast"));
    MOECAST_KERNELS_RETURN_IF_ERROR(
        st.Out(out.data(), dev_->out.as<void>(), sizeof(double) * series_));
    return st.Sync();
  }

 private:
  const int threads_;
  const bool holt_;
  const double theta_;
  bool started_ = false;
  std::vector<double> alpha_, beta_, phi_;
  std::vector<double> level_, trend_;  // ema: level_ is the state
};

}  // namespace

absl::StatusOr<std::unique_ptr<CheapBatch>> MakeSwAvgBatch(int64_t series, int group_size,
                                                           int window,
                                                           const BatchOptions& options) {
  MOECAST_KERNELS_RETURN_IF_ERROR(CheckShape(series, group_size));
  if (window < 1 || window > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("sw_avg: window = ", window, " must be in [1, 100000]"));
  }
  absl::StatusOr<Backend> b = ChooseBackend(options, series);
  if (!b.ok()) return b.status();
  auto impl = std::make_unique<SwAvgImpl>(series, group_size, window, *b, options.cpu_threads);
  MOECAST_KERNELS_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<CheapBatch>(std::move(impl));
}

absl::StatusOr<std::unique_ptr<CheapBatch>> MakeEmaBatch(int64_t series, int group_size,
                                                         double theta,
                                                         const BatchOptions& options) {
  MOECAST_KERNELS_RETURN_IF_ERROR(CheckShape(series, group_size));
  if (!(theta >= 0 && theta < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("ema: theta = ", theta, " must be in [0, 1)"));
  }
  absl::StatusOr<Backend> b = ChooseBackend(options, series);
  if (!b.ok()) return b.status();
  auto impl = std::make_unique<SmoothingImpl>(series, group_size, *b, options.cpu_threads,
                                              false, theta, std::vector<HoltGroupParams>{});
  MOECAST_KERNELS_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<CheapBatch>(std::move(impl));
}

absl::StatusOr<std::unique_ptr<CheapBatch>> MakeHoltBatch(
    int64_t series, int group_size, std::vector<HoltGroupParams> group_params,
    const BatchOptions& options) {
  MOECAST_KERNELS_RETURN_IF_ERROR(CheckShape(series, group_size));
  if (static_cast<int64_t>(group_params.size()) != series / group_size) {
    return absl::InvalidArgumentError(absl::StrCat("holt: ", group_params.size(),
                                                   " group parameters, want series / "
                                                   "group_size = ",
                                                   series / group_size));
  }
  for (size_t g = 0; g < group_params.size(); ++g) {
    const HoltGroupParams& p = group_params[g];
    if (!(p.alpha > 0 && p.alpha <= 1 && p.beta > 0 && p.beta <= 1 && p.phi > 0 && p.phi <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("holt: group ", g, " has alpha = ", p.alpha,
                                                     ", beta = ", p.beta, ", phi = ", p.phi,
                                                     "; each must be in (0, 1]"));
    }
  }
  absl::StatusOr<Backend> b = ChooseBackend(options, series);
  if (!b.ok()) return b.status();
  auto impl = std::make_unique<SmoothingImpl>(series, group_size, *b, options.cpu_threads,
                                              true, 0.0, std::move(group_params));
  MOECAST_KERNELS_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<CheapBatch>(std::move(impl));
}

// ---------------------------------------------------------------------------
// ARIMA, LSTM, bootstrap: stateless; the GPU path copies in, runs, copies out.

absl::StatusOr<ArimaBatchResult> ArimaFitForecastBatch(
    const ArimaBatchConfig& config, int64_t series, int n, absl::Span<const double> history,
    absl::Span<const uint8_t> warm, int horizon, absl::Span<double> params,
    const BatchOptions& options) {
  if (config.p < 0 || config.p > 10 || config.q < 0 || config.q > 10 || config.d < 0 ||
      config.d > 2) {
    return absl::InvalidArgumentError(absl::StrCat("arima: (p, d, q) = (", config.p, ", ",
                                                   config.d, ", ", config.q,
                                                   ") must be in [0,10] x [0,2] x [0,10]"));
  }
  if (config.max_iterations < 1 || config.max_iterations > 10000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "arima: max_iterations = ", config.max_iterations, " must be in [1, 10000]"));
  }
  if (series < 1 || n < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("arima: series = ", series, " and n = ", n, " must be >= 1"));
  }
  const int np = config.p + config.q + 1;
  const int nq = std::max(config.q, 1);
  MOECAST_KERNELS_RETURN_IF_ERROR(CheckSize(history.size(), int64_t{n} * series, "history"));
  MOECAST_KERNELS_RETURN_IF_ERROR(CheckSize(params.size(), int64_t{np} * series, "params"));
  if (!warm.empty()) MOECAST_KERNELS_RETURN_IF_ERROR(CheckSize(warm.size(), series, "warm"));
  const core::ArimaConfig c{config.p, config.d, config.q, config.d == 0 || config.drift,
                            config.max_iterations, config.tolerance};
  ArimaBatchResult r;
  r.css.resize(series);
  r.iterations.resize(series);
  r.flags.resize(series);
  r.forecast.assign(series, 0.0);
  r.last_e.resize(static_cast<size_t>(nq) * series);
  absl::StatusOr<Backend> b = ChooseBackend(options, series);
  if (!b.ok()) return b.status();
  const uint8_t* warm_ptr = warm.empty() ? nullptr : warm.data();
  if (*b == Backend::kCpu) {
    MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(
        core::cpu::ArimaFitForecast(c, series, n, history.data(), warm_ptr, horizon,
                                    params.data(), r.last_e.data(), r.css.data(), nullptr,
                                    r.iterations.data(), r.flags.data(), r.forecast.data(),
                                    nullptr, options.cpu_threads),
        "arima fit"));
    return r;
  }
  Stream st;
  MOECAST_KERNELS_RETURN_IF_ERROR(st.Init());
  DeviceBuffer d_hist, d_warm, d_params, d_le, d_css, d_it, d_flags, d_fc, d_scratch;
  MOECAST_KERNELS_RETURN_IF_ERROR(d_hist.Allocate(sizeof(double) * history.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_params.Allocate(sizeof(double) * params.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_le.Allocate(sizeof(double) * r.last_e.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_css.Allocate(sizeof(double) * series));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_fc.Allocate(sizeof(double) * series));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_it.Allocate(sizeof(int) * series));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_flags.Allocate(sizeof(int) * series));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_scratch.Allocate(core::ArimaScratchBytes(series, n)));
  if (warm_ptr != nullptr) {
    MOECAST_KERNELS_RETURN_IF_ERROR(d_warm.Allocate(series));
    MOECAST_KERNELS_RETURN_IF_ERROR(st.In(d_warm.as<void>(), warm_ptr, series));
  }
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.In(d_hist.as<void>(), history.data(), sizeof(double) * history.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.In(d_params.as<void>(), params.data(), sizeof(double) * params.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(
      core::gpu::ArimaFitForecast(c, series, n, d_hist.as<double>(),
                                  warm_ptr == nullptr ? nullptr : d_warm.as<uint8_t>(),
                                  horizon, d_params.as<double>(), d_le.as<double>(),
                                  d_css.as<double>(), nullptr, d_it.as<int>(),
                                  d_flags.as<int>(), d_fc.as<double>(), d_scratch.as<double>(),
                                  st.get()),
      "arima fit"));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.Out(params.data(), d_params.as<void>(), sizeof(double) * params.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.Out(r.last_e.data(), d_le.as<void>(), sizeof(double) * r.last_e.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(st.Out(r.css.data(), d_css.as<void>(), sizeof(double) * series));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.Out(r.forecast.data(), d_fc.as<void>(), sizeof(double) * series));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.Out(r.iterations.data(), d_it.as<void>(), sizeof(int) * series));
  MOECAST_KERNELS_RETURN_IF_ERROR(st.Out(r.flags.data(), d_flags.as<void>(), sizeof(int) * series));
  MOECAST_KERNELS_RETURN_IF_ERROR(st.Sync());
  return r;
}

absl::Status LstmForecastBatch(const LstmWeights& weights, int64_t streams, int n,
                               absl::Span<const double> history, int horizon,
                               absl::Span<double> out, const BatchOptions& options) {
  const FlatLstm flat = FlattenLstm(weights.model());
  const int64_t M = flat.shape.num_experts;
  if (streams < 1 || n < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("lstm: streams = ", streams, " and n = ", n, " must be >= 1"));
  }
  if (horizon < 1) {
    return absl::InvalidArgumentError(absl::StrCat("lstm: horizon = ", horizon, " must be >= 1"));
  }
  MOECAST_KERNELS_RETURN_IF_ERROR(CheckSize(history.size(), n * streams * M, "lstm history"));
  MOECAST_KERNELS_RETURN_IF_ERROR(CheckSize(out.size(), streams * M, "lstm output"));
  absl::StatusOr<Backend> b = ChooseBackend(options, streams * M);
  if (!b.ok()) return b.status();
  if (*b == Backend::kCpu) {
    return FromCore(core::cpu::LstmForecast(flat.shape, flat.params.data(), flat.horizons.data(),
                                            streams, n, history.data(), horizon, nullptr,
                                            out.data(), options.cpu_threads),
                    "lstm forecast");
  }
  Stream st;
  MOECAST_KERNELS_RETURN_IF_ERROR(st.Init());
  DeviceBuffer d_params, d_hz, d_hist, d_scratch, d_out;
  MOECAST_KERNELS_RETURN_IF_ERROR(d_params.Allocate(sizeof(float) * flat.params.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_hz.Allocate(sizeof(int) * flat.horizons.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_hist.Allocate(sizeof(double) * history.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_scratch.Allocate(core::LstmScratchBytes(flat.shape, streams)));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_out.Allocate(sizeof(double) * out.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.In(d_params.as<void>(), flat.params.data(), sizeof(float) * flat.params.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.In(d_hz.as<void>(), flat.horizons.data(), sizeof(int) * flat.horizons.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.In(d_hist.as<void>(), history.data(), sizeof(double) * history.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(
      core::gpu::LstmForecast(flat.shape, d_params.as<float>(), d_hz.as<int>(), streams, n,
                              d_hist.as<double>(), horizon, d_scratch.as<float>(),
                              d_out.as<double>(), st.get()),
      "lstm forecast"));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.Out(out.data(), d_out.as<void>(), sizeof(double) * out.size()));
  return st.Sync();
}

absl::StatusOr<BootstrapBatchResult> GammaBootstrapBatch(
    const BootstrapBatchConfig& config, absl::Span<const double> tokens,
    absl::Span<const double> counts, absl::Span<const double> quality_input,
    const BatchOptions& options) {
  const int64_t L = config.layers, T = config.steps, M = config.experts, R = config.replicates;
  if (L < 1 || T < 1 || M < 2 || R < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bootstrap: layers = ", L, ", steps = ", T, ", experts = ", M, ", replicates = ", R,
        " (want >= 1, >= 1, >= 2, >= 0)"));
  }
  if (config.top_k < 1 || config.top_k > M || !(config.sigma > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("bootstrap: top_k = ", config.top_k,
                                                   " must be in [1, M] and sigma = ",
                                                   config.sigma, " > 0"));
  }
  MOECAST_KERNELS_RETURN_IF_ERROR(CheckSize(tokens.size(), L * T, "tokens"));
  MOECAST_KERNELS_RETURN_IF_ERROR(CheckSize(counts.size(), L * T * M, "counts"));
  MOECAST_KERNELS_RETURN_IF_ERROR(CheckSize(quality_input.size(), L * T * M, "quality_input"));
  core::BootstrapShape sh;
  sh.layers = config.layers;
  sh.steps = config.steps;
  sh.experts = config.experts;
  sh.replicates = config.replicates;
  sh.top_k = config.top_k;
  sh.sigma = config.sigma;
  sh.log_quality = config.log_quality;
  sh.uniform_weights = config.uniform_weights;
  sh.seed = config.seed;
  BootstrapBatchResult r;
  r.cf_gamma_rho.resize(L * R);
  r.assignments.resize(L * R);
  r.counts.resize(L * R * M);
  r.quality.resize(L * R * M);
  absl::StatusOr<Backend> b = ChooseBackend(options, L * M);
  if (!b.ok()) return b.status();
  if (*b == Backend::kCpu) {
    MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(
        core::cpu::GammaBootstrap(sh, tokens.data(), counts.data(), quality_input.data(),
                                  r.cf_gamma_rho.data(), r.assignments.data(), r.counts.data(),
                                  r.quality.data(), nullptr, options.cpu_threads),
        "gamma bootstrap"));
    return r;
  }
  Stream st;
  MOECAST_KERNELS_RETURN_IF_ERROR(st.Init());
  DeviceBuffer d_tok, d_cnt, d_q, d_cf, d_a, d_n, d_qo, d_times;
  MOECAST_KERNELS_RETURN_IF_ERROR(d_tok.Allocate(sizeof(double) * tokens.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_cnt.Allocate(sizeof(double) * counts.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_q.Allocate(sizeof(double) * quality_input.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_cf.Allocate(sizeof(double) * L * R));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_a.Allocate(sizeof(double) * L * R));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_n.Allocate(sizeof(double) * L * R * M));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_qo.Allocate(sizeof(double) * L * R * M));
  MOECAST_KERNELS_RETURN_IF_ERROR(d_times.Allocate(core::BootstrapScratchBytes(sh)));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.In(d_tok.as<void>(), tokens.data(), sizeof(double) * tokens.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.In(d_cnt.as<void>(), counts.data(), sizeof(double) * counts.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.In(d_q.as<void>(), quality_input.data(), sizeof(double) * quality_input.size()));
  MOECAST_KERNELS_RETURN_IF_ERROR(FromCore(
      core::gpu::GammaBootstrap(sh, d_tok.as<double>(), d_cnt.as<double>(), d_q.as<double>(),
                                d_cf.as<double>(), d_a.as<double>(), d_n.as<double>(),
                                d_qo.as<double>(), d_times.as<int>(), st.get()),
      "gamma bootstrap"));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.Out(r.cf_gamma_rho.data(), d_cf.as<void>(), sizeof(double) * L * R));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.Out(r.assignments.data(), d_a.as<void>(), sizeof(double) * L * R));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.Out(r.counts.data(), d_n.as<void>(), sizeof(double) * L * R * M));
  MOECAST_KERNELS_RETURN_IF_ERROR(
      st.Out(r.quality.data(), d_qo.as<void>(), sizeof(double) * L * R * M));
  MOECAST_KERNELS_RETURN_IF_ERROR(st.Sync());
  return r;
}

}  // namespace kernels
}  // namespace moecast
