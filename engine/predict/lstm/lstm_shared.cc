#include "engine/predict/lstm/lstm_shared.h"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moecast::lstm_internal {

void PutU32(uint32_t v, std::string* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutF32(float f, std::string* out) {
  uint32_t v;
  std::memcpy(&v, &f, 4);
  PutU32(v, out);
}

uint32_t GetU32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint32_t>(u[0]) | static_cast<uint32_t>(u[1]) << 8 |
         static_cast<uint32_t>(u[2]) << 16 | static_cast<uint32_t>(u[3]) << 24;
}

float GetF32(const char* p) {
  const uint32_t v = GetU32(p);
  float f;
  std::memcpy(&f, &v, 4);
  return f;
}

absl::Status Bad(absl::string_view source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

absl::Status ValidateScale(absl::string_view name, float v, absl::string_view source) {
  if (!std::isfinite(v) || !(v > 0)) {
    return Bad(source, absl::StrCat(name, " = ", v, " is not a finite positive number"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadWeightsFile(const std::string& path) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::PermissionDeniedError(absl::StrCat(
        path, ": cannot open: ", err != 0 ? std::strerror(err) : "unknown error"));
  }
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return bytes;
}

absl::Status WriteWeightsFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  }
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

void PathPieces(const std::vector<int>& hz, const Eigen::MatrixXd& y,
                Eigen::MatrixXd* cum, Eigen::MatrixXd* step) {
  const int64_t m = y.rows(), num_k = y.cols();
  cum->resize(m, num_k);
  step->resize(m, num_k);
  for (int64_t k = 0; k < num_k; ++k) {
    const double hk = hz[k];
    const double h_prev = k == 0 ? 0.0 : hz[k - 1];
    for (int64_t e = 0; e < m; ++e) {
      (*cum)(e, k) = hk * y(e, k);
      const double s_prev = k == 0 ? 0.0 : (*cum)(e, k - 1);
      (*step)(e, k) = ((*cum)(e, k) - s_prev) / (hk - h_prev);
    }
  }
}

void MeanOverHorizon(const std::vector<int>& hz, const Eigen::MatrixXd& y,
                     const Eigen::MatrixXd& cum, const Eigen::MatrixXd& step,
                     int horizon, double* out) {
  const int64_t m = y.rows(), num_k = y.cols();
  const int64_t h = std::max(horizon, 1);
  if (h >= hz.back()) {
    for (int64_t e = 0; e < m; ++e) out[e] = y(e, num_k - 1);
    return;
  }
  int k = 0;
  while (hz[k] < h) ++k;  // hz[k-1] < h <= hz[k]
  const double h_prev = k == 0 ? 0.0 : hz[k - 1];
  const double inv_h = 1.0 / static_cast<double>(h);
  for (int64_t e = 0; e < m; ++e) {
    const double s_prev = k == 0 ? 0.0 : cum(e, k - 1);
    out[e] = (s_prev + (static_cast<double>(h) - h_prev) * step(e, k)) * inv_h;
  }
}

void PathOverSteps(const std::vector<int>& hz, const Eigen::MatrixXd& y,
                   const Eigen::MatrixXd& step, int steps, double* out) {
  const int64_t m = y.rows(), num_k = y.cols();
  int64_t k = 0;
  for (int64_t s = 1; s <= steps; ++s) {
    while (k < num_k && hz[k] < s) ++k;
    double* row = out + (s - 1) * m;
    if (k == num_k) {
      for (int64_t e = 0; e < m; ++e) row[e] = y(e, num_k - 1);
    } else {
      for (int64_t e = 0; e < m; ++e) row[e] = step(e, k);
    }
  }
}

absl::Status CheckRange(absl::string_view source, absl::string_view name, int64_t v,
                        int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return Bad(source, absl::StrCat(name, " = ", v, " is out of range [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateStackShape(int64_t num_layers, int64_t lookback, int64_t block,
                                int64_t anchor, const std::vector<int64_t>& horizons,
                                int64_t description_bytes, absl::string_view source) {
  absl::Status s;
  if (!(s = CheckRange(source, "num_layers", num_layers, 1, kMaxLayers)).ok()) return s;
  if (!(s = CheckRange(source, "lookback", lookback, 1, kMaxLookback)).ok()) return s;
  if (!(s = CheckRange(source, "block", block, 1, kMaxBlock)).ok()) return s;
  if (!(s = CheckRange(source, "lookback * block", lookback * block, 1, kMaxWindow)).ok()) {
    return s;
  }
  if (!(s = CheckRange(source, "anchor_window", anchor, 1, lookback * block)).ok()) return s;
  if (!(s = CheckRange(source, "num_horizons", static_cast<int64_t>(horizons.size()), 1,
                       kMaxHorizons)).ok()) {
    return s;
  }
  if (!(s = CheckRange(source, "description_bytes", description_bytes, 0, kMaxDescription))
           .ok()) {
    return s;
  }
  for (size_t k = 0; k < horizons.size(); ++k) {
    if (!(s = CheckRange(source, absl::StrCat("horizons[", k, "]"), horizons[k], 1,
                         kMaxHorizon)).ok()) {
      return s;
    }
    if (k > 0 && horizons[k] <= horizons[k - 1]) {
      return Bad(source, absl::StrCat("horizons are not strictly increasing: horizons[", k,
                                      "] = ", horizons[k], " after ", horizons[k - 1]));
    }
  }
  return absl::OkStatus();
}

namespace {

absl::Status Truncated(absl::string_view source, size_t n, size_t need,
                       absl::string_view what) {
  return absl::DataLossError(
      absl::StrCat(source, ": truncated: ", n, " bytes, ", what, " needs ", need));
}

}  // namespace

std::string EncodeFile(const FileKind& kind, const int (&counts)[8],
                       const std::vector<int>& horizons, const float (&scales)[2],
                       const std::string& description,
                       const std::vector<std::vector<float>*>& tensors) {
  std::string out(kind.magic, 8);
  PutU32(kind.version, &out);
  for (int v : counts) PutU32(static_cast<uint32_t>(v), &out);
  for (int h : horizons) PutU32(static_cast<uint32_t>(h), &out);
  for (float f : scales) PutF32(f, &out);
  out += description;
  for (const std::vector<float>* t : tensors) {
    for (float f : *t) PutF32(f, &out);
  }
  return out;
}

absl::StatusOr<FileHeader> DecodeHeader(absl::string_view bytes, absl::string_view source,
                                        const FileKind& kind) {
  const size_t n = bytes.size();
  if (n < 8) return Truncated(source, n, 8, "the magic");
  if (std::memcmp(bytes.data(), kind.other_magic, 8) == 0) return Bad(source, kind.other_message);
  if (std::memcmp(bytes.data(), kind.magic, 8) != 0) return Bad(source, kind.bad_magic);
  if (n < 12) return Truncated(source, n, 12, "the version");
  const uint32_t version = GetU32(bytes.data() + 8);
  if (version != kind.version) {
    return Bad(source, absl::StrCat("unsupported version ", version,
                                    " (this build reads version ", kind.version, ")"));
  }
  if (n < kFixedHeaderBytes) return Truncated(source, n, kFixedHeaderBytes, "the header");
  FileHeader h;
  for (int i = 0; i < 8; ++i) h.counts[i] = GetU32(bytes.data() + 12 + 4 * i);
  // Range-check the count before using it as a size.
  const int64_t K = h.counts[6];
  absl::Status s = CheckRange(source, "num_horizons", K, 1, kMaxHorizons);
  if (!s.ok()) return s;
  h.bytes = kFixedHeaderBytes + 4 * K + 8;
  if (n < h.bytes) return Truncated(source, n, h.bytes, "the header with its horizons and scales");
  h.horizons.resize(K);
  for (int64_t k = 0; k < K; ++k) h.horizons[k] = GetU32(bytes.data() + kFixedHeaderBytes + 4 * k);
  h.scales[0] = GetF32(bytes.data() + h.bytes - 8);
  h.scales[1] = GetF32(bytes.data() + h.bytes - 4);
  return h;
}

absl::Status CheckParameterBytes(size_t file_bytes, size_t header_bytes, int64_t D,
                                 const std::vector<TensorRef>& layout,
                                 absl::string_view model, absl::string_view source) {
  int64_t params = 0;
  for (const TensorRef& t : layout) params += t.size;
  const int64_t expected = static_cast<int64_t>(header_bytes) + D + 4 * params;
  const int64_t n = static_cast<int64_t>(file_bytes);
  if (n < expected) return Truncated(source, file_bytes, expected, model);
  if (n > expected) {
    return Bad(source, absl::StrCat("trailing bytes: ", n - expected,
                                    " after the parameters (the model takes ", expected,
                                    " bytes)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateTensors(const std::vector<TensorRef>& layout,
                             const std::vector<std::vector<float>*>& tensors,
                             absl::string_view source) {
  for (size_t i = 0; i < layout.size(); ++i) {
    const std::vector<float>& t = *tensors[i];
    if (static_cast<int64_t>(t.size()) != layout[i].size) {
      return Bad(source, absl::StrCat(layout[i].name, " has ", t.size(), " values, expected ",
                                      layout[i].size));
    }
    for (size_t j = 0; j < t.size(); ++j) {
      if (!std::isfinite(t[j])) {
        return Bad(source, absl::StrCat("non-finite value ", t[j], " in ", layout[i].name,
                                        " at index ", j));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeTensors(absl::string_view bytes, size_t off,
                           const std::vector<TensorRef>& layout,
                           const std::vector<std::vector<float>*>& tensors,
                           absl::string_view source) {
  for (size_t i = 0; i < layout.size(); ++i) {
    std::vector<float>& t = *tensors[i];
    t.resize(layout[i].size);
    for (int64_t j = 0; j < layout[i].size; ++j, off += 4) {
      t[j] = GetF32(bytes.data() + off);
      if (!std::isfinite(t[j])) {
        return Bad(source, absl::StrCat("non-finite value ", t[j], " in ", layout[i].name,
                                        " at index ", j, " (byte offset ", off, ")"));
      }
    }
  }
  return absl::OkStatus();
}

LstmPredictorBase::LstmPredictorBase(std::string name, int num_experts,
                                     int window_steps, int num_horizons)
    : M_(num_experts),
      K_(num_horizons),
      W_(window_steps),
      name_(std::move(name)),
      ring_(static_cast<size_t>(W_) * M_),
      anchor_(M_),
      y_(M_, K_),
      cum_(M_, K_),
      step_(M_, K_) {}

void LstmPredictorBase::Observe(absl::Span<const double> proportions) {
  assert(static_cast<int>(proportions.size()) == M_);
  std::copy(proportions.begin(), proportions.end(), Slot(observed_));
  ++observed_;
  dirty_ = true;
}

void LstmPredictorBase::Refresh() {
  if (!dirty_ || observed_ == 0) return;
  Compute();
  PathPieces(horizons(), y_, &cum_, &step_);
  dirty_ = false;
}

void LstmPredictorBase::Forecast(int horizon, absl::Span<double> out) {
  assert(static_cast<int>(out.size()) == M_);
  if (observed_ == 0) {
    std::fill(out.begin(), out.end(), 1.0 / M_);
    return;
  }
  Refresh();
  MeanOverHorizon(horizons(), y_, cum_, step_, horizon, out.data());
}

void LstmPredictorBase::ForecastPath(int steps, absl::Span<double> out) {
  assert(static_cast<int64_t>(out.size()) == int64_t{steps} * M_);
  if (observed_ == 0) {
    std::fill(out.begin(), out.end(), 1.0 / M_);
    return;
  }
  Refresh();
  PathOverSteps(horizons(), y_, step_, steps, out.data());
}

int64_t LstmPredictorBase::BaseDoubles() const {
  return static_cast<int64_t>(ring_.size()) + anchor_.size() + y_.size() + cum_.size() +
         step_.size();
}

void LstmPredictorBase::SaveRing(internal::SnapshotWriter& out) const {
  const int64_t rows = std::min<int64_t>(observed_, W_);
  out.PutRawDoubles(ring_.data(), static_cast<size_t>(rows) * M_);
}

void LstmPredictorBase::LoadRing(internal::SnapshotReader& in, int64_t observed) {
  const int64_t rows = std::min<int64_t>(observed, W_);
  in.RawDoubles("ring", ring_.data(), static_cast<size_t>(rows) * M_);
}

void LstmPredictorBase::SaveOutputs(internal::SnapshotWriter& out) const {
  out.PutRawDoubles(anchor_.data(), M_);
  out.PutRawDoubles(y_.data(), static_cast<size_t>(M_) * K_);
  out.PutRawDoubles(cum_.data(), static_cast<size_t>(M_) * K_);
  out.PutRawDoubles(step_.data(), static_cast<size_t>(M_) * K_);
}

void LstmPredictorBase::LoadOutputs(internal::SnapshotReader& in) {
  in.RawDoubles("anchor", anchor_.data(), M_);
  in.RawDoubles("y", y_.data(), static_cast<size_t>(M_) * K_);
  in.RawDoubles("cum", cum_.data(), static_cast<size_t>(M_) * K_);
  in.RawDoubles("step", step_.data(), static_cast<size_t>(M_) * K_);
}

}  // namespace moecast::lstm_internal
