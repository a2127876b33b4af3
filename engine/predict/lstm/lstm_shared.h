// What the two LSTM predictors (lstm.h: one network over a layer's experts;
// lstm_e.h: one network run per expert) share: the weights files'
// little-endian encoding, header, shared field limits and checks, tensor
// validation and decoding, their errors and file I/O, the step from the
// per-horizon head means to forecasts (the piecewise-constant path of
// lstm.h's "Other horizons and the path"), and the predictor skeleton
// (LstmPredictorBase: the window ring, the anchor, the head outputs, Observe /
// Refresh / Forecast / ForecastPath and their snapshot I/O). Internal to
// engine/predict/lstm; not thread-safe, like every Predictor.
#ifndef MOECAST_ENGINE_PREDICT_LSTM_LSTM_SHARED_H_
#define MOECAST_ENGINE_PREDICT_LSTM_LSTM_SHARED_H_

#include <cstdint>
#include <string>
#include <vector>

#include "Eigen/Dense"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/internal/snapshot_codec.h"
#include "engine/predict/predictor.h"

namespace moecast::lstm_internal {

// Little-endian, independent of the host's byte order.
void PutU32(uint32_t v, std::string* out);
void PutF32(float f, std::string* out);
uint32_t GetU32(const char* p);
float GetF32(const char* p);

// INVALID_ARGUMENT "source: what".
absl::Status Bad(absl::string_view source, absl::string_view what);
// OK if v is finite and > 0; else Bad naming `name`.
absl::Status ValidateScale(absl::string_view name, float v, absl::string_view source);

// The whole file: NOT_FOUND if it does not exist, PERMISSION_DENIED if it
// cannot be opened, DATA_LOSS on a read error.
absl::StatusOr<std::string> ReadWeightsFile(const std::string& path);
// Writes (truncates) `path`: PERMISSION_DENIED if it cannot be created,
// DATA_LOSS if the write fails.
absl::Status WriteWeightsFile(const std::string& path, const std::string& bytes);

// From the head means y (M x K, y(e, k) the mean over the next hz[k] steps,
// hz increasing) fills cum(e, k) = hz[k] y(e, k) and step(e, k), the path's
// value on steps (hz[k-1], hz[k]]. cum and step are resized to M x K.
void PathPieces(const std::vector<int>& hz, const Eigen::MatrixXd& y,
                Eigen::MatrixXd* cum, Eigen::MatrixXd* step);

// The mean over the next `horizon` steps of that path (M values to out):
// y(., k) at a trained horizon, the last head's beyond the last one.
void MeanOverHorizon(const std::vector<int>& hz, const Eigen::MatrixXd& y,
                     const Eigen::MatrixXd& cum, const Eigen::MatrixXd& step,
                     int horizon, double* out);

// The path itself for `steps` steps (steps x M values to out, row s = step
// s + 1): step(., k) on (hz[k-1], hz[k]], the last head's mean beyond.
void PathOverSteps(const std::vector<int>& hz, const Eigen::MatrixXd& y,
                   const Eigen::MatrixXd& step, int steps, double* out);

// Limits of the weights files' fields that both kinds share (lstm.h's
// "Weights file"; each kind has its own limit on the hidden size).
constexpr int kMaxExperts = 65536;
constexpr int kMaxLayers = 16;
constexpr int kMaxLookback = 65536;
constexpr int kMaxBlock = 65536;
constexpr int64_t kMaxWindow = 1 << 20;
constexpr int kMaxHorizons = 64;
constexpr int kMaxDescription = 65536;
constexpr int kMaxHorizon = 1 << 30;
constexpr size_t kFixedHeaderBytes = 44;  // magic, version, 8 counts

// OK if lo <= v <= hi; else Bad "name = v is out of range [lo, hi]".
absl::Status CheckRange(absl::string_view source, absl::string_view name, int64_t v,
                        int64_t lo, int64_t hi);

// Checks the shape fields after the first two (M or the feature count, and
// the hidden size), in file order: num_layers, lookback, block, lookback *
// block, anchor_window, the number of horizons, description_bytes, then each
// horizon and that they strictly increase. The first failure is returned.
absl::Status ValidateStackShape(int64_t num_layers, int64_t lookback, int64_t block,
                                int64_t anchor, const std::vector<int64_t>& horizons,
                                int64_t description_bytes, absl::string_view source);

// A parameter tensor of a weights file, with its expected size.
struct TensorRef {
  std::string name;
  int64_t size;
};

// A weights file's header as read: the 8 counts after the version (lstm.h's
// "Weights file": num_experts, or lstm_e's num_features; hidden; num_layers;
// lookback; block; anchor_window; num_horizons; description_bytes), the
// horizons, and the two scales after them.
struct FileHeader {
  int64_t counts[8] = {};
  std::vector<int64_t> horizons;
  float scales[2] = {};
  size_t bytes = 0;  // kFixedHeaderBytes + 4 K + 8: where the description starts
};

// The file's kind, for DecodeHeader's errors.
struct FileKind {
  const char* magic;          // 8 bytes
  uint32_t version;
  const char* other_magic;    // the other kind's 8 bytes
  const char* other_message;  // Bad for a file of the other kind
  const char* bad_magic;      // Bad for any other magic
};

// Reads the header: DATA_LOSS ("source: truncated: ...") when the bytes end
// before the magic, the version, the fixed header or the horizons and
// scales; Bad for the other kind's magic, another magic, another version, or
// num_horizons out of [1, kMaxHorizons]. Checks no other field.
absl::StatusOr<FileHeader> DecodeHeader(absl::string_view bytes, absl::string_view source,
                                        const FileKind& kind);

// The whole file DecodeHeader and CheckParameterBytes read: magic, version,
// the 8 counts (counts[6] = horizons.size(), counts[7] = description.size()),
// the horizons, the two scales, the description and every tensor's floats.
std::string EncodeFile(const FileKind& kind, const int (&counts)[8],
                       const std::vector<int>& horizons, const float (&scales)[2],
                       const std::string& description,
                       const std::vector<std::vector<float>*>& tensors);

// After the header and the D description bytes come the parameters of
// `layout`: DATA_LOSS naming `model` (e.g. "a model with H=8 ...") if the
// file is shorter, Bad for trailing bytes if longer.
absl::Status CheckParameterBytes(size_t file_bytes, size_t header_bytes, int64_t D,
                                 const std::vector<TensorRef>& layout,
                                 absl::string_view model, absl::string_view source);

// The parameter tensors of a model (LstmModel or LstmEModel) in file order:
// per layer weight_ih, weight_hh, bias_ih, bias_hh; then head_weight and
// head_bias.
template <class Model>
std::vector<std::vector<float>*> TensorPointers(Model* m) {
  std::vector<std::vector<float>*> p;
  for (auto& l : m->layers) {
    p.push_back(&l.weight_ih);
    p.push_back(&l.weight_hh);
    p.push_back(&l.bias_ih);
    p.push_back(&l.bias_hh);
  }
  p.push_back(&m->head_weight);
  p.push_back(&m->head_bias);
  return p;
}

// OK if tensors[i] has layout[i].size values, all finite; else Bad naming
// the tensor (and the index of a non-finite value).
absl::Status ValidateTensors(const std::vector<TensorRef>& layout,
                             const std::vector<std::vector<float>*>& tensors,
                             absl::string_view source);

// Fills tensors[i] (resized to layout[i].size) from the float32 values at
// bytes[off...]; the caller has checked that bytes holds them all. Bad naming
// the tensor, index and byte offset of a non-finite value.
absl::Status DecodeTensors(absl::string_view bytes, size_t off,
                           const std::vector<TensorRef>& layout,
                           const std::vector<std::vector<float>*>& tensors,
                           absl::string_view source);

// One stacked layer in inference form: w_ih (4H x in) and w_hh (4H x H) from
// the row-major file tensors, b = bias_ih + bias_hh (summed in double).
template <class FileLayer>
void CompileLayer(const FileLayer& src, int in, int H, Eigen::MatrixXf* w_ih,
                  Eigen::MatrixXf* w_hh, Eigen::VectorXf* b) {
  w_ih->resize(4 * H, in);
  w_hh->resize(4 * H, H);
  b->resize(4 * H);
  for (int r = 0; r < 4 * H; ++r) {
    for (int j = 0; j < in; ++j) (*w_ih)(r, j) = src.weight_ih[int64_t{r} * in + j];
    for (int j = 0; j < H; ++j) (*w_hh)(r, j) = src.weight_hh[int64_t{r} * H + j];
    (*b)(r) = static_cast<float>(static_cast<double>(src.bias_ih[r]) +
                                 static_cast<double>(src.bias_hh[r]));
  }
}

// The floats a loaded model holds: its file tensors and their compiled form
// (for the weights classes' MemoryBytes).
template <class Model, class Compiled>
int64_t ParameterFloats(const Model& model, const Compiled& compiled) {
  int64_t floats = static_cast<int64_t>(model.head_weight.size() + model.head_bias.size());
  for (const auto& l : model.layers) {
    floats += l.weight_ih.size() + l.weight_hh.size() + l.bias_ih.size() + l.bias_hh.size();
  }
  floats += compiled.head_w.size() + compiled.head_b.size();
  for (const auto& l : compiled.layers) floats += l.w_ih.size() + l.w_hh.size() + l.b.size();
  return floats;
}

// The state and calls both LSTM predictors share. A subclass implements
// Compute(): from the window in the ring (steps [observed_ - min(observed_,
// W), observed_), Slot(t)) it sets anchor_ and the head means y_ (M x K);
// the base then derives the path pieces (cum_, step_) and marks the outputs
// current. The network runs again only at the first Forecast, ForecastPath or
// Refresh after an Observe; before the first Observe every output is 1/M.
// All buffers are sized by the constructor: nothing here allocates after it.
class LstmPredictorBase : public Predictor {
 public:
  const std::string& name() const override { return name_; }
  int num_experts() const override { return M_; }

  // Copies the M proportions into the ring (slot observed_ % W).
  void Observe(absl::Span<const double> proportions) override;
  void Refresh() override;
  void Forecast(int horizon, absl::Span<double> out) override;
  void ForecastPath(int steps, absl::Span<double> out) override;

 protected:
  LstmPredictorBase(std::string name, int num_experts, int window_steps,
                    int num_horizons);

  // The trained horizons (strictly increasing, K of them), from the weights
  // the subclass holds; asked rather than kept here, so the base holds no
  // member a predictor did not need anyway (MemoryBytes counts sizeof).
  virtual const std::vector<int>& horizons() const = 0;
  // Fills anchor_ and y_ from the window; called with observed_ > 0.
  virtual void Compute() = 0;

  // Ring slot of stream step t (t counts observed steps from 0).
  int SlotIndex(int64_t t) const { return static_cast<int>(t % W_); }
  double* Slot(int64_t t) { return ring_.data() + static_cast<size_t>(SlotIndex(t)) * M_; }

  // Doubles held here (ring, anchor, y, cum, step), for MemoryBytes.
  int64_t BaseDoubles() const;

  // Snapshot pieces, in the order the subclass writes them. The ring: the
  // slots written so far, [0, min(observed_, W)) (step t lives in slot t % W).
  void SaveRing(internal::SnapshotWriter& out) const;
  // Reads the ring of a snapshot taken after `observed` steps.
  void LoadRing(internal::SnapshotReader& in, int64_t observed);
  // The outputs of the last run: anchor, then y, cum and step (M x K each).
  void SaveOutputs(internal::SnapshotWriter& out) const;
  void LoadOutputs(internal::SnapshotReader& in);

  const int M_, K_, W_;
  bool dirty_ = false;  // observed since the last Compute
  const std::string name_;

  std::vector<double> ring_;  // W x M proportions; step t in slot t % W
  int64_t observed_ = 0;

  Eigen::VectorXd anchor_;  // M
  Eigen::MatrixXd y_;       // M x K: head means
  Eigen::MatrixXd cum_;     // M x K: h_k * y_k
  Eigen::MatrixXd step_;    // M x K: path value on (h_{k-1}, h_k]
};

}  // namespace moecast::lstm_internal

#endif  // MOECAST_ENGINE_PREDICT_LSTM_LSTM_SHARED_H_
